//! The expiry sweeper: returns the keys of unpaid orders whose hold ran out
//! to stock and marks the orders `expired`. It runs at start-up first, so
//! holds that lapsed while faka was down are released at once.

use crate::shop;
use crate::store::{now_ms, Store};
use crossbeam_channel::Receiver;
use std::time::Duration;

const CHUNK: usize = 256;

/// Expires every order due now; returns how many expired.
pub fn sweep(store: &Store) -> usize {
    let mut total = 0;
    loop {
        let due = match store.due_expiries(now_ms(), CHUNK) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep could not read due orders");
                return total;
            }
        };
        if due.is_empty() {
            return total;
        }
        let n = due.len();
        let batch = due.clone();
        let result = store.write_blocking(move |tx| {
            let mut expired = 0;
            for no in &batch {
                if shop::expire_order(tx, no)? {
                    expired += 1;
                }
            }
            Ok(expired)
        });
        match result {
            Ok(expired) => total += expired,
            Err(e) => {
                // One bad order must not block the rest: go one by one.
                tracing::warn!(error = %e, "expiry batch failed; retrying orders singly");
                let before = total;
                for no in due {
                    match store.write_blocking(move |tx| shop::expire_order(tx, &no)) {
                        Ok(true) => total += 1,
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "an order could not be expired"),
                    }
                }
                if total == before {
                    // Nothing in this chunk can move: stop rather than spin.
                    return total;
                }
            }
        }
        if n < CHUNK {
            return total;
        }
    }
}

pub fn run(store: Store, interval: Duration, stop: Receiver<()>) {
    loop {
        let n = sweep(&store);
        if n > 0 {
            tracing::info!(
                expired = n,
                "expired unpaid orders; their keys are back in stock"
            );
        }
        if !super::pause(&stop, interval) {
            return;
        }
    }
}
