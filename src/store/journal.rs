//! The append-only journal: the source of truth for durability.
//!
//! Each committed batch of the writer is one record `[len u32][crc32 u32]
//! [payload]`, appended and `fdatasync`ed before any caller hears success.
//! sled is a materialised view that can always be rebuilt from the newest
//! snapshot plus the journal after it; this is what makes a `cp -a` of a live
//! data directory restorable (sled's own files copied live are not). A torn
//! tail — the newest segment's last record, cut short by a crash or by a
//! copy taken mid-write, with nothing intact after it — fails its length or
//! checksum and was never acknowledged. Any other bad byte is damage: see
//! [`scan`], which every start and `faka check` run, and which refuses it.
//!
//! Segments are files `journal/<first seq, 20 digits>.log`; a new one starts
//! whenever a snapshot is taken, so old ones can be deleted whole.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// Kept here too for the callers outside `store` that sync a directory.
pub use super::datadir::sync_dir;

/// One physical write: put (`Some`) or delete (`None`) of a key in a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub tree: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One committed writer batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub seq: u64,
    pub writes: Vec<Write>,
}

const HEADER: usize = 8;
/// A sanity bound: a record claiming more is a torn or foreign tail.
#[cfg(not(test))]
const MAX_RECORD: usize = 1 << 30;
/// Small in unit tests, so a record over the bound can be written.
#[cfg(test)]
const MAX_RECORD: usize = 1 << 20;

pub fn encode_writes(out: &mut Vec<u8>, writes: &[Write]) {
    out.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for w in writes {
        out.push(w.tree);
        out.extend_from_slice(&(w.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&w.key);
        match &w.value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

pub fn decode_writes(bytes: &[u8]) -> Option<Vec<Write>> {
    let mut r = Reader(bytes);
    let n = r.u32()? as usize;
    let mut writes = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let tree = r.take(1)?[0];
        let klen = r.u32()? as usize;
        let key = r.take(klen)?.to_vec();
        let vlen = r.u32()?;
        let value = if vlen == u32::MAX {
            None
        } else {
            Some(r.take(vlen as usize)?.to_vec())
        };
        writes.push(Write { tree, key, value });
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(writes)
}

/// Frames a payload as one checksummed record.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads a segment's records one at a time, so that only one record is in
/// memory however large the segment (a segment grows to about
/// `snapshot_mb`, hundreds of MiB at a million orders). Stops at the end
/// of the valid prefix: a record cut short or failing its checksum, and
/// all after it, is a torn tail. Bytes appended after `open` are not read.
pub struct SegmentReader {
    r: io::BufReader<File>,
    buf: Vec<u8>,
    /// Bytes of the intact records read so far: once `next_record` has
    /// returned `None`, the length of the valid prefix.
    pub valid: u64,
    /// The file's length when it was opened.
    pub len: u64,
}

impl SegmentReader {
    pub fn open(path: &Path) -> io::Result<SegmentReader> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(SegmentReader {
            r: io::BufReader::with_capacity(1 << 20, file),
            buf: Vec::new(),
            valid: 0,
            len,
        })
    }

    /// The next intact record's payload, or `None` at the end of the file
    /// or at a torn tail.
    pub fn next_record(&mut self) -> io::Result<Option<&[u8]>> {
        let left = self.len - self.valid;
        if left < HEADER as u64 {
            return Ok(None);
        }
        let mut head = [0u8; HEADER];
        if !read_full(&mut self.r, &mut head)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD || left - (HEADER as u64) < len as u64 {
            return Ok(None);
        }
        self.buf.resize(len, 0);
        if !read_full(&mut self.r, &mut self.buf)? || crc32fast::hash(&self.buf) != crc {
            return Ok(None);
        }
        self.valid += (HEADER + len) as u64;
        Ok(Some(&self.buf))
    }

    /// Reads to the end of the valid prefix; returns its length.
    pub fn valid_prefix(mut self) -> io::Result<u64> {
        while self.next_record()?.is_some() {}
        Ok(self.valid)
    }
}

/// `read_exact`, but `false` when the file ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut payload = Vec::with_capacity(64);
    payload.extend_from_slice(&batch.seq.to_le_bytes());
    encode_writes(&mut payload, &batch.writes);
    payload
}

fn decode_batch(payload: &[u8]) -> Option<Batch> {
    let mut r = Reader(payload);
    let seq = r.u64()?;
    let writes = decode_writes(r.0)?;
    Some(Batch { seq, writes })
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal i/o: {0}")]
    Io(#[from] io::Error),
    #[error("journal segment {} is damaged at byte {offset}: {why}", path.display())]
    Damaged {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("journal has a gap: expected batch {expected}, found {found} in {}", path.display())]
    Gap {
        expected: u64,
        found: u64,
        path: PathBuf,
    },
}

/// Journal segments in `dir`, oldest first, with their first sequence number.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

/// Replays every batch with `seq > after` to `apply`, in order, up to the
/// end of each segment's intact records. It never changes a file: callers
/// run [`scan`] first, which refuses damage and leaves only a torn tail of
/// the newest segment (never acknowledged) for replay to stop at. Returns
/// the last seq seen.
pub fn replay(
    dir: &Path,
    after: u64,
    mut apply: impl FnMut(Batch) -> io::Result<()>,
) -> Result<u64, JournalError> {
    let segs = segments(dir)?;
    let mut last = after;
    for (i, (_, path)) in segs.iter().enumerate() {
        let mut reader = SegmentReader::open(path)?;
        loop {
            let offset = reader.valid;
            let Some(payload) = reader.next_record()? else {
                break;
            };
            let batch = decode_batch(payload).ok_or_else(|| JournalError::Damaged {
                path: path.clone(),
                offset,
                why: "a record whose checksum holds does not decode".into(),
            })?;
            // Batches up to `after` are not needed, and neither is their
            // numbering: a copy of a live directory may hold an old segment
            // that a snapshot's prune removed along with the next one. From
            // the first needed batch on, every batch follows the one before.
            if batch.seq <= after && last == after {
                continue;
            }
            if batch.seq != last + 1 {
                return Err(JournalError::Gap {
                    expected: last + 1,
                    found: batch.seq,
                    path: path.clone(),
                });
            }
            last = batch.seq;
            apply(batch)?;
        }
        if reader.valid != reader.len && i + 1 != segs.len() {
            return Err(JournalError::Damaged {
                path: path.clone(),
                offset: reader.valid,
                why: "a segment that is not the newest ends in a bad record".into(),
            });
        }
    }
    Ok(last)
}

/// The end of an interrupted last write: bytes after the newest segment's
/// last intact record with no intact record after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Where the intact records end.
    pub offset: u64,
    /// The file's length: `len - offset` bytes are torn.
    pub len: u64,
}

/// What [`scan`] found: the journal verified end to end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// The newest segment's last batch (its first seq − 1 when it holds
    /// none); `None` without segments.
    pub end: Option<u64>,
    /// The newest segment's torn tail, if it has one.
    pub torn: Option<TornTail>,
    /// Intact batches in all segments.
    pub batches: u64,
    /// The newest segment, if there is one.
    pub newest: Option<PathBuf>,
}

/// Reads every segment's records and decides what each bad byte is. The
/// journal is append-only with one fsync per batch, so only the newest
/// segment's last record can be torn by a crash: a bad record with an
/// intact one anywhere after it, a bad record in an older segment, or a
/// record that passes its checksum but does not decode is damage, an error
/// naming the file and offset. Reads only; changes nothing.
pub fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let segs = segments(dir)?;
    let mut out = Scan::default();
    for (i, (first, path)) in segs.iter().enumerate() {
        let mut reader = SegmentReader::open(path)?;
        let mut last = first.saturating_sub(1);
        loop {
            let offset = reader.valid;
            let Some(payload) = reader.next_record()? else {
                break;
            };
            match payload.get(..8).and_then(|b| b.try_into().ok()) {
                Some(seq) if payload.len() >= 12 => last = u64::from_le_bytes(seq),
                _ => {
                    return Err(JournalError::Damaged {
                        path: path.clone(),
                        offset,
                        why: "a record whose checksum holds is too short to be a batch".into(),
                    })
                }
            }
            out.batches += 1;
        }
        let newest = i + 1 == segs.len();
        if reader.valid != reader.len {
            if !newest {
                return Err(JournalError::Damaged {
                    path: path.clone(),
                    offset: reader.valid,
                    why: "a segment that is not the newest ends in a bad record".into(),
                });
            }
            if let Some(at) = intact_record_after(path, reader.valid, last)? {
                return Err(JournalError::Damaged {
                    path: path.clone(),
                    offset: reader.valid,
                    why: format!("a bad record with an intact batch after it (at offset {at})"),
                });
            }
            out.torn = Some(TornTail {
                path: path.clone(),
                offset: reader.valid,
                len: reader.len,
            });
        }
        if newest {
            out.end = Some(last);
            out.newest = Some(path.clone());
        }
    }
    Ok(out)
}

/// The offset of an intact record that starts after `from` in the file at
/// `path` and carries a batch after `last`, if there is one. Looks at
/// every byte offset: the bad record's own length may be what is damaged.
/// A candidate must name a later batch before its checksum is computed,
/// so random bytes cost one comparison each.
pub fn intact_record_after(path: &Path, from: u64, last: u64) -> io::Result<Option<u64>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let plausible = last + 1..=last.saturating_add(1 << 32);
    for o in 1..tail.len().saturating_sub(HEADER + 12) + 1 {
        let at = |a: usize| -> [u8; 4] { [tail[a], tail[a + 1], tail[a + 2], tail[a + 3]] };
        let len = u32::from_le_bytes(at(o)) as usize;
        if !(12..=MAX_RECORD).contains(&len) || o + HEADER + len > tail.len() {
            continue;
        }
        let payload = &tail[o + HEADER..o + HEADER + len];
        let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
        if plausible.contains(&seq) && crc32fast::hash(payload) == u32::from_le_bytes(at(o + 4)) {
            return Ok(Some(from + o as u64));
        }
    }
    Ok(None)
}

/// Every intact batch after `last` in the file at `path` from byte `from`
/// on, skipping bad bytes: what a repair drops, read as far as it can be.
pub fn intact_batches_after(path: &Path, from: u64, last: u64) -> io::Result<Vec<Batch>> {
    let bytes = fs::read(path)?;
    let mut out = Vec::new();
    let mut at = from as usize;
    let mut last = last;
    while at + HEADER <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let end = at + HEADER + len as usize;
        let batch = (len as usize <= MAX_RECORD && end <= bytes.len())
            .then(|| &bytes[at + HEADER..end])
            .filter(|p| crc32fast::hash(p) == crc)
            .and_then(decode_batch)
            .filter(|b| b.seq > last);
        match batch {
            Some(b) => {
                last = b.seq;
                out.push(b);
                at = end;
            }
            None => at += 1,
        }
    }
    Ok(out)
}

/// Sets a torn tail aside and cuts the segment back to its intact records,
/// so appends continue after them: the torn bytes are first copied, durably,
/// to `<segment>.torn-<offset>` beside it (an operator can look at them;
/// nothing is thrown away). Call only once the store has shown the tail was
/// never acknowledged (no marker or sled names a batch past the intact
/// records). Returns the side file.
pub fn set_aside_torn_tail(torn: &TornTail) -> io::Result<PathBuf> {
    let mut file = OpenOptions::new().read(true).write(true).open(&torn.path)?;
    file.seek(SeekFrom::Start(torn.offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut name = torn.path.clone().into_os_string();
    name.push(format!(".torn-{}", torn.offset));
    let side = PathBuf::from(name);
    let mut out = File::create(&side)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    file.set_len(torn.offset)?;
    file.sync_all()?;
    if let Some(dir) = torn.path.parent() {
        sync_dir(dir)?;
    }
    Ok(side)
}

/// The open tail of the journal, owned by the writer thread.
pub struct Journal {
    dir: PathBuf,
    file: File,
    len: u64,
    buf: Vec<u8>,
    /// Bytes appended since the last segment rotation.
    pub segment_bytes: u64,
    /// A failed append could not be cut back: bytes of a batch that failed
    /// may sit at the end, so nothing may be appended after them.
    broken: bool,
}

impl Journal {
    /// Opens the newest segment for appending, or starts one at `next_seq`.
    pub fn open(dir: &Path, next_seq: u64) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let path = match segments(dir)?.last() {
            Some((_, p)) => p.clone(),
            None => segment_path(dir, next_seq),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let len = file.seek(SeekFrom::End(0))?;
        sync_dir(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            file,
            len,
            buf: Vec::new(),
            segment_bytes: len,
            broken: false,
        })
    }

    /// Appends one batch and makes it durable. On failure the file is cut back
    /// to where it was and the cut is made durable, so neither a half record
    /// nor a whole one whose sync failed precedes a later record or comes
    /// back after a crash. If the cut fails too, the journal is broken: every
    /// later append fails, since a record written after the failed one would
    /// be dropped with it as a torn tail (or stop replay as damage).
    pub fn append(&mut self, batch: &Batch) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier failed write could not be cut off the journal; restart faka",
            ));
        }
        self.buf.clear();
        let payload = encode_batch(batch);
        if payload.len() > MAX_RECORD {
            // Replay would take it for a torn tail: refuse it unwritten.
            return Err(io::Error::other(format!(
                "a batch of {} bytes is more than one journal record holds",
                payload.len()
            )));
        }
        frame(&payload, &mut self.buf);
        let result = self
            .file
            .write_all(&self.buf)
            .and_then(|_| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.segment_bytes += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let cut = self
                    .file
                    .set_len(self.len)
                    .and_then(|_| self.file.sync_all());
                if cut.is_err() {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }

    /// Whether a failed append could not be cut back (see [`Journal::append`]);
    /// only a restart, which sets the torn tail aside, clears it.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Starts a new segment whose first batch will be `next_seq`.
    pub fn rotate(&mut self, next_seq: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, next_seq);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.len = 0;
        self.segment_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> Batch {
        Batch {
            seq,
            writes: vec![
                Write {
                    tree: 1,
                    key: b"k".to_vec(),
                    value: Some(vec![seq as u8; 5]),
                },
                Write {
                    tree: 2,
                    key: vec![],
                    value: None,
                },
            ],
        }
    }

    fn replayed(dir: &Path, after: u64) -> Vec<Batch> {
        let mut v = Vec::new();
        replay(dir, after, |b| {
            v.push(b);
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn appended_batches_replay_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.append(&batch(1)).unwrap();
        j.append(&batch(2)).unwrap();
        j.rotate(3).unwrap();
        j.append(&batch(3)).unwrap();
        assert_eq!(replayed(dir.path(), 0), vec![batch(1), batch(2), batch(3)]);
        assert_eq!(replayed(dir.path(), 2), vec![batch(3)]);
    }

    #[test]
    fn a_torn_tail_is_set_aside_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.append(&batch(1)).unwrap();
        j.append(&batch(2)).unwrap();
        drop(j);
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(replayed(dir.path(), 0), vec![batch(1)]);
        let found = scan(dir.path()).unwrap();
        assert_eq!(found.end, Some(1));
        let torn = found.torn.expect("a torn tail");
        let intact = len / 2; // two records of one size
        assert_eq!((torn.offset, torn.len), (intact, len - 3));
        let side = set_aside_torn_tail(&torn).unwrap();
        assert_eq!(fs::metadata(&side).unwrap().len(), len - 3 - intact);
        assert_eq!(fs::metadata(&path).unwrap().len(), intact);
        let mut j = Journal::open(dir.path(), 2).unwrap();
        j.append(&batch(2)).unwrap();
        assert_eq!(replayed(dir.path(), 0), vec![batch(1), batch(2)]);
        assert_eq!(scan(dir.path()).unwrap().torn, None);
    }

    /// Only a bad last record with nothing intact after it is a torn tail;
    /// a bad record with an intact one after it, in the newest segment or
    /// an older one, is damage naming its offset.
    #[test]
    fn scan_tells_a_torn_tail_from_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        for seq in 1..=4 {
            j.append(&batch(seq)).unwrap();
        }
        drop(j);
        let path = segment_path(dir.path(), 1);
        let good = fs::read(&path).unwrap();
        let rec = good.len() / 4;
        let clean = scan(dir.path()).unwrap();
        assert_eq!((clean.end, clean.torn, clean.batches), (Some(4), None, 4));
        assert_eq!(clean.newest.as_deref(), Some(path.as_path()));
        let damaged_at = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            match scan(dir.path()) {
                Err(JournalError::Damaged { offset, .. }) => Some(offset),
                Ok(s) => {
                    assert!(s.torn.is_some(), "either damage or a torn tail");
                    None
                }
                Err(e) => panic!("{e}"),
            }
        };
        // A flipped bit in the second record's payload, or its length.
        for at in [rec + 10, rec + 1] {
            let mut b = good.clone();
            b[at] ^= 0x04;
            assert_eq!(damaged_at(&b), Some(rec as u64), "flip at {at}");
        }
        // Zeros over the second and third records.
        let mut b = good.clone();
        b[rec..3 * rec].fill(0);
        assert_eq!(damaged_at(&b), Some(rec as u64));
        // The last record cut short, flipped or zeroed: a torn tail.
        assert_eq!(damaged_at(&good[..good.len() - 3]), None);
        let mut b = good.clone();
        b[3 * rec + 12] ^= 1;
        assert_eq!(damaged_at(&b), None);
        assert_eq!(scan(dir.path()).unwrap().end, Some(3));
        // Damage in an older segment is damage even at its end.
        fs::write(&path, &good[..good.len() - 3]).unwrap();
        let mut j = Journal::open(dir.path(), 5).unwrap();
        j.rotate(5).unwrap();
        j.append(&batch(5)).unwrap();
        assert!(matches!(
            scan(dir.path()),
            Err(JournalError::Damaged { offset, .. }) if offset == 3 * rec as u64
        ));
        // A record whose checksum holds but which is no batch.
        let mut short = Vec::new();
        frame(b"tiny", &mut short);
        fs::write(&path, [good.clone(), short].concat()).unwrap();
        assert!(matches!(
            scan(dir.path()),
            Err(JournalError::Damaged { offset, .. }) if offset == good.len() as u64
        ));
    }

    fn gap_of(dir: &Path, after: u64) -> (u64, u64) {
        match replay(dir, after, |_| Ok(())) {
            Err(JournalError::Gap {
                expected, found, ..
            }) => (expected, found),
            other => panic!("expected a gap, got {other:?}"),
        }
    }

    /// Every batch after `after` must be there, one after the other; what
    /// comes before is not needed, holes included (a copy of a live
    /// directory can keep an old segment whose successor a prune removed).
    #[test]
    fn replay_needs_every_batch_after_its_start_and_nothing_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.append(&batch(1)).unwrap();
        j.append(&batch(2)).unwrap();
        // Batches 3..=9 are gone with their segment.
        j.rotate(10).unwrap();
        for seq in 10..=12 {
            j.append(&batch(seq)).unwrap();
        }
        assert_eq!(
            replayed(dir.path(), 9),
            vec![batch(10), batch(11), batch(12)]
        );
        assert_eq!(replayed(dir.path(), 11), vec![batch(12)]);
        assert_eq!(gap_of(dir.path(), 8), (9, 10), "batch 9 is needed");
        assert_eq!(gap_of(dir.path(), 0), (3, 10));
        assert_eq!(replayed(dir.path(), 12), vec![]);

        // A batch missing, or one going back, after the start is a gap.
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        for seq in [1, 2, 4] {
            j.append(&batch(seq)).unwrap();
        }
        assert_eq!(gap_of(dir.path(), 1), (3, 4));
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        for seq in [1, 2, 3, 2] {
            j.append(&batch(seq)).unwrap();
        }
        assert_eq!(gap_of(dir.path(), 1), (4, 2));
    }

    /// A failed append whose cut-back fails too leaves the journal refusing
    /// every later append, so no batch is ever written after the failed
    /// one's bytes (replay would drop it with them as a torn tail).
    #[test]
    fn a_failed_append_that_cannot_be_cut_back_breaks_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.append(&batch(1)).unwrap();
        let path = segment_path(dir.path(), 1);
        let writable = std::mem::replace(&mut j.file, File::open(&path).unwrap());
        assert!(
            j.append(&batch(2)).is_err(),
            "a read-only handle cannot write"
        );
        assert!(j.is_broken(), "nor cut back");
        j.file = writable;
        assert!(j.append(&batch(2)).is_err(), "broken until a restart");
        assert_eq!(replayed(dir.path(), 0), vec![batch(1)]);
    }

    /// A batch bigger than a record may be is refused unwritten (replay would
    /// take it for a torn tail and cut it off with everything after it); the
    /// journal goes on.
    #[test]
    fn a_batch_too_big_for_one_record_is_refused_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.append(&batch(1)).unwrap();
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        let mut big = batch(2);
        big.writes[0].value = Some(vec![7; MAX_RECORD]);
        assert!(j.append(&big).is_err());
        assert_eq!(fs::metadata(&path).unwrap().len(), len, "nothing written");
        assert!(!j.is_broken());
        j.append(&batch(2)).unwrap();
        assert_eq!(replayed(dir.path(), 0), vec![batch(1), batch(2)]);
    }

    /// The records a segment reader returns, and its valid prefix.
    fn read_segment(path: &Path) -> (Vec<Vec<u8>>, u64) {
        let mut r = SegmentReader::open(path).unwrap();
        let mut records = Vec::new();
        while let Some(p) = r.next_record().unwrap() {
            records.push(p.to_vec());
        }
        (records, r.valid)
    }

    #[test]
    fn a_flipped_bit_or_a_cut_anywhere_ends_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        let mut buf = Vec::new();
        frame(b"hello", &mut buf);
        frame(b"world", &mut buf);
        fs::write(&path, &buf).unwrap();
        assert_eq!(
            read_segment(&path),
            (vec![b"hello".to_vec(), b"world".to_vec()], 26)
        );
        let mut flipped = buf.clone();
        flipped[25] ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert_eq!(read_segment(&path), (vec![b"hello".to_vec()], 13));
        // Cut inside the first record's header, its payload, the second's
        // header, its payload.
        for (cut, whole) in [(5, 0), (12, 0), (13, 1), (17, 1), (25, 1)] {
            fs::write(&path, &buf[..cut]).unwrap();
            let (records, valid) = read_segment(&path);
            assert_eq!(records.len(), whole, "cut at {cut}");
            assert_eq!(valid, 13 * whole as u64, "cut at {cut}");
        }
        // A length no record may have.
        fs::write(&path, [0xff; 16]).unwrap();
        assert_eq!(read_segment(&path), (vec![], 0));
    }

    /// A backup reads the live tail segment while the writer appends: the
    /// reader sees the file as it was when opened, never a record appended
    /// after (or half of one).
    #[test]
    fn a_segment_reader_stops_at_the_length_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.append(&batch(1)).unwrap();
        let path = segment_path(dir.path(), 1);
        let mut r = SegmentReader::open(&path).unwrap();
        j.append(&batch(2)).unwrap();
        assert!(r.next_record().unwrap().is_some());
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.valid, r.len);
        assert_eq!(
            SegmentReader::open(&path).unwrap().valid_prefix().unwrap(),
            fs::metadata(&path).unwrap().len()
        );
    }
}
