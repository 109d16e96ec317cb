//! What the writer publishes about itself: counters for health checks and
//! the histograms `/metrics` registers (created here, so the store needs
//! nothing of the layer that serves them).

use super::super::tx::Counters;
use prometheus::{Histogram, HistogramOpts};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Buckets (seconds) for latency histograms: the writer's, and HTTP's in
/// `ops::metrics`, so the two read on one scale.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counters the writer publishes for health checks and metrics.
pub struct WriterStats {
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub journal_sync_seconds: Histogram,
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    pub applied_seq: AtomicU64,
    pub last_batch_size: AtomicU64,
    pub last_commit_micros: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Orders per status after the last commit (see `Counters`).
    pub orders_by_status: std::sync::Mutex<[u64; 6]>,
    /// Durable outbox counts: pending, dead.
    pub outbox_pending: AtomicU64,
    pub outbox_dead: AtomicU64,
    /// Set when the journal could not be written: writes answer 503 until a
    /// later batch commits again.
    pub failing: AtomicBool,
    /// Set when a failed journal append could not be cut off: writes are
    /// refused until a restart.
    pub poisoned: AtomicBool,
    /// Test hook: while set, sled takes no batch (as if the disk were full)
    /// and is not opened again.
    #[cfg(test)]
    pub sled_fails: AtomicBool,
    /// Test hook: when not 0, fail the next commit once the writer has
    /// computed this many batches (a disk that fails while the writer has
    /// already built the next batch on top of the failing one).
    #[cfg(test)]
    pub fail_next_commit_at: AtomicU64,
    /// Batches the writer has computed (handed off or about to be).
    pub computed: AtomicU64,
    /// Counts the batches that changed a product (its fields or its stock),
    /// raised after the batch is in sled and before anyone hears of it: a
    /// view of the products rendered under one value is current until it
    /// changes.
    pub products_version: AtomicU64,
}

impl WriterStats {
    /// Shows the counts of a durable state to metrics and checks.
    pub(crate) fn publish(&self, counters: &Counters) {
        if let Ok(mut c) = self.orders_by_status.lock() {
            *c = counters.orders_by_status;
        }
        self.outbox_pending
            .store(counters.outbox_pending, Ordering::SeqCst);
        self.outbox_dead
            .store(counters.outbox_dead, Ordering::SeqCst);
    }
}

impl Default for WriterStats {
    fn default() -> Self {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram")
        };
        let sizes = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
        WriterStats {
            batch_size: histogram("faka_writer_batch_size", "Commands per group commit", sizes),
            commit_seconds: histogram(
                "faka_writer_commit_seconds",
                "Time to run, journal, fsync and apply one batch",
                LATENCY_BUCKETS.to_vec(),
            ),
            // The disk's share of a commit, apart from the CPU's: a stall here
            // holds every request of the batch (and the batches queued behind it).
            journal_sync_seconds: histogram(
                "faka_writer_journal_sync_seconds",
                "Time to write one batch to the journal and fdatasync it",
                LATENCY_BUCKETS.to_vec(),
            ),
            batches: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
            applied_seq: AtomicU64::new(0),
            last_batch_size: AtomicU64::new(0),
            last_commit_micros: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            orders_by_status: std::sync::Mutex::new([0; 6]),
            outbox_pending: AtomicU64::new(0),
            outbox_dead: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            #[cfg(test)]
            sled_fails: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_commit_at: AtomicU64::new(0),
            computed: AtomicU64::new(0),
            products_version: AtomicU64::new(0),
        }
    }
}
