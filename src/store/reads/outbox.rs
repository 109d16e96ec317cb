//! Outbox reads: pages and pending events for the dispatcher, and the
//! pending and dead counts (the writer's, and a full count for the checker).

use super::{decode, storage};
use crate::domain::model::{DeliveryState, OutboxEvent};
use crate::error::Result;
use crate::store::codec;
use crate::store::tree::{self, Tree};
use crate::store::tx::outbox::OUTBOX_GROUP_MAX;
use crate::store::Store;

impl Store {
    /// Outbox events, oldest first, from `cursor` (exclusive).
    pub fn outbox_page(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
        cursor: Option<u64>,
    ) -> Result<(Vec<OutboxEvent>, Option<u64>)> {
        let start = cursor.map_or(0, |c| c.saturating_add(1));
        let mut out = Vec::new();
        let mut next = None;
        for e in self.outbox_events_from(start)? {
            let e = e?;
            if state.is_some_and(|s| s != e.state) {
                continue;
            }
            if out.len() == limit {
                next = out.last().map(|e: &OutboxEvent| e.seq);
                break;
            }
            out.push(e);
        }
        Ok((out, next))
    }

    /// Every outbox event with seq ≥ `from`, oldest first, unpacked from the
    /// per-order groups they are stored in (`Tx::put_outbox`).
    fn outbox_events_from(&self, from: u64) -> Result<impl Iterator<Item = Result<OutboxEvent>>> {
        let first = from.saturating_sub(OUTBOX_GROUP_MAX as u64 - 1);
        Ok(self
            .trees()?
            .get(Tree::Outbox)
            .range(tree::u64_key(first)..)
            .values()
            .flat_map(|v| {
                let group: Result<Vec<OutboxEvent>> = v.map_err(storage).and_then(|v| decode(&v));
                match group {
                    Ok(g) => g.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                }
            })
            .filter(move |e| e.as_ref().map_or(true, |e| e.seq >= from)))
    }

    /// Events still to be sent, oldest first, scanning from `from_seq`.
    /// Also returns the new low-water mark: the first pending event seen,
    /// or past the end when none is pending.
    pub fn pending_outbox(&self, from_seq: u64, limit: usize) -> Result<(Vec<OutboxEvent>, u64)> {
        let mut out = Vec::new();
        let mut low = None;
        let mut next = from_seq;
        for e in self.outbox_events_from(from_seq)? {
            let e = e?;
            next = e.seq + 1;
            if e.state == DeliveryState::Pending {
                low.get_or_insert(e.seq);
                out.push(e);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok((out, low.unwrap_or(next)))
    }

    pub fn outbox_event(&self, seq: u64) -> Result<Option<OutboxEvent>> {
        for e in self.outbox_events_from(seq)? {
            let e = e?;
            if e.seq >= seq {
                return Ok((e.seq == seq).then_some(e));
            }
        }
        Ok(None)
    }

    /// How many outbox events are pending and dead, as the writer counts
    /// them (kept with every batch; no scan).
    pub fn outbox_counts(&self) -> (u64, u64) {
        let stats = self.stats();
        (
            stats
                .outbox_pending
                .load(std::sync::atomic::Ordering::SeqCst),
            stats.outbox_dead.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// How many outbox events are pending and dead, counted in the outbox
    /// itself (reads every event: for the checker).
    pub fn outbox_counts_scanned(&self) -> Result<(u64, u64)> {
        outbox_counts_in(&*self.trees()?).map_err(storage)
    }
}

/// Pending and dead events in the outbox of `trees`, counted event by event.
pub(crate) fn outbox_counts_in(
    trees: &crate::store::tree::Trees,
) -> std::result::Result<(u64, u64), String> {
    let mut c = crate::store::Counters::default();
    for group in trees.get(Tree::Outbox).iter().values() {
        let group = group.map_err(|e| e.to_string())?;
        let events: Vec<OutboxEvent> = codec::decode(&group).map_err(|e| e.to_string())?;
        for e in events {
            c.count_outbox(e.state, true);
        }
    }
    Ok((c.outbox_pending, c.outbox_dead))
}
