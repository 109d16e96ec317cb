//! Typed reads straight from sled. They never wait for the writer; what they
//! see is always committed and durable, because the writer applies a batch to
//! sled only after it is fsynced. While sled lacks a durable batch (it failed
//! to take one), point reads see it through `view::Unapplied` and reads that
//! walk a tree answer 503 rather than show a state older than one
//! acknowledged (`Store::trees`).
//!
//! Orders, products and retention read here; `keys`, `coupons`, `outbox`
//! and `emails` hold the reads of each.

use super::codec;
use super::tree::{self, Tree};
use super::tx::outbox::outbox_group_expired;
use super::Store;
use crate::domain::ids::OrderNo;
use crate::domain::model::{IdempotencyRecord, Order, OutboxEvent, Product};
use crate::domain::order::OrderStatus;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;

mod coupons;
mod emails;
mod keys;
mod outbox;

pub use keys::KeyPage;
pub(crate) use outbox::outbox_counts_in;

fn storage(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "store read failed");
    Error::unavailable("storage error, try again")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(storage)
}

fn decode_order(bytes: &[u8]) -> Result<Order> {
    codec::decode_order(bytes).map_err(storage)
}

/// A part of the order tree, by order number.
#[derive(Debug, Clone)]
pub enum OrderRange {
    All,
    Below(Vec<u8>),
    From(Vec<u8>),
}

/// Filters for the admin order list.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub email: Option<String>,
}

pub struct OrderPage {
    pub orders: Vec<Order>,
    /// Pass back as `cursor` for the next (older) page: the last order
    /// number of this one.
    pub next_cursor: Option<String>,
}

/// One stored record: tree id, key, value.
pub type RawRecord = (u8, Vec<u8>, Vec<u8>);

/// One step of the retention pruner's walk over a tree.
pub struct Expired {
    /// Keys of the records past their age.
    pub keys: Vec<Vec<u8>>,
    /// Where the next step starts; `None` at the end of the tree.
    pub next: Option<Vec<u8>>,
}

impl Store {
    /// A record, or `None` when the store has none. While sled lacks a
    /// durable batch, a miss answers 503 instead: what sled lost with its
    /// error may be in the journal, and a 404 would deny it.
    fn read<T: DeserializeOwned>(&self, t: Tree, key: &[u8]) -> Result<Option<T>> {
        match self.read_raw(t, key)? {
            Some(v) => decode(&v).map(Some),
            None if self.inner.unapplied.is_behind() => Err(super::view::catching_up()),
            None => Ok(None),
        }
    }

    /// A product (stored in a format of its own, `codec::decode_product`);
    /// a miss while sled lacks a durable batch is 503, as in [`Store::read`].
    pub fn product(&self, id: &str) -> Result<Option<Product>> {
        match self.read_raw(Tree::Products, id.as_bytes())? {
            Some(v) => codec::decode_product(&v).map(Some).map_err(storage),
            None if self.inner.unapplied.is_behind() => Err(super::view::catching_up()),
            None => Ok(None),
        }
    }

    /// The master key's check value stored with the shop, if one was.
    pub fn key_check(&self) -> Result<Option<Vec<u8>>> {
        self.read(Tree::Meta, super::tree::META_KEY_CHECK)
    }

    /// The salt of the shop's order tokens, once its first start stored it.
    pub fn order_token_salt(&self) -> Result<Option<Vec<u8>>> {
        self.read(Tree::Meta, super::tree::META_ORDER_TOKEN_SALT)
    }

    /// Every product, ordered by id.
    pub fn products(&self) -> Result<Vec<Product>> {
        self.trees()?
            .get(Tree::Products)
            .iter()
            .values()
            .map(|v| codec::decode_product(&v.map_err(storage)?).map_err(storage))
            .collect()
    }

    pub fn order(&self, order_no: &str) -> Result<Option<Order>> {
        match self.read_raw(Tree::Orders, order_no.as_bytes())? {
            Some(v) => decode_order(&v).map(Some),
            None if self.inner.unapplied.is_behind() => Err(super::view::catching_up()),
            None => Ok(None),
        }
    }

    /// Orders newest first, from `cursor` (an order number, exclusive) down.
    /// Order numbers begin with their creation time in ms, so the order tree
    /// read backwards is the newest-first list with no index of its own;
    /// orders made in the same ms list in the order of their random part.
    pub fn orders_page(
        &self,
        filter: &OrderFilter,
        limit: usize,
        cursor: Option<&OrderNo>,
    ) -> Result<OrderPage> {
        let trees = self.trees()?;
        let orders_tree = trees.get(Tree::Orders);
        let rows = match cursor {
            Some(c) => orders_tree.range(..c.as_str().as_bytes()),
            None => orders_tree.iter(),
        };
        let mut orders: Vec<Order> = Vec::new();
        let mut next_cursor = None;
        for item in rows.rev() {
            let (_, v) = item.map_err(storage)?;
            if orders.len() == limit {
                next_cursor = orders.last().map(|o| o.order_no.clone());
                break;
            }
            let order = decode_order(&v)?;
            if filter.status.is_some_and(|s| s != order.status)
                || filter
                    .email
                    .as_ref()
                    .is_some_and(|e| !e.eq_ignore_ascii_case(&order.email))
            {
                continue;
            }
            orders.push(order);
        }
        Ok(OrderPage {
            orders,
            next_cursor,
        })
    }

    /// Visits every order (recovery and checks).
    pub fn for_each_order(&self, f: impl FnMut(Order) -> Result<()>) -> Result<()> {
        self.for_each_order_in(OrderRange::All, f)
    }

    /// Visits the orders of one part of the order tree (see
    /// [`Store::halves_of_orders`]).
    pub fn for_each_order_in(
        &self,
        part: OrderRange,
        mut f: impl FnMut(Order) -> Result<()>,
    ) -> Result<()> {
        let trees = self.trees()?;
        let orders = trees.get(Tree::Orders);
        let iter = match part {
            OrderRange::All => orders.iter(),
            OrderRange::Below(split) => orders.range(..split),
            OrderRange::From(split) => orders.range(split..),
        };
        for v in iter.values() {
            f(decode_order(&v.map_err(storage)?)?)?;
        }
        Ok(())
    }

    /// The order tree cut in two at about the middle of its key span, for
    /// two threads to read at once. Order numbers begin with the time they
    /// were made, so each half holds about the orders of half that time.
    pub fn halves_of_orders(&self) -> Result<[OrderRange; 2]> {
        let trees = self.trees()?;
        let orders = trees.get(Tree::Orders);
        let (first, last) = (
            orders.first().map_err(storage)?,
            orders.last().map_err(storage)?,
        );
        let prefix = |k: &[u8]| {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(k) {
                *d = *s;
            }
            u64::from_be_bytes(b)
        };
        let (lo, hi) = match (first, last) {
            (Some((a, _)), Some((b, _))) => (prefix(&a), prefix(&b)),
            _ => (0, 0),
        };
        let split = (lo + hi.saturating_sub(lo) / 2).to_be_bytes().to_vec();
        Ok([OrderRange::Below(split.clone()), OrderRange::From(split)])
    }

    /// Whether `order`'s expiry is scheduled (every pending order's is:
    /// the sweeper and the hold caps' count find pending orders there).
    pub fn expiry_scheduled(&self, order: &Order) -> Result<bool> {
        let key = tree::time_key(order.expires_at_ms, &order.order_no);
        Ok(self.read_raw(Tree::Expiry, &key)?.is_some())
    }

    /// Pending orders whose hold ran out by `now_ms`, oldest first.
    pub fn due_expiries(&self, now_ms: i64, limit: usize) -> Result<Vec<String>> {
        let upper = tree::u64_key(now_ms.max(0) as u64 + 1);
        let mut out = Vec::new();
        for item in self
            .trees()?
            .get(Tree::Expiry)
            .range(..upper.to_vec())
            .take(limit)
        {
            let (k, _) = item.map_err(storage)?;
            if let Some(no) = tree::time_key_order_no(&k) {
                out.push(no.to_string());
            }
        }
        Ok(out)
    }

    /// The audit trail of payment attempts that changed nothing, oldest
    /// first, each with how many of the order's events there were when it
    /// was decided (`None` for attempts recorded before that was kept).
    pub fn payment_attempts(
        &self,
        order_no: &str,
    ) -> Result<Vec<(crate::domain::model::PaymentAttempt, Option<u32>)>> {
        let prefix = tree::scope_prefix(order_no);
        self.trees()?
            .get(Tree::Attempts)
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, v) = item.map_err(storage)?;
                let seen = k.get(prefix.len()..).and_then(tree::attempt_seen_events);
                Ok((decode(&v)?, seen))
            })
            .collect()
    }

    /// Raw dump of the shop's state — every tree but the bookkeeping (meta)
    /// and the audit trail of payment attempts — for "nothing changed"
    /// comparisons and debugging.
    pub fn dump(&self) -> Result<Vec<RawRecord>> {
        let mut out = Vec::new();
        for t in tree::ALL {
            if t == Tree::Meta || t == Tree::Attempts {
                continue;
            }
            for item in self.trees()?.get(t).iter() {
                let (k, v) = item.map_err(storage)?;
                out.push((t as u8, k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Orders per status, in `OrderStatus::ALL` order, as the writer counts
    /// them (kept with every batch; no scan).
    /// A product's stock as buyers see it: its available keys, or none
    /// while a paid order of it waits for keys (they are that order's
    /// first). Changes to the wait queue raise the products version.
    pub fn stock(&self, p: &crate::domain::model::Product) -> Result<u64> {
        let waiting = crate::domain::order::OrderStatus::AwaitingStock.index();
        if p.counts.available == 0 || self.order_counts()[waiting] == 0 {
            return Ok(p.counts.available);
        }
        let spoken_for = self
            .trees()?
            .get(Tree::Awaiting)
            .scan_prefix(tree::scope_prefix(&p.id))
            .next()
            .transpose()
            .map_err(storage)?
            .is_some();
        Ok(if spoken_for { 0 } else { p.counts.available })
    }

    pub fn order_counts(&self) -> [u64; 6] {
        self.stats()
            .orders_by_status
            .lock()
            .map(|c| *c)
            .unwrap_or_default()
    }

    /// Idempotency records made before `cutoff_ms`, among at most `scan`
    /// rows from key `from` on.
    pub fn expired_idempotency(&self, cutoff_ms: i64, from: &[u8], scan: usize) -> Result<Expired> {
        self.expired_in(Tree::Idem, from, scan, |v| {
            Ok(decode::<IdempotencyRecord>(v)?.created_at_ms < cutoff_ms)
        })
    }

    /// Outbox records (keyed by their first event's seq) whose events were
    /// all delivered and made before `cutoff_ms`, among at most `scan` rows
    /// from key `from` on.
    pub fn expired_outbox(&self, cutoff_ms: i64, from: &[u8], scan: usize) -> Result<Expired> {
        self.expired_in(Tree::Outbox, from, scan, |v| {
            Ok(outbox_group_expired(
                &decode::<Vec<OutboxEvent>>(v)?,
                cutoff_ms,
            ))
        })
    }

    fn expired_in(
        &self,
        t: Tree,
        from: &[u8],
        scan: usize,
        expired: impl Fn(&[u8]) -> Result<bool>,
    ) -> Result<Expired> {
        let mut keys = Vec::new();
        let (mut seen, mut last) = (0, None);
        for item in self.trees()?.get(t).range(from..).take(scan) {
            let (k, v) = item.map_err(storage)?;
            if expired(&v)? {
                keys.push(k.to_vec());
            }
            seen += 1;
            last = Some(k);
        }
        // The smallest key after the last one read.
        let next = last.filter(|_| seen == scan).map(|k| {
            let mut next = k.to_vec();
            next.push(0);
            next
        });
        Ok(Expired { keys, next })
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::model::PaymentAttempt;
    use crate::store::{Store, StoreOptions};

    fn attempt(at_ms: i64, result: &str) -> PaymentAttempt {
        PaymentAttempt {
            at_ms,
            gateway: "hmac".into(),
            trade_no: "T-1".into(),
            amount: 100,
            result: result.into(),
            reason: None,
        }
    }

    /// The event count an attempt was decided against comes back with it;
    /// a key from before that count was kept (time and random tail only)
    /// reads as `None`, in time order with the rest.
    #[test]
    fn payment_attempts_come_back_with_the_events_they_were_decided_against() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        store
            .write_blocking(|tx| {
                tx.record_attempt("F1", &attempt(300, "repeated"), 3)?;
                tx.record_attempt("F1", &attempt(200, "refused"), 1)?;
                tx.record_attempt("F2", &attempt(100, "refused"), 1)?;
                Ok(())
            })
            .unwrap();
        // Written the way attempts were before the count: time, random tail.
        let mut old = super::tree::scoped("F1", &super::tree::time_key(250, ""));
        old.extend_from_slice(&7u32.to_be_bytes());
        store
            .trees()
            .unwrap()
            .get(super::Tree::Attempts)
            .insert(old, super::codec::encode(&attempt(250, "refused")))
            .unwrap();
        let got: Vec<(i64, Option<u32>)> = store
            .payment_attempts("F1")
            .unwrap()
            .into_iter()
            .map(|(a, seen)| (a.at_ms, seen))
            .collect();
        assert_eq!(got, [(200, Some(1)), (250, None), (300, Some(3))]);
    }

    /// A callback replayed without end keeps at most
    /// `MAX_ATTEMPTS_PER_ORDER` rows beside its order, counting those of
    /// the same batch and command; other orders keep their own.
    #[test]
    fn payment_attempts_per_order_are_capped() {
        use super::super::tx::MAX_ATTEMPTS_PER_ORDER as MAX;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        let kept = store
            .write_blocking(|tx| {
                let mut kept = 0;
                for i in 0..MAX - 2 {
                    kept += tx.record_attempt("F1", &attempt(i as i64, "repeated"), 3)? as usize;
                }
                Ok(kept)
            })
            .unwrap();
        assert_eq!(kept, MAX - 2);
        // Later commands, one attempt each, as the callbacks come.
        let mut later = Vec::new();
        for i in 0..5 {
            later.push(
                store
                    .write_blocking(move |tx| {
                        tx.record_attempt("F1", &attempt(1000 + i, "refused"), 4)
                    })
                    .unwrap(),
            );
        }
        assert_eq!(later, [true, true, false, false, false]);
        assert!(store
            .write_blocking(|tx| tx.record_attempt("F2", &attempt(5, "refused"), 1))
            .unwrap());
        // Within one command too.
        let kept_at_once = store
            .write_blocking(|tx| {
                let mut kept = 0;
                for i in 0..MAX + 3 {
                    kept += tx.record_attempt("F3", &attempt(i as i64, "refused"), 1)? as usize;
                }
                Ok(kept)
            })
            .unwrap();
        assert_eq!(kept_at_once, MAX);
        assert_eq!(store.payment_attempts("F3").unwrap().len(), MAX);
        assert_eq!(store.payment_attempts("F1").unwrap().len(), MAX);
        assert_eq!(store.payment_attempts("F2").unwrap().len(), 1);
    }
}
