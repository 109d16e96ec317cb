//! What the bench reads from faka's `/metrics`: the writer's totals
//! (commands, batches, commit time, journal syncs and how many of them
//! stalled), taken before and after a timed part to give that part's share,
//! and the orders by status as the store counts them.

use crate::client::Conn;
use crate::ADMIN;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;

/// faka's `/metrics` text.
fn metrics_text(admin: &mut Conn) -> Result<String> {
    let auth = format!("Bearer {ADMIN}");
    let r = admin
        .send("GET", "/metrics", &[("Authorization", &auth)], b"")
        .context("GET /metrics")?;
    if r.status != 200 {
        bail!("GET /metrics answered {}", r.status);
    }
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

/// The writer's totals so far, from `/metrics`: commands run, batches made
/// durable, the seconds those batches took (run, journal, fsync, apply), and
/// the journal's write + fdatasync calls, all and those over 50 ms (the
/// disk's stalls, which hold every request of their batch).
#[derive(Clone, Copy, Default)]
pub struct WriterTotals {
    pub commands: u64,
    pub batches: u64,
    pub commit_secs: f64,
    syncs: u64,
    slow_syncs: u64,
}

impl WriterTotals {
    pub fn since(self, before: WriterTotals) -> WriterTotals {
        WriterTotals {
            commands: self.commands.saturating_sub(before.commands),
            batches: self.batches.saturating_sub(before.batches),
            commit_secs: (self.commit_secs - before.commit_secs).max(0.0),
            syncs: self.syncs.saturating_sub(before.syncs),
            slow_syncs: self.slow_syncs.saturating_sub(before.slow_syncs),
        }
    }

    /// "N of M journal syncs over 50 ms".
    pub fn syncs_text(&self) -> String {
        format!("{} of {} over 50 ms", self.slow_syncs, self.syncs)
    }
}

pub fn writer_totals(admin: &mut Conn) -> Result<WriterTotals> {
    parse_writer_totals(&metrics_text(admin)?)
}

fn parse_writer_totals(text: &str) -> Result<WriterTotals> {
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow!("no {name} in /metrics"))
    };
    let syncs = value("faka_writer_journal_sync_seconds_count")? as u64;
    let fast = value(r#"faka_writer_journal_sync_seconds_bucket{le="0.05"}"#)? as u64;
    Ok(WriterTotals {
        commands: value("faka_writer_batch_size_sum")? as u64,
        batches: value("faka_writer_batch_size_count")? as u64,
        commit_secs: value("faka_writer_commit_seconds_sum")?,
        syncs,
        slow_syncs: syncs.saturating_sub(fast),
    })
}

/// Orders by status, as the store counts them (`faka_orders` in `/metrics`).
fn order_statuses(admin: &mut Conn) -> Result<BTreeMap<String, u64>> {
    let mut by_status = BTreeMap::new();
    for line in metrics_text(admin)?.lines() {
        let Some(rest) = line.strip_prefix("faka_orders{status=\"") else {
            continue;
        };
        if let Some((status, n)) = rest.split_once("\"} ") {
            let n: u64 = n
                .trim()
                .parse()
                .with_context(|| format!("bad metrics line {line:?}"))?;
            by_status.insert(status.to_string(), n);
        }
    }
    if by_status.is_empty() {
        bail!("no faka_orders lines in /metrics");
    }
    Ok(by_status)
}

/// Every order is delivered: `delivered` of them, none in any other status.
pub fn check_statuses(
    admin: &mut Conn,
    delivered: usize,
    failures: &mut Vec<String>,
) -> Result<()> {
    let by_status = order_statuses(admin)?;
    let others: u64 = by_status
        .iter()
        .filter(|(s, _)| *s != "delivered")
        .map(|(_, n)| n)
        .sum();
    if by_status.get("delivered") != Some(&(delivered as u64)) || others != 0 {
        failures.push(format!(
            "orders by status {by_status:?}; expected {delivered} delivered and none else"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_writer_totals;

    #[test]
    fn slow_journal_syncs_are_counted_from_faka_s_own_histogram() {
        let h = faka::store::WriterStats::default();
        for secs in [0.0004, 0.01, 0.05, 0.051, 0.3] {
            h.journal_sync_seconds.observe(secs);
        }
        h.batch_size.observe(7.0);
        h.commit_seconds.observe(0.02);
        let families: Vec<_> = [&h.batch_size, &h.commit_seconds, &h.journal_sync_seconds]
            .iter()
            .flat_map(|m| prometheus::core::Collector::collect(*m))
            .collect();
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut text).unwrap();
        let t = parse_writer_totals(&String::from_utf8(text).unwrap()).unwrap();
        // 50 ms itself is within its bucket; 51 ms and 300 ms are over.
        assert_eq!((t.syncs, t.slow_syncs), (5, 2));
        assert_eq!((t.commands, t.batches), (7, 1));
        assert!((t.commit_secs - 0.02).abs() < 1e-9);
        assert_eq!(t.syncs_text(), "2 of 5 over 50 ms");
    }
}
