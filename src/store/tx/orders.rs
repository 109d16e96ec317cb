//! The order operations of a `Tx`: orders and the indexes kept beside
//! them (expiry, the awaiting queue, per-buyer hold counts), payments,
//! payment attempts and idempotency records.

use super::{HoldCounts, Tx, MAX_ATTEMPTS_PER_ORDER};
use crate::domain::model::{IdempotencyRecord, Order};
use crate::domain::order::OrderStatus;
use crate::error::Result;
use crate::store::codec;
use crate::store::tree::{self, Tree};
use std::collections::HashMap;

impl Tx<'_> {
    // ---- orders ------------------------------------------------------------

    pub fn order(&self, order_no: &str) -> Result<Option<Order>> {
        match self.get_raw(Tree::Orders, order_no.as_bytes())? {
            None => Ok(None),
            Some(b) => codec::decode_order(&b).map(Some).map_err(super::internal),
        }
    }

    pub fn next_order_seq(&mut self) -> u64 {
        let seq = self.counters.next_order_seq.max(1);
        self.counters.next_order_seq = seq + 1;
        seq
    }

    /// Keeps the per-status counts and the per-client hold counts in step
    /// with an order's move from `from` to its current status.
    fn track(&mut self, o: &Order, from: Option<OrderStatus>) {
        if let Some(f) = from {
            let c = &mut self.counters.orders_by_status[f.index()];
            *c = c.saturating_sub(1);
        }
        self.counters.orders_by_status[o.status.index()] += 1;
        let was_holding = from == Some(OrderStatus::Pending);
        let holds = o.status == OrderStatus::Pending;
        if was_holding != holds {
            let delta = if holds { 1 } else { -1 };
            for key in order_hold_keys(o) {
                *self.cmd_holds.entry(key).or_default() += delta;
            }
        }
    }

    /// Unpaid orders holding keys for a client IP or buyer e-mail.
    pub fn pending_holds(&mut self, kind: &str, who: &str) -> Result<u64> {
        if self.index.holds.is_none() {
            let counted = self.count_holds()?;
            self.index.holds = Some(counted);
        }
        let key = hold_key(kind, who);
        let stored = self
            .index
            .holds
            .as_ref()
            .and_then(|h| h.get(&key))
            .map_or(0, |&n| n as i64);
        Ok((stored + self.cmd_holds.get(&key).copied().unwrap_or(0)).max(0) as u64)
    }

    /// The hold counts as of the last committed command, from the pending
    /// orders: every pending order has an expiry entry, so the expiry index
    /// names them all without reading the other orders.
    fn count_holds(&self) -> Result<HoldCounts> {
        let started = std::time::Instant::now();
        let mut counted: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut pending = 0u64;
        for (key, _) in self.scan(Tree::Expiry, &[], usize::MAX)? {
            let Some(order_no) = tree::time_key_order_no(&key) else {
                continue;
            };
            if let Some(o) = self.order(order_no)? {
                if o.status == OrderStatus::Pending {
                    pending += 1;
                    for k in order_hold_keys(&o) {
                        *counted.entry(k).or_default() += 1;
                    }
                }
            }
        }
        // The scan also saw this command's own changes, which join the
        // counts only if it commits.
        for (k, delta) in &self.cmd_holds {
            *counted.entry(k.clone()).or_default() -= delta;
        }
        tracing::info!(
            pending_orders = pending,
            millis = started.elapsed().as_millis() as u64,
            "hold counts counted from the pending orders"
        );
        Ok(counted
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(k, n)| (k, n as u64))
            .collect())
    }

    /// Stores a brand-new order. Its number begins with its creation time,
    /// so the order tree itself lists newest first: no index row, since a
    /// row in a new place is what sled charges the commit thread most for
    /// (docs/BENCHMARKS.md, "Where the time goes").
    pub fn insert_order(&mut self, o: &Order) {
        self.track(o, None);
        self.put_raw(
            Tree::Orders,
            o.order_no.as_bytes().to_vec(),
            codec::encode_order(o),
        );
    }

    pub fn put_order(&mut self, o: &Order) {
        let was = self.order(&o.order_no).ok().flatten().map(|p| p.status);
        if was != Some(o.status) {
            self.track(o, was);
        }
        self.put_raw(
            Tree::Orders,
            o.order_no.as_bytes().to_vec(),
            codec::encode_order(o),
        );
    }

    pub fn schedule_expiry(&mut self, o: &Order) {
        self.put_raw(
            Tree::Expiry,
            tree::time_key(o.expires_at_ms, &o.order_no),
            Vec::new(),
        );
    }

    pub fn unschedule_expiry(&mut self, o: &Order) {
        self.del_raw(Tree::Expiry, tree::time_key(o.expires_at_ms, &o.order_no));
    }

    /// Queues an awaiting_stock order for back-fill, oldest payment first.
    pub fn enqueue_awaiting(&mut self, o: &Order) {
        self.put_raw(Tree::Awaiting, awaiting_key(o), Vec::new());
    }

    pub fn dequeue_awaiting(&mut self, o: &Order) {
        self.del_raw(Tree::Awaiting, awaiting_key(o));
    }

    /// Whether a paid order of the product waits for keys. Keys it can
    /// have belong to the queue first, so none of them is for sale.
    pub fn stock_is_spoken_for(&self, product_id: &str) -> Result<bool> {
        // No order waits anywhere (the usual case): no scan.
        if self.counters.orders_by_status[OrderStatus::AwaitingStock.index()] == 0 {
            return Ok(false);
        }
        Ok(self.oldest_awaiting(product_id)?.is_some())
    }

    /// The oldest awaiting_stock order of a product, with its queue entry.
    pub fn oldest_awaiting(&self, product_id: &str) -> Result<Option<String>> {
        let prefix = tree::scope_prefix(product_id);
        let first = self.scan(Tree::Awaiting, &prefix, 1)?;
        Ok(first
            .into_iter()
            .next()
            .and_then(|(k, _)| String::from_utf8(k.get(prefix.len() + 8..)?.to_vec()).ok()))
    }

    // ---- payments ----------------------------------------------------------

    /// The order a gateway's trade_no was applied to, if any.
    pub fn payment_order(&self, gateway: &str, trade_no: &str) -> Result<Option<String>> {
        Ok(self
            .get_raw(Tree::Payments, &tree::scoped(gateway, trade_no.as_bytes()))?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    pub fn record_payment(&mut self, gateway: &str, trade_no: &str, order_no: &str) {
        self.put_raw(
            Tree::Payments,
            tree::scoped(gateway, trade_no.as_bytes()),
            order_no.as_bytes().to_vec(),
        );
    }

    // ---- idempotency -------------------------------------------------------

    pub fn idempotency(&self, key_hash: &[u8; 32]) -> Result<Option<IdempotencyRecord>> {
        self.get(Tree::Idem, key_hash)
    }

    pub fn put_idempotency(&mut self, key_hash: &[u8; 32], rec: &IdempotencyRecord) {
        self.put(Tree::Idem, key_hash.to_vec(), rec);
    }

    pub fn delete_idempotency(&mut self, key_hash: &[u8]) {
        self.del_raw(Tree::Idem, key_hash.to_vec());
    }

    // ---- payment attempts (audit) -------------------------------------------

    /// Records an attempt made when the order had `seen_events` events
    /// (see `tree::attempt_key`).
    ///
    /// At most [`MAX_ATTEMPTS_PER_ORDER`] are kept per order: a genuine
    /// callback replayed without end (epay's carry no timestamp) must not
    /// grow the store or the order's detail without end. Returns whether
    /// this one was kept; the metrics count every attempt either way.
    pub fn record_attempt(
        &mut self,
        order_no: &str,
        a: &crate::domain::model::PaymentAttempt,
        seen_events: u32,
    ) -> Result<bool> {
        let kept = self.scan(
            Tree::Attempts,
            &tree::scope_prefix(order_no),
            MAX_ATTEMPTS_PER_ORDER,
        )?;
        if kept.len() >= MAX_ATTEMPTS_PER_ORDER {
            return Ok(false);
        }
        let key = tree::attempt_key(order_no, a.at_ms, seen_events);
        self.put(Tree::Attempts, key, a);
        Ok(true)
    }
}

fn awaiting_key(o: &Order) -> Vec<u8> {
    let since = o.paid_at_ms.unwrap_or(o.created_at_ms);
    tree::scoped(&o.product_id, &tree::time_key(since, &o.order_no))
}

/// The hold count an IP or a buyer e-mail (in any letter case) is kept in.
fn hold_key(kind: &str, who: &str) -> Vec<u8> {
    tree::scoped(kind, who.to_lowercase().as_bytes())
}

fn order_hold_keys(o: &Order) -> Vec<Vec<u8>> {
    let mut keys = vec![hold_key("email", &o.email)];
    if let Some(ip) = &o.client_ip {
        keys.push(hold_key("ip", ip));
    }
    keys
}
