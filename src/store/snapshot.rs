//! Snapshots: a full dump of every tree, so the journal can be cut and a
//! rebuild does not replay history from the beginning.
//!
//! A snapshot is *fuzzy*: it is taken by a background thread while the writer
//! keeps committing. Its header records `base`, the last batch applied to sled
//! before the dump began. Every value in the file is as of some moment after
//! `base`; because the journal holds whole values (puts and deletes, never
//! deltas), replaying every batch after `base` over the dump yields exactly
//! the state at the journal's end. Writers never pause for a snapshot.
//!
//! File: `snapshots/<base, 20 digits>.snap`, framed like the journal: a header
//! record, chunks of writes, an `END` record with the entry count. Written to
//! `.tmp`, fsynced, renamed, directory fsynced. The newest two generations are
//! kept (with the journal segments they need), so a copy of the data directory
//! taken while a snapshot rotates still finds a complete set.

use super::journal::{self, decode_writes, encode_writes, frame, Journal, Write};
use super::tree::{Trees, ALL};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const MAGIC: &[u8] = b"FAKASNAP\x01";
const CHUNK: usize = 4096;

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Complete snapshots in `data_dir`, newest first.
pub fn list(data_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let d = dir(data_dir);
    let mut out = Vec::new();
    if !d.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(&d)? {
        let path = entry?.path();
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(base) = base {
            out.push((base, path));
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

/// Dumps every tree into a new snapshot with the given base. Returns its path.
/// What a snapshot file says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Replay the journal from `base + 1` over the dump.
    pub base: u64,
    /// The last batch that could be in the dump: the journal must reach at
    /// least this far for the dump to be made consistent by replay.
    pub end: u64,
}

/// Dumps every tree into a new snapshot with the given base; `applied` is
/// the writer's applied batch counter, read when the dump is complete.
pub fn write(
    trees: &Trees,
    data_dir: &Path,
    base: u64,
    applied: &AtomicU64,
) -> io::Result<PathBuf> {
    let d = dir(data_dir);
    fs::create_dir_all(&d)?;
    let final_path = d.join(format!("{base:020}.snap"));
    let tmp = d.join(format!("{base:020}.snap.tmp"));
    let mut out = BufWriter::new(File::create(&tmp)?);
    let mut rec = Vec::new();
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&base.to_le_bytes());
    let mut count: u64 = 0;
    let mut chunk: Vec<Write> = Vec::with_capacity(CHUNK);
    let mut payload = Vec::new();
    let mut flush = |chunk: &mut Vec<Write>, out: &mut BufWriter<File>| -> io::Result<()> {
        payload.clear();
        encode_writes(&mut payload, chunk);
        rec.clear();
        frame(&payload, &mut rec);
        chunk.clear();
        out.write_all(&rec)
    };
    out.write_all(&{
        let mut r = Vec::new();
        frame(&header, &mut r);
        r
    })?;
    for t in ALL {
        for item in trees.get(t).iter() {
            let (k, v) = item.map_err(io::Error::other)?;
            chunk.push(Write {
                tree: t as u8,
                key: k.to_vec(),
                value: Some(v.to_vec()),
            });
            count += 1;
            if chunk.len() == CHUNK {
                flush(&mut chunk, &mut out)?;
            }
        }
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut out)?;
    }
    let mut end = b"END".to_vec();
    end.extend_from_slice(&count.to_le_bytes());
    end.extend_from_slice(&applied.load(Ordering::SeqCst).to_le_bytes());
    let mut r = Vec::new();
    frame(&end, &mut r);
    out.write_all(&r)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &final_path)?;
    super::datadir::sync_dir(&d)?;
    Ok(final_path)
}

fn read_record(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > 1 << 30 {
        return Err(bad("record length out of range"));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    if crc32fast::hash(buf) != crc {
        return Err(bad("checksum mismatch"));
    }
    Ok(true)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("damaged snapshot: {what}"),
    )
}

/// Reads a snapshot, handing each chunk of writes to `apply`. Returns its
/// base. With `apply` a no-op this verifies the file end to end.
pub fn read(
    path: &Path,
    mut apply: impl FnMut(Vec<Write>) -> io::Result<()>,
) -> io::Result<SnapshotInfo> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut buf = Vec::new();
    if !read_record(&mut r, &mut buf)? || !buf.starts_with(MAGIC) || buf.len() != MAGIC.len() + 8 {
        return Err(bad("header"));
    }
    let base = u64::from_le_bytes(buf[MAGIC.len()..].try_into().map_err(|_| bad("header"))?);
    let mut count = 0u64;
    loop {
        if !read_record(&mut r, &mut buf)? {
            return Err(bad("missing end record"));
        }
        if buf.len() == 19 && buf.starts_with(b"END") {
            let expected = u64::from_le_bytes(buf[3..11].try_into().map_err(|_| bad("end"))?);
            let end = u64::from_le_bytes(buf[11..19].try_into().map_err(|_| bad("end"))?);
            if expected != count {
                return Err(bad("entry count"));
            }
            let mut rest = [0u8; 1];
            if r.read(&mut rest)? != 0 {
                return Err(bad("bytes after end record"));
            }
            return Ok(SnapshotInfo {
                base,
                end: end.max(base),
            });
        }
        let writes = decode_writes(&buf).ok_or_else(|| bad("chunk"))?;
        count += writes.len() as u64;
        apply(writes)?;
    }
}

/// Deletes what the newest two snapshot generations no longer need: older
/// snapshots and journal segments wholly at or below the older kept base.
pub fn prune(data_dir: &Path) -> io::Result<()> {
    let snaps = list(data_dir)?;
    let Some((keep_base, _)) = snaps.get(1).cloned() else {
        return Ok(());
    };
    for entry in fs::read_dir(dir(data_dir))?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(entry.path())?;
        }
    }
    for (base, path) in snaps.iter().skip(2) {
        tracing::debug!(base, "removing old snapshot");
        fs::remove_file(path)?;
    }
    let jdir = data_dir.join("journal");
    let segs = journal::segments(&jdir)?;
    for pair in segs.windows(2) {
        let (_, path) = &pair[0];
        let (next_first, _) = pair[1];
        if next_first.saturating_sub(1) <= keep_base {
            fs::remove_file(path)?;
        }
    }
    super::datadir::sync_dir(&jdir)
}

/// Decides when to snapshot and runs one at a time in the background.
pub(crate) struct Snapshotter {
    pub data_dir: PathBuf,
    pub threshold_bytes: u64,
    pub running: Arc<AtomicBool>,
    /// Held while files are created or deleted, so a backup copies a stable set.
    pub files: Arc<Mutex<()>>,
    pub stats: Arc<super::WriterStats>,
}

impl Snapshotter {
    pub fn maybe_start(&self, journal: &mut Journal, seq: u64, trees: &Arc<Trees>) {
        if journal.segment_bytes < self.threshold_bytes || self.running.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = journal.rotate(seq + 1) {
            tracing::error!(error = %e, "journal rotation failed; snapshot postponed");
            return;
        }
        self.running.store(true, Ordering::SeqCst);
        let (trees, dir, running, files, stats) = (
            trees.clone(),
            self.data_dir.clone(),
            self.running.clone(),
            self.files.clone(),
            self.stats.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("faka-snapshot".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match write(&trees, &dir, seq, &stats.applied_seq) {
                    Ok(path) => {
                        let _guard = files.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(e) = prune(&dir) {
                            tracing::warn!(error = %e, "pruning old snapshots failed");
                        }
                        tracing::info!(base = seq, path = %path.display(),
                            millis = started.elapsed().as_millis() as u64, "snapshot written");
                    }
                    Err(e) => tracing::error!(error = %e, "snapshot failed; journal kept"),
                }
                running.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.running.store(false, Ordering::SeqCst);
        }
    }
}
