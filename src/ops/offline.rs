//! The operator's commands on a stopped shop's data directory: `faka check`,
//! which only reads, and `faka repair`, the one explicit way past damage a
//! start refuses.
//!
//! `faka check` must leave every byte as it was: opening sled writes to its
//! files and a start sets a torn tail aside, so it verifies the journal and
//! markers in place (read-only), then opens and checks a copy in a scratch
//! directory.

use crate::config::Config;
use crate::startup;
use crate::store::{self, recovery, repair, Store};
use anyhow::{bail, Context};
use std::path::Path;

/// What `faka check` found; `ok` is false when it must exit non-zero.
pub struct Checked {
    pub text: String,
    pub ok: bool,
}

/// Checks a stopped shop: journal and markers where they are, then the
/// invariants and the master key on a copy under `scratch`.
pub fn check(cfg: &Config, scratch: &Path) -> anyhow::Result<Checked> {
    let data_dir = &cfg.storage.data_dir;
    let lock = recovery::lock_data_dir(data_dir)?;
    let scan = match recovery::verify(data_dir) {
        Ok(scan) => scan,
        Err(e) => {
            return Ok(Checked {
                text: format!("the store does not open: {e}\n"),
                ok: false,
            })
        }
    };
    let mut text = String::new();
    if let Some(t) = &scan.torn {
        text.push_str(&format!(
            "note: {} ends in an interrupted write of {} bytes at byte {} (never acknowledged); \
             the next start sets it aside\n",
            t.path.display(),
            t.len - t.offset,
            t.offset
        ));
    }
    let copy = tempfile::Builder::new()
        .prefix("faka-check-")
        .tempdir_in(scratch)
        .with_context(|| format!("making a scratch directory in {}", scratch.display()))?;
    repair::copy_for_check(data_dir, copy.path())
        .with_context(|| format!("copying the store to {}", copy.path().display()))?;
    drop(lock);
    let mut opts = startup::store_options(cfg);
    opts.data_dir = copy.path().to_path_buf();
    opts.min_free_bytes = 0;
    let store = Store::open(&opts)?;
    let key = key_report(cfg, &store);
    let report = crate::ops::check::run(&store);
    store.close();
    drop(store);
    let report = report?;
    text.push_str(&report.to_string());
    let key_ok = key.as_ref().is_none_or(|(ok, _)| *ok);
    if let Some((_, line)) = key {
        text.push_str(&line);
    }
    Ok(Checked {
        text,
        ok: report.ok() && key_ok,
    })
}

/// Whether the configured master key is this shop's, as a line of the
/// report; `None` when the shop has no check value yet.
fn key_report(cfg: &Config, store: &Store) -> Option<(bool, String)> {
    let stored = store.key_check().ok()??;
    Some(match startup::load_crypto(cfg) {
        Ok((crypto, _)) if crypto.matches_check_value(&stored) => {
            (true, "master key: this shop's\n".to_string())
        }
        Ok(_) => (
            false,
            "master key: NOT this shop's (its card keys were sealed with another key)\n"
                .to_string(),
        ),
        Err(e) => (true, format!("master key: not checked ({e})\n")),
    })
}

/// `faka repair`: sets aside what a start refuses, rebuilds the store from
/// what is kept, checks it, and reports every batch and order dropped.
pub fn repair(cfg: &Config) -> anyhow::Result<String> {
    let data_dir = &cfg.storage.data_dir;
    let Some(done) = repair::set_aside_damage(data_dir)? else {
        return Ok(format!(
            "{} opens as it is: nothing to repair (`faka check` checks it)\n",
            data_dir.display()
        ));
    };
    let store = Store::open(&startup::store_options(cfg)).context("opening the repaired store")?;
    let report = crate::ops::check::run(&store);
    let rolled_back = done
        .old_sled
        .as_deref()
        .map(|old| rolled_back_orders(&store, old))
        .transpose();
    store.close();
    drop(store);
    let (report, rolled_back) = (report?, rolled_back?);
    let mut text = format!("repaired {}: {}\n", data_dir.display(), done.reason);
    text.push_str(&format!("kept batches up to {}", done.kept_end));
    if done.known_end > done.kept_end {
        text.push_str(&format!(
            "; DROPPED batches {}..={} ({} batch(es))",
            done.kept_end + 1,
            done.known_end,
            done.known_end - done.kept_end
        ));
    }
    text.push('\n');
    let mut orders: std::collections::BTreeMap<String, String> = done
        .orders_in_dropped
        .iter()
        .map(|no| (no.clone(), "written by a dropped batch".to_string()))
        .collect();
    for (no, what) in rolled_back.unwrap_or_default() {
        orders.insert(no, what);
    }
    text.push_str(&format!("orders affected: {}\n", orders.len()));
    for (no, what) in &orders {
        text.push_str(&format!("  - {no}: {what}\n"));
    }
    text.push_str("set aside (renamed, nothing deleted):\n");
    for (from, to) in &done.renamed {
        text.push_str(&format!("  {} -> {}\n", from.display(), to.display()));
    }
    text.push_str(&report.to_string());
    if !report.ok() {
        bail!("{text}the repaired store has invariant violations");
    }
    Ok(text)
}

/// Orders the set-aside sled had that the repaired store lacks or holds in
/// another status: what the repair rolled back.
fn rolled_back_orders(store: &Store, old_sled: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (no, was) in store::repair::orders_in_sled(old_sled)? {
        match store.order(&no)? {
            None => out.push((no, format!("was {}, now gone", was.as_str()))),
            Some(o) if o.status != was => out.push((
                no,
                format!("was {}, now {}", was.as_str(), o.status.as_str()),
            )),
            Some(_) => {}
        }
    }
    Ok(out)
}
