//! The invariant checker. It proves, from the stored records alone, the
//! promises faka makes: every key is in exactly one state with at most one
//! owner; a held key belongs to a pending order and a sold key to a
//! delivered (or refunded) one; each product's counts match its keys and add
//! up (`available + held + sold = imported − deleted`); every order is in a
//! legal shape for its status, and every pending order's expiry is
//! scheduled (the sweeper and the hold caps find pending orders there).

use crate::domain::model::KeyState;
use crate::domain::order::OrderStatus;
use crate::error::Result;
use crate::store::{keyblock, Store};
use rustc_hash::FxHashMap;
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

/// Checks every invariant over the whole store.
pub fn run(store: &Store) -> Result<Report> {
    let mut r = Report::default();
    // Pass 1: orders, and which order claims each key. Orders are numbered
    // in the order they are read (`seen`); a key's claim is that number.
    // The maps are sized from the stored counts and hashed with FxHash
    // (keys are faka's own ids, read offline): at 1M orders this pass is
    // most of a crash start's time.
    let recorded = store.order_counts();
    let capacity = (recorded.iter().sum::<u64>() as usize).min(1 << 26);
    let mut owner: FxHashMap<u64, u32> = FxHashMap::default();
    owner.reserve(capacity);
    let mut statuses: FxHashMap<String, (OrderStatus, u32)> = FxHashMap::default();
    statuses.reserve(capacity);
    let mut seen = 0u32;
    // Keys listed by two orders: (key, the first order's number, the second).
    let mut twice: Vec<(u64, u32, String)> = Vec::new();
    let mut bad = Vec::new();
    let mut paid = Vec::new();
    store.for_each_order(|o| {
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
    })?;
    // Order numbers by their number in `seen`, for messages only.
    let mut names: Vec<&str> = vec![""; seen as usize];
    for (no, &(_, i)) in &statuses {
        names[i as usize] = no;
    }
    let name = |c: Option<u32>| c.and_then(|i| names.get(i as usize).copied());
    for (k, prev, no) in twice {
        let prev = name(Some(prev)).unwrap_or("?");
        bad.push(format!("key {k} is owned by two orders: {prev} and {no}"));
    }
    let mut by_status = [0u64; 6];
    for (s, _) in statuses.values() {
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
    store.for_each_key(|id, k| {
        r.keys += 1;
        let c = counted.entry(k.product_id.clone()).or_default();
        let claimed = owner.remove(&id);
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
                let status = statuses.get(order_no.as_str());
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
                    matches!(status, Some(OrderStatus::Pending | OrderStatus::Paid))
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
    })?;
    for (k, o) in owner {
        let o = name(Some(o)).unwrap_or("?");
        bad.push(format!("order {o} lists key {k}, which does not exist"));
    }
    // Pass 3: product counts.
    for p in store.products()? {
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

    /// Keys and the orders that list them are matched both ways, and each
    /// violation names the right orders: a key listed by two orders, an
    /// available key an order lists, a key no order lists, a listed key
    /// that does not exist.
    #[test]
    fn keys_and_their_orders_must_name_each_other() {
        use crate::domain::model::{KeyState, Order};
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::for_test(dir.path());
        let store = Store::open(&opts).unwrap();
        let (k, _) = store
            .write_blocking(|tx| {
                let keys = (0..4u8).map(|i| (vec![i], [i; 16])).collect();
                Ok(tx.insert_available_keys("p", keys))
            })
            .unwrap()
            .unwrap();
        store
            .write_blocking(move |tx| {
                let held = |no: &str| KeyState::Held {
                    order_no: no.into(),
                };
                let mut place = |no: &str, keys: Vec<u64>| {
                    let mut o = Order::pending_for_test(no, "b@x.com", "10.0.0.1", 1);
                    o.quantity = keys.len() as u32;
                    o.key_ids = keys;
                    tx.insert_order(&o);
                };
                // A and B both list k; C lists k+1, which stays available;
                // D lists a key that does not exist; E lists k+2 properly.
                place("A0000000000000001", vec![k]);
                place("B0000000000000002", vec![k]);
                place("C0000000000000003", vec![k + 1]);
                place("D0000000000000004", vec![k + 1000]);
                place("E0000000000000005", vec![k + 2]);
                tx.swap_key_state(k, &KeyState::Available, held("A0000000000000001"))?;
                tx.swap_key_state(k + 2, &KeyState::Available, held("E0000000000000005"))?;
                // k+3 is held for an order that does not list it.
                tx.swap_key_state(k + 3, &KeyState::Available, held("E0000000000000005"))
            })
            .unwrap();
        let found = run(&store).unwrap().violations;
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
        let found = run(&store).unwrap().violations;
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

    /// The available-key index is checked key by key, not by counts: a bit
    /// moved from an available key to a slot with no key is two violations.
    #[test]
    fn keys_and_the_available_index_must_agree_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::for_test(dir.path());
        let store = Store::open(&opts).unwrap();
        let (first, last) = store
            .write_blocking(|tx| {
                let keys = (0..3u8).map(|i| (vec![i], [i; 16])).collect();
                Ok(tx.insert_available_keys("p", keys))
            })
            .unwrap()
            .unwrap();
        let index_violations = |store: &Store| -> Vec<String> {
            run(store)
                .unwrap()
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
        let avail = store.trees().get(Tree::Avail);
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
