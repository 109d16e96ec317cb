//! `import`: a large key import as text/plain in a few requests (1,000,000
//! keys in 4 by default): every key added, none reported as a duplicate,
//! and the product's counts matching.

use crate::admin::{create_product, key_counts, key_lines};
use crate::client::Conn;
use crate::measure::{timed, Series};
use crate::process::Faka;
use crate::report::{rate, thousands, Goal, Row};
use crate::settings::Settings;
use crate::ADMIN;
use anyhow::Result;
use std::time::{Duration, Instant};

pub fn run(cfg: &Settings, faka: &Faka) -> Result<Vec<Row>> {
    let mut admin = Conn::new(faka.addr, Duration::from_secs(600));
    create_product(&mut admin, "bench-import", 10)?;
    let (total, parts) = (cfg.import_keys, cfg.import_requests);
    let bodies: Vec<Vec<u8>> = (0..parts)
        .map(|p| key_lines("IMPORT", total * p / parts, total * (p + 1) / parts))
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "text/plain"),
    ];
    let (mut series, mut failures, mut added) = (Series::default(), Vec::new(), 0u64);
    let t0 = Instant::now();
    for body in &bodies {
        let Some(r) = timed(&mut series, || {
            admin.send(
                "POST",
                "/api/v1/admin/products/bench-import/keys",
                &headers,
                body,
            )
        }) else {
            continue;
        };
        if series.check(&r, 200) {
            let v = r.json()?;
            added += v["added"].as_u64().unwrap_or(0);
            if v["duplicates"] != 0 {
                failures.push(format!("fresh keys reported as duplicates: {v}"));
            }
        }
    }
    let elapsed = t0.elapsed();
    if added != total as u64 || series.error_count() > 0 {
        failures.push(format!(
            "added {added} of {total} keys; errors: {}",
            series.errors_text()
        ));
    }
    let (available, held, sold) = key_counts(&mut admin, "bench-import")?;
    if (available, held, sold) != (total as u64, 0, 0) {
        failures.push(format!(
            "admin counts available {available}, held {held}, sold {sold}; expected {total}, 0, 0"
        ));
    }
    let throughput = format!(
        "{} in {:.2} s ({:.0} MB)",
        rate(total as f64, elapsed, "keys"),
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6
    );
    let mut row = Row::new(
        &format!("import {}×{}", parts, thousands((total / parts) as f64)),
        throughput,
        &mut series,
    )
    .verdict(failures);
    if total == 1_000_000 {
        row.goals.push(Goal::below(
            "import of 1M keys < 10 s",
            elapsed.as_secs_f64(),
            10.0,
            "s",
        ));
    }
    Ok(vec![row])
}
