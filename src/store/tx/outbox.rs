//! The outbox operations of a `Tx`: the webhook events a command emits,
//! stored as one group record per order and command.

use super::Tx;
use crate::domain::model::{DeliveryState, EventKind, OutboxEvent};
use crate::error::{Error, Result};
use crate::store::tree::{self, Tree};

impl Tx<'_> {
    // ---- outbox ------------------------------------------------------------
    //
    // The outbox holds *groups*: the events one command emitted for one order
    // (a payment that delivers at once emits `order.paid` and
    // `order.delivered`), stored as one record keyed by the first event's seq,
    // with consecutive seqs. One record per order and command keeps the
    // transactional outbox to one write where it used to take two.

    /// The outbox event `seq`, from the group record holding it.
    pub fn outbox(&self, seq: u64) -> Result<Option<OutboxEvent>> {
        Ok(self
            .outbox_group(seq)?
            .and_then(|(_, g)| g.into_iter().find(|e| e.seq == seq)))
    }

    /// The group holding event `seq`, with the group's key (its first seq).
    fn outbox_group(&self, seq: u64) -> Result<Option<(u64, Vec<OutboxEvent>)>> {
        for first in (seq.saturating_sub(OUTBOX_GROUP_MAX as u64 - 1)..=seq).rev() {
            if let Some(g) = self.get::<Vec<OutboxEvent>>(Tree::Outbox, &tree::u64_key(first))? {
                if g.iter().any(|e| e.seq == seq) {
                    return Ok(Some((first, g)));
                }
            }
        }
        Ok(None)
    }

    /// Records that the current command changed `order_no` in a way
    /// merchants are told about; written when the command commits.
    pub fn emit_event(&mut self, order_no: &str, kind: EventKind) {
        self.events.push((order_no.to_string(), kind));
    }

    pub(super) fn flush_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        while !events.is_empty() {
            let order_no = events[0].0.clone();
            let (mine, rest): (Vec<_>, Vec<_>) =
                events.into_iter().partition(|(o, _)| *o == order_no);
            events = rest;
            for chunk in mine.chunks(OUTBOX_GROUP_MAX) {
                let group: Vec<OutboxEvent> = chunk
                    .iter()
                    .map(|(_, kind)| {
                        let seq = self.next_outbox_seq();
                        new_event(seq, &order_no, *kind, self.now_ms)
                    })
                    .collect();
                self.counters.outbox_pending += group.len() as u64;
                let key = tree::u64_key(group[0].seq).to_vec();
                self.put(Tree::Outbox, key, &group);
            }
        }
    }

    fn next_outbox_seq(&mut self) -> u64 {
        let seq = self.counters.next_outbox_seq.max(1);
        self.counters.next_outbox_seq = seq + 1;
        seq
    }

    /// Stores a changed outbox event back into its group. (No separate
    /// to-send index: the dispatcher scans from its low-water mark.)
    pub fn put_outbox(&mut self, e: &OutboxEvent) -> Result<()> {
        let Some((first, mut group)) = self.outbox_group(e.seq)? else {
            return Err(Error::not_found(format!(
                "webhook event {} not found",
                e.seq
            )));
        };
        for slot in group.iter_mut().filter(|x| x.seq == e.seq) {
            self.counters.count_outbox(slot.state, false);
            self.counters.count_outbox(e.state, true);
            *slot = e.clone();
        }
        self.put(Tree::Outbox, tree::u64_key(first).to_vec(), &group);
        Ok(())
    }

    /// Deletes the outbox record keyed `first` (its first event's seq) if
    /// it expired (see [`outbox_group_expired`]); whether it did. Delivered
    /// events are in no count, so the counters stay.
    pub fn prune_outbox_group(&mut self, first: u64, cutoff_ms: i64) -> Result<bool> {
        let key = tree::u64_key(first).to_vec();
        let Some(group) = self.get::<Vec<OutboxEvent>>(Tree::Outbox, &key)? else {
            return Ok(false);
        };
        if !outbox_group_expired(&group, cutoff_ms) {
            return Ok(false);
        }
        self.del_raw(Tree::Outbox, key);
        Ok(true)
    }
}

/// Most events one outbox record holds (one command, one order).
pub const OUTBOX_GROUP_MAX: usize = 4;

/// Whether an outbox record may go by retention: every event in it was
/// delivered and created before `cutoff_ms`.
pub(crate) fn outbox_group_expired(group: &[OutboxEvent], cutoff_ms: i64) -> bool {
    group
        .iter()
        .all(|e| e.state == DeliveryState::Delivered && e.created_at_ms < cutoff_ms)
}

fn new_event(seq: u64, order_no: &str, kind: EventKind, now: i64) -> OutboxEvent {
    OutboxEvent {
        id: format!("evt_{seq:016}_{order_no}"),
        seq,
        order_no: order_no.to_string(),
        kind,
        created_at_ms: now,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_ms: now,
        retry_from_ms: now,
        last_error: None,
    }
}
