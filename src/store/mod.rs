//! faka's storage: sled trees as the readable view, an fsynced journal as the
//! durable truth, one writer thread that batches every mutation.
//!
//! Domain and HTTP code see [`Store`] (typed reads, `write` of a closure over
//! [`Tx`]) and never sled. Reads go straight to sled and never wait for the
//! writer; every write goes through the bounded queue and is answered only
//! after its batch is durable. After sled failed to take a durable batch,
//! reads see it through `view::Unapplied` until sled is opened again.

mod apply;
pub mod codec;
pub mod courier;
pub mod datadir;
pub mod journal;
pub mod keyblock;
mod reads;
pub mod recovery;
pub mod repair;
pub mod snapshot;
pub mod tree;
mod tx;
mod view;
mod writer;

pub use datadir::OpenError;
pub use reads::{Expired, KeyPage, OrderFilter, OrderPage, OrderRange, RawRecord};
pub(crate) use tx::coupon_email_key;
pub use tx::emails::EmailAbout;
pub use tx::{Counters, FingerprintSet, Published, Tx};
pub use writer::{now_ms, WriterStats, LATENCY_BUCKETS};

use crate::error::{Error, Result};
use crossbeam_channel::{Sender, TrySendError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tree::Trees;
use writer::{Finish, Job, Msg, Writer};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// sled page cache bound, in bytes.
    pub cache_bytes: u64,
    /// Writes waiting for the writer beyond this answer 503.
    pub queue_capacity: usize,
    /// Most commands per group commit.
    pub max_batch: usize,
    /// Journal bytes since the last snapshot that trigger a new one.
    pub snapshot_bytes: u64,
    /// Whether order events go to the webhook outbox.
    pub webhooks: bool,
    /// Writes are refused (503) while less than this is free on the disk.
    pub min_free_bytes: u64,
    /// Nice value of the writer and commit threads (`[server]
    /// writer_nice`): below 0 raises them, 0 leaves them alone.
    pub writer_nice: i32,
    /// Which e-mails the commands queue (none unless `[email]` is set).
    pub mailing: Mailing,
}

/// Which e-mails the writer's commands put in the e-mail outbox: to buyers
/// (delivery, waiting for stock) and to the merchant (alerts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mailing {
    pub buyer: bool,
    pub merchant: bool,
}

impl StoreOptions {
    /// Options for a unit test's store: any free space will do.
    #[cfg(test)]
    pub(crate) fn for_test(data_dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            min_free_bytes: 0,
            ..StoreOptions::new(data_dir)
        }
    }

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            data_dir: data_dir.into(),
            cache_bytes: 16 * 1024 * 1024,
            queue_capacity: 8192,
            max_batch: 512,
            snapshot_bytes: 256 * 1024 * 1024,
            webhooks: false,
            min_free_bytes: 16 * 1024 * 1024,
            writer_nice: 0,
            mailing: Mailing::default(),
        }
    }
}

type CommitHooks = Arc<Mutex<Vec<Box<dyn Fn() + Send>>>>;

struct Inner {
    view: Arc<view::View>,
    unapplied: Arc<view::Unapplied>,
    sender: Sender<Msg>,
    stats: Arc<WriterStats>,
    data_dir: PathBuf,
    files: Arc<Mutex<()>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    closing: AtomicBool,
    recovery: recovery::Recovery,
    min_free_bytes: u64,
    /// Lowest outbox seq re-queued since the dispatcher last looked.
    outbox_hint: std::sync::atomic::AtomicU64,
    /// Lowest e-mail seq re-queued since the e-mail dispatcher last looked.
    email_hint: std::sync::atomic::AtomicU64,
    commit_hooks: CommitHooks,
    /// The data-dir lock; released by `close` so a CLI may follow.
    lock: Mutex<Option<std::fs::File>>,
    early: Arc<writer::EarlyStock>,
    live_uploads: Arc<LiveUploads>,
}

/// The key uploads this process is staging now (see `ops::upload`): any
/// other staged upload in the store was abandoned, and may be discarded.
#[derive(Default)]
pub struct LiveUploads(Mutex<std::collections::HashSet<u64>>);

impl LiveUploads {
    fn ids(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new upload id, live until [`LiveUploads::end`].
    pub fn start(&self) -> u64 {
        loop {
            let id = rand::random::<u64>();
            if self.ids().insert(id) {
                return id;
            }
        }
    }

    pub fn end(&self, id: u64) {
        self.ids().remove(&id);
    }

    pub fn is_live(&self, id: u64) -> bool {
        self.ids().contains(&id)
    }
}

/// A handle to the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// A product's available count as the writer last computed it, ahead of
    /// the stored one while its batch is made durable (see
    /// `writer::EarlyStock`); `None` when the stored count is the answer.
    pub fn early_available(&self, product_id: &str) -> Option<u64> {
        self.inner.early.available(product_id)
    }

    /// Opens (recovering or rebuilding as needed) and starts the writer.
    pub fn open(opts: &StoreOptions) -> Result<Store, OpenError> {
        let opened = recovery::open(&opts.data_dir, opts.cache_bytes)?;
        let jdir = recovery::journal_dir(&opts.data_dir);
        let mut journal = journal::Journal::open(&jdir, opened.seq + 1)
            .map_err(|e| OpenError(format!("opening journal: {e}")))?;
        if opened.journal_end.is_some_and(|end| end != opened.seq) {
            // The newest segment does not end where the store is: start a
            // fresh one so the next batch never follows a gap.
            journal
                .rotate(opened.seq + 1)
                .map_err(|e| OpenError(format!("rotating journal: {e}")))?;
        }
        let (sender, rx) = crossbeam_channel::bounded(opts.queue_capacity);
        let stats = Arc::new(WriterStats::default());
        stats.applied_seq.store(opened.seq, Ordering::SeqCst);
        stats.publish(&opened.counters);
        let files = Arc::new(Mutex::new(()));
        let commit_hooks: CommitHooks = Arc::default();
        let hooks = commit_hooks.clone();
        let early: Arc<writer::EarlyStock> = Arc::default();
        let view = Arc::new(view::View::new(opened.trees));
        let unapplied: Arc<view::Unapplied> = Arc::default();
        let writer = Writer {
            view: view.clone(),
            unapplied: unapplied.clone(),
            cache_bytes: opts.cache_bytes,
            journal,
            seq: opened.seq,
            counters: opened.counters,
            rx,
            max_batch: opts.max_batch.max(1),
            webhooks: opts.webhooks,
            mailing: opts.mailing,
            stats: stats.clone(),
            snapshots: snapshot::Snapshotter {
                data_dir: opts.data_dir.clone(),
                threshold_bytes: opts.snapshot_bytes,
                running: Arc::new(AtomicBool::new(false)),
                files: files.clone(),
                stats: stats.clone(),
            },
            min_free_bytes: opts.min_free_bytes,
            nice: opts.writer_nice,
            early: early.clone(),
            on_commit: Some(Box::new(move || {
                if let Ok(hooks) = hooks.lock() {
                    hooks.iter().for_each(|h| h());
                }
            })),
        };
        let handle = std::thread::Builder::new()
            .name("faka-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| OpenError(format!("starting writer thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                view,
                unapplied,
                sender,
                stats,
                data_dir: opts.data_dir.clone(),
                files,
                writer: Mutex::new(Some(handle)),
                closing: AtomicBool::new(false),
                recovery: opened.recovery,
                min_free_bytes: opts.min_free_bytes,
                outbox_hint: std::sync::atomic::AtomicU64::new(u64::MAX),
                email_hint: std::sync::atomic::AtomicU64::new(u64::MAX),
                commit_hooks,
                lock: Mutex::new(Some(opened.lock)),
                early,
                live_uploads: Arc::default(),
            }),
        })
    }

    /// The uploads this process is staging.
    pub fn live_uploads(&self) -> Arc<LiveUploads> {
        self.inner.live_uploads.clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Whether this start rebuilt sled from snapshot + journal.
    pub fn was_rebuilt(&self) -> bool {
        self.inner.recovery == recovery::Recovery::Rebuilt
    }

    /// How this start got its sled view.
    pub fn recovery(&self) -> recovery::Recovery {
        self.inner.recovery
    }

    /// Changes whenever a committed batch changed a product; see
    /// `WriterStats::products_version`.
    pub fn products_version(&self) -> u64 {
        self.stats()
            .products_version
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Queue depth of the writer.
    pub fn queue_len(&self) -> usize {
        self.inner.sender.len()
    }

    /// Held while snapshot files are replaced, so a backup sees a stable set.
    pub fn files_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` after every committed batch (on the writer thread; keep it
    /// to a wake-up).
    pub fn on_commit(&self, f: impl Fn() + Send + 'static) {
        if let Ok(mut hooks) = self.inner.commit_hooks.lock() {
            hooks.push(Box::new(f));
        }
    }

    /// Tells the webhook dispatcher that an event at `seq` is pending again
    /// (an admin retry), below where it may have stopped looking.
    pub fn outbox_rescan_from(&self, seq: u64) {
        self.inner.outbox_hint.fetch_min(seq, Ordering::SeqCst);
    }

    /// Takes the lowest re-queued seq, if any.
    pub fn take_outbox_hint(&self) -> u64 {
        self.inner.outbox_hint.swap(u64::MAX, Ordering::SeqCst)
    }

    /// Tells the e-mail dispatcher that e-mail `seq` is pending again.
    pub fn email_rescan_from(&self, seq: u64) {
        self.inner.email_hint.fetch_min(seq, Ordering::SeqCst);
    }

    /// Takes the lowest re-queued e-mail seq, if any.
    pub fn take_email_hint(&self) -> u64 {
        self.inner.email_hint.swap(u64::MAX, Ordering::SeqCst)
    }

    /// True when the store accepts writes. After a refused batch, healthy
    /// again as soon as the disk has room, without waiting for a write;
    /// after sled failed to take a durable batch, once it is opened again.
    pub fn healthy(&self) -> bool {
        let stats = &self.inner.stats;
        if self.inner.closing.load(Ordering::SeqCst)
            || stats.poisoned.load(Ordering::SeqCst)
            || self.inner.unapplied.is_behind()
        {
            return false;
        }
        if stats.failing.load(Ordering::SeqCst) {
            let room = datadir::free_bytes(&self.inner.data_dir)
                .is_none_or(|f| f >= self.inner.min_free_bytes);
            if !room {
                return false;
            }
            stats.failing.store(false, Ordering::SeqCst);
        }
        true
    }

    fn job<T: Send + 'static>(
        f: impl FnOnce(&mut Tx) -> Result<T> + Send + 'static,
        reply: impl FnOnce(Result<T>) + Send + 'static,
    ) -> Job {
        Box::new(move |tx: &mut Tx| {
            let r = f(tx);
            let ok = r.is_ok();
            let finish: Finish = Box::new(move |commit_err| {
                reply(match (r, commit_err) {
                    // A batch that failed answers only its failure: a
                    // command's refusal (an order not found) may rest on
                    // what did not become durable, or on a sled behind.
                    (_, Some(e)) => Err(e),
                    (r, None) => r,
                })
            });
            (ok, finish)
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(Error::unavailable("faka is shutting down"));
        }
        self.inner
            .sender
            .try_send(Msg::Job(job))
            .map_err(|e| match e {
                TrySendError::Full(_) => Error::Unavailable {
                    message: "too many writes queued, retry shortly".into(),
                    retry_after: Duration::from_secs(1),
                },
                TrySendError::Disconnected(_) => Error::unavailable("faka is shutting down"),
            })
    }

    /// Runs `f` in the writer and answers once its batch is durable.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(f)?.await
    }

    /// Queues `f` for the writer now and returns the future of its answer,
    /// so a caller can queue the next command while this one commits.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T> + Send + 'static,
    ) -> Result<impl std::future::Future<Output = Result<T>>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let courier = courier::here();
        self.send(Self::job(f, move |r| {
            courier::deliver(
                courier,
                Box::new(move || {
                    let _ = tx.send(r);
                }),
            )
        }))?;
        Ok(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::unavailable("the write was aborted")))
        })
    }

    /// [`Store::write`] for threads outside the async runtime.
    pub fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit_blocking(f)?
            .recv()
            .unwrap_or_else(|_| Err(Error::unavailable("the write was aborted")))
    }

    /// Queues `f` for the writer now, from a thread outside the async
    /// runtime, and gives where its answer will arrive once its batch is
    /// durable.
    pub fn submit_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T> + Send + 'static,
    ) -> Result<std::sync::mpsc::Receiver<Result<T>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Self::job(f, move |r| {
            let _ = tx.send(r);
        }))?;
        Ok(rx)
    }

    /// Stops accepting writes, drains the queue, flushes sled and writes the
    /// clean-shutdown marker. Idempotent.
    pub fn close(&self) {
        if self.inner.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        let (ack, done) = std::sync::mpsc::channel();
        if self.inner.sender.send(Msg::Shutdown(ack)).is_ok() {
            let _ = done.recv();
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        if let Ok(mut lock) = self.inner.lock.lock() {
            lock.take();
        }
    }

    /// How many handles of this store are alive (this one included). The
    /// sled database stays open, and locked, until the last one is dropped:
    /// a process that opens the same directory again (tests restart a shop
    /// in-process) waits for this to reach 1 first.
    pub fn open_handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The sled trees for a read that walks them: 503 while sled lacks a
    /// durable batch, which a walk could not merge in (point reads go
    /// through [`Store::read_raw`] instead).
    pub(crate) fn trees(&self) -> Result<Arc<Trees>> {
        if self.inner.unapplied.is_behind() {
            return Err(view::catching_up());
        }
        self.inner.view.get()
    }

    /// One row as the journal has it: from a durable batch sled lacks, if
    /// one writes it, else from sled.
    pub(crate) fn read_raw(&self, t: tree::Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.inner.unapplied.get(t as u8, key) {
            return Ok(v);
        }
        let trees = self.inner.view.get()?;
        let got = trees.get(t).get(key).map_err(|e| {
            let e = trees.note_error(e);
            tracing::error!(error = %e, "store read failed");
            Error::unavailable("storage error, try again")
        })?;
        Ok(got.map(|v| v.to_vec()))
    }
}

#[cfg(test)]
impl Store {
    /// Unit tests' stock: `n` keys (texts and fingerprints 0..n) stored as
    /// available for product "p" (which has no product record); the first
    /// and last id.
    pub(crate) fn add_test_keys(&self, n: u8) -> (u64, u64) {
        self.write_blocking(move |tx| {
            let keys = (0..n).map(|i| (vec![i], [i; 16])).collect();
            Ok(tx.insert_available_keys("p", keys))
        })
        .unwrap()
        .unwrap()
    }
}
