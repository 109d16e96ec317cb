//! How imported card keys are laid out in sled: in blocks, not a row each.
//!
//! sled charges per inserted row whatever its size, and a key stored as
//! three rows (record, available index, de-dup fingerprint) kept an import
//! of 1M keys far over its target. An import now writes, per block of up
//! to [`BLOCK_KEYS`] keys of one product:
//!
//! - `key_blocks`: block number → [`KeyBlock`] (the sealed texts, in slot
//!   order). Key ids are `block number × BLOCK_KEYS + slot`, so a key's
//!   block is found by division, with no range search. A block closes early
//!   at [`BLOCK_MAX_BYTES`] of sealed text, and the next block starts at the
//!   next multiple of `BLOCK_KEYS`: ids are unique and increasing, not dense.
//! - `avail`: product, 0, block number → a `u64` bitmap of the block's
//!   available slots. A claim clears a bit, a release sets it, the row goes
//!   when the block has none left.
//! - `key_fingerprints`: product, 0, block number → the block's keyed
//!   fingerprints, 16 bytes per slot. The writer de-duplicates against an
//!   in-memory set per product, loaded from these rows on the product's
//!   first import after a start (see `tx::FingerprintIndex`).
//!
//! A staged upload (see `tx::staging`) writes `key_blocks` and
//! `key_fingerprints` rows but no `avail` rows, and lists its blocks in
//! `uploads` ([`StagedUpload`]); until it is published, readers skip them.
//!
//! A key gets its own `keys` row (id → `KeyRecord`) only when its state first
//! changes; from then on that row is the key. A deleted key's row is empty (a
//! tombstone over its block slot), and its sealed text is cut out of the
//! block. Block values stay far below sled's 128 KiB
//! blob threshold even for a full leaf of 17 blocks, which keeps sled from
//! writing leaves aside as blob files.

use super::codec::{self, CodecError};
use super::tree;
use crate::domain::model::{KeyRecord, KeyState};
use serde::{Deserialize, Serialize};

/// Keys per block: one `u64` availability bitmap.
pub const BLOCK_KEYS: u64 = 64;

/// A block closes once its sealed texts reach this many bytes (a single key
/// is at most 4 KiB of text, so every key fits in a block of its own).
pub const BLOCK_MAX_BYTES: usize = 6 * 1024;

/// Bytes of one keyed fingerprint.
pub const FP_LEN: usize = 16;

/// The keys of one product imported together, in slot order: their sealed
/// texts end to end, and where each ends. A claim reads one slot, so a slot
/// must not cost decoding the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBlock {
    pub product_id: String,
    pub imported_at_ms: i64,
    /// End of each slot's sealed text in `texts`.
    pub ends: Vec<u32>,
    #[serde(with = "serde_bytes")]
    pub texts: Vec<u8>,
}

impl KeyBlock {
    pub fn new(product_id: &str, imported_at_ms: i64, sealed: &[Vec<u8>]) -> KeyBlock {
        let mut texts = Vec::with_capacity(sealed.iter().map(Vec::len).sum());
        let mut ends = Vec::with_capacity(sealed.len());
        for s in sealed {
            texts.extend_from_slice(s);
            ends.push(texts.len() as u32);
        }
        KeyBlock {
            product_id: product_id.to_string(),
            imported_at_ms,
            ends,
            texts,
        }
    }

    /// Keys in the block.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The block with `slot`'s sealed text removed (a deleted key's text
    /// does not stay behind in its block); other slots keep their place.
    pub fn without(&self, slot: usize) -> KeyBlock {
        let sealed: Vec<Vec<u8>> = (0..self.len())
            .map(|i| match i == slot {
                true => Vec::new(),
                false => self.text(i).unwrap_or_default().to_vec(),
            })
            .collect();
        KeyBlock::new(&self.product_id, self.imported_at_ms, &sealed)
    }

    /// The sealed text in `slot`.
    fn text(&self, slot: usize) -> Option<&[u8]> {
        let end = *self.ends.get(slot)? as usize;
        let start = match slot {
            0 => 0,
            _ => *self.ends.get(slot - 1)? as usize,
        };
        self.texts.get(start..end)
    }

    /// The record of the key in `slot` as imported (available).
    pub fn record(&self, slot: usize) -> Option<KeyRecord> {
        Some(KeyRecord {
            product_id: self.product_id.clone(),
            state: KeyState::Available,
            sealed: self.text(slot)?.to_vec(),
            imported_at_ms: self.imported_at_ms,
        })
    }
}

/// An upload staged and not yet published (`uploads`: upload id → this):
/// its blocks hold keys that are not the product's yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedUpload {
    pub product_id: String,
    pub started_at_ms: i64,
    /// Its blocks, as runs `first..end` of block numbers, one per chunk.
    pub runs: Vec<(u64, u64)>,
    /// Keys staged so far, and keys skipped as duplicates.
    pub keys: u64,
    pub duplicates: u64,
}

impl StagedUpload {
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|&(first, end)| first..end)
    }
}

/// Whether `block` is in one of `runs` (sorted, not overlapping).
pub fn in_runs(runs: &[(u64, u64)], block: u64) -> bool {
    let i = runs.partition_point(|&(_, end)| end <= block);
    runs.get(i).is_some_and(|&(first, _)| first <= block)
}

/// A key's own `keys` row: its record, or `None` for the empty row a
/// deleted key leaves over its block slot.
pub fn own_record(row: &[u8]) -> Result<Option<KeyRecord>, CodecError> {
    match row.is_empty() {
        true => Ok(None),
        false => codec::decode(row).map(Some),
    }
}

/// The block holding key `id`, and its slot there.
pub fn locate(id: u64) -> (u64, usize) {
    (id / BLOCK_KEYS, (id % BLOCK_KEYS) as usize)
}

/// The first key id of block `block`.
pub fn first_id(block: u64) -> u64 {
    block.saturating_mul(BLOCK_KEYS)
}

/// The first block number at or after key id `id`.
pub fn block_at_or_after(id: u64) -> u64 {
    id.div_ceil(BLOCK_KEYS)
}

/// `key_blocks` row key.
pub fn block_key(block: u64) -> [u8; 8] {
    tree::u64_key(block)
}

/// `avail` / `key_fingerprints` row key: product, 0, block number.
pub fn product_block_key(product_id: &str, block: u64) -> Vec<u8> {
    tree::scoped(product_id, &tree::u64_key(block))
}

/// The block number at the end of a `product_block_key`.
pub fn block_of_product_key(key: &[u8]) -> Option<u64> {
    let at = key.len().checked_sub(8)?;
    tree::read_u64(&key[at..])
}

/// An availability bitmap from its row value (absent or malformed: none).
pub fn bits(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| v.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

pub fn bits_value(bits: u64) -> Vec<u8> {
    bits.to_le_bytes().to_vec()
}

/// The available key ids of `block` given its bitmap, in id order, from
/// `from` on.
pub fn ids_in(block: u64, bits: u64, from: u64) -> impl Iterator<Item = u64> {
    (0..BLOCK_KEYS)
        .filter(move |slot| bits & (1 << slot) != 0)
        .map(move |slot| first_id(block) + slot)
        .filter(move |&id| id >= from)
}

/// Fingerprints of a `key_fingerprints` row value.
pub fn fingerprints(value: &[u8]) -> impl Iterator<Item = [u8; FP_LEN]> + '_ {
    value.chunks_exact(FP_LEN).filter_map(|c| c.try_into().ok())
}

/// Cuts keys into blocks: returns the slot count of each block, in order,
/// each at most [`BLOCK_KEYS`] keys and closed at [`BLOCK_MAX_BYTES`].
pub fn cut(sizes: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut blocks = Vec::new();
    let (mut n, mut bytes) = (0usize, 0usize);
    for size in sizes {
        if n > 0 && (n as u64 == BLOCK_KEYS || bytes + size > BLOCK_MAX_BYTES) {
            blocks.push(n);
            (n, bytes) = (0, 0);
        }
        n += 1;
        bytes += size;
    }
    if n > 0 {
        blocks.push(n);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_close_at_the_key_count_or_the_byte_bound_and_never_hold_nothing() {
        assert_eq!(cut([]), Vec::<usize>::new());
        assert_eq!(cut(vec![60; 130]), vec![64, 64, 2]);
        // 4 KiB keys: one per block, since two do not fit.
        assert_eq!(cut(vec![4200; 3]), vec![1, 1, 1]);
        // A key bigger than the bound still gets a block of its own.
        assert_eq!(cut([10, BLOCK_MAX_BYTES + 1, 10]), vec![1, 1, 1]);
        assert_eq!(cut([3000, 3000, 3000]), vec![2, 1]);
    }

    #[test]
    fn a_block_gives_back_each_slot_and_nothing_past_its_end() {
        let sealed = vec![b"a".to_vec(), Vec::new(), b"ccc".to_vec()];
        let b = KeyBlock::new("p", 7, &sealed);
        let back: Vec<Vec<u8>> = (0..3).map(|i| b.record(i).unwrap().sealed).collect();
        assert_eq!(back, sealed);
        assert!(b.record(3).is_none());
        let cut = b.without(0);
        assert_eq!(cut.len(), 3);
        assert!(cut.record(0).unwrap().sealed.is_empty());
        assert_eq!(cut.record(2).unwrap().sealed, b"ccc");
        let decoded: KeyBlock =
            crate::store::codec::decode(&crate::store::codec::encode(&b)).unwrap();
        assert_eq!(decoded, b);
        assert_eq!(decoded.record(2).unwrap().imported_at_ms, 7);
    }

    /// Bytes stored as `serde_bytes` keep the encoding of a plain `Vec<u8>`:
    /// records written before the change read back the same.
    #[test]
    fn bulk_bytes_keep_the_encoding_of_a_byte_vector() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Plain(Vec<u8>, i64);
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Bulk(#[serde(with = "serde_bytes")] Vec<u8>, i64);
        let bytes: Vec<u8> = (0..=255).collect();
        let plain = crate::store::codec::encode(&Plain(bytes.clone(), -3));
        assert_eq!(crate::store::codec::encode(&Bulk(bytes.clone(), -3)), plain);
        let back: Bulk = crate::store::codec::decode(&plain).unwrap();
        assert_eq!(back, Bulk(bytes, -3));
    }

    #[test]
    fn a_block_is_in_a_run_from_its_first_block_to_before_its_end() {
        let runs = [(3, 5), (9, 10)];
        let inside: Vec<u64> = (0..12).filter(|&b| in_runs(&runs, b)).collect();
        assert_eq!(inside, vec![3, 4, 9]);
        assert!(!in_runs(&[], 0));
    }

    #[test]
    fn ids_map_to_blocks_and_bitmaps_back_to_ids() {
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(130), (2, 2));
        assert_eq!(block_at_or_after(1), 1);
        assert_eq!(block_at_or_after(64), 1);
        assert_eq!(block_at_or_after(65), 2);
        let b = (1u64 << 0) | (1 << 5) | (1 << 63);
        assert_eq!(ids_in(2, b, 0).collect::<Vec<_>>(), vec![128, 133, 191]);
        assert_eq!(ids_in(2, b, 129).collect::<Vec<_>>(), vec![133, 191]);
        assert_eq!(bits(Some(&bits_value(b))), b);
        assert_eq!(bits(None), 0);
        assert_eq!(block_of_product_key(&product_block_key("p", 7)), Some(7));
    }
}
