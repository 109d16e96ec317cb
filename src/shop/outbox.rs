//! Outbox commands: webhook events are written in the same batch as the
//! change they report ([`emit`]); the delivery workers record each
//! attempt's outcome and the merchant re-queues dead events here; retention
//! prunes delivered ones. The retry bookkeeping here is shared with the
//! e-mail outbox (`emails`).

use crate::domain::model::{DeliveryState, EventKind, Order, OutboxEvent};
use crate::error::{Error, Result};
use crate::store::Tx;
use rand::Rng;

/// Writes an order event's outbound webhook event (when webhooks are
/// configured) and the e-mails it causes into the outboxes, in the same
/// batch as the change it reports.
pub(super) fn emit(tx: &mut Tx, order: &Order, kind: EventKind) -> Result<()> {
    if tx.webhooks && kind.webhook_type().is_some() {
        tx.emit_event(&order.order_no, kind);
    }
    super::emails::queue_for_event(tx, order, kind)
}

/// Retention: deletes the outbox records among `groups` (their first
/// event's seq) whose events were all delivered and made before
/// `cutoff_ms`; how many.
pub fn prune_delivered_events(tx: &mut Tx, groups: &[u64], cutoff_ms: i64) -> Result<usize> {
    let mut pruned = 0;
    for &first in groups {
        pruned += usize::from(tx.prune_outbox_group(first, cutoff_ms)?);
    }
    Ok(pruned)
}

/// Delay before attempt `attempts + 1`: base × 2^(attempts−1), ±20 % jitter,
/// at most an hour.
fn backoff_ms(base_ms: u64, attempts: u32) -> i64 {
    let exp = base_ms.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(3_600_000) as f64;
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    (capped * jitter) as i64
}

/// What one send attempt (a webhook's POST, an e-mail's SMTP session) did.
#[derive(Debug, Clone)]
pub enum WebhookOutcome {
    Delivered,
    Failed(String),
}

/// The retry bookkeeping webhook events and e-mails share.
pub(super) struct Retry<'a> {
    pub state: &'a mut DeliveryState,
    pub attempts: &'a mut u32,
    pub next_attempt_ms: &'a mut i64,
    pub retry_from_ms: i64,
    pub last_error: &'a mut Option<String>,
}

/// Counts an attempt: delivered, or failed and due again after a back-off
/// (from `base_ms`), or dead once it has failed for `give_up_ms`.
pub(super) fn apply_outcome(
    r: Retry,
    outcome: WebhookOutcome,
    now: i64,
    base_ms: u64,
    give_up_ms: i64,
) {
    *r.attempts += 1;
    match outcome {
        WebhookOutcome::Delivered => {
            *r.state = DeliveryState::Delivered;
            *r.last_error = None;
        }
        WebhookOutcome::Failed(reason) => {
            *r.last_error = Some(reason);
            if now - r.retry_from_ms >= give_up_ms {
                *r.state = DeliveryState::Dead;
            } else {
                *r.next_attempt_ms = now + backoff_ms(base_ms, *r.attempts);
            }
        }
    }
}

/// Records a delivery attempt's outcome on its event (see
/// [`apply_outcome`]); a webhook event that dies is reported to the
/// merchant by e-mail, when configured.
pub fn record_webhook_attempt(
    tx: &mut Tx,
    seq: u64,
    outcome: WebhookOutcome,
    base_ms: u64,
    give_up_ms: i64,
) -> Result<()> {
    let Some(mut e) = tx.outbox(seq)? else {
        return Ok(());
    };
    if e.state != DeliveryState::Pending {
        return Ok(());
    }
    let now = tx.now_ms();
    let retry = Retry {
        state: &mut e.state,
        attempts: &mut e.attempts,
        next_attempt_ms: &mut e.next_attempt_ms,
        retry_from_ms: e.retry_from_ms,
        last_error: &mut e.last_error,
    };
    apply_outcome(retry, outcome, now, base_ms, give_up_ms);
    if e.state == DeliveryState::Dead {
        super::emails::webhook_dead(tx, &e.order_no, &e.id)?;
    }
    tx.put_outbox(&e)
}

/// Re-queues a dead event (the merchant's retry).
pub fn requeue_webhook(tx: &mut Tx, seq: u64) -> Result<OutboxEvent> {
    let mut e = tx
        .outbox(seq)?
        .ok_or_else(|| Error::not_found(format!("webhook event {seq} not found")))?;
    if e.state != DeliveryState::Dead {
        return Err(Error::Conflict(format!(
            "webhook event is {}, only dead events are retried",
            e.state.as_str()
        )));
    }
    e.state = DeliveryState::Pending;
    e.retry_from_ms = tx.now_ms();
    e.next_attempt_ms = tx.now_ms();
    tx.put_outbox(&e)?;
    Ok(e)
}
