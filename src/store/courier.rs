//! Answers from the writer, handed over on the worker thread that waits for
//! them.
//!
//! The commit thread answers every caller of a durable batch. A task woken
//! from another thread goes to its actix worker's remote queue, which tokio's
//! `LocalSet` serves one task per 31 local ones. In a flash sale, with
//! hundreds of connections ready on each worker, the winners of one batch
//! were resumed one by one, the last long after its batch was durable.
//! So each worker runs a *courier*: one local task that takes the answers for
//! its callers from a channel (one remote wake per batch, not per caller)
//! and completes them there, which wakes the callers as local tasks.

use std::cell::RefCell;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Completes one caller's answer.
pub(crate) type Delivery = Box<dyn FnOnce() + Send>;

thread_local! {
    static COURIER: RefCell<Option<UnboundedSender<Delivery>>> = const { RefCell::new(None) };
}

/// Starts the calling thread's courier. Call it on a thread that runs a
/// tokio `LocalSet` (an actix worker), from within it; the courier lives as
/// long as that `LocalSet`.
pub fn start() {
    let (tx, mut rx) = unbounded_channel::<Delivery>();
    tokio::task::spawn_local(async move {
        while let Some(deliver) = rx.recv().await {
            deliver();
        }
    });
    COURIER.with(|c| *c.borrow_mut() = Some(tx));
}

/// How to hand an answer to a caller on this thread: through its courier
/// when it has one, else directly.
pub(crate) fn here() -> Option<UnboundedSender<Delivery>> {
    COURIER.with(|c| c.borrow().clone())
}

/// Runs `deliver` on the courier's thread, or here and now when there is no
/// courier or it has stopped.
pub(crate) fn deliver(courier: Option<UnboundedSender<Delivery>>, deliver: Delivery) {
    match courier {
        Some(c) => {
            if let Err(returned) = c.send(deliver) {
                (returned.0)()
            }
        }
        None => deliver(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread::{self, ThreadId};

    /// Answers for a thread with a courier are completed on that thread,
    /// whichever thread hands them over; once its `LocalSet` is gone they
    /// are completed by the thread that hands them over, and nobody is left
    /// without an answer.
    #[test]
    fn answers_are_completed_on_the_waiting_thread_while_its_courier_runs() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let waiting = thread::current().id();
        let courier = local.block_on(&rt, async {
            start();
            here()
        });
        assert!(courier.is_some(), "the thread has a courier");

        // Handed over from another thread (as the commit thread does).
        let (done_tx, done_rx) = mpsc::channel::<ThreadId>();
        let c = courier.clone();
        thread::spawn(move || {
            deliver(
                c,
                Box::new(move || {
                    let _ = done_tx.send(thread::current().id());
                }),
            )
        })
        .join()
        .unwrap();
        // Not yet: the courier completes it when the LocalSet runs.
        assert!(done_rx.try_recv().is_err());
        let completed_on = local.block_on(&rt, async {
            loop {
                if let Ok(id) = done_rx.try_recv() {
                    break id;
                }
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(completed_on, waiting, "completed on the waiting thread");

        // The LocalSet is gone: the answer is completed where it is handed over.
        drop(local);
        let (done_tx, done_rx) = mpsc::channel::<ThreadId>();
        let handed_over_on = thread::spawn(move || {
            deliver(
                courier,
                Box::new(move || {
                    let _ = done_tx.send(thread::current().id());
                }),
            );
            thread::current().id()
        })
        .join()
        .unwrap();
        assert_eq!(done_rx.try_recv().ok(), Some(handed_over_on));

        // A thread without a courier.
        assert!(thread::spawn(here).join().unwrap().is_none());
    }
}
