//! The single writer thread and its group commit.
//!
//! Every mutation is a [`Job`] sent over a bounded channel. The writer drains
//! up to `max_batch` jobs, runs each in the batch's [`Tx`] overlay (a job that
//! fails or panics is rolled back alone), appends the batch's writes to the
//! journal and fdatasyncs it, applies them to sled, and only then answers each
//! caller. One fsync covers the whole batch: that is the group commit.

use super::journal::{Batch, Journal, Write};
use super::snapshot::Snapshotter;
use super::tree::{self, Tree, Trees};
use super::tx::{Counters, Tx};
use crate::error::Error;
use crossbeam_channel::Receiver;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Called once per job after its batch is durable (`None`) or failed to
/// become durable (`Some(error)`).
pub(crate) type Finish = Box<dyn FnOnce(Option<Error>) + Send>;
/// A mutation: runs inside the batch, returns whether it succeeded (so the
/// writer keeps or rolls back its writes) and how to answer its caller.
pub(crate) type Job = Box<dyn FnOnce(&mut Tx) -> (bool, Finish) + Send>;

pub(crate) enum Msg {
    Job(Job),
    /// Drain what is queued, flush sled, write the clean-shutdown marker.
    Shutdown(std::sync::mpsc::Sender<()>),
}

/// Counters the writer publishes for health checks and metrics.
pub struct WriterStats {
    pub batch_size: prometheus::Histogram,
    pub commit_seconds: prometheus::Histogram,
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    pub applied_seq: AtomicU64,
    pub last_batch_size: AtomicU64,
    pub last_commit_micros: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Orders per status after the last commit (see `Counters`).
    pub orders_by_status: std::sync::Mutex<[u64; 6]>,
    /// Set when the journal could not be written: writes answer 503 until a
    /// later batch commits again.
    pub failing: AtomicBool,
    /// Set when sled could not apply a durable batch: the view is stale, so
    /// writes are refused until a restart rebuilds it from the journal.
    pub poisoned: AtomicBool,
}

pub(crate) struct Writer {
    pub trees: Arc<Trees>,
    pub journal: Journal,
    pub seq: u64,
    pub counters: Counters,
    pub rx: Receiver<Msg>,
    pub max_batch: usize,
    pub webhooks: bool,
    pub stats: Arc<WriterStats>,
    pub snapshots: Snapshotter,
    pub on_commit: Option<Box<dyn Fn() + Send>>,
    /// Batches are refused while the data dir's file system has less free.
    pub min_free_bytes: u64,
}

/// Free bytes for unprivileged writers on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// Applies writes to sled, one atomic sled batch per tree.
pub(crate) fn apply_writes(trees: &Trees, writes: &[Write]) -> sled::Result<()> {
    let mut i = 0;
    while i < writes.len() {
        let t = writes[i].tree;
        let mut b = sled::Batch::default();
        while i < writes.len() && writes[i].tree == t {
            match &writes[i].value {
                Some(v) => b.insert(writes[i].key.as_slice(), v.as_slice()),
                None => b.remove(writes[i].key.as_slice()),
            }
            i += 1;
        }
        if let Some(tree) = Tree::from_u8(t) {
            trees.get(tree).apply_batch(b)?;
        }
    }
    Ok(())
}

impl Writer {
    pub fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut jobs = Vec::new();
            let mut shutdown = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Job(j) => jobs.push(j),
                    Msg::Shutdown(ack) => shutdown = Some(ack),
                }
                if jobs.len() < self.max_batch {
                    next = self.rx.try_recv().ok();
                }
            }
            self.run_batch(jobs);
            if let Some(ack) = shutdown {
                // Drain whatever is still queued: callers were promised an answer.
                loop {
                    let rest: Vec<Job> = self
                        .rx
                        .try_iter()
                        .take(self.max_batch)
                        .filter_map(|m| match m {
                            Msg::Job(j) => Some(j),
                            Msg::Shutdown(_) => None,
                        })
                        .collect();
                    if rest.is_empty() {
                        break;
                    }
                    self.run_batch(rest);
                }
                self.close();
                let _ = ack.send(());
                return;
            }
        }
        self.close();
    }

    fn close(&mut self) {
        let poisoned = self.stats.poisoned.load(Ordering::SeqCst);
        if let Err(e) = self.trees.db.flush() {
            tracing::error!(error = %e, "sled flush at shutdown failed; next start rebuilds from the journal");
            return;
        }
        if !poisoned {
            if let Err(e) = super::recovery::write_clean_marker(&self.snapshots.data_dir, self.seq)
            {
                tracing::error!(error = %e, "could not write the clean-shutdown marker");
            }
        }
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let started = Instant::now();
        let n = jobs.len();
        let trees = self.trees.clone();
        let mut tx = Tx::new(&trees, self.counters, now_ms(), self.webhooks);
        let mut finishes: Vec<Finish> = Vec::with_capacity(n);
        for job in jobs {
            match catch_unwind(AssertUnwindSafe(|| job(&mut tx))) {
                Ok((true, fin)) => {
                    tx.commit_cmd();
                    finishes.push(fin);
                }
                Ok((false, fin)) => {
                    tx.rollback_cmd();
                    finishes.push(fin);
                }
                Err(_) => {
                    // The job's reply channel was dropped with it: its caller
                    // gets 503. The rest of the batch is unaffected.
                    tracing::error!("a write command panicked and was rolled back");
                    tx.rollback_cmd();
                }
            }
        }
        if tx.is_empty() {
            finishes.into_iter().for_each(|f| f(None));
            return;
        }
        let result = self.commit(tx);
        let err = result.err();
        for f in finishes {
            f(err.clone());
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.jobs.fetch_add(n as u64, Ordering::Relaxed);
        self.stats
            .last_batch_size
            .store(n as u64, Ordering::Relaxed);
        self.stats.batch_size.observe(n as f64);
        self.stats
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.stats
            .last_commit_micros
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if let Some(cb) = &self.on_commit {
            cb();
        }
        self.snapshots
            .maybe_start(&mut self.journal, self.seq, &self.trees);
    }

    fn commit(&mut self, tx: Tx) -> Result<(), Error> {
        if self.stats.poisoned.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "storage is in a failed state; restart faka",
            ));
        }
        let counters = tx.counters;
        let mut writes = tx.into_writes();
        let seq = self.seq + 1;
        writes.push(Write {
            tree: Tree::Meta as u8,
            key: tree::META_APPLIED_SEQ.to_vec(),
            value: Some(tree::u64_key(seq).to_vec()),
        });
        if counters != self.counters {
            writes.push(Write {
                tree: Tree::Meta as u8,
                key: tree::META_COUNTERS.to_vec(),
                value: Some(super::codec::encode(&counters)),
            });
        }
        // Meta writes were appended last; sled batches are grouped per tree.
        writes.sort_by_key(|w| w.tree);
        let batch = Batch { seq, writes };
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
        if let Err(e) = self.journal.append(&batch) {
            self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            self.stats.failing.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "journal append failed; batch refused");
            return Err(Error::unavailable(
                "storage is full or failing; nothing was changed",
            ));
        }
        self.stats.failing.store(false, Ordering::SeqCst);
        self.seq = seq;
        self.counters = counters;
        if let Ok(mut c) = self.stats.orders_by_status.lock() {
            *c = counters.orders_by_status;
        }
        self.stats.applied_seq.store(seq, Ordering::SeqCst);
        if let Err(e) = apply_writes(&self.trees, &batch.writes) {
            // The batch is durable in the journal, so callers may hear success;
            // the sled view is now behind, so refuse further writes.
            tracing::error!(error = %e, "sled apply failed after a durable commit; restart to rebuild");
            self.stats.poisoned.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Default for WriterStats {
    fn default() -> Self {
        let (batch_size, commit_seconds) = crate::ops::metrics::writer_histograms();
        WriterStats {
            batch_size,
            commit_seconds,
            batches: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
            applied_seq: AtomicU64::new(0),
            last_batch_size: AtomicU64::new(0),
            last_commit_micros: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            orders_by_status: std::sync::Mutex::new([0; 6]),
            poisoned: AtomicBool::new(false),
        }
    }
}
