//! E-mail commands: the e-mails a change causes are queued in the e-mail
//! outbox in the same batch as the change (delivery and waiting-for-stock
//! to the buyer; waiting-for-stock, low stock and a dead webhook to the
//! merchant), the senders record each attempt here with the webhooks'
//! back-off, and the merchant re-queues a dead e-mail. A buyer's resend
//! request queues the delivery e-mail again.

use super::outbox::{apply_outcome, Retry, WebhookOutcome};
use crate::domain::model::{
    DeliveryState, EmailEvent, EmailKind, EmailTo, EventKind, Order, Product,
};
use crate::domain::order::OrderStatus;
use crate::error::{Error, Result};
use crate::store::{EmailAbout, Tx};

fn about_order(order: &Order) -> EmailAbout {
    EmailAbout {
        order_no: Some(order.order_no.clone()),
        ..EmailAbout::default()
    }
}

/// Queues the e-mails an order event causes, as configured.
pub(super) fn queue_for_event(tx: &mut Tx, order: &Order, kind: EventKind) -> Result<()> {
    let mailing = tx.mailing;
    match kind {
        EventKind::Delivered if mailing.buyer => tx.queue_email(
            EmailKind::OrderDelivered,
            EmailTo::Buyer,
            about_order(order),
        ),
        EventKind::AwaitingStock => {
            if mailing.buyer {
                let about = about_order(order);
                tx.queue_email(EmailKind::OrderAwaitingStock, EmailTo::Buyer, about)?;
            }
            if mailing.merchant {
                let about = about_order(order);
                tx.queue_email(EmailKind::OrderAwaitingStock, EmailTo::Merchant, about)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Follows a product's available count after a change to it: the first
/// fall below its `low_stock` threshold alerts the merchant once; the flag
/// that says so is cleared when stock is back at or above the threshold,
/// so the next fall alerts again.
pub(super) fn watch_stock(tx: &mut Tx, product: &Product) -> Result<()> {
    let threshold = product.presentation.low_stock;
    if !tx.mailing.merchant || threshold == 0 {
        return Ok(());
    }
    let below = product.counts.available < threshold;
    if below == tx.low_stock_alerted(&product.id)? {
        return Ok(());
    }
    tx.set_low_stock_alerted(&product.id, below);
    if below {
        let about = EmailAbout {
            product_id: Some(product.id.clone()),
            ..EmailAbout::default()
        };
        tx.queue_email(EmailKind::StockLow, EmailTo::Merchant, about)?;
    }
    Ok(())
}

/// Tells the merchant that webhook event `event_id` of `order_no` is dead.
pub(super) fn webhook_dead(tx: &mut Tx, order_no: &str, event_id: &str) -> Result<()> {
    if !tx.mailing.merchant {
        return Ok(());
    }
    let about = EmailAbout {
        order_no: Some(order_no.to_string()),
        detail: Some(event_id.to_string()),
        ..EmailAbout::default()
    };
    tx.queue_email(EmailKind::WebhookDead, EmailTo::Merchant, about)
}

/// A buyer asks for the delivery e-mail again: queued when `email` is the
/// order's (ignoring case) and the order is delivered; whether it was. The
/// caller answers the same either way.
pub fn resend_delivery(tx: &mut Tx, order_no: &str, email: &str) -> Result<bool> {
    let Some(order) = tx.order(order_no)? else {
        return Ok(false);
    };
    if !tx.mailing.buyer
        || order.status != OrderStatus::Delivered
        || !order.email.eq_ignore_ascii_case(email)
    {
        return Ok(false);
    }
    tx.queue_email(
        EmailKind::OrderDelivered,
        EmailTo::Buyer,
        about_order(&order),
    )?;
    Ok(true)
}

/// Records a send attempt's outcome on e-mail `seq`: sent, or failed and due
/// again after a back-off, or dead once it has failed for `give_up_ms`.
pub fn record_email_attempt(
    tx: &mut Tx,
    seq: u64,
    outcome: WebhookOutcome,
    base_ms: u64,
    give_up_ms: i64,
) -> Result<()> {
    let Some(mut e) = tx.email(seq)? else {
        return Ok(());
    };
    if e.state != DeliveryState::Pending {
        return Ok(());
    }
    let now = tx.now_ms();
    apply_outcome(retry_of(&mut e), outcome, now, base_ms, give_up_ms);
    tx.put_email(&e)
}

fn retry_of(e: &mut EmailEvent) -> Retry<'_> {
    Retry {
        state: &mut e.state,
        attempts: &mut e.attempts,
        next_attempt_ms: &mut e.next_attempt_ms,
        retry_from_ms: e.retry_from_ms,
        last_error: &mut e.last_error,
    }
}

/// Re-queues a dead e-mail (the merchant's retry).
pub fn requeue_email(tx: &mut Tx, seq: u64) -> Result<EmailEvent> {
    let mut e = tx
        .email(seq)?
        .ok_or_else(|| Error::not_found(format!("e-mail {seq} not found")))?;
    if e.state != DeliveryState::Dead {
        return Err(Error::Conflict(format!(
            "e-mail is {}, only dead e-mails are retried",
            e.state.as_str()
        )));
    }
    let now = tx.now_ms();
    e.state = DeliveryState::Pending;
    e.retry_from_ms = now;
    e.next_attempt_ms = now;
    tx.put_email(&e)?;
    Ok(e)
}

/// Retention: deletes the e-mail records keyed by `firsts` (each a group's
/// first seq) whose e-mails were all sent and made before `cutoff_ms`; how
/// many records.
pub fn prune_sent_emails(tx: &mut Tx, firsts: &[u64], cutoff_ms: i64) -> Result<usize> {
    let mut pruned = 0;
    for &first in firsts {
        pruned += usize::from(tx.prune_email_record(first, cutoff_ms)?);
    }
    Ok(pruned)
}
