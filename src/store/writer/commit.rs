//! The durable stage: appends each batch to the journal and fdatasyncs it,
//! applies it to sled, answers its callers, takes snapshots, and opens sled
//! again when it fell behind the journal.

use super::{lock, Commit, InFlight, Stage, WriterStats, RESUME_EVERY};
use crate::error::Error;
use crate::store::apply::apply_writes;
use crate::store::datadir::{self, free_bytes};
use crate::store::journal::{Batch, Journal};
use crate::store::recovery;
use crate::store::snapshot::Snapshotter;
use crate::store::tree::{Tree, Trees};
use crate::store::tx::Counters;
use crate::store::view::{Unapplied, View};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The durable stage: journal, fsync, sled, answers, snapshots.
pub(super) struct Committer {
    pub(super) view: Arc<View>,
    pub(super) unapplied: Arc<Unapplied>,
    pub(super) cache_bytes: u64,
    pub(super) journal: Journal,
    pub(super) durable_seq: u64,
    pub(super) durable_counters: Counters,
    pub(super) stats: Arc<WriterStats>,
    pub(super) snapshots: Snapshotter,
    pub(super) on_commit: Option<Box<dyn Fn() + Send>>,
    pub(super) min_free_bytes: u64,
    pub(super) in_flight: InFlight,
    pub(super) failed_epoch: Arc<AtomicU64>,
    pub(super) ready: crossbeam_channel::Sender<()>,
    pub(super) sled_sync: SledSync,
}

/// How often sled is flushed and the batch it then holds recorded
/// (`SLED_SYNCED`): a start after a crash replays the journal from there
/// (`recovery::resume`) instead of rebuilding sled from the snapshot.
const SLED_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The committer's periodic sled flush, on a thread of its own: the flush
/// writes out and fsyncs sled's log, which commits need not wait for.
pub(super) struct SledSync {
    pub(super) data_dir: std::path::PathBuf,
    pub(super) last: Instant,
    pub(super) running: Option<std::thread::JoinHandle<()>>,
    /// The batch the last flush was started for.
    pub(super) started_for: u64,
}

impl SledSync {
    /// Call after batch `seq` (and every batch before it) is in sled.
    fn maybe_start(&mut self, seq: u64, trees: &Arc<Trees>) {
        if self.last.elapsed() < SLED_SYNC_EVERY
            || self.running.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.last = Instant::now();
        self.started_for = seq;
        let (dir, trees) = (self.data_dir.clone(), trees.clone());
        self.running = std::thread::Builder::new()
            .name("faka-sled-sync".into())
            .spawn(move || {
                let synced = trees
                    .db
                    .flush()
                    .map_err(|e| std::io::Error::other(trees.note_error(e)))
                    .and_then(|_| datadir::write_synced_marker(&dir, seq));
                if let Err(e) = synced {
                    tracing::warn!(error = %e, "sled flush failed; a start after a crash replays from an earlier batch, or rebuilds");
                }
            })
            .ok();
    }

    fn wait(&mut self) {
        if let Some(h) = self.running.take() {
            let _ = h.join();
        }
    }
}

impl Committer {
    pub(super) fn run(mut self, stages: Receiver<Stage>) {
        loop {
            let stage = match stages.recv_timeout(SLED_SYNC_EVERY) {
                Ok(stage) => stage,
                Err(RecvTimeoutError::Timeout) => {
                    self.sync_when_idle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match stage {
                Stage::Commit(c) => self.commit(c),
                Stage::Sync(reply) => {
                    let _ = reply.send((self.durable_seq, self.durable_counters));
                }
                Stage::Resume(reply) => {
                    let _ = reply.send(self.resume());
                }
                Stage::Close(ack) => {
                    self.close();
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    return;
                }
            }
        }
        self.close();
    }

    /// A shop gone quiet still has its last batches vouched for: without a
    /// commit nothing else would flush sled and move `SLED_SYNCED` past
    /// them, and after a crash only that marker (and sled) tell a journal
    /// whose end was lost from one whose last write was interrupted.
    fn sync_when_idle(&mut self) {
        if self.sled_sync.started_for >= self.durable_seq || self.unapplied.is_behind() {
            return;
        }
        if let Ok(trees) = self.view.get() {
            self.sled_sync.maybe_start(self.durable_seq, &trees);
        }
    }

    fn close(&mut self) {
        self.sled_sync.wait();
        // A sled behind the journal is no clean state either: the next
        // start replays the journal over it.
        let poisoned = self.stats.poisoned.load(Ordering::SeqCst) || self.unapplied.is_behind();
        let flushed = self
            .view
            .get()
            .map_err(|e| e.to_string())
            .and_then(|trees| trees.db.flush().map_err(|e| e.to_string()));
        if let Err(e) = flushed {
            tracing::error!(error = %e, "sled flush at shutdown failed; next start rebuilds from the journal");
            return;
        }
        if !poisoned {
            if let Err(e) = datadir::write_clean_marker(&self.snapshots.data_dir, self.durable_seq)
            {
                tracing::error!(error = %e, "could not write the clean-shutdown marker");
            }
        }
    }

    fn commit(&mut self, c: Commit) {
        let result = if self.failed_epoch.load(Ordering::SeqCst) == c.epoch {
            // Computed on top of a batch that failed: nothing of it may stand.
            Err(Error::unavailable(
                "storage is full or failing; nothing was changed",
            ))
        } else {
            match &c.batch {
                // While sled is behind, a batch that writes nothing is
                // refused too: its answers rest on reads of that sled.
                None if self.unapplied.is_behind() => Err(refused_while_behind()),
                None => Ok(true),
                Some(b) => self.make_durable(b, c.counters),
            }
        };
        if result.is_err() {
            self.failed_epoch.store(c.epoch, Ordering::SeqCst);
        }
        if let Some(b) = &c.batch {
            // A durable batch sled did not take stays for the writer to read
            // through (behind the earlier ones sled lacks, if any).
            if !matches!(result, Ok(false)) {
                let mut q = lock(&self.in_flight);
                if let Some(i) = q.iter().position(|f| Arc::ptr_eq(f, b)) {
                    q.remove(i);
                }
            }
        }
        // The writer may hand over its next batch while callers are answered.
        let _ = self.ready.try_send(());
        let err = result.err();
        let failed = err.is_some();
        for f in c.finishes {
            f(err.clone());
        }
        if c.batch.is_none() || failed {
            return;
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.jobs.fetch_add(c.jobs as u64, Ordering::Relaxed);
        self.stats
            .last_batch_size
            .store(c.jobs as u64, Ordering::Relaxed);
        self.stats.batch_size.observe(c.jobs as f64);
        let took = c.started.elapsed();
        self.stats.commit_seconds.observe(took.as_secs_f64());
        self.stats
            .last_commit_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
        if let Some(cb) = &self.on_commit {
            cb();
        }
        // A sled behind the journal lacks part of a durable batch: neither
        // a snapshot nor a flush marker may be taken of it.
        if self.unapplied.is_behind() {
            return;
        }
        if let Ok(trees) = self.view.get() {
            self.snapshots
                .maybe_start(&mut self.journal, self.durable_seq, &trees);
            self.sled_sync.maybe_start(self.durable_seq, &trees);
        }
    }

    /// Journal + fdatasync, then sled. Errors mean nothing was made durable;
    /// `Ok(false)`: durable, and kept in [`Unapplied`] because sled failed.
    fn make_durable(&mut self, batch: &Arc<Batch>, counters: Counters) -> Result<bool, Error> {
        if self.stats.poisoned.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "storage is in a failed state; restart faka",
            ));
        }
        if self.unapplied.is_behind() {
            self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            return Err(refused_while_behind());
        }
        // Stop short of a full disk: refusing here leaves room for sled's own
        // files, so nothing fails half-way and service resumes by itself.
        if free_bytes(&self.snapshots.data_dir).is_some_and(|free| free < self.min_free_bytes) {
            self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            self.stats.failing.store(true, Ordering::SeqCst);
            tracing::error!(
                min_free_bytes = self.min_free_bytes,
                "storage is nearly full; batch refused"
            );
            return Err(Error::unavailable("storage is full; nothing was changed"));
        }
        #[cfg(test)]
        {
            let at = self.stats.fail_next_commit_at.swap(0, Ordering::SeqCst);
            if at != 0 {
                let deadline = Instant::now() + std::time::Duration::from_secs(10);
                while self.stats.computed.load(Ordering::SeqCst) < at && Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                return Err(Error::unavailable("injected failure"));
            }
        }
        let syncing = Instant::now();
        let appended = self.journal.append(batch);
        self.stats
            .journal_sync_seconds
            .observe(syncing.elapsed().as_secs_f64());
        if let Err(e) = appended {
            self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            self.stats.failing.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "journal append failed; batch refused");
            if self.journal.is_broken() {
                // Its tail may hold the failed batch: no later batch may
                // follow it, and no clean-stop marker may vouch for it.
                tracing::error!("the failed write could not be cut off the journal; refusing writes until a restart");
                self.stats.poisoned.store(true, Ordering::SeqCst);
            }
            return Err(Error::unavailable(
                "storage is full or failing; nothing was changed",
            ));
        }
        self.stats.failing.store(false, Ordering::SeqCst);
        self.durable_seq = batch.seq;
        self.durable_counters = counters;
        self.stats.publish(&counters);
        self.stats.applied_seq.store(batch.seq, Ordering::SeqCst);
        let applied = self.apply(batch);
        if let Err(e) = &applied {
            // The batch is durable in the journal, so callers may hear
            // success; reads find it in `unapplied` until sled is reopened.
            tracing::error!(error = %e, seq = batch.seq, "sled could not take a durable batch; writes are refused until it is opened again over the journal");
            self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            self.unapplied.push(batch.clone());
        }
        // The catalogue's answers show a product's stock, which is none
        // while paid orders wait for it (`Store::stock`).
        let (products, awaiting) = (Tree::Products as u8, Tree::Awaiting as u8);
        if batch
            .writes
            .iter()
            .any(|w| w.tree == products || w.tree == awaiting)
        {
            self.stats.products_version.fetch_add(1, Ordering::SeqCst);
        }
        Ok(applied.is_ok())
    }

    fn apply(&self, batch: &Batch) -> Result<(), String> {
        #[cfg(test)]
        if self.stats.sled_fails.load(Ordering::SeqCst) {
            return Err("injected sled failure".into());
        }
        let trees = self.view.get().map_err(|e| e.to_string())?;
        apply_writes(&trees, &batch.writes).map_err(|e| e.to_string())
    }

    /// Opens sled again after it failed to take a durable batch, once the
    /// data dir's disk has room: sled refuses every write after its first
    /// I/O error until it is reopened. The old handle is dropped first
    /// (sled locks its files; readers get 503 meanwhile), then sled is
    /// resumed from its files and the journal, as after a crash. If that
    /// fails, reads stay at 503 until a later try succeeds.
    fn resume(&mut self) -> bool {
        if !self.unapplied.is_behind() {
            return true;
        }
        #[cfg(test)]
        if self.stats.sled_fails.load(Ordering::SeqCst) {
            return false;
        }
        let dir = self.snapshots.data_dir.clone();
        let room = self.min_free_bytes.max(RESUME_MIN_FREE_BYTES);
        if free_bytes(&dir).is_some_and(|free| free < room) {
            return false;
        }
        self.sled_sync.wait();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let wait_for = |done: &dyn Fn() -> bool| {
            while !done() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            done()
        };
        let running = self.snapshots.running.clone();
        if !wait_for(&|| !running.load(Ordering::SeqCst)) {
            return false;
        }
        if let Some(old) = self.view.take() {
            // Reads that hold it finish in moments; a read that would begin
            // one now gets 503.
            if !wait_for(&|| Arc::strong_count(&old) == 1) {
                self.view.put(old);
                return false;
            }
        }
        let (cache, durable) = (self.cache_bytes, self.durable_seq);
        let reopened = catch_unwind(|| recovery::reopen_sled(&dir, cache, durable))
            .unwrap_or_else(|_| Err(datadir::OpenError("sled panicked while opening".into())));
        match reopened {
            Ok(trees) => {
                self.view.put(trees);
                self.unapplied.clear();
                lock(&self.in_flight).clear();
                self.stats.failing.store(false, Ordering::SeqCst);
                self.stats.products_version.fetch_add(1, Ordering::SeqCst);
                tracing::info!(
                    seq = durable,
                    "sled opened again over the journal; writes resume"
                );
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "sled could not be opened again; reads answer 503 until it can");
                false
            }
        }
    }
}

fn refused_while_behind() -> Error {
    Error::Unavailable {
        message: "storage could not take an earlier change; writes resume once the disk has room, nothing was changed".into(),
        retry_after: RESUME_EVERY * 2,
    }
}

/// sled is not opened again with less free than this (or `min_free_bytes`):
/// opening replays part of the journal into it, and a try that fails on the
/// full disk leaves reads at 503 until the next.
const RESUME_MIN_FREE_BYTES: u64 = 16 << 20;
