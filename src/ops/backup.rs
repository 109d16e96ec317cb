//! Backups: a consistent, checksummed copy of the store, taken while faka
//! serves, that `faka serve` can open as its data directory.
//!
//! The copy is engine-neutral: the newest verified snapshot plus the journal
//! segments after it, each cut to its valid prefix, plus the admin token
//! hash, listed with SHA-256 in `MANIFEST.json`. Because journal batches are
//! whole and ordered, any prefix is a consistent state; everything
//! acknowledged before the backup began is in it. Opening the copy rebuilds
//! sled from it. The master key (`faka.key`) is *not* in the copy: back it up
//! separately, or the copy's card keys cannot be read.

use crate::ops::admin_token::HASH_FILE;
use crate::store::{journal, recovery, snapshot};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "MANIFEST.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    pub snapshot_base: u64,
    pub last_batch: u64,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug)]
pub struct BackupResult {
    pub path: PathBuf,
    pub bytes: u64,
    pub last_batch: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup i/o: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Invalid(String),
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<ManifestFile> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, bytes)?;
    fs::File::open(path)?.sync_all()?;
    Ok(ManifestFile {
        path: String::new(),
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    })
}

/// Copies the first `len` bytes of `src` to `dst` and makes them durable,
/// hashing as it goes: one buffer in memory however large the file (a
/// snapshot of a million orders is hundreds of MiB, and a backup runs
/// while the shop serves).
fn copy_synced(src: &Path, dst: &Path, len: u64) -> io::Result<ManifestFile> {
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p)?;
    }
    let mut to = fs::File::create(dst)?;
    let (copied, sha256) =
        hash_stream(fs::File::open(src)?.take(len), |chunk| to.write_all(chunk))?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} ended before {len} bytes", src.display()),
        ));
    }
    to.sync_all()?;
    Ok(ManifestFile {
        path: String::new(),
        bytes: len,
        sha256,
    })
}

/// A file's length and SHA-256, read a buffer at a time.
fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    hash_stream(fs::File::open(path)?, |_| Ok(()))
}

/// Reads `from` to its end 1 MiB at a time, handing each chunk to `sink`;
/// returns the length read and its SHA-256.
fn hash_stream(
    mut from: impl Read,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
        len += n as u64;
    }
    Ok((len, hex::encode(hasher.finalize())))
}

/// Makes the new entries of a copied store durable.
fn sync_dirs(root: &Path) -> io::Result<()> {
    for d in [
        root.join("journal"),
        root.join("snapshots"),
        root.to_path_buf(),
    ] {
        if d.exists() {
            journal::sync_dir(&d)?;
        }
    }
    Ok(())
}

/// Copies the store in `data_dir` to `out` (which must not exist or be
/// empty). Safe while faka runs: it reads only files faka never rewrites in
/// place, and retries if a snapshot rotation removes one mid-copy.
pub fn backup(data_dir: &Path, out: &Path) -> Result<BackupResult, BackupError> {
    if out.exists() && fs::read_dir(out)?.next().is_some() {
        return Err(BackupError::Invalid(format!(
            "{} exists and is not empty",
            out.display()
        )));
    }
    if !recovery::holds_a_shop(data_dir) {
        return Err(BackupError::Invalid(format!(
            "{} holds no shop (no journal segment): check --config and [storage] data_dir",
            data_dir.display()
        )));
    }
    let mut last_err = None;
    for _ in 0..5 {
        match copy_once(data_dir, out) {
            Ok(r) => return Ok(r),
            Err(BackupError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                // A snapshot rotation pruned a file we listed: start over.
                let _ = fs::remove_dir_all(out);
                last_err = Some(e);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(out);
                return Err(e);
            }
        }
    }
    Err(BackupError::Io(
        last_err.unwrap_or_else(|| io::Error::other("backup failed")),
    ))
}

fn copy_once(data_dir: &Path, out: &Path) -> Result<BackupResult, BackupError> {
    // A damaged journal is refused, never copied up to the damage: the copy
    // would restore as a shop without the batches after it.
    journal::scan(&recovery::journal_dir(data_dir)).map_err(|e| match e {
        journal::JournalError::Io(e) => BackupError::Io(e),
        damage => BackupError::Invalid(format!("the shop's journal is damaged: {damage}")),
    })?;
    fs::create_dir_all(out)?;
    let mut files = Vec::new();
    let mut base = 0;
    for (b, path) in snapshot::list(data_dir)? {
        if snapshot::read(&path, |_| Ok(())).is_err() {
            continue;
        }
        let rel = format!("snapshots/{b:020}.snap");
        let mut f = copy_synced(&path, &out.join(&rel), fs::metadata(&path)?.len())?;
        f.path = rel;
        files.push(f);
        base = b;
        break;
    }
    let jdir = recovery::journal_dir(data_dir);
    let segs = journal::segments(&jdir)?;
    for (i, (first, path)) in segs.iter().enumerate() {
        let needed = segs
            .get(i + 1)
            .is_none_or(|(next, _)| next.saturating_sub(1) > base);
        if !needed {
            continue;
        }
        let valid = journal::SegmentReader::open(path)?.valid_prefix()?;
        let rel = format!("journal/{first:020}.log");
        let mut f = copy_synced(path, &out.join(&rel), valid)?;
        f.path = rel;
        files.push(f);
    }
    let token = data_dir.join(HASH_FILE);
    if token.exists() {
        let mut f = write_synced(&out.join(HASH_FILE), &fs::read(&token)?)?;
        f.path = HASH_FILE.to_string();
        files.push(f);
    }
    // The copy must replay from its snapshot without a gap.
    let last_batch = journal::replay(&recovery::journal_dir(out), base, |_| Ok(()))
        .map_err(|e| BackupError::Invalid(format!("the copied journal does not verify: {e}")))?;
    let manifest = Manifest {
        format: 1,
        created_at: crate::views::rfc3339(crate::store::now_ms()),
        snapshot_base: base,
        last_batch,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    write_synced(&out.join(MANIFEST), &text)?;
    sync_dirs(out)?;
    let bytes = manifest.files.iter().map(|f| f.bytes).sum::<u64>() + text.len() as u64;
    Ok(BackupResult {
        path: out.to_path_buf(),
        bytes,
        last_batch,
    })
}

/// Checks every file of a backup against its manifest.
pub fn verify(backup: &Path) -> Result<Manifest, BackupError> {
    let text = fs::read(backup.join(MANIFEST)).map_err(|e| {
        BackupError::Invalid(format!(
            "{} has no readable {MANIFEST}: {e}",
            backup.display()
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| BackupError::Invalid(format!("{MANIFEST}: {e}")))?;
    for f in &manifest.files {
        if f.path.contains("..") || Path::new(&f.path).is_absolute() {
            return Err(BackupError::Invalid(format!(
                "suspicious path {} in manifest",
                f.path
            )));
        }
        let (bytes, sha256) = hash_file(&backup.join(&f.path))?;
        if bytes != f.bytes || sha256 != f.sha256 {
            return Err(BackupError::Invalid(format!(
                "{} does not match its checksum",
                f.path
            )));
        }
    }
    Ok(manifest)
}

/// Verifies a backup and copies it into an empty (or new) data directory.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    let manifest = verify(backup)?;
    if data_dir.exists() && fs::read_dir(data_dir)?.next().is_some() {
        return Err(BackupError::Invalid(format!(
            "{} is not empty: restore into a new directory",
            data_dir.display()
        )));
    }
    let existed = data_dir.exists();
    fs::create_dir_all(data_dir)?;
    // Held until the restore is done: a shop started on the directory
    // meanwhile would serve half a store.
    let _lock = recovery::lock_data_dir(data_dir).map_err(|e| BackupError::Invalid(e.0))?;
    let copy = || -> Result<(), BackupError> {
        for f in &manifest.files {
            let copied = copy_synced(&backup.join(&f.path), &data_dir.join(&f.path), f.bytes)?;
            if copied.sha256 != f.sha256 {
                return Err(BackupError::Invalid(format!(
                    "{} changed while it was restored",
                    f.path
                )));
            }
        }
        Ok(sync_dirs(data_dir)?)
    };
    if let Err(e) = copy() {
        // Half a restore must not be left to be served: a journal cut short
        // (a full disk) would open as a shop missing its last batches.
        if existed {
            for entry in fs::read_dir(data_dir)?.flatten() {
                let p = entry.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        } else {
            let _ = fs::remove_dir_all(data_dir);
        }
        return Err(e);
    }
    Ok(manifest)
}
