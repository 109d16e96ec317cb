//! `flash`: N buyers race for M keys, all released at once on as many
//! connections: exactly M orders, the rest 409 `out_of_stock`, then all M
//! paid and M distinct keys delivered. The same burst is first sent to the
//! trivial `GET /ping` in this process and outside it, and flash's p99 is
//! also given as a ratio to each burst's p99. Beside them: the winners'
//! and losers' latencies apart, how many buyers reached the writer, the
//! journal's slow syncs and each server's CPU time per request of the
//! burst. With `--proxy`, a second round (a burst to the outside server,
//! then a race for a product of its own) goes through the proxy.

use crate::admin::{check_counts, create_product, import_range};
use crate::burst_trace;
use crate::buyer::{check_delivered, check_unique, create_order, fetch_order, flow_errors, pay};
use crate::buyer::{Buyer, Created, Placed};
use crate::client::{AConn, Conn, Req};
use crate::load::run_batch_tasks;
use crate::measure::{timed_call, Series, Wrong};
use crate::metrics::{writer_totals, WriterTotals};
use crate::process::Faka;
use crate::report::{ms, rate, Goal, Row};
use crate::servers::{outside, trivial, ServerThreads, PING_BODY};
use crate::settings::Settings;
use anyhow::Result;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The flash burst against a trivial `GET /ping` at `addr`: as many
/// requests on as many connections, all released at once, with the same
/// client code; its p99 is what this machine gives any server for such a
/// burst. With `trace`, `--burst-trace` stamps its requests (the handler's
/// side of the stamps is only seen in this process).
fn ceiling_burst(cfg: &Settings, name: &str, addr: Result<SocketAddr>, trace: bool) -> Row {
    let addr = match addr {
        Ok(a) => a,
        Err(e) => return Row::failed(name, e),
    };
    let n = cfg.flash_buyers;
    let ping = Req::get("/ping".into());
    let tracing = trace && burst_trace::on();
    type Pinger = (Series, Wrong, Vec<burst_trace::Sent>);
    let (states, elapsed) = run_batch_tasks(
        addr,
        cfg.flash_conns,
        cfg.client_threads,
        n,
        |_| (Series::default(), Wrong::default(), Vec::new()),
        async |(s, wrong, sent): &mut Pinger, conn: &mut AConn, i| {
            let r = if tracing {
                let sent_us = burst_trace::now_us();
                let r = timed_call(s, conn, &Req::get(format!("/ping?i={i}"))).await;
                sent.push(burst_trace::Sent {
                    request: i as u64,
                    conn: conn as *const AConn as usize,
                    sent_us,
                    answered_us: burst_trace::now_us(),
                });
                r
            } else {
                timed_call(s, conn, &ping).await
            };
            if let Some(r) = r {
                if s.check(&r, 200) && r.body != PING_BODY {
                    wrong.add(String::from_utf8_lossy(&r.body).into_owned());
                }
            }
        },
    );
    let (mut series, mut wrong, mut sent) = (Series::default(), Wrong::default(), Vec::new());
    for (s, w, t) in states {
        series.merge(s);
        wrong.merge(w);
        sent.extend(t);
    }
    let mut failures = wrong.into_failures("GET /ping");
    if tracing {
        if let Err(e) = burst_trace::write(sent) {
            failures.push(format!("writing --burst-trace: {e}"));
        }
    }
    if series.error_count() > 0 || series.lat_us.len() != n {
        failures.push(format!(
            "{} of {n} answered; errors: {}",
            series.lat_us.len(),
            series.errors_text()
        ));
    }
    Row::new(name, rate(n as f64, elapsed, "req"), &mut series).verdict(failures)
}

/// Where a flash round sends its requests and what it races for: straight
/// to faka, or through the proxy (a product of its own, so each round's
/// counts check alone).
struct Round<'a> {
    /// Starts the names of its rows: "" or "proxy ".
    label: &'a str,
    addr: SocketAddr,
    product: &'a str,
    /// The prefix of its keys.
    prefix: &'a str,
}

pub fn run(cfg: &Settings, faka: &Faka) -> Result<Vec<Row>> {
    let trivial_cpu = ServerThreads::Trivial.cpu_time();
    let ceiling = ceiling_burst(cfg, "ceiling burst /ping", trivial(cfg), true);
    let trivial_cpu = ServerThreads::Trivial
        .cpu_time()
        .saturating_sub(trivial_cpu);
    let outside_addr = outside(cfg).map(|o| o.addr);
    let outside = ceiling_burst(cfg, "outside burst /ping", outside_addr, false);
    let direct = Round {
        label: "",
        addr: faka.addr,
        product: "bench-flash",
        prefix: "FLASH",
    };
    let mut out = round(cfg, faka, &direct, Some(ceiling), outside, trivial_cpu)?;
    if let Some(p) = &faka.proxy {
        let outside = ceiling_burst(cfg, "proxy outside burst /ping", Ok(p.outside), false);
        let proxied = Round {
            label: "proxy ",
            addr: p.faka,
            product: "bench-flash-proxy",
            prefix: "PFLASH",
        };
        out.extend(round(cfg, faka, &proxied, None, outside, Duration::ZERO)?);
    }
    Ok(out)
}

/// One race and its payments, after the ceiling bursts measured for it
/// (`ceiling` in this process, when comparable; `outside` on the same
/// path), with the trivial server's CPU time during its burst.
fn round(
    cfg: &Settings,
    faka: &Faka,
    r: &Round,
    ceiling: Option<Row>,
    outside: Row,
    trivial_cpu: Duration,
) -> Result<Vec<Row>> {
    let m = cfg.flash_keys;
    let mut admin = Conn::new(faka.addr, Duration::from_secs(60));
    create_product(&mut admin, r.product, 1)?;
    import_range(&mut admin, r.product, r.prefix, (0, m), m)?;
    let writer_before = writer_totals(&mut admin)?;
    let faka_cpu = faka.cpu_time();
    let (mut race, elapsed) = race(cfg, r);
    let faka_cpu = faka.cpu_time().saturating_sub(faka_cpu);
    let mut failures = race.failures(cfg);
    // How many buyers the read-side refusal did not stop: they queued for
    // the writer, and a refused one waited for its batch to be durable.
    let writer = writer_totals(&mut admin)?.since(writer_before);
    let (paid, pay_failures, pay_elapsed) = flash_pay(cfg, r, &race.won);
    failures.extend(pay_failures);
    check_counts(
        &mut admin,
        r.product,
        m as u64,
        race.won.len() as u64,
        &mut failures,
    )?;
    Ok(rows(
        cfg,
        r.label,
        Outcome {
            ceiling,
            outside,
            race,
            elapsed,
            failures,
            writer,
            trivial_cpu,
            faka_cpu,
            paid,
            pay_elapsed,
        },
    ))
}

/// The race as the connections saw it, merged.
#[derive(Default)]
struct Racer {
    /// Every create request.
    race: Series,
    wrong: Wrong,
    won: Vec<Placed>,
    lost: u64,
    /// The winners' and the losers' latencies apart.
    won_lat: Series,
    lost_lat: Series,
}

impl Racer {
    fn merge(&mut self, o: Racer) {
        self.race.merge(o.race);
        self.wrong.merge(o.wrong);
        self.won.extend(o.won);
        self.lost += o.lost;
        self.won_lat.merge(o.won_lat);
        self.lost_lat.merge(o.lost_lat);
    }

    /// Wrong answers, and anything but exactly M wins and N - M refusals.
    fn failures(&mut self, cfg: &Settings) -> Vec<String> {
        let (n, m) = (cfg.flash_buyers, cfg.flash_keys);
        let mut failures = std::mem::take(&mut self.wrong).into_failures("flash create");
        let (won, lost) = (self.won.len(), self.lost);
        if won != m || lost != (n - m) as u64 || self.race.error_count() > 0 {
            failures.push(format!(
                "expected {m} × 201 and {} × 409 out_of_stock; got {won} × 201, {lost} × 409 out_of_stock, other: {}",
                n - m,
                self.race.errors_text()
            ));
        }
        failures
    }
}

/// The race: every buyer wants one key, all at once.
fn race(cfg: &Settings, round: &Round) -> (Racer, Duration) {
    let keyed = cfg.idempotency_keys;
    let product = round.product;
    let (states, elapsed) = run_batch_tasks(
        round.addr,
        cfg.flash_conns,
        cfg.client_threads,
        cfg.flash_buyers,
        |_| Racer::default(),
        async |r: &mut Racer, conn: &mut AConn, _| {
            let t0 = Instant::now();
            match create_order(conn, &mut r.race, &mut r.wrong, product, 1, (keyed, false)).await {
                Created::Ok(o) => {
                    r.won_lat.record(t0);
                    r.won.push(o)
                }
                Created::OutOfStock => {
                    r.lost_lat.record(t0);
                    r.lost += 1
                }
                Created::Failed => {}
            }
        },
    );
    let mut all = Racer::default();
    states.into_iter().for_each(|r| all.merge(r));
    (all, elapsed)
}

/// What a flash run gives its rows.
struct Outcome {
    /// The `/ping` bursts' rows: in this process (none through the
    /// proxy), and outside it.
    ceiling: Option<Row>,
    outside: Row,
    race: Racer,
    elapsed: Duration,
    failures: Vec<String>,
    /// The writer's share of the race.
    writer: WriterTotals,
    /// CPU time of the trivial server during its burst, of faka during the race.
    trivial_cpu: Duration,
    faka_cpu: Duration,
    /// Each winner's pay + get.
    paid: Series,
    pay_elapsed: Duration,
}

/// flash's rows: the ceiling burst, the race with its target, p99 as a
/// ratio to the burst's, winners and losers, the writer, CPU, payments.
fn rows(cfg: &Settings, label: &str, mut o: Outcome) -> Vec<Row> {
    // "  proxy flash 201 (won)": indented as the row it stands for.
    let named = |s: &str| format!("  {label}{}", s.trim_start());
    let (n, m) = (cfg.flash_buyers, cfg.flash_keys);
    let r = &mut o.race;
    let errors_row = format!("{} (+{}×409 expected)", r.race.errors_text(), r.lost);
    let mut row = Row::new(
        &format!("{label}flash {n}→{m}"),
        rate(n as f64, o.elapsed, "req"),
        &mut r.race,
    )
    .verdict(o.failures);
    if let Some([_, p99, _]) = row.lat {
        row.goals.push(Goal::below(
            format!("{label}flash p99 < 50 ms"),
            p99.as_secs_f64() * 1e3,
            50.0,
            "ms",
        ));
    }
    row.errors = errors_row;
    let mut ratio = Row::info(&named("  flash p99 / burst p99"), "-".into());
    if let (Some(f), Some(c)) = (row.lat, o.ceiling.as_ref().and_then(|c| c.lat)) {
        ratio.throughput = format!("{} / {}", ms(f[1]), ms(c[1]));
        ratio.ratio = Some(f[1].as_secs_f64() / c[1].as_secs_f64().max(1e-9));
    }
    if let (Some(f), Some(c)) = (row.lat, o.outside.lat) {
        if o.ceiling.is_none() {
            ratio.throughput = format!("{} / {}", ms(f[1]), ms(c[1]));
        }
        ratio.outside = Some(f[1].as_secs_f64() / c[1].as_secs_f64().max(1e-9));
    }
    // Which side of the race is slow: the winners wait for a durable
    // commit, the losers are refused from a read.
    let won_row = Row::new(
        &named("  flash 201 (won)"),
        format!("{} orders", r.won.len()),
        &mut r.won_lat,
    );
    let lost_row = Row::new(
        &named("  flash 409 (lost)"),
        format!("{} refusals", r.lost),
        &mut r.lost_lat,
    );
    let writer = &o.writer;
    let writer_row = Row::info(
        &named("  buyers that reached the writer"),
        format!(
            "{} of {n}, in {} batches of {:.1} ms on average",
            writer.commands,
            writer.batches,
            writer.commit_secs * 1e3 / writer.batches.max(1) as f64
        ),
    );
    let syncs_row = Row::info(&named("  journal fdatasyncs"), writer.syncs_text());
    // What a request of the burst costs the server, whatever share of the
    // two cores the client took meanwhile.
    let per_request = |cpu: Duration| format!("{:.1}", cpu.as_secs_f64() * 1e6 / n.max(1) as f64);
    let cpu_text = match o.ceiling {
        Some(_) => format!(
            "{} / {} (/ping, flash)",
            per_request(o.trivial_cpu),
            per_request(o.faka_cpu)
        ),
        None => format!("{} (flash)", per_request(o.faka_cpu)),
    };
    let cpu_row = Row::info(&named("  server CPU µs/req"), cpu_text);
    let paid_row = Row::new(
        &named("  flash pay+get"),
        rate(r.won.len() as f64, o.pay_elapsed, "orders"),
        &mut o.paid,
    );
    o.ceiling
        .into_iter()
        .chain([
            o.outside, row, ratio, won_row, lost_row, writer_row, syncs_row, cpu_row, paid_row,
        ])
        .collect()
}

/// Pays every order that won the race and checks the keys are distinct.
fn flash_pay(cfg: &Settings, round: &Round, won: &[Placed]) -> (Series, Vec<String>, Duration) {
    let key_prefix = format!("{}-", round.prefix);
    let (states, elapsed) = run_batch_tasks(
        round.addr,
        cfg.concurrency,
        cfg.client_threads,
        won.len(),
        |_| (Buyer::default(), Series::default()),
        async |(b, both): &mut (Buyer, Series), conn: &mut AConn, i| {
            let o = &won[i];
            let t0 = Instant::now();
            if pay(conn, &mut b.pay, &mut b.wrong, o).await.as_deref() != Some("delivered") {
                b.wrong
                    .add(format!("payment of {} did not deliver", o.order_no));
                return;
            }
            if let Some((status, keys)) = fetch_order(conn, &mut b.get, &mut b.wrong, o).await {
                both.record(t0);
                if status == "delivered" && check_delivered(o, &keys, &key_prefix, &mut b.wrong) {
                    b.delivered.push((o.clone(), keys));
                }
            }
        },
    );
    let (mut all, mut both) = (Buyer::default(), Series::default());
    for (b, s) in states {
        all.merge(b);
        both.merge(s);
    }
    let mut failures = std::mem::take(&mut all.wrong).into_failures("flash pay");
    flow_errors(&[&all.create, &all.pay, &all.get], &mut failures);
    let distinct = check_unique(all.delivered.iter().flat_map(|(_, k)| k), &mut failures);
    if distinct != won.len() {
        failures.push(format!(
            "{} orders won but {distinct} distinct keys delivered",
            won.len()
        ));
    }
    (both, failures, elapsed)
}
