//! The single writer thread and its group commit, in two pipelined stages.
//!
//! Every mutation is a [`Job`] sent over a bounded channel. The writer drains
//! up to `max_batch` jobs and runs each in the batch's [`Tx`] overlay (a job
//! that fails or panics is rolled back alone). It hands the finished batch to
//! the committer thread, which appends it to the journal and fdatasyncs it,
//! applies it to sled, and only then answers each caller. One fsync covers
//! the whole batch: that is the group commit.
//!
//! While the committer waits on the disk for batch N, the writer already runs
//! batch N+1, reading through batch N's writes (the *in-flight* batches, kept
//! until they are in sled). Nothing of N+1 is answered before N is durable:
//! the committer takes batches strictly in order, and a batch that writes
//! nothing still goes through it, because its answers may rest on N. If N
//! cannot be made durable, every batch computed on top of it fails too, and
//! the writer starts again from the last durable state (the failure *epoch*).
//!
//! If sled cannot take a batch that is durable (an I/O error: a full disk),
//! the batch stays in flight and in [`Unapplied`], writes are refused, and
//! the writer tries once a second to open sled again over the journal
//! ([`Committer::resume`]); see `view`.
//!
//! The rooms: `compute` (the writer's stage), `commit` (the committer's),
//! `early` (stock counts ahead of the disk), `stats` (what it publishes);
//! rows reach sled through `store::apply`.

mod commit;
mod compute;
mod early;
mod stats;
#[cfg(test)]
mod tests;

pub(crate) use early::EarlyStock;
pub use stats::{WriterStats, LATENCY_BUCKETS};

use crate::error::Error;
use crate::store::journal::{Batch, Journal};
use crate::store::snapshot::Snapshotter;
use crate::store::tx::{Counters, Tx, WriterIndex};
use crate::store::view::{Unapplied, View};
use commit::{Committer, SledSync};
use compute::Computer;
use crossbeam_channel::Receiver;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
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

pub(crate) struct Writer {
    pub view: Arc<View>,
    pub unapplied: Arc<Unapplied>,
    /// sled's page cache bound, for opening it again.
    pub cache_bytes: u64,
    pub journal: Journal,
    pub seq: u64,
    pub counters: Counters,
    pub rx: Receiver<Msg>,
    pub max_batch: usize,
    pub webhooks: bool,
    pub mailing: crate::store::Mailing,
    pub stats: Arc<WriterStats>,
    pub snapshots: Snapshotter,
    pub on_commit: Option<Box<dyn Fn() + Send>>,
    /// Batches are refused while the data dir's file system has less free.
    pub min_free_bytes: u64,
    /// This thread's nice value, and so its commit thread's (`[server]
    /// writer_nice`; 0 leaves both alone).
    pub nice: i32,
    pub early: Arc<EarlyStock>,
}

/// Batches handed to the committer and not yet in sled, oldest first.
type InFlight = Arc<Mutex<VecDeque<Arc<Batch>>>>;

/// What the writer hands the committer.
enum Stage {
    Commit(Commit),
    /// Answered once every earlier batch is done: the durable seq and counters.
    Sync(crossbeam_channel::Sender<(u64, Counters)>),
    /// Close the store (flush sled, clean marker) and acknowledge.
    Close(Option<std::sync::mpsc::Sender<()>>),
    /// sled is behind the journal: try to open it again (see
    /// [`Committer::resume`]); answers whether it is whole again.
    Resume(crossbeam_channel::Sender<bool>),
}

struct Commit {
    /// `None` when no job of the batch wrote anything.
    batch: Option<Arc<Batch>>,
    counters: Counters,
    finishes: Vec<Finish>,
    epoch: u64,
    started: Instant,
    jobs: usize,
}

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// A batch closes once it writes this much, whatever its count of commands:
/// one journal record holds one batch and replay reads records up to 1 GiB,
/// and no command writes more than ~50 MB (an import chunk of 10,000 of
/// the biggest keys).
pub(crate) const MAX_BATCH_BYTES: usize = 256 << 20;

/// Raises the calling thread's priority to `nice` (below 0; 0 leaves it
/// alone), so that the writer runs before the HTTP workers, a proxy and
/// anything else on the machine. Lowering a nice value needs CAP_SYS_NICE:
/// refused, one warning, and the writer runs on at its nice value.
fn raise_priority(nice: i32) {
    let nice = nice.clamp(-20, 0);
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscall on the calling thread (who = 0); no memory shared.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(),
                "could not raise the writer's priority (needs CAP_SYS_NICE); it runs at its usual priority");
        }
    }
}

impl Writer {
    /// Runs the writer on this thread and the committer on a new one, until
    /// shutdown (or until every sender is gone).
    pub fn run(self) {
        // Before the commit thread starts: a new thread inherits its
        // creator's nice value.
        raise_priority(self.nice);
        let in_flight: InFlight = Arc::default();
        let failed_epoch = self.early.failed_epoch.clone();
        let (to_commit, stages) = crossbeam_channel::bounded(1);
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let data_dir = self.snapshots.data_dir.clone();
        let committer = Committer {
            view: self.view.clone(),
            unapplied: self.unapplied.clone(),
            cache_bytes: self.cache_bytes,
            journal: self.journal,
            durable_seq: self.seq,
            durable_counters: self.counters,
            stats: self.stats.clone(),
            snapshots: self.snapshots,
            on_commit: self.on_commit,
            min_free_bytes: self.min_free_bytes,
            in_flight: in_flight.clone(),
            failed_epoch: failed_epoch.clone(),
            ready: ready_tx,
            sled_sync: SledSync {
                data_dir,
                last: Instant::now(),
                running: None,
                started_for: self.seq,
            },
        };
        let handle = match std::thread::Builder::new()
            .name("faka-commit".into())
            .spawn(move || committer.run(stages))
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "could not start the commit thread; writes will fail");
                return;
            }
        };
        let mut computer = Computer {
            view: self.view,
            unapplied: self.unapplied,
            last_resume: Instant::now(),
            seq: self.seq,
            counters: self.counters,
            rx: self.rx,
            max_batch: self.max_batch,
            webhooks: self.webhooks,
            mailing: self.mailing,
            in_flight,
            to_commit,
            ready,
            stats: self.stats.clone(),
            epoch: 0,
            failed_epoch,
            index: WriterIndex::default(),
            early: self.early,
        };
        computer.run();
        let _ = handle.join();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How often the writer tries to open sled again while it is behind.
const RESUME_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
