//! One upload of card keys, accepted or refused as a whole, whatever its
//! size: the admin API's and `faka import`'s.
//!
//! An upload of up to [`IMPORT_CHUNK`] keys is one writer command. A bigger
//! one as one command would make one huge batch (sled then builds oversized
//! nodes that slow every later write and hold gigabytes), so it is
//! *staged*: sealed and stored chunk by chunk under an upload id, in blocks
//! that no reader takes for keys (not available, not counted, not listed),
//! then *published* by one command that makes them available and counts
//! them. A chunk refused (a full disk, a full write queue) or a crash
//! before the publish puts nothing on sale; what was staged is discarded at
//! once, else by the next upload's first command or at the next start.

use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::shop::{self, ImportResult, SealedKey};
use crate::store::Store;
use std::collections::VecDeque;
use std::sync::mpsc::Receiver;

/// Keys per writer command.
pub const IMPORT_CHUNK: usize = 10_000;

/// Chunks queued at the writer at once: chunk N+1 is sealed while chunk N
/// is journaled and copied into sled.
const CHUNKS_IN_FLIGHT: usize = 2;

/// A key sealed for `product_id`, with its keyed fingerprint.
pub fn seal(crypto: &Crypto, product_id: &str, key: &str) -> SealedKey {
    SealedKey {
        fingerprint: crypto.key_fingerprint(product_id, key),
        sealed: crypto.seal(key.as_bytes(), product_id.as_bytes()),
    }
}

/// Stores the `total` keys `keys` hands over as one upload for
/// `product_id`: all of them (but the duplicates), or none. `keys` hands
/// every key of the upload, checked and trimmed, to the consumer it is
/// given (an error from the consumer ends it, and is returned); it is
/// dropped (with the body it reads) before the upload is published. Blocks
/// until the answer; call it off the async workers.
pub fn import(
    store: &Store,
    crypto: &Crypto,
    product_id: &str,
    total: u64,
    keys: impl FnOnce(&mut dyn FnMut(&str) -> Result<()>) -> Result<()>,
) -> Result<ImportResult> {
    if total <= IMPORT_CHUNK as u64 {
        let mut sealed = Vec::with_capacity(total as usize);
        keys(&mut |k| {
            sealed.push(seal(crypto, product_id, k));
            Ok(())
        })?;
        let pid = product_id.to_string();
        return store.write_blocking(move |tx| shop::import_keys(tx, &pid, sealed));
    }
    staged(store, crypto, product_id, keys).map_err(|e| match e {
        // The writer's answer is about its own batch; say what it means
        // for the upload.
        Error::Unavailable {
            message,
            retry_after,
        } => Error::Unavailable {
            message: format!(
                "{}; none of the upload's keys were added",
                message.trim_end_matches("; nothing was changed")
            ),
            retry_after,
        },
        e => e,
    })
}

fn staged(
    store: &Store,
    crypto: &Crypto,
    product_id: &str,
    keys: impl FnOnce(&mut dyn FnMut(&str) -> Result<()>) -> Result<()>,
) -> Result<ImportResult> {
    let mut upload = Staging::begin(store, product_id)?;
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
    keys(&mut |k| {
        chunk.push(seal(crypto, product_id, k));
        if chunk.len() == IMPORT_CHUNK {
            upload.stage(std::mem::replace(
                &mut chunk,
                Vec::with_capacity(IMPORT_CHUNK),
            ))?;
        }
        Ok(())
    })?;
    if !chunk.is_empty() {
        upload.stage(chunk)?;
    }
    upload.publish()
}

/// An upload being staged. Dropped unpublished (an error, a panic), it
/// asks the writer to discard what it staged.
struct Staging<'s> {
    store: &'s Store,
    id: u64,
    queued: VecDeque<Receiver<Result<()>>>,
    published: bool,
}

impl<'s> Staging<'s> {
    /// Registers a new upload and opens it in the store; its first command
    /// also discards uploads that were abandoned.
    fn begin(store: &'s Store, product_id: &str) -> Result<Staging<'s>> {
        let live = store.live_uploads();
        let upload = Staging {
            store,
            id: live.start(),
            queued: VecDeque::new(),
            published: false,
        };
        let (id, pid) = (upload.id, product_id.to_string());
        store.write_blocking(move |tx| shop::begin_upload(tx, id, &pid, &|u| live.is_live(u)))?;
        Ok(upload)
    }

    fn stage(&mut self, chunk: Vec<SealedKey>) -> Result<()> {
        if self.queued.len() >= CHUNKS_IN_FLIGHT {
            self.wait_for_one()?;
        }
        let id = self.id;
        let answer = self
            .store
            .submit_blocking(move |tx| shop::stage_keys(tx, id, chunk))?;
        self.queued.push_back(answer);
        Ok(())
    }

    fn wait_for_one(&mut self) -> Result<()> {
        match self.queued.pop_front() {
            Some(answer) => answer
                .recv()
                .unwrap_or_else(|_| Err(Error::unavailable("the write was aborted"))),
            None => Ok(()),
        }
    }

    fn publish(mut self) -> Result<ImportResult> {
        while !self.queued.is_empty() {
            self.wait_for_one()?;
        }
        let id = self.id;
        let result = self
            .store
            .write_blocking(move |tx| shop::publish_upload(tx, id))?;
        self.published = true;
        Ok(result)
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        self.store.live_uploads().end(self.id);
        if !self.published {
            // Queued after the upload's own chunks. If it cannot be queued
            // or made durable, the staged keys stay invisible until the
            // next upload or start discards them.
            let id = self.id;
            let _ = self
                .store
                .submit_blocking(move |tx| shop::discard_upload(tx, id).map(drop));
        }
    }
}

/// At a start: discards what uploads cut short by a stop or crash left
/// staged (they were never published, so none of their keys was added).
pub fn discard_unfinished(store: &Store) {
    // Unreadable now: the writer's own command reads it again.
    if !store.has_staged_uploads().unwrap_or(true) {
        return;
    }
    match store.write_blocking(|tx| shop::discard_abandoned_uploads(tx, &|_| false)) {
        Ok(n) => tracing::info!(uploads = n, "discarded unfinished key uploads"),
        Err(e) => tracing::warn!(
            error = %e,
            "could not discard unfinished key uploads yet; their keys stay hidden until the next upload or start"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    const N: u64 = 25_000;

    fn shop(dir: &std::path::Path) -> (Store, Crypto) {
        let store = Store::open(&StoreOptions::for_test(dir)).unwrap();
        store
            .write_blocking(|tx| {
                shop::create_product(
                    tx,
                    shop::NewProduct {
                        id: "p".into(),
                        name: "P".into(),
                        description: String::new(),
                        price: 100,
                        min_quantity: 1,
                        max_quantity: 10,
                        active: true,
                        presentation: Default::default(),
                    },
                )
            })
            .unwrap();
        (store, Crypto::from_master(&[7; 32]))
    }

    /// Keys K-0 .. K-(N-1); the source fails at key `fail_at`, if given.
    fn send(store: &Store, crypto: &Crypto, fail_at: Option<u64>) -> Result<ImportResult> {
        import(store, crypto, "p", N, |each| {
            for i in 0..N {
                if Some(i) == fail_at {
                    return Err(Error::unavailable("storage is full; nothing was changed"));
                }
                each(&format!("K-{i}"))?;
            }
            Ok(())
        })
    }

    fn available(store: &Store) -> u64 {
        store.product("p").unwrap().unwrap().counts.available
    }

    /// An upload of three chunks that fails in its last one adds none of
    /// its keys, says so, and leaves nothing staged; sent again it adds
    /// every key (none is a duplicate of the failed one's).
    #[test]
    fn an_upload_that_fails_part_way_adds_none_of_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (store, crypto) = shop(dir.path());
        let e = send(&store, &crypto, Some(22_000)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "storage is full; none of the upload's keys were added"
        );
        assert_eq!(available(&store), 0);
        // The discard was queued behind the upload's chunks.
        store.write_blocking(|_| Ok(())).unwrap();
        assert!(!store.has_staged_uploads().unwrap());
        let r = send(&store, &crypto, None).unwrap();
        assert_eq!((r.added, r.duplicates, r.stock), (N, 0, N));
        let report = crate::ops::check::run(&store).unwrap();
        assert!(report.ok(), "{report}");
        assert_eq!(report.keys, N as usize);
        store.close();
    }

    /// An upload nobody finishes (its sender died without a discard) is
    /// discarded by the next upload's first command, or at a start.
    #[test]
    fn an_abandoned_upload_is_discarded_by_the_next_upload_or_start() {
        let dir = tempfile::tempdir().unwrap();
        let (store, crypto) = shop(dir.path());
        let abandon = |store: &Store| {
            let chunk = vec![seal(&crypto, "p", "K-1"), seal(&crypto, "p", "LOST")];
            store
                .write_blocking(move |tx| {
                    shop::begin_upload(tx, 42, "p", &|_| true)?;
                    shop::stage_keys(tx, 42, chunk)
                })
                .unwrap();
            assert!(store.has_staged_uploads().unwrap());
        };
        abandon(&store);
        let r = send(&store, &crypto, None).unwrap();
        assert_eq!((r.added, r.duplicates), (N, 0));
        assert!(!store.has_staged_uploads().unwrap());
        abandon(&store);
        store.close();
        drop(store);
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        discard_unfinished(&store);
        assert!(!store.has_staged_uploads().unwrap());
        assert_eq!(available(&store), N);
        store.close();
    }
}
