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

use super::datadir::{err, marker_path, synced_batch, write_synced_marker, SYNCED};
use super::journal;
use super::snapshot;
use super::tree::{self, Tree, Trees};
use super::tx::Counters;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::Arc;

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
type Resumed = (Arc<Trees>, u64, Counters, Recovery);

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
const LEGACY_LAYOUT: &str = "this data directory stores card keys one per row, the layout of \
faka builds before key blocks, which this build does not read; serve it with the build that \
wrote it, or start this one on an empty data directory";

/// Replayed writes gathered before they are copied into sled at once.
const REBUILD_WINDOW_BYTES: u64 = 16 << 20;

/// Copies snapshot chunks and journal batches into the sled being rebuilt,
/// a window of [`REBUILD_WINDOW_BYTES`] at a time: within a window only the
/// last write of each row is copied (an order created then delivered, an
/// expiry added then removed, a key held then sold: one write each), in
/// (tree, key) order, so `apply_writes` copies big windows on two threads;
/// sled is flushed after each window so its unwritten log buffers stay
/// bounded while it is fed as fast as it goes. Windows are copied in
/// journal order, so the end state is the same as replaying write by write.
struct Applier<'a> {
    trees: &'a Trees,
    window: BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>,
    window_bytes: u64,
    window_limit: u64,
}

impl<'a> Applier<'a> {
    fn new(trees: &'a Trees) -> Applier<'a> {
        Applier {
            trees,
            window: BTreeMap::new(),
            window_bytes: 0,
            window_limit: REBUILD_WINDOW_BYTES,
        }
    }

    /// Replays every journal batch after `after`, copies what is left in
    /// the window, records the last batch as sled's applied seq and flushes
    /// sled. Returns the last batch and how many were replayed.
    fn replay_journal(mut self, data_dir: &Path, after: u64) -> Result<(u64, u64), OpenError> {
        let mut batches = 0u64;
        let last = journal::replay(&journal_dir(data_dir), after, |b| {
            batches += 1;
            self.apply(b.writes)
        })
        .map_err(|e| err("replaying journal", e))?;
        self.drain().map_err(|e| err("replaying journal", e))?;
        self.trees
            .get(Tree::Meta)
            .insert(tree::META_APPLIED_SEQ, &tree::u64_key(last))
            .map_err(|e| err("writing meta", e))?;
        self.trees.db.flush().map_err(|e| err("flushing sled", e))?;
        Ok((last, batches))
    }

    fn apply(&mut self, writes: Vec<journal::Write>) -> io::Result<()> {
        for w in writes {
            // The layout before key blocks put an empty row in `avail` for
            // every available key; this build puts a bitmap or nothing.
            if w.tree == Tree::Avail as u8 && w.value.as_ref().is_some_and(|v| v.is_empty()) {
                return Err(io::Error::other(LEGACY_LAYOUT));
            }
            self.window_bytes +=
                (w.key.len() + w.value.as_ref().map_or(0, |v| v.len()) + 16) as u64;
            self.window.insert((w.tree, w.key), w.value);
        }
        if self.window_bytes >= self.window_limit {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        let writes: Vec<journal::Write> = std::mem::take(&mut self.window)
            .into_iter()
            .map(|((tree, key), value)| journal::Write { tree, key, value })
            .collect();
        self.window_bytes = 0;
        super::apply::apply_writes(self.trees, &writes).map_err(io::Error::other)?;
        self.trees.db.flush().map_err(io::Error::other)?;
        Ok(())
    }
}

/// Rebuilds sled from the newest snapshot that verifies and the journal
/// after its base; `end` is the journal's last batch ([`journal::scan`]).
fn rebuild(data_dir: &Path, cache_bytes: u64, end: Option<u64>) -> Result<Resumed, OpenError> {
    let started = std::time::Instant::now();
    let sled = sled_dir(data_dir);
    // The marker belongs to the sled about to be removed.
    if data_dir.join(SYNCED).exists() {
        fs::remove_file(data_dir.join(SYNCED)).map_err(|e| err("removing SLED_SYNCED", e))?;
    }
    if sled.exists() {
        fs::remove_dir_all(&sled).map_err(|e| err("removing stale sled directory", e))?;
    }
    let trees = Trees::open(&sled, cache_bytes).map_err(|e| err("creating sled", e))?;
    let mut applier = Applier::new(&trees);
    let mut base = 0;
    let snapshots = snapshot::list(data_dir).map_err(|e| err("listing snapshots", e))?;
    if end.is_none() && !snapshots.is_empty() {
        // A shop always keeps its newest segment (and a backup copies it),
        // so snapshots without any journal are a copy that left `journal/`
        // out: starting would set the snapshots aside and serve an empty
        // shop.
        return Err(err(
            "opening the data directory",
            "it has snapshots but no journal segments; copy its journal/ directory too, or restore a backup",
        ));
    }
    let reach = end.unwrap_or(0);
    for (_, path) in snapshots {
        let info = match snapshot::read(&path, |_| Ok(())) {
            Ok(info) => info,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "snapshot does not verify; trying an older one");
                continue;
            }
        };
        if info.end > reach {
            // A copy that caught this snapshot but not the journal behind it.
            // The store continues from the journal's end, so this snapshot
            // belongs to another timeline from now on: set it aside for good.
            tracing::warn!(file = %path.display(), snapshot_end = info.end, journal_end = reach,
                "the journal does not reach this snapshot's end; setting it aside");
            fs::rename(&path, path.with_extension("snap.orphan"))
                .map_err(|e| err("setting aside a snapshot", e))?;
            continue;
        }
        snapshot::read(&path, |writes| applier.apply(writes))
            .map_err(|e| err("loading snapshot", e))?;
        base = info.base;
        break;
    }
    let (last, batches) = applier.replay_journal(data_dir, base)?;
    write_synced_marker(data_dir, last).map_err(|e| err("writing SLED_SYNCED marker", e))?;
    let (seq, counters) = read_meta(&trees)?;
    if base > 0 || batches > 0 {
        tracing::info!(
            snapshot_base = base,
            replayed_batches = batches,
            applied_seq = seq,
            millis = started.elapsed().as_millis() as u64,
            "store rebuilt from snapshot + journal"
        );
    }
    Ok((Arc::new(trees), seq, counters, Recovery::Rebuilt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::datadir::write_clean_marker;
    use crate::store::journal::Write;
    use crate::store::tree::ALL;

    fn contents(trees: &Trees) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        for t in ALL {
            for item in trees.get(t).iter() {
                let (k, v) = item.unwrap();
                all.push((t as u8, k.to_vec(), v.to_vec()));
            }
        }
        all
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    /// One batch: order `i` placed (and its expiry scheduled), order `i-1`
    /// delivered (its expiry row deleted), a key imported.
    fn step(store: &super::super::Store, i: u64) {
        use crate::domain::model::Order;
        use crate::domain::order::OrderStatus;
        store
            .write_blocking(move |tx| {
                let o = Order::pending_for_test(
                    &format!("O{i}"),
                    "b@x.com",
                    "10.0.0.1",
                    1000 + i as i64,
                );
                tx.insert_order(&o);
                tx.schedule_expiry(&o);
                if let Some(mut prev) = tx.order(&format!("O{}", i.wrapping_sub(1)))? {
                    tx.unschedule_expiry(&prev);
                    prev.status = OrderStatus::Delivered;
                    tx.put_order(&prev);
                }
                tx.insert_available_keys("p", vec![(format!("k{i}").into_bytes(), [i as u8; 16])]);
                Ok(())
            })
            .unwrap();
    }

    /// After an unclean stop sled is resumed from its last flush: whether it
    /// kept every row written after the flush or none of them, replaying the
    /// journal after the flushed batch gives exactly the state a rebuild
    /// gives. sled files that are not the ones flushed (a copy of the data
    /// directory), and a marker the journal does not reach, are rebuilt.
    #[test]
    fn an_unclean_stop_resumes_sled_from_its_last_flush_to_the_journal_state() {
        use super::super::{Store, StoreOptions};
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::for_test(dir.path());
        let store = Store::open(&opts).unwrap();
        for i in 0..20 {
            step(&store, i);
        }
        // What the committer's periodic sync does, and sled's files as the
        // flush left them.
        store.trees().unwrap().db.flush().unwrap();
        let synced = store
            .stats()
            .applied_seq
            .load(std::sync::atomic::Ordering::SeqCst);
        let at_flush = tempfile::tempdir().unwrap();
        copy_dir(&sled_dir(dir.path()), at_flush.path());
        for i in 20..40 {
            step(&store, i);
        }
        let end = store
            .stats()
            .applied_seq
            .load(std::sync::atomic::Ordering::SeqCst);
        let want = contents(&store.trees().unwrap());
        assert!(end > synced);
        store.close();
        drop(store);
        let crash = |marker: u64| {
            fs::remove_file(dir.path().join("CLEAN")).unwrap();
            write_synced_marker(dir.path(), marker).unwrap();
        };
        let reopened = |expect: Recovery| {
            let store = Store::open(&opts).unwrap();
            assert_eq!(store.recovery(), expect);
            assert_eq!(contents(&store.trees().unwrap()), want, "{expect:?}");
            store.close();
        };
        let resumed = Recovery::Resumed {
            synced,
            replayed: end - synced,
        };
        // sled kept everything written after the flush.
        crash(synced);
        reopened(resumed);
        // sled kept a part of it: the last batch's applied seq, but not
        // orders and keys written after the flush.
        {
            let trees = Trees::open(&sled_dir(dir.path()), 1 << 20).unwrap();
            for no in ["O25", "O38", "O39"] {
                trees.get(Tree::Orders).remove(no).unwrap();
            }
            let last_block = trees.get(Tree::KeyBlocks).last().unwrap().unwrap().0;
            trees.get(Tree::KeyBlocks).remove(last_block).unwrap();
            trees.db.flush().unwrap();
        }
        crash(synced);
        reopened(resumed);
        // sled kept nothing written after the flush.
        fs::remove_dir_all(sled_dir(dir.path())).unwrap();
        copy_dir(at_flush.path(), &sled_dir(dir.path()));
        crash(synced);
        reopened(resumed);
        // A marker ahead of what sled holds (sled lost flushed batches).
        fs::remove_dir_all(sled_dir(dir.path())).unwrap();
        copy_dir(at_flush.path(), &sled_dir(dir.path()));
        crash(synced + 5);
        reopened(Recovery::Rebuilt);
        // A marker past the journal's end: the journal lost batches sled
        // was flushed after. Refused, not rebuilt from what is left.
        crash(end + 5);
        let refused = Store::open(&opts).err().expect("refused");
        assert!(
            refused.0.contains("missing from the journal"),
            "{}",
            refused.0
        );
        write_synced_marker(dir.path(), end).unwrap();
        reopened(Recovery::Resumed {
            synced: end,
            replayed: 0,
        });
        // A copy of the data directory: its sled files are not the ones the
        // marker was written for.
        crash(synced);
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let copy_opts = StoreOptions::for_test(copy.path());
        let store = Store::open(&copy_opts).unwrap();
        assert_eq!(store.recovery(), Recovery::Rebuilt);
        assert_eq!(contents(&store.trees().unwrap()), want);
        store.close();
    }

    /// Counters stored before they counted outbox events still open: the
    /// counts are taken from the outbox.
    #[test]
    fn counters_from_before_the_outbox_counts_open_with_counts_from_the_outbox() {
        use crate::domain::model::{DeliveryState, EventKind, OutboxEvent};
        #[derive(serde::Serialize)]
        struct Before {
            next_key_id: u64,
            next_order_seq: u64,
            next_outbox_seq: u64,
            orders_by_status: [u64; 6],
        }
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::open(dir.path(), 1 << 20).unwrap();
        let before = Before {
            next_key_id: 65,
            next_order_seq: 3,
            next_outbox_seq: 4,
            orders_by_status: [1, 0, 1, 0, 0, 0],
        };
        let event = |seq: u64, state: DeliveryState| OutboxEvent {
            id: format!("evt_{seq}"),
            seq,
            order_no: "A".into(),
            kind: EventKind::Paid,
            created_at_ms: 0,
            state,
            attempts: 0,
            next_attempt_ms: 0,
            retry_from_ms: 0,
            last_error: None,
        };
        let group = vec![
            event(1, DeliveryState::Dead),
            event(2, DeliveryState::Pending),
            event(3, DeliveryState::Delivered),
        ];
        let meta = trees.get(Tree::Meta);
        meta.insert(tree::META_COUNTERS, crate::store::codec::encode(&before))
            .unwrap();
        trees
            .get(Tree::Outbox)
            .insert(tree::u64_key(1), crate::store::codec::encode(&group))
            .unwrap();
        let (_, c) = read_meta(&trees).unwrap();
        assert_eq!((c.next_key_id, c.next_outbox_seq), (65, 4));
        assert_eq!(c.orders_by_status, [1, 0, 1, 0, 0, 0]);
        assert_eq!((c.outbox_pending, c.outbox_dead), (1, 1));
        // Counters of neither shape are an error, not zeros.
        meta.insert(tree::META_COUNTERS, vec![1, 2, 3]).unwrap();
        assert!(read_meta(&trees).is_err());
    }

    /// A data directory of the layout before key blocks is refused with a
    /// message, on a clean start (its sled has the old trees) and on a
    /// rebuild (its journal has the old available-key rows).
    #[test]
    fn a_data_directory_of_the_one_row_per_key_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), 1 << 20).unwrap();
        write_clean_marker(dir.path(), opened.seq).unwrap();
        opened.trees.get(Tree::Meta).flush().unwrap();
        opened.trees.db.open_tree("avail").unwrap();
        opened.trees.db.flush().unwrap();
        drop(opened);
        let refused = open(dir.path(), 1 << 20).err().expect("refused");
        assert!(refused.0.contains("one per row"), "{}", refused.0);

        let dir = tempfile::tempdir().unwrap();
        let jdir = journal_dir(dir.path());
        std::fs::create_dir_all(&jdir).unwrap();
        let mut j = journal::Journal::open(&jdir, 1).unwrap();
        j.append(&journal::Batch {
            seq: 1,
            writes: vec![Write {
                tree: Tree::Avail as u8,
                key: tree::scoped("p", &tree::u64_key(1)),
                value: Some(Vec::new()),
            }],
        })
        .unwrap();
        drop(j);
        let refused = open(dir.path(), 1 << 20).err().expect("refused");
        assert!(refused.0.contains("one per row"), "{}", refused.0);
    }

    /// Replaying in windows (last write per row, trees in parallel) ends
    /// where replaying write by write ends, across window boundaries, with
    /// rows overwritten and deleted and re-created in later batches.
    #[test]
    fn windowed_replay_ends_where_write_by_write_replay_ends() {
        let mut batches = Vec::new();
        for b in 0u32..400 {
            let mut writes = Vec::new();
            for i in 0..12u32 {
                let row = (b * 7 + i * 13) % 97;
                let tree = [Tree::Keys, Tree::Orders, Tree::Expiry, Tree::Idem][(i % 4) as usize];
                let value = if (b + i) % 5 == 0 {
                    None
                } else {
                    Some(format!("{b}-{i}").into_bytes())
                };
                writes.push(Write {
                    tree: tree as u8,
                    key: row.to_be_bytes().to_vec(),
                    value,
                });
            }
            // One batch big enough for the two-thread copy.
            if b == 200 {
                for i in 0..3000u32 {
                    let tree = if i < 2000 {
                        Tree::Avail
                    } else {
                        Tree::Attempts
                    };
                    writes.push(Write {
                        tree: tree as u8,
                        key: i.to_be_bytes().to_vec(),
                        value: Some(vec![1]),
                    });
                }
            }
            writes.sort_by(|a, b| (a.tree, &a.key).cmp(&(b.tree, &b.key)));
            writes.dedup_by(|a, b| a.tree == b.tree && a.key == b.key);
            batches.push(writes);
        }
        let dir = tempfile::tempdir().unwrap();
        let one_by_one = Trees::open(&dir.path().join("a"), 1 << 20).unwrap();
        for w in &batches {
            crate::store::apply::apply_writes(&one_by_one, w).unwrap();
        }
        for limit in [1, 2_000, 1 << 30] {
            let windowed = Trees::open(&dir.path().join(format!("w{limit}")), 1 << 20).unwrap();
            let mut applier = Applier {
                trees: &windowed,
                window: BTreeMap::new(),
                window_bytes: 0,
                window_limit: limit,
            };
            for w in &batches {
                applier.apply(w.clone()).unwrap();
            }
            applier.drain().unwrap();
            assert_eq!(contents(&windowed), contents(&one_by_one), "window {limit}");
        }
        assert!(!contents(&one_by_one).is_empty());
    }
}
