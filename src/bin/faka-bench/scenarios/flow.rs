//! `flow`: the buyer's journey on every connection for the run's duration
//! (create order → signed payment → GET the order with its keys; with
//! `--coupon`, every order carries a coupon whose use it claims), no key
//! delivered twice and the counts adding up at the end. Right before it,
//! the same connections make journeys of three `/ping`s to each trivial
//! server, in this process and outside it: flow's orders/s is also given
//! as a ratio to each one's journeys/s.
//! Beside the table, faka's and the client's CPU time per order, the
//! journal's slow syncs, the machine's idle cores and the commit thread's
//! share of a CPU say what bound the run.

use crate::admin::{check_counts, create_coupon, create_product, import_range};
use crate::buyer::{check_unique, flow_errors, Buyer, COUPON, COUPON_PERCENT};
use crate::client::{AConn, Conn, Req};
use crate::cpu::{own_cpu_time, sched_share_text, threads_sched_times, MachineCpu};
use crate::load::run_tasks;
use crate::measure::{timed_call, Series, Wrong};
use crate::metrics::{writer_totals, WriterTotals};
use crate::process::Faka;
use crate::proxy::Proxy;
use crate::report::{rate, Goal, Row};
use crate::servers::{outside, trivial, PING_BODY};
use crate::settings::Settings;
use anyhow::Result;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What one connection of the flow ceiling keeps: each `/ping`, each
/// three-request journey, wrong answers.
type PingJourneys = (Series, Series, Wrong);

/// A ceiling of `flow`: journeys of three `/ping` requests to a trivial
/// actix server at `addr`, on flow's connections and client threads, run
/// right before flow. Gives the journeys/s this machine and client allow
/// at the moment, so flow's orders/s can be given as a ratio that moves
/// less with the machine's own speed (the client builds, signs and parses
/// less for `/ping`, so the ratio is a little below faka's share), and
/// the row `name`.
fn ping_journeys(cfg: &Settings, addr: SocketAddr, name: &str) -> (f64, Row) {
    let ping = Req::get("/ping".into());
    let (states, elapsed) = run_tasks(
        addr,
        cfg.concurrency,
        cfg.client_threads,
        cfg.duration,
        |_| PingJourneys::default(),
        async |(each, journeys, wrong): &mut PingJourneys, conn: &mut AConn| {
            let t0 = Instant::now();
            for _ in 0..3 {
                let Some(r) = timed_call(each, conn, &ping).await else {
                    return true;
                };
                if !each.check(&r, 200) {
                    return true;
                }
                if r.body != PING_BODY {
                    wrong.add(String::from_utf8_lossy(&r.body).into_owned());
                    return true;
                }
            }
            journeys.record(t0);
            true
        },
    );
    let (mut each, mut journeys, mut wrong) = PingJourneys::default();
    for (e, j, w) in states {
        each.merge(e);
        journeys.merge(j);
        wrong.merge(w);
    }
    let mut failures = wrong.into_failures("GET /ping");
    if each.error_count() > 0 {
        failures.push(format!("errors: {}", each.errors_text()));
    }
    let n = journeys.lat_us.len() as f64;
    let row = Row::new(name, rate(n, elapsed, "journeys"), &mut journeys).verdict(failures);
    (n / elapsed.as_secs_f64().max(1e-9), row)
}

/// The ceilings' journeys/s and rows, each row with its ratios.
struct Ceilings {
    trivial: f64,
    outside: f64,
    /// Through the proxy, with `--proxy`.
    proxied: Option<f64>,
    rows: Vec<Row>,
}

/// The journeys to the trivial server in this process, then to the
/// outside one, then to the outside one through the proxy.
fn ceilings(cfg: &Settings, proxy: Option<&Proxy>) -> Result<Ceilings> {
    let (trivial, mut trivial_row) = ping_journeys(cfg, trivial(cfg)?, "ceiling 3 × /ping journey");
    let (outside, mut outside_row) =
        ping_journeys(cfg, outside(cfg)?.addr, "outside 3 × /ping journey");
    trivial_row.ratio = Some(1.0);
    trivial_row.outside = Some(trivial / outside.max(1e-9));
    outside_row.ratio = Some(outside / trivial.max(1e-9));
    outside_row.outside = Some(1.0);
    let mut rows = vec![trivial_row, outside_row];
    let proxied = proxy.map(|p| {
        let (proxied, mut row) = ping_journeys(cfg, p.outside, "proxy outside 3 × /ping journey");
        row.outside = Some(1.0);
        rows.push(row);
        proxied
    });
    Ok(Ceilings {
        trivial,
        outside,
        proxied,
        rows,
    })
}

/// flow's product and the prefix of its keys: straight to faka, or
/// through the proxy (a product of its own, so each part's counts check
/// alone).
const DIRECT: (&str, &str) = ("bench-flow", "FLOW");
const PROXIED: (&str, &str) = ("bench-flow-proxy", "PFLOW");

pub fn run(cfg: &Settings, faka: &Faka) -> Result<Vec<Row>> {
    let mut admin = Conn::new(faka.addr, Duration::from_secs(300));
    let parts: &[(&str, &str)] = match faka.proxy {
        Some(_) => &[DIRECT, PROXIED],
        None => &[DIRECT],
    };
    for (product, prefix) in parts {
        create_product(&mut admin, product, 10)?;
        import_range(
            &mut admin,
            product,
            prefix,
            (0, cfg.flow_keys),
            cfg.setup_chunk,
        )?;
    }
    if cfg.coupon {
        create_coupon(&mut admin, COUPON, COUPON_PERCENT)?;
    }
    let ceilings = ceilings(cfg, faka.proxy.as_ref())?;
    let mut m = journeys(cfg, faka, faka.addr, DIRECT, &mut admin)?;
    let failures = verify(cfg, &mut admin, &mut m, DIRECT.0)?;
    let mut out = ceilings.rows;
    out.extend(rows(
        m,
        failures,
        "",
        Some(ceilings.trivial),
        ceilings.outside,
    ));
    if let (Some(p), Some(proxied)) = (&faka.proxy, ceilings.proxied) {
        let mut m = journeys(cfg, faka, p.faka, PROXIED, &mut admin)?;
        let failures = verify(cfg, &mut admin, &mut m, PROXIED.0)?;
        out.extend(rows(m, failures, "proxy ", None, proxied));
    }
    Ok(out)
}

/// What the timed part of flow measured.
struct Measured {
    all: Buyer,
    elapsed: Duration,
    /// How much of the machine's cores stayed idle.
    idle: String,
    /// The commit thread's time on a CPU and waiting for one.
    commit: (Duration, Duration),
    /// faka's CPU time (all its threads).
    cpu: Duration,
    writer: WriterTotals,
    /// This process's CPU time: the load generator's.
    client_cpu: Duration,
    /// The proxy's CPU time, when the journeys went through it.
    proxy_cpu: Option<Duration>,
}

/// The timed part: journeys on every connection for the run's duration,
/// with the CPU and writer figures taken around it, to `addr` (faka, or
/// the proxy in front of it) for `(product, prefix)`.: journeys to `addr` (faka, or the proxy in front of
/// it) for `(product, prefix)`.
fn journeys(
    cfg: &Settings,
    faka: &Faka,
    addr: SocketAddr,
    (product, prefix): (&str, &str),
    admin: &mut Conn,
) -> Result<Measured> {
    let writer_before = writer_totals(admin)?;
    let cpu_before = faka.cpu_time();
    let client_before = own_cpu_time();
    let commit_thread = || threads_sched_times(&faka.pid().to_string(), |n| n == "faka-commit");
    let (machine_before, commit_before) = (MachineCpu::now(), commit_thread());
    let proxy = faka.proxy.as_ref().filter(|p| p.faka == addr);
    let proxy_before = proxy.map(Proxy::cpu_time);
    let key_prefix = format!("{prefix}-");
    let (states, elapsed) = run_tasks(
        addr,
        cfg.concurrency,
        cfg.client_threads,
        cfg.duration,
        |_| Buyer::new(cfg).with_coupon(cfg.coupon),
        async |b: &mut Buyer, conn: &mut AConn| b.journey(conn, product, &key_prefix).await,
    );
    let idle = machine_before.idle_text(MachineCpu::now());
    let commit = commit_thread();
    let commit = (
        commit.0.saturating_sub(commit_before.0),
        commit.1.saturating_sub(commit_before.1),
    );
    let cpu = faka.cpu_time().saturating_sub(cpu_before);
    let writer = writer_totals(admin)?.since(writer_before);
    let client_cpu = own_cpu_time().saturating_sub(client_before);
    let proxy_cpu = proxy
        .zip(proxy_before)
        .map(|(p, before)| p.cpu_time().saturating_sub(before));
    let mut all = Buyer::default();
    states.into_iter().for_each(|b| all.merge(b));
    Ok(Measured {
        all,
        elapsed,
        idle,
        commit,
        cpu,
        writer,
        client_cpu,
        proxy_cpu,
    })
}

/// Every delivered order right, no key twice, the counts adding up.
fn verify(
    cfg: &Settings,
    admin: &mut Conn,
    m: &mut Measured,
    product: &str,
) -> Result<Vec<String>> {
    let all = &mut m.all;
    let mut failures = std::mem::take(&mut all.wrong).into_failures("flow");
    let sold: u64 = all.delivered.iter().map(|(o, _)| o.quantity as u64).sum();
    check_unique(all.delivered.iter().flat_map(|(_, k)| k), &mut failures);
    check_counts(admin, product, cfg.flow_keys as u64, sold, &mut failures)?;
    flow_errors(&[&all.create, &all.pay, &all.get], &mut failures);
    if all.delivered.is_empty() {
        failures.push("no order was delivered".into());
    }
    if all.out_of_stock {
        println!(
            "note: flow ran out of its {} keys after {:.1} s; raise --flow-keys for a full run",
            cfg.flow_keys,
            m.elapsed.as_secs_f64()
        );
    }
    Ok(failures)
}

/// flow's rows (their names start with `label`): the journey with its
/// targets and its ratios to the ceilings (`trivial` in this process, when
/// comparable; `outside`, journeys/s of the outside server on the same
/// path), each request, and what bound the run.
fn rows(
    mut m: Measured,
    failures: Vec<String>,
    label: &str,
    trivial: Option<f64>,
    outside: f64,
) -> Vec<Row> {
    let (all, elapsed) = (&mut m.all, m.elapsed);
    let orders = all.delivered.len() as f64;
    let orders_per_s = orders / elapsed.as_secs_f64().max(1e-9);
    let mut journey = Row::new(
        &format!("{label}flow (journey)"),
        rate(orders, elapsed, "orders"),
        &mut all.journey,
    )
    .verdict(failures)
    .goal(Goal::at_least(
        format!("{label}flow ≥ 10,000 orders/s"),
        orders_per_s,
        10_000.0,
        "orders/s",
    ));
    if let Some([_, p99, _]) = journey.lat {
        journey = journey.goal(Goal::below(
            format!("{label}flow p99 < 20 ms"),
            p99.as_secs_f64() * 1e3,
            20.0,
            "ms",
        ));
    }
    // Issue 29's target: orders/s against the outside server's requests/s
    // (three per journey) on the same connections and path.
    let outside_rps = 3.0 * outside;
    journey = journey.goal(Goal::at_least(
        format!("{label}flow ≥ 0.10 × outside /ping req/s"),
        orders_per_s / outside_rps.max(1e-9),
        0.10,
        "×",
    ));
    journey.ratio = trivial.map(|t| orders_per_s / t.max(1e-9));
    journey.outside = Some(orders_per_s / outside.max(1e-9));
    // "  proxy flow create": indented as the row it stands for.
    let named = |s: &str| format!("  {label}{}", s.trim_start());
    let mut out = vec![
        journey,
        Row::new(
            &named("  flow create"),
            rate(all.create.lat_us.len() as f64, elapsed, "req"),
            &mut all.create,
        ),
        Row::new(
            &named("  flow pay"),
            rate(all.pay.lat_us.len() as f64, elapsed, "req"),
            &mut all.pay,
        ),
        Row::new(
            &named("  flow get"),
            rate(all.get.lat_us.len() as f64, elapsed, "req"),
            &mut all.get,
        ),
        // Stable where orders/s is not: it does not depend on how much of the
        // cores the load generator took.
        Row::info(
            &named("  faka CPU µs/order"),
            format!("{:.0}", m.cpu.as_secs_f64() * 1e6 / orders.max(1.0)),
        ),
        // What the load generator took of the same two cores.
        Row::info(
            &named("  client CPU µs/order"),
            format!("{:.0}", m.client_cpu.as_secs_f64() * 1e6 / orders.max(1.0)),
        ),
        // A slow p999 with a stall here is the disk's, not faka's.
        Row::info(&named("  journal fdatasyncs"), m.writer.syncs_text()),
        // Idle cores with a busy commit thread: the run is bound by the
        // batches' pace (latency), not by CPU.
        Row::info(&named("  machine CPU idle"), m.idle),
        Row::info(
            &named("  commit thread"),
            sched_share_text(m.commit, elapsed),
        ),
    ];
    // What the TLS proxy took of the same cores, beside faka and the client.
    if let Some(cpu) = m.proxy_cpu {
        let per_order = cpu.as_secs_f64() * 1e6 / orders.max(1.0);
        out.push(Row::info(
            &named("  nginx CPU µs/order"),
            format!("{per_order:.0}"),
        ));
    }
    out
}
