//! The sled view as the store's readers and writer reach it, and the durable
//! batches it lacks after sled failed to take one.
//!
//! sled remembers its first I/O error (a full disk) and refuses every write
//! after it for as long as the database is open, so after such an error the
//! journal is ahead of sled until sled is opened again (an error sled gave
//! a read or its flush is treated the same way). Until then the
//! batches sled lacks are kept here ([`Unapplied`]): point reads look in
//! them before sled, so an acknowledged order reads as it is; scans, which
//! cannot merge them, answer 503; writes are refused. Once the disk has room
//! again the committer swaps in a freshly opened sled that has replayed the
//! journal ([`View::swap`]), and the shop goes on without a restart.

use super::journal::Batch;
use super::tree::Trees;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The open sled trees; empty while they are being reopened.
pub(crate) struct View {
    trees: RwLock<Option<Arc<Trees>>>,
}

/// What readers hear while sled is behind the journal or being reopened.
pub(crate) fn catching_up() -> Error {
    Error::Unavailable {
        message: "storage is catching up after a write error; retry shortly".into(),
        retry_after: Duration::from_secs(2),
    }
}

impl View {
    pub(crate) fn new(trees: Arc<Trees>) -> View {
        View {
            trees: RwLock::new(Some(trees)),
        }
    }

    /// The current trees, or 503 while they are being reopened.
    pub(crate) fn get(&self) -> Result<Arc<Trees>> {
        self.trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(catching_up)
    }

    /// Takes the trees out (readers get 503 until [`View::put`]).
    pub(crate) fn take(&self) -> Option<Arc<Trees>> {
        self.trees.write().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn put(&self, trees: Arc<Trees>) {
        *self.trees.write().unwrap_or_else(|p| p.into_inner()) = Some(trees);
    }
}

/// Durable batches sled has not taken, oldest first, with a flag that
/// readers check before they take the lock.
#[derive(Default)]
pub(crate) struct Unapplied {
    behind: AtomicBool,
    batches: Mutex<Vec<Arc<Batch>>>,
}

impl Unapplied {
    /// Whether sled lacks a durable batch.
    pub(crate) fn is_behind(&self) -> bool {
        self.behind.load(Ordering::SeqCst)
    }

    /// Records `batch` as durable and not in sled; call before its callers
    /// are answered, so that no read after the answer misses it.
    pub(crate) fn push(&self, batch: Arc<Batch>) {
        self.lock().push(batch);
        self.behind.store(true, Ordering::SeqCst);
    }

    /// sled failed without a batch to keep (a read or its flush): writes
    /// are refused until it is opened again, as after a failed batch.
    pub(crate) fn mark_failed(&self) {
        self.behind.store(true, Ordering::SeqCst);
    }

    /// Forgets every batch: sled holds them now.
    pub(crate) fn clear(&self) {
        self.lock().clear();
        self.behind.store(false, Ordering::SeqCst);
    }

    /// The newest value the batches give the row (`Some(None)`: deleted),
    /// `None` when they do not write it.
    pub(crate) fn get(&self, tree: u8, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if !self.is_behind() {
            return None;
        }
        self.lock().iter().rev().find_map(|b| {
            // A batch's writes are sorted by (tree, key) (`writer`).
            b.writes
                .binary_search_by(|w| (w.tree, &w.key[..]).cmp(&(tree, key)))
                .ok()
                .map(|i| b.writes[i].value.clone())
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Batch>>> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::super::journal::{Batch, Write};
    use super::*;

    fn write(tree: u8, key: &[u8], value: Option<&[u8]>) -> Write {
        Write {
            tree,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    /// The newest batch that writes a row decides it, a delete included;
    /// rows no batch writes are left to sled; nothing once cleared.
    #[test]
    fn the_newest_unapplied_batch_decides_a_row() {
        let u = Unapplied::default();
        assert_eq!(u.get(1, b"a"), None);
        u.push(Arc::new(Batch {
            seq: 1,
            writes: vec![write(1, b"a", Some(b"1")), write(1, b"b", Some(b"1"))],
        }));
        u.push(Arc::new(Batch {
            seq: 2,
            writes: vec![write(1, b"a", None), write(2, b"a", Some(b"2"))],
        }));
        assert!(u.is_behind());
        assert_eq!(u.get(1, b"a"), Some(None), "deleted by the newer batch");
        assert_eq!(u.get(1, b"b"), Some(Some(b"1".to_vec())));
        assert_eq!(u.get(2, b"a"), Some(Some(b"2".to_vec())));
        assert_eq!(u.get(1, b"c"), None, "sled answers");
        u.clear();
        assert!(!u.is_behind());
        assert_eq!(u.get(1, b"b"), None);
    }
}
