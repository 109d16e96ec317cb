//! The command line and the settings a run uses: `Args` as clap parses
//! it, `Settings` with the mode's defaults filled in (a full run or
//! `--smoke`) and checked. Every knob a scenario, a faka process or the
//! trivial server reads is a field of `Settings`, passed down by reference.

use crate::proxy::ProxyKind;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "faka-bench",
    about = "Load and correctness benchmark for faka: starts the faka binary, drives it over loopback, prints a table"
)]
pub struct Args {
    /// The faka binary [default: `faka` next to this executable]
    #[arg(long)]
    faka: Option<PathBuf>,
    /// Seconds per timed scenario [default: 10; smoke: 1]
    #[arg(long)]
    duration: Option<f64>,
    /// Client connections [default: 64; smoke: 8]
    #[arg(long)]
    concurrency: Option<usize>,
    /// One scenario or several, comma-separated (`read,flow,flash`)
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<Scenario>,
    /// Short runs with small sizes that check correctness only
    #[arg(long)]
    smoke: bool,
    /// Client threads that share the non-blocking connections of `read`,
    /// `flow`, `flash` and `mixed` (`import` and `scale` use a thread per connection)
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// `read` with a thread per connection, as its first ratios were
    /// measured (default: the non-blocking tasks of `flow`)
    #[arg(long)]
    read_threads: bool,
    /// flash: buyers racing [default: 5000; smoke: 300]
    #[arg(long)]
    flash_buyers: Option<usize>,
    /// flash: keys they race for [default: 100; smoke: 20]
    #[arg(long)]
    flash_keys: Option<usize>,
    /// flash: simultaneous connections [default: 1000; smoke: 100]
    #[arg(long)]
    flash_conns: Option<usize>,
    /// import: keys to import [default: 1000000; smoke: 10000]
    #[arg(long)]
    import_keys: Option<usize>,
    /// import: requests they are split into
    #[arg(long, default_value_t = 4)]
    import_requests: usize,
    /// flow: keys imported for the buyers [default: 200000; smoke: 5000]
    #[arg(long)]
    flow_keys: Option<usize>,
    /// flow and mixed setup: keys per import request (faka slows down
    /// for good after one very large import; see --scenario import)
    #[arg(long, default_value_t = 20_000)]
    setup_chunk: usize,
    /// Configure faka's outbound webhooks to a receiver that accepts
    /// connections and never answers (to show it does not slow orders)
    #[arg(long)]
    pub hanging_webhooks: bool,
    /// Configure faka's outbound webhooks to a receiver that answers 200
    /// to every event (so events end delivered)
    #[arg(long, conflicts_with = "hanging_webhooks")]
    pub accepting_webhooks: bool,
    /// Configure faka's e-mail (`[email]`, buyer and merchant) to an SMTP
    /// server that accepts connections and never answers (to show it does
    /// not slow orders)
    #[arg(long)]
    pub hanging_smtp: bool,
    /// Send an `Idempotency-Key` with every order (one key per order), as
    /// a careful client does
    #[arg(long)]
    idempotency_keys: bool,
    /// flow: put a coupon (10 % off, shop-wide) on every order, so each
    /// order also claims a coupon use in the writer
    #[arg(long)]
    coupon: bool,
    /// faka's `[retention]` idempotency_hours and delivered_events_hours
    /// for every faka started, with a sweep every 5 s [default: faka's,
    /// 168 and 720 hours, a sweep every 600 s]
    #[arg(long, value_name = "N")]
    retention_hours: Option<u64>,
    /// scale: keys imported [default: 1000000; smoke: 2000]
    #[arg(long)]
    scale_keys: Option<usize>,
    /// scale: orders created and paid, one key each [default: 1000000; smoke: 1000]
    #[arg(long)]
    scale_orders: Option<usize>,
    /// faka's `storage.cache_mb` (sled's cache) for every faka started
    /// [default: faka's own default]; FAKA_* variables of this shell are
    /// not passed on to faka
    #[arg(long)]
    cache_mb: Option<u64>,
    /// faka's `server.worker_nice` for every faka started, and the nice
    /// value of the trivial server's workers, so that both sides of a ratio
    /// yield alike to the load generator [default: faka's default, 5]
    #[arg(long)]
    worker_nice: Option<i32>,
    /// faka's `server.writer_nice` for every faka started: below 0 raises
    /// its writer and commit threads (needs CAP_SYS_NICE) [default:
    /// faka's default]
    #[arg(long, allow_negative_numbers = true)]
    writer_nice: Option<i32>,
    /// faka's `server.workers` (HTTP worker threads) for every faka
    /// started, and the trivial servers' worker count [default: actix's,
    /// one per core]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Write one line per request of flash's `/ping` burst to FILE: the
    /// request, its connection, when it was sent, reached the handler and
    /// was answered (µs from the first), and the server thread that ran it
    #[arg(long, value_name = "FILE")]
    burst_trace: Option<PathBuf>,
    /// Also measure `read`, `flow` and `flash` through a TLS-terminating
    /// proxy started on loopback in front of faka and of the outside
    /// trivial server (`scripts/install-bench-deps.sh` installs nginx)
    #[arg(long, value_enum)]
    proxy: Option<ProxyKind>,
    /// Internal: serve the outside ceiling (`GET /ping`) in this process
    /// until stdin closes, after printing its port and nice value
    #[arg(long, hide = true)]
    pub serve_trivial: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    All,
    Read,
    /// The storefront's `/` and product page against the ceilings.
    Pages,
    Flow,
    Flash,
    Import,
    Mixed,
    /// Not part of `all`: memory and start-up with 1M keys and 1M orders.
    Scale,
}

/// The options with the mode's defaults filled in: everything a run reads.
pub struct Settings {
    pub faka: PathBuf,
    pub duration: Duration,
    pub concurrency: usize,
    pub client_threads: usize,
    pub read_threads: bool,
    pub smoke: bool,
    pub flash_buyers: usize,
    pub flash_keys: usize,
    pub flash_conns: usize,
    pub import_keys: usize,
    pub import_requests: usize,
    pub flow_keys: usize,
    pub setup_chunk: usize,
    pub scale_keys: usize,
    pub scale_orders: usize,
    /// `storage.cache_mb` written into faka's config, when `--cache-mb`.
    pub cache_mb: Option<u64>,
    /// `server.worker_nice` written into faka's config, when `--worker-nice`;
    /// also the trivial server workers' nice value.
    pub worker_nice: Option<i32>,
    /// `server.writer_nice` written into faka's config, when `--writer-nice`.
    pub writer_nice: Option<i32>,
    /// `server.workers` written into faka's config, when `--workers`; also
    /// the trivial server's worker count.
    pub workers: Option<usize>,
    /// The webhook URL written into faka's config: the hanging receiver's
    /// (`--hanging-webhooks`) or the accepting one's (`--accepting-webhooks`).
    pub webhook_url: Option<String>,
    /// The SMTP URL written into faka's `[email]`: the hanging server's
    /// (`--hanging-smtp`); set by `main`, which starts it.
    pub smtp_url: Option<String>,
    /// Whether every order carries an `Idempotency-Key` (`--idempotency-keys`).
    pub idempotency_keys: bool,
    /// Whether flow's orders carry a coupon (`--coupon`).
    pub coupon: bool,
    /// `[retention]` hours written into faka's config, when `--retention-hours`.
    pub retention_hours: Option<u64>,
    /// Where `--burst-trace` writes its stamps.
    pub burst_trace: Option<PathBuf>,
    /// The proxy `--proxy` puts in front of faka and the outside server.
    pub proxy: Option<ProxyKind>,
}

impl Settings {
    /// The settings of `a`; `webhook_url` is the receiver's that
    /// `--hanging-webhooks` or `--accepting-webhooks` started.
    pub fn from_args(a: &Args, webhook_url: Option<String>) -> Result<Settings> {
        let pick = |v: Option<usize>, full: usize, smoke: usize| {
            v.unwrap_or(if a.smoke { smoke } else { full })
        };
        let secs = a.duration.unwrap_or(if a.smoke { 1.0 } else { 10.0 });
        if !(secs > 0.0 && secs < 86_400.0) {
            bail!("--duration must be a positive number of seconds");
        }
        let s = Settings {
            faka: match &a.faka {
                Some(p) => p.clone(),
                None => default_faka()?,
            },
            duration: Duration::from_secs_f64(secs),
            concurrency: pick(a.concurrency, 64, 8),
            client_threads: a.client_threads,
            read_threads: a.read_threads,
            smoke: a.smoke,
            flash_buyers: pick(a.flash_buyers, 5000, 300),
            flash_keys: pick(a.flash_keys, 100, 20),
            flash_conns: pick(a.flash_conns, 1000, 100),
            import_keys: pick(a.import_keys, 1_000_000, 10_000),
            import_requests: a.import_requests,
            flow_keys: pick(a.flow_keys, 200_000, 5_000),
            setup_chunk: a.setup_chunk,
            scale_keys: pick(a.scale_keys, 1_000_000, 2_000),
            scale_orders: pick(a.scale_orders, 1_000_000, 1_000),
            cache_mb: a.cache_mb,
            worker_nice: a.worker_nice,
            writer_nice: a.writer_nice,
            workers: a.workers.map(|n| n.max(1)),
            webhook_url,
            smtp_url: None,
            idempotency_keys: a.idempotency_keys,
            coupon: a.coupon,
            retention_hours: a.retention_hours,
            burst_trace: a.burst_trace.clone(),
            proxy: a.proxy,
        };
        if s.concurrency < 4
            || s.flash_conns == 0
            || s.import_requests == 0
            || s.setup_chunk == 0
            || s.client_threads == 0
        {
            bail!("--concurrency must be at least 4; --flash-conns, --import-requests, --setup-chunk and --client-threads at least 1");
        }
        if s.flash_keys == 0 || s.flash_keys > s.flash_buyers || s.import_keys == 0 {
            bail!("need 0 < --flash-keys <= --flash-buyers and --import-keys > 0");
        }
        if s.scale_orders == 0 || s.scale_orders > s.scale_keys {
            bail!("need 0 < --scale-orders <= --scale-keys (one key per order)");
        }
        if !s.faka.is_file() {
            bail!(
                "faka binary not found at {} (build it with `cargo build --release --bins`, or pass --faka PATH)",
                s.faka.display()
            );
        }
        Ok(s)
    }
}

fn default_faka() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    Ok(dir.join(format!("faka{}", std::env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests {
    use super::{Args, Scenario, Settings};
    use clap::Parser;

    fn settings(flags: &[&str]) -> Result<Settings, String> {
        // Any existing file passes for the faka binary here.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut argv = vec!["faka-bench", "--faka", exe.to_str().unwrap_or("")];
        argv.extend(flags);
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        Settings::from_args(&args, None).map_err(|e| e.to_string())
    }

    #[test]
    fn the_retention_runs_of_the_benchmarks_parse_as_documented() {
        let base = ["--scenario", "scale", "--idempotency-keys"];
        let before = settings(&[&base[..], &["--accepting-webhooks"]].concat()).unwrap();
        assert!(before.idempotency_keys);
        assert_eq!(before.retention_hours, None);
        let flags = [
            &base[..],
            &["--accepting-webhooks", "--retention-hours", "0"],
        ]
        .concat();
        assert_eq!(settings(&flags).unwrap().retention_hours, Some(0));
        let plain = settings(&["--scenario", "scale"]).unwrap();
        assert!(plain.proxy.is_none());
        assert!(!plain.idempotency_keys);
        let both = settings(&["--hanging-webhooks", "--accepting-webhooks"]);
        assert!(both.is_err_and(|e| e.contains("cannot be used with")));
    }

    #[test]
    fn the_proxy_flag_names_nginx_and_nothing_else() {
        let proxied = settings(&["--proxy", "nginx"]).unwrap();
        assert!(proxied.proxy == Some(super::ProxyKind::Nginx));
        assert!(settings(&["--proxy", "apache"]).is_err());
        let raised = settings(&["--worker-nice", "0", "--writer-nice", "-5"]).unwrap();

        assert_eq!(
            (raised.worker_nice, raised.writer_nice),
            (Some(0), Some(-5))
        );
    }

    #[test]
    fn several_scenarios_run_in_one_invocation() {
        let args = Args::try_parse_from(["faka-bench", "--scenario", "read,flow,flash"]).unwrap();
        assert!(args.scenario == [Scenario::Read, Scenario::Flow, Scenario::Flash]);
        let all = Args::try_parse_from(["faka-bench"]).unwrap();
        assert!(all.scenario == [Scenario::All]);
    }
}
