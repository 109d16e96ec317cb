//! Payment commands: the one path every payment takes ([`apply_payment`]),
//! the pure check a payment must pass against its order
//! ([`payment_matches`], also what a refused callback is checked with), and
//! the audit of callbacks that changed nothing.

use super::orders::{claim_or_await, deliver_held};
use super::outbox::emit;
use super::{coupons, load_order};
use crate::domain::ids::{printable, Gateway};
use crate::domain::model::{EventKind, Order, PaySession, PaymentAttempt};
use crate::domain::order::{self, OrderStatus, PaymentSource, PaymentStep};
use crate::error::{Error, Result};
use crate::store::Tx;

/// A verified payment, from a gateway callback or the merchant's 补单.
#[derive(Debug, Clone)]
pub struct Payment {
    pub order_no: String,
    /// The gateway that reports the payment (`manual` for 补单).
    pub gateway: Gateway,
    pub trade_no: String,
    /// The amount the gateway reports; `None` for 补单 (exactly the order's).
    pub amount: Option<u64>,
    pub source: PaymentSource,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PaymentApplied {
    pub order: Order,
    pub step: PaymentStep,
}

/// The one path every payment takes. Checks (after the caller verified the
/// signature): the order exists, was created for this gateway, the amount is
/// exact; then the state machine decides, and delivery happens in the same
/// durable batch as the payment.
pub fn apply_payment(tx: &mut Tx, p: Payment) -> Result<PaymentApplied> {
    let mut order = load_order(tx, &p.order_no)?;
    let amount = payment_matches(&order, &p)?;
    let gw = p.gateway.as_str();
    let applied_to = tx.payment_order(gw, &p.trade_no)?;
    if let Some(other) = &applied_to {
        if other != &order.order_no {
            return Err(Error::Conflict(format!(
                "trade_no {} was already applied to another order",
                printable(&p.trade_no, 64)
            )));
        }
    }
    let step = order::on_payment(order.status, p.source, applied_to.is_some())
        .map_err(|r| Error::Conflict(r.to_string()))?;
    let now = tx.now_ms();
    match step {
        PaymentStep::Repeat => {}
        PaymentStep::SecondPayment => {
            let e = order.record(now, EventKind::SecondPayment);
            e.gateway = Some(gw.to_string());
            e.trade_no = Some(p.trade_no.clone());
            e.amount = Some(amount);
            e.note = Some(
                "a second payment for an order already paid: refund it, unless it is the late \
                 callback of money already confirmed by a manual payment"
                    .into(),
            );
            tx.record_payment(gw, &p.trade_no, &order.order_no);
            tx.put_order(&order);
        }
        PaymentStep::DeliverHeld => {
            mark_paid(tx, &mut order, &Paid::of(&p, amount), now)?;
            tx.unschedule_expiry(&order);
            deliver_held(tx, &mut order, now)?;
        }
        PaymentStep::ClaimOrAwait => {
            mark_paid(tx, &mut order, &Paid::of(&p, amount), now)?;
            claim_or_await(tx, &mut order, now)?;
        }
    }
    Ok(PaymentApplied { order, step })
}

/// Whether payment `p` may be applied to `order`: a callback must come from
/// the gateway the order was created for, and the amount must be exactly
/// the order's (补单 carries none: it is the order's). Returns the amount.
/// Pure, so a callback the gateway reports as failed is refused with the
/// same errors as one it reports as paid.
pub fn payment_matches(order: &Order, p: &Payment) -> Result<u64> {
    if p.source == PaymentSource::Callback && order.gateway != p.gateway.as_str() {
        return Err(Error::GatewayMismatch(format!(
            "order {} was created for gateway {}, not {}",
            order.order_no,
            order.gateway,
            p.gateway.as_str()
        )));
    }
    let amount = p.amount.unwrap_or(order.amount);
    if amount != order.amount {
        return Err(Error::AmountMismatch(format!(
            "order {} is {} but the payment is {}",
            order.order_no, order.amount, amount
        )));
    }
    Ok(amount)
}

/// Records a verified callback that changed nothing (a repeat, or a refusal
/// by a later check) beside its order, for the merchant's order detail;
/// `seen` is how many of the order's events were in place when it was
/// decided. False when the order already keeps as many attempts as it may.
pub fn record_callback_attempt(
    tx: &mut Tx,
    order_no: &str,
    attempt: &PaymentAttempt,
    seen: u32,
) -> Result<bool> {
    match tx.order(order_no)? {
        Some(_) => tx.record_attempt(order_no, attempt, seen),
        None => Ok(true),
    }
}

/// Keeps the provider's payment session on an order that has none, and
/// returns the order's session: the one given, or the one an earlier start
/// stored, so two starts that raced end with one session.
pub fn keep_pay_session(tx: &mut Tx, order_no: &str, session: PaySession) -> Result<PaySession> {
    let mut order = load_order(tx, order_no)?;
    if let Some(kept) = &order.pay_session {
        return Ok(kept.clone());
    }
    order.pay_session = Some(session.clone());
    tx.put_order(&order);
    Ok(session)
}

/// What a payment records on its order.
struct Paid<'a> {
    gateway: &'a str,
    trade_no: &'a str,
    amount: u64,
    note: Option<String>,
}

impl<'a> Paid<'a> {
    fn of(p: &'a Payment, amount: u64) -> Paid<'a> {
        Paid {
            gateway: p.gateway.as_str(),
            trade_no: &p.trade_no,
            amount,
            note: p.note.clone(),
        }
    }
}

/// The gateway a free order's payment is recorded with.
pub const FREE_GATEWAY: &str = "free";

/// Pays a new order whose amount is 0 and delivers its held keys, in the
/// command that created it: recorded as a payment through gateway `free`
/// (trade_no: the order number), with the same events and webhooks as a
/// paid order.
pub(super) fn pay_free(tx: &mut Tx, order: &mut Order) -> Result<()> {
    let now = tx.now_ms();
    let trade_no = order.order_no.clone();
    let paid = Paid {
        gateway: FREE_GATEWAY,
        trade_no: &trade_no,
        amount: 0,
        note: None,
    };
    mark_paid(tx, order, &paid, now)?;
    deliver_held(tx, order, now)
}

fn mark_paid(tx: &mut Tx, order: &mut Order, p: &Paid<'_>, now: i64) -> Result<()> {
    let from = order.status;
    order.status = OrderStatus::Paid;
    order.paid_at_ms = Some(now);
    order.paid_gateway = Some(p.gateway.to_string());
    order.trade_no = Some(p.trade_no.to_string());
    let e = order.record(now, EventKind::Paid);
    e.gateway = Some(p.gateway.to_string());
    e.trade_no = Some(p.trade_no.to_string());
    e.amount = Some(p.amount);
    e.note = p.note.clone();
    tx.record_payment(p.gateway, p.trade_no, &order.order_no);
    emit(tx, order, EventKind::Paid)?;
    coupons::follow_order(tx, order, from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(gateway: Gateway, source: PaymentSource, amount: Option<u64>) -> Payment {
        Payment {
            order_no: "F1".into(),
            gateway,
            trade_no: "T1".into(),
            amount,
            source,
            note: None,
        }
    }

    /// A callback must come from the order's gateway and carry exactly its
    /// amount; 补单 may come for any order and takes the order's amount.
    #[test]
    fn a_payment_matches_only_its_orders_gateway_and_exact_amount() {
        let mut order = Order::pending_for_test("F1", "b@x.com", "10.0.0.1", 1);
        order.gateway = "hmac".into();
        order.amount = 500;
        let cb = PaymentSource::Callback;
        let ok = payment_matches(&order, &payment(Gateway::Hmac, cb, Some(500)));
        assert_eq!(ok.unwrap(), 500);
        let other = payment_matches(&order, &payment(Gateway::Epay, cb, Some(500)));
        assert_eq!(other.unwrap_err().code(), "gateway_mismatch");
        for wrong in [499, 501, 0] {
            let e = payment_matches(&order, &payment(Gateway::Hmac, cb, Some(wrong)));
            assert_eq!(e.unwrap_err().code(), "amount_mismatch", "{wrong}");
        }
        let manual = payment(Gateway::Manual, PaymentSource::Manual, None);
        assert_eq!(payment_matches(&order, &manual).unwrap(), 500);
    }
}
