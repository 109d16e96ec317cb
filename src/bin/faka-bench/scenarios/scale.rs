//! `scale` (only when asked for by name: it is long): memory and start-up
//! with 1M keys and 1M orders on one data dir. RSS empty, after the import
//! and after the orders; the start-up time (spawn → `GET /healthz` 200) and
//! RSS after a clean stop and after `kill -9`, with every order (or a
//! sample) read back unchanged; then SIGTERM, `faka check`, and the data
//! dir's size on disk, by part and per order. Rows are printed as they are
//! known, so a run stopped late still shows them.

use crate::admin::{check_counts, create_product, import_range};
use crate::buyer::{check_unique, fetch_order, flow_errors, Buyer, Placed};
use crate::client::{ready, Conn};
use crate::load::{run_batch, run_timed};
use crate::measure::{Series, Wrong};
use crate::metrics::check_statuses;
use crate::process::{Faka, Mem};
use crate::report::{ms, progress, rate, thousands, Goal, Row};
use crate::settings::Settings;
use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SCALE: &str = "bench-scale";

/// How long a start-up may take (a rebuild after kill -9 replays the journal).
const START_LIMIT: Duration = Duration::from_secs(1800);
/// How long a clean stop may take (it flushes sled).
const STOP_LIMIT: Duration = Duration::from_secs(300);

/// Memory and start-up at scale, on one data dir: import the keys (RSS),
/// create and pay the orders (RSS), SIGTERM, start again (time to
/// `/healthz` 200, RSS, read every order back, RSS), kill -9, start again
/// (time, RSS, counts and a sample of orders), SIGTERM and `faka check`.
pub fn run(cfg: &Settings) -> Result<Vec<Row>> {
    let mut rows = Shown(Vec::new());
    if let Err(e) = scale_run(cfg, &mut rows) {
        rows.0.push(Row::failed("scale", e));
    }
    Ok(rows.0)
}

/// Rows that are also printed the moment they are known: a long run that
/// fails (or is stopped) late still shows what it measured.
struct Shown(Vec<Row>);

impl Shown {
    fn push(&mut self, row: Row) {
        let lat = match row.lat {
            Some([p50, p99, _]) => format!(" (p50 {}, p99 {})", ms(p50), ms(p99)),
            None => String::new(),
        };
        eprintln!(
            "faka-bench: scale: {}: {}{lat}",
            row.name.trim(),
            row.throughput
        );
        self.0.push(row);
    }
}

fn scale_run(cfg: &Settings, rows: &mut Shown) -> Result<()> {
    let mut shop = Faka::start(cfg, "scale", 900)?;
    let mut admin = empty_shop(cfg, &shop, rows)?;
    import_keys(cfg, &shop, &mut admin, rows)?;
    let all = create_orders(cfg, &shop, &mut admin, rows)?;
    drop(admin);
    restarts(cfg, &mut shop, &all, rows)?;
    final_check(cfg, &mut shop, rows)
}

/// The cache size faka runs with and its RSS while empty; gives an admin
/// connection once the scale product exists.
fn empty_shop(cfg: &Settings, shop: &Faka, rows: &mut Shown) -> Result<Conn> {
    let cache_mb = faka::config::Config::load(&shop.config, false, std::iter::empty())
        .map_err(|e| anyhow!("loading the config faka was given: {e}"))?
        .storage
        .cache_mb;
    let source = if cfg.cache_mb.is_some() {
        "--cache-mb"
    } else {
        "faka's default"
    };
    rows.push(Row::info(
        "scale: storage.cache_mb",
        format!("{cache_mb} MiB ({source})"),
    ));
    rows.push(Row::info("  RSS empty", shop.memory()?.to_string()));
    let mut admin = Conn::new(shop.addr, Duration::from_secs(600));
    create_product(&mut admin, SCALE, 10)?;
    Ok(admin)
}

/// Imports `scale_keys` keys in tenths, with progress; then the counts and RSS.
fn import_keys(cfg: &Settings, shop: &Faka, admin: &mut Conn, rows: &mut Shown) -> Result<()> {
    let nk = cfg.scale_keys;
    progress(&format!("scale: import of {} keys", thousands(nk as f64)));
    let t0 = Instant::now();
    let step = (nk / 10).max(cfg.setup_chunk);
    let mut at = 0;
    while at < nk {
        let end = (at + step).min(nk);
        import_range(admin, SCALE, "SCALE", (at, end), cfg.setup_chunk)?;
        at = end;
        eprintln!(
            "faka-bench: scale: {} keys imported in {:.1} s; faka {}",
            thousands(at as f64),
            t0.elapsed().as_secs_f64(),
            shop.memory()?
        );
    }
    let took = t0.elapsed();
    let mut failures = Vec::new();
    check_counts(admin, SCALE, nk as u64, 0, &mut failures)?;
    rows.push(
        Row::info(
            &format!("scale import {}", thousands(nk as f64)),
            format!(
                "{} in {:.1} s ({} keys per request)",
                rate(nk as f64, took, "keys"),
                took.as_secs_f64(),
                thousands(cfg.setup_chunk as f64)
            ),
        )
        .verdict(failures),
    );
    rows.push(Row::info("  RSS after import", shop.memory()?.to_string()));
    Ok(())
}

/// Creates and pays `scale_orders` orders; checks and reports them, and RSS.
fn create_orders(cfg: &Settings, shop: &Faka, admin: &mut Conn, rows: &mut Shown) -> Result<Buyer> {
    let (nk, no) = (cfg.scale_keys, cfg.scale_orders);
    progress(&format!(
        "scale: {} orders on {} connections",
        thousands(no as f64),
        cfg.concurrency
    ));
    let (mut all, elapsed) = scale_orders(cfg, shop);
    let mut failures = std::mem::take(&mut all.wrong).into_failures("scale order");
    flow_errors(&[&all.create, &all.pay, &all.get], &mut failures);
    if all.delivered.len() != no {
        failures.push(format!("{} of {no} orders delivered", all.delivered.len()));
    }
    check_unique(all.delivered.iter().flat_map(|(_, k)| k), &mut failures);
    check_counts(admin, SCALE, nk as u64, no as u64, &mut failures)?;
    check_statuses(admin, no, &mut failures)?;
    rows.push(
        Row::new(
            &format!("scale orders {}", thousands(no as f64)),
            format!(
                "{} in {:.0} s",
                rate(all.delivered.len() as f64, elapsed, "orders"),
                elapsed.as_secs_f64()
            ),
            &mut all.journey,
        )
        .verdict(failures),
    );
    rows.push(Row::info("  RSS after orders", shop.memory()?.to_string()));
    Ok(all)
}

/// SIGTERM and start again, reading every order back; then kill -9 and
/// start again, reading a sample.
fn restarts(cfg: &Settings, shop: &mut Faka, all: &Buyer, rows: &mut Shown) -> Result<()> {
    let sizes = (cfg.scale_keys, cfg.scale_orders);
    progress("scale: SIGTERM, then start again on the same data");
    let (failures, took) = shop.stop(STOP_LIMIT)?;
    rows.push(
        Row::info("  stop (SIGTERM)", format!("{:.2} s", took.as_secs_f64())).verdict(failures),
    );
    let orders: Vec<&(Placed, Vec<String>)> = all.delivered.iter().collect();
    progress(&format!(
        "scale: reading all {} orders back",
        thousands(orders.len() as f64)
    ));
    restart_and_verify(
        cfg,
        shop,
        "clean stop",
        &orders,
        "  GET every order",
        sizes,
        rows,
    )?;

    progress("scale: kill -9, then start again (resume sled + journal, or rebuild)");
    shop.kill9()?;
    let every = (orders.len() / 10_000).max(1);
    let sample: Vec<&(Placed, Vec<String>)> = orders.iter().step_by(every).copied().collect();
    let label = format!("  GET {} orders", thousands(sample.len() as f64));
    restart_and_verify(cfg, shop, "kill -9", &sample, &label, sizes, rows)
}

/// SIGTERM and `faka check`: it must find every key and order and nothing wrong.
fn final_check(cfg: &Settings, shop: &mut Faka, rows: &mut Shown) -> Result<()> {
    let (nk, no) = (cfg.scale_keys, cfg.scale_orders);
    progress("scale: SIGTERM and faka check");
    let warnings = shop.warnings();
    let (mut failures, stop) = shop.stop(STOP_LIMIT)?;
    let t0 = Instant::now();
    let (check_failures, report) = shop.check()?;
    let check = t0.elapsed();
    failures.extend(check_failures);
    let expected = format!("{nk} keys, {no} orders: 0 violation");
    if !report.contains(&expected) {
        failures.push(format!("faka check said {report:?}; expected {expected:?}"));
    }
    rows.push(
        Row::info(
            "scale faka check",
            format!(
                "stop {:.1} s, check {:.1} s: {}",
                stop.as_secs_f64(),
                check.as_secs_f64(),
                report.lines().next().unwrap_or("")
            ),
        )
        .verdict(failures),
    );
    rows.push(Row::info(
        "  data dir",
        data_dir_text(&shop.data_dir(), no)?,
    ));
    rows.push(Row::info(
        "  faka log",
        format!("{} warn/error lines", warnings.len()),
    ));
    for w in warnings.iter().take(5) {
        println!("faka logged: {w}");
    }
    Ok(())
}

/// The data dir's size on disk (allocated blocks, as `du` counts them), by
/// top-level entry (its files together), and per order.
fn data_dir_text(data: &Path, orders: usize) -> Result<String> {
    let mut parts = BTreeMap::new();
    for entry in std::fs::read_dir(data).with_context(|| format!("reading {}", data.display()))? {
        let entry = entry?;
        let name = if entry.file_type()?.is_dir() {
            entry.file_name().to_string_lossy().into_owned()
        } else {
            "files".to_string()
        };
        *parts.entry(name).or_insert(0) += disk_bytes(&entry.path())?;
    }
    let total: u64 = parts.values().sum();
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let shown: Vec<String> = parts
        .iter()
        .map(|(k, &b)| format!("{k} {}", mib(b)))
        .collect();
    Ok(format!(
        "{} ({}); {} bytes per order",
        mib(total),
        shown.join(", "),
        thousands((total / orders.max(1) as u64) as f64)
    ))
}

/// The blocks allocated to `path` and, for a directory, everything in it
/// (symlinks are not followed).
fn disk_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    let mut total = m.blocks() * 512;
    if m.is_dir() {
        for entry in std::fs::read_dir(path)? {
            total += disk_bytes(&entry?.path())?;
        }
    }
    Ok(total)
}

/// Starts `shop` again on its data, then reports start-up time and RSS,
/// reads `orders` back (each must still be delivered with its keys), checks
/// the counts, and reports RSS after the reads.
fn restart_and_verify(
    cfg: &Settings,
    shop: &mut Faka,
    after: &str,
    orders: &[&(Placed, Vec<String>)],
    read_label: &str,
    (nk, no): (usize, usize),
    rows: &mut Shown,
) -> Result<()> {
    let up = shop.restart(START_LIMIT)?;
    // RSS once the check is done (its time is in the start-up row).
    shop.wait_for_check(START_LIMIT)?;
    let mem = shop.memory()?;
    let (mut start_row, mut rss_row) = (
        Row::info(
            &format!("start-up after {after}"),
            startup_text(up, &shop.events()),
        ),
        Row::info("  RSS after start", mem.to_string()),
    );
    if (nk, no) == (1_000_000, 1_000_000) {
        let start = format!("start-up after {after} < 2 s (1M + 1M)");
        start_row
            .goals
            .push(Goal::below(start, up.as_secs_f64(), 2.0, "s"));
        let mib = mem.rss as f64 / (1024.0 * 1024.0);
        let rss = format!("RSS after the start after {after} < 300 MiB");
        rss_row.goals.push(Goal::below(rss, mib, 300.0, "MiB"));
    }
    rows.push(start_row);
    rows.push(rss_row);
    print_events(after, &shop.events());
    let (mut reads, mut failures, elapsed) = read_orders(cfg, shop.addr, orders);
    let mut admin = Conn::new(shop.addr, Duration::from_secs(600));
    check_counts(&mut admin, SCALE, nk as u64, no as u64, &mut failures)?;
    check_statuses(&mut admin, no, &mut failures)?;
    rows.push(
        Row::new(
            read_label,
            rate(orders.len() as f64, elapsed, "req"),
            &mut reads,
        )
        .verdict(failures),
    );
    rows.push(Row::info("  RSS after reads", shop.memory()?.to_string()));
    Ok(())
}

/// Creates and pays `scale_orders` orders of one key on `concurrency`
/// connections as fast as they go (the flow journey), with progress.
fn scale_orders(cfg: &Settings, shop: &Faka) -> (Buyer, Duration) {
    let n = cfg.scale_orders;
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let pid = shop.pid();
    std::thread::scope(|s| {
        s.spawn(|| {
            let (t0, mut shown) = (Instant::now(), Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if shown.elapsed() >= Duration::from_secs(15) {
                    shown = Instant::now();
                    let k = next.load(Ordering::Relaxed).min(n);
                    let mem = Mem::of(pid).map_or_else(|e| format!("{e:#}"), |m| m.to_string());
                    eprintln!(
                        "faka-bench: scale: {} of {} orders started in {:.0} s ({}); faka {mem}",
                        thousands(k as f64),
                        thousands(n as f64),
                        t0.elapsed().as_secs_f64(),
                        rate(k as f64, t0.elapsed(), "orders")
                    );
                }
            }
        });
        let (states, elapsed) = run_timed(
            shop.addr,
            cfg.concurrency,
            Duration::from_secs(86_400),
            |_| Buyer::new(cfg),
            |b, conn| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return false;
                }
                ready(b.journey_of(conn, SCALE, "SCALE-", 1)) && i + 1 < n
            },
        );
        done.store(true, Ordering::Relaxed);
        let mut all = Buyer::default();
        states.into_iter().for_each(|b| all.merge(b));
        (all, elapsed)
    })
}

/// GETs each order with its token: it must be delivered, with the keys it
/// was delivered with. Gives the series, failures and the time taken.
fn read_orders(
    cfg: &Settings,
    addr: SocketAddr,
    orders: &[&(Placed, Vec<String>)],
) -> (Series, Vec<String>, Duration) {
    let (states, elapsed) = run_batch(
        addr,
        cfg.concurrency,
        orders.len(),
        |_| (Series::default(), Wrong::default()),
        |(s, wrong), conn, i| {
            let (o, keys) = orders[i];
            match ready(fetch_order(conn, s, wrong, o)) {
                Some((status, k)) if status == "delivered" && &k == keys => {}
                Some((status, k)) => wrong.add(format!(
                    "order {} is {status} with keys {k:?}; was delivered with {keys:?}",
                    o.order_no
                )),
                None => {}
            }
        },
    );
    let (mut series, mut wrong) = (Series::default(), Wrong::default());
    for (s, w) in states {
        series.merge(s);
        wrong.merge(w);
    }
    let mut failures = wrong.into_failures("order read");
    if series.error_count() > 0 {
        failures.push(format!("order reads: {}", series.errors_text()));
    }
    (series, failures, elapsed)
}

/// "1.53 s (store opened at 1.40 s)": the start-up time and, from faka's
/// log, when the store was open.
fn startup_text(up: Duration, events: &[(Duration, String)]) -> String {
    let at = |msg: &str| {
        events
            .iter()
            .find(|(_, l)| l.contains(msg))
            .map(|(t, _)| format!("{:.2} s", t.as_secs_f64()))
    };
    let mut text = format!("{:.2} s to /healthz 200", up.as_secs_f64());
    let parts: Vec<String> = [
        ("resumed", "store resumed from sled + journal"),
        ("rebuilt", "store rebuilt from snapshot + journal"),
        ("store checked", "store opened and checked"),
        ("serving", "faka is serving"),
    ]
    .iter()
    .filter_map(|(name, msg)| at(msg).map(|t| format!("{name} at {t}")))
    .collect();
    if !parts.is_empty() {
        text.push_str(&format!(" ({})", parts.join(", ")));
    }
    text
}

/// Prints faka's info log lines of a start-up with their times.
fn print_events(what: &str, events: &[(Duration, String)]) {
    for (t, line) in events.iter().take(20) {
        let mut v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        // Flattened events; older formats nest them under "fields".
        if let Some(f) = v.get("fields").filter(|f| f.is_object()).cloned() {
            v = f;
        }
        let message = v["message"].as_str().unwrap_or("").to_string();
        if let Some(o) = v.as_object_mut() {
            for k in ["message", "timestamp", "level", "target"] {
                o.remove(k);
            }
        }
        println!(
            "note: start-up after {what}: {:>8.3} s  {message} {v}",
            t.as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{data_dir_text, disk_bytes};

    #[test]
    fn the_data_dir_is_sized_on_disk_by_top_level_part_and_per_order() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::create_dir_all(data.join("sled/blobs")).unwrap();
        std::fs::create_dir(data.join("journal")).unwrap();
        std::fs::write(data.join("sled/blobs/a"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(data.join("sled/conf"), vec![7u8; 1 << 20]).unwrap();
        std::fs::write(data.join("journal/1"), vec![7u8; 2 << 20]).unwrap();
        std::fs::write(data.join("LOCK"), b"1").unwrap();
        let (sled, journal) = (
            disk_bytes(&data.join("sled")).unwrap(),
            disk_bytes(&data.join("journal")).unwrap(),
        );
        // Everything under sled, its sub-directory included.
        assert!(sled >= 4 << 20 && journal >= 2 << 20, "{sled} {journal}");
        let text = data_dir_text(data, 1000).unwrap();
        let files = disk_bytes(&data.join("LOCK")).unwrap();
        let total = sled + journal + files;
        assert!(
            text.starts_with(&format!("{:.1} MiB (files ", total as f64 / 1048576.0)),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                ", journal {:.1} MiB, sled {:.1} MiB); ",
                journal as f64 / 1048576.0,
                sled as f64 / 1048576.0
            )),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "; {} bytes per order",
                crate::report::thousands((total / 1000) as f64)
            )),
            "{text}"
        );
    }
}
