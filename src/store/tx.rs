//! A writer transaction: the read-your-writes overlay over sled that one batch
//! of commands runs in, with a savepoint per command.
//!
//! Commands read through the overlay (this command's writes, then the batch's,
//! then sled) and write into it; nothing reaches sled until the whole batch is
//! journaled and fsynced. A command that fails is rolled back alone; the rest
//! of its batch still commits. The typed operations below are what domain code
//! sees; tree names and key layouts stay in this module.

use super::codec;
use super::journal::{Batch, Write};
use super::keyblock;
use super::tree::{self, Tree, Trees};
use crate::domain::model::{
    DeliveryState, EventKind, IdempotencyRecord, KeyRecord, KeyState, Order, OutboxEvent, Product,
};
use crate::domain::order::OrderStatus;
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

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

/// Hashes a key fingerprint by its first 8 bytes. Fingerprints are keyed
/// HMAC outputs, uniformly distributed and not choosable without the master
/// key, so they need no SipHash (which was most of the writer's import time).
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
pub type FingerprintSet = HashSet<[u8; 16], std::hash::BuildHasherDefault<FpHasher>>;

/// Fingerprints of every key ever imported, per product: the writer's
/// de-duplication index. It mirrors `key_hashes` as the writer sees it —
/// sled plus the in-flight batches of the current failure epoch — not sled
/// alone: the writer adds a batch's fingerprints when it hands the batch to
/// the committer (`take_in`), since the next batch is computed before this
/// one is applied, and clears the index when it restarts after a failed
/// batch. A product is loaded the first time it imports after (re)start,
/// through the Tx's in-flight-aware scan. Lives only in the writer thread.
#[derive(Default)]
pub(crate) struct FpIndex {
    products: HashMap<String, FingerprintSet>,
}

impl FpIndex {
    /// Takes in the fingerprints of a batch handed to the committer (for
    /// products already loaded; others load them from sled and the
    /// in-flight batches, which include this one).
    pub(crate) fn take_in(&mut self, writes: &[Write]) {
        for w in writes.iter().filter(|w| w.tree == Tree::KeyHashes as u8) {
            let (Some(v), Some(end)) = (&w.value, w.key.iter().position(|&b| b == 0)) else {
                continue;
            };
            let Ok(pid) = std::str::from_utf8(&w.key[..end]) else {
                continue;
            };
            if let Some(set) = self.products.get_mut(pid) {
                keyblock::fingerprints_of(&w.key[end + 1..], v, |fp| {
                    set.insert(fp);
                });
            }
        }
    }

    /// Forgets everything (after a failed batch the index may be ahead of
    /// the durable state).
    pub(crate) fn clear(&mut self) {
        self.products.clear();
    }
}

type FpSets = HashMap<String, FingerprintSet>;

pub struct Tx<'a> {
    trees: &'a Trees,
    /// Earlier batches not yet in sled, oldest first (see `writer`).
    in_flight: &'a [Arc<Batch>],
    fps: &'a Mutex<FpIndex>,
    /// Fingerprints imported by this command and by the batch so far (the
    /// index holds those of earlier batches).
    cmd_fps: FpSets,
    batch_fps: FpSets,
    batch: Overlay,
    cmd: Overlay,
    pub(crate) counters: Counters,
    saved_counters: Counters,
    now_ms: i64,
    pub(crate) webhooks: bool,
    /// Webhook events the current command emitted, written at its commit as
    /// one outbox record per order (see `put_outbox_group`).
    events: Vec<(String, EventKind)>,
}

fn internal(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "store read failed inside the writer");
    Error::unavailable("storage error, try again")
}

impl<'a> Tx<'a> {
    pub(crate) fn new(
        trees: &'a Trees,
        in_flight: &'a [Arc<Batch>],
        fps: &'a Mutex<FpIndex>,
        counters: Counters,
        now_ms: i64,
        webhooks: bool,
    ) -> Self {
        Tx {
            trees,
            in_flight,
            fps,
            cmd_fps: FpSets::new(),
            batch_fps: FpSets::new(),
            batch: Overlay::new(),
            cmd: Overlay::new(),
            counters,
            saved_counters: counters,
            now_ms,
            webhooks,
            events: Vec::new(),
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
        for (pid, set) in std::mem::take(&mut self.cmd_fps) {
            self.batch_fps.entry(pid).or_default().extend(set);
        }
        self.saved_counters = self.counters;
    }

    pub(crate) fn rollback_cmd(&mut self) {
        self.cmd.clear();
        self.cmd_fps.clear();
        self.events.clear();
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
    /// order, merging this command's, the batch's and the in-flight batches'
    /// writes over sled (the first source holding a key wins).
    fn scan(&self, t: Tree, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_from(t, prefix, prefix, limit)
    }

    /// [`Tx::scan`] starting at `from` (which starts with `prefix`).
    fn scan_from(
        &self,
        t: Tree,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.merged(t, prefix, from, true, |k, v| {
            out.push((k, v));
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Visits the live entries of `t` whose key starts with `prefix`, from
    /// `from` on, in key order, merging (if `overlays`) this command's and
    /// the batch's writes, then the in-flight batches' writes, over sled:
    /// the first source holding a key wins, a delete hides the key. `f`
    /// returns false to stop.
    fn merged(
        &self,
        t: Tree,
        prefix: &[u8],
        from: &[u8],
        overlays: bool,
        mut f: impl FnMut(Vec<u8>, Vec<u8>) -> bool,
    ) -> Result<()> {
        let tb = t as u8;
        let mut sources: Vec<Source<'_>> = Vec::new();
        if overlays {
            sources.push(overlay_source(&self.cmd, tb, prefix, from));
            sources.push(overlay_source(&self.batch, tb, prefix, from));
        }
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
        let sled = self
            .trees
            .get(t)
            .range(from..)
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), Some(v.to_vec())))
                    .map_err(internal)
            });
        sources.push((Box::new(sled) as Box<dyn Iterator<Item = _>>).peekable());
        loop {
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
            let Some(min) = min else { return Ok(()) };
            let mut value: Option<Option<Vec<u8>>> = None;
            for s in sources.iter_mut() {
                if matches!(s.peek(), Some(Ok((k, _))) if *k == min) {
                    if let Some(Ok((_, v))) = s.next() {
                        value.get_or_insert(v);
                    }
                }
            }
            if let Some(Some(v)) = value {
                if !f(min, v) {
                    return Ok(());
                }
            }
        }
    }

    /// The live entry with the greatest key `<= key` that starts with
    /// `prefix`, over the same sources as [`Tx::scan`] (a delete in a source
    /// hides the key in the sources below it).
    fn floor_raw(&self, t: Tree, prefix: &[u8], key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let tb = t as u8;
        let mut upper = Bound::Included(key.to_vec());
        loop {
            let below = |k: &[u8], u: &Bound<Vec<u8>>| match u {
                Bound::Included(u) => k <= u.as_slice(),
                Bound::Excluded(u) => k < u.as_slice(),
                Bound::Unbounded => true,
            };
            // Each source's greatest entry under `upper`, highest priority first.
            let mut cands: Vec<Option<Entry>> = Vec::new();
            for o in [&self.cmd, &self.batch] {
                let ob = match &upper {
                    Bound::Included(k) => Bound::Included((tb, k.clone())),
                    Bound::Excluded(k) => Bound::Excluded((tb, k.clone())),
                    Bound::Unbounded => Bound::Unbounded,
                };
                let lower = Bound::Included((tb, prefix.to_vec()));
                cands.push(
                    o.range((lower, ob))
                        .next_back()
                        .map(|(k, v)| (k.1.clone(), v.clone())),
                );
            }
            for b in self.in_flight.iter().rev() {
                let end = b
                    .writes
                    .partition_point(|w| w.tree < tb || (w.tree == tb && below(&w.key, &upper)));
                cands.push(
                    end.checked_sub(1)
                        .map(|i| &b.writes[i])
                        .filter(|w| w.tree == tb && w.key.starts_with(prefix))
                        .map(|w| (w.key.clone(), w.value.clone())),
                );
            }
            let sled_upper = upper.as_ref().map(|k| k.as_slice());
            cands.push(
                match self
                    .trees
                    .get(t)
                    .range::<&[u8], _>((Bound::Included(prefix), sled_upper))
                    .next_back()
                {
                    Some(r) => {
                        let (k, v) = r.map_err(internal)?;
                        Some((k.to_vec(), Some(v.to_vec())))
                    }
                    None => None,
                },
            );
            let Some(max) = cands.iter().flatten().map(|(k, _)| k).max().cloned() else {
                return Ok(None);
            };
            let value = cands
                .into_iter()
                .flatten()
                .find(|(k, _)| *k == max)
                .and_then(|(_, v)| v);
            match value {
                Some(v) => return Ok(Some((max, v))),
                // Deleted in a newer source: look further down.
                None => upper = Bound::Excluded(max),
            }
        }
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
        let idk = tree::u64_key(id);
        if let Some(rec) = self.get(Tree::Keys, &idk)? {
            return Ok(Some(rec));
        }
        if self.get_raw(Tree::DeletedKeys, &idk)?.is_some() {
            return Ok(None);
        }
        Ok(self
            .floor_raw(Tree::KeyBlocks, &[], &idk)?
            .and_then(|(k, v)| keyblock::record_in(tree::read_u64(&k)?, &v, id)))
    }

    /// Whether a product ever had a key with this fingerprint.
    pub fn key_fingerprint_known(&self, product_id: &str, fp: &[u8; 16]) -> Result<bool> {
        let in_overlay = |sets: &FpSets| sets.get(product_id).is_some_and(|s| s.contains(fp));
        if in_overlay(&self.cmd_fps) || in_overlay(&self.batch_fps) {
            return Ok(true);
        }
        let mut index = self.fps.lock().unwrap_or_else(|p| p.into_inner());
        if !index.products.contains_key(product_id) {
            // First import of this product since (re)start: load from sled
            // *and* the in-flight batches (computed but maybe not applied
            // yet; the index already holds them for loaded products only).
            // This command's and batch's own writes are left out: they are
            // in `cmd_fps`/`batch_fps`, and a rolled-back command must not
            // leave fingerprints behind in the index.
            let prefix = tree::scope_prefix(product_id);
            let mut set = FingerprintSet::default();
            self.merged(Tree::KeyHashes, &prefix, &prefix, false, |k, v| {
                keyblock::fingerprints_of(&k[prefix.len()..], &v, |fp| {
                    set.insert(fp);
                });
                true
            })?;
            index.products.insert(product_id.to_string(), set);
        }
        Ok(index.products[product_id].contains(fp))
    }

    /// Stores new available keys (sealed text, fingerprint) under consecutive
    /// ids, as blocks: a few writes for the whole lot instead of three per
    /// key. Their fingerprints are remembered forever. Returns the first id.
    pub fn insert_available_keys(
        &mut self,
        product_id: &str,
        imported_at_ms: i64,
        keys: Vec<(Vec<u8>, [u8; 16])>,
    ) -> u64 {
        let first = self.counters.next_key_id.max(1);
        if keys.is_empty() {
            return first;
        }
        let n = keys.len() as u64;
        self.counters.next_key_id = first + n;
        let mut fps = Vec::with_capacity(keys.len() * 16);
        let set = self.cmd_fps.entry(product_id.to_string()).or_default();
        let mut sealed = Vec::with_capacity(keys.len());
        for (s, fp) in keys {
            fps.extend_from_slice(&fp);
            set.insert(fp);
            sealed.push(s);
        }
        for (i, chunk) in sealed.chunks(keyblock::KEYS_PER_BLOCK).enumerate() {
            let id = first + (i * keyblock::KEYS_PER_BLOCK) as u64;
            self.put_raw(
                Tree::KeyBlocks,
                tree::u64_key(id).to_vec(),
                keyblock::encode(product_id, imported_at_ms, chunk),
            );
        }
        self.put_raw(
            Tree::KeyHashes,
            keyblock::fp_block_key(product_id, first),
            fps,
        );
        let last = first + n - 1;
        self.put_raw(
            Tree::Avail,
            tree::scoped(product_id, &tree::u64_key(last)),
            keyblock::run_value(first, last),
        );
        first
    }

    /// Takes one id out of the product's runs of available ids.
    fn remove_available(&mut self, product_id: &str, id: u64) -> Result<()> {
        let prefix = tree::scope_prefix(product_id);
        let key = tree::scoped(product_id, &tree::u64_key(id));
        // The run holding `id` is the first whose last id is >= id.
        let Some((k, v)) = self.scan_from(Tree::Avail, &prefix, &key, 1)?.pop() else {
            return Ok(());
        };
        let Some(last) = tree::read_u64(&k[prefix.len()..]) else {
            return Ok(());
        };
        let first = keyblock::run_first(last, &v);
        if id < first {
            return Ok(());
        }
        if id < last {
            // Taking from the front (a claim) rewrites the run in place.
            self.put_raw(Tree::Avail, k, keyblock::run_value(id + 1, last));
        } else {
            self.del_raw(Tree::Avail, k);
        }
        if first < id {
            let v = keyblock::run_value(first, id - 1);
            self.put_raw(
                Tree::Avail,
                tree::scoped(product_id, &tree::u64_key(id - 1)),
                v,
            );
        }
        Ok(())
    }

    /// The first `n` available key ids of a product, in import order, or
    /// `None` if it has fewer.
    pub fn available_keys(&self, product_id: &str, n: usize) -> Result<Option<Vec<u64>>> {
        let prefix = tree::scope_prefix(product_id);
        // Every run holds at least one id, so n runs are enough.
        let runs = self.scan(Tree::Avail, &prefix, n)?;
        let mut ids = Vec::with_capacity(n);
        'runs: for (k, v) in runs {
            let Some(last) = tree::read_u64(&k[prefix.len()..]) else {
                continue;
            };
            for id in keyblock::run_first(last, &v)..=last {
                if ids.len() == n {
                    break 'runs;
                }
                ids.push(id);
            }
        }
        Ok((ids.len() == n).then_some(ids))
    }

    /// Moves a key from `expected` to `next`, failing loudly if the key is not
    /// in the expected state: the compare-and-swap that makes double sale
    /// impossible even if a bug let two claims race.
    pub fn swap_key_state(&mut self, id: u64, expected: &KeyState, next: KeyState) -> Result<()> {
        let idk = tree::u64_key(id);
        let mut rec: KeyRecord = self.key(id)?.ok_or_else(|| {
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
            (KeyState::Available, _) => {
                let pid = rec.product_id.clone();
                self.remove_available(&pid, id)?
            }
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
        match self.key(id)? {
            Some(rec) if rec.product_id == product_id && rec.state == KeyState::Available => {
                self.del_raw(Tree::Keys, idk.to_vec());
                // A key in a block stays there: mark it gone.
                self.put_raw(Tree::DeletedKeys, idk.to_vec(), Vec::new());
                self.remove_available(product_id, id)?;
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
    //
    // The outbox holds *groups*: the events one command emitted for one order
    // (a payment that delivers at once emits `order.paid` and
    // `order.delivered`), stored as one record keyed by the first event's seq,
    // with consecutive seqs. One record per order and command keeps the
    // transactional outbox to one write where it used to take two.

    /// The outbox event `seq` and the key of the group holding it.
    pub fn outbox(&self, seq: u64) -> Result<Option<OutboxEvent>> {
        Ok(self
            .outbox_group(seq)?
            .and_then(|(_, g)| g.into_iter().find(|e| e.seq == seq)))
    }

    fn outbox_group(&self, seq: u64) -> Result<Option<(u64, Vec<OutboxEvent>)>> {
        for first in (seq.saturating_sub(OUTBOX_GROUP_MAX as u64 - 1)..=seq).rev() {
            if let Some(g) = self.get::<Vec<OutboxEvent>>(Tree::Outbox, &tree::u64_key(first))? {
                if g.iter().any(|e| e.seq == seq) {
                    return Ok(Some((first, g)));
                }
            }
        }
        Ok(None)
    }

    /// Records that the current command changed `order_no` in a way
    /// merchants are told about; written when the command commits.
    pub fn emit_event(&mut self, order_no: &str, kind: EventKind) {
        self.events.push((order_no.to_string(), kind));
    }

    fn flush_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        while !events.is_empty() {
            let order_no = events[0].0.clone();
            let (mine, rest): (Vec<_>, Vec<_>) =
                events.into_iter().partition(|(o, _)| *o == order_no);
            events = rest;
            for chunk in mine.chunks(OUTBOX_GROUP_MAX) {
                let group: Vec<OutboxEvent> = chunk
                    .iter()
                    .map(|(_, kind)| {
                        let seq = self.next_outbox_seq();
                        new_event(seq, &order_no, *kind, self.now_ms)
                    })
                    .collect();
                let key = tree::u64_key(group[0].seq).to_vec();
                self.put(Tree::Outbox, key, &group);
            }
        }
    }

    fn next_outbox_seq(&mut self) -> u64 {
        let seq = self.counters.next_outbox_seq.max(1);
        self.counters.next_outbox_seq = seq + 1;
        seq
    }

    /// Stores a changed outbox event back into its group. (No separate
    /// to-send index: the dispatcher scans from its low-water mark.)
    pub fn put_outbox(&mut self, e: &OutboxEvent) -> Result<()> {
        let Some((first, mut group)) = self.outbox_group(e.seq)? else {
            return Err(Error::not_found(format!(
                "webhook event {} not found",
                e.seq
            )));
        };
        for slot in group.iter_mut().filter(|x| x.seq == e.seq) {
            *slot = e.clone();
        }
        self.put(Tree::Outbox, tree::u64_key(first).to_vec(), &group);
        Ok(())
    }
}

/// Most events one outbox record holds (one command, one order).
pub const OUTBOX_GROUP_MAX: usize = 4;

fn new_event(seq: u64, order_no: &str, kind: EventKind, now: i64) -> OutboxEvent {
    OutboxEvent {
        id: format!("evt_{seq:016}_{order_no}"),
        seq,
        order_no: order_no.to_string(),
        kind,
        created_at_ms: now,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_ms: now,
        retry_from_ms: now,
        last_error: None,
    }
}

type Entry = (Vec<u8>, Option<Vec<u8>>);
type Source<'s> = std::iter::Peekable<Box<dyn Iterator<Item = Result<Entry>> + 's>>;

/// An overlay's entries of tree `tb` under `prefix`, from `from`, in key order.
fn overlay_source<'s>(o: &'s Overlay, tb: u8, prefix: &'s [u8], from: &[u8]) -> Source<'s> {
    let lower = Bound::Included((tb, from.to_vec()));
    let it = o
        .range((lower, Bound::Unbounded))
        .take_while(move |(k, _)| k.0 == tb && k.1.starts_with(prefix))
        .map(|(k, v)| Ok((k.1.clone(), v.clone())));
    (Box::new(it) as Box<dyn Iterator<Item = _>>).peekable()
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
        let fps = Mutex::new(FpIndex::default());
        let mut tx = Tx::new(&trees, &in_flight, &fps, Counters::default(), 0, false);
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
        assert_eq!(
            tx.scan_from(Tree::Avail, b"p\0", b"p\0b", 10).unwrap(),
            expect(&[(b"p\0b", b"new")])
        );
        // Floor: the greatest live key <= k, deletes hiding older sources.
        let floor = |tx: &Tx, k: &[u8]| tx.floor_raw(Tree::Avail, b"p\0", k).unwrap();
        assert_eq!(
            floor(&tx, b"p\0b"),
            Some((b"p\0b".to_vec(), b"new".to_vec()))
        );
        assert_eq!(
            floor(&tx, b"p\0z"),
            Some((b"p\0b".to_vec(), b"new".to_vec()))
        );
        assert_eq!(
            floor(&tx, b"p\0a"),
            Some((b"p\0a".to_vec(), b"cmd".to_vec()))
        );
        tx.del_raw(Tree::Avail, b"p\0a".to_vec());
        assert_eq!(
            floor(&tx, b"p\0a"),
            None,
            "deleted here, in flight and in sled"
        );
        assert_eq!(
            floor(&tx, b"p\0c"),
            Some((b"p\0b".to_vec(), b"new".to_vec()))
        );
    }
}
