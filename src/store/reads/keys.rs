//! Key reads: one key's record (its own row or its slot in a block), walks
//! and pages over every key, staged uploads, and the available-key index.

use super::{decode, storage};
use crate::domain::model::KeyRecord;
use crate::error::Result;
use crate::store::keyblock::{self, KeyBlock};
use crate::store::tree::{self, Tree};
use crate::store::Store;
use std::collections::BTreeMap;

pub struct KeyPage {
    pub keys: Vec<(u64, KeyRecord)>,
    pub next_cursor: Option<u64>,
}

impl Store {
    /// A key's record: its own row once its state changed, else its slot in
    /// its import block (see `keyblock`). `None` for unknown or deleted ids.
    pub fn key(&self, id: u64) -> Result<Option<KeyRecord>> {
        match self.read_raw(Tree::Keys, &tree::u64_key(id))? {
            Some(v) => keyblock::own_record(&v).map_err(storage),
            None => {
                let (block, slot) = keyblock::locate(id);
                let b: Option<KeyBlock> =
                    self.read(Tree::KeyBlocks, &keyblock::block_key(block))?;
                Ok(b.and_then(|b| b.record(slot)))
            }
        }
    }

    /// The blocks of staged, unpublished uploads, as sorted runs: their
    /// keys are nobody's yet (see `keyblock::StagedUpload`).
    pub(crate) fn staged_runs(&self) -> Result<Vec<(u64, u64)>> {
        let mut runs = Vec::new();
        for item in self.trees()?.get(Tree::Uploads).iter() {
            let (_, v) = item.map_err(storage)?;
            runs.extend(decode::<keyblock::StagedUpload>(&v)?.runs);
        }
        runs.sort_unstable();
        Ok(runs)
    }

    /// Whether an upload is staged and not yet published.
    pub fn has_staged_uploads(&self) -> Result<bool> {
        Ok(!self.trees()?.get(Tree::Uploads).is_empty())
    }

    /// Visits every key with an id in `start..end`, in id order: each
    /// block's slots, with the key's own row (if its state changed) in place
    /// of the slot, deleted keys and staged uploads left out. `f` returns
    /// false to stop.
    fn visit_keys(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, KeyRecord) -> Result<bool>,
    ) -> Result<()> {
        let trees = self.trees()?;
        let mut rows = trees
            .get(Tree::Keys)
            .range(tree::u64_key(start)..)
            .peekable();
        let first_block = keyblock::locate(start).0;
        let staged = self.staged_runs()?;
        for item in trees
            .get(Tree::KeyBlocks)
            .range(keyblock::block_key(first_block)..)
        {
            let (k, v) = item.map_err(storage)?;
            let block = tree::read_u64(&k).unwrap_or(0);
            if keyblock::in_runs(&staged, block) {
                continue;
            }
            let b: KeyBlock = decode(&v)?;
            let base = keyblock::first_id(block);
            for slot in 0..b.len() {
                let id = base + slot as u64;
                if id < start {
                    continue;
                }
                if id >= end {
                    return Ok(());
                }
                // Rows of ids no block holds (none are written) are skipped.
                let mut own = None;
                while let Some(row) = rows.peek() {
                    let row_id = match row {
                        Ok((rk, _)) => tree::read_u64(rk).unwrap_or(0),
                        Err(_) => {
                            if let Some(Err(e)) = rows.next() {
                                return Err(storage(e));
                            }
                            continue;
                        }
                    };
                    if row_id > id {
                        break;
                    }
                    if let Some(Ok((_, rv))) = rows.next() {
                        if row_id == id {
                            own = Some(rv);
                        }
                    }
                }
                let rec = match own {
                    Some(rv) => keyblock::own_record(&rv).map_err(storage)?,
                    None => b.record(slot),
                };
                let Some(rec) = rec else { continue };
                if !f(id, rec)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Visits every key record with its id.
    pub fn for_each_key(&self, f: impl FnMut(u64, KeyRecord) -> Result<()>) -> Result<()> {
        self.for_each_key_in(0, u64::MAX, f)
    }

    /// Visits the key records with ids in `start..end`.
    pub fn for_each_key_in(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, KeyRecord) -> Result<()>,
    ) -> Result<()> {
        self.visit_keys(start, end, |id, rec| f(id, rec).map(|()| true))
    }

    /// The first and last stored block numbers (0 and 0 without blocks).
    fn block_span(&self) -> Result<(u64, u64)> {
        let trees = self.trees()?;
        let blocks = trees.get(Tree::KeyBlocks);
        let block = |kv: Option<(sled::IVec, sled::IVec)>| {
            kv.and_then(|(k, _)| tree::read_u64(&k)).unwrap_or(0)
        };
        Ok((
            block(blocks.first().map_err(storage)?),
            block(blocks.last().map_err(storage)?),
        ))
    }

    /// A key id about halfway through the imported blocks, for two threads
    /// to read the keys below and from it at once.
    pub fn middle_key_id(&self) -> Result<u64> {
        let (first, last) = self.block_span()?;
        Ok(keyblock::first_id(first + last.saturating_sub(first) / 2))
    }

    /// One past the last key id of the stored blocks: every stored key's id
    /// is below it (ids are handed out in blocks, from a counter).
    pub fn key_id_end(&self) -> Result<u64> {
        let (_, last) = self.block_span()?;
        Ok(keyblock::first_id(last.saturating_add(1)))
    }

    /// Keys of a product in id order, optionally of one state, after `cursor`.
    pub fn keys_page(
        &self,
        product_id: &str,
        state: Option<&str>,
        limit: usize,
        cursor: Option<u64>,
    ) -> Result<KeyPage> {
        let mut keys = Vec::new();
        let mut next_cursor = None;
        let start = cursor.map_or(0, |c| c.saturating_add(1));
        if state == Some("available") {
            // Available keys have their own index: no need to walk sold ones.
            let prefix = tree::scope_prefix(product_id);
            let from = keyblock::product_block_key(product_id, keyblock::locate(start).0);
            'rows: for item in self.trees()?.get(Tree::Avail).range(from..) {
                let (k, v) = item.map_err(storage)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let Some(block) = keyblock::block_of_product_key(&k) else {
                    continue;
                };
                for id in keyblock::ids_in(block, keyblock::bits(Some(&v)), start) {
                    if keys.len() == limit {
                        next_cursor = keys.last().map(|(id, _)| *id);
                        break 'rows;
                    }
                    if let Some(rec) = self.key(id)? {
                        keys.push((id, rec));
                    }
                }
            }
            return Ok(KeyPage { keys, next_cursor });
        }
        self.visit_keys(start, u64::MAX, |id, rec| {
            if rec.product_id != product_id || state.is_some_and(|s| s != rec.state.name()) {
                return Ok(true);
            }
            if keys.len() == limit {
                next_cursor = keys.last().map(|(id, _)| *id);
                return Ok(false);
            }
            keys.push((id, rec));
            Ok(true)
        })?;
        Ok(KeyPage { keys, next_cursor })
    }

    /// The available-key index (for the checker): per product and block,
    /// the bitmap of the block's available keys.
    pub fn available_index(&self) -> Result<BTreeMap<(String, u64), u64>> {
        let mut out = BTreeMap::new();
        for item in self.trees()?.get(Tree::Avail).iter() {
            let (k, v) = item.map_err(storage)?;
            let end = k.iter().position(|&b| b == 0).unwrap_or(k.len());
            let product = String::from_utf8_lossy(&k[..end]).into_owned();
            let block = keyblock::block_of_product_key(&k).unwrap_or(0);
            out.insert((product, block), keyblock::bits(Some(&v)));
        }
        Ok(out)
    }
}
