//! The shop's workflows as they run inside the single writer: create and edit
//! products, import and delete keys, hold keys for orders, apply payments,
//! expire holds, refund, and back-fill orders that wait for stock.
//!
//! Each function runs in one writer [`Tx`]: all it writes becomes durable in
//! one batch or not at all, and an error leaves nothing behind. Which
//! transitions are legal is decided by [`super::order`]; this module carries
//! them out and keeps the product's key counts in step.

use super::ids::{printable, Gateway};
use super::model::{
    EventKind, IdempotencyRecord, KeyCounts, KeyState, Order, Presentation, Product,
};
use super::order::{self, OrderStatus, PaymentSource, PaymentStep};
use crate::error::{Error, Result};
use crate::store::Tx;

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

/// A validated new product.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub id: String,
    pub name: String,
    pub description: String,
    pub price: u64,
    pub min_quantity: u32,
    pub max_quantity: u32,
    pub active: bool,
    pub presentation: Presentation,
}

/// A validated product edit: `None` leaves a field as it is; for the
/// optional presentation fields `Some(None)` clears one.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<u64>,
    pub min_quantity: Option<u32>,
    pub max_quantity: Option<u32>,
    pub active: Option<bool>,
    pub category: Option<Option<String>>,
    pub sort: Option<i64>,
    pub image_url: Option<Option<String>>,
    pub instructions: Option<Option<String>>,
    pub low_stock: Option<u64>,
}

pub fn create_product(tx: &mut Tx, p: NewProduct) -> Result<Product> {
    if tx.product(&p.id)?.is_some() {
        return Err(Error::Conflict(format!("product {} already exists", p.id)));
    }
    check_quantities(p.min_quantity, p.max_quantity)?;
    let now = tx.now_ms();
    let product = Product {
        id: p.id,
        name: p.name,
        description: p.description,
        price: p.price,
        min_quantity: p.min_quantity,
        max_quantity: p.max_quantity,
        active: p.active,
        created_at_ms: now,
        updated_at_ms: now,
        counts: KeyCounts::default(),
        presentation: p.presentation,
    };
    tx.put_product(&product);
    Ok(product)
}

pub fn update_product(tx: &mut Tx, id: &str, patch: ProductPatch) -> Result<Product> {
    let mut p = load_product(tx, id)?;
    patch_presentation(&mut p.presentation, &patch);
    if let Some(v) = patch.name {
        p.name = v;
    }
    if let Some(v) = patch.description {
        p.description = v;
    }
    if let Some(v) = patch.price {
        p.price = v;
    }
    if let Some(v) = patch.min_quantity {
        p.min_quantity = v;
    }
    if let Some(v) = patch.max_quantity {
        p.max_quantity = v;
    }
    if let Some(v) = patch.active {
        p.active = v;
    }
    if patch.max_quantity.is_none() && p.min_quantity > p.max_quantity {
        // Only min_quantity was sent: name the field the caller set.
        return Err(Error::invalid(
            "min_quantity",
            format!("must be at most max_quantity ({})", p.max_quantity),
        ));
    }
    check_quantities(p.min_quantity, p.max_quantity)?;
    p.updated_at_ms = tx.now_ms();
    tx.put_product(&p);
    Ok(p)
}

fn patch_presentation(look: &mut Presentation, patch: &ProductPatch) {
    if let Some(v) = &patch.category {
        look.category.clone_from(v);
    }
    if let Some(v) = patch.sort {
        look.sort = v;
    }
    if let Some(v) = &patch.image_url {
        look.image_url.clone_from(v);
    }
    if let Some(v) = &patch.instructions {
        look.instructions.clone_from(v);
    }
    if let Some(v) = patch.low_stock {
        look.low_stock = v;
    }
}

fn check_quantities(min: u32, max: u32) -> Result<()> {
    if min > max {
        return Err(Error::invalid(
            "max_quantity",
            format!("must be at least min_quantity ({min})"),
        ));
    }
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

/// A card key ready to store: sealed text and its keyed fingerprint.
#[derive(Debug, Clone)]
pub struct SealedKey {
    pub sealed: Vec<u8>,
    pub fingerprint: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportResult {
    pub added: u64,
    pub duplicates: u64,
    pub stock: u64,
}

/// Adds keys the product never had; counts the rest as duplicates. Waiting
/// orders are back-filled from the new stock at once, oldest first.
pub fn import_keys(tx: &mut Tx, product_id: &str, keys: Vec<SealedKey>) -> Result<ImportResult> {
    let product = load_product(tx, product_id)?;
    let mut duplicates = 0u64;
    let mut seen = crate::store::FingerprintSet::default();
    seen.reserve(keys.len());
    let mut new = Vec::with_capacity(keys.len());
    for k in keys {
        if !seen.insert(k.fingerprint) || tx.key_fingerprint_known(product_id, &k.fingerprint)? {
            duplicates += 1;
            continue;
        }
        new.push((k.sealed, k.fingerprint));
    }
    let added = new.len() as u64;
    tx.insert_available_keys(product_id, new);
    put_on_sale(tx, product, added, duplicates)
}

/// Counts `added` new available keys into `product` and back-fills waiting
/// orders from them.
fn put_on_sale(
    tx: &mut Tx,
    mut product: Product,
    added: u64,
    duplicates: u64,
) -> Result<ImportResult> {
    product.counts.available += added;
    product.counts.imported += added;
    tx.put_product(&product);
    backfill(tx, &product.id)?;
    let stock = if tx.stock_is_spoken_for(&product.id)? {
        0
    } else {
        load_product(tx, &product.id)?.counts.available
    };
    Ok(ImportResult {
        added,
        duplicates,
        stock,
    })
}

/// Opens upload `upload_id` of keys for `product_id`, staged chunk by chunk
/// and published as a whole (see `ops::upload`). First discards what
/// uploads no longer running (`is_live` names those that are) left staged.
pub fn begin_upload(
    tx: &mut Tx,
    upload_id: u64,
    product_id: &str,
    is_live: &dyn Fn(u64) -> bool,
) -> Result<()> {
    load_product(tx, product_id)?;
    discard_abandoned_uploads(tx, is_live)?;
    tx.begin_upload(upload_id, product_id)
}

/// Discards every staged upload `is_live` does not name (at a start: all);
/// returns how many.
pub fn discard_abandoned_uploads(tx: &mut Tx, is_live: &dyn Fn(u64) -> bool) -> Result<u64> {
    let mut discarded = 0;
    for id in tx.staged_uploads()? {
        if !is_live(id) && tx.discard_upload(id)? {
            discarded += 1;
        }
    }
    Ok(discarded)
}

/// Discards upload `upload_id` and what it staged; false if it is gone.
pub fn discard_upload(tx: &mut Tx, upload_id: u64) -> Result<bool> {
    tx.discard_upload(upload_id)
}

/// Stages a chunk of upload `upload_id`: keys the product does not have
/// are stored, not yet available; the rest are duplicates. (A key repeated
/// in another chunk is found at the publish.)
pub fn stage_keys(tx: &mut Tx, upload_id: u64, keys: Vec<SealedKey>) -> Result<()> {
    let product_id = tx.upload_product(upload_id)?;
    let mut duplicates = 0u64;
    let mut seen = crate::store::FingerprintSet::default();
    seen.reserve(keys.len());
    let mut new = Vec::with_capacity(keys.len());
    for k in keys {
        if !seen.insert(k.fingerprint) || tx.key_fingerprint_known(&product_id, &k.fingerprint)? {
            duplicates += 1;
            continue;
        }
        new.push((k.sealed, k.fingerprint));
    }
    tx.stage_keys(upload_id, new, duplicates)
}

/// Publishes upload `upload_id`: all its keys become available at once,
/// as one import, and waiting orders are back-filled from them.
pub fn publish_upload(tx: &mut Tx, upload_id: u64) -> Result<ImportResult> {
    let p = tx.publish_upload(upload_id)?;
    let product = load_product(tx, &p.product_id)?;
    put_on_sale(tx, product, p.added, p.duplicates)
}

/// Removes available keys by id; ids that are unknown, of another product or
/// not available are skipped. Returns how many were removed.
pub fn delete_keys(tx: &mut Tx, product_id: &str, ids: &[u64]) -> Result<u64> {
    let mut product = load_product(tx, product_id)?;
    let mut removed = 0;
    for &id in ids {
        if tx.delete_available_key(id, product_id)? {
            removed += 1;
        }
    }
    product.counts.available -= removed;
    product.counts.deleted += removed;
    tx.put_product(&product);
    Ok(removed)
}

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
    pub client_ip: Option<String>,
    pub created_at_ms: i64,
    pub hold_ms: i64,
    pub idempotency: Option<Idempotency>,
    /// Caps on unpaid orders per client IP and per e-mail (0 = none).
    pub max_pending_per_ip: u32,
    pub max_pending_per_email: u32,
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

/// Creates an order and holds `quantity` keys for it, all or nothing. When
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
    let amount = product
        .price
        .checked_mul(req.quantity as u64)
        .ok_or_else(|| Error::invalid("quantity", "order amount is too large"))?;
    check_hold_caps(tx, &req)?;
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

    let seq = tx.next_order_seq();
    let mut order = Order {
        order_no: req.order_no,
        seq,
        product_id: req.product_id,
        quantity: req.quantity,
        amount,
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
    };
    if tx.order(&order.order_no)?.is_some() {
        return Err(Error::unavailable("order number collision, try again"));
    }
    order.record(req.created_at_ms, EventKind::Created);
    tx.insert_order(&order);
    tx.schedule_expiry(&order);
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
            mark_paid(tx, &mut order, &p, amount, now);
            tx.unschedule_expiry(&order);
            deliver_held(tx, &mut order, now)?;
        }
        PaymentStep::ClaimOrAwait => {
            mark_paid(tx, &mut order, &p, amount, now);
            claim_or_await(tx, &mut order, now)?;
        }
    }
    Ok(PaymentApplied { order, step })
}

fn mark_paid(tx: &mut Tx, order: &mut Order, p: &Payment, amount: u64, now: i64) {
    order.status = OrderStatus::Paid;
    order.paid_at_ms = Some(now);
    order.paid_gateway = Some(p.gateway.as_str().to_string());
    order.trade_no = Some(p.trade_no.clone());
    let e = order.record(now, EventKind::Paid);
    e.gateway = Some(p.gateway.as_str().to_string());
    e.trade_no = Some(p.trade_no.clone());
    e.amount = Some(amount);
    e.note = p.note.clone();
    tx.record_payment(p.gateway.as_str(), &p.trade_no, &order.order_no);
    emit(tx, order, EventKind::Paid);
}

/// `paid → delivered` with the keys the order holds.
fn deliver_held(tx: &mut Tx, order: &mut Order, now: i64) -> Result<()> {
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
    finish_delivery(tx, order, now);
    Ok(())
}

fn finish_delivery(tx: &mut Tx, order: &mut Order, now: i64) {
    order.status = OrderStatus::Delivered;
    order.delivered_at_ms = Some(now);
    order.record(now, EventKind::Delivered);
    tx.put_order(order);
    emit(tx, order, EventKind::Delivered);
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
    order.key_ids = ids;
    Ok(true)
}

/// A paid order without held keys (late payment): deliver from stock, or
/// queue it as awaiting_stock.
fn claim_or_await(tx: &mut Tx, order: &mut Order, now: i64) -> Result<()> {
    // Paid orders that wait already queued ahead get stock first.
    if tx.oldest_awaiting(&order.product_id)?.is_none() && claim_sold(tx, order)? {
        order::on_deliver(order.status).map_err(|r| Error::Conflict(r.to_string()))?;
        finish_delivery(tx, order, now);
        return Ok(());
    }
    order::on_await_stock(order.status).map_err(|r| Error::Conflict(r.to_string()))?;
    order.status = OrderStatus::AwaitingStock;
    order.record(now, EventKind::AwaitingStock);
    tx.enqueue_awaiting(order);
    tx.put_order(order);
    emit(tx, order, EventKind::AwaitingStock);
    Ok(())
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
        finish_delivery(tx, &mut order, now);
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
    order.key_ids.clear();
    order.status = OrderStatus::Expired;
    order.record(now, EventKind::Expired);
    tx.unschedule_expiry(&order);
    tx.put_order(&order);
    emit(tx, &order, EventKind::Expired);
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
    emit(tx, &order, EventKind::Refunded);
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

/// Writes an outbound webhook event into the outbox in the same batch as the
/// change it reports (when webhooks are configured).
fn emit(tx: &mut Tx, order: &Order, kind: EventKind) {
    if !tx.webhooks || kind.webhook_type().is_none() {
        return;
    }
    tx.emit_event(&order.order_no, kind);
}
