//! `faka-bench`: the load tool of issue 6, a second binary of this crate.
//!
//! It starts the real `faka` binary itself (a fresh temp dir and config,
//! `listen = 127.0.0.1:0`), sets up products and keys through the admin API,
//! drives it with a small keep-alive HTTP/1.1 client (fixed concurrency,
//! bounded duration, loopback only) and checks that every answer was right.
//! `read`, `flow` and `flash` run their connections as tasks on one client
//! thread (`--client-threads`; tokio, non-blocking), the other scenarios on
//! a std `TcpStream` per worker thread:
//!
//! - `read`   GET a product and the product list, against two ceilings: a
//!   trivial actix-web `GET /ping` server run in this process with faka's
//!   worker count and nice value, and the same server as a process of its
//!   own sharing nothing with faka (`servers`), both with the same client
//!   settings, so `read` is reported as the ratios faka_rps / trivial_rps
//!   (the four take turns in 1 s slices), with each server's CPU time per
//!   request;
//! - `pages`  the storefront's `GET /` with 50 products and a product page,
//!   against the same two ceilings (goal: ≥ 0.5 × trivial);
//! - `flow`   the buyer's journey: create order (hmac) → signed payment → GET
//!   the order with its token and keys; no key may appear twice; faka's CPU
//!   time per order;
//! - `flash`  N buyers race for M keys: exactly M orders, the rest 409
//!   `out_of_stock`, then all M paid and M distinct keys delivered; the
//!   same burst (N requests on as many connections, all released at once)
//!   is first sent to both trivial `GET /ping` servers, and flash's p99 is
//!   reported as a ratio to each burst's p99;
//! - `import` 1,000,000 keys as text/plain in a few requests;
//! - `mixed`  reads + flow + unpaid orders expiring (a second faka with
//!   `hold_secs = 1`), late payments, and counts that add up at the end;
//! - `scale`  (only with `--scenario scale`, it is long) memory and start-up
//!   with 1M keys and 1M orders: RSS after the import and after the orders,
//!   start-up time (spawn → `GET /healthz` 200) after a clean stop and after
//!   `kill -9`, RSS after each start.
//!
//! Every faka instance is stopped with SIGTERM and its store verified with
//! `faka check`. The table at the end has throughput, p50/p99/p999 latency,
//! errors by status, the ratios to both ceilings and a correctness verdict; any
//! failed verdict (a fast wrong answer) makes the exit status non-zero.
//! `--smoke` runs every scenario for about a second with small sizes, for CI:
//! it checks correctness only, never timing.
//!
//! ```text
//! cargo build --release --bins
//! target/release/faka-bench                         # every scenario, 10 s each
//! target/release/faka-bench --scenario flow --duration 5
//! target/release/faka-bench --scenario read,flow,flash --proxy nginx   # also through nginx
//! target/debug/faka-bench --smoke                   # correctness only, < 30 s
//! target/release/faka-bench --scenario scale        # 1M keys + 1M orders, ~12 min
//! ```

//! The bench is a folder of rooms: `settings` (the command line),
//! `client` (the two keep-alive HTTP/1.1 clients), `load` (the runners that
//! drive many connections) and `measure` (what they record), `report` (the
//! table and the targets), `process` (a faka process and its log), `admin`
//! and `metrics` (set-up and faka's counters), `proxy` and `tls` (the TLS
//! proxy `--proxy` puts in front of faka, and the client's side of it), `buyer` (the order journey's
//! steps), `cpu` (CPU accounting from /proc), `servers` (the two trivial
//! ceilings and the two webhook receivers), `burst_trace`, and one module
//! per scenario under `scenarios/`.

mod admin;
mod burst_trace;
mod buyer;
mod client;
mod cpu;
mod load;
mod measure;
mod metrics;
mod process;
mod proxy;
mod report;
mod scenarios;
mod servers;
mod settings;
mod tls;

use anyhow::Result;
use clap::Parser;
use process::Faka;
use report::{print_goals, print_table, progress, Row};
use settings::{Args, Scenario, Settings};

/// The same allocator as faka, for the load generator and the trivial
/// server alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "bench-admin-token";
const SECRET: &str = "bench-hmac-secret";
const PRICE: u64 = 100;

fn main() {
    let args = Args::parse();
    if args.serve_trivial {
        if let Err(e) = servers::serve_outside(args.workers) {
            eprintln!("faka-bench: the outside trivial server failed: {e:#}");
            std::process::exit(2);
        }
        return;
    }
    // At most one: clap refuses both flags together.
    let receiver = if args.hanging_webhooks {
        servers::start_hanging_receiver().map(Some)
    } else if args.accepting_webhooks {
        servers::start_accepting_receiver().map(Some)
    } else {
        Ok(None)
    };
    let webhook_url = match receiver {
        Ok(url) => url,
        Err(e) => {
            eprintln!("faka-bench: cannot start the webhook receiver: {e:#}");
            std::process::exit(2);
        }
    };
    let mut cfg = match Settings::from_args(&args, webhook_url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faka-bench: {e:#}");
            std::process::exit(2);
        }
    };
    if args.hanging_smtp {
        // The hanging receiver never sends SMTP's greeting either.
        match servers::start_hanging_receiver() {
            Ok(url) => cfg.smtp_url = Some(url.replace("http://", "smtp://").replace("/hook", "")),
            Err(e) => {
                eprintln!("faka-bench: cannot start the hanging SMTP server: {e:#}");
                std::process::exit(2);
            }
        }
    }
    if let Some(path) = &cfg.burst_trace {
        burst_trace::record_to(path.clone());
    }
    let rows = run_all(&cfg, &args.scenario);
    print_table(&rows, cfg.smoke);
    print_goals(&rows, cfg.smoke);
    let failed = rows
        .iter()
        .any(|r| r.failures.as_ref().is_some_and(|f| !f.is_empty()));
    println!(
        "\n{}",
        if failed {
            "faka-bench: FAILED"
        } else {
            "faka-bench: all verdicts ok"
        }
    );
    std::process::exit(if failed { 1 } else { 0 });
}

fn run_all(cfg: &Settings, which: &[Scenario]) -> Vec<Row> {
    // `scale` is long: only when asked for by name.
    let wants = |s: Scenario| {
        which.contains(&s) || (which.contains(&Scenario::All) && s != Scenario::Scale)
    };
    eprintln!(
        "faka-bench: {} with {} connections, {:.1} s per scenario{}",
        cfg.faka.display(),
        cfg.concurrency,
        cfg.duration.as_secs_f64(),
        if cfg.smoke { " (smoke)" } else { "" }
    );
    let mut rows = Vec::new();
    let main_scenarios = [
        Scenario::Read,
        Scenario::Pages,
        Scenario::Flow,
        Scenario::Flash,
        Scenario::Import,
    ];
    if main_scenarios.iter().any(|s| wants(*s)) {
        match Faka::start(cfg, "main", 900).and_then(|f| with_proxy(cfg, f)) {
            Ok(faka) => run_main(cfg, faka, &wants, &mut rows),
            Err(e) => rows.push(Row::failed("start faka", e)),
        }
    }
    if wants(Scenario::Mixed) {
        progress("mixed");
        rows.extend(scenarios::mixed::run(cfg).unwrap_or_else(|e| vec![Row::failed("mixed", e)]));
    }
    if wants(Scenario::Scale) {
        progress("scale");
        rows.extend(scenarios::scale::run(cfg).unwrap_or_else(|e| vec![Row::failed("scale", e)]));
    }
    rows
}

/// `faka` with the proxy `--proxy` asks for in front of it (and of the
/// outside trivial server).
fn with_proxy(cfg: &Settings, mut faka: Faka) -> Result<Faka> {
    if let Some(kind) = cfg.proxy {
        let outside = servers::outside(cfg)?.addr;
        faka.proxy = Some(proxy::Proxy::start(kind, faka.addr, outside)?);
    }
    Ok(faka)
}

/// read, pages, flow, flash and import on one faka, then its store check.
fn run_main(cfg: &Settings, faka: Faka, wants: &dyn Fn(Scenario) -> bool, rows: &mut Vec<Row>) {
    if wants(Scenario::Read) {
        progress("read (and the trivial ceilings)");
        let result = scenarios::read::run(cfg, &faka);
        rows.extend(result.unwrap_or_else(|e| vec![Row::failed("read", e)]));
    }
    type Run = fn(&Settings, &Faka) -> Result<Vec<Row>>;
    let others: [(Scenario, &str, Run); 4] = [
        (Scenario::Pages, "pages", scenarios::pages::run),
        (Scenario::Flow, "flow", scenarios::flow::run),
        (Scenario::Flash, "flash", scenarios::flash::run),
        (Scenario::Import, "import", scenarios::import::run),
    ];
    for (s, name, run) in others {
        if wants(s) {
            progress(name);
            rows.extend(run(cfg, &faka).unwrap_or_else(|e| vec![Row::failed(name, e)]));
        }
    }
    let warnings = faka.warnings();
    let check = faka
        .stop_and_check()
        .unwrap_or_else(|e| vec![format!("{e:#}")]);
    rows.push(Row {
        name: "faka check (store)".into(),
        throughput: "-".into(),
        lat: None,
        errors: format!("{} warn/error log lines", warnings.len()),
        ratio: None,
        outside: None,
        failures: Some(check),
        goals: Vec::new(),
    });
    for w in warnings.iter().take(5) {
        println!("faka logged: {w}");
    }
}
