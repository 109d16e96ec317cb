//! Background threads: the expiry sweeper, the retention pruner (and, with
//! webhooks or e-mail, the outbox senders). Each is a plain thread that sleeps on a stop channel, so
//! shutdown wakes them at once and joins them.

pub mod emails;
pub mod expiry;
pub mod retention;
pub mod webhooks;

use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;

/// The running workers; [`Workers::stop`] ends and joins them.
pub struct Workers {
    stop: Option<Sender<()>>,
    stop_rx: Receiver<()>,
    handles: Vec<JoinHandle<()>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Workers {
            stop: Some(tx),
            stop_rx: rx,
            handles: Vec::new(),
        }
    }

    /// A receiver that disconnects when the workers are told to stop:
    /// `recv_timeout` on it is a stoppable sleep.
    pub fn stop_signal(&self) -> Receiver<()> {
        self.stop_rx.clone()
    }

    pub fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) {
        match std::thread::Builder::new().name(name.to_string()).spawn(f) {
            Ok(h) => self.handles.push(h),
            Err(e) => tracing::error!(worker = name, error = %e, "could not start worker"),
        }
    }

    pub fn stop(&mut self) {
        self.stop.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps for `d` unless stopped; returns false once stopping.
pub fn pause(stop: &Receiver<()>, d: std::time::Duration) -> bool {
    matches!(
        stop.recv_timeout(d),
        Err(crossbeam_channel::RecvTimeoutError::Timeout)
    )
}
