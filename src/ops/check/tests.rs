//! The checker's own tests: each broken invariant is reported, and the
//! check reading in two halves at once finds what one scan finds.

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

/// A coupon's counts must be its orders': pending ones held, paid ones
/// used, expired ones neither; each buyer's count both together, for the
/// coupons with a per-e-mail cap (only they keep buyers' counts).
#[test]
fn coupon_counts_must_match_the_orders_that_carry_them() {
    use crate::domain::pricing::{Coupon, CouponKind};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
    let coupon = |code: &str, held, uses, cap| Coupon {
        code: code.into(),
        kind: CouponKind::Fixed,
        value: 1,
        product_ids: Vec::new(),
        min_amount: 0,
        max_uses: None,
        max_uses_per_email: cap,
        starts_at_ms: None,
        expires_at_ms: None,
        active: true,
        created_at_ms: 0,
        updated_at_ms: 0,
        uses,
        held,
    };
    store
        .write_blocking(move |tx| {
            for (no, status, code) in [
                ("A0000000000000001", OrderStatus::Pending, "Right"),
                ("B0000000000000002", OrderStatus::Expired, "Right"),
                ("C0000000000000003", OrderStatus::Pending, "Wrong"),
                ("D0000000000000004", OrderStatus::Pending, "Ghost"),
                ("E0000000000000005", OrderStatus::Pending, "Unseen"),
                ("F0000000000000006", OrderStatus::Pending, "Loose"),
            ] {
                let mut o = Order::pending_for_test(no, "b@x.com", "10.0.0.1", 1);
                o.quantity = 0;
                o.status = status;
                o.pricing.coupon = Some(code.into());
                if status == OrderStatus::Pending {
                    tx.schedule_expiry(&o);
                }
                tx.insert_order(&o);
            }
            tx.put_coupon(&coupon("Right", 1, 0, Some(5)));
            tx.put_coupon_email_uses("right", "B@X.COM", 1);
            tx.put_coupon(&coupon("Wrong", 0, 1, Some(5)));
            tx.put_coupon_email_uses("wrong", "b@x.com", 2);
            // Capped, but its buyer's count is missing.
            tx.put_coupon(&coupon("Unseen", 1, 0, Some(5)));
            // No cap: no buyers' counts, and a stale one is not looked at.
            tx.put_coupon(&coupon("Loose", 1, 0, None));
            tx.put_coupon_email_uses("loose", "z@x.com", 7);
            Ok(())
        })
        .unwrap();
    let found: Vec<String> = checked(&store)
        .violations
        .into_iter()
        .filter(|v| v.contains("coupon"))
        .collect();
    let mut want = vec![
        "coupon Wrong counts held/uses 0/1 but its orders are 1/0".to_string(),
        "orders carry coupon ghost, which does not exist".to_string(),
        "a buyer's count of coupon wrong is 2 but their orders are 1".to_string(),
        "1 buyers' coupon counts are missing".to_string(),
    ];
    let mut found_sorted = found.clone();
    found_sorted.sort();
    want.sort();
    assert_eq!(found_sorted, want, "{found:#?}");
    store.close();
}
