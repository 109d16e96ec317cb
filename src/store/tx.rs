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
use super::keyblock::{self, KeyBlock, FP_LEN};
use super::tree::{self, Tree, Trees};
use crate::domain::model::{
    DeliveryState, EventKind, IdempotencyRecord, KeyRecord, KeyState, Order, OutboxEvent, Product,
};
use crate::domain::order::OrderStatus;
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

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

    // ---- keys --------------------------------------------------------------

    /// A key's record: its own row once its state changed, else its slot in
    /// the block it was imported in. `None` for unknown or deleted ids.
    pub fn key(&self, id: u64) -> Result<Option<KeyRecord>> {
        match self.get_raw(Tree::Keys, &tree::u64_key(id))? {
            Some(v) => keyblock::own_record(&v).map_err(internal),
            None => {
                let (block, slot) = keyblock::locate(id);
                let b: Option<KeyBlock> = self.get(Tree::KeyBlocks, &keyblock::block_key(block))?;
                Ok(b.and_then(|b| b.record(slot)))
            }
        }
    }

    /// Whether a product ever had a key with this fingerprint.
    pub fn key_fingerprint_known(&mut self, product_id: &str, fp: &[u8; 16]) -> Result<bool> {
        if self
            .cmd_fps
            .get(product_id)
            .is_some_and(|fps| fps.contains(fp))
        {
            return Ok(true);
        }
        self.load_fingerprints(product_id)?;
        Ok(self
            .index
            .fingerprints
            .get(product_id)
            .is_some_and(|set| set.contains(fp)))
    }

    /// Loads the fingerprints of the keys a product has (not those of its
    /// staged uploads), once after a start or a failed batch.
    fn load_fingerprints(&mut self, product_id: &str) -> Result<()> {
        if self.index.fingerprints.contains_key(product_id) {
            return Ok(());
        }
        let staged = self.staged_runs(product_id)?;
        let mut set = FingerprintSet::default();
        let prefix = tree::scope_prefix(product_id);
        for (k, v) in self.scan(Tree::KeyFingerprints, &prefix, usize::MAX)? {
            let block = keyblock::block_of_product_key(&k).unwrap_or(0);
            if !keyblock::in_runs(&staged, block) {
                set.extend(keyblock::fingerprints(&v));
            }
        }
        // The scan also saw this command's own writes, which join the
        // index only if it commits.
        for fp in self.cmd_fps.get(product_id).into_iter().flatten() {
            set.remove(fp);
        }
        self.index.fingerprints.insert(product_id.to_string(), set);
        Ok(())
    }

    /// Stores new available keys of one product (sealed text, fingerprint),
    /// in blocks, and remembers their fingerprints forever. Returns the first
    /// and last id handed out.
    pub fn insert_available_keys(
        &mut self,
        product_id: &str,
        keys: Vec<(Vec<u8>, [u8; FP_LEN])>,
    ) -> Option<(u64, u64)> {
        let mut new_fps = self.cmd_fps.remove(product_id).unwrap_or_default();
        let range = self.put_blocks(product_id, keys, Some(&mut new_fps));
        self.cmd_fps.insert(product_id.to_string(), new_fps);
        range
    }

    /// Writes keys into new blocks with their fingerprints. Given the set
    /// of the product's new fingerprints, the keys are available: their
    /// fingerprints join it and their availability bits are written (a
    /// staged upload's are not). Returns the first and last id handed out.
    fn put_blocks(
        &mut self,
        product_id: &str,
        keys: Vec<(Vec<u8>, [u8; FP_LEN])>,
        mut new_fps: Option<&mut FingerprintSet>,
    ) -> Option<(u64, u64)> {
        let cuts = keyblock::cut(keys.iter().map(|(sealed, _)| sealed.len()));
        let mut block = keyblock::block_at_or_after(self.counters.next_key_id.max(1));
        let mut keys = keys.into_iter();
        let mut range = None;
        for n in cuts {
            let mut sealed = Vec::with_capacity(n);
            let mut fps = Vec::with_capacity(n * FP_LEN);
            for (s, fp) in keys.by_ref().take(n) {
                sealed.push(s);
                fps.extend_from_slice(&fp);
                if let Some(set) = new_fps.as_deref_mut() {
                    set.insert(fp);
                }
            }
            let first = keyblock::first_id(block);
            let last = first + n as u64 - 1;
            range = Some((range.map_or(first, |(f, _)| f), last));
            let bits = if n as u64 == keyblock::BLOCK_KEYS {
                u64::MAX
            } else {
                (1u64 << n) - 1
            };
            self.put(
                Tree::KeyBlocks,
                keyblock::block_key(block).to_vec(),
                &KeyBlock::new(product_id, self.now_ms, &sealed),
            );
            let pk = keyblock::product_block_key(product_id, block);
            if new_fps.is_some() {
                self.put_raw(Tree::Avail, pk.clone(), keyblock::bits_value(bits));
            }
            self.put_raw(Tree::KeyFingerprints, pk, fps);
            block += 1;
        }
        self.counters.next_key_id = keyblock::first_id(block);
        range
    }

    fn has_available_bit(&self, product_id: &str, id: u64) -> Result<bool> {
        let (block, slot) = keyblock::locate(id);
        let pk = keyblock::product_block_key(product_id, block);
        Ok(keyblock::bits(self.get_raw(Tree::Avail, &pk)?.as_deref()) & (1 << slot) != 0)
    }

    /// Sets (`true`) or clears a key's bit in its block's availability row.
    fn set_available(&mut self, product_id: &str, id: u64, available: bool) -> Result<()> {
        let (block, slot) = keyblock::locate(id);
        let pk = keyblock::product_block_key(product_id, block);
        let old = keyblock::bits(self.get_raw(Tree::Avail, &pk)?.as_deref());
        let bits = if available {
            old | (1 << slot)
        } else {
            old & !(1 << slot)
        };
        if bits == 0 {
            self.del_raw(Tree::Avail, pk);
        } else if bits != old {
            self.put_raw(Tree::Avail, pk, keyblock::bits_value(bits));
        }
        Ok(())
    }

    /// The first `n` available key ids of a product, in import order, or
    /// `None` if it has fewer.
    pub fn available_keys(&mut self, product_id: &str, n: usize) -> Result<Option<Vec<u64>>> {
        let prefix = tree::scope_prefix(product_id);
        let floor = self.avail_floor(product_id);
        let from = keyblock::product_block_key(product_id, keyblock::locate(floor).0);
        let mut ids = Vec::with_capacity(n);
        // Blocks of up to 64 ids each: a row per block until `n` are found.
        let mut at = from;
        'blocks: while ids.len() < n {
            let rows = self.scan_from(Tree::Avail, &prefix, &at, (n - ids.len()).min(64))?;
            let Some((last, _)) = rows.last() else { break };
            at = last.clone();
            at.push(0);
            for (k, v) in &rows {
                let Some(block) = keyblock::block_of_product_key(k) else {
                    continue;
                };
                for id in keyblock::ids_in(block, keyblock::bits(Some(v)), floor) {
                    ids.push(id);
                    if ids.len() == n {
                        break 'blocks;
                    }
                }
            }
        }
        // Nothing available at or above the floor: nothing below the next id
        // to be handed out either.
        let first = ids.first().copied().unwrap_or(self.counters.next_key_id);
        self.cmd_floors
            .insert(product_id.to_string(), first.max(floor));
        Ok((ids.len() >= n).then_some(ids))
    }

    fn avail_floor(&self, product_id: &str) -> u64 {
        self.cmd_floors
            .get(product_id)
            .or_else(|| self.index.floors.get(product_id))
            .copied()
            .unwrap_or(0)
    }

    /// Moves a key from `expected` to `next`, failing loudly if the key is not
    /// in the expected state: the compare-and-swap that makes double sale
    /// impossible even if a bug let two claims race.
    pub fn swap_key_state(&mut self, id: u64, expected: &KeyState, next: KeyState) -> Result<()> {
        let mut rec = self.key(id)?.ok_or_else(|| {
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
        match (&rec.state, &next) {
            (KeyState::Available, KeyState::Available) => {}
            (KeyState::Available, _) => self.set_available(&rec.product_id, id, false)?,
            (_, KeyState::Available) => {
                self.set_available(&rec.product_id, id, true)?;
                let floor = self.avail_floor(&rec.product_id).min(id);
                self.cmd_floors.insert(rec.product_id.clone(), floor);
            }
            _ => {}
        }
        rec.state = next;
        self.put(Tree::Keys, tree::u64_key(id).to_vec(), &rec);
        Ok(())
    }

    /// Deletes an available key (its fingerprint stays, so it is never
    /// re-imported as new): an empty row hides its block slot, and the
    /// slot's sealed text is cut out of the block.
    pub fn delete_available_key(&mut self, id: u64, product_id: &str) -> Result<bool> {
        match self.key(id)? {
            Some(rec)
                if rec.product_id == product_id
                    && rec.state == KeyState::Available
                    // A staged upload's key is not available yet.
                    && self.has_available_bit(product_id, id)? =>
            {
                self.put_raw(Tree::Keys, tree::u64_key(id).to_vec(), Vec::new());
                self.set_available(product_id, id, false)?;
                let (block, slot) = keyblock::locate(id);
                let bk = keyblock::block_key(block);
                if let Some(b) = self.get::<KeyBlock>(Tree::KeyBlocks, &bk)? {
                    self.put(Tree::KeyBlocks, bk.to_vec(), &b.without(slot));
                }
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
    /// so the order tree itself lists newest first: no index row, which
    /// cost the commit thread ~5 µs per order (BENCHMARKS, "The order list
    /// without its index row").
    pub fn insert_order(&mut self, o: &Order) {
        self.track(o, None);
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

    // ---- outbox ------------------------------------------------------------
    //
    // The outbox holds *groups*: the events one command emitted for one order
    // (a payment that delivers at once emits `order.paid` and
    // `order.delivered`), stored as one record keyed by the first event's seq,
    // with consecutive seqs. One record per order and command keeps the
    // transactional outbox to one write where it used to take two.

    /// The outbox event `seq`, from the group record holding it.
    pub fn outbox(&self, seq: u64) -> Result<Option<OutboxEvent>> {
        Ok(self
            .outbox_group(seq)?
            .and_then(|(_, g)| g.into_iter().find(|e| e.seq == seq)))
    }

    /// The group holding event `seq`, with the group's key (its first seq).
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
                self.counters.outbox_pending += group.len() as u64;
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
            self.counters.count_outbox(slot.state, false);
            self.counters.count_outbox(e.state, true);
            *slot = e.clone();
        }
        self.put(Tree::Outbox, tree::u64_key(first).to_vec(), &group);
        Ok(())
    }

    /// Deletes the outbox record keyed `first` (its first event's seq) if
    /// it expired (see [`outbox_group_expired`]); whether it did. Delivered
    /// events are in no count, so the counters stay.
    pub fn prune_outbox_group(&mut self, first: u64, cutoff_ms: i64) -> Result<bool> {
        let key = tree::u64_key(first).to_vec();
        let Some(group) = self.get::<Vec<OutboxEvent>>(Tree::Outbox, &key)? else {
            return Ok(false);
        };
        if !outbox_group_expired(&group, cutoff_ms) {
            return Ok(false);
        }
        self.del_raw(Tree::Outbox, key);
        Ok(true)
    }
}

/// Most events one outbox record holds (one command, one order).
pub const OUTBOX_GROUP_MAX: usize = 4;

/// Whether an outbox record may go by retention: every event in it was
/// delivered and created before `cutoff_ms`.
pub(crate) fn outbox_group_expired(group: &[OutboxEvent], cutoff_ms: i64) -> bool {
    group
        .iter()
        .all(|e| e.state == DeliveryState::Delivered && e.created_at_ms < cutoff_ms)
}

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
