//! The compute stage: runs each batch's jobs in one `Tx` over sled and the
//! batches still in flight, and hands the batch to the committer.

use super::{
    lock, now_ms, Commit, EarlyStock, Finish, InFlight, Job, Msg, Stage, WriterStats,
    MAX_BATCH_BYTES, RESUME_EVERY,
};
use crate::error::Error;
use crate::store::journal::{Batch, Write};
use crate::store::tree::{self, Tree};
use crate::store::tx::{Counters, Tx, WriterIndex};
use crate::store::view::{Unapplied, View};
use crossbeam_channel::{select, Receiver};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The compute stage: runs jobs against sled plus the in-flight batches.
pub(super) struct Computer {
    pub(super) view: Arc<View>,
    pub(super) unapplied: Arc<Unapplied>,
    /// When the writer last asked for sled to be opened again.
    pub(super) last_resume: Instant,
    pub(super) seq: u64,
    pub(super) counters: Counters,
    pub(super) rx: Receiver<Msg>,
    pub(super) max_batch: usize,
    pub(super) webhooks: bool,
    pub(super) mailing: crate::store::Mailing,
    pub(super) in_flight: InFlight,
    pub(super) to_commit: crossbeam_channel::Sender<Stage>,
    /// A token per finished commit: the committer is free again.
    pub(super) ready: Receiver<()>,
    pub(super) stats: Arc<WriterStats>,
    pub(super) epoch: u64,
    /// Set by the committer to the epoch of a batch that failed.
    pub(super) failed_epoch: Arc<AtomicU64>,
    /// Where each product's search for available keys starts, and the
    /// fingerprints its keys had (see `tx::WriterIndex`).
    pub(super) index: WriterIndex,
    pub(super) early: Arc<EarlyStock>,
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
    pub(super) fn run(&mut self) {
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
        tx.mailing = self.mailing;
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
                    value: Some(crate::store::codec::encode(&counters)),
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
