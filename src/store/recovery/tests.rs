//! Recovery's stories: a clean stop is trusted, a crash resumes sled or
//! rebuilds it, and whatever does not add up is refused or rebuilt.

use super::*;
use crate::store::datadir::write_clean_marker;
use crate::store::journal::Write;
use crate::store::tree::ALL;
use std::collections::BTreeMap;

fn contents(trees: &Trees) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    let mut all = Vec::new();
    for t in ALL {
        for item in trees.get(t).iter() {
            let (k, v) = item.unwrap();
            all.push((t as u8, k.to_vec(), v.to_vec()));
        }
    }
    all
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// One batch: order `i` placed (and its expiry scheduled), order `i-1`
/// delivered (its expiry row deleted), a key imported.
fn step(store: &super::super::Store, i: u64) {
    use crate::domain::model::Order;
    use crate::domain::order::OrderStatus;
    store
        .write_blocking(move |tx| {
            let o =
                Order::pending_for_test(&format!("O{i}"), "b@x.com", "10.0.0.1", 1000 + i as i64);
            tx.insert_order(&o);
            tx.schedule_expiry(&o);
            if let Some(mut prev) = tx.order(&format!("O{}", i.wrapping_sub(1)))? {
                tx.unschedule_expiry(&prev);
                prev.status = OrderStatus::Delivered;
                tx.put_order(&prev);
            }
            tx.insert_available_keys("p", vec![(format!("k{i}").into_bytes(), [i as u8; 16])]);
            Ok(())
        })
        .unwrap();
}

/// After an unclean stop sled is resumed from its last flush: whether it
/// kept every row written after the flush or none of them, replaying the
/// journal after the flushed batch gives exactly the state a rebuild
/// gives. sled files that are not the ones flushed (a copy of the data
/// directory), and a marker the journal does not reach, are rebuilt.
#[test]
fn an_unclean_stop_resumes_sled_from_its_last_flush_to_the_journal_state() {
    use super::super::{Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::for_test(dir.path());
    let store = Store::open(&opts).unwrap();
    for i in 0..20 {
        step(&store, i);
    }
    // What the committer's periodic sync does, and sled's files as the
    // flush left them.
    store.trees().unwrap().db.flush().unwrap();
    let synced = store
        .stats()
        .applied_seq
        .load(std::sync::atomic::Ordering::SeqCst);
    let at_flush = tempfile::tempdir().unwrap();
    copy_dir(&sled_dir(dir.path()), at_flush.path());
    for i in 20..40 {
        step(&store, i);
    }
    let end = store
        .stats()
        .applied_seq
        .load(std::sync::atomic::Ordering::SeqCst);
    let want = contents(&store.trees().unwrap());
    assert!(end > synced);
    store.close();
    drop(store);
    let crash = |marker: u64| {
        fs::remove_file(dir.path().join("CLEAN")).unwrap();
        write_synced_marker(dir.path(), marker).unwrap();
    };
    let reopened = |expect: Recovery| {
        let store = Store::open(&opts).unwrap();
        assert_eq!(store.recovery(), expect);
        assert_eq!(contents(&store.trees().unwrap()), want, "{expect:?}");
        store.close();
    };
    let resumed = Recovery::Resumed {
        synced,
        replayed: end - synced,
    };
    // sled kept everything written after the flush.
    crash(synced);
    reopened(resumed);
    // sled kept a part of it: the last batch's applied seq, but not
    // orders and keys written after the flush.
    {
        let trees = Trees::open(&sled_dir(dir.path()), 1 << 20).unwrap();
        for no in ["O25", "O38", "O39"] {
            trees.get(Tree::Orders).remove(no).unwrap();
        }
        let last_block = trees.get(Tree::KeyBlocks).last().unwrap().unwrap().0;
        trees.get(Tree::KeyBlocks).remove(last_block).unwrap();
        trees.db.flush().unwrap();
    }
    crash(synced);
    reopened(resumed);
    // sled kept nothing written after the flush.
    fs::remove_dir_all(sled_dir(dir.path())).unwrap();
    copy_dir(at_flush.path(), &sled_dir(dir.path()));
    crash(synced);
    reopened(resumed);
    // A marker ahead of what sled holds (sled lost flushed batches).
    fs::remove_dir_all(sled_dir(dir.path())).unwrap();
    copy_dir(at_flush.path(), &sled_dir(dir.path()));
    crash(synced + 5);
    reopened(Recovery::Rebuilt);
    // A marker past the journal's end: the journal lost batches sled
    // was flushed after. Refused, not rebuilt from what is left.
    crash(end + 5);
    let refused = Store::open(&opts).err().expect("refused");
    assert!(
        refused.0.contains("missing from the journal"),
        "{}",
        refused.0
    );
    write_synced_marker(dir.path(), end).unwrap();
    reopened(Recovery::Resumed {
        synced: end,
        replayed: 0,
    });
    // A copy of the data directory: its sled files are not the ones the
    // marker was written for.
    crash(synced);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let copy_opts = StoreOptions::for_test(copy.path());
    let store = Store::open(&copy_opts).unwrap();
    assert_eq!(store.recovery(), Recovery::Rebuilt);
    assert_eq!(contents(&store.trees().unwrap()), want);
    store.close();
}

/// Counters stored before they counted outbox events still open: the
/// counts are taken from the outbox.
#[test]
fn counters_from_before_the_outbox_counts_open_with_counts_from_the_outbox() {
    use crate::domain::model::{DeliveryState, EventKind, OutboxEvent};
    #[derive(serde::Serialize)]
    struct Before {
        next_key_id: u64,
        next_order_seq: u64,
        next_outbox_seq: u64,
        orders_by_status: [u64; 6],
    }
    let dir = tempfile::tempdir().unwrap();
    let trees = Trees::open(dir.path(), 1 << 20).unwrap();
    let before = Before {
        next_key_id: 65,
        next_order_seq: 3,
        next_outbox_seq: 4,
        orders_by_status: [1, 0, 1, 0, 0, 0],
    };
    let event = |seq: u64, state: DeliveryState| OutboxEvent {
        id: format!("evt_{seq}"),
        seq,
        order_no: "A".into(),
        kind: EventKind::Paid,
        created_at_ms: 0,
        state,
        attempts: 0,
        next_attempt_ms: 0,
        retry_from_ms: 0,
        last_error: None,
    };
    let group = vec![
        event(1, DeliveryState::Dead),
        event(2, DeliveryState::Pending),
        event(3, DeliveryState::Delivered),
    ];
    let meta = trees.get(Tree::Meta);
    meta.insert(tree::META_COUNTERS, crate::store::codec::encode(&before))
        .unwrap();
    trees
        .get(Tree::Outbox)
        .insert(tree::u64_key(1), crate::store::codec::encode(&group))
        .unwrap();
    let (_, c) = read_meta(&trees).unwrap();
    assert_eq!((c.next_key_id, c.next_outbox_seq), (65, 4));
    assert_eq!(c.orders_by_status, [1, 0, 1, 0, 0, 0]);
    assert_eq!((c.outbox_pending, c.outbox_dead), (1, 1));
    // Counters of neither shape are an error, not zeros.
    meta.insert(tree::META_COUNTERS, vec![1, 2, 3]).unwrap();
    assert!(read_meta(&trees).is_err());
}

/// A data directory of the layout before key blocks is refused with a
/// message, on a clean start (its sled has the old trees) and on a
/// rebuild (its journal has the old available-key rows).
#[test]
fn a_data_directory_of_the_one_row_per_key_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path(), 1 << 20).unwrap();
    write_clean_marker(dir.path(), opened.seq).unwrap();
    opened.trees.get(Tree::Meta).flush().unwrap();
    opened.trees.db.open_tree("avail").unwrap();
    opened.trees.db.flush().unwrap();
    drop(opened);
    let refused = open(dir.path(), 1 << 20).err().expect("refused");
    assert!(refused.0.contains("one per row"), "{}", refused.0);

    let dir = tempfile::tempdir().unwrap();
    let jdir = journal_dir(dir.path());
    std::fs::create_dir_all(&jdir).unwrap();
    let mut j = journal::Journal::open(&jdir, 1).unwrap();
    j.append(&journal::Batch {
        seq: 1,
        writes: vec![Write {
            tree: Tree::Avail as u8,
            key: tree::scoped("p", &tree::u64_key(1)),
            value: Some(Vec::new()),
        }],
    })
    .unwrap();
    drop(j);
    let refused = open(dir.path(), 1 << 20).err().expect("refused");
    assert!(refused.0.contains("one per row"), "{}", refused.0);
}

/// Replaying in windows (last write per row, trees in parallel) ends
/// where replaying write by write ends, across window boundaries, with
/// rows overwritten and deleted and re-created in later batches.
#[test]
fn windowed_replay_ends_where_write_by_write_replay_ends() {
    let mut batches = Vec::new();
    for b in 0u32..400 {
        let mut writes = Vec::new();
        for i in 0..12u32 {
            let row = (b * 7 + i * 13) % 97;
            let tree = [Tree::Keys, Tree::Orders, Tree::Expiry, Tree::Idem][(i % 4) as usize];
            let value = if (b + i) % 5 == 0 {
                None
            } else {
                Some(format!("{b}-{i}").into_bytes())
            };
            writes.push(Write {
                tree: tree as u8,
                key: row.to_be_bytes().to_vec(),
                value,
            });
        }
        // One batch big enough for the two-thread copy.
        if b == 200 {
            for i in 0..3000u32 {
                let tree = if i < 2000 {
                    Tree::Avail
                } else {
                    Tree::Attempts
                };
                writes.push(Write {
                    tree: tree as u8,
                    key: i.to_be_bytes().to_vec(),
                    value: Some(vec![1]),
                });
            }
        }
        writes.sort_by(|a, b| (a.tree, &a.key).cmp(&(b.tree, &b.key)));
        writes.dedup_by(|a, b| a.tree == b.tree && a.key == b.key);
        batches.push(writes);
    }
    let dir = tempfile::tempdir().unwrap();
    let one_by_one = Trees::open(&dir.path().join("a"), 1 << 20).unwrap();
    for w in &batches {
        crate::store::apply::apply_writes(&one_by_one, w).unwrap();
    }
    for limit in [1, 2_000, 1 << 30] {
        let windowed = Trees::open(&dir.path().join(format!("w{limit}")), 1 << 20).unwrap();
        let mut applier = Applier {
            trees: &windowed,
            window: BTreeMap::new(),
            window_bytes: 0,
            window_limit: limit,
        };
        for w in &batches {
            applier.apply(w.clone()).unwrap();
        }
        applier.drain().unwrap();
        assert_eq!(contents(&windowed), contents(&one_by_one), "window {limit}");
    }
    assert!(!contents(&one_by_one).is_empty());
}
