//! The invariant checker. It proves, from the stored records alone, the
//! promises faka makes: every key is in exactly one state with at most one
//! owner; a held key belongs to a pending order and a sold key to a
//! delivered (or refunded) one; each product's counts match its keys and add
//! up (`available + held + sold = imported − deleted`); every order is in a
//! legal shape for its status, and every pending order's expiry is
//! scheduled (the sweeper and the hold caps find pending orders there);
//! every coupon's use counts match the orders that carry it.

use crate::domain::model::{KeyRecord, KeyState, Order, Product};
use crate::domain::order::OrderStatus;
use crate::error::Result;
use crate::store::{keyblock, Store};
use std::collections::BTreeMap;

mod coupons;
mod scan;
mod tables;

use coupons::CouponTally;
use scan::scan_in_two;
use tables::{Names, Owners, Statuses};

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

/// From this many orders or keys on, each of the two passes reads its tree
/// as two halves on two threads (the reading and decoding are most of a
/// crash start's time at 1M keys + 1M orders).
const PARALLEL_FROM: u64 = 20_000;

/// Checks every invariant over the whole store.
pub fn run(store: &Store) -> Result<Report> {
    run_with(store, PARALLEL_FROM)
}

/// [`run`], reading each tree in two halves at once from `parallel_from`
/// orders (the orders pass) or keys (the keys pass) on. The passes add
/// what they find to one list, in this order, which is the report's.
fn run_with(store: &Store, parallel_from: u64) -> Result<Report> {
    let mut bad = Vec::new();
    let Orders {
        mut owner,
        statuses,
        seen,
        twice,
        paid,
        recorded,
        coupons,
    } = check_orders(store, parallel_from, &mut bad)?;
    let names = Names::new(&statuses, seen);
    check_keys_listed_twice(&twice, &mut owner, &names, &mut bad);
    check_recorded_counts(store, recorded, &statuses, &mut bad)?;
    coupons.check(store, &mut bad)?;
    let mut index = store.available_index()?;
    let products = store.products()?;
    let (keys, counted) = check_keys(
        store,
        parallel_from,
        &products,
        &mut owner,
        &names,
        &mut index,
        &mut bad,
    )?;
    for (k, o) in owner.left() {
        let o = names.of(Some(o)).unwrap_or("?");
        bad.push(format!("order {o} lists key {k}, which does not exist"));
    }
    let product_count = products.len();
    check_product_counts(products, counted, &mut bad);
    check_index_left(index, &mut bad);
    let mut r = Report {
        products: product_count,
        keys,
        orders: seen as usize,
        ..Report::default()
    };
    for v in bad {
        r.violation(v);
    }
    r.paid_undelivered = paid;
    Ok(r)
}

/// What the orders pass learns, for the passes after it.
struct Orders {
    /// Which order lists each key, by the order's number in `seen`.
    owner: Owners,
    statuses: Statuses,
    /// How many orders were read; each one's number is its place in the
    /// reading.
    seen: u32,
    /// Keys listed by two orders: (key, the first order's number, the second).
    twice: Vec<(u64, u32, String)>,
    /// The orders left `paid` without their keys, in order-number order.
    paid: Vec<String>,
    /// The stored counts of orders by status, as read before the pass.
    recorded: [u64; 6],
    /// The coupon uses the orders hold.
    coupons: CouponTally,
}

/// Pass 1: orders, and which order claims each key. Orders are numbered
/// in the order they are read (`seen`); a key's claim is that number.
/// The maps are sized from the stored counts and hashed with FxHash
/// (keys are faka's own ids, read offline): at 1M orders this pass is
/// most of a crash start's time.
fn check_orders(store: &Store, parallel_from: u64, bad: &mut Vec<String>) -> Result<Orders> {
    let recorded = store.order_counts();
    let capacity = (recorded.iter().sum::<u64>() as usize).min(1 << 26);
    let mut owner = Owners::new(store.key_id_end()?, capacity);
    let mut statuses = Statuses::with_capacity(capacity);
    let mut seen = 0u32;
    let mut twice = Vec::new();
    let mut paid = Vec::new();
    let mut coupons = CouponTally::default();
    let visit_order = |o: Order| {
        check_order_shape(store, &o, bad, &mut paid)?;
        coupons.count(&o);
        let with_keys = matches!(
            o.status,
            OrderStatus::Pending
                | OrderStatus::Paid
                | OrderStatus::Delivered
                | OrderStatus::Refunded
        );
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
    // The halves are read in no set order: name the paid orders in
    // order-number order.
    paid.sort();
    Ok(Orders {
        owner,
        statuses,
        seen,
        twice,
        paid,
        recorded,
        coupons,
    })
}

/// One order alone: its keys fit its status and quantity, a pending one's
/// expiry is scheduled, a paid one carries its payment.
fn check_order_shape(
    store: &Store,
    o: &Order,
    bad: &mut Vec<String>,
    paid: &mut Vec<String>,
) -> Result<()> {
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
    if o.status == OrderStatus::Pending && !store.expiry_scheduled(o)? {
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
    Ok(())
}

/// A key listed by several orders: named pairwise in order-number order,
/// and owned (for the keys pass) by the last of them, as a scan in that
/// order leaves it, whatever order the halves were read in.
fn check_keys_listed_twice(
    twice: &[(u64, u32, String)],
    owner: &mut Owners,
    names: &Names,
    bad: &mut Vec<String>,
) {
    let mut listed: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for (k, prev, no) in twice {
        let nos = listed.entry(*k).or_default();
        nos.push(names.of(Some(*prev)).unwrap_or("?"));
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
        if let Some(&(_, last)) = nos.last().and_then(|no| names.statuses.get(no)) {
            owner.insert(k, last);
        }
    }
}

/// The counts kept beside the records: orders by status, and the webhook
/// outbox's pending and dead events.
fn check_recorded_counts(
    store: &Store,
    recorded: [u64; 6],
    statuses: &Statuses,
    bad: &mut Vec<String>,
) -> Result<()> {
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
    Ok(())
}

/// The available-key index as read: per (product, block), a bit per slot.
type Index = BTreeMap<(String, u64), u64>;

/// Pass 2: keys against their owners and the available-key index. Takes
/// each key's claim out of `owner` and its bit out of `index`, so what is
/// left in them afterwards names what no key answered; gives the number of
/// keys and their states counted by product.
fn check_keys(
    store: &Store,
    parallel_from: u64,
    products: &[Product],
    owner: &mut Owners,
    names: &Names,
    index: &mut Index,
    bad: &mut Vec<String>,
) -> Result<(usize, BTreeMap<String, Counted>)> {
    let keys_recorded: u64 = products
        .iter()
        .map(|p| p.counts.available + p.counts.held + p.counts.sold)
        .sum();
    let mut keys = 0;
    let mut counted: BTreeMap<String, Counted> = BTreeMap::new();
    let mut visit_key = |(id, k): (u64, KeyRecord)| {
        keys += 1;
        let c = counted.entry(k.product_id.clone()).or_default();
        let claimed = owner.remove(id);
        match &k.state {
            KeyState::Available => {
                c.available += 1;
                if let Some(o) = names.of(claimed) {
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
                check_owned_key(id, &k.state, order_no, claimed, names, c, bad)
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
    Ok((keys, counted))
}

/// A held or sold key: the order it names lists it, and is in a state
/// that holds (or has sold) keys.
fn check_owned_key(
    id: u64,
    state: &KeyState,
    order_no: &str,
    claimed: Option<u32>,
    names: &Names,
    c: &mut Counted,
    bad: &mut Vec<String>,
) {
    let sold = matches!(state, KeyState::Sold { .. });
    if sold {
        c.sold += 1;
    } else {
        c.held += 1;
    }
    let status = names.statuses.get(order_no);
    if claimed.is_none() || claimed != status.map(|&(_, i)| i) {
        bad.push(format!(
            "key {id} is {} for order {order_no} but that order does not list it",
            state.name()
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
            state.name(),
            status.map_or("missing", |s| s.as_str())
        ));
    }
}

/// Pass 3: each product's counts match its keys and add up; no key is of
/// a product that does not exist.
fn check_product_counts(
    products: Vec<Product>,
    mut counted: BTreeMap<String, Counted>,
    bad: &mut Vec<String>,
) {
    for p in products {
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
}

/// What the keys pass left in the index names keys that are not available.
fn check_index_left(index: Index, bad: &mut Vec<String>) {
    for ((product, block), bits) in index {
        for id in keyblock::ids_in(block, bits, 0) {
            bad.push(format!(
                "the available index of product {product} lists key {id}, which is not an available key of it"
            ));
        }
    }
}

#[cfg(test)]
mod tests;
