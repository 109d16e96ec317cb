//! The key operations of a `Tx`: a key's record, the fingerprints that
//! refuse a duplicate, the blocks keys are imported in and the bitmaps of
//! which are still available.

use super::{internal, FingerprintSet, Tx};
use crate::domain::model::{KeyRecord, KeyState};
use crate::error::{Error, Result};
use crate::store::keyblock::{self, KeyBlock, FP_LEN};
use crate::store::tree::{self, Tree};

impl Tx<'_> {
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
    pub(super) fn load_fingerprints(&mut self, product_id: &str) -> Result<()> {
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
    pub(super) fn put_blocks(
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

    pub(super) fn avail_floor(&self, product_id: &str) -> u64 {
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
}
