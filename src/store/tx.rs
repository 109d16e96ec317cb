//! A writer transaction: the read-your-writes overlay over sled that one batch
//! of commands runs in, with a savepoint per command.
//!
//! Commands read through the overlay (this command's writes, then the batch's,
//! then sled) and write into it; nothing reaches sled until the whole batch is
//! journaled and fsynced. A command that fails is rolled back alone; the rest
//! of its batch still commits. The typed operations below are what domain code
//! sees; tree names and key layouts stay in this module.

use super::codec;
use super::journal::Write;
use super::tree::{self, Tree, Trees};
use crate::domain::model::{IdempotencyRecord, KeyRecord, KeyState, Order, OutboxEvent, Product};
use crate::domain::order::OrderStatus;
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

type Overlay = BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>;

/// Counters the writer hands out; persisted in the meta tree with each batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub next_key_id: u64,
    pub next_order_seq: u64,
    pub next_outbox_seq: u64,
    /// Orders per status, in `OrderStatus::ALL` order (for metrics).
    pub orders_by_status: [u64; 6],
}

pub struct Tx<'a> {
    trees: &'a Trees,
    batch: Overlay,
    cmd: Overlay,
    pub(crate) counters: Counters,
    saved_counters: Counters,
    now_ms: i64,
    pub(crate) webhooks: bool,
}

fn internal(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "store read failed inside the writer");
    Error::unavailable("storage error, try again")
}

impl<'a> Tx<'a> {
    pub(crate) fn new(trees: &'a Trees, counters: Counters, now_ms: i64, webhooks: bool) -> Self {
        Tx {
            trees,
            batch: Overlay::new(),
            cmd: Overlay::new(),
            counters,
            saved_counters: counters,
            now_ms,
            webhooks,
        }
    }

    /// The batch's clock: every command in a batch sees the same now.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub(crate) fn commit_cmd(&mut self) {
        let cmd = std::mem::take(&mut self.cmd);
        self.batch.extend(cmd);
        self.saved_counters = self.counters;
    }

    pub(crate) fn rollback_cmd(&mut self) {
        self.cmd.clear();
        self.counters = self.saved_counters;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The batch's writes, in key order, for the journal and sled.
    pub(crate) fn into_writes(self) -> Vec<Write> {
        self.batch
            .into_iter()
            .map(|((tree, key), value)| Write { tree, key, value })
            .collect()
    }

    // ---- raw overlay access -------------------------------------------------

    fn get_raw(&self, t: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = (t as u8, key.to_vec());
        if let Some(v) = self.cmd.get(&k).or_else(|| self.batch.get(&k)) {
            return Ok(v.clone());
        }
        Ok(self
            .trees
            .get(t)
            .get(key)
            .map_err(internal)?
            .map(|v| v.to_vec()))
    }

    fn put_raw(&mut self, t: Tree, key: Vec<u8>, value: Vec<u8>) {
        self.cmd.insert((t as u8, key), Some(value));
    }

    fn del_raw(&mut self, t: Tree, key: Vec<u8>) {
        self.cmd.insert((t as u8, key), None);
    }

    fn get<T: DeserializeOwned>(&self, t: Tree, key: &[u8]) -> Result<Option<T>> {
        match self.get_raw(t, key)? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(internal),
        }
    }

    fn put<T: Serialize>(&mut self, t: Tree, key: Vec<u8>, value: &T) {
        self.put_raw(t, key, codec::encode(value));
    }

    /// Up to `limit` live entries whose key starts with `prefix`, in key
    /// order, merging this command's and the batch's writes over sled.
    fn scan(&self, t: Tree, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tb = t as u8;
        let lower = Bound::Included((tb, prefix.to_vec()));
        let in_prefix = |k: &(u8, Vec<u8>)| k.0 == tb && k.1.starts_with(prefix);
        let mut c = self
            .cmd
            .range((lower.clone(), Bound::Unbounded))
            .take_while(|(k, _)| in_prefix(k))
            .peekable();
        let mut b = self
            .batch
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| in_prefix(k))
            .peekable();
        let mut s = self.trees.get(t).scan_prefix(prefix).peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let sk: Option<Vec<u8>> = match s.peek() {
                Some(Ok((k, _))) => Some(k.to_vec()),
                Some(Err(e)) => return Err(internal(e)),
                None => None,
            };
            let ck = c.peek().map(|(k, _)| k.1.clone());
            let bk = b.peek().map(|(k, _)| k.1.clone());
            let Some(min) = [&sk, &ck, &bk].into_iter().flatten().min().cloned() else {
                break;
            };
            let mut value: Option<Option<Vec<u8>>> = None;
            if ck.as_ref() == Some(&min) {
                value = c.next().map(|(_, v)| v.clone());
            }
            if bk.as_ref() == Some(&min) {
                let v = b.next().map(|(_, v)| v.clone());
                value = value.or(v);
            }
            if sk.as_ref() == Some(&min) {
                let v = s.next().and_then(|r| r.ok()).map(|(_, v)| Some(v.to_vec()));
                value = value.or(v);
            }
            if let Some(Some(v)) = value {
                out.push((min, v));
            }
        }
        Ok(out)
    }

    // ---- products ----------------------------------------------------------

    pub fn product(&self, id: &str) -> Result<Option<Product>> {
        self.get(Tree::Products, id.as_bytes())
    }

    pub fn put_product(&mut self, p: &Product) {
        self.put(Tree::Products, p.id.as_bytes().to_vec(), p);
    }

    // ---- keys --------------------------------------------------------------

    pub fn key(&self, id: u64) -> Result<Option<KeyRecord>> {
        self.get(Tree::Keys, &tree::u64_key(id))
    }

    /// Whether a product ever had a key with this fingerprint.
    pub fn key_fingerprint_known(&self, product_id: &str, fp: &[u8; 16]) -> Result<bool> {
        Ok(self
            .get_raw(Tree::KeyHashes, &tree::scoped(product_id, fp))?
            .is_some())
    }

    /// Stores a new available key and remembers its fingerprint forever.
    pub fn insert_available_key(&mut self, rec: &KeyRecord, fp: &[u8; 16]) -> u64 {
        let id = self.counters.next_key_id.max(1);
        self.counters.next_key_id = id + 1;
        let idk = tree::u64_key(id);
        self.put(Tree::Keys, idk.to_vec(), rec);
        self.put_raw(
            Tree::KeyHashes,
            tree::scoped(&rec.product_id, fp),
            idk.to_vec(),
        );
        self.put_raw(Tree::Avail, tree::scoped(&rec.product_id, &idk), Vec::new());
        id
    }

    /// The first `n` available key ids of a product, in import order, or
    /// `None` if it has fewer.
    pub fn available_keys(&self, product_id: &str, n: usize) -> Result<Option<Vec<u64>>> {
        let prefix = tree::scope_prefix(product_id);
        let found = self.scan(Tree::Avail, &prefix, n)?;
        if found.len() < n {
            return Ok(None);
        }
        Ok(Some(
            found
                .iter()
                .filter_map(|(k, _)| tree::read_u64(&k[prefix.len()..]))
                .collect(),
        ))
    }

    /// Moves a key from `expected` to `next`, failing loudly if the key is not
    /// in the expected state: the compare-and-swap that makes double sale
    /// impossible even if a bug let two claims race.
    pub fn swap_key_state(&mut self, id: u64, expected: &KeyState, next: KeyState) -> Result<()> {
        let idk = tree::u64_key(id);
        let mut rec: KeyRecord = self.get(Tree::Keys, &idk)?.ok_or_else(|| {
            tracing::error!(key_id = id, "key vanished during a claim");
            Error::unavailable("key state changed, try again")
        })?;
        if &rec.state != expected {
            tracing::error!(
                key_id = id,
                from = rec.state.name(),
                expected = expected.name(),
                "key state compare-and-swap failed"
            );
            return Err(Error::unavailable("key state changed, try again"));
        }
        let avail_key = tree::scoped(&rec.product_id, &idk);
        match (&rec.state, &next) {
            (KeyState::Available, KeyState::Available) => {}
            (KeyState::Available, _) => self.del_raw(Tree::Avail, avail_key),
            (_, KeyState::Available) => self.put_raw(Tree::Avail, avail_key, Vec::new()),
            _ => {}
        }
        rec.state = next;
        self.put(Tree::Keys, idk.to_vec(), &rec);
        Ok(())
    }

    /// Deletes an available key (its fingerprint stays, so it is never
    /// re-imported as new).
    pub fn delete_available_key(&mut self, id: u64, product_id: &str) -> Result<bool> {
        let idk = tree::u64_key(id);
        match self.get::<KeyRecord>(Tree::Keys, &idk)? {
            Some(rec) if rec.product_id == product_id && rec.state == KeyState::Available => {
                self.del_raw(Tree::Keys, idk.to_vec());
                self.del_raw(Tree::Avail, tree::scoped(product_id, &idk));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    // ---- orders ------------------------------------------------------------

    pub fn order(&self, order_no: &str) -> Result<Option<Order>> {
        self.get(Tree::Orders, order_no.as_bytes())
    }

    pub fn next_order_seq(&mut self) -> u64 {
        let seq = self.counters.next_order_seq.max(1);
        self.counters.next_order_seq = seq + 1;
        seq
    }

    /// Keeps the per-status counts and the per-client hold counts in step
    /// with an order's move from `from` to its current status.
    fn track(&mut self, o: &Order, from: Option<OrderStatus>) {
        let idx = |s: OrderStatus| OrderStatus::ALL.iter().position(|x| *x == s).unwrap_or(0);
        if let Some(f) = from {
            let c = &mut self.counters.orders_by_status[idx(f)];
            *c = c.saturating_sub(1);
        }
        self.counters.orders_by_status[idx(o.status)] += 1;
        let was_holding = from == Some(OrderStatus::Pending);
        let holds = o.status == OrderStatus::Pending;
        if was_holding != holds {
            for key in hold_keys(o) {
                let n = self
                    .get_raw(Tree::Holds, &key)
                    .ok()
                    .flatten()
                    .and_then(|v| tree::read_u64(&v))
                    .unwrap_or(0);
                let n = if holds { n + 1 } else { n.saturating_sub(1) };
                if n == 0 {
                    self.del_raw(Tree::Holds, key);
                } else {
                    self.put_raw(Tree::Holds, key, tree::u64_key(n).to_vec());
                }
            }
        }
    }

    /// Unpaid orders holding keys for a client IP or buyer e-mail.
    pub fn pending_holds(&self, kind: &str, who: &str) -> Result<u64> {
        let key = tree::scoped(kind, who.to_lowercase().as_bytes());
        Ok(self
            .get_raw(Tree::Holds, &key)?
            .and_then(|v| tree::read_u64(&v))
            .unwrap_or(0))
    }

    /// Stores a brand-new order and indexes it for listing.
    pub fn insert_order(&mut self, o: &Order) {
        self.track(o, None);
        self.put_raw(
            Tree::OrderSeq,
            tree::u64_key(o.seq).to_vec(),
            o.order_no.as_bytes().to_vec(),
        );
        self.put(Tree::Orders, o.order_no.as_bytes().to_vec(), o);
    }

    pub fn put_order(&mut self, o: &Order) {
        let was = self.order(&o.order_no).ok().flatten().map(|p| p.status);
        if was != Some(o.status) {
            self.track(o, was);
        }
        self.put(Tree::Orders, o.order_no.as_bytes().to_vec(), o);
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

    pub fn record_attempt(&mut self, order_no: &str, a: &crate::domain::model::PaymentAttempt) {
        let mut rest = tree::time_key(a.at_ms, "").to_vec();
        rest.extend_from_slice(&rand::random::<u32>().to_be_bytes());
        self.put(Tree::Attempts, tree::scoped(order_no, &rest), a);
    }

    // ---- outbox ------------------------------------------------------------

    pub fn outbox(&self, seq: u64) -> Result<Option<OutboxEvent>> {
        self.get(Tree::Outbox, &tree::u64_key(seq))
    }

    pub fn next_outbox_seq(&mut self) -> u64 {
        let seq = self.counters.next_outbox_seq.max(1);
        self.counters.next_outbox_seq = seq + 1;
        seq
    }

    /// Stores an outbox event. (No separate to-send index: the dispatcher
    /// scans from its low-water mark, which keeps each event to one write.)
    pub fn put_outbox(&mut self, e: &OutboxEvent) {
        self.put(Tree::Outbox, tree::u64_key(e.seq).to_vec(), e);
    }
}

fn awaiting_key(o: &Order) -> Vec<u8> {
    let since = o.paid_at_ms.unwrap_or(o.created_at_ms);
    tree::scoped(&o.product_id, &tree::time_key(since, &o.order_no))
}

fn hold_keys(o: &Order) -> Vec<Vec<u8>> {
    let mut keys = vec![tree::scoped("email", o.email.to_lowercase().as_bytes())];
    if let Some(ip) = &o.client_ip {
        keys.push(tree::scoped("ip", ip.as_bytes()));
    }
    keys
}
