//! Opening a data directory: lock it, decide whether sled can be trusted, and
//! rebuild it from snapshot + journal when it cannot.
//!
//! sled is trusted as it is only after a clean shutdown: the `CLEAN` marker
//! names the last applied batch, and sled and the journal must both agree
//! with it. After a kill -9 or a power cut, sled is *resumed* when the
//! `SLED_SYNCED` marker names a batch sled was flushed after and the very
//! sled files it was written for: the journal after that batch is replayed
//! over it (see [`resume`]). Otherwise — no marker, a copy of the directory
//! taken while faka was running (other files), or anything that does not
//! add up — the view is rebuilt: the newest snapshot that verifies end to
//! end is loaded, then every journal batch after its base is replayed. A
//! torn journal tail is cut off first.

use super::datadir::{err, marker_path, synced_batch, write_synced_marker};
use super::journal;
use super::snapshot;
use super::tree::{self, Tree, Trees};
use super::tx::Counters;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::Arc;

mod rebuild;
#[cfg(test)]
mod tests;

use rebuild::{rebuild, Applier};

pub use super::datadir::{journal_dir, lock_data_dir, sled_dir, OpenError};

pub(crate) struct Opened {
    pub trees: Arc<Trees>,
    pub seq: u64,
    pub counters: Counters,
    pub recovery: Recovery,
    /// The journal's last batch as the store was opened ([`journal::scan`]),
    /// so the caller need not read the newest segment again.
    pub journal_end: Option<u64>,
    pub lock: File,
}

/// How a start got its sled view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// After a clean shutdown: sled as it was left.
    Clean,
    /// After an unclean stop: sled as it was flushed after batch `synced`,
    /// with the journal's batches after it replayed over it.
    Resumed { synced: u64, replayed: u64 },
    /// sled rebuilt from the newest snapshot and the journal after it.
    Rebuilt,
    /// A new shop: nothing was there, an empty store was made.
    New,
}

/// Whether `data_dir` holds a shop: one that has started keeps at least one
/// journal segment for good. Commands that read a shop (`check`, `backup`)
/// refuse a directory without one rather than report on an empty store (a
/// wrong `--config` or `data_dir`).
pub fn holds_a_shop(data_dir: &Path) -> bool {
    journal::segments(&journal_dir(data_dir)).is_ok_and(|s| !s.is_empty())
}

/// sled leaves `snap.*.generating` behind when killed while snapshotting; a
/// later open can trip over it, so it goes first.
fn remove_stale_sled_snapshots(sled: &Path) -> io::Result<()> {
    if !sled.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(sled)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %path.display(), "removing stale sled snapshot");
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// What a start would refuse, found without changing a byte: journal
/// damage, or a journal that ends before a batch a marker vouches for.
/// `faka check` runs it on the data directory itself before it checks a
/// copy.
pub fn verify(data_dir: &Path) -> Result<journal::Scan, OpenError> {
    let scan = scan_journal(&journal_dir(data_dir))?;
    let marker = fs::read_to_string(marker_path(data_dir))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    vouched_end(marker, synced_batch(data_dir), &scan)?;
    Ok(scan)
}

/// Verifies the whole journal ([`journal::scan`]): damage is refused with
/// the file, the offset and what to do.
pub(crate) fn scan_journal(jdir: &Path) -> Result<journal::Scan, OpenError> {
    journal::scan(jdir).map_err(|e| match e {
        journal::JournalError::Io(e) => err("reading journal", e),
        damage => refusal(&damage.to_string()),
    })
}

/// A refusal to open: the data is damaged or does not add up, and serving
/// it would roll back acknowledged payments. Says what to do.
pub(crate) fn refusal(what: &str) -> OpenError {
    OpenError(format!(
        "refusing to open the store: {what}. Nothing was changed. Stop here and keep every \
         file as it is; see docs/OPERATIONS.md (\"The store refuses to open\"): restore the \
         newest backup, or run `faka repair` to set the damaged part aside and serve what \
         comes before it (it reports every batch and order it drops)"
    ))
}

/// The newest batch that something other than the journal vouches for:
/// the clean-shutdown marker, or the `SLED_SYNCED` marker of these very
/// sled files. The journal must reach it; if it does not, acknowledged
/// batches are missing from it.
pub(crate) fn vouched_end(
    clean: Option<u64>,
    synced: Option<u64>,
    scan: &journal::Scan,
) -> Result<(), OpenError> {
    let have = scan.end.unwrap_or(0);
    for (what, seq) in [
        ("the clean-shutdown marker", clean),
        ("sled's last flush", synced),
    ] {
        if let Some(seq) = seq.filter(|&s| s > have) {
            return Err(refusal(&format!(
                "the journal ends at batch {have}{}, but {what} records batch {seq}: \
                 acknowledged batches are missing from the journal (cut short, or a segment lost)",
                newest_named(scan)
            )));
        }
    }
    Ok(())
}

/// ", in <newest segment> (<n> bytes)", for refusals about the journal's end.
fn newest_named(scan: &journal::Scan) -> String {
    match &scan.newest {
        Some(p) => {
            let len = fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            format!(" in {} ({len} bytes)", p.display())
        }
        None => " (no journal segment)".to_string(),
    }
}

/// sled never holds a batch the journal lacks (a batch is fsynced into the
/// journal before sled sees it), so sled ahead of the journal means the
/// journal lost acknowledged batches.
pub(crate) fn sled_within_journal(sled_seq: u64, scan: &journal::Scan) -> Result<(), OpenError> {
    let have = scan.end.unwrap_or(0);
    if sled_seq > have {
        return Err(refusal(&format!(
            "sled holds batch {sled_seq}, but the journal ends at batch {have}{}: \
             acknowledged batches are missing from the journal",
            newest_named(scan)
        )));
    }
    Ok(())
}

pub(crate) fn read_meta(trees: &Trees) -> Result<(u64, Counters), OpenError> {
    let meta = trees.get(Tree::Meta);
    let seq = meta
        .get(tree::META_APPLIED_SEQ)
        .map_err(|e| err("reading meta", e))?
        .and_then(|v| tree::read_u64(&v))
        .unwrap_or(0);
    let counters = match meta
        .get(tree::META_COUNTERS)
        .map_err(|e| err("reading meta", e))?
    {
        Some(v) => match super::codec::decode(&v) {
            Ok(c) => c,
            Err(e) => counters_before_outbox_counts(trees, &v)
                .ok_or_else(|| err("decoding counters", e))?,
        },
        None => Counters::default(),
    };
    Ok((seq, counters))
}

/// Counters as stored before they counted outbox events: the outbox counts
/// are taken from the outbox once (the next batch stores them).
fn counters_before_outbox_counts(trees: &Trees, v: &[u8]) -> Option<Counters> {
    #[derive(serde::Deserialize)]
    struct Before {
        next_key_id: u64,
        next_order_seq: u64,
        next_outbox_seq: u64,
        orders_by_status: [u64; 6],
    }
    let b: Before = super::codec::decode(v).ok()?;
    let (outbox_pending, outbox_dead) = super::reads::outbox_counts_in(trees).ok()?;
    Some(Counters {
        next_key_id: b.next_key_id,
        next_order_seq: b.next_order_seq,
        next_outbox_seq: b.next_outbox_seq,
        orders_by_status: b.orders_by_status,
        outbox_pending,
        outbox_dead,
    })
}

pub(crate) fn open(data_dir: &Path, cache_bytes: u64) -> Result<Opened, OpenError> {
    fs::create_dir_all(data_dir)
        .map_err(|e| err(&format!("creating {}", data_dir.display()), e))?;
    let lock = lock_data_dir(data_dir)?;
    let sled = sled_dir(data_dir);
    let jdir = journal_dir(data_dir);
    let scan = scan_journal(&jdir)?;
    let end = scan.end;
    let marker = fs::read_to_string(marker_path(data_dir))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    vouched_end(marker, synced_batch(data_dir), &scan)?;
    remove_stale_sled_snapshots(&sled).map_err(|e| err("cleaning sled directory", e))?;

    let mut opened = None;
    if let (Some(clean), true) = (marker, sled.exists()) {
        match Trees::open(&sled, cache_bytes) {
            Ok(trees) => {
                let names = trees.db.tree_names();
                if tree::LEGACY_KEY_TREES
                    .iter()
                    .any(|l| names.iter().any(|n| n.as_ref() == l.as_bytes()))
                {
                    return Err(OpenError(LEGACY_LAYOUT.to_string()));
                }
                let (seq, counters) = read_meta(&trees)?;
                sled_within_journal(seq, &scan)?;
                if seq == clean && end.is_none_or(|e| e == clean) {
                    opened = Some((Arc::new(trees), seq, counters, Recovery::Clean));
                } else {
                    tracing::warn!(sled = seq, marker = clean, journal = ?end,
                        "sled disagrees with the clean-shutdown marker; rebuilding");
                }
            }
            Err(e) => tracing::warn!(error = %e, "sled did not open; rebuilding"),
        }
    } else if sled.exists() {
        tracing::warn!("last shutdown was not clean (or this is a copy)");
        // sled's own recovery runs here; if it panics, rebuild instead.
        let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            resume(data_dir, cache_bytes, &scan)
        }))
        .unwrap_or_else(|_| Ok(Resume::Rebuild("sled panicked while opening".into())))?;
        match resumed {
            Resume::Done(r) => opened = Some(r),
            Resume::Rebuild(why) if why.is_empty() => {}
            Resume::Rebuild(why) => tracing::warn!(error = %why, "sled cannot be resumed"),
        }
    }
    // Every check that could refuse has passed: from here on the directory
    // is changed. The marker belongs to the stop it describes.
    if marker_path(data_dir).exists() {
        fs::remove_file(marker_path(data_dir)).map_err(|e| err("removing CLEAN marker", e))?;
        super::datadir::sync_dir(data_dir).map_err(|e| err("syncing data dir", e))?;
    }
    let new_shop = !sled.exists()
        && scan.newest.is_none()
        && snapshot::list(data_dir).is_ok_and(|s| s.is_empty());
    let (trees, seq, counters, recovery) = match opened {
        Some(o) => o,
        None if new_shop => {
            let (trees, seq, counters, _) = rebuild(data_dir, cache_bytes, end)?;
            tracing::info!(data_dir = %data_dir.display(), "a new shop: created an empty store");
            (trees, seq, counters, Recovery::New)
        }
        None => {
            tracing::warn!("rebuilding the store from snapshot + journal");
            rebuild(data_dir, cache_bytes, end)?
        }
    };
    if recovery == Recovery::Clean {
        write_synced_marker(data_dir, seq).map_err(|e| err("writing SLED_SYNCED marker", e))?;
    }
    if let Some(torn) = &scan.torn {
        let side =
            journal::set_aside_torn_tail(torn).map_err(|e| err("setting a torn tail aside", e))?;
        tracing::warn!(file = %torn.path.display(), offset = torn.offset,
            bytes = torn.len - torn.offset, set_aside = %side.display(),
            "the journal ended in an interrupted write (never acknowledged); its bytes were set aside");
    }
    Ok(Opened {
        trees,
        seq,
        counters,
        recovery,
        journal_end: end,
        lock,
    })
}

/// A resumed sled view: trees, applied seq, counters, how.
pub(super) type Resumed = (Arc<Trees>, u64, Counters, Recovery);

/// What [`resume`] found: sled resumed, or a reason to rebuild it instead
/// (empty when there was simply no marker for these files).
enum Resume {
    Done(Resumed),
    Rebuild(String),
}

/// After an unclean stop, sled holds every batch up to the one the
/// `SLED_SYNCED` marker names (it was flushed after they were applied) and
/// some unknown part of the rows written after it: whatever of its log
/// reached the disk. Every row written after the marker is in the journal's
/// batches after it, as a whole value (or a delete); replaying them in order
/// puts each such row to its final value whatever sled kept of it, and rows
/// not written since are as the flush left them. The result is the journal's
/// state, as a rebuild would make it, after replaying seconds of batches
/// instead of loading the whole store. A rebuild when there is no marker
/// for these sled files or sled lost what it flushed; an error (refusal)
/// when sled holds batches the journal lacks.
fn resume(data_dir: &Path, cache_bytes: u64, scan: &journal::Scan) -> Result<Resume, OpenError> {
    let Some(synced) = synced_batch(data_dir) else {
        return Ok(Resume::Rebuild(String::new()));
    };
    let started = std::time::Instant::now();
    let trees = match Trees::open(&sled_dir(data_dir), cache_bytes) {
        Ok(t) => t,
        Err(e) => return Ok(Resume::Rebuild(format!("opening sled: {e}"))),
    };
    let at = match read_meta(&trees) {
        Ok((at, _)) => at,
        Err(e) => return Ok(Resume::Rebuild(e.0)),
    };
    sled_within_journal(at, scan)?;
    if at < synced {
        return Ok(Resume::Rebuild(format!(
            "sled holds batch {at}, not batch {synced} it was flushed after"
        )));
    }
    let (last, replayed) = Applier::new(&trees).replay_journal(data_dir, synced)?;
    write_synced_marker(data_dir, last).map_err(|e| err("writing SLED_SYNCED marker", e))?;
    let (seq, counters) = read_meta(&trees)?;
    tracing::info!(
        synced,
        replayed_batches = replayed,
        applied_seq = seq,
        millis = started.elapsed().as_millis() as u64,
        "store resumed from sled + journal"
    );
    Ok(Resume::Done((
        Arc::new(trees),
        seq,
        counters,
        Recovery::Resumed { synced, replayed },
    )))
}

/// Opens sled again in a running shop after it failed to take a durable
/// batch (sled refuses every write after an I/O error until reopened): its
/// files as they are, with the journal replayed over them from the
/// `SLED_SYNCED` marker, as [`resume`] does after a crash. The caller has
/// dropped the old handle and owns the journal; `durable` is its last batch.
pub(crate) fn reopen_sled(
    data_dir: &Path,
    cache_bytes: u64,
    durable: u64,
) -> Result<Arc<Trees>, OpenError> {
    remove_stale_sled_snapshots(&sled_dir(data_dir))
        .map_err(|e| err("cleaning sled directory", e))?;
    let journal = journal::Scan {
        end: Some(durable),
        ..journal::Scan::default()
    };
    match resume(data_dir, cache_bytes, &journal)? {
        Resume::Done((trees, seq, ..)) if seq == durable => Ok(trees),
        Resume::Done((_, seq, ..)) => Err(OpenError(format!(
            "sled reopened at batch {seq}, not at the journal's {durable}"
        ))),
        Resume::Rebuild(why) if why.is_empty() => Err(OpenError(
            "no SLED_SYNCED marker names sled's files; restart faka to rebuild".into(),
        )),
        Resume::Rebuild(why) => Err(OpenError(format!(
            "sled cannot be reopened ({why}); restart faka to rebuild"
        ))),
    }
}

/// Why a data directory of the layout before key blocks is refused.
pub(super) const LEGACY_LAYOUT: &str =
    "this data directory stores card keys one per row, the layout of \
faka builds before key blocks, which this build does not read; serve it with the build that \
wrote it, or start this one on an empty data directory";
