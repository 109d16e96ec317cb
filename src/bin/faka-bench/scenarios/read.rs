//! `read`: GET a product and the product list against the two ceilings,
//! the trivial `GET /ping` in this process and outside it, the four taking
//! turns in slices of about a second; every body must equal the one read
//! before (nothing writes meanwhile). Each is reported as req/s with its
//! ratios to both ceilings, and each server's CPU time per request. With
//! `--proxy`, the outside ceiling and the product are also read through the
//! proxy in the same rotation, the one compared with the other.

use crate::admin::{create_product, import_range};
use crate::client::{AConn, Conn, Req, Resp};
use crate::load::{run_tasks, run_timed};
use crate::measure::{timed, timed_call, Series, Wrong};
use crate::process::Faka;
use crate::report::{thousands, Goal, Row};
use crate::servers::{outside, trivial, ServerThreads, PING_BODY};
use crate::settings::Settings;
use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::time::Duration;

pub fn run(cfg: &Settings, faka: &Faka) -> Result<Vec<Row>> {
    let (trivial, outside) = (trivial(cfg)?, outside(cfg)?);
    let (product, list) = expected_bodies(faka)?;
    // The targets take turns in slices of about a second, so a change in
    // the machine's background load hits all of them alike and the ratios
    // stay comparable (run one after the other, a ratio moved by tens of per
    // cent from run to run on this shared machine).
    // Each target's server is also charged the CPU time its threads used
    // during its slices: the trivial server's actix threads in this process,
    // every thread of the outside server's and of faka's. CPU per request
    // does not depend on how much of the two cores the load generator took
    // meanwhile.
    let mut targets = vec![
        Target::new(
            "ceiling /ping",
            trivial,
            "/ping",
            PING_BODY,
            ServerThreads::Trivial,
        ),
        Target::new(
            "outside /ping",
            outside.addr,
            "/ping",
            PING_BODY,
            ServerThreads::Outside(outside.pid),
        ),
        Target::new(
            "read product",
            faka.addr,
            "/api/v1/products/bench-read",
            &product.body,
            ServerThreads::Faka(faka),
        ),
        Target::new(
            "read list",
            faka.addr,
            "/api/v1/products",
            &list.body,
            ServerThreads::Faka(faka),
        ),
    ];
    if let Some(p) = &faka.proxy {
        // The outside ceiling and the product through the proxy: each
        // ratio compares requests that both paid for TLS and a hop.
        targets.push(
            Target::new(
                "proxy outside /ping",
                p.outside,
                "/ping",
                PING_BODY,
                ServerThreads::Outside(outside.pid),
            )
            .proxied(),
        );
        targets.push(
            Target::new(
                "proxy read product",
                p.faka,
                "/api/v1/products/bench-read",
                &product.body,
                ServerThreads::Faka(faka),
            )
            .proxied(),
        );
    }
    Ok(measure(cfg, &targets, 0.8, outside.nice))
}

/// Runs `targets` in turns of about a second (the first two must be the
/// ceilings, in this process and outside it) and gives a row per target;
/// faka's targets get the goal `≥ goal × trivial` against both ceilings.
pub fn measure(cfg: &Settings, targets: &[Target], goal: f64, outside_nice: i32) -> Vec<Row> {
    let slices = cfg.duration.as_secs().max(1) as u32;
    let slice = cfg.duration / slices;
    let mut runs: Vec<ReadRun> = targets.iter().map(|_| ReadRun::default()).collect();
    for _ in 0..slices {
        for (run, t) in runs.iter_mut().zip(targets) {
            let cpu = t.server.cpu_time();
            run.add(read_slice(cfg, t, slice));
            run.cpu += t.server.cpu_time().saturating_sub(cpu);
        }
    }
    rows(runs, targets, goal, outside_nice)
}

/// A timed target: its row's name, the server, the request, the body every
/// answer must have, and whose CPU time it is charged.
pub struct Target<'a> {
    name: &'a str,
    addr: SocketAddr,
    path: &'a str,
    expected: &'a [u8],
    server: ServerThreads<'a>,
    headers: Vec<(&'static str, String)>,
    /// Sent through the proxy (`--proxy`): compared with the outside
    /// ceiling through the proxy only.
    via_proxy: bool,
}

impl<'a> Target<'a> {
    pub fn new(
        name: &'a str,
        addr: SocketAddr,
        path: &'a str,
        expected: &'a [u8],
        server: ServerThreads<'a>,
    ) -> Target<'a> {
        Target {
            name,
            addr,
            path,
            expected,
            server,
            headers: Vec::new(),
            via_proxy: false,
        }
    }

    /// This target goes through the proxy.
    pub fn proxied(mut self) -> Target<'a> {
        self.via_proxy = true;
        self
    }

    /// Sends `name: value` with every request.
    pub fn header(mut self, name: &'static str, value: String) -> Target<'a> {
        self.headers.push((name, value));
        self
    }
}

/// A row per target, with its ratios to both ceilings (the first two
/// targets) and, for faka's, the targets; then each server's CPU time per
/// request.
fn rows(runs: Vec<ReadRun>, targets: &[Target], goal: f64, outside_nice: i32) -> Vec<Row> {
    let (ceiling, outside) = (runs[0].rps(), runs[1].rps());
    let proxy_outside = targets
        .iter()
        .position(|t| t.via_proxy && matches!(t.server, ServerThreads::Outside(_)))
        .map_or(0.0, |i| runs[i].rps());
    let cpu: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.1}", r.cpu_us_per_request()))
        .collect();
    let mut rows = Vec::new();
    for (run, t) in runs.into_iter().zip(targets) {
        let rps = run.rps();
        let mut fails = run.wrong.into_failures(&format!("GET {}", t.path));
        if run.series.error_count() > 0 {
            fails.push(format!("errors: {}", run.series.errors_text()));
        }
        let mut series = run.series;
        let mut row =
            Row::new(t.name, format!("{} req/s", thousands(rps)), &mut series).verdict(fails);
        if t.via_proxy {
            let to_outside = rps / proxy_outside.max(1e-9);
            row.outside = Some(to_outside);
            if let ServerThreads::Faka(_) = t.server {
                let what = format!("{} ≥ {goal} × outside trivial via proxy", t.name);
                row.goals.push(Goal::at_least(what, to_outside, goal, "×"));
            }
            rows.push(row);
            continue;
        }
        let ratio = rps / ceiling.max(1e-9);
        let to_outside = rps / outside.max(1e-9);
        row.ratio = Some(ratio);
        row.outside = Some(to_outside);
        if let ServerThreads::Faka(_) = t.server {
            let what = format!("{} ≥ {goal} × trivial", t.name);
            row.goals.push(Goal::at_least(what, ratio, goal, "×"));
            let what = format!("{} ≥ {goal} × outside trivial", t.name);
            row.goals.push(Goal::at_least(what, to_outside, goal, "×"));
        }
        rows.push(row);
    }
    let direct = |i: &usize| !targets[*i].via_proxy;
    let names: Vec<&str> = (2..targets.len())
        .filter(direct)
        .map(|i| targets[i].path)
        .collect();
    let faka_cpu: Vec<&str> = (2..targets.len())
        .filter(direct)
        .map(|i| cpu[i].as_str())
        .collect();
    rows.push(Row::info(
        "  server CPU µs/req",
        format!(
            "{} / {} (/ping, {})",
            cpu[0],
            faka_cpu.join(" / "),
            names.join(", ")
        ),
    ));
    rows.push(Row::info(
        "  outside CPU µs/req",
        format!("{} (outside /ping, nice {outside_nice})", cpu[1]),
    ));
    rows
}

/// Sets up the read product and reads it and the list once: the answers
/// every later read must equal.
fn expected_bodies(faka: &Faka) -> Result<(Resp, Resp)> {
    let mut admin = Conn::new(faka.addr, Duration::from_secs(60));
    create_product(&mut admin, "bench-read", 10)?;
    import_range(&mut admin, "bench-read", "READ", (0, 100), 100)?;
    let product = admin.get("/api/v1/products/bench-read")?;
    let v = product.json()?;
    if product.status != 200 || v["id"] != "bench-read" || v["stock"] != 100 {
        bail!("GET /api/v1/products/bench-read: {} {v}", product.status);
    }
    let list = admin.get("/api/v1/products")?;
    let lv = list.json()?;
    let listed = lv["products"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["id"] == "bench-read"));
    if list.status != 200 || !listed {
        bail!("GET /api/v1/products does not list bench-read: {lv}");
    }
    Ok((product, list))
}

/// One `read` target's slices added up.
#[derive(Default)]
struct ReadRun {
    series: Series,
    wrong: Wrong,
    elapsed: Duration,
    /// CPU time of its server's threads during its slices.
    cpu: Duration,
}

impl ReadRun {
    fn add(&mut self, (series, wrong, elapsed): (Series, Wrong, Duration)) {
        self.series.merge(series);
        self.wrong.merge(wrong);
        self.elapsed += elapsed;
    }

    fn rps(&self) -> f64 {
        self.series.lat_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.series.lat_us.len() as f64).max(1.0)
    }
}

/// GETs the target's path for `duration`; every body must equal the
/// expected one (nothing writes meanwhile). Gives the series, the wrong
/// answers and the time taken.
fn read_slice(cfg: &Settings, t: &Target, duration: Duration) -> (Series, Wrong, Duration) {
    let check = |s: &mut Series, wrong: &mut Wrong, r: Option<Resp>| {
        if let Some(r) = r {
            if s.check(&r, 200) && r.body != t.expected {
                wrong.add(String::from_utf8_lossy(&r.body).into_owned());
            }
        }
    };
    let init = |_| (Series::default(), Wrong::default());
    let (states, elapsed) = if !cfg.read_threads {
        let req = Req::get(t.path.to_string()).with_headers(t.headers.clone());
        run_tasks(
            t.addr,
            cfg.concurrency,
            cfg.client_threads,
            duration,
            init,
            async |(s, wrong): &mut (Series, Wrong), conn: &mut AConn| {
                let r = timed_call(s, conn, &req).await;
                check(s, wrong, r);
                true
            },
        )
    } else {
        let headers: Vec<(&str, &str)> = t.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_timed(
            t.addr,
            cfg.concurrency,
            duration,
            init,
            |(s, wrong), conn| {
                let r = timed(s, || conn.send("GET", t.path, &headers, b""));
                check(s, wrong, r);
                true
            },
        )
    };
    let (mut series, mut wrong) = (Series::default(), Wrong::default());
    for (s, w) in states {
        series.merge(s);
        wrong.merge(w);
    }
    (series, wrong, elapsed)
}
