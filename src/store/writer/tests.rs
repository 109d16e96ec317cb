//! The writer's stories: group commit, rollback of one job, failure epochs,
//! a sled that cannot take a durable batch, and the early stock counts.

use crate::domain::model::{IdempotencyRecord, Order};
use crate::domain::order::OrderStatus;
use crate::error::Result;
use crate::store::{Store, StoreOptions};
use std::sync::atomic::Ordering;
use std::sync::mpsc;

fn rec(n: u8) -> IdempotencyRecord {
    IdempotencyRecord {
        fingerprint: [n; 32],
        order_no: format!("o{n}"),
        sealed_response: vec![],
        created_at_ms: 0,
    }
}

fn put(store: &Store, n: u8) -> crate::error::Result<()> {
    store.write_blocking(move |tx| {
        tx.put_idempotency(&[n; 32], &rec(n));
        Ok(())
    })
}

fn present(store: &Store, n: u8) -> bool {
    store
        .write_blocking(move |tx| Ok(tx.idempotency(&[n; 32])?.is_some()))
        .unwrap()
}

/// A store whose batches hold one job each, on any free space.
fn one_job_per_batch(dir: &std::path::Path) -> (Store, StoreOptions) {
    let mut opts = StoreOptions::for_test(dir);
    opts.max_batch = 1;
    (Store::open(&opts).unwrap(), opts)
}

/// The next batch fails to commit, once the batch after it has been
/// computed on top of it.
fn fail_next_batch_once_one_more_is_computed(store: &Store) {
    let computed = store.stats().computed.load(Ordering::SeqCst);
    store
        .stats()
        .fail_next_commit_at
        .store(computed + 2, Ordering::SeqCst);
}

/// The writer counts outbox events by state with every batch, so
/// metrics need not read the outbox: the counts follow events created,
/// sent, given up and re-queued, ignore rolled-back commands, survive a
/// restart, and always equal a count of the outbox itself.
#[test]
fn outbox_counts_follow_every_event_without_a_scan() {
    use crate::domain::model::{DeliveryState, EventKind};
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StoreOptions::for_test(dir.path());
    opts.webhooks = true;
    let store = Store::open(&opts).unwrap();
    let agree = |store: &Store, expect: (u64, u64)| {
        assert_eq!(store.outbox_counts(), expect);
        assert_eq!(store.outbox_counts_scanned().unwrap(), expect);
    };
    store
        .write_blocking(|tx| {
            for o in ["A", "B", "C"] {
                tx.emit_event(o, EventKind::Paid);
                tx.emit_event(o, EventKind::Delivered);
            }
            Ok(())
        })
        .unwrap();
    agree(&store, (6, 0));
    let failed = store.write_blocking(|tx| {
        tx.emit_event("D", EventKind::Paid);
        Err::<(), _>(crate::error::Error::invalid("x", "fails on purpose"))
    });
    assert!(failed.is_err());
    agree(&store, (6, 0));
    let set = |seq: u64, state: DeliveryState| {
        store
            .write_blocking(move |tx| {
                let mut e = tx.outbox(seq)?.unwrap();
                e.state = state;
                tx.put_outbox(&e)
            })
            .unwrap();
    };
    set(1, DeliveryState::Delivered);
    set(2, DeliveryState::Dead);
    set(3, DeliveryState::Dead);
    agree(&store, (3, 2));
    set(3, DeliveryState::Pending);
    agree(&store, (4, 1));
    store.close();
    drop(store);
    let store = Store::open(&opts).unwrap();
    agree(&store, (4, 1));
    store.close();
    drop(store);
    std::fs::remove_file(dir.path().join("CLEAN")).unwrap();
    let store = Store::open(&opts).unwrap();
    agree(&store, (4, 1));
    store.close();
}

/// Batch N+1 is computed while N is still being made durable, reading
/// N's writes. If N then fails, N+1 must fail too, and the writer must
/// go on from the last durable state with no gap in the journal.
#[test]
fn a_batch_computed_on_a_failed_batch_fails_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opts) = one_job_per_batch(dir.path());
    put(&store, 1).unwrap();
    let durable = store.stats().applied_seq.load(Ordering::SeqCst);
    // Fail the next batch (B) once the one after it (C) is computed.
    fail_next_batch_once_one_more_is_computed(&store);
    let (b_tx, b_rx) = mpsc::channel();
    store
        .send(Store::job(
            |tx| {
                tx.put_idempotency(&[2; 32], &rec(2));
                Ok(())
            },
            move |r| b_tx.send(r).unwrap(),
        ))
        .unwrap();
    let (c_tx, c_rx) = mpsc::channel();
    store
        .send(Store::job(
            |tx| {
                // Sees batch N's write only through the in-flight batch.
                let saw = tx.idempotency(&[2; 32])?.is_some();
                if saw {
                    tx.put_idempotency(&[3; 32], &rec(3));
                }
                Ok(saw)
            },
            move |r| c_tx.send(r).unwrap(),
        ))
        .unwrap();
    assert!(b_rx.recv().unwrap().is_err(), "the failed batch is refused");
    assert!(
        c_rx.recv().unwrap().is_err(),
        "the batch that read its writes is refused with it"
    );
    assert!(!present(&store, 2) && !present(&store, 3));
    assert!(present(&store, 1));
    put(&store, 4).unwrap();
    assert_eq!(
        store.stats().applied_seq.load(Ordering::SeqCst),
        durable + 1,
        "the next durable batch follows the last durable one"
    );
    store.close();
    drop(store);
    // Unclean-style reopen from the journal sees exactly 1 and 4.
    std::fs::remove_file(dir.path().join("CLEAN")).ok();
    let store = Store::open(&opts).unwrap();
    assert!(present(&store, 1) && present(&store, 4));
    assert!(!present(&store, 2) && !present(&store, 3));
    store.close();
}

fn product_with(available: u64) -> crate::domain::model::Product {
    crate::domain::model::Product {
        id: "p".into(),
        name: "p".into(),
        description: String::new(),
        price: 1,
        min_quantity: 1,
        max_quantity: 1,
        active: true,
        created_at_ms: 0,
        updated_at_ms: 0,
        counts: crate::domain::model::KeyCounts {
            available,
            imported: available,
            ..Default::default()
        },
        presentation: Default::default(),
    }
}

fn put_product(store: &Store, available: u64) -> Result<()> {
    store.write_blocking(move |tx| {
        tx.put_product(&product_with(available));
        Ok(())
    })
}

/// What the start-up check relies on: while one long command holds the
/// writer, reads are answered from the store, and a write queued behind
/// it is answered only once it is done.
#[test]
fn reads_are_answered_while_a_long_command_holds_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreOptions::new(dir.path().to_path_buf())).unwrap();
    put_product(&store, 5).unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let long = store
        .submit_blocking(move |_tx| {
            released.recv().ok();
            Ok(())
        })
        .unwrap();
    let write = store
        .submit_blocking(|tx| {
            tx.put_product(&product_with(7));
            Ok(())
        })
        .unwrap();
    for _ in 0..3 {
        let p = store.product("p").unwrap().expect("the product reads");
        assert_eq!(p.counts.available, 5);
        assert!(
            write.try_recv().is_err(),
            "the write waits behind the long command"
        );
    }
    release.send(()).unwrap();
    long.recv().unwrap().unwrap();
    write.recv().unwrap().unwrap();
    assert_eq!(store.product("p").unwrap().unwrap().counts.available, 7);
    store.close();
}

/// `refuse_early` reads the writer's count of a product before the
/// batch that changed it is durable; a rolled-back command publishes
/// nothing; a count from a batch that failed is ignored from the
/// failure on, so the product never looks sold out on the strength of
/// a claim that was undone.
#[test]
fn the_writers_stock_leads_the_store_and_a_failed_batch_leaves_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _opts) = one_job_per_batch(dir.path());
    assert_eq!(store.early_available("p"), None, "nothing written yet");
    put_product(&store, 5).unwrap();
    assert_eq!(store.early_available("p"), Some(5));
    let rolled_back = store.write_blocking(|tx| {
        tx.put_product(&product_with(4));
        Err::<(), _>(crate::error::Error::unavailable("no"))
    });
    assert!(rolled_back.is_err());
    put(&store, 9).unwrap();
    assert_eq!(store.early_available("p"), Some(5), "a rolled-back command");

    // B sells the last key; its commit waits until C is computed on top
    // of it, and then fails.
    fail_next_batch_once_one_more_is_computed(&store);
    let (b_tx, b_rx) = mpsc::channel();
    store
        .send(Store::job(
            |tx| {
                tx.put_product(&product_with(0));
                Ok(())
            },
            move |r| b_tx.send(r).unwrap(),
        ))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.early_available("p") != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "B's count never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let stored = store.product("p").unwrap().unwrap().counts.available;
    assert_eq!(stored, 5, "B is not durable yet, its count already leads");
    let (c_tx, c_rx) = mpsc::channel();
    store
        .send(Store::job(|_tx| Ok(()), move |r| c_tx.send(r).unwrap()))
        .unwrap();
    assert!(b_rx.recv().unwrap().is_err(), "B failed");
    let _ = c_rx.recv().unwrap();
    assert_eq!(
        store.early_available("p"),
        None,
        "the failed batch's count is ignored: the stored 5 answers"
    );
    put(&store, 1).unwrap();
    assert_eq!(store.early_available("p"), None, "dropped at the restart");
    put_product(&store, 3).unwrap();
    assert_eq!(store.early_available("p"), Some(3));
    store.close();
}

/// sled refusing a batch that is already durable (as it does on a full
/// disk) loses nothing and shows nothing stale: the write is
/// acknowledged and read back; walks and writes answer 503 and health
/// says not writable while sled lacks it; once sled may be opened again
/// the writer does so by itself, and the shop writes again, with the
/// batch in sled and after clean and unclean restarts.
#[test]
fn a_durable_batch_sled_refused_is_read_and_taken_once_sled_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opts) = one_job_per_batch(dir.path());
    put_product(&store, 5).unwrap();
    store.stats().sled_fails.store(true, Ordering::SeqCst);
    put_product(&store, 4).expect("durable in the journal: acknowledged");
    let available = |store: &Store| store.product("p").unwrap().unwrap().counts.available;
    for _ in 0..3 {
        assert_eq!(available(&store), 4, "the acknowledged state, not sled's");
        let miss = store.order("unknown").unwrap_err();
        assert_eq!(miss.status(), 503, "a miss may be what sled lost: {miss}");
        let not_found = store.write_blocking(|tx| {
            tx.order("unknown")?
                .ok_or_else(|| crate::error::Error::not_found("no such order"))
        });
        assert_eq!(
            not_found.unwrap_err().status(),
            503,
            "never 404 while behind"
        );
        let walk = store.products().unwrap_err();
        assert_eq!(walk.status(), 503, "a walk cannot see the batch: {walk}");
        assert!(!store.healthy());
        let refused = put(&store, 1).unwrap_err();
        assert_eq!(refused.status(), 503);
        assert!(refused.retry_after().is_some());
    }
    assert!(store.trees().is_err());
    store.stats().sled_fails.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !store.healthy() {
        assert!(std::time::Instant::now() < deadline, "sled never reopened");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    put(&store, 1).expect("writes resume without a restart");
    assert!(present(&store, 1));
    let products = store.products().unwrap();
    assert_eq!(products[0].counts.available, 4, "sled took the batch");
    let mut store = store;
    for clean in [true, false] {
        store.close();
        drop(store);
        if !clean {
            std::fs::remove_file(dir.path().join("CLEAN")).unwrap();
        }
        store = Store::open(&opts).unwrap();
        assert_eq!(available(&store), 4);
        assert!(present(&store, 1));
    }
    store.close();
}

/// Imports fingerprints `fps` into product "p" as keys, skipping the
/// ones the product already had; returns how many were new.
fn import_fps_in(tx: &mut crate::store::Tx, fps: Vec<u8>) -> crate::error::Result<usize> {
    let mut new = Vec::new();
    for f in fps {
        if !tx.key_fingerprint_known("p", &[f; 16])? {
            new.push((vec![f], [f; 16]));
        }
    }
    let n = new.len();
    tx.insert_available_keys("p", new);
    Ok(n)
}

fn import_fps(store: &Store, fps: Vec<u8>) -> crate::error::Result<usize> {
    store.write_blocking(move |tx| import_fps_in(tx, fps))
}

/// The writer de-duplicates imports against an in-memory index of
/// fingerprints: it must know every key the store holds (after clean
/// and unclean restarts, through batches still in flight) and none that
/// a failed batch imported.
#[test]
fn imports_are_deduplicated_against_the_store_never_against_a_failed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opts) = one_job_per_batch(dir.path());
    assert_eq!(import_fps(&store, vec![1, 2, 3]).unwrap(), 3);
    assert_eq!(import_fps(&store, vec![2, 3, 4]).unwrap(), 1);
    // Two batches import 5, then 5 and 6 (computed on the first), and
    // both fail: neither is remembered.
    fail_next_batch_once_one_more_is_computed(&store);
    let mut replies = Vec::new();
    for fps in [vec![5], vec![5, 6]] {
        let (t, r) = mpsc::channel();
        store
            .send(Store::job(
                move |tx| import_fps_in(tx, fps),
                move |res| t.send(res).unwrap(),
            ))
            .unwrap();
        replies.push(r);
    }
    let answers: Vec<_> = replies.iter().map(|r| r.recv().unwrap()).collect();
    assert!(answers.iter().all(|a| a.is_err()), "both batches fail");
    assert_eq!(
        import_fps(&store, vec![5, 6]).unwrap(),
        2,
        "nothing left behind"
    );
    // A clean restart loads the index from sled, an unclean one from the
    // rebuilt store.
    store.close();
    drop(store);
    let store = Store::open(&opts).unwrap();
    // A command that imports and then loads the index (the first
    // de-duplication after the restart), and then fails: what the
    // loading saw of its own import is not remembered.
    let failed = store.write_blocking(|tx| {
        tx.insert_available_keys("p", vec![(vec![9], [9; 16])]);
        assert!(tx.key_fingerprint_known("p", &[1; 16])?);
        Err::<(), _>(crate::error::Error::invalid("x", "fails on purpose"))
    });
    assert!(failed.is_err());
    assert_eq!(import_fps(&store, vec![1, 5, 6, 7, 9]).unwrap(), 2);
    store.close();
    drop(store);
    std::fs::remove_file(dir.path().join("CLEAN")).unwrap();
    let store = Store::open(&opts).unwrap();
    assert_eq!(import_fps(&store, vec![7, 8]).unwrap(), 1);
    store.close();
}

fn holds(store: &Store, kind: &'static str, who: &'static str) -> u64 {
    store
        .write_blocking(move |tx| tx.pending_holds(kind, who))
        .unwrap()
}

fn place(store: &Store, o: Order) -> Result<()> {
    store.write_blocking(move |tx| {
        tx.insert_order(&o);
        tx.schedule_expiry(&o);
        Ok(())
    })
}

fn settle(store: &Store, no: &'static str, status: OrderStatus) {
    store
        .write_blocking(move |tx| {
            let mut o = tx.order(no)?.unwrap();
            tx.unschedule_expiry(&o);
            o.status = status;
            tx.put_order(&o);
            Ok(())
        })
        .unwrap();
}

/// The hold caps' counts live only in the writer: they follow orders
/// placed, paid and expired, forget rolled-back commands and failed
/// batches, and are counted again from the pending orders after clean
/// and unclean restarts. E-mails count in any letter case.
#[test]
fn hold_counts_follow_the_pending_orders_without_being_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, opts) = one_job_per_batch(dir.path());
    place(
        &store,
        Order::pending_for_test("A", "Buyer@x.com", "10.0.0.1", 5),
    )
    .unwrap();
    place(
        &store,
        Order::pending_for_test("B", "buyer@X.com", "10.0.0.2", 6),
    )
    .unwrap();
    place(
        &store,
        Order::pending_for_test("C", "other@x.com", "10.0.0.1", 7),
    )
    .unwrap();
    assert_eq!(holds(&store, "email", "BUYER@x.com"), 2);
    assert_eq!(holds(&store, "ip", "10.0.0.1"), 2);
    settle(&store, "A", OrderStatus::Delivered);
    assert_eq!(holds(&store, "email", "buyer@x.com"), 1);
    assert_eq!(holds(&store, "ip", "10.0.0.1"), 1);
    // A command that places an order, sees it counted, then fails.
    let place_and_fail = |store: &Store| {
        let failed = store.write_blocking(|tx| {
            let o = Order::pending_for_test("D", "buyer@x.com", "10.0.0.1", 8);
            tx.insert_order(&o);
            tx.schedule_expiry(&o);
            assert_eq!(tx.pending_holds("email", "buyer@x.com")?, 2);
            Err::<(), _>(crate::error::Error::invalid("x", "fails on purpose"))
        });
        assert!(failed.is_err());
    };
    place_and_fail(&store);
    assert_eq!(holds(&store, "email", "buyer@x.com"), 1);
    // Two batches each place an order for the buyer, and both fail.
    fail_next_batch_once_one_more_is_computed(&store);
    let replies: Vec<_> = ["E", "F"]
        .into_iter()
        .map(|no| {
            let (t, r) = mpsc::channel();
            let o = Order::pending_for_test(no, "buyer@x.com", "10.0.0.9", 9);
            store
                .send(Store::job(
                    move |tx| {
                        tx.insert_order(&o);
                        tx.schedule_expiry(&o);
                        Ok(())
                    },
                    move |res| t.send(res).unwrap(),
                ))
                .unwrap();
            r
        })
        .collect();
    assert!(replies.iter().all(|r| r.recv().unwrap().is_err()));
    assert_eq!(holds(&store, "email", "buyer@x.com"), 1);
    assert_eq!(holds(&store, "ip", "10.0.0.9"), 0);
    // Nothing of them is in sled; a clean and an unclean restart count
    // the pending orders B and C again.
    assert!(store
        .trees()
        .unwrap()
        .get(crate::store::tree::Tree::Holds)
        .is_empty());
    for clean in [true, false] {
        store.close();
        drop(store);
        if !clean {
            std::fs::remove_file(dir.path().join("CLEAN")).unwrap();
        }
        store = Store::open(&opts).unwrap();
        // The first count after the start happens inside a command
        // that fails: what it saw of its own order is not kept.
        place_and_fail(&store);
        assert_eq!(holds(&store, "email", "buyer@x.com"), 1);
        assert_eq!(holds(&store, "email", "other@x.com"), 1);
        assert_eq!(holds(&store, "ip", "10.0.0.1"), 1);
        assert_eq!(holds(&store, "ip", "10.0.0.2"), 1);
    }
    settle(&store, "B", OrderStatus::Expired);
    settle(&store, "C", OrderStatus::Expired);
    assert_eq!(holds(&store, "email", "buyer@x.com"), 0);
    assert_eq!(holds(&store, "ip", "10.0.0.1"), 0);
    store.close();
}

/// Keys imported in blocks read back one by one, in pages and in a full
/// walk, with each key's own row (after a claim or a delete) in place of
/// its block slot: two products' blocks interleaved, pages crossing
/// blocks.
#[test]
fn keys_in_blocks_read_back_with_their_state_changes() {
    use crate::domain::model::KeyState;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = one_job_per_batch(dir.path());
    let import = |product: &'static str, n: usize| -> Vec<u64> {
        let (first, last) = store
            .write_blocking(move |tx| {
                let keys = (0..n)
                    .map(|i| (format!("{product}-{i}").into_bytes(), [0; 16]))
                    .collect();
                Ok(tx.insert_available_keys(product, keys))
            })
            .unwrap()
            .unwrap();
        (first..=last).collect()
    };
    let mut p = import("p", 100);
    let q = import("q", 10);
    p.extend(import("p", 30));
    assert_eq!(p.len(), 130);
    // Claim p's 3 first keys, sell one, delete two others.
    let claimed = store.write_blocking(|tx| claim(tx, 3)).unwrap().unwrap();
    assert_eq!(claimed, p[..3]);
    let sold = KeyState::Sold {
        order_no: format!("o{}", p[0]),
    };
    let held = KeyState::Held {
        order_no: format!("o{}", p[0]),
    };
    let (first, d1, d2) = (p[0], p[70], p[120]);
    store
        .write_blocking(move |tx| {
            tx.swap_key_state(first, &held, sold)?;
            assert!(tx.delete_available_key(d1, "p")?);
            assert!(tx.delete_available_key(d2, "p")?);
            assert!(!tx.delete_available_key(d2, "p")?, "already gone");
            Ok(())
        })
        .unwrap();
    assert_eq!(store.key(d1).unwrap(), None);
    // A deleted key's sealed text is gone from the store's rows.
    let rows = store.dump().unwrap();
    let text = format!("p-{}", 70).into_bytes();
    assert!(!rows
        .iter()
        .any(|(_, _, v)| v.windows(text.len()).any(|w| w == text.as_slice())));
    assert!(rows
        .iter()
        .any(|(_, _, v)| v.windows(4).any(|w| w == b"p-71")));
    let rec = store.key(p[0]).unwrap().unwrap();
    assert_eq!(rec.state.name(), "sold");
    assert_eq!(rec.sealed, b"p-0");
    assert_eq!(store.key(p[101]).unwrap().unwrap().sealed, b"p-1");
    assert_eq!(store.key(q[9]).unwrap().unwrap().product_id, "q");
    let page_through = |state: Option<&str>| -> Vec<u64> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.keys_page("p", state, 7, cursor).unwrap();
            out.extend(page.keys.iter().map(|(id, _)| *id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    };
    let live: Vec<u64> = p
        .iter()
        .copied()
        .filter(|&id| id != d1 && id != d2)
        .collect();
    assert_eq!(page_through(None), live);
    let available: Vec<u64> = live[3..].to_vec();
    assert_eq!(page_through(Some("available")), available);
    assert_eq!(page_through(Some("held")), p[1..3]);
    assert_eq!(page_through(Some("sold")), p[..1]);
    let mut walked = Vec::new();
    store
        .for_each_key(|id, rec| {
            walked.push((id, rec.product_id));
            Ok(())
        })
        .unwrap();
    assert_eq!(walked.len(), 128 + 10);
    assert!(walked.windows(2).all(|w| w[0].0 < w[1].0));
    let indexed = |p: &str| -> u32 {
        let index = store.available_index().unwrap();
        index
            .iter()
            .filter(|((product, _), _)| product == p)
            .map(|(_, bits)| bits.count_ones())
            .sum()
    };
    assert_eq!(indexed("p"), 125);
    assert_eq!(indexed("q"), 10);
    store.close();
}

/// Imports `n` keys into product "p"; returns their ids.
fn add_keys(store: &Store, n: u8) -> Vec<u64> {
    let (first, last) = store.add_test_keys(n);
    (first..=last).collect()
}

/// Claims the first `n` available keys of product "p" as held.
fn claim(tx: &mut crate::store::Tx, n: usize) -> crate::error::Result<Option<Vec<u64>>> {
    use crate::domain::model::KeyState;
    let Some(ids) = tx.available_keys("p", n)? else {
        return Ok(None);
    };
    for &id in &ids {
        let held = KeyState::Held {
            order_no: format!("o{id}"),
        };
        tx.swap_key_state(id, &KeyState::Available, held)?;
    }
    Ok(Some(ids))
}

fn claim_one(store: &Store) -> Option<u64> {
    store
        .write_blocking(|tx| claim(tx, 1))
        .unwrap()
        .map(|ids| ids[0])
}

/// The search for available keys starts at a remembered floor; a key
/// that becomes available again below it, or whose claim is undone, is
/// still found first. Never a key skipped, never one claimed twice.
#[test]
fn keys_released_or_unclaimed_below_the_search_floor_are_found_first() {
    use crate::domain::model::KeyState;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = one_job_per_batch(dir.path());
    let ids: [u64; 6] = add_keys(&store, 6).try_into().unwrap();
    let k = move |i: usize| ids[i - 1];
    assert_eq!(claim_one(&store), Some(k(1)));
    assert_eq!(claim_one(&store), Some(k(2)));
    // Key 1 comes back (an unpaid order expired).
    store
        .write_blocking(move |tx| {
            let held = KeyState::Held {
                order_no: format!("o{}", k(1)),
            };
            tx.swap_key_state(k(1), &held, KeyState::Available)
        })
        .unwrap();
    assert_eq!(
        claim_one(&store),
        Some(k(1)),
        "a released key below the floor"
    );
    // A command that claims and searches again, then fails: undone whole.
    let failed = store.write_blocking(move |tx| {
        assert_eq!(claim(tx, 2)?, Some(vec![k(3), k(4)]));
        assert_eq!(claim(tx, 1)?, Some(vec![k(5)]));
        Err::<(), _>(crate::error::Error::invalid("x", "fails on purpose"))
    });
    assert!(failed.is_err());
    assert_eq!(claim_one(&store), Some(k(3)), "a rolled-back claim");
    // Two batches claim 4 and then 5, and both fail (the second was
    // computed on the first): the next claim finds 4 again.
    fail_next_batch_once_one_more_is_computed(&store);
    let mut replies = Vec::new();
    for _ in 0..2 {
        let (t, r) = mpsc::channel();
        store
            .send(Store::job(
                |tx| claim(tx, 1),
                move |res| t.send(res).unwrap(),
            ))
            .unwrap();
        replies.push(r);
    }
    for r in replies {
        assert!(r.recv().unwrap().is_err(), "both batches fail");
    }
    assert_eq!(claim_one(&store), Some(k(4)), "claims of failed batches");
    assert_eq!(claim_one(&store), Some(k(5)));
    assert_eq!(claim_one(&store), Some(k(6)));
    assert_eq!(claim_one(&store), None, "sold out");
    // New keys after a sold-out search are found.
    let more = add_keys(&store, 1);
    assert_eq!(claim_one(&store), Some(more[0]));
    store.close();
}
