//! Coupon commands: the merchant creates and edits coupons; an order claims
//! a use in its own command (so the caps hold under any concurrency: the
//! writer runs one command at a time and a batch reads its own earlier
//! claims through the `Tx`), a payment turns the held use into a paid one,
//! and an expired hold gives its use back. A refund keeps the use: the
//! coupon was spent on an order the buyer received.

use crate::domain::ids::printable;
use crate::domain::model::{Order, Pricing};
use crate::domain::order::OrderStatus;
use crate::domain::pricing::{self, Coupon, CouponKind, CouponUse};
use crate::error::{Error, Result};
use crate::store::Tx;

/// A validated new coupon (see `http::coupons` for the checks).
#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub code: String,
    pub kind: CouponKind,
    pub value: u64,
    pub product_ids: Vec<String>,
    pub min_amount: u64,
    pub max_uses: Option<u64>,
    pub max_uses_per_email: Option<u64>,
    pub starts_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub active: bool,
}

/// A validated coupon edit: `None` keeps a field; for the optional ones
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct CouponPatch {
    pub kind: Option<CouponKind>,
    pub value: Option<u64>,
    pub product_ids: Option<Vec<String>>,
    pub min_amount: Option<u64>,
    pub max_uses: Option<Option<u64>>,
    pub max_uses_per_email: Option<Option<u64>>,
    pub starts_at_ms: Option<Option<i64>>,
    pub expires_at_ms: Option<Option<i64>>,
    pub active: Option<bool>,
}

pub fn create_coupon(tx: &mut Tx, c: NewCoupon) -> Result<Coupon> {
    if tx.coupon(&c.code)?.is_some() {
        return Err(Error::Conflict(format!("coupon {} already exists", c.code)));
    }
    let now = tx.now_ms();
    let coupon = Coupon {
        code: c.code,
        kind: c.kind,
        value: c.value,
        product_ids: c.product_ids,
        min_amount: c.min_amount,
        max_uses: c.max_uses,
        max_uses_per_email: c.max_uses_per_email,
        starts_at_ms: c.starts_at_ms,
        expires_at_ms: c.expires_at_ms,
        active: c.active,
        created_at_ms: now,
        updated_at_ms: now,
        uses: 0,
        held: 0,
    };
    check_coupon(&coupon)?;
    tx.put_coupon(&coupon);
    Ok(coupon)
}

pub fn update_coupon(tx: &mut Tx, code: &str, p: CouponPatch) -> Result<Coupon> {
    let mut c = tx
        .coupon(code)?
        .ok_or_else(|| Error::not_found(format!("coupon {} not found", printable(code, 32))))?;
    let was_capped = c.max_uses_per_email.is_some();
    c.kind = p.kind.unwrap_or(c.kind);
    c.value = p.value.unwrap_or(c.value);
    c.product_ids = p.product_ids.unwrap_or(c.product_ids);
    c.min_amount = p.min_amount.unwrap_or(c.min_amount);
    c.max_uses = p.max_uses.unwrap_or(c.max_uses);
    c.max_uses_per_email = p.max_uses_per_email.unwrap_or(c.max_uses_per_email);
    c.starts_at_ms = p.starts_at_ms.unwrap_or(c.starts_at_ms);
    c.expires_at_ms = p.expires_at_ms.unwrap_or(c.expires_at_ms);
    c.active = p.active.unwrap_or(c.active);
    c.updated_at_ms = tx.now_ms();
    check_coupon(&c)?;
    // Buyers' counts exist only while a coupon has the cap (see `claim`):
    // one added after its first order would start from uses it never saw.
    if !was_capped && c.max_uses_per_email.is_some() && (c.uses > 0 || c.held > 0) {
        return Err(Error::invalid(
            "max_uses_per_email",
            "can be added only to a coupon no order has used yet; create a new coupon instead",
        ));
    }
    tx.put_coupon(&c);
    Ok(c)
}

/// The checks that span fields (an edit may change the kind alone).
fn check_coupon(c: &Coupon) -> Result<()> {
    let value_ok = match c.kind {
        CouponKind::Percent => (1..=100).contains(&c.value),
        CouponKind::Fixed => c.value >= 1,
    };
    if !value_ok {
        return Err(Error::invalid(
            "value",
            "a percent coupon's value is 1 to 100; a fixed one's at least 1",
        ));
    }
    if let (Some(s), Some(e)) = (c.starts_at_ms, c.expires_at_ms) {
        if e <= s {
            return Err(Error::invalid("expires_at", "must be after starts_at"));
        }
    }
    Ok(())
}

/// The coupon `code` if it applies to an order of `product_id` by `email`
/// priced `before` at `now_ms`; `invalid_coupon` saying why otherwise.
/// Shared by the order (in the writer) and the quote (from a read), which
/// pass what they read the coupon and the buyer's count from.
pub fn check_coupon_use(coupon: Option<Coupon>, code: &str, u: CouponUse<'_>) -> Result<Coupon> {
    let c = coupon.ok_or_else(|| {
        Error::InvalidCoupon(format!("coupon {} is unknown", printable(code, 32)))
    })?;
    match pricing::refusal(&c, u) {
        Some(why) => Err(Error::InvalidCoupon(why)),
        None => Ok(c),
    }
}

/// Claims one use of coupon `code` for a new order and returns the order's
/// price with its discount. Runs inside `create_order`'s command: if the
/// order fails later (no stock), the claim is rolled back with it.
pub(super) fn claim(
    tx: &mut Tx,
    code: &str,
    product_id: &str,
    email: &str,
    before: Pricing,
) -> Result<Pricing> {
    let coupon = tx.coupon(code)?;
    // Buyers' counts are kept only for a coupon with a per-e-mail cap: the
    // common coupon costs the order no row of its own (a new row in a new
    // place is what sled charges the commit thread most for).
    let capped = coupon
        .as_ref()
        .is_some_and(|c| c.max_uses_per_email.is_some());
    let email_uses = match capped {
        true => tx.coupon_email_uses(code, email)?,
        false => 0,
    };
    let u = CouponUse {
        product_id,
        subtotal: before.subtotal,
        now_ms: tx.now_ms(),
        email_uses,
    };
    let mut c = check_coupon_use(coupon, code, u)?;
    c.held += 1;
    tx.put_coupon(&c);
    if capped {
        tx.put_coupon_email_uses(&c.code, email, email_uses + 1);
    }
    Ok(before.with_coupon(&c))
}

/// Keeps the coupon's counts in step with `order` leaving status `from`:
/// a paid pending order's use goes from held to used, an expired one's is
/// given back, and a late payment of an expired order takes a use again
/// (money was taken at that price, so it is honoured past `max_uses`).
pub(super) fn follow_order(tx: &mut Tx, order: &Order, from: OrderStatus) -> Result<()> {
    let Some(code) = &order.pricing.coupon else {
        return Ok(());
    };
    // Coupons are never deleted; a missing one has nothing to count.
    let Some(mut c) = tx.coupon(code)? else {
        return Ok(());
    };
    let (held, uses, email) = match (from, order.status) {
        (OrderStatus::Pending, OrderStatus::Expired) => (-1, 0, -1),
        (OrderStatus::Pending, OrderStatus::Paid) => (-1, 1, 0),
        (OrderStatus::Expired, OrderStatus::Paid) => (0, 1, 1),
        _ => return Ok(()),
    };
    c.held = c.held.saturating_add_signed(held);
    c.uses = c.uses.saturating_add_signed(uses);
    tx.put_coupon(&c);
    // A payment of a pending order leaves the buyer's count as it is: the
    // common case reads and writes no row for it.
    if email != 0 && c.max_uses_per_email.is_some() {
        let n = tx.coupon_email_uses(code, &order.email)?;
        tx.put_coupon_email_uses(code, &order.email, n.saturating_add_signed(email));
    }
    Ok(())
}
