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

use super::journal::{Batch, Journal, Write};
use super::snapshot::Snapshotter;
use super::tree::{self, Tree, Trees};
use super::tx::{Counters, Tx, WriterIndex};
use super::view::{Unapplied, View};
use crate::error::Error;
use crossbeam_channel::{select, Receiver};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Counters the writer publishes for health checks and metrics.
pub struct WriterStats {
    pub batch_size: prometheus::Histogram,
    pub commit_seconds: prometheus::Histogram,
    pub journal_sync_seconds: prometheus::Histogram,
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
    pub stats: Arc<WriterStats>,
    pub snapshots: Snapshotter,
    pub on_commit: Option<Box<dyn Fn() + Send>>,
    /// Batches are refused while the data dir's file system has less free.
    pub min_free_bytes: u64,
    pub early: Arc<EarlyStock>,
}

/// Each product's available count as the writer last computed it: after
/// commands it has run, before their batch is durable. `refuse_early`
/// reads it, so that in a flash sale the buyers who come after the last
/// key was claimed are refused at once instead of queueing behind the
/// batch that claimed it. A count from a batch that failed is ignored from
/// the moment the committer marks its epoch failed, and all counts are
/// dropped when the writer starts again after a failure; then the stored
/// counts answer until the writer has run a command for the product.
pub(crate) struct EarlyStock {
    /// product id → (epoch, available)
    counts: std::sync::RwLock<std::collections::HashMap<String, (u64, u64)>>,
    /// Set by the committer to the epoch of a batch that failed.
    failed_epoch: Arc<AtomicU64>,
}

impl Default for EarlyStock {
    fn default() -> Self {
        EarlyStock {
            counts: Default::default(),
            failed_epoch: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }
}

impl EarlyStock {
    pub(crate) fn available(&self, product_id: &str) -> Option<u64> {
        let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
        let &(epoch, available) = counts.get(product_id)?;
        (epoch != self.failed_epoch.load(Ordering::SeqCst)).then_some(available)
    }

    fn publish(&self, epoch: u64, stock: Vec<(String, u64)>) {
        if stock.is_empty() {
            return;
        }
        let mut counts = self.counts.write().unwrap_or_else(|p| p.into_inner());
        for (id, available) in stock {
            counts.insert(id, (epoch, available));
        }
    }

    fn clear(&self) {
        self.counts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
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

/// The compute stage: runs jobs against sled plus the in-flight batches.
struct Computer {
    view: Arc<View>,
    unapplied: Arc<Unapplied>,
    /// When the writer last asked for sled to be opened again.
    last_resume: Instant,
    seq: u64,
    counters: Counters,
    rx: Receiver<Msg>,
    max_batch: usize,
    webhooks: bool,
    in_flight: InFlight,
    to_commit: crossbeam_channel::Sender<Stage>,
    /// A token per finished commit: the committer is free again.
    ready: Receiver<()>,
    stats: Arc<WriterStats>,
    epoch: u64,
    /// Set by the committer to the epoch of a batch that failed.
    failed_epoch: Arc<AtomicU64>,
    /// Where each product's search for available keys starts, and the
    /// fingerprints its keys had (see `tx::WriterIndex`).
    index: WriterIndex,
    early: Arc<EarlyStock>,
}

/// The durable stage: journal, fsync, sled, answers, snapshots.
struct Committer {
    view: Arc<View>,
    unapplied: Arc<Unapplied>,
    cache_bytes: u64,
    journal: Journal,
    durable_seq: u64,
    durable_counters: Counters,
    stats: Arc<WriterStats>,
    snapshots: Snapshotter,
    on_commit: Option<Box<dyn Fn() + Send>>,
    min_free_bytes: u64,
    in_flight: InFlight,
    failed_epoch: Arc<AtomicU64>,
    ready: crossbeam_channel::Sender<()>,
    sled_sync: SledSync,
}

/// How often sled is flushed and the batch it then holds recorded
/// (`SLED_SYNCED`): a start after a crash replays the journal from there
/// (`recovery::resume`) instead of rebuilding sled from the snapshot.
const SLED_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The committer's periodic sled flush, on a thread of its own: the flush
/// writes out and fsyncs sled's log, which commits need not wait for.
struct SledSync {
    data_dir: std::path::PathBuf,
    last: Instant,
    running: Option<std::thread::JoinHandle<()>>,
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
        let (dir, trees) = (self.data_dir.clone(), trees.clone());
        self.running = std::thread::Builder::new()
            .name("faka-sled-sync".into())
            .spawn(move || {
                let synced = trees
                    .db
                    .flush()
                    .map_err(|e| std::io::Error::other(trees.note_error(e)))
                    .and_then(|_| super::recovery::write_synced_marker(&dir, seq));
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

/// Copies a committed batch into sled row by row, one tree after another in
/// id order (keys before orders, see ARCHITECTURE "Reads").
///
/// Not with `sled::Batch`: sled's first `apply_batch` switches its global
/// concurrency control on for good, after which every reader's `get` takes a
/// shared lock that each batch takes exclusively (readers stall behind the
/// commit thread); and a batch pins one epoch, so none of the node copies it
/// makes can be freed before it ends (replaying the journal of 1M imported
/// keys, 30,000 rows per batch, held gigabytes). sled here is a view
/// rebuilt from the journal and never trusted after a crash, so the copy need
/// not be atomic; the writer's own reads see the batch through its in-flight
/// overlay until the copy is complete.
pub(crate) fn apply_writes(trees: &Trees, writes: &[Write]) -> sled::Result<()> {
    // A staged upload's record names blocks readers must skip: written
    // before the blocks it names, removed after they are published or gone.
    let uploads = writes.partition_point(|w| w.tree < Tree::Uploads as u8);
    let (writes, uploads) = writes.split_at(uploads);
    let (added, removed): (Vec<Write>, Vec<Write>) =
        uploads.iter().cloned().partition(|w| w.value.is_some());
    apply_rows(trees, &added)?;
    // Key blocks, then keys (and the trees before them), then orders and the
    // rest: a reader that finds a key's id finds the key.
    let split = writes.partition_point(|w| w.tree < Tree::Orders as u8);
    let blocks = writes.partition_point(|w| w.tree < Tree::KeyBlocks as u8);
    apply_phase(trees, &writes[blocks..])?;
    apply_phase(trees, &writes[..split])?;
    apply_phase(trees, &writes[split..blocks])?;
    apply_rows(trees, &removed)
}

/// A batch closes once it writes this much, whatever its count of commands:
/// one journal record holds one batch and replay reads records up to 1 GiB,
/// and no command writes more than ~50 MB (an import chunk of 10,000 of
/// the biggest keys).
pub(crate) const MAX_BATCH_BYTES: usize = 256 << 20;

/// Below this many rows a batch is copied on the commit thread alone.
const PARALLEL_MIN_ROWS: usize = 2048;

/// Copies rows sorted by tree; a big batch (a key import) is split at a tree
/// boundary and the two halves copied on two threads. Per-row sled writes on
/// different trees take no common lock, and sled's per-insert node copies
/// are what bounds an import.
fn apply_phase(trees: &Trees, writes: &[Write]) -> sled::Result<()> {
    if writes.len() >= PARALLEL_MIN_ROWS {
        let half = writes.len() / 2;
        let t = writes[half].tree;
        let mut cut = writes.partition_point(|w| w.tree < t);
        if cut == 0 {
            cut = writes.partition_point(|w| w.tree <= t);
        }
        if cut > 0 && cut < writes.len() {
            let (a, b) = writes.split_at(cut);
            return std::thread::scope(|s| {
                let other = std::thread::Builder::new()
                    .name("faka-apply".into())
                    .spawn_scoped(s, || apply_rows(trees, b));
                let mine = apply_rows(trees, a);
                let theirs = match other {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(sled::Error::ReportableBug("apply thread panicked".into()))
                    }),
                    // No thread to be had: this one copies the other half too.
                    Err(_) => apply_rows(trees, b),
                };
                mine.and(theirs)
            });
        }
    }
    apply_rows(trees, writes)
}

fn apply_rows(trees: &Trees, writes: &[Write]) -> sled::Result<()> {
    for w in writes {
        let Some(tree) = Tree::from_u8(w.tree) else {
            continue;
        };
        let t = trees.get(tree);
        match &w.value {
            Some(v) => t.insert(w.key.as_slice(), v.as_slice())?,
            None => t.remove(w.key.as_slice())?,
        };
    }
    Ok(())
}

impl Writer {
    /// Runs the writer on this thread and the committer on a new one, until
    /// shutdown (or until every sender is gone).
    pub fn run(self) {
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

/// How the gathering of one batch ended.
enum Gathered {
    /// Hand it off and go on.
    More,
    /// A shutdown request came in: hand off, drain the queue, close.
    Shutdown(std::sync::mpsc::Sender<()>),
    /// Every sender is gone: hand off and close.
    Disconnected,
}

impl Computer {
    /// Continuous batching: the open batch takes every job that arrives while
    /// the committer is busy with the previous one, and is handed off the
    /// moment the committer is free (or at `max_batch`). So at most one batch
    /// is in flight, and the batch grows exactly as long as the disk is slow.
    fn run(&mut self) {
        let mut idle = true;
        loop {
            let first = loop {
                self.try_resume(&mut idle);
                select! {
                    recv(self.rx) -> m => break m.ok(),
                    recv(self.ready) -> _ => idle = true,
                    default(RESUME_EVERY) => {}
                }
            };
            let end = match first {
                Some(Msg::Job(job)) => self.batch(job, &mut idle),
                Some(Msg::Shutdown(ack)) => Gathered::Shutdown(ack),
                None => Gathered::Disconnected,
            };
            match end {
                Gathered::More => {}
                Gathered::Shutdown(ack) => {
                    // Drain whatever is still queued: callers were promised an answer.
                    while let Ok(msg) = self.rx.try_recv() {
                        if let Msg::Job(job) = msg {
                            self.batch(job, &mut idle);
                        }
                    }
                    let _ = self.to_commit.send(Stage::Close(Some(ack)));
                    return;
                }
                Gathered::Disconnected => break,
            }
        }
        let _ = self.to_commit.send(Stage::Close(None));
    }

    /// Blocks until the committer has finished the batch in flight.
    fn wait_idle(&self, idle: &mut bool) {
        if !*idle && self.ready.recv().is_ok() {
            *idle = true;
        }
    }

    /// After a batch failed to become durable, everything computed on top of
    /// it fails as well; start again from what the committer made durable.
    fn restart_after_failure(&mut self, idle: &mut bool) {
        if self.failed_epoch.load(Ordering::SeqCst) != self.epoch {
            return;
        }
        self.wait_idle(idle);
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.to_commit.send(Stage::Sync(tx)).is_ok() {
            if let Ok((seq, counters)) = rx.recv() {
                self.seq = seq;
                self.counters = counters;
            }
        }
        // Claims of the failed batches are undone: their keys are available
        // again below any floor raised over them; their imports are undone.
        self.index.clear();
        self.early.clear();
        self.epoch += 1;
    }

    /// While sled is behind the journal (or failed), asks the committer (between
    /// batches, so no batch holds the old sled) to open it again, at most
    /// once per [`RESUME_EVERY`].
    fn try_resume(&mut self, idle: &mut bool) {
        if !self.unapplied.is_behind() && self.view.get().is_ok_and(|t| t.failed()) {
            // sled failed a read or its flush: it takes no write before it
            // is opened again.
            tracing::error!("sled answered an error; writes are refused until it is opened again");
            self.unapplied.mark_failed();
        }
        if !self.unapplied.is_behind() || self.last_resume.elapsed() < RESUME_EVERY {
            return;
        }
        self.wait_idle(idle);
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.to_commit.send(Stage::Resume(tx)).is_ok() && rx.recv() == Ok(true) {
            // What the writer remembers was read from the old sled.
            self.index.clear();
            self.early.clear();
        }
        self.last_resume = Instant::now();
    }

    /// Runs `first` and whatever joins it, then hands the batch off.
    fn batch(&mut self, first: Job, idle: &mut bool) -> Gathered {
        self.restart_after_failure(idle);
        self.try_resume(idle);
        let started = Instant::now();
        let Ok(trees) = self.view.get() else {
            // The last try to open sled again failed, so there is none to
            // run on: the job is dropped unrun and its caller answered 503
            // (`Store::submit`); a later try brings sled back.
            drop(first);
            return Gathered::More;
        };
        let in_flight: Vec<Arc<Batch>> = lock(&self.in_flight).iter().cloned().collect();
        let early = (self.early.clone(), self.epoch);
        let mut tx = Tx::new(
            &trees,
            &in_flight,
            &mut self.index,
            self.counters,
            now_ms(),
            self.webhooks,
        );
        let mut finishes: Vec<Finish> = Vec::new();
        let mut n = 1;
        run_job(&mut tx, first, &mut finishes, &early);
        let end = loop {
            if n >= self.max_batch || tx.written_bytes() >= MAX_BATCH_BYTES {
                break Gathered::More;
            }
            if *idle {
                // The disk is free: take what is already queued and go.
                match self.rx.try_recv() {
                    Ok(Msg::Job(job)) => {
                        n += 1;
                        run_job(&mut tx, job, &mut finishes, &early);
                        continue;
                    }
                    Ok(Msg::Shutdown(ack)) => break Gathered::Shutdown(ack),
                    Err(crossbeam_channel::TryRecvError::Empty) => break Gathered::More,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        break Gathered::Disconnected
                    }
                }
            }
            select! {
                recv(self.rx) -> m => match m {
                    Ok(Msg::Job(job)) => {
                        n += 1;
                        run_job(&mut tx, job, &mut finishes, &early);
                    }
                    Ok(Msg::Shutdown(ack)) => break Gathered::Shutdown(ack),
                    Err(_) => break Gathered::Disconnected,
                },
                recv(self.ready) -> _ => *idle = true,
            }
        };
        let counters = tx.counters;
        let batch = if tx.is_empty() {
            None
        } else {
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
            // In (tree, key) order: sled batches go per tree, and the next
            // batch looks keys up in this one by binary search.
            writes.sort_by(|a, b| (a.tree, &a.key).cmp(&(b.tree, &b.key)));
            self.seq = seq;
            Some(Arc::new(Batch { seq, writes }))
        };
        self.counters = counters;
        self.stats.computed.fetch_add(1, Ordering::Relaxed);
        drop(trees);
        self.wait_idle(idle);
        if let Some(b) = &batch {
            lock(&self.in_flight).push_back(b.clone());
        }
        let commit = Commit {
            batch,
            counters,
            finishes,
            epoch: self.epoch,
            started,
            jobs: n,
        };
        *idle = false;
        if let Err(e) = self.to_commit.send(Stage::Commit(commit)) {
            // The committer is gone (it could not start): answer failure.
            if let Stage::Commit(c) = e.into_inner() {
                let err = Error::unavailable("storage is in a failed state; restart faka");
                c.finishes.into_iter().for_each(|f| f(Some(err.clone())));
            }
        }
        end
    }
}

/// Runs one job in the batch: kept if it succeeds, rolled back alone if it
/// fails or panics.
/// Runs one command in the batch's `Tx`; a command that committed has its
/// products' counts published to `early` (the store and this batch's epoch).
fn run_job(tx: &mut Tx, job: Job, finishes: &mut Vec<Finish>, early: &(Arc<EarlyStock>, u64)) {
    match catch_unwind(AssertUnwindSafe(|| job(tx))) {
        Ok((true, fin)) => {
            tx.commit_cmd();
            let (stock, epoch) = early;
            stock.publish(*epoch, tx.take_stock());
            finishes.push(fin);
        }
        Ok((false, fin)) => {
            tx.rollback_cmd();
            finishes.push(fin);
        }
        Err(_) => {
            // The job's reply channel was dropped with it: its caller gets
            // 503. The rest of the batch is unaffected.
            tracing::error!("a write command panicked and was rolled back");
            tx.rollback_cmd();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Committer {
    fn run(mut self, stages: Receiver<Stage>) {
        for stage in stages {
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
            if let Err(e) =
                super::recovery::write_clean_marker(&self.snapshots.data_dir, self.durable_seq)
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
        let reopened = catch_unwind(|| super::recovery::reopen_sled(&dir, cache, durable))
            .unwrap_or_else(|_| Err(super::OpenError("sled panicked while opening".into())));
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

/// How often the writer tries to open sled again while it is behind.
const RESUME_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// sled is not opened again with less free than this (or `min_free_bytes`):
/// opening replays part of the journal into it, and a try that fails on the
/// full disk leaves reads at 503 until the next.
const RESUME_MIN_FREE_BYTES: u64 = 16 << 20;

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
        let h = crate::ops::metrics::writer_histograms();
        WriterStats {
            batch_size: h.batch_size,
            commit_seconds: h.commit_seconds,
            journal_sync_seconds: h.journal_sync_seconds,
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

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreOptions};
    use crate::domain::model::{IdempotencyRecord, Order};
    use crate::domain::order::OrderStatus;
    use crate::error::Result;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    fn rec(n: u8) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint: [n; 32],
            order_no: format!("o{n}"),
            sealed_response: vec![],
            created_at_ms: 0,
        }
    }

    fn put(store: &Store, n: u8) -> crate::error::Result<()> {
        store.write_blocking(move |tx| {
            tx.put_idempotency(&[n; 32], &rec(n));
            Ok(())
        })
    }

    fn present(store: &Store, n: u8) -> bool {
        store
            .write_blocking(move |tx| Ok(tx.idempotency(&[n; 32])?.is_some()))
            .unwrap()
    }

    /// A store whose batches hold one job each, on any free space.
    fn one_job_per_batch(dir: &std::path::Path) -> (Store, StoreOptions) {
        let mut opts = StoreOptions::for_test(dir);
        opts.max_batch = 1;
        (Store::open(&opts).unwrap(), opts)
    }

    /// The next batch fails to commit, once the batch after it has been
    /// computed on top of it.
    fn fail_next_batch_once_one_more_is_computed(store: &Store) {
        let computed = store.stats().computed.load(Ordering::SeqCst);
        store
            .stats()
            .fail_next_commit_at
            .store(computed + 2, Ordering::SeqCst);
    }

    /// The writer counts outbox events by state with every batch, so
    /// metrics need not read the outbox: the counts follow events created,
    /// sent, given up and re-queued, ignore rolled-back commands, survive a
    /// restart, and always equal a count of the outbox itself.
    #[test]
    fn outbox_counts_follow_every_event_without_a_scan() {
        use crate::domain::model::{DeliveryState, EventKind};
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::for_test(dir.path());
        opts.webhooks = true;
        let store = Store::open(&opts).unwrap();
        let agree = |store: &Store, expect: (u64, u64)| {
            assert_eq!(store.outbox_counts(), expect);
            assert_eq!(store.outbox_counts_scanned().unwrap(), expect);
        };
        store
            .write_blocking(|tx| {
                for o in ["A", "B", "C"] {
                    tx.emit_event(o, EventKind::Paid);
                    tx.emit_event(o, EventKind::Delivered);
                }
                Ok(())
            })
            .unwrap();
        agree(&store, (6, 0));
        let failed = store.write_blocking(|tx| {
            tx.emit_event("D", EventKind::Paid);
            Err::<(), _>(crate::error::Error::invalid("x", "fails on purpose"))
        });
        assert!(failed.is_err());
        agree(&store, (6, 0));
        let set = |seq: u64, state: DeliveryState| {
            store
                .write_blocking(move |tx| {
                    let mut e = tx.outbox(seq)?.unwrap();
                    e.state = state;
                    tx.put_outbox(&e)
                })
                .unwrap();
        };
        set(1, DeliveryState::Delivered);
        set(2, DeliveryState::Dead);
        set(3, DeliveryState::Dead);
        agree(&store, (3, 2));
        set(3, DeliveryState::Pending);
        agree(&store, (4, 1));
        store.close();
        drop(store);
        let store = Store::open(&opts).unwrap();
        agree(&store, (4, 1));
        store.close();
        drop(store);
        std::fs::remove_file(dir.path().join("CLEAN")).unwrap();
        let store = Store::open(&opts).unwrap();
        agree(&store, (4, 1));
        store.close();
    }

    /// Batch N+1 is computed while N is still being made durable, reading
    /// N's writes. If N then fails, N+1 must fail too, and the writer must
    /// go on from the last durable state with no gap in the journal.
    #[test]
    fn a_batch_computed_on_a_failed_batch_fails_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opts) = one_job_per_batch(dir.path());
        put(&store, 1).unwrap();
        let durable = store.stats().applied_seq.load(Ordering::SeqCst);
        // Fail the next batch (B) once the one after it (C) is computed.
        fail_next_batch_once_one_more_is_computed(&store);
        let (b_tx, b_rx) = mpsc::channel();
        store
            .send(Store::job(
                |tx| {
                    tx.put_idempotency(&[2; 32], &rec(2));
                    Ok(())
                },
                move |r| b_tx.send(r).unwrap(),
            ))
            .unwrap();
        let (c_tx, c_rx) = mpsc::channel();
        store
            .send(Store::job(
                |tx| {
                    // Sees batch N's write only through the in-flight batch.
                    let saw = tx.idempotency(&[2; 32])?.is_some();
                    if saw {
                        tx.put_idempotency(&[3; 32], &rec(3));
                    }
                    Ok(saw)
                },
                move |r| c_tx.send(r).unwrap(),
            ))
            .unwrap();
        assert!(b_rx.recv().unwrap().is_err(), "the failed batch is refused");
        assert!(
            c_rx.recv().unwrap().is_err(),
            "the batch that read its writes is refused with it"
        );
        assert!(!present(&store, 2) && !present(&store, 3));
        assert!(present(&store, 1));
        put(&store, 4).unwrap();
        assert_eq!(
            store.stats().applied_seq.load(Ordering::SeqCst),
            durable + 1,
            "the next durable batch follows the last durable one"
        );
        store.close();
        drop(store);
        // Unclean-style reopen from the journal sees exactly 1 and 4.
        std::fs::remove_file(dir.path().join("CLEAN")).ok();
        let store = Store::open(&opts).unwrap();
        assert!(present(&store, 1) && present(&store, 4));
        assert!(!present(&store, 2) && !present(&store, 3));
        store.close();
    }

    fn product_with(available: u64) -> crate::domain::model::Product {
        crate::domain::model::Product {
            id: "p".into(),
            name: "p".into(),
            description: String::new(),
            price: 1,
            min_quantity: 1,
            max_quantity: 1,
            active: true,
            created_at_ms: 0,
            updated_at_ms: 0,
            counts: crate::domain::model::KeyCounts {
                available,
                imported: available,
                ..Default::default()
            },
            presentation: Default::default(),
        }
    }

    fn put_product(store: &Store, available: u64) -> Result<()> {
        store.write_blocking(move |tx| {
            tx.put_product(&product_with(available));
            Ok(())
        })
    }

    /// What the start-up check relies on: while one long command holds the
    /// writer, reads are answered from the store, and a write queued behind
    /// it is answered only once it is done.
    #[test]
    fn reads_are_answered_while_a_long_command_holds_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::new(dir.path().to_path_buf())).unwrap();
        put_product(&store, 5).unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let long = store
            .submit_blocking(move |_tx| {
                released.recv().ok();
                Ok(())
            })
            .unwrap();
        let write = store
            .submit_blocking(|tx| {
                tx.put_product(&product_with(7));
                Ok(())
            })
            .unwrap();
        for _ in 0..3 {
            let p = store.product("p").unwrap().expect("the product reads");
            assert_eq!(p.counts.available, 5);
            assert!(
                write.try_recv().is_err(),
                "the write waits behind the long command"
            );
        }
        release.send(()).unwrap();
        long.recv().unwrap().unwrap();
        write.recv().unwrap().unwrap();
        assert_eq!(store.product("p").unwrap().unwrap().counts.available, 7);
        store.close();
    }

    /// `refuse_early` reads the writer's count of a product before the
    /// batch that changed it is durable; a rolled-back command publishes
    /// nothing; a count from a batch that failed is ignored from the
    /// failure on, so the product never looks sold out on the strength of
    /// a claim that was undone.
    #[test]
    fn the_writers_stock_leads_the_store_and_a_failed_batch_leaves_none_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _opts) = one_job_per_batch(dir.path());
        assert_eq!(store.early_available("p"), None, "nothing written yet");
        put_product(&store, 5).unwrap();
        assert_eq!(store.early_available("p"), Some(5));
        let rolled_back = store.write_blocking(|tx| {
            tx.put_product(&product_with(4));
            Err::<(), _>(crate::error::Error::unavailable("no"))
        });
        assert!(rolled_back.is_err());
        put(&store, 9).unwrap();
        assert_eq!(store.early_available("p"), Some(5), "a rolled-back command");

        // B sells the last key; its commit waits until C is computed on top
        // of it, and then fails.
        fail_next_batch_once_one_more_is_computed(&store);
        let (b_tx, b_rx) = mpsc::channel();
        store
            .send(Store::job(
                |tx| {
                    tx.put_product(&product_with(0));
                    Ok(())
                },
                move |r| b_tx.send(r).unwrap(),
            ))
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.early_available("p") != Some(0) {
            assert!(
                std::time::Instant::now() < deadline,
                "B's count never showed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let stored = store.product("p").unwrap().unwrap().counts.available;
        assert_eq!(stored, 5, "B is not durable yet, its count already leads");
        let (c_tx, c_rx) = mpsc::channel();
        store
            .send(Store::job(|_tx| Ok(()), move |r| c_tx.send(r).unwrap()))
            .unwrap();
        assert!(b_rx.recv().unwrap().is_err(), "B failed");
        let _ = c_rx.recv().unwrap();
        assert_eq!(
            store.early_available("p"),
            None,
            "the failed batch's count is ignored: the stored 5 answers"
        );
        put(&store, 1).unwrap();
        assert_eq!(store.early_available("p"), None, "dropped at the restart");
        put_product(&store, 3).unwrap();
        assert_eq!(store.early_available("p"), Some(3));
        store.close();
    }

    /// sled refusing a batch that is already durable (as it does on a full
    /// disk) loses nothing and shows nothing stale: the write is
    /// acknowledged and read back; walks and writes answer 503 and health
    /// says not writable while sled lacks it; once sled may be opened again
    /// the writer does so by itself, and the shop writes again, with the
    /// batch in sled and after clean and unclean restarts.
    #[test]
    fn a_durable_batch_sled_refused_is_read_and_taken_once_sled_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opts) = one_job_per_batch(dir.path());
        put_product(&store, 5).unwrap();
        store.stats().sled_fails.store(true, Ordering::SeqCst);
        put_product(&store, 4).expect("durable in the journal: acknowledged");
        let available = |store: &Store| store.product("p").unwrap().unwrap().counts.available;
        for _ in 0..3 {
            assert_eq!(available(&store), 4, "the acknowledged state, not sled's");
            let miss = store.order("unknown").unwrap_err();
            assert_eq!(miss.status(), 503, "a miss may be what sled lost: {miss}");
            let not_found = store.write_blocking(|tx| {
                tx.order("unknown")?
                    .ok_or_else(|| crate::error::Error::not_found("no such order"))
            });
            assert_eq!(
                not_found.unwrap_err().status(),
                503,
                "never 404 while behind"
            );
            let walk = store.products().unwrap_err();
            assert_eq!(walk.status(), 503, "a walk cannot see the batch: {walk}");
            assert!(!store.healthy());
            let refused = put(&store, 1).unwrap_err();
            assert_eq!(refused.status(), 503);
            assert!(refused.retry_after().is_some());
        }
        assert!(store.trees().is_err());
        store.stats().sled_fails.store(false, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !store.healthy() {
            assert!(std::time::Instant::now() < deadline, "sled never reopened");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        put(&store, 1).expect("writes resume without a restart");
        assert!(present(&store, 1));
        let products = store.products().unwrap();
        assert_eq!(products[0].counts.available, 4, "sled took the batch");
        let mut store = store;
        for clean in [true, false] {
            store.close();
            drop(store);
            if !clean {
                std::fs::remove_file(dir.path().join("CLEAN")).unwrap();
            }
            store = Store::open(&opts).unwrap();
            assert_eq!(available(&store), 4);
            assert!(present(&store, 1));
        }
        store.close();
    }

    /// Imports fingerprints `fps` into product "p" as keys, skipping the
    /// ones the product already had; returns how many were new.
    fn import_fps_in(tx: &mut super::Tx, fps: Vec<u8>) -> crate::error::Result<usize> {
        let mut new = Vec::new();
        for f in fps {
            if !tx.key_fingerprint_known("p", &[f; 16])? {
                new.push((vec![f], [f; 16]));
            }
        }
        let n = new.len();
        tx.insert_available_keys("p", new);
        Ok(n)
    }

    fn import_fps(store: &Store, fps: Vec<u8>) -> crate::error::Result<usize> {
        store.write_blocking(move |tx| import_fps_in(tx, fps))
    }

    /// The writer de-duplicates imports against an in-memory index of
    /// fingerprints: it must know every key the store holds (after clean
    /// and unclean restarts, through batches still in flight) and none that
    /// a failed batch imported.
    #[test]
    fn imports_are_deduplicated_against_the_store_never_against_a_failed_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opts) = one_job_per_batch(dir.path());
        assert_eq!(import_fps(&store, vec![1, 2, 3]).unwrap(), 3);
        assert_eq!(import_fps(&store, vec![2, 3, 4]).unwrap(), 1);
        // Two batches import 5, then 5 and 6 (computed on the first), and
        // both fail: neither is remembered.
        fail_next_batch_once_one_more_is_computed(&store);
        let mut replies = Vec::new();
        for fps in [vec![5], vec![5, 6]] {
            let (t, r) = mpsc::channel();
            store
                .send(Store::job(
                    move |tx| import_fps_in(tx, fps),
                    move |res| t.send(res).unwrap(),
                ))
                .unwrap();
            replies.push(r);
        }
        let answers: Vec<_> = replies.iter().map(|r| r.recv().unwrap()).collect();
        assert!(answers.iter().all(|a| a.is_err()), "both batches fail");
        assert_eq!(
            import_fps(&store, vec![5, 6]).unwrap(),
            2,
            "nothing left behind"
        );
        // A clean restart loads the index from sled, an unclean one from the
        // rebuilt store.
        store.close();
        drop(store);
        let store = Store::open(&opts).unwrap();
        // A command that imports and then loads the index (the first
        // de-duplication after the restart), and then fails: what the
        // loading saw of its own import is not remembered.
        let failed = store.write_blocking(|tx| {
            tx.insert_available_keys("p", vec![(vec![9], [9; 16])]);
            assert!(tx.key_fingerprint_known("p", &[1; 16])?);
            Err::<(), _>(crate::error::Error::invalid("x", "fails on purpose"))
        });
        assert!(failed.is_err());
        assert_eq!(import_fps(&store, vec![1, 5, 6, 7, 9]).unwrap(), 2);
        store.close();
        drop(store);
        std::fs::remove_file(dir.path().join("CLEAN")).unwrap();
        let store = Store::open(&opts).unwrap();
        assert_eq!(import_fps(&store, vec![7, 8]).unwrap(), 1);
        store.close();
    }

    fn holds(store: &Store, kind: &'static str, who: &'static str) -> u64 {
        store
            .write_blocking(move |tx| tx.pending_holds(kind, who))
            .unwrap()
    }

    fn place(store: &Store, o: Order) -> Result<()> {
        store.write_blocking(move |tx| {
            tx.insert_order(&o);
            tx.schedule_expiry(&o);
            Ok(())
        })
    }

    fn settle(store: &Store, no: &'static str, status: OrderStatus) {
        store
            .write_blocking(move |tx| {
                let mut o = tx.order(no)?.unwrap();
                tx.unschedule_expiry(&o);
                o.status = status;
                tx.put_order(&o);
                Ok(())
            })
            .unwrap();
    }

    /// The hold caps' counts live only in the writer: they follow orders
    /// placed, paid and expired, forget rolled-back commands and failed
    /// batches, and are counted again from the pending orders after clean
    /// and unclean restarts. E-mails count in any letter case.
    #[test]
    fn hold_counts_follow_the_pending_orders_without_being_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, opts) = one_job_per_batch(dir.path());
        place(
            &store,
            Order::pending_for_test("A", "Buyer@x.com", "10.0.0.1", 5),
        )
        .unwrap();
        place(
            &store,
            Order::pending_for_test("B", "buyer@X.com", "10.0.0.2", 6),
        )
        .unwrap();
        place(
            &store,
            Order::pending_for_test("C", "other@x.com", "10.0.0.1", 7),
        )
        .unwrap();
        assert_eq!(holds(&store, "email", "BUYER@x.com"), 2);
        assert_eq!(holds(&store, "ip", "10.0.0.1"), 2);
        settle(&store, "A", OrderStatus::Delivered);
        assert_eq!(holds(&store, "email", "buyer@x.com"), 1);
        assert_eq!(holds(&store, "ip", "10.0.0.1"), 1);
        // A command that places an order, sees it counted, then fails.
        let place_and_fail = |store: &Store| {
            let failed = store.write_blocking(|tx| {
                let o = Order::pending_for_test("D", "buyer@x.com", "10.0.0.1", 8);
                tx.insert_order(&o);
                tx.schedule_expiry(&o);
                assert_eq!(tx.pending_holds("email", "buyer@x.com")?, 2);
                Err::<(), _>(crate::error::Error::invalid("x", "fails on purpose"))
            });
            assert!(failed.is_err());
        };
        place_and_fail(&store);
        assert_eq!(holds(&store, "email", "buyer@x.com"), 1);
        // Two batches each place an order for the buyer, and both fail.
        fail_next_batch_once_one_more_is_computed(&store);
        let replies: Vec<_> = ["E", "F"]
            .into_iter()
            .map(|no| {
                let (t, r) = mpsc::channel();
                let o = Order::pending_for_test(no, "buyer@x.com", "10.0.0.9", 9);
                store
                    .send(Store::job(
                        move |tx| {
                            tx.insert_order(&o);
                            tx.schedule_expiry(&o);
                            Ok(())
                        },
                        move |res| t.send(res).unwrap(),
                    ))
                    .unwrap();
                r
            })
            .collect();
        assert!(replies.iter().all(|r| r.recv().unwrap().is_err()));
        assert_eq!(holds(&store, "email", "buyer@x.com"), 1);
        assert_eq!(holds(&store, "ip", "10.0.0.9"), 0);
        // Nothing of them is in sled; a clean and an unclean restart count
        // the pending orders B and C again.
        assert!(store.trees().unwrap().get(super::Tree::Holds).is_empty());
        for clean in [true, false] {
            store.close();
            drop(store);
            if !clean {
                std::fs::remove_file(dir.path().join("CLEAN")).unwrap();
            }
            store = Store::open(&opts).unwrap();
            // The first count after the start happens inside a command
            // that fails: what it saw of its own order is not kept.
            place_and_fail(&store);
            assert_eq!(holds(&store, "email", "buyer@x.com"), 1);
            assert_eq!(holds(&store, "email", "other@x.com"), 1);
            assert_eq!(holds(&store, "ip", "10.0.0.1"), 1);
            assert_eq!(holds(&store, "ip", "10.0.0.2"), 1);
        }
        settle(&store, "B", OrderStatus::Expired);
        settle(&store, "C", OrderStatus::Expired);
        assert_eq!(holds(&store, "email", "buyer@x.com"), 0);
        assert_eq!(holds(&store, "ip", "10.0.0.1"), 0);
        store.close();
    }

    /// Keys imported in blocks read back one by one, in pages and in a full
    /// walk, with each key's own row (after a claim or a delete) in place of
    /// its block slot: two products' blocks interleaved, pages crossing
    /// blocks.
    #[test]
    fn keys_in_blocks_read_back_with_their_state_changes() {
        use crate::domain::model::KeyState;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = one_job_per_batch(dir.path());
        let import = |product: &'static str, n: usize| -> Vec<u64> {
            let (first, last) = store
                .write_blocking(move |tx| {
                    let keys = (0..n)
                        .map(|i| (format!("{product}-{i}").into_bytes(), [0; 16]))
                        .collect();
                    Ok(tx.insert_available_keys(product, keys))
                })
                .unwrap()
                .unwrap();
            (first..=last).collect()
        };
        let mut p = import("p", 100);
        let q = import("q", 10);
        p.extend(import("p", 30));
        assert_eq!(p.len(), 130);
        // Claim p's 3 first keys, sell one, delete two others.
        let claimed = store.write_blocking(|tx| claim(tx, 3)).unwrap().unwrap();
        assert_eq!(claimed, p[..3]);
        let sold = KeyState::Sold {
            order_no: format!("o{}", p[0]),
        };
        let held = KeyState::Held {
            order_no: format!("o{}", p[0]),
        };
        let (first, d1, d2) = (p[0], p[70], p[120]);
        store
            .write_blocking(move |tx| {
                tx.swap_key_state(first, &held, sold)?;
                assert!(tx.delete_available_key(d1, "p")?);
                assert!(tx.delete_available_key(d2, "p")?);
                assert!(!tx.delete_available_key(d2, "p")?, "already gone");
                Ok(())
            })
            .unwrap();
        assert_eq!(store.key(d1).unwrap(), None);
        // A deleted key's sealed text is gone from the store's rows.
        let rows = store.dump().unwrap();
        let text = format!("p-{}", 70).into_bytes();
        assert!(!rows
            .iter()
            .any(|(_, _, v)| v.windows(text.len()).any(|w| w == text.as_slice())));
        assert!(rows
            .iter()
            .any(|(_, _, v)| v.windows(4).any(|w| w == b"p-71")));
        let rec = store.key(p[0]).unwrap().unwrap();
        assert_eq!(rec.state.name(), "sold");
        assert_eq!(rec.sealed, b"p-0");
        assert_eq!(store.key(p[101]).unwrap().unwrap().sealed, b"p-1");
        assert_eq!(store.key(q[9]).unwrap().unwrap().product_id, "q");
        let page_through = |state: Option<&str>| -> Vec<u64> {
            let mut out = Vec::new();
            let mut cursor = None;
            loop {
                let page = store.keys_page("p", state, 7, cursor).unwrap();
                out.extend(page.keys.iter().map(|(id, _)| *id));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return out,
                }
            }
        };
        let live: Vec<u64> = p
            .iter()
            .copied()
            .filter(|&id| id != d1 && id != d2)
            .collect();
        assert_eq!(page_through(None), live);
        let available: Vec<u64> = live[3..].to_vec();
        assert_eq!(page_through(Some("available")), available);
        assert_eq!(page_through(Some("held")), p[1..3]);
        assert_eq!(page_through(Some("sold")), p[..1]);
        let mut walked = Vec::new();
        store
            .for_each_key(|id, rec| {
                walked.push((id, rec.product_id));
                Ok(())
            })
            .unwrap();
        assert_eq!(walked.len(), 128 + 10);
        assert!(walked.windows(2).all(|w| w[0].0 < w[1].0));
        let indexed = |p: &str| -> u32 {
            let index = store.available_index().unwrap();
            index
                .iter()
                .filter(|((product, _), _)| product == p)
                .map(|(_, bits)| bits.count_ones())
                .sum()
        };
        assert_eq!(indexed("p"), 125);
        assert_eq!(indexed("q"), 10);
        store.close();
    }

    /// Imports `n` keys into product "p"; returns their ids.
    fn add_keys(store: &Store, n: u8) -> Vec<u64> {
        let (first, last) = store.add_test_keys(n);
        (first..=last).collect()
    }

    /// Claims the first `n` available keys of product "p" as held.
    fn claim(tx: &mut super::Tx, n: usize) -> crate::error::Result<Option<Vec<u64>>> {
        use crate::domain::model::KeyState;
        let Some(ids) = tx.available_keys("p", n)? else {
            return Ok(None);
        };
        for &id in &ids {
            let held = KeyState::Held {
                order_no: format!("o{id}"),
            };
            tx.swap_key_state(id, &KeyState::Available, held)?;
        }
        Ok(Some(ids))
    }

    fn claim_one(store: &Store) -> Option<u64> {
        store
            .write_blocking(|tx| claim(tx, 1))
            .unwrap()
            .map(|ids| ids[0])
    }

    /// The search for available keys starts at a remembered floor; a key
    /// that becomes available again below it, or whose claim is undone, is
    /// still found first. Never a key skipped, never one claimed twice.
    #[test]
    fn keys_released_or_unclaimed_below_the_search_floor_are_found_first() {
        use crate::domain::model::KeyState;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = one_job_per_batch(dir.path());
        let ids: [u64; 6] = add_keys(&store, 6).try_into().unwrap();
        let k = move |i: usize| ids[i - 1];
        assert_eq!(claim_one(&store), Some(k(1)));
        assert_eq!(claim_one(&store), Some(k(2)));
        // Key 1 comes back (an unpaid order expired).
        store
            .write_blocking(move |tx| {
                let held = KeyState::Held {
                    order_no: format!("o{}", k(1)),
                };
                tx.swap_key_state(k(1), &held, KeyState::Available)
            })
            .unwrap();
        assert_eq!(
            claim_one(&store),
            Some(k(1)),
            "a released key below the floor"
        );
        // A command that claims and searches again, then fails: undone whole.
        let failed = store.write_blocking(move |tx| {
            assert_eq!(claim(tx, 2)?, Some(vec![k(3), k(4)]));
            assert_eq!(claim(tx, 1)?, Some(vec![k(5)]));
            Err::<(), _>(crate::error::Error::invalid("x", "fails on purpose"))
        });
        assert!(failed.is_err());
        assert_eq!(claim_one(&store), Some(k(3)), "a rolled-back claim");
        // Two batches claim 4 and then 5, and both fail (the second was
        // computed on the first): the next claim finds 4 again.
        fail_next_batch_once_one_more_is_computed(&store);
        let mut replies = Vec::new();
        for _ in 0..2 {
            let (t, r) = mpsc::channel();
            store
                .send(Store::job(
                    |tx| claim(tx, 1),
                    move |res| t.send(res).unwrap(),
                ))
                .unwrap();
            replies.push(r);
        }
        for r in replies {
            assert!(r.recv().unwrap().is_err(), "both batches fail");
        }
        assert_eq!(claim_one(&store), Some(k(4)), "claims of failed batches");
        assert_eq!(claim_one(&store), Some(k(5)));
        assert_eq!(claim_one(&store), Some(k(6)));
        assert_eq!(claim_one(&store), None, "sold out");
        // New keys after a sold-out search are found.
        let more = add_keys(&store, 1);
        assert_eq!(claim_one(&store), Some(more[0]));
        store.close();
    }

    /// A batch is copied into sled whole, whatever its size: small ones on
    /// the commit thread, big ones split over two threads at a tree
    /// boundary (also when one tree holds more than half the rows), with
    /// deletes applied after the rows they remove were put there.
    #[test]
    fn apply_writes_copies_every_row_of_small_and_big_batches() {
        use super::{apply_writes, Tree, Trees, Write, PARALLEL_MIN_ROWS};
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::open(dir.path(), 1 << 20).unwrap();
        let put = |tree: Tree, i: u32| Write {
            tree: tree as u8,
            key: i.to_be_bytes().to_vec(),
            value: Some(format!("{}-{i}", tree.name()).into_bytes()),
        };
        let del = |tree: Tree, i: u32| Write {
            tree: tree as u8,
            key: i.to_be_bytes().to_vec(),
            value: None,
        };
        // Sizes below and above PARALLEL_MIN_ROWS; the big one has one tree
        // with most rows (the half point falls in the first tree).
        let shapes: [&[(Tree, u32)]; 3] = [
            &[(Tree::Keys, 10), (Tree::Orders, 5), (Tree::Uploads, 2)],
            &[
                (Tree::Keys, 3000),
                (Tree::Avail, 1000),
                (Tree::Orders, 1500),
            ],
            &[
                (Tree::Products, 1),
                (Tree::KeyFingerprints, 5000),
                (Tree::Idem, 3000),
            ],
        ];
        // The premise: the last two shapes take the two-thread path.
        for shape in &shapes[1..] {
            let rows: u32 = shape.iter().map(|s| s.1).sum();
            assert!(rows as usize > PARALLEL_MIN_ROWS);
        }
        for shape in shapes {
            let writes: Vec<Write> = shape
                .iter()
                .flat_map(|&(t, n)| (0..n).map(move |i| put(t, i)))
                .collect();
            apply_writes(&trees, &writes).unwrap();
            for &(t, n) in shape {
                assert_eq!(trees.get(t).len(), n as usize, "{}", t.name());
                let last = trees.get(t).get((n - 1).to_be_bytes()).unwrap();
                assert_eq!(
                    last.as_deref(),
                    Some(format!("{}-{}", t.name(), n - 1).as_bytes())
                );
            }
            // The same rows deleted again, as one big batch.
            let deletes: Vec<Write> = shape
                .iter()
                .flat_map(|&(t, n)| (0..n).map(move |i| del(t, i)))
                .collect();
            apply_writes(&trees, &deletes).unwrap();
            for &(t, _) in shape {
                assert!(trees.get(t).is_empty(), "{}", t.name());
            }
        }
    }
}
