//! The shop's commands: every change to the shop's state is one of these,
//! run inside the single writer as `store.write(|tx| shop::…)` — create and
//! edit products, import and delete keys, hold keys for orders, apply
//! payments, expire holds, refund, back-fill orders that wait for stock,
//! record callback attempts and webhook deliveries, and the start-up writes.
//!
//! Each command runs in one writer [`Tx`]: all it writes becomes durable in
//! one batch or not at all, and an error leaves nothing behind. Which
//! transitions are legal is decided by [`crate::domain::order`]; these
//! modules carry them out and keep the product's key counts in step. They
//! are split by job: [`catalogue`] (products, keys, uploads), [`orders`]
//! (holds, delivery, expiry, refunds), [`coupons`] (coupons and the
//! claim of their uses), [`payments`], [`outbox`] (webhook events) and
//! [`emails`] (the e-mail outbox).

pub mod catalogue;
pub mod coupons;
pub mod emails;
pub mod key_parse;
pub mod orders;
pub mod outbox;
pub mod payments;

pub use catalogue::{
    begin_upload, create_product, delete_keys, discard_abandoned_uploads, discard_upload,
    import_keys, publish_upload, stage_keys, update_product, ImportResult, NewProduct,
    ProductPatch, SealedKey,
};
pub use coupons::{check_coupon_use, create_coupon, update_coupon, CouponPatch, NewCoupon};
pub use emails::{prune_sent_emails, record_email_attempt, requeue_email, resend_delivery};
pub use orders::{
    backfill, count_pending_holds, create_order, expire_order, prune_idempotency, redrive_paid,
    refund_order, Created, Idempotency, NewOrder,
};
pub use outbox::{prune_delivered_events, record_webhook_attempt, requeue_webhook, WebhookOutcome};
pub use payments::{
    apply_payment, payment_matches, record_callback_attempt, Payment, PaymentApplied,
};

use crate::domain::ids::printable;
use crate::domain::model::{Order, Product};
use crate::error::{Error, Result};
use crate::store::Tx;

/// Stores the master key's check value, on a shop's first start with it
/// (see `startup::verify_master_key`).
pub fn store_key_check(tx: &mut Tx, check: &[u8; 32]) -> Result<()> {
    tx.put_key_check(check);
    Ok(())
}

fn load_product(tx: &Tx, id: &str) -> Result<Product> {
    tx.product(id)?
        .ok_or_else(|| Error::not_found(format!("product {} not found", printable(id, 64))))
}

fn load_order(tx: &Tx, order_no: &str) -> Result<Order> {
    tx.order(order_no)?
        .ok_or_else(|| Error::not_found(format!("order {order_no} not found")))
}
