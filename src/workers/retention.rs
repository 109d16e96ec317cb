//! The retention pruner: deletes idempotency records, delivered webhook
//! events and sent e-mails once they are older than their configured age
//! (`[retention]`), so the store does not grow with every order for good.
//!
//! It walks each tree outside the writer, a few thousand rows a step, and
//! hands what it found to the writer as one command of at most [`CHUNK`]
//! deletes, waiting for each before the next: a batch never carries more
//! than one such command, so orders are not held up. The writer checks each
//! record again before it deletes it. The deleted rows leave the data dir
//! with the next snapshot, which drops the journal before it.

use crate::error::Result;
use crate::shop;
use crate::store::{now_ms, Expired, Store};
use crossbeam_channel::Receiver;
use std::time::Duration;

/// Most records one prune command deletes.
const CHUNK: usize = 256;
/// Most rows one step of the walk reads.
const SCAN: usize = 4096;

/// How old each kind of record may get.
#[derive(Debug, Clone, Copy)]
pub struct Ages {
    pub idempotency: Duration,
    pub delivered_events: Duration,
}

impl Ages {
    pub fn of(cfg: &crate::config::RetentionConfig) -> Ages {
        let hours = |h: u64| Duration::from_secs(h.saturating_mul(3600));
        Ages {
            idempotency: hours(cfg.idempotency_hours),
            delivered_events: hours(cfg.delivered_events_hours),
        }
    }
}

/// Prunes every record older than its age at `now_ms`; how many of each
/// (idempotency records, outbox records and sent e-mails).
pub fn sweep(store: &Store, ages: Ages, now_ms: i64) -> Result<(usize, usize)> {
    let cutoff = |age: Duration| now_ms.saturating_sub(age.as_millis() as i64);
    let idem_cutoff = cutoff(ages.idempotency);
    let idem = prune(
        |from| store.expired_idempotency(idem_cutoff, from, SCAN),
        |keys| store.write_blocking(move |tx| shop::prune_idempotency(tx, &keys, idem_cutoff)),
    )?;
    let events_cutoff = cutoff(ages.delivered_events);
    let events = prune(
        |from| store.expired_outbox(events_cutoff, from, SCAN),
        |keys| {
            let groups: Vec<u64> = keys
                .iter()
                .filter_map(|k| crate::store::tree::read_u64(k))
                .collect();
            store.write_blocking(move |tx| shop::prune_delivered_events(tx, &groups, events_cutoff))
        },
    )?;
    let emails = prune(
        |from| store.expired_emails(events_cutoff, from, SCAN),
        |keys| {
            let seqs: Vec<u64> = keys
                .iter()
                .filter_map(|k| crate::store::tree::read_u64(k))
                .collect();
            store.write_blocking(move |tx| shop::prune_sent_emails(tx, &seqs, events_cutoff))
        },
    )?;
    Ok((idem, events + emails))
}

/// Walks a tree with `find` and deletes what it finds with `delete`, in
/// commands of at most [`CHUNK`] records.
fn prune(
    find: impl Fn(&[u8]) -> Result<Expired>,
    delete: impl Fn(Vec<Vec<u8>>) -> Result<usize>,
) -> Result<usize> {
    let (mut from, mut pruned) = (Vec::new(), 0);
    loop {
        let step = find(&from)?;
        for chunk in step.keys.chunks(CHUNK) {
            pruned += delete(chunk.to_vec())?;
        }
        match step.next {
            Some(next) => from = next,
            None => return Ok(pruned),
        }
    }
}

pub fn run(store: Store, ages: Ages, interval: Duration, stop: Receiver<()>) {
    loop {
        match sweep(&store, ages, now_ms()) {
            Ok((0, 0)) => {}
            Ok((idempotency, events)) => tracing::info!(
                idempotency_records = idempotency,
                delivered_events = events,
                "pruned records past their retention"
            ),
            // A full disk or a shutdown: the next sweep goes on.
            Err(e) => tracing::warn!(error = %e, "retention sweep stopped early"),
        }
        if !super::pause(&stop, interval) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{sweep, Ages, CHUNK};
    use crate::domain::model::{DeliveryState, EventKind, IdempotencyRecord};
    use crate::store::{now_ms, Store, StoreOptions};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    const DAY: i64 = 86_400_000;

    fn hash(i: u32) -> [u8; 32] {
        let mut h = [0; 32];
        h[..4].copy_from_slice(&i.to_be_bytes());
        h
    }

    fn remembered(store: &Store, i: u32) -> bool {
        store
            .write_blocking(move |tx| Ok(tx.idempotency(&hash(i))?.is_some()))
            .unwrap()
    }

    /// Records older than their age are deleted, younger ones stay: even
    /// idempotency records made 8 days ago go and odd ones made 6 days ago
    /// stay (7 days); of the outbox records, only the one whose events were
    /// all delivered more than 30 days ago goes. Deletes go in commands of
    /// at most `CHUNK`; the outbox counts do not change; a second sweep
    /// finds nothing.
    #[test]
    fn records_past_their_age_go_and_younger_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::for_test(dir.path());
        opts.webhooks = true;
        let store = Store::open(&opts).unwrap();
        let now = now_ms();
        store
            .write_blocking(move |tx| {
                for i in 0..600 {
                    let age = if i % 2 == 0 { 8 * DAY } else { 6 * DAY };
                    let rec = IdempotencyRecord {
                        fingerprint: [0; 32],
                        order_no: format!("o{i}"),
                        sealed_response: vec![],
                        created_at_ms: now - age,
                    };
                    tx.put_idempotency(&hash(i), &rec);
                }
                for o in ["old", "young", "pending"] {
                    tx.emit_event(o, EventKind::Paid);
                }
                tx.emit_event("mixed", EventKind::Paid);
                tx.emit_event("mixed", EventKind::Delivered);
                Ok(())
            })
            .unwrap();
        // seq → (age in days, state): "mixed" is one record of seqs 4 and 5.
        let events = [
            (1, 31, DeliveryState::Delivered),
            (2, 29, DeliveryState::Delivered),
            (3, 31, DeliveryState::Pending),
            (4, 31, DeliveryState::Delivered),
            (5, 31, DeliveryState::Dead),
        ];
        store
            .write_blocking(move |tx| {
                for (seq, days, state) in events {
                    let mut e = tx.outbox(seq)?.unwrap();
                    e.created_at_ms = now - days * DAY;
                    e.state = state;
                    tx.put_outbox(&e)?;
                }
                Ok(())
            })
            .unwrap();
        let counts = store.outbox_counts();
        let ages = Ages {
            idempotency: Duration::from_secs(7 * 86_400),
            delivered_events: Duration::from_secs(30 * 86_400),
        };
        // Each command is a batch of its own (the pruner waits for each).
        let batches = store.stats().computed.load(Ordering::SeqCst);
        assert_eq!(sweep(&store, ages, now).unwrap(), (300, 1));
        let commands = store.stats().computed.load(Ordering::SeqCst) - batches;
        assert_eq!(commands as usize, 300_usize.div_ceil(CHUNK) + 1);
        for i in 0..600 {
            assert_eq!(remembered(&store, i), i % 2 == 1, "record {i}");
        }
        let kept: Vec<u64> = (1..=5)
            .filter(|&seq| store.outbox_event(seq).unwrap().is_some())
            .collect();
        assert_eq!(kept, [2, 3, 4, 5]);
        assert_eq!(store.outbox_counts(), counts);
        assert_eq!(store.outbox_counts_scanned().unwrap(), counts);
        assert_eq!(sweep(&store, ages, now).unwrap(), (0, 0));
        store.close();
    }

    /// Sent e-mails older than the events' age go; younger ones, and old
    /// ones still pending or dead, stay. A batch's e-mails are one record,
    /// which goes only when every e-mail in it may.
    #[test]
    fn sent_emails_past_their_age_go() {
        use crate::domain::model::{EmailKind, EmailTo};
        use crate::store::EmailAbout;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        let now = now_ms();
        // One batch each: (age in days, state) of its e-mails.
        let batches: [&[(i64, DeliveryState)]; 5] = [
            &[
                (31, DeliveryState::Delivered),
                (40, DeliveryState::Delivered),
            ],
            &[(29, DeliveryState::Delivered)],
            &[(31, DeliveryState::Pending)],
            &[(31, DeliveryState::Dead)],
            &[(31, DeliveryState::Delivered), (31, DeliveryState::Pending)],
        ];
        let mut seqs = Vec::new();
        for batch in batches {
            let batch = batch.to_vec();
            let queued = store
                .write_blocking(move |tx| {
                    let mut seqs = Vec::new();
                    for (days, state) in batch {
                        tx.queue_email(
                            EmailKind::StockLow,
                            EmailTo::Merchant,
                            EmailAbout::default(),
                        )?;
                        let mut e = tx.email(tx.emails_queued_last().unwrap())?.unwrap();
                        e.created_at_ms = now - days * DAY;
                        e.state = state;
                        tx.put_email(&e)?;
                        seqs.push(e.seq);
                    }
                    Ok(seqs)
                })
                .unwrap();
            seqs.push(queued);
        }
        let ages = Ages {
            idempotency: Duration::from_secs(7 * 86_400),
            delivered_events: Duration::from_secs(30 * 86_400),
        };
        let all = |store: &Store| -> Vec<bool> {
            seqs.iter()
                .flatten()
                .map(|&seq| store.email_event(seq).unwrap().is_some())
                .collect()
        };
        assert_eq!(all(&store), [true; 7]);
        assert_eq!(sweep(&store, ages, now).unwrap(), (0, 1));
        assert_eq!(all(&store), [false, false, true, true, true, true, true]);
        assert_eq!(sweep(&store, ages, now).unwrap(), (0, 0));
        store.close();
    }
}
