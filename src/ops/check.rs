//! The invariant checker. It proves, from the stored records alone, the
//! promises faka makes: every key is in exactly one state with at most one
//! owner; a held key belongs to a pending order and a sold key to a
//! delivered (or refunded) one; each product's counts match its keys and add
//! up (`available + held + sold = imported − deleted`); every order is in a
//! legal shape for its status.

use crate::domain::model::KeyState;
use crate::domain::order::OrderStatus;
use crate::error::Result;
use crate::store::{keyblock, Store};
use std::collections::{BTreeMap, HashMap};

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
    // Pass 1: orders, and which order claims each key.
    let mut owner: HashMap<u64, String> = HashMap::new();
    let mut statuses: HashMap<String, OrderStatus> = HashMap::new();
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
        if o.status.is_paid() && (o.paid_at_ms.is_none() || o.trade_no.is_none()) {
            bad.push(format!(
                "order {} is {} without a payment",
                o.order_no,
                o.status.as_str()
            ));
        }
        if with_keys {
            for &k in &o.key_ids {
                if let Some(prev) = owner.insert(k, o.order_no.clone()) {
                    bad.push(format!(
                        "key {k} is owned by two orders: {prev} and {}",
                        o.order_no
                    ));
                }
            }
        }
        statuses.insert(o.order_no.clone(), o.status);
        Ok(())
    })?;
    let mut by_status = [0u64; 6];
    for s in statuses.values() {
        by_status[s.index()] += 1;
    }
    let recorded = store
        .stats()
        .orders_by_status
        .lock()
        .map(|c| *c)
        .unwrap_or_default();
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
                if let Some(o) = claimed {
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
                if claimed.as_deref() != Some(order_no.as_str()) {
                    bad.push(format!(
                        "key {id} is {} for order {order_no} but that order does not list it",
                        k.state.name()
                    ));
                }
                let expected = if sold {
                    matches!(
                        statuses.get(order_no),
                        Some(OrderStatus::Delivered | OrderStatus::Refunded)
                    )
                } else {
                    matches!(
                        statuses.get(order_no),
                        Some(OrderStatus::Pending | OrderStatus::Paid)
                    )
                };
                if !expected {
                    bad.push(format!(
                        "key {id} is {} but order {order_no} is {}",
                        k.state.name(),
                        statuses.get(order_no).map_or("missing", |s| s.as_str())
                    ));
                }
            }
        }
        Ok(())
    })?;
    for (k, o) in owner {
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

    /// The available-key index is checked key by key, not by counts: a bit
    /// moved from an available key to a slot with no key is two violations.
    #[test]
    fn keys_and_the_available_index_must_agree_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::new(dir.path());
        opts.min_free_bytes = 0;
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
