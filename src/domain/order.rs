//! The order state machine: the one place that decides which transitions are
//! legal. Pure functions over typed states, no I/O; the writer's workflows in
//! [`super::shop`] call these and never re-decide.
//!
//! ```text
//! pending ──pay──► paid ──deliver──► delivered ──refund──► refunded
//!    │                 └─no keys──► awaiting_stock ──backfill──► delivered
//!    └─expire──► expired ──late pay──► paid (claims fresh keys)
//!                                        awaiting_stock ──refund──► refunded
//! ```

use serde::{Deserialize, Serialize};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    Pending,
    Paid,
    Delivered,
    Expired,
    AwaitingStock,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Delivered,
        OrderStatus::Expired,
        OrderStatus::AwaitingStock,
        OrderStatus::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Expired => "expired",
            OrderStatus::AwaitingStock => "awaiting_stock",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// Position in [`OrderStatus::ALL`] (the order of per-status counts).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether money has been received for an order in this state.
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::Delivered
                | OrderStatus::AwaitingStock
                | OrderStatus::Refunded
        )
    }

    /// Whether the order owns held keys in this state.
    pub fn holds_keys(self) -> bool {
        matches!(self, OrderStatus::Pending | OrderStatus::Paid)
    }
}

/// How a payment reached faka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentSource {
    /// A verified gateway callback.
    Callback,
    /// The merchant's 补单 through the admin API.
    Manual,
}

/// What to do with a verified payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStep {
    /// Pending order: mark paid and deliver the keys it holds.
    DeliverHeld,
    /// Expired order (late payment): mark paid, claim fresh keys if enough
    /// are available, otherwise wait for stock.
    ClaimOrAwait,
    /// The same gateway + trade_no was already applied: change nothing.
    Repeat,
    /// A different payment for an order that is already paid: record it on
    /// the order's events for refund, change nothing else.
    SecondPayment,
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub from: OrderStatus,
    pub action: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {} an order that is {}",
            self.action,
            self.from.as_str()
        )
    }
}

fn refuse(from: OrderStatus, action: &'static str) -> Refused {
    Refused { from, action }
}

/// Decides what a payment does. `already_applied` is true when this gateway's
/// `trade_no` was applied to this order before.
pub fn on_payment(
    from: OrderStatus,
    source: PaymentSource,
    already_applied: bool,
) -> Result<PaymentStep, Refused> {
    match (source, from) {
        (PaymentSource::Callback, _) if already_applied => Ok(PaymentStep::Repeat),
        (_, OrderStatus::Pending) => Ok(PaymentStep::DeliverHeld),
        (_, OrderStatus::Expired) => Ok(PaymentStep::ClaimOrAwait),
        (PaymentSource::Callback, _) => Ok(PaymentStep::SecondPayment),
        (PaymentSource::Manual, s) => Err(refuse(s, "manually pay")),
    }
}

/// A pending order whose hold has run out expires; nothing else does.
pub fn on_expire(from: OrderStatus, expires_at_ms: i64, now_ms: i64) -> Result<(), Refused> {
    match from {
        OrderStatus::Pending if now_ms >= expires_at_ms => Ok(()),
        s => Err(refuse(s, "expire")),
    }
}

/// A paid order gets its keys: `paid → delivered`.
pub fn on_deliver(from: OrderStatus) -> Result<(), Refused> {
    match from {
        OrderStatus::Paid => Ok(()),
        s => Err(refuse(s, "deliver")),
    }
}

/// A paid order with too few keys waits: `paid → awaiting_stock`.
pub fn on_await_stock(from: OrderStatus) -> Result<(), Refused> {
    match from {
        OrderStatus::Paid => Ok(()),
        s => Err(refuse(s, "wait for stock for")),
    }
}

/// Imported keys reach a waiting order: `awaiting_stock → delivered`.
pub fn on_backfill(from: OrderStatus) -> Result<(), Refused> {
    match from {
        OrderStatus::AwaitingStock => Ok(()),
        s => Err(refuse(s, "back-fill")),
    }
}

/// The merchant refunds: only `delivered` and `awaiting_stock` orders.
pub fn on_refund(from: OrderStatus) -> Result<(), Refused> {
    match from {
        OrderStatus::Delivered | OrderStatus::AwaitingStock => Ok(()),
        s => Err(refuse(s, "refund")),
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::PaymentSource::*;
    use super::*;

    #[test]
    fn paying_a_pending_order_delivers_its_held_keys() {
        assert_eq!(
            on_payment(Pending, Callback, false),
            Ok(PaymentStep::DeliverHeld)
        );
        assert_eq!(
            on_payment(Pending, Manual, false),
            Ok(PaymentStep::DeliverHeld)
        );
    }

    #[test]
    fn a_late_payment_claims_fresh_keys_or_waits() {
        assert_eq!(
            on_payment(Expired, Callback, false),
            Ok(PaymentStep::ClaimOrAwait)
        );
        assert_eq!(
            on_payment(Expired, Manual, false),
            Ok(PaymentStep::ClaimOrAwait)
        );
    }

    /// Per-status counts are kept by `index`, listed by `ALL`.
    #[test]
    fn index_is_the_position_in_all() {
        for (i, s) in OrderStatus::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i, "{s:?}");
        }
    }

    /// Money was received exactly from `paid` on (what `faka check` holds a
    /// payment record to); keys are held exactly while pending or paid.
    #[test]
    fn paid_states_and_key_holding_states() {
        for s in OrderStatus::ALL {
            assert_eq!(
                s.is_paid(),
                matches!(s, Paid | Delivered | AwaitingStock | Refunded),
                "{s:?}"
            );
            assert_eq!(s.holds_keys(), matches!(s, Pending | Paid), "{s:?}");
        }
    }

    #[test]
    fn a_repeated_callback_changes_nothing_in_any_state() {
        for s in OrderStatus::ALL {
            assert_eq!(
                on_payment(s, Callback, true),
                Ok(PaymentStep::Repeat),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_second_callback_payment_on_a_paid_order_is_recorded() {
        for s in [Paid, Delivered, AwaitingStock, Refunded] {
            assert_eq!(
                on_payment(s, Callback, false),
                Ok(PaymentStep::SecondPayment),
                "{s:?}"
            );
        }
    }

    #[test]
    fn manual_payment_of_a_paid_order_is_refused() {
        for s in [Paid, Delivered, AwaitingStock, Refunded] {
            for applied in [false, true] {
                let r = on_payment(s, Manual, applied);
                assert_eq!(
                    r,
                    Err(Refused {
                        from: s,
                        action: "manually pay"
                    }),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn only_a_pending_order_past_its_hold_expires() {
        assert_eq!(on_expire(Pending, 100, 100), Ok(()));
        assert_eq!(on_expire(Pending, 100, 250), Ok(()));
        assert!(on_expire(Pending, 100, 99).is_err());
        for s in [Paid, Delivered, Expired, AwaitingStock, Refunded] {
            assert!(on_expire(s, 0, 1_000).is_err(), "{s:?}");
        }
    }

    #[test]
    fn only_paid_orders_are_delivered_or_wait() {
        for s in OrderStatus::ALL {
            assert_eq!(on_deliver(s).is_ok(), s == Paid, "{s:?}");
            assert_eq!(on_await_stock(s).is_ok(), s == Paid, "{s:?}");
        }
    }

    #[test]
    fn only_waiting_orders_are_backfilled() {
        for s in OrderStatus::ALL {
            assert_eq!(on_backfill(s).is_ok(), s == AwaitingStock, "{s:?}");
        }
    }

    #[test]
    fn only_delivered_or_waiting_orders_are_refunded() {
        for s in OrderStatus::ALL {
            assert_eq!(
                on_refund(s).is_ok(),
                matches!(s, Delivered | AwaitingStock),
                "{s:?}"
            );
        }
    }

    #[test]
    fn statuses_round_trip_their_names() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("bogus"), None);
    }

    #[test]
    fn refusals_read_as_sentences() {
        assert_eq!(
            on_refund(Pending).unwrap_err().to_string(),
            "cannot refund an order that is pending"
        );
    }
}
