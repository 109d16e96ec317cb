//! Filling sled from the durable truth: the [`Applier`] that copies
//! snapshot chunks and journal batches into sled a window at a time (also
//! used to resume sled over the journal after a crash), and the full
//! rebuild from the newest snapshot that verifies plus the journal after it.

use super::{read_meta, Recovery, Resumed, LEGACY_LAYOUT};
use crate::store::datadir::{err, write_synced_marker, SYNCED};
use crate::store::datadir::{journal_dir, sled_dir, OpenError};
use crate::store::journal;
use crate::store::snapshot;
use crate::store::tree::{self, Tree, Trees};
use std::collections::BTreeMap;
use std::fs::{self};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Replayed writes gathered before they are copied into sled at once.
pub(super) const REBUILD_WINDOW_BYTES: u64 = 16 << 20;

/// Copies snapshot chunks and journal batches into the sled being rebuilt,
/// a window of [`REBUILD_WINDOW_BYTES`] at a time: within a window only the
/// last write of each row is copied (an order created then delivered, an
/// expiry added then removed, a key held then sold: one write each), in
/// (tree, key) order, so `apply_writes` copies big windows on two threads;
/// sled is flushed after each window so its unwritten log buffers stay
/// bounded while it is fed as fast as it goes. Windows are copied in
/// journal order, so the end state is the same as replaying write by write.
pub(super) struct Applier<'a> {
    pub(super) trees: &'a Trees,
    pub(super) window: BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>,
    pub(super) window_bytes: u64,
    pub(super) window_limit: u64,
}

impl<'a> Applier<'a> {
    pub(super) fn new(trees: &'a Trees) -> Applier<'a> {
        Applier {
            trees,
            window: BTreeMap::new(),
            window_bytes: 0,
            window_limit: REBUILD_WINDOW_BYTES,
        }
    }

    /// Replays every journal batch after `after`, copies what is left in
    /// the window, records the last batch as sled's applied seq and flushes
    /// sled. Returns the last batch and how many were replayed.
    pub(super) fn replay_journal(
        mut self,
        data_dir: &Path,
        after: u64,
    ) -> Result<(u64, u64), OpenError> {
        let mut batches = 0u64;
        let last = journal::replay(&journal_dir(data_dir), after, |b| {
            batches += 1;
            self.apply(b.writes)
        })
        .map_err(|e| err("replaying journal", e))?;
        self.drain().map_err(|e| err("replaying journal", e))?;
        self.trees
            .get(Tree::Meta)
            .insert(tree::META_APPLIED_SEQ, &tree::u64_key(last))
            .map_err(|e| err("writing meta", e))?;
        self.trees.db.flush().map_err(|e| err("flushing sled", e))?;
        Ok((last, batches))
    }

    pub(super) fn apply(&mut self, writes: Vec<journal::Write>) -> io::Result<()> {
        for w in writes {
            // The layout before key blocks put an empty row in `avail` for
            // every available key; this build puts a bitmap or nothing.
            if w.tree == Tree::Avail as u8 && w.value.as_ref().is_some_and(|v| v.is_empty()) {
                return Err(io::Error::other(LEGACY_LAYOUT));
            }
            self.window_bytes +=
                (w.key.len() + w.value.as_ref().map_or(0, |v| v.len()) + 16) as u64;
            self.window.insert((w.tree, w.key), w.value);
        }
        if self.window_bytes >= self.window_limit {
            self.drain()?;
        }
        Ok(())
    }

    pub(super) fn drain(&mut self) -> io::Result<()> {
        let writes: Vec<journal::Write> = std::mem::take(&mut self.window)
            .into_iter()
            .map(|((tree, key), value)| journal::Write { tree, key, value })
            .collect();
        self.window_bytes = 0;
        crate::store::apply::apply_writes(self.trees, &writes).map_err(io::Error::other)?;
        self.trees.db.flush().map_err(io::Error::other)?;
        Ok(())
    }
}

/// Rebuilds sled from the newest snapshot that verifies and the journal
/// after its base; `end` is the journal's last batch ([`journal::scan`]).
pub(super) fn rebuild(
    data_dir: &Path,
    cache_bytes: u64,
    end: Option<u64>,
) -> Result<Resumed, OpenError> {
    let started = std::time::Instant::now();
    let sled = sled_dir(data_dir);
    // The marker belongs to the sled about to be removed.
    if data_dir.join(SYNCED).exists() {
        fs::remove_file(data_dir.join(SYNCED)).map_err(|e| err("removing SLED_SYNCED", e))?;
    }
    if sled.exists() {
        fs::remove_dir_all(&sled).map_err(|e| err("removing stale sled directory", e))?;
    }
    let trees = Trees::open(&sled, cache_bytes).map_err(|e| err("creating sled", e))?;
    let mut applier = Applier::new(&trees);
    let mut base = 0;
    let snapshots = snapshot::list(data_dir).map_err(|e| err("listing snapshots", e))?;
    if end.is_none() && !snapshots.is_empty() {
        // A shop always keeps its newest segment (and a backup copies it),
        // so snapshots without any journal are a copy that left `journal/`
        // out: starting would set the snapshots aside and serve an empty
        // shop.
        return Err(err(
            "opening the data directory",
            "it has snapshots but no journal segments; copy its journal/ directory too, or restore a backup",
        ));
    }
    let reach = end.unwrap_or(0);
    for (_, path) in snapshots {
        let info = match snapshot::read(&path, |_| Ok(())) {
            Ok(info) => info,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "snapshot does not verify; trying an older one");
                continue;
            }
        };
        if info.end > reach {
            // A copy that caught this snapshot but not the journal behind it.
            // The store continues from the journal's end, so this snapshot
            // belongs to another timeline from now on: set it aside for good.
            tracing::warn!(file = %path.display(), snapshot_end = info.end, journal_end = reach,
                "the journal does not reach this snapshot's end; setting it aside");
            fs::rename(&path, path.with_extension("snap.orphan"))
                .map_err(|e| err("setting aside a snapshot", e))?;
            continue;
        }
        snapshot::read(&path, |writes| applier.apply(writes))
            .map_err(|e| err("loading snapshot", e))?;
        base = info.base;
        break;
    }
    let (last, batches) = applier.replay_journal(data_dir, base)?;
    write_synced_marker(data_dir, last).map_err(|e| err("writing SLED_SYNCED marker", e))?;
    let (seq, counters) = read_meta(&trees)?;
    if base > 0 || batches > 0 {
        tracing::info!(
            snapshot_base = base,
            replayed_batches = batches,
            applied_seq = seq,
            millis = started.elapsed().as_millis() as u64,
            "store rebuilt from snapshot + journal"
        );
    }
    Ok((Arc::new(trees), seq, counters, Recovery::Rebuilt))
}
