//! The data directory's layout and its small files: where sled and the
//! journal live, the markers that vouch for sled (`CLEAN` after a clean
//! stop, `SLED_SYNCED` after a flush), the lock that keeps a second process
//! out, and the two questions every writer of files asks (is the directory
//! entry durable, is there room). Everything else in `store` builds on
//! these; this module imports nothing of it.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(pub String);

pub(crate) fn err(context: &str, e: impl std::fmt::Display) -> OpenError {
    OpenError(format!("{context}: {e}"))
}

pub fn sled_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sled")
}

pub fn journal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

pub(crate) fn marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join("CLEAN")
}

pub(crate) fn write_clean_marker(data_dir: &Path, seq: u64) -> io::Result<()> {
    write_marker(data_dir, "CLEAN", &seq.to_string())
}

/// Replaces the marker file `name` with `text`, durably.
pub(crate) fn write_marker(data_dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = data_dir.join(format!("{name}.tmp"));
    fs::write(&tmp, text)?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, data_dir.join(name))?;
    sync_dir(data_dir)
}

pub(crate) const SYNCED: &str = "SLED_SYNCED";

/// Which sled files a `SLED_SYNCED` marker was written for: the device,
/// inode and change time of sled's `conf`, which sled writes once when it
/// creates its files. A copy of the directory (`cp -a` keeps contents and
/// times, never the inode or the change time) names other files, and a
/// live copy of sled's files is not a state sled ever was in.
fn sled_identity(sled: &Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(sled.join("conf"))?;
    Ok(format!(
        "{}:{}:{}.{:09}",
        m.dev(),
        m.ino(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// Records that sled holds every batch up to `seq` durably: call only after
/// those batches were applied and sled was flushed.
pub(crate) fn write_synced_marker(data_dir: &Path, seq: u64) -> io::Result<()> {
    let id = sled_identity(&sled_dir(data_dir))?;
    write_marker(data_dir, SYNCED, &format!("{seq} {id}"))
}

/// The batch a `SLED_SYNCED` marker names, if it was written for the sled
/// files now in the directory.
pub(crate) fn synced_batch(data_dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(data_dir.join(SYNCED)).ok()?;
    let (seq, id) = text.trim().split_once(' ')?;
    let current = sled_identity(&sled_dir(data_dir)).ok()?;
    if id != current {
        tracing::warn!(
            "sled's files are not the ones last flushed here (a copy?); not resuming them"
        );
        return None;
    }
    seq.parse().ok()
}

/// Takes an exclusive lock on the data directory for this process's lifetime.
///
/// The lock is an `flock` on the directory itself, not on a file in it: a
/// lock file can be deleted (`rm data/LOCK`) under a running shop, and the
/// next process would lock a new file of the same name and serve the same
/// data beside it. A directory cannot be swapped under an open descriptor;
/// removing and re-creating it gives a new, empty directory, not this shop.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, OpenError> {
    let dir =
        File::open(data_dir).map_err(|e| err(&format!("cannot open {}", data_dir.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(OpenError(format!(
                "data directory {} is in use by another faka process",
                data_dir.display()
            )));
        }
    }
    Ok(dir)
}

/// Makes a directory's entries (new or renamed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Free bytes for unprivileged writers on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}
