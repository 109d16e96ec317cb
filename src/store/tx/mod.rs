//! A writer transaction: the read-your-writes overlay over sled that one batch
//! of commands runs in, with a savepoint per command.
//!
//! Commands read through the overlay (this command's writes, then the batch's,
//! then sled) and write into it; nothing reaches sled until the whole batch is
//! journaled and fsynced. A command that fails is rolled back alone; the rest
//! of its batch still commits. The typed operations below are what domain code
//! sees; tree names and key layouts stay in this folder: `keys`, `orders`,
//! `coupons` and `outbox` hold the operations on each, `staging` a key
//! upload's.

use super::codec;
use super::journal::{Batch, Write};
use super::keyblock::FP_LEN;
use super::tree::{self, Tree, Trees};
use crate::domain::model::{DeliveryState, EmailEvent, EventKind, Product};
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

mod coupons;
pub(crate) use coupons::coupon_email_key;
pub(crate) mod emails;
mod keys;
mod orders;
pub(crate) mod outbox;
mod staging;
pub use staging::Published;

type Overlay = BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>;

/// How many payment attempts that changed nothing (repeats, refusals) are
/// kept beside one order.
pub const MAX_ATTEMPTS_PER_ORDER: usize = 32;

/// Counters the writer hands out; persisted in the meta tree with each batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub next_key_id: u64,
    pub next_order_seq: u64,
    pub next_outbox_seq: u64,
    /// Orders per status, in `OrderStatus::ALL` order (for metrics).
    pub orders_by_status: [u64; 6],
    /// Outbox events waiting to be sent, and given up on (for metrics:
    /// counting them in the outbox would read every event ever sent).
    pub outbox_pending: u64,
    pub outbox_dead: u64,
}

impl Counters {
    /// Counts an outbox event into (`add`) or out of its state's count.
    pub(crate) fn count_outbox(&mut self, state: DeliveryState, add: bool) {
        let c = match state {
            DeliveryState::Pending => &mut self.outbox_pending,
            DeliveryState::Dead => &mut self.outbox_dead,
            DeliveryState::Delivered => return,
        };
        *c = if add { *c + 1 } else { c.saturating_sub(1) };
    }
}

/// Per product, a key id below which it has no available key: where the
/// search for available keys starts. A claim leaves its deleted row in the
/// overlays, and in sled until its batch is applied, so a search from the
/// product's first id steps over every claim of the batches in flight (each
/// order of a flash sale over all the orders before it). Only a hint that
/// keeps this invariant: raised to the first id a search found, lowered when
/// a key becomes available again, set by a command only when it commits, and
/// forgotten (`clear`) when a batch fails. Absent means 0.
pub(crate) type AvailFloors = HashMap<String, u64>;

/// Hashes a key fingerprint by its first 8 bytes. Fingerprints are keyed
/// HMAC outputs, uniform and not choosable without the shop's master key,
/// so they need no SipHash (which would be most of the writer's import time).
#[derive(Default, Clone, Copy)]
pub struct FpHasher(u64);

impl std::hash::Hasher for FpHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
    }
    fn write_usize(&mut self, _: usize) {}
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A set of key fingerprints.
pub type FingerprintSet = HashSet<[u8; FP_LEN], std::hash::BuildHasherDefault<FpHasher>>;

/// Per product, the fingerprint of every key it ever had, as the writer sees
/// the store (sled, the batches in flight, the commands committed so far):
/// the import's de-duplication. A product is loaded from `key_fingerprints`
/// on its first import after a start; a command's new fingerprints join at
/// its commit; the whole index is forgotten (`clear`) when a batch fails,
/// like the floors.
pub(crate) type FingerprintIndex = HashMap<String, FingerprintSet>;

/// Per client (`hold_key`: "ip"|"email", 0, who), its unpaid orders
/// holding keys: what the hold caps compare with. Never stored: it is a
/// function of the pending orders, counted from them when the writer first
/// needs it after a start (or a failed batch) and kept in step by every
/// order's status change at its command's commit. Keeping it in sled cost
/// two to four row writes per order and payment.
pub(crate) type HoldCounts = HashMap<Vec<u8>, u64>;

/// What the writer remembers between batches to spare itself sled reads.
/// Only hints that follow the store exactly; dropped when a batch fails.
#[derive(Default)]
pub(crate) struct WriterIndex {
    pub floors: AvailFloors,
    pub fingerprints: FingerprintIndex,
    /// `None` until first needed.
    pub holds: Option<HoldCounts>,
}

impl WriterIndex {
    pub(crate) fn clear(&mut self) {
        self.floors.clear();
        self.fingerprints.clear();
        self.holds = None;
    }
}

pub struct Tx<'a> {
    trees: &'a Trees,
    /// The writer's floors and fingerprints, as of the last committed command.
    index: &'a mut WriterIndex,
    /// This command's changes to the floors, kept at its commit.
    cmd_floors: AvailFloors,
    /// This command's new fingerprints, kept at its commit.
    cmd_fps: FingerprintIndex,
    /// This command's changes to the hold counts, applied at its commit.
    cmd_holds: HashMap<Vec<u8>, i64>,
    /// Available counts of the products this command wrote.
    cmd_stock: Vec<(String, u64)>,
    /// Products whose fingerprints this command's publish of an upload
    /// added to the index (see `staging`): dropped if it is rolled back.
    cmd_published: Vec<String>,
    /// Bytes of keys and values written in this batch so far, rolled-back
    /// commands included (an upper bound, for [`Tx::written_bytes`]).
    written: usize,
    /// Those of committed commands, for the writer to publish
    /// (`writer::EarlyStock`).
    stock: Vec<(String, u64)>,
    /// Earlier batches not yet in sled, oldest first (see `writer`).
    in_flight: &'a [Arc<Batch>],
    batch: Overlay,
    cmd: Overlay,
    pub(crate) counters: Counters,
    saved_counters: Counters,
    now_ms: i64,
    pub(crate) webhooks: bool,
    /// Which e-mails commands queue (see `emails`).
    pub(crate) mailing: super::Mailing,
    /// Webhook events the current command emitted, written at its commit as
    /// one outbox record per order (see `put_outbox_group`).
    events: Vec<(String, EventKind)>,
    /// E-mails the current command queued, and those of the batch's
    /// committed commands: written as group records when the batch closes
    /// (see `emails`).
    cmd_emails: Vec<EmailEvent>,
    batch_emails: Vec<EmailEvent>,
}

fn internal(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "store read failed inside the writer");
    Error::unavailable("storage error, try again")
}

impl<'a> Tx<'a> {
    pub(crate) fn new(
        trees: &'a Trees,
        in_flight: &'a [Arc<Batch>],
        index: &'a mut WriterIndex,
        counters: Counters,
        now_ms: i64,
        webhooks: bool,
    ) -> Self {
        Tx {
            trees,
            index,
            cmd_floors: AvailFloors::new(),
            cmd_fps: HashMap::new(),
            cmd_holds: HashMap::new(),
            cmd_stock: Vec::new(),
            cmd_published: Vec::new(),
            written: 0,
            stock: Vec::new(),
            in_flight,
            batch: Overlay::new(),
            cmd: Overlay::new(),
            counters,
            saved_counters: counters,
            now_ms,
            webhooks,
            mailing: super::Mailing::default(),
            events: Vec::new(),
            cmd_emails: Vec::new(),
            batch_emails: Vec::new(),
        }
    }

    /// The batch's clock: every command in a batch sees the same now.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub(crate) fn commit_cmd(&mut self) {
        self.flush_events();
        let cmd = std::mem::take(&mut self.cmd);
        self.batch.extend(cmd);
        self.index.floors.extend(self.cmd_floors.drain());
        for (product, fps) in self.cmd_fps.drain() {
            // Products not loaded load later from the store, which has them.
            if let Some(set) = self.index.fingerprints.get_mut(&product) {
                set.extend(fps);
            }
        }
        // Not loaded: counted later from the store, which has this command.
        if let Some(holds) = self.index.holds.as_mut() {
            for (key, delta) in self.cmd_holds.drain() {
                let n = holds.get(&key).map_or(0, |&n| n as i64) + delta;
                if n > 0 {
                    holds.insert(key, n as u64);
                } else {
                    holds.remove(&key);
                }
            }
        }
        self.cmd_holds.clear();
        self.cmd_published.clear();
        self.stock.append(&mut self.cmd_stock);
        self.batch_emails.append(&mut self.cmd_emails);
        self.saved_counters = self.counters;
    }

    /// Available counts of products written by the commands committed since
    /// the last call, oldest first.
    pub(crate) fn take_stock(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.stock)
    }

    pub(crate) fn rollback_cmd(&mut self) {
        self.cmd.clear();
        self.cmd_floors.clear();
        self.cmd_fps.clear();
        self.cmd_holds.clear();
        self.cmd_stock.clear();
        for product in self.cmd_published.drain(..) {
            self.index.fingerprints.remove(&product);
        }
        self.events.clear();
        self.cmd_emails.clear();
        self.counters = self.saved_counters;
    }

    pub(crate) fn is_empty(&self) -> bool {
        // A resend writes nothing but its e-mail.
        self.batch.is_empty() && self.batch_emails.is_empty()
    }

    /// The batch's writes, in key order, for the journal and sled.
    pub(crate) fn into_writes(mut self) -> Vec<Write> {
        self.flush_emails();
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
        for b in self.in_flight.iter().rev() {
            if let Ok(i) = b
                .writes
                .binary_search_by(|w| (w.tree, &w.key[..]).cmp(&(k.0, key)))
            {
                return Ok(b.writes[i].value.clone());
            }
        }
        Ok(self
            .trees
            .get(t)
            .get(key)
            .map_err(|e| internal(self.trees.note_error(e)))?
            .map(|v| v.to_vec()))
    }

    fn put_raw(&mut self, t: Tree, key: Vec<u8>, value: Vec<u8>) {
        self.written += key.len() + value.len();
        self.cmd.insert((t as u8, key), Some(value));
    }

    fn del_raw(&mut self, t: Tree, key: Vec<u8>) {
        self.written += key.len();
        self.cmd.insert((t as u8, key), None);
    }

    /// About how many bytes the batch writes (at least that many): the
    /// writer closes a batch past `writer::MAX_BATCH_BYTES`.
    pub(crate) fn written_bytes(&self) -> usize {
        self.written
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
    /// order, merging this command's, the batch's and the in-flight batches'
    /// writes over sled (the first source holding a key wins).
    fn scan(&self, t: Tree, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_from(t, prefix, prefix, limit)
    }

    /// [`Tx::scan`] from key `from` on (`from` starts with `prefix`).
    fn scan_from(
        &self,
        t: Tree,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tb = t as u8;
        let mut sources: Vec<Source<'_>> = vec![
            overlay_source(&self.cmd, tb, prefix, from),
            overlay_source(&self.batch, tb, prefix, from),
        ];
        for b in self.in_flight.iter().rev() {
            let start = b
                .writes
                .partition_point(|w| (w.tree, &w.key[..]) < (tb, from));
            let it = b.writes[start..]
                .iter()
                .take_while(move |w| w.tree == tb && w.key.starts_with(prefix))
                .map(|w| Ok((w.key.clone(), w.value.clone())));
            sources.push((Box::new(it) as Box<dyn Iterator<Item = _>>).peekable());
        }
        let trees = self.trees;
        let sled = trees
            .get(t)
            .range(from..)
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), Some(v.to_vec())))
                    .map_err(|e| internal(trees.note_error(e)))
            });
        sources.push((Box::new(sled) as Box<dyn Iterator<Item = _>>).peekable());
        let mut out = Vec::new();
        while out.len() < limit {
            let mut min: Option<Vec<u8>> = None;
            for s in sources.iter_mut() {
                match s.peek() {
                    Some(Ok((k, _))) if min.as_ref().is_none_or(|m| k < m) => {
                        min = Some(k.clone());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        if let Some(Err(e)) = s.next() {
                            return Err(e);
                        }
                    }
                    None => {}
                }
            }
            let Some(min) = min else { break };
            let mut value: Option<Option<Vec<u8>>> = None;
            for s in sources.iter_mut() {
                if matches!(s.peek(), Some(Ok((k, _))) if *k == min) {
                    if let Some(Ok((_, v))) = s.next() {
                        value.get_or_insert(v);
                    }
                }
            }
            if let Some(Some(v)) = value {
                out.push((min, v));
            }
        }
        Ok(out)
    }

    // ---- the shop's identity ------------------------------------------------

    /// Records the master key's check value, which binds the key to this
    /// store (see `startup::verify_master_key`).
    pub fn put_key_check(&mut self, check: &[u8; 32]) {
        self.put(Tree::Meta, tree::META_KEY_CHECK.to_vec(), &check.to_vec());
    }

    /// The salt of the shop's order tokens: the stored one, or `fresh`,
    /// stored now, when there is none.
    pub fn order_token_salt(&mut self, fresh: [u8; 32]) -> Result<Vec<u8>> {
        let key = tree::META_ORDER_TOKEN_SALT;
        if let Some(salt) = self.get::<Vec<u8>>(Tree::Meta, key)? {
            return Ok(salt);
        }
        self.put(Tree::Meta, key.to_vec(), &fresh.to_vec());
        Ok(fresh.to_vec())
    }

    // ---- products ----------------------------------------------------------

    pub fn product(&self, id: &str) -> Result<Option<Product>> {
        match self.get_raw(Tree::Products, id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => codec::decode_product(&bytes).map(Some).map_err(internal),
        }
    }

    pub fn put_product(&mut self, p: &Product) {
        self.put_raw(
            Tree::Products,
            p.id.as_bytes().to_vec(),
            codec::encode_product(p),
        );
        self.cmd_stock.push((p.id.clone(), p.counts.available));
    }
}

type Entry = (Vec<u8>, Option<Vec<u8>>);
type Source<'s> = std::iter::Peekable<Box<dyn Iterator<Item = Result<Entry>> + 's>>;

/// An overlay's entries of tree `tb` under `prefix` from `from` on, in key
/// order.
fn overlay_source<'s>(o: &'s Overlay, tb: u8, prefix: &'s [u8], from: &[u8]) -> Source<'s> {
    let lower = Bound::Included((tb, from.to_vec()));
    let it = o
        .range((lower, Bound::Unbounded))
        .take_while(move |(k, _)| k.0 == tb && k.1.starts_with(prefix))
        .map(|(k, v)| Ok((k.1.clone(), v.clone())));
    (Box::new(it) as Box<dyn Iterator<Item = _>>).peekable()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(t: Tree, key: &[u8], value: Option<&[u8]>) -> Write {
        Write {
            tree: t as u8,
            key: key.to_vec(),
            value: value.map(|v| v.to_vec()),
        }
    }

    fn batch(seq: u64, mut writes: Vec<Write>) -> Arc<Batch> {
        writes.sort_by(|a, b| (a.tree, &a.key).cmp(&(b.tree, &b.key)));
        Arc::new(Batch { seq, writes })
    }

    /// The writer computes a batch while earlier ones are still being made
    /// durable: its reads must see them, newest first, over sled.
    #[test]
    fn reads_see_in_flight_batches_over_sled_and_under_the_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::open(dir.path(), 1 << 20).unwrap();
        let avail = trees.get(Tree::Avail);
        for k in [&b"p\0a"[..], b"p\0b", b"p\0c", b"q\0a"] {
            avail.insert(k, b"sled".to_vec()).unwrap();
        }
        let older = batch(
            1,
            vec![
                w(Tree::Avail, b"p\0a", None),
                w(Tree::Avail, b"p\0b", Some(b"old")),
                w(Tree::Avail, b"p\0d", Some(b"old")),
                w(Tree::Keys, b"p\0zz", Some(b"other tree")),
            ],
        );
        let newer = batch(
            2,
            vec![
                w(Tree::Avail, b"p\0b", Some(b"new")),
                w(Tree::Avail, b"p\0d", None),
                w(Tree::Avail, b"p\0e", Some(b"new")),
            ],
        );
        let in_flight = [older, newer];
        let mut index = WriterIndex::default();
        let mut tx = Tx::new(
            &trees,
            &in_flight,
            &mut index,
            Counters::default(),
            0,
            false,
        );
        assert_eq!(
            tx.get_raw(Tree::Avail, b"p\0a").unwrap(),
            None,
            "deleted in flight"
        );
        assert_eq!(tx.get_raw(Tree::Avail, b"p\0b").unwrap().unwrap(), b"new");
        assert_eq!(tx.get_raw(Tree::Avail, b"p\0c").unwrap().unwrap(), b"sled");
        assert_eq!(tx.get_raw(Tree::Avail, b"p\0d").unwrap(), None);
        assert_eq!(tx.get_raw(Tree::Keys, b"p\0b").unwrap(), None);
        let scan =
            |tx: &Tx| -> Vec<(Vec<u8>, Vec<u8>)> { tx.scan(Tree::Avail, b"p\0", 10).unwrap() };
        let expect = |pairs: &[(&[u8], &[u8])]| -> Vec<(Vec<u8>, Vec<u8>)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect()
        };
        assert_eq!(
            scan(&tx),
            expect(&[(b"p\0b", b"new"), (b"p\0c", b"sled"), (b"p\0e", b"new")])
        );
        // This batch's own writes win over everything below them.
        tx.put_raw(Tree::Avail, b"p\0a".to_vec(), b"cmd".to_vec());
        tx.del_raw(Tree::Avail, b"p\0e".to_vec());
        tx.commit_cmd();
        tx.del_raw(Tree::Avail, b"p\0c".to_vec());
        assert_eq!(scan(&tx), expect(&[(b"p\0a", b"cmd"), (b"p\0b", b"new")]));
        assert_eq!(tx.scan(Tree::Avail, b"p\0", 1).unwrap().len(), 1, "limit");
        assert_eq!(tx.scan(Tree::Avail, b"q\0", 10).unwrap().len(), 1);
    }
}
