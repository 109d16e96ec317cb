//! The operator's explicit repair of a damaged data directory, and the
//! copy `faka check` works on.
//!
//! A start refuses damage (see `recovery`); `faka repair` is the one way
//! past it, and only when the operator runs it. It keeps the journal up to
//! the first bad byte, sets everything after it aside (renamed, never
//! deleted) together with sled and the markers that vouch for the lost
//! batches, and says exactly which batches and orders that drops. The
//! next open rebuilds sled from what was kept.

use super::datadir::{self, journal_dir, sled_dir, OpenError};
use super::journal::{self, Batch};
use super::recovery;
use super::tree::{Tree, Trees};
use crate::domain::order::OrderStatus;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

fn err(context: &str, e: impl std::fmt::Display) -> OpenError {
    OpenError(format!("{context}: {e}"))
}

/// What [`set_aside_damage`] did.
#[derive(Debug)]
pub struct SetAside {
    /// Why the directory needed it.
    pub reason: String,
    /// The last batch kept: the store is served from here on.
    pub kept_end: u64,
    /// The newest batch known to have existed (from the journal's intact
    /// records after the damage, the markers and sled); batches
    /// `kept_end + 1 ..= known_end` are dropped.
    pub known_end: u64,
    /// Orders written by the dropped batches that could still be read.
    pub orders_in_dropped: BTreeSet<String>,
    /// Every file or directory renamed, as (from, to).
    pub renamed: Vec<(PathBuf, PathBuf)>,
    /// Where sled was set aside, to compare orders with the rebuilt store.
    pub old_sled: Option<PathBuf>,
}

/// Finds what a start would refuse and sets it aside; `None` when the
/// directory opens as it is. Holds the data directory's lock while it works.
pub fn set_aside_damage(data_dir: &Path) -> Result<Option<SetAside>, OpenError> {
    let lock = datadir::lock_data_dir(data_dir)?;
    let jdir = journal_dir(data_dir);
    let sled_seq = sled_applied_seq(data_dir);
    // The journal's end when it scans whole (only markers or sled are ahead).
    let mut scanned_end = None;
    let (reason, cut) = match journal::scan(&jdir) {
        Ok(scan) => {
            let clean = fs::read_to_string(datadir::marker_path(data_dir))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            let vouched = recovery::vouched_end(clean, datadir::synced_batch(data_dir), &scan)
                .and_then(|_| match sled_seq {
                    Some(seq) => recovery::sled_within_journal(seq, &scan),
                    None => Ok(()),
                });
            match vouched {
                Ok(()) => return Ok(None),
                Err(e) => {
                    scanned_end = scan.end;
                    (e.0, None)
                }
            }
        }
        Err(journal::JournalError::Damaged { path, offset, why }) => (
            format!("{} is damaged at byte {offset}: {why}", path.display()),
            Some((path, offset)),
        ),
        Err(e) => return Err(err("reading the journal", e)),
    };
    let stamp = crate::store::now_ms() / 1000;
    let mut out = SetAside {
        reason,
        kept_end: 0,
        known_end: sled_seq.unwrap_or(0),
        orders_in_dropped: BTreeSet::new(),
        renamed: Vec::new(),
        old_sled: None,
    };
    let mut aside = |from: PathBuf, suffix: &str| -> Result<PathBuf, OpenError> {
        let mut name = from.clone().into_os_string();
        name.push(format!(".{suffix}-{stamp}"));
        let to = PathBuf::from(name);
        fs::rename(&from, &to).map_err(|e| err(&format!("renaming {}", from.display()), e))?;
        out.renamed.push((from, to.clone()));
        Ok(to)
    };
    let segs = journal::segments(&jdir).map_err(|e| err("listing the journal", e))?;
    let mut kept_end = segs.last().map_or(0, |(first, _)| first.saturating_sub(1));
    let mut dropped: Vec<Batch> = Vec::new();
    if let Some((path, offset)) = &cut {
        let at = segs
            .iter()
            .position(|(_, p)| p == path)
            .unwrap_or(segs.len());
        let (first, _) = segs.get(at).cloned().unwrap_or((1, path.clone()));
        let (kept, end) = intact_prefix(path, *offset, first.saturating_sub(1))
            .map_err(|e| err("reading the damaged segment", e))?;
        kept_end = end;
        dropped.extend(
            journal::intact_batches_after(path, *offset, end)
                .map_err(|e| err("reading past the damage", e))?,
        );
        aside(path.clone(), "damaged")?;
        fs::write(path, &kept).map_err(|e| err("writing the kept segment", e))?;
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| err("syncing the kept segment", e))?;
        for (_, later) in segs.iter().skip(at + 1) {
            dropped.extend(
                journal::intact_batches_after(later, 0, end)
                    .map_err(|e| err("reading a later segment", e))?,
            );
            aside(later.clone(), "damaged")?;
        }
    } else if let Some(end) = scanned_end {
        kept_end = end;
    }
    for name in ["CLEAN", datadir::SYNCED] {
        let path = data_dir.join(name);
        if let Some(seq) = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        {
            out.known_end = out.known_end.max(seq);
        }
        if path.exists() {
            aside(path, "set-aside")?;
        }
    }
    let sled = sled_dir(data_dir);
    if sled.exists() {
        out.old_sled = Some(aside(sled, "set-aside")?);
    }
    datadir::sync_dir(&jdir).map_err(|e| err("syncing the journal directory", e))?;
    datadir::sync_dir(data_dir).map_err(|e| err("syncing the data directory", e))?;
    for b in &dropped {
        out.known_end = out.known_end.max(b.seq);
        for w in b.writes.iter().filter(|w| w.tree == Tree::Orders as u8) {
            out.orders_in_dropped
                .insert(String::from_utf8_lossy(&w.key).into_owned());
        }
    }
    out.kept_end = kept_end;
    out.known_end = out.known_end.max(kept_end);
    drop(lock);
    Ok(Some(out))
}

/// The bytes of a segment's intact records before `offset`, and the last
/// batch among them (`before` when there is none).
fn intact_prefix(path: &Path, offset: u64, before: u64) -> io::Result<(Vec<u8>, u64)> {
    let bytes = fs::read(path)?;
    let kept = bytes[..(offset as usize).min(bytes.len())].to_vec();
    let mut reader = journal::SegmentReader::open(path)?;
    let mut last = before;
    while reader.valid < offset {
        match reader.next_record()? {
            Some(p) if p.len() >= 8 => {
                last = u64::from_le_bytes(p[..8].try_into().unwrap_or_default())
            }
            _ => break,
        }
    }
    Ok((kept, last))
}

/// The batch sled says it holds, when its files open; `None` without sled.
fn sled_applied_seq(data_dir: &Path) -> Option<u64> {
    let sled = sled_dir(data_dir);
    if !sled.exists() {
        return None;
    }
    let trees = Trees::open(&sled, 1 << 20).ok()?;
    recovery::read_meta(&trees).ok().map(|(seq, _)| seq)
}

/// Every order in a sled directory (one set aside by a repair) with its
/// status, to tell what a repair rolled back.
pub fn orders_in_sled(dir: &Path) -> io::Result<Vec<(String, OrderStatus)>> {
    let trees = Trees::open(dir, 1 << 20).map_err(io::Error::other)?;
    let mut out = Vec::new();
    for item in trees.get(Tree::Orders).iter() {
        let (k, v) = item.map_err(io::Error::other)?;
        let status = super::codec::decode_order(&v).map(|o| o.status).ok();
        if let Some(status) = status {
            out.push((String::from_utf8_lossy(&k).into_owned(), status));
        }
    }
    Ok(out)
}

/// Copies what a start reads of `data_dir` (markers, sled, journal,
/// snapshots) into `to`, for `faka check` to open and check without
/// changing the original. The caller holds the original's lock, so the
/// copy is of a stopped shop: its `SLED_SYNCED` marker is rewritten for
/// the copied sled files, which hold exactly what the original's do.
pub fn copy_for_check(data_dir: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for name in ["CLEAN"] {
        if data_dir.join(name).exists() {
            fs::copy(data_dir.join(name), to.join(name))?;
        }
    }
    for dir in ["sled", "journal", "snapshots"] {
        copy_tree(&data_dir.join(dir), &to.join(dir))?;
    }
    if let Some(seq) = datadir::synced_batch(data_dir) {
        datadir::write_synced_marker(to, seq)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    if !from.exists() {
        return Ok(());
    }
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
