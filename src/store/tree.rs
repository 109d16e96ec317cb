//! The sled trees faka keeps and how their keys are laid out. Only the store
//! module knows these; domain code uses typed operations.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Tree {
    /// `applied_seq`, counters.
    Meta = 0,
    /// product id → Product
    Products = 1,
    /// key id (u64 BE) → KeyRecord, for keys whose state changed since
    /// import (empty: deleted); other keys live in `KeyBlocks`
    Keys = 2,
    /// product id, 0, block (u64 BE) → u64 LE bitmap of the block's
    /// available keys (see `keyblock`)
    Avail = 3,
    /// product id, 0, block (u64 BE) → the block's keyed fingerprints:
    /// de-duplication, kept forever
    KeyFingerprints = 4,
    /// order no → Order
    Orders = 5,
    /// order seq (u64 BE) → order no: the newest-first listing of older
    /// versions; no longer written (the order tree lists by itself), kept
    /// so that older journals and data directories still read
    OrderSeq = 6,
    /// expires_at ms (u64 BE), order no → () for pending orders
    Expiry = 7,
    /// product id, 0, since ms (u64 BE), order no → () for awaiting_stock orders
    Awaiting = 8,
    /// gateway, 0, trade_no → order no: repeat detection
    Payments = 9,
    /// sha256(Idempotency-Key) → IdempotencyRecord
    Idem = 10,
    /// first event seq (u64 BE) → Vec<OutboxEvent>: the events one command
    /// emitted for one order, consecutive seqs (see `Tx::put_outbox`)
    Outbox = 11,
    /// No longer written: the hold counts per IP and e-mail are counted
    /// from the pending orders (`tx::HoldCounts`). Kept so that the tree
    /// numbers in journals stay what they were.
    Holds = 12,
    /// order no, 0, at ms (u64 BE), random u32 → PaymentAttempt: the audit
    /// trail of verified callbacks that changed nothing (repeats, refusals)
    Attempts = 13,
    /// block (u64 BE) → KeyBlock: imported keys, `keyblock::BLOCK_KEYS` ids
    /// per block. Copied into sled before every other tree.
    KeyBlocks = 14,
    /// upload id (u64 BE) → `keyblock::StagedUpload`: uploads staged and
    /// not yet published. Written before the rest of its batch, removed
    /// after it (`apply::apply_writes`).
    Uploads = 15,
    /// coupon code lower-cased → `pricing::Coupon` (with its use counts)
    Coupons = 16,
    /// coupon code lower-cased, 0, buyer e-mail lower-cased → u64 BE: the
    /// buyer's orders that carry the coupon, pending or paid
    CouponEmails = 17,
    /// lower-cased e-mail, 0, order no → (): the orders a buyer can look
    /// up (only those created with a query password)
    EmailOrders = 18,
    /// seq (u64 BE) → EmailEvent: the e-mail outbox
    Emails = 19,
    /// order no → the order's token sealed with the master key, for the
    /// link in its e-mails (written only while e-mail is configured)
    OrderLinks = 20,
    /// product id → (): the product's low-stock alert went out and stock has
    /// not risen back to its threshold since
    LowStock = 21,
}

pub const ALL: [Tree; 22] = [
    Tree::Meta,
    Tree::Products,
    Tree::Keys,
    Tree::Avail,
    Tree::KeyFingerprints,
    Tree::Orders,
    Tree::OrderSeq,
    Tree::Expiry,
    Tree::Awaiting,
    Tree::Payments,
    Tree::Idem,
    Tree::Outbox,
    Tree::Holds,
    Tree::Attempts,
    Tree::KeyBlocks,
    Tree::Uploads,
    Tree::Coupons,
    Tree::CouponEmails,
    Tree::EmailOrders,
    Tree::Emails,
    Tree::OrderLinks,
    Tree::LowStock,
];

/// sled trees of the key layout before key blocks (a key per row). A data
/// directory that has them was written by an earlier build and is refused
/// rather than read wrongly.
pub const LEGACY_KEY_TREES: [&str; 2] = ["avail", "key_hashes"];

impl Tree {
    pub fn from_u8(b: u8) -> Option<Tree> {
        ALL.get(b as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Products => "products",
            Tree::Keys => "keys",
            Tree::Avail => "avail_blocks",
            Tree::KeyFingerprints => "key_fingerprints",
            Tree::Orders => "orders",
            Tree::OrderSeq => "order_seq",
            Tree::Expiry => "expiry",
            Tree::Awaiting => "awaiting",
            Tree::Payments => "payments",
            Tree::Idem => "idempotency",
            Tree::Outbox => "outbox",
            Tree::Holds => "holds",
            Tree::Attempts => "payment_attempts",
            Tree::KeyBlocks => "key_blocks",
            Tree::Uploads => "uploads",
            Tree::Coupons => "coupons",
            Tree::CouponEmails => "coupon_emails",
            Tree::EmailOrders => "email_orders",
            Tree::Emails => "emails",
            Tree::OrderLinks => "order_links",
            Tree::LowStock => "low_stock",
        }
    }
}

/// The open sled database and its trees.
pub struct Trees {
    pub db: sled::Db,
    trees: Vec<sled::Tree>,
    /// Set once sled answered an error. From its first I/O error (a full
    /// disk) sled refuses every write, and may fail reads that restructure
    /// its tree, until it is opened again (`writer::commit::Committer::resume`).
    failed: std::sync::atomic::AtomicBool,
}

impl Trees {
    pub fn open(dir: &Path, cache_bytes: u64) -> sled::Result<Trees> {
        wait_for_sled_lock(dir, SLED_LOCK_WAIT);
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            // sled is a view rebuilt from the journal after any unclean stop,
            // so its own periodic fsync buys nothing; without it a full disk
            // cannot fail sled in the background while writes are refused.
            .flush_every_ms(None)
            .open()?;
        let mut trees = Vec::with_capacity(ALL.len());
        for t in ALL {
            trees.push(db.open_tree(t.name())?);
        }
        Ok(Trees {
            db,
            trees,
            failed: Default::default(),
        })
    }

    pub fn get(&self, t: Tree) -> &sled::Tree {
        &self.trees[t as usize]
    }

    /// Records that sled answered `e`; returns it.
    pub fn note_error(&self, e: sled::Error) -> sled::Error {
        self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        e
    }

    /// Whether sled answered an error since it was opened.
    pub fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How long [`Trees::open`] waits for an earlier handle's lock to go.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (up to `limit`) until nothing holds the lock sled takes on its
/// `db` file, so the open that follows does not fail on it.
///
/// Another faka process never holds it (the data directory's `LOCK` keeps
/// a second process out before sled is touched); what does is this
/// process's own sled handle that was just dropped: sled's background
/// threads may still hold the file for a moment while they finish a write,
/// and sled's lock is a non-blocking `flock`, so reopening right after a
/// close (recovery reopening the files it just checked, a restart in the
/// same process) fails with "could not acquire lock" on a busy machine.
/// sled's own `testing` build blocks on the lock for the same reason. When
/// the wait ends without the lock, the open reports sled's error.
fn wait_for_sled_lock(dir: &Path, limit: std::time::Duration) {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let Ok(file) = std::fs::File::open(dir.join("db")) else {
            return; // no files yet: nothing to wait for
        };
        let deadline = std::time::Instant::now() + limit;
        loop {
            // SAFETY: flock on a descriptor this function owns; closing it
            // (when `file` drops) releases the lock taken here.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

pub const META_APPLIED_SEQ: &[u8] = b"applied_seq";
pub const META_COUNTERS: &[u8] = b"counters";
/// The master key's check value (`crypto::Crypto::check_value`).
pub const META_KEY_CHECK: &[u8] = b"key_check";
/// The salt of buyers' order tokens (`crypto::OrderTokens`).
pub const META_ORDER_TOKEN_SALT: &[u8] = b"order_token_salt";

pub fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// `a, 0, b`: keys scoped by a product id (which never contains a 0 byte).
pub fn scoped(scope: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + 1 + rest.len());
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

pub fn scope_prefix(scope: &str) -> Vec<u8> {
    scoped(scope, &[])
}

pub fn time_key(ms: i64, order_no: &str) -> Vec<u8> {
    let mut k = (ms.max(0) as u64).to_be_bytes().to_vec();
    k.extend_from_slice(order_no.as_bytes());
    k
}

/// A payment attempt's key: the order's scope, then the attempt's time, the
/// number of the order's events it was decided against, and a random tail
/// that keeps two attempts of one millisecond apart. Keys written before
/// the count was kept hold only the time and the tail.
pub fn attempt_key(order_no: &str, at_ms: i64, seen_events: u32) -> Vec<u8> {
    let mut rest = time_key(at_ms, "");
    rest.extend_from_slice(&seen_events.to_be_bytes());
    rest.extend_from_slice(&rand::random::<u32>().to_be_bytes());
    scoped(order_no, &rest)
}

/// The event count of an `attempt_key`, given the part after the scope;
/// `None` for a key from before the count was kept.
pub fn attempt_seen_events(rest: &[u8]) -> Option<u32> {
    if rest.len() != 16 {
        return None;
    }
    rest[8..12].try_into().ok().map(u32::from_be_bytes)
}

/// The order number of a `time_key`.
pub fn time_key_order_no(key: &[u8]) -> Option<&str> {
    key.get(8..).and_then(|b| std::str::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;

    /// A handle that still holds sled's file lock when the files are opened
    /// again (sled's threads finishing a write after a close) delays the
    /// open instead of failing it.
    #[test]
    fn opening_waits_for_a_lock_still_held_on_sleds_files() {
        let dir = tempfile::tempdir().unwrap();
        {
            let trees = Trees::open(dir.path(), 1 << 20).unwrap();
            trees.get(Tree::Meta).insert(b"k", b"v").unwrap();
            trees.db.flush().unwrap();
        }
        let holder = std::fs::File::open(dir.path().join("db")).unwrap();
        // Blocking: the handle just dropped may itself still hold it.
        // SAFETY: flock on a descriptor the test owns.
        let rc = unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "the test must hold the lock first");
        let opener = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || Trees::open(&dir, 1 << 20).map(|t| t.get(Tree::Meta).get(b"k"))
        });
        // The open starts while the lock is held; how long it is held does
        // not decide the outcome, only whether the wait is exercised.
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(holder);
        let got = opener
            .join()
            .unwrap()
            .expect("opened once the lock was released");
        assert_eq!(got.unwrap().as_deref(), Some(&b"v"[..]));
    }
}
