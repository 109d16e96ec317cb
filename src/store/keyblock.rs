//! Imported card keys stored in blocks.
//!
//! An import writes its keys as a few blocks instead of one record per key:
//! `key_blocks` maps the first key id of a block to the sealed texts of up to
//! [`KEYS_PER_BLOCK`] consecutive ids (all of one product, imported in one
//! command), `avail` gets one run `product, 0, last id → first id` for the
//! whole chunk, and `key_hashes` one block of fingerprints. sled's cost is per
//! entry (~10 µs per insert), not per byte, so this makes an import ~50×
//! cheaper for sled.
//!
//! A key id covered by a block is:
//! - the record in `keys`, if it has one (written the first time its state
//!   changes: held, sold, back to available), else
//! - deleted, if `deleted_keys` has it, else
//! - available, with the block's sealed text, product and import time.
//!
//! Blocks are immutable and never deleted. Ids not covered by a block (keys
//! imported before blocks existed) live in `keys` alone, as before.

use crate::domain::model::{KeyRecord, KeyState};

/// Keys per block: small enough that reading one key (a claim) copies a few
/// tens of KiB at most, large enough that sled sees few entries.
pub const KEYS_PER_BLOCK: usize = 256;

const VERSION: u8 = 1;

/// `[1][pid len u16][pid][imported_at i64][n u32][offsets u32 × (n+1)][texts]`
pub fn encode(product_id: &str, imported_at_ms: i64, sealed: &[Vec<u8>]) -> Vec<u8> {
    let texts: usize = sealed.iter().map(Vec::len).sum();
    let mut out =
        Vec::with_capacity(1 + 2 + product_id.len() + 8 + 4 + 4 * (sealed.len() + 1) + texts);
    out.push(VERSION);
    out.extend_from_slice(&(product_id.len() as u16).to_le_bytes());
    out.extend_from_slice(product_id.as_bytes());
    out.extend_from_slice(&imported_at_ms.to_le_bytes());
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    let mut off = 0u32;
    out.extend_from_slice(&off.to_le_bytes());
    for s in sealed {
        off += s.len() as u32;
        out.extend_from_slice(&off.to_le_bytes());
    }
    for s in sealed {
        out.extend_from_slice(s);
    }
    out
}

/// A parsed block (borrowing its bytes).
pub struct Block<'a> {
    pub product_id: &'a str,
    pub imported_at_ms: i64,
    offsets: &'a [u8],
    texts: &'a [u8],
    len: usize,
}

impl<'a> Block<'a> {
    pub fn parse(b: &'a [u8]) -> Option<Block<'a>> {
        if *b.first()? != VERSION {
            return None;
        }
        let plen = u16::from_le_bytes(b.get(1..3)?.try_into().ok()?) as usize;
        let product_id = std::str::from_utf8(b.get(3..3 + plen)?).ok()?;
        let mut p = 3 + plen;
        let imported_at_ms = i64::from_le_bytes(b.get(p..p + 8)?.try_into().ok()?);
        p += 8;
        let len = u32::from_le_bytes(b.get(p..p + 4)?.try_into().ok()?) as usize;
        p += 4;
        let offsets = b.get(p..p + 4 * (len + 1))?;
        let texts = b.get(p + 4 * (len + 1)..)?;
        let block = Block {
            product_id,
            imported_at_ms,
            offsets,
            texts,
            len,
        };
        (block.off(len)? == texts.len()).then_some(block)
    }

    fn off(&self, i: usize) -> Option<usize> {
        Some(u32::from_le_bytes(self.offsets.get(4 * i..4 * i + 4)?.try_into().ok()?) as usize)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn sealed(&self, i: usize) -> Option<&'a [u8]> {
        self.texts.get(self.off(i)?..self.off(i + 1)?)
    }

    /// The record of the `i`-th key as imported (available).
    pub fn record(&self, i: usize) -> Option<KeyRecord> {
        Some(KeyRecord {
            product_id: self.product_id.to_string(),
            state: KeyState::Available,
            sealed: self.sealed(i)?.to_vec(),
            imported_at_ms: self.imported_at_ms,
        })
    }
}

/// The record of key `id` from the block starting at `first`, if it covers it.
pub fn record_in(first: u64, block: &[u8], id: u64) -> Option<KeyRecord> {
    let b = Block::parse(block)?;
    let i = usize::try_from(id.checked_sub(first)?).ok()?;
    if i >= b.len() {
        return None;
    }
    b.record(i)
}

/// An `avail` entry is a run of available ids `first..=last`: key
/// `product, 0, last`, value `first` (u64 BE), or empty for a run of one —
/// which is exactly the old per-key entry, still written when a single key
/// returns to stock. Keying by the last id lets a claim from the front of a
/// run rewrite one entry in place.
pub fn run_first(last: u64, value: &[u8]) -> u64 {
    if value.is_empty() {
        last
    } else {
        super::tree::read_u64(value).unwrap_or(last).min(last)
    }
}

/// The `avail` value of the run `first..=last`.
pub fn run_value(first: u64, last: u64) -> Vec<u8> {
    if first == last {
        Vec::new()
    } else {
        first.to_be_bytes().to_vec()
    }
}

/// `key_hashes` key of a fingerprint block: `product, 0, 'B', first id`.
/// (Old per-key entries are `product, 0, fingerprint[16]`.)
pub fn fp_block_key(product_id: &str, first: u64) -> Vec<u8> {
    let mut rest = vec![b'B'];
    rest.extend_from_slice(&first.to_be_bytes());
    super::tree::scoped(product_id, &rest)
}

/// The fingerprints in a `key_hashes` entry of `product_id` (the key with the
/// product prefix removed): a block holds many, an old entry one.
pub fn fingerprints_of(rest: &[u8], value: &[u8], mut f: impl FnMut([u8; 16])) {
    if rest.len() == 16 {
        if let Ok(fp) = rest.try_into() {
            f(fp);
        }
    } else if rest.len() == 9 && rest[0] == b'B' {
        for c in value.chunks_exact(16) {
            if let Ok(fp) = c.try_into() {
                f(fp);
            }
        }
    }
}

fn next_row<E, I>(
    rows: &mut std::iter::Peekable<I>,
    below: u64,
) -> Result<Option<(u64, KeyRecord)>, E>
where
    I: Iterator<Item = Result<(u64, KeyRecord), E>>,
{
    match rows.peek() {
        Some(Ok((id, _))) if *id < below => Ok(rows.next().and_then(|r| r.ok())),
        Some(Err(_)) => match rows.next() {
            Some(Err(e)) => Err(e),
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Whether `id` is in the (ascending) tombstone stream, consuming smaller ones.
fn is_dead<E, I>(dead: &mut std::iter::Peekable<I>, id: u64) -> Result<bool, E>
where
    I: Iterator<Item = Result<u64, E>>,
{
    loop {
        match dead.peek() {
            Some(Ok(d)) if *d < id => {
                dead.next();
            }
            Some(Ok(d)) => return Ok(*d == id),
            Some(Err(_)) => {
                return match dead.next() {
                    Some(Err(e)) => Err(e),
                    _ => Ok(false),
                }
            }
            None => return Ok(false),
        }
    }
}

/// Merges the three id-ordered sources of key records into one walk in id
/// order: per-key records (`rows`), tombstones of deleted block keys
/// (`dead`) and blocks (`blocks`, each `(first id, bytes)`). Ids below
/// `start` are skipped. `f` returns false to stop.
pub fn merge<E>(
    rows: impl Iterator<Item = Result<(u64, KeyRecord), E>>,
    dead: impl Iterator<Item = Result<u64, E>>,
    blocks: impl Iterator<Item = Result<(u64, sled::IVec), E>>,
    start: u64,
    mut f: impl FnMut(u64, KeyRecord) -> Result<bool, E>,
) -> Result<(), E> {
    let mut rows = rows.peekable();
    let mut dead = dead.peekable();
    for item in blocks {
        let (first, bytes) = item?;
        let Some(b) = Block::parse(&bytes) else {
            tracing::error!(first, "unreadable key block skipped");
            continue;
        };
        for i in 0..b.len() {
            let id = first + i as u64;
            // Rows below this id (ids outside any block) come first.
            while let Some((rid, rec)) = next_row(&mut rows, id)? {
                if rid >= start && !f(rid, rec)? {
                    return Ok(());
                }
            }
            // A per-key record overrides the block.
            let row = next_row(&mut rows, id + 1)?;
            if id < start {
                continue;
            }
            let rec = match row {
                Some((_, rec)) => rec,
                None if is_dead(&mut dead, id)? => continue,
                None => match b.record(i) {
                    Some(r) => r,
                    None => continue,
                },
            };
            if !f(id, rec)? {
                return Ok(());
            }
        }
    }
    while let Some((rid, rec)) = next_row(&mut rows, u64::MAX)? {
        if rid >= start && !f(rid, rec)? {
            return Ok(());
        }
    }
    Ok(())
}
