//! The invariant checker. It proves, from the stored records alone, the
//! promises faka makes: every key is in exactly one state with at most one
//! owner; a held key belongs to a pending order and a sold key to a
//! delivered (or refunded) one; each product's counts match its keys and add
//! up (`available + held + sold = imported − deleted`); every order is in a
//! legal shape for its status, and every pending order's expiry is
//! scheduled (the sweeper and the hold caps find pending orders there).

use crate::domain::model::{KeyRecord, KeyState, Order};
use crate::domain::order::OrderStatus;
use crate::error::{Error, Result};
use crate::store::{keyblock, Store};
use rustc_hash::FxHashMap;
use std::cell::OnceCell;
use std::collections::BTreeMap;

/// What `faka check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub products: usize,
    pub keys: usize,
    pub orders: usize,
    pub violations: Vec<String>,
    /// Orders left `paid` without their keys (start-up recovery re-drives them).
    pub paid_undelivered: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn violation(&mut self, v: String) {
        self.violations.push(v);
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "checked {} products, {} keys, {} orders: {} violation(s)",
            self.products,
            self.keys,
            self.orders,
            self.violations.len()
        )?;
        for v in self.violations.iter().take(200) {
            writeln!(f, "  - {v}")?;
        }
        if self.violations.len() > 200 {
            writeln!(f, "  … and {} more", self.violations.len() - 200)?;
        }
        Ok(())
    }
}

#[derive(Default, Clone, Copy)]
struct Counted {
    available: u64,
    held: u64,
    sold: u64,
}

/// Each order's status and its number in the order it was read, by order
/// number. faka's order numbers (17 bytes) are kept inline, with no string
/// of their own, because a crash start runs the check next to the shop and
/// its peak is the shop's. Any other number a damaged store
/// may hold is kept as a string.
struct Statuses {
    ours: FxHashMap<[u8; ORDER_NO_LEN], (OrderStatus, u32)>,
    other: FxHashMap<String, (OrderStatus, u32)>,
}

const ORDER_NO_LEN: usize = 17;

impl Statuses {
    fn with_capacity(n: usize) -> Self {
        let mut ours = FxHashMap::default();
        ours.reserve(n);
        Statuses {
            ours,
            other: FxHashMap::default(),
        }
    }

    fn insert(&mut self, no: String, v: (OrderStatus, u32)) {
        match <[u8; ORDER_NO_LEN]>::try_from(no.as_bytes()) {
            Ok(b) => self.ours.insert(b, v),
            Err(_) => self.other.insert(no, v),
        };
    }

    fn get(&self, no: &str) -> Option<&(OrderStatus, u32)> {
        match <&[u8; ORDER_NO_LEN]>::try_from(no.as_bytes()) {
            Ok(b) => self.ours.get(b),
            Err(_) => self.other.get(no),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &(OrderStatus, u32))> {
        // The inline bytes were a whole `String`, so they are UTF-8.
        let ours = self
            .ours
            .iter()
            .map(|(b, v)| (std::str::from_utf8(b).unwrap_or("?"), v));
        ours.chain(self.other.iter().map(|(no, v)| (no.as_str(), v)))
    }
}

/// Which order (its number in `seen`) lists each key. Key ids are handed
/// out in blocks from a counter, so they are dense: the ids below the
/// stored blocks' end are slots of a vector (4 bytes a key id: 4 MiB at 1M
/// keys, several times less than a hash map of the claims), up to about
/// the size such a map would have. Any other id (one only a damaged store lists, or
/// the tail of a store with far more keys than orders) goes in a map.
struct Owners {
    /// The order's number + 1; 0 = no order lists the key.
    dense: Vec<u32>,
    sparse: FxHashMap<u64, u32>,
}

impl Owners {
    fn new(key_id_end: u64, orders: usize) -> Self {
        let len = key_id_end.min(6 * orders as u64 + 65_536);
        Owners {
            dense: vec![0; len as usize],
            sparse: FxHashMap::default(),
        }
    }

    /// Records that order `o` lists key `k`; the order that listed it before.
    fn insert(&mut self, k: u64, o: u32) -> Option<u32> {
        match self.dense.get_mut(k as usize) {
            Some(slot) => std::mem::replace(slot, o + 1).checked_sub(1),
            None => self.sparse.insert(k, o),
        }
    }

    fn remove(&mut self, k: u64) -> Option<u32> {
        match self.dense.get_mut(k as usize) {
            Some(slot) => std::mem::take(slot).checked_sub(1),
            None => self.sparse.remove(&k),
        }
    }

    /// The claims left, the dense ones in key order.
    fn left(self) -> impl Iterator<Item = (u64, u32)> {
        let dense = self.dense.into_iter().enumerate();
        dense
            .filter_map(|(k, o)| Some((k as u64, o.checked_sub(1)?)))
            .chain(self.sparse)
    }
}

/// From this many orders or keys on, each of the two passes reads its tree
/// as two halves on two threads (the reading and decoding are most of a
/// crash start's time at 1M keys + 1M orders).
const PARALLEL_FROM: u64 = 20_000;

/// Items handed from a reading thread to the checking one at a time.
const CHUNK: usize = 512;

/// Checks every invariant over the whole store.
pub fn run(store: &Store) -> Result<Report> {
    run_with(store, PARALLEL_FROM)
}

/// Reads two parts of a tree on two threads (`scan`) and hands every item
/// to `visit` on this thread, in whatever order they come. The checks do
/// not depend on that order. A part whose thread cannot be started is read
/// here afterwards; an error in `visit` stops the readers.
fn scan_in_two<P: Sync, T: Send>(
    parts: &[P; 2],
    scan: impl Fn(&P, &mut dyn FnMut(T) -> Result<()>) -> Result<()> + Sync,
    mut visit: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<T>>(8);
    std::thread::scope(|s| {
        let mut readers = Vec::new();
        let mut left = Vec::new();
        for part in parts {
            let (tx, scan) = (tx.clone(), &scan);
            let spawned = std::thread::Builder::new()
                .name("faka-check".into())
                .spawn_scoped(s, move || {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    scan(part, &mut |t| {
                        chunk.push(t);
                        if chunk.len() == CHUNK {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                            tx.send(full)
                                .map_err(|_| Error::unavailable("the check stopped"))?;
                        }
                        Ok(())
                    })?;
                    if !chunk.is_empty() {
                        let _ = tx.send(chunk);
                    }
                    Ok(())
                });
            match spawned {
                Ok(h) => readers.push(h),
                Err(_) => left.push(part),
            }
        }
        drop(tx);
        let mut visited = Ok(());
        'chunks: for chunk in &rx {
            for t in chunk {
                visited = visit(t);
                if visited.is_err() {
                    break 'chunks;
                }
            }
        }
        drop(rx);
        let mut read = Ok(());
        for h in readers {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::unavailable("a check thread panicked")));
            read = read.and(r);
        }
        visited?;
        read?;
        for part in left {
            scan(part, &mut visit)?;
        }
        Ok(())
    })
}

/// [`run`], reading each tree in two halves at once from `parallel_from`
/// orders (the orders pass) or keys (the keys pass) on.
fn run_with(store: &Store, parallel_from: u64) -> Result<Report> {
    let mut r = Report::default();
    // Pass 1: orders, and which order claims each key. Orders are numbered
    // in the order they are read (`seen`); a key's claim is that number.
    // The maps are sized from the stored counts and hashed with FxHash
    // (keys are faka's own ids, read offline): at 1M orders this pass is
    // most of a crash start's time.
    let recorded = store.order_counts();
    let capacity = (recorded.iter().sum::<u64>() as usize).min(1 << 26);
    let mut owner = Owners::new(store.key_id_end()?, capacity);
    let mut statuses = Statuses::with_capacity(capacity);
    let mut seen = 0u32;
    // Keys listed by two orders: (key, the first order's number, the second).
    let mut twice: Vec<(u64, u32, String)> = Vec::new();
    let mut bad = Vec::new();
    let mut paid = Vec::new();
    let visit_order = |o: Order| {
        r.orders += 1;
        let with_keys = matches!(
            o.status,
            OrderStatus::Pending
                | OrderStatus::Paid
                | OrderStatus::Delivered
                | OrderStatus::Refunded
        );
        let n = o.key_ids.len();
        match o.status {
            OrderStatus::Pending | OrderStatus::Delivered if n != o.quantity as usize => {
                bad.push(format!(
                    "order {} is {} with {} keys for quantity {}",
                    o.order_no,
                    o.status.as_str(),
                    n,
                    o.quantity
                ))
            }
            OrderStatus::Expired | OrderStatus::AwaitingStock if n != 0 => bad.push(format!(
                "order {} is {} but owns {} keys",
                o.order_no,
                o.status.as_str(),
                n
            )),
            OrderStatus::Paid => {
                paid.push(o.order_no.clone());
                bad.push(format!(
                    "order {} is paid but not delivered (recovery re-drives it)",
                    o.order_no
                ))
            }
            _ => {}
        }
        if o.status == OrderStatus::Pending && !store.expiry_scheduled(&o)? {
            bad.push(format!(
                "order {} is pending but its expiry is not scheduled",
                o.order_no
            ));
        }
        if o.status.is_paid() && (o.paid_at_ms.is_none() || o.trade_no.is_none()) {
            bad.push(format!(
                "order {} is {} without a payment",
                o.order_no,
                o.status.as_str()
            ));
        }
        if with_keys {
            for &k in &o.key_ids {
                if let Some(prev) = owner.insert(k, seen) {
                    twice.push((k, prev, o.order_no.clone()));
                }
            }
        }
        statuses.insert(o.order_no, (o.status, seen));
        seen += 1;
        Ok(())
    };
    if capacity as u64 >= parallel_from {
        scan_in_two(
            &store.halves_of_orders()?,
            |part, f| store.for_each_order_in(part.clone(), f),
            visit_order,
        )?;
    } else {
        store.for_each_order(visit_order)?;
    }
    // The halves are read in no set order: name the two orders of a key
    // listed twice, and the paid orders, in order-number order.
    paid.sort();
    // Order numbers by their number in `seen`, for messages only: made
    // when a message first needs one (16 MiB at 1M orders).
    let names: OnceCell<Vec<&str>> = OnceCell::new();
    let name = |c: Option<u32>| {
        let names = names.get_or_init(|| {
            let mut names = vec![""; seen as usize];
            for (no, &(_, i)) in statuses.iter() {
                names[i as usize] = no;
            }
            names
        });
        c.and_then(|i| names.get(i as usize).copied())
    };
    // A key listed by several orders: named pairwise in order-number order,
    // and owned (for the keys pass) by the last of them, as a scan in that
    // order leaves it, whatever order the halves were read in.
    let mut listed: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for (k, prev, no) in &twice {
        let nos = listed.entry(*k).or_default();
        nos.push(name(Some(*prev)).unwrap_or("?"));
        nos.push(no.as_str());
    }
    for (k, mut nos) in listed {
        nos.sort_unstable();
        nos.dedup();
        for pair in nos.windows(2) {
            bad.push(format!(
                "key {k} is owned by two orders: {} and {}",
                pair[0], pair[1]
            ));
        }
        if let Some(&(_, last)) = nos.last().and_then(|no| statuses.get(no)) {
            owner.insert(k, last);
        }
    }
    let mut by_status = [0u64; 6];
    for (_, (s, _)) in statuses.iter() {
        by_status[s.index()] += 1;
    }
    if recorded != by_status {
        bad.push(format!(
            "order counts by status {recorded:?} do not match the orders {by_status:?}"
        ));
    }
    let (kept, counted) = (store.outbox_counts(), store.outbox_counts_scanned()?);
    if kept != counted {
        bad.push(format!(
            "webhook events pending/dead {kept:?} do not match the outbox {counted:?}"
        ));
    }
    // Pass 2: keys against their owners and the available-key index.
    let mut counted: BTreeMap<String, Counted> = BTreeMap::new();
    let mut index = store.available_index()?;
    let products = store.products()?;
    let keys_recorded: u64 = products
        .iter()
        .map(|p| p.counts.available + p.counts.held + p.counts.sold)
        .sum();
    let mut visit_key = |(id, k): (u64, KeyRecord)| {
        r.keys += 1;
        let c = counted.entry(k.product_id.clone()).or_default();
        let claimed = owner.remove(id);
        match &k.state {
            KeyState::Available => {
                c.available += 1;
                if let Some(o) = name(claimed) {
                    bad.push(format!("key {id} is available but order {o} lists it"));
                }
                let (block, slot) = keyblock::locate(id);
                match index.get_mut(&(k.product_id.clone(), block)) {
                    Some(bits) if *bits & (1 << slot) != 0 => *bits &= !(1 << slot),
                    _ => bad.push(format!(
                        "key {id} is available but missing from the available index"
                    )),
                }
            }
            KeyState::Held { order_no } | KeyState::Sold { order_no } => {
                let sold = matches!(k.state, KeyState::Sold { .. });
                if sold {
                    c.sold += 1;
                } else {
                    c.held += 1;
                }
                let status = statuses.get(order_no);
                if claimed.is_none() || claimed != status.map(|&(_, i)| i) {
                    bad.push(format!(
                        "key {id} is {} for order {order_no} but that order does not list it",
                        k.state.name()
                    ));
                }
                let status = status.map(|&(s, _)| s);
                let expected = if sold {
                    matches!(status, Some(OrderStatus::Delivered | OrderStatus::Refunded))
                } else {
                    status.is_some_and(OrderStatus::holds_keys)
                };
                if !expected {
                    bad.push(format!(
                        "key {id} is {} but order {order_no} is {}",
                        k.state.name(),
                        status.map_or("missing", |s| s.as_str())
                    ));
                }
            }
        }
        Ok(())
    };
    if keys_recorded >= parallel_from {
        let middle = store.middle_key_id()?;
        scan_in_two(
            &[(0, middle), (middle, u64::MAX)],
            |&(start, end), f| store.for_each_key_in(start, end, |id, k| f((id, k))),
            visit_key,
        )?;
    } else {
        store.for_each_key(|id, k| visit_key((id, k)))?;
    }
    for (k, o) in owner.left() {
        let o = name(Some(o)).unwrap_or("?");
        bad.push(format!("order {o} lists key {k}, which does not exist"));
    }
    // Pass 3: product counts.
    for p in products {
        r.products += 1;
        let c = counted.remove(&p.id).unwrap_or_default();
        let s = p.counts;
        if (s.available, s.held, s.sold) != (c.available, c.held, c.sold) {
            bad.push(format!(
                "product {} counts available/held/sold {}/{}/{} but its keys are {}/{}/{}",
                p.id, s.available, s.held, s.sold, c.available, c.held, c.sold
            ));
        }
        if s.available + s.held + s.sold != s.imported.saturating_sub(s.deleted) {
            bad.push(format!(
                "product {}: available + held + sold = {} but imported - deleted = {}",
                p.id,
                s.available + s.held + s.sold,
                s.imported.saturating_sub(s.deleted)
            ));
        }
    }
    for p in counted.keys() {
        bad.push(format!("keys exist for unknown product {p}"));
    }
    // What is left in the index names keys that are not available.
    for ((product, block), bits) in index {
        for id in keyblock::ids_in(block, bits, 0) {
            bad.push(format!(
                "the available index of product {product} lists key {id}, which is not an available key of it"
            ));
        }
    }
    for v in bad {
        r.violation(v);
    }
    r.paid_undelivered = paid;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tree::Tree;
    use crate::store::StoreOptions;

    /// A store in `dir` with `n` available keys of product "p" (a product
    /// record it does not have), and the first key's id.
    fn store_with_keys(dir: &std::path::Path, n: u8) -> (Store, u64) {
        let store = Store::open(&StoreOptions::for_test(dir)).unwrap();
        let (first, _) = store.add_test_keys(n);
        (store, first)
    }

    /// Stores a pending order `no` listing `keys`, with its expiry
    /// scheduled or (to break that invariant) not.
    fn place(tx: &mut crate::store::Tx, expiry: bool, no: &str, keys: Vec<u64>) {
        let mut o = Order::pending_for_test(no, "b@x.com", "10.0.0.1", 1);
        o.quantity = keys.len() as u32;
        o.key_ids = keys;
        if expiry {
            tx.schedule_expiry(&o);
        }
        tx.insert_order(&o);
    }

    /// Runs the check reading each tree in one piece and in two halves at
    /// once, asserts both find the same, and gives the first's report.
    fn checked(store: &Store) -> Report {
        let one = run_with(store, u64::MAX).unwrap();
        let two = run_with(store, 0).unwrap();
        let found = |r: &Report| {
            let mut v = r.violations.clone();
            v.sort();
            (r.products, r.keys, r.orders, v, r.paid_undelivered.clone())
        };
        assert_eq!(found(&one), found(&two));
        one
    }

    /// An order whose state says money arrived must carry the payment: one
    /// delivered without `paid_at`/`trade_no` is reported, one with both is
    /// not, and neither is an expired order that was never paid.
    #[test]
    fn a_paid_order_without_its_payment_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        store
            .write_blocking(|tx| {
                for (no, status, paid) in [
                    ("A0000000000000001", OrderStatus::Delivered, false),
                    ("B0000000000000002", OrderStatus::Delivered, true),
                    ("C0000000000000003", OrderStatus::Expired, false),
                ] {
                    let mut o = Order::pending_for_test(no, "b@x.com", "10.0.0.1", 1);
                    o.quantity = 0;
                    o.status = status;
                    if paid {
                        o.paid_at_ms = Some(1);
                        o.trade_no = Some("T1".into());
                    }
                    tx.insert_order(&o);
                }
                Ok(())
            })
            .unwrap();
        let found: Vec<String> = checked(&store)
            .violations
            .into_iter()
            .filter(|v| v.contains("without a payment"))
            .collect();
        assert_eq!(
            found,
            ["order A0000000000000001 is delivered without a payment"],
            "{found:#?}"
        );
        store.close();
    }

    /// Read in two halves on two threads, the store yields the same report
    /// as read in one scan: keys listed by orders in different halves, by
    /// three orders, and keys on both sides of the middle key.
    #[test]
    fn two_halves_read_at_once_find_what_one_scan_finds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        let (first, last) = store
            .write_blocking(|tx| {
                let keys = (0..300u16)
                    .map(|i| (i.to_be_bytes().to_vec(), [(i % 251) as u8; 16]))
                    .collect();
                Ok(tx.insert_available_keys("p", keys))
            })
            .unwrap()
            .unwrap();
        let middle = store.middle_key_id().unwrap();
        assert!(
            first < middle && middle < last,
            "{first} < {middle} < {last}"
        );
        store
            .write_blocking(move |tx| {
                // Order numbers from A to Z fall in both halves of the tree.
                place(tx, true, "A0000000000000001", vec![first]);
                place(tx, true, "Z0000000000000026", vec![first]);
                place(tx, true, "B0000000000000002", vec![middle]);
                place(tx, true, "M0000000000000013", vec![middle]);
                place(tx, true, "Y0000000000000025", vec![middle]);
                place(tx, true, "N0000000000000014", vec![last]);
                place(tx, true, "C0000000000000003", vec![last + 10]);
                // Held properly, one on each side of the middle key.
                place(tx, true, "D0000000000000004", vec![first + 1]);
                place(tx, true, "X0000000000000024", vec![last - 1]);
                let held = |no: &str| KeyState::Held {
                    order_no: no.into(),
                };
                tx.swap_key_state(first + 1, &KeyState::Available, held("D0000000000000004"))?;
                tx.swap_key_state(last - 1, &KeyState::Available, held("X0000000000000024"))?;
                tx.swap_key_state(middle, &KeyState::Available, held("B0000000000000002"))
            })
            .unwrap();
        let halves = store.halves_of_orders().unwrap();
        let mut in_halves = [0, 0];
        for (n, part) in halves.iter().enumerate() {
            store
                .for_each_order_in(part.clone(), |_| {
                    in_halves[n] += 1;
                    Ok(())
                })
                .unwrap();
        }
        assert!(in_halves[0] > 0 && in_halves[1] > 0, "{in_halves:?}");
        assert_eq!(in_halves[0] + in_halves[1], 9);
        let found = checked(&store).violations;
        let has = |text: String| {
            assert!(
                found.iter().any(|v| v.contains(&text)),
                "{text}: {found:#?}"
            )
        };
        has(format!(
            "key {first} is owned by two orders: A0000000000000001 and Z0000000000000026"
        ));
        has(format!(
            "key {middle} is owned by two orders: B0000000000000002 and M0000000000000013"
        ));
        has(format!(
            "key {middle} is owned by two orders: M0000000000000013 and Y0000000000000025"
        ));
        // The last of the orders that list a key is taken as its owner.
        has(format!(
            "key {middle} is held for order B0000000000000002 but that order does not list it"
        ));
        has(format!(
            "order C0000000000000003 lists key {}, which does not exist",
            last + 10
        ));
        for k in [first + 1, last - 1] {
            assert!(
                !found.iter().any(|v| v.starts_with(&format!("key {k} "))),
                "{found:#?}"
            );
        }
        store.close();
    }

    /// Keys and the orders that list them are matched both ways, and each
    /// violation names the right orders: a key listed by two orders, an
    /// available key an order lists, a key no order lists, a listed key
    /// that does not exist.
    #[test]
    fn keys_and_their_orders_must_name_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let (store, k) = store_with_keys(dir.path(), 4);
        store
            .write_blocking(move |tx| {
                let held = |no: &str| KeyState::Held {
                    order_no: no.into(),
                };
                // A and B both list k; C lists k+1, which stays available;
                // D lists a key that does not exist; E lists k+2 properly.
                place(tx, false, "A0000000000000001", vec![k]);
                place(tx, false, "B0000000000000002", vec![k]);
                place(tx, false, "C0000000000000003", vec![k + 1]);
                place(tx, false, "D0000000000000004", vec![k + 1000]);
                place(tx, false, "E0000000000000005", vec![k + 2]);
                tx.swap_key_state(k, &KeyState::Available, held("A0000000000000001"))?;
                tx.swap_key_state(k + 2, &KeyState::Available, held("E0000000000000005"))?;
                // k+3 is held for an order that does not list it.
                tx.swap_key_state(k + 3, &KeyState::Available, held("E0000000000000005"))
            })
            .unwrap();
        let found = checked(&store).violations;
        let has = |text: &str| found.iter().any(|v| v.contains(text));
        assert!(
            has(&format!(
                "key {k} is owned by two orders: A0000000000000001 and B0000000000000002"
            )),
            "{found:#?}"
        );
        // The second claim is the one kept: A's key is seen as not A's.
        assert!(
            has(&format!(
                "key {k} is held for order A0000000000000001 but that order does not list it"
            )),
            "{found:#?}"
        );
        assert!(
            has(&format!(
                "key {} is available but order C0000000000000003 lists it",
                k + 1
            )),
            "{found:#?}"
        );
        assert!(
            has(&format!(
                "order D0000000000000004 lists key {}, which does not exist",
                k + 1000
            )),
            "{found:#?}"
        );
        assert!(
            has(&format!(
                "key {} is held for order E0000000000000005 but that order does not list it",
                k + 3
            )),
            "{found:#?}"
        );
        assert!(
            !found.iter().any(|v| v.contains(&format!("key {} ", k + 2))),
            "{found:#?}"
        );
        // These orders were placed without their expiry; schedule E's.
        assert!(has(
            "order E0000000000000005 is pending but its expiry is not scheduled"
        ));
        store
            .write_blocking(|tx| {
                let e = tx.order("E0000000000000005")?.unwrap();
                tx.schedule_expiry(&e);
                Ok(())
            })
            .unwrap();
        let found = checked(&store).violations;
        assert!(
            !found
                .iter()
                .any(|v| v.contains("E0000000000000005 is pending")),
            "{found:#?}"
        );
        assert!(found
            .iter()
            .any(|v| v.contains("A0000000000000001 is pending")));
        store.close();
    }

    /// Order numbers of another shape than faka's (a damaged or hand-made
    /// store) are kept apart from faka's own in the check's maps, and are
    /// found, matched and named the same way.
    #[test]
    fn orders_numbered_unlike_faka_are_checked_alike() {
        let dir = tempfile::tempdir().unwrap();
        let (store, k) = store_with_keys(dir.path(), 2);
        store
            .write_blocking(move |tx| {
                // "legacy-7" holds k as it should; "x" and a faka-shaped
                // number both list k+1, which stays available.
                place(tx, true, "legacy-7", vec![k]);
                place(tx, true, "x", vec![k + 1]);
                place(tx, true, "A0000000000000001", vec![k + 1]);
                tx.swap_key_state(
                    k,
                    &KeyState::Available,
                    KeyState::Held {
                        order_no: "legacy-7".into(),
                    },
                )
            })
            .unwrap();
        let found = checked(&store).violations;
        let has = |text: &str| found.iter().any(|v| v.contains(text));
        assert!(
            has(&format!(
                "key {} is owned by two orders: A0000000000000001 and x",
                k + 1
            )),
            "{found:#?}"
        );
        assert!(
            has(&format!("key {} is available but order x lists it", k + 1)),
            "{found:#?}"
        );
        assert!(!has("legacy-7"), "{found:#?}");
        // Nothing else about these orders or keys (the product itself was
        // never created).
        let about_orders = found.iter().filter(|v| v.contains("order")).count();
        assert_eq!(about_orders, 2, "{found:#?}");
        store.close();
    }

    /// The available-key index is checked key by key, not by counts: a bit
    /// moved from an available key to a slot with no key is two violations.
    #[test]
    fn keys_and_the_available_index_must_agree_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        let (first, last) = store.add_test_keys(3);
        let index_violations = |store: &Store| -> Vec<String> {
            checked(store)
                .violations
                .into_iter()
                .filter(|v| v.contains("available index"))
                .collect()
        };
        assert_eq!(index_violations(&store), Vec::<String>::new());
        // Clear the first key's bit and set one past the last key.
        let (block, slot) = keyblock::locate(first);
        assert_eq!(keyblock::locate(last).0, block);
        let row = keyblock::product_block_key("p", block);
        let trees = store.trees().unwrap();
        let avail = trees.get(Tree::Avail);
        let bits = keyblock::bits(avail.get(&row).unwrap().as_deref());
        let moved = (bits & !(1 << slot)) | (1 << (slot + 3));
        avail.insert(row, keyblock::bits_value(moved)).unwrap();
        let found = index_violations(&store);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains(&format!("key {first} is available but missing")));
        assert!(found[1].contains(&format!("lists key {}", last + 1)));
        store.close();
    }
}
