//! Order commands: create an order holding its keys, deliver, expire an
//! unpaid hold, refund, back-fill orders waiting for stock, re-drive a paid
//! order at start-up, and forget old idempotency records.

use super::emails::watch_stock;
use super::outbox::emit;
use super::{coupons, load_order, load_product};
use crate::domain::ids::{printable, Gateway};
use crate::domain::model::{EventKind, IdempotencyRecord, KeyState, Order};
use crate::domain::order::{self, OrderStatus};
use crate::domain::pricing;
use crate::error::{Error, Result};
use crate::store::Tx;

/// A validated order request, with the values the HTTP layer fixed up front
/// (number, token hash, times) so it can render and seal the response.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order_no: String,
    pub product_id: String,
    pub quantity: u32,
    pub email: String,
    pub gateway: Gateway,
    pub token_hash: [u8; 32],
    pub query_password_hash: Option<[u8; 32]>,
    /// Argon2 PHC string of the query password (hashed before the write).
    pub query_password_phc: Option<String>,
    pub pay_type: Option<String>,
    pub client_ip: Option<String>,
    pub created_at_ms: i64,
    pub hold_ms: i64,
    pub idempotency: Option<Idempotency>,
    /// Caps on unpaid orders per client IP and per e-mail (0 = none).
    pub max_pending_per_ip: u32,
    pub max_pending_per_email: u32,
    /// The coupon code the buyer gave, as given.
    pub coupon: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key_hash: [u8; 32],
    pub fingerprint: [u8; 32],
}

/// What order creation produced.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new order holding its keys.
    New(Box<Order>),
    /// A repeat of an earlier request with the same `Idempotency-Key`: the
    /// first response, sealed, to be answered verbatim.
    Replay(Vec<u8>),
}

/// Creates an order and holds `quantity` keys for it, all or nothing,
/// priced by the product's tiers and the buyer's coupon (whose use it
/// claims); an order that comes to 0 is delivered at once. When
/// an `Idempotency-Key` was given, `seal_response` renders and seals the
/// response, which is stored for repeats.
pub fn create_order(
    tx: &mut Tx,
    req: NewOrder,
    seal_response: impl FnOnce(&Order) -> Vec<u8>,
) -> Result<Created> {
    if let Some(idem) = &req.idempotency {
        if let Some(prev) = tx.idempotency(&idem.key_hash)? {
            if prev.fingerprint != idem.fingerprint {
                return Err(Error::Conflict(
                    "Idempotency-Key was already used with a different request body".into(),
                ));
            }
            return Ok(Created::Replay(prev.sealed_response));
        }
    }
    let mut product = tx
        .product(&req.product_id)?
        .filter(|p| p.active)
        .ok_or_else(|| {
            Error::not_found(format!(
                "product {} not found",
                printable(&req.product_id, 64)
            ))
        })?;
    if req.quantity < product.min_quantity || req.quantity > product.max_quantity {
        return Err(Error::invalid(
            "quantity",
            format!(
                "must be between {} and {}",
                product.min_quantity, product.max_quantity
            ),
        ));
    }
    let mut price =
        pricing::price_before_coupon(product.price, &product.presentation.tiers, req.quantity)
            .ok_or_else(|| Error::invalid("quantity", "order amount is too large"))?;
    check_hold_caps(tx, &req)?;
    if let Some(code) = &req.coupon {
        // Claimed with the keys below: if they are missing, the command
        // fails and the claim is rolled back with it.
        price = coupons::claim(tx, code, &product.id, &req.email, price)?;
    }
    if tx.stock_is_spoken_for(&req.product_id)? {
        // A paid buyer waits for keys: whatever is in stock is theirs
        // first, and no new order may hold it meanwhile.
        return Err(Error::OutOfStock(format!(
            "paid orders are waiting for product {}'s next keys",
            product.id
        )));
    }
    let Some(key_ids) = tx.available_keys(&req.product_id, req.quantity as usize)? else {
        return Err(Error::OutOfStock(format!(
            "only {} keys left for product {}",
            product.counts.available, product.id
        )));
    };
    for &id in &key_ids {
        tx.swap_key_state(
            id,
            &KeyState::Available,
            KeyState::Held {
                order_no: req.order_no.clone(),
            },
        )?;
    }
    product.counts.available -= req.quantity as u64;
    product.counts.held += req.quantity as u64;
    tx.put_product(&product);
    watch_stock(tx, &product)?;

    let seq = tx.next_order_seq();
    let mut order = Order {
        order_no: req.order_no,
        seq,
        product_id: req.product_id,
        quantity: req.quantity,
        amount: price.amount(),
        email: req.email,
        gateway: req.gateway.as_str().to_string(),
        token_hash: req.token_hash,
        query_password_hash: req.query_password_hash,
        status: OrderStatus::Pending,
        created_at_ms: req.created_at_ms,
        expires_at_ms: req.created_at_ms + req.hold_ms,
        paid_at_ms: None,
        delivered_at_ms: None,
        refunded_at_ms: None,
        key_ids,
        paid_gateway: None,
        trade_no: None,
        client_ip: req.client_ip,
        events: Vec::new(),
        pricing: price,
        pay_type: req.pay_type,
        query_password_phc: req.query_password_phc,
        pay_session: None,
    };
    if tx.order(&order.order_no)?.is_some() {
        return Err(Error::unavailable("order number collision, try again"));
    }
    order.record(req.created_at_ms, EventKind::Created);
    tx.insert_order(&order);
    if order.query_password_phc.is_some() {
        // Only orders a password protects can be looked up by e-mail.
        tx.index_order_email(&order.email, &order.order_no);
    }
    if order.amount == 0 {
        // Nothing to pay: delivered at once, as a paid order would be.
        super::payments::pay_free(tx, &mut order)?;
    } else {
        tx.schedule_expiry(&order);
    }
    if let Some(idem) = req.idempotency {
        tx.put_idempotency(
            &idem.key_hash,
            &IdempotencyRecord {
                fingerprint: idem.fingerprint,
                order_no: order.order_no.clone(),
                sealed_response: seal_response(&order),
                created_at_ms: req.created_at_ms,
            },
        );
    }
    Ok(Created::New(Box::new(order)))
}

/// A reservation flood from one address or e-mail must not empty a product:
/// refuse new holds past the caps until earlier orders are paid or expire.
fn check_hold_caps(tx: &mut Tx, req: &NewOrder) -> Result<()> {
    let mut capped = |kind: &str, who: &str, cap: u32| -> Result<()> {
        if cap > 0 && tx.pending_holds(kind, who)? >= cap as u64 {
            return Err(Error::RateLimited {
                message: format!(
                    "{cap} unpaid orders are already waiting for this {kind}; pay or let them expire first"
                ),
                retry_after: std::time::Duration::from_secs(60),
            });
        }
        Ok(())
    };
    capped("email", &req.email, req.max_pending_per_email)?;
    if let Some(ip) = &req.client_ip {
        capped("ip", ip, req.max_pending_per_ip)?;
    }
    Ok(())
}

/// `paid → delivered` with the keys the order holds.
pub(super) fn deliver_held(tx: &mut Tx, order: &mut Order, now: i64) -> Result<()> {
    order::on_deliver(order.status).map_err(|r| Error::Conflict(r.to_string()))?;
    let held = KeyState::Held {
        order_no: order.order_no.clone(),
    };
    for &id in &order.key_ids {
        tx.swap_key_state(
            id,
            &held,
            KeyState::Sold {
                order_no: order.order_no.clone(),
            },
        )?;
    }
    let mut product = load_product(tx, &order.product_id)?;
    let n = order.key_ids.len() as u64;
    product.counts.held -= n;
    product.counts.sold += n;
    tx.put_product(&product);
    finish_delivery(tx, order, now)
}

fn finish_delivery(tx: &mut Tx, order: &mut Order, now: i64) -> Result<()> {
    order.status = OrderStatus::Delivered;
    order.delivered_at_ms = Some(now);
    order.record(now, EventKind::Delivered);
    tx.put_order(order);
    emit(tx, order, EventKind::Delivered)
}

/// Claims fresh available keys as sold for `order`, if there are enough.
fn claim_sold(tx: &mut Tx, order: &mut Order) -> Result<bool> {
    let Some(ids) = tx.available_keys(&order.product_id, order.quantity as usize)? else {
        return Ok(false);
    };
    for &id in &ids {
        tx.swap_key_state(
            id,
            &KeyState::Available,
            KeyState::Sold {
                order_no: order.order_no.clone(),
            },
        )?;
    }
    let mut product = load_product(tx, &order.product_id)?;
    product.counts.available -= ids.len() as u64;
    product.counts.sold += ids.len() as u64;
    tx.put_product(&product);
    watch_stock(tx, &product)?;
    order.key_ids = ids;
    Ok(true)
}

/// A paid order without held keys (late payment): deliver from stock, or
/// queue it as awaiting_stock.
pub(super) fn claim_or_await(tx: &mut Tx, order: &mut Order, now: i64) -> Result<()> {
    // Paid orders that wait already queued ahead get stock first.
    if tx.oldest_awaiting(&order.product_id)?.is_none() && claim_sold(tx, order)? {
        order::on_deliver(order.status).map_err(|r| Error::Conflict(r.to_string()))?;
        return finish_delivery(tx, order, now);
    }
    order::on_await_stock(order.status).map_err(|r| Error::Conflict(r.to_string()))?;
    order.status = OrderStatus::AwaitingStock;
    order.record(now, EventKind::AwaitingStock);
    tx.enqueue_awaiting(order);
    tx.put_order(order);
    emit(tx, order, EventKind::AwaitingStock)
}

/// Delivers waiting orders of a product from available stock, strictly
/// oldest payment first: a big order at the head is not overtaken.
pub fn backfill(tx: &mut Tx, product_id: &str) -> Result<u64> {
    let mut delivered = 0;
    while let Some(order_no) = tx.oldest_awaiting(product_id)? {
        let mut order = load_order(tx, &order_no)?;
        if order.status != OrderStatus::AwaitingStock {
            tx.dequeue_awaiting(&order);
            continue;
        }
        order::on_backfill(order.status).map_err(|r| Error::Conflict(r.to_string()))?;
        if !claim_sold(tx, &mut order)? {
            break;
        }
        tx.dequeue_awaiting(&order);
        let now = tx.now_ms();
        finish_delivery(tx, &mut order, now)?;
        delivered += 1;
    }
    Ok(delivered)
}

/// Returns an unpaid order's held keys to stock once its hold ran out.
/// Returns false (and changes nothing) if the order is not due.
pub fn expire_order(tx: &mut Tx, order_no: &str) -> Result<bool> {
    let mut order = load_order(tx, order_no)?;
    let now = tx.now_ms();
    if order::on_expire(order.status, order.expires_at_ms, now).is_err() {
        if order.status != OrderStatus::Pending {
            // A stale schedule entry (the order was paid meanwhile): drop it.
            tx.unschedule_expiry(&order);
        }
        return Ok(false);
    }
    let held = KeyState::Held {
        order_no: order.order_no.clone(),
    };
    for &id in &order.key_ids {
        tx.swap_key_state(id, &held, KeyState::Available)?;
    }
    let mut product = load_product(tx, &order.product_id)?;
    let n = order.key_ids.len() as u64;
    product.counts.held -= n;
    product.counts.available += n;
    tx.put_product(&product);
    watch_stock(tx, &product)?;
    order.key_ids.clear();
    order.status = OrderStatus::Expired;
    order.record(now, EventKind::Expired);
    coupons::follow_order(tx, &order, OrderStatus::Pending)?;
    tx.unschedule_expiry(&order);
    tx.put_order(&order);
    emit(tx, &order, EventKind::Expired)?;
    backfill(tx, &order.product_id)?;
    Ok(true)
}

/// Marks a delivered or waiting order refunded. Keys are not returned to
/// stock: the buyer has seen them.
pub fn refund_order(tx: &mut Tx, order_no: &str, note: Option<String>) -> Result<Order> {
    let mut order = load_order(tx, order_no)?;
    order::on_refund(order.status).map_err(|r| Error::Conflict(r.to_string()))?;
    let was_waiting = order.status == OrderStatus::AwaitingStock;
    if was_waiting {
        tx.dequeue_awaiting(&order);
    }
    let now = tx.now_ms();
    order.status = OrderStatus::Refunded;
    order.refunded_at_ms = Some(now);
    order.record(now, EventKind::Refunded).note = note;
    tx.put_order(&order);
    emit(tx, &order, EventKind::Refunded)?;
    if was_waiting {
        // It may have been the head of the queue: the next in line may fit now.
        backfill(tx, &order.product_id)?;
    }
    Ok(order)
}

/// Start-up recovery: an order left `paid` (never expected, since payment and
/// delivery commit together) is delivered now.
pub fn redrive_paid(tx: &mut Tx, order_no: &str) -> Result<OrderStatus> {
    let mut order = load_order(tx, order_no)?;
    if order.status != OrderStatus::Paid {
        return Ok(order.status);
    }
    let now = tx.now_ms();
    let holds = !order.key_ids.is_empty();
    if holds {
        deliver_held(tx, &mut order, now)?;
    } else {
        claim_or_await(tx, &mut order, now)?;
    }
    Ok(order.status)
}

/// Retention: forgets the idempotency records among `keys` that were made
/// before `cutoff_ms` (checked again here, as the pruner found them outside
/// the writer); how many. A repeat of such a key creates a new order.
pub fn prune_idempotency(tx: &mut Tx, keys: &[Vec<u8>], cutoff_ms: i64) -> Result<usize> {
    let mut pruned = 0;
    for key in keys {
        let Ok(hash) = <[u8; 32]>::try_from(key.as_slice()) else {
            continue;
        };
        if tx
            .idempotency(&hash)?
            .is_some_and(|r| r.created_at_ms < cutoff_ms)
        {
            tx.delete_idempotency(key);
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// Start-up: counts the unpaid orders' holds that the hold caps check, once,
/// before serving rather than inside the first buyer's order. Writes
/// nothing.
pub fn count_pending_holds(tx: &mut Tx) -> Result<()> {
    tx.pending_holds("email", "").map(|_| ())
}
