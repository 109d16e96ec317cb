//! The writer's side of a staged upload (see `ops::upload`): key blocks
//! stored under an upload id that make no key available, and the one
//! command that publishes them.
//!
//! A staged upload is an `uploads` row (upload id → [`StagedUpload`], the
//! runs of blocks it holds) over ordinary `key_blocks` and
//! `key_fingerprints` rows, without `avail` rows: nothing can claim its
//! keys, and readers skip its blocks. Its keys are de-duplicated against
//! the product's when staged (cheap, and they need not be stored), but
//! whether a key repeats within the upload, or was published meanwhile by
//! another upload staged at the same time, is decided at the publish, from
//! the fingerprints stored with its blocks: a key staged by one upload is
//! not yet a key the product has, since that upload may still fail. Such a
//! key's slot becomes a deleted key, never available. So the writer keeps
//! no set of its own per upload (it would double the memory of a big one:
//! ~23 bytes a key, next to the body being read).

use super::Tx;
use crate::error::{Error, Result};
use crate::store::keyblock::{self, StagedUpload, FP_LEN};
use crate::store::tree::{self, Tree};

/// An upload made available by [`Tx::publish_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub product_id: String,
    /// Keys now available.
    pub added: u64,
    /// Keys skipped: repeated in the upload, or the product had them
    /// (some maybe published by another upload while this one was staged).
    pub duplicates: u64,
}

fn record_key(id: u64) -> Vec<u8> {
    tree::u64_key(id).to_vec()
}

fn gone() -> Error {
    Error::unavailable("the upload was discarded before it was complete; send it again")
}

impl Tx<'_> {
    fn staged_upload(&self, id: u64) -> Result<Option<StagedUpload>> {
        self.get(Tree::Uploads, &record_key(id))
    }

    fn open_upload(&self, id: u64) -> Result<StagedUpload> {
        self.staged_upload(id)?.ok_or_else(gone)
    }

    /// Opens upload `id` for `product_id`, with nothing staged.
    pub fn begin_upload(&mut self, id: u64, product_id: &str) -> Result<()> {
        if self.staged_upload(id)?.is_some() {
            return Err(Error::unavailable("upload id in use, try again"));
        }
        let rec = StagedUpload {
            product_id: product_id.to_string(),
            started_at_ms: self.now_ms,
            runs: Vec::new(),
            keys: 0,
            duplicates: 0,
        };
        self.put(Tree::Uploads, record_key(id), &rec);
        Ok(())
    }

    /// The product upload `id` is for.
    pub fn upload_product(&self, id: u64) -> Result<String> {
        Ok(self.open_upload(id)?.product_id)
    }

    /// Ids of every staged upload.
    pub fn staged_uploads(&self) -> Result<Vec<u64>> {
        Ok(self
            .scan(Tree::Uploads, &[], usize::MAX)?
            .into_iter()
            .filter_map(|(k, _)| tree::read_u64(&k))
            .collect())
    }

    /// The blocks of `product_id`'s staged uploads, as sorted runs.
    pub(super) fn staged_runs(&self, product_id: &str) -> Result<Vec<(u64, u64)>> {
        let mut runs = Vec::new();
        for (_, v) in self.scan(Tree::Uploads, &[], usize::MAX)? {
            let rec: StagedUpload = crate::store::codec::decode(&v).map_err(super::internal)?;
            if rec.product_id == product_id {
                runs.extend(rec.runs);
            }
        }
        runs.sort_unstable();
        Ok(runs)
    }

    /// Stores keys (sealed text, fingerprint) for upload `id` in blocks that
    /// make none of them available; `duplicates` were skipped.
    pub fn stage_keys(
        &mut self,
        id: u64,
        keys: Vec<(Vec<u8>, [u8; FP_LEN])>,
        duplicates: u64,
    ) -> Result<()> {
        let mut rec = self.open_upload(id)?;
        let n = keys.len() as u64;
        // The fingerprints join the product's at the publish, not now.
        if let Some((first, last)) = self.put_blocks(&rec.product_id, keys, None) {
            rec.runs
                .push((keyblock::locate(first).0, keyblock::locate(last).0 + 1));
        }
        rec.keys += n;
        rec.duplicates += duplicates;
        self.put(Tree::Uploads, record_key(id), &rec);
        Ok(())
    }

    /// Makes every key upload `id` staged available, but those the product
    /// has by now or the upload repeats (they become deleted keys), and
    /// ends the upload. The caller counts them into the product.
    ///
    /// The keys join the writer's set of the product's fingerprints at once,
    /// not at the commit (a copy of a big upload's set would double its
    /// memory); if this command is rolled back, the product's set is
    /// dropped, to be loaded again from the store.
    pub fn publish_upload(&mut self, id: u64) -> Result<Published> {
        let rec = self.open_upload(id)?;
        let product = rec.product_id.clone();
        // Loaded before this command writes anything.
        self.load_fingerprints(&product)?;
        self.cmd_published.push(product.clone());
        let mut fps = self.index.fingerprints.remove(&product).unwrap_or_default();
        fps.reserve(rec.keys as usize);
        let published = self.publish_blocks(&rec, &mut fps);
        self.index.fingerprints.insert(product.clone(), fps);
        let taken = published?;
        self.del_raw(Tree::Uploads, record_key(id));
        Ok(Published {
            product_id: product,
            added: rec.keys - taken,
            duplicates: rec.duplicates + taken,
        })
    }

    /// Writes the availability rows of an upload's blocks, adding each
    /// key's fingerprint to `fps`; a key already there is deleted instead.
    /// Returns how many were.
    fn publish_blocks(
        &mut self,
        rec: &StagedUpload,
        fps: &mut crate::store::FingerprintSet,
    ) -> Result<u64> {
        let (product, mut taken, mut first) = (&rec.product_id, 0, None);
        for block in rec.blocks() {
            let pk = keyblock::product_block_key(product, block);
            let row = self
                .get_raw(Tree::KeyFingerprints, &pk)?
                .unwrap_or_default();
            let mut bits = 0u64;
            for (slot, fp) in keyblock::fingerprints(&row).enumerate() {
                if fps.insert(fp) {
                    bits |= 1 << slot;
                } else {
                    taken += 1;
                    self.delete_staged_key(block, slot)?;
                }
            }
            if bits != 0 {
                first.get_or_insert(keyblock::first_id(block));
                self.put_raw(Tree::Avail, pk, keyblock::bits_value(bits));
            }
        }
        if let Some(first) = first {
            // Its ids may lie below where the search for available keys
            // starts (uploads staged since took higher ones).
            let floor = self.avail_floor(product).min(first);
            self.cmd_floors.insert(product.clone(), floor);
        }
        Ok(taken)
    }

    /// A staged key that turned out to be a duplicate: an empty row hides
    /// its slot, as a deleted key's does, and its text is cut out.
    fn delete_staged_key(&mut self, block: u64, slot: usize) -> Result<()> {
        let id = keyblock::first_id(block) + slot as u64;
        self.put_raw(Tree::Keys, tree::u64_key(id).to_vec(), Vec::new());
        let bk = keyblock::block_key(block);
        if let Some(b) = self.get::<keyblock::KeyBlock>(Tree::KeyBlocks, &bk)? {
            self.put(Tree::KeyBlocks, bk.to_vec(), &b.without(slot));
        }
        Ok(())
    }

    /// Removes upload `id` and every block it staged; false if there is no
    /// such upload (already published or discarded).
    pub fn discard_upload(&mut self, id: u64) -> Result<bool> {
        let Some(rec) = self.staged_upload(id)? else {
            return Ok(false);
        };
        for block in rec.blocks() {
            self.del_raw(Tree::KeyBlocks, keyblock::block_key(block).to_vec());
            self.del_raw(
                Tree::KeyFingerprints,
                keyblock::product_block_key(&rec.product_id, block),
            );
        }
        self.del_raw(Tree::Uploads, record_key(id));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::Published;
    use crate::store::{keyblock, Store, StoreOptions};
    use std::sync::atomic::Ordering;

    fn keys(texts: &[u8]) -> Vec<(Vec<u8>, [u8; 16])> {
        texts.iter().map(|&i| (vec![i], [i; 16])).collect()
    }

    fn begin(store: &Store, id: u64) {
        store
            .write_blocking(move |tx| tx.begin_upload(id, "p"))
            .unwrap();
    }

    fn stage(store: &Store, id: u64, texts: &'static [u8]) {
        store
            .write_blocking(move |tx| {
                let (mut new, mut dups) = (Vec::new(), 0);
                for k in keys(texts) {
                    match tx.key_fingerprint_known("p", &k.1)? {
                        true => dups += 1,
                        false => new.push(k),
                    }
                }
                tx.stage_keys(id, new, dups)
            })
            .unwrap();
    }

    fn publish(store: &Store, id: u64) -> Published {
        store
            .write_blocking(move |tx| tx.publish_upload(id))
            .unwrap()
    }

    /// The texts of the keys readers see, in id order.
    fn seen(store: &Store) -> Vec<u8> {
        let mut out = Vec::new();
        store
            .for_each_key(|_, rec| {
                out.extend(rec.sealed);
                Ok(())
            })
            .unwrap();
        out
    }

    fn available(store: &Store) -> u32 {
        let index = store.available_index().unwrap();
        index.values().map(|bits| bits.count_ones()).sum()
    }

    /// Until its publish, a staged upload's keys are nobody's: not listed,
    /// not available, not claimable, not deletable; the publish makes them
    /// all available at once.
    #[test]
    fn staged_keys_are_nobodys_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        store.add_test_keys(1);
        begin(&store, 7);
        stage(&store, 7, &[1, 2, 3]);
        assert!(store.has_staged_uploads().unwrap());
        assert_eq!((seen(&store), available(&store)), (vec![0], 1));
        let first_staged = keyblock::first_id(2);
        let (claim, deleted) = store
            .write_blocking(move |tx| {
                Ok((
                    tx.available_keys("p", 2)?,
                    tx.delete_available_key(first_staged, "p")?,
                ))
            })
            .unwrap();
        assert_eq!((claim, deleted), (None, false));
        let p = publish(&store, 7);
        assert_eq!((p.added, p.duplicates), (3, 0));
        assert!(!store.has_staged_uploads().unwrap());
        assert_eq!((seen(&store), available(&store)), (vec![0, 1, 2, 3], 4));
        let claim = store
            .write_blocking(|tx| tx.available_keys("p", 4))
            .unwrap();
        assert_eq!(claim.map(|ids| ids.len()), Some(4));
        store.close();
    }

    /// Two uploads staged at once, both holding key 3: neither counts it
    /// while staging (the other may yet fail); the one published second
    /// counts it as a duplicate, and its slot never becomes a key. A key
    /// repeated in a later chunk of one upload is a duplicate at once.
    #[test]
    fn the_upload_published_second_counts_the_keys_of_the_first_as_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::for_test(dir.path());
        let store = Store::open(&opts).unwrap();
        begin(&store, 1);
        begin(&store, 2);
        stage(&store, 1, &[1, 2, 3]);
        stage(&store, 2, &[3, 4]);
        stage(&store, 2, &[4]);
        let p = publish(&store, 1);
        assert_eq!((p.added, p.duplicates), (3, 0));
        let p = publish(&store, 2);
        assert_eq!((p.added, p.duplicates), (1, 2), "3 taken, 4 repeated");
        let mut texts = seen(&store);
        texts.sort_unstable();
        assert_eq!((texts, available(&store)), (vec![1, 2, 3, 4], 4));
        store.close();
        drop(store);
        // After a restart the product's keys are known again, and only them.
        let store = Store::open(&opts).unwrap();
        begin(&store, 3);
        stage(&store, 3, &[4, 5]);
        assert_eq!(publish(&store, 3).added, 1);
        store.close();
    }

    /// A discarded upload leaves no row behind, and its keys can be sent
    /// again as new; an upload whose batch failed is reloaded from the
    /// store (its keys stay known to it).
    #[test]
    fn a_discarded_upload_leaves_nothing_and_a_failed_batch_forgets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        let before = store.dump().unwrap();
        begin(&store, 1);
        stage(&store, 1, &[1, 2]);
        let gone = store.write_blocking(|tx| tx.discard_upload(1)).unwrap();
        assert!(gone);
        assert_eq!(store.dump().unwrap(), before);
        begin(&store, 2);
        stage(&store, 2, &[1, 2]);
        let computed = store.stats().computed.load(Ordering::SeqCst);
        store
            .stats()
            .fail_next_commit_at
            .store(computed + 1, Ordering::SeqCst);
        let failed = store.write_blocking(|tx| tx.begin_upload(99, "p"));
        assert!(failed.is_err(), "the injected failure");
        stage(&store, 2, &[2, 3]);
        let p = publish(&store, 2);
        assert_eq!((p.added, p.duplicates), (3, 1));
        store.close();
    }
}
