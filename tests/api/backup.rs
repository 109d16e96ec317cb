//! Backups merchants can trust: the backup API and CLI while serving,
//! restore, and — because merchants copy the data directory — `cp -a` of a
//! live data directory under write load, twenty times.

use crate::helpers::*;
use faka::domain::order::OrderStatus;
use faka::store::{Store, StoreOptions};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Opens a copied or restored data dir in-process and checks it.
fn open_and_check(data: &Path) -> Store {
    let store = Store::open(&StoreOptions::new(data)).expect("the copy opens");
    let report = faka::ops::check::run(&store).unwrap();
    assert!(report.ok(), "{report}");
    store
}

#[test]
fn the_backup_api_copies_a_consistent_store_that_restores_and_serves() {
    let app = spawn();
    app.product_with_keys("p", 100, 5);
    let o = app.order_ok("p", 2, "hmac");
    let no = o["order_no"].as_str().unwrap().to_string();
    assert_eq!(app.hmac_notify(&no, "T-1", 200).status(), 200);
    let r = app.admin_post("/api/v1/admin/backup", json!({}));
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    let path = Path::new(v["path"].as_str().unwrap()).to_path_buf();
    assert!(v["bytes"].as_u64().unwrap() > 0);
    assert!(path.join("MANIFEST.json").exists());
    assert_eq!(
        error_code(app.post("/api/v1/admin/backup", json!({}))).0,
        401
    );

    let restored = app.dir.path().join("restored");
    let out = faka_command(Path::new("/nonexistent/none.toml"), &["restore"])
        .arg(&path)
        .arg("--data-dir")
        .arg(&restored)
        .env("FAKA_STORAGE_KEY_FILE", app.dir.path().join("faka.key"))
        .output()
        .unwrap();
    // An explicit missing config is an error that says so.
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.toml"));

    faka::ops::backup::restore(&path, &restored).unwrap();
    let store = open_and_check(&restored);
    let order = store.order(&no).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Delivered);
    store.close();

    // A tampered backup is refused.
    let log = std::fs::read_dir(path.join("journal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&log).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&log, bytes).unwrap();
    let e = faka::ops::backup::restore(&path, &app.dir.path().join("again")).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
}

#[test]
fn the_backup_command_works_while_the_shop_serves() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), "[log]\nformat = \"json\"\n"),
    )
    .unwrap();
    let mut server = start_binary(&config);
    seed(
        &server.base,
        json!({"id": "p", "name": "P", "price": 100}),
        &[],
    );
    let out = dir.path().join("bk");
    let run = faka_cli_ok(&config, &["backup", "--out", out.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("faka.key"),
        "reminds to keep the key"
    );
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let restored = dir.path().join("restored");
    let restore = || {
        let (out, to) = (out.to_str().unwrap(), restored.to_str().unwrap());
        faka_cli(&config, &["restore", out, "--data-dir", to])
    };
    let run = restore();
    assert!(run.status.success(), "{}", cli_text(&run));
    let store = open_and_check(&restored);
    assert!(store.product("p").unwrap().is_some());
    store.close();
    drop(store);
    let listing = |dir: &std::path::Path| {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let before = listing(&restored);
    let into_existing = restore();
    assert!(
        !into_existing.status.success(),
        "restore never overwrites a data dir"
    );
    assert!(
        listing(&restored) == before,
        "the existing data dir is left exactly as it was"
    );
    open_and_check(&restored).close();
}

#[derive(Clone)]
struct Paid {
    order_no: String,
}

fn buyer(base: String, stop: Arc<AtomicBool>, paid: Arc<Mutex<Vec<Paid>>>) {
    let c = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let Ok(r) = c
            .post(format!("{base}/api/v1/orders"))
            .json(&json!({"product_id": "copy", "quantity": 1, "email": "c@example.com", "gateway": "hmac"}))
            .send()
        else {
            return;
        };
        if r.status() != 201 {
            continue;
        }
        let o: Value = r.json().unwrap();
        let no = o["order_no"].as_str().unwrap().to_string();
        if pay_hmac(&c, &base, &no, &format!("T{i}-{no}"), 100) == Some(200) {
            paid.lock().unwrap().push(Paid { order_no: no });
        }
    }
}

#[test]
fn twenty_live_copies_of_the_data_dir_restore_with_every_acknowledged_payment() {
    let dir = tempfile::tempdir().unwrap();
    // Small snapshots, so copies also race snapshot rotation and pruning.
    let config = write_config_with(dir.path(), |text| {
        text.replace("[storage]\n", "[storage]\nsnapshot_mb = 2\n")
    });
    let mut server = start_binary(&config);
    let keys: Vec<String> = (0..30_000).map(|i| format!("COPY-{i:06}")).collect();
    seed(
        &server.base,
        json!({"id": "copy", "name": "Copy", "price": 100}),
        &keys,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let paid: Arc<Mutex<Vec<Paid>>> = Arc::default();
    let buyers: Vec<_> = (0..6)
        .map(|_| {
            let (b, s, p) = (server.base.clone(), stop.clone(), paid.clone());
            std::thread::spawn(move || buyer(b, s, p))
        })
        .collect();
    let data = dir.path().join("data");
    let mut copies = Vec::new();
    for i in 0..20 {
        // Wait for fresh payments so every copy races real writes.
        let floor = paid.lock().unwrap().len() + 5;
        eventually(Duration::from_secs(30), || {
            (paid.lock().unwrap().len() >= floor).then_some(())
        });
        let acked_before = paid.lock().unwrap().len();
        let dest = dir.path().join(format!("copy-{i:02}"));
        // cp may complain about files that vanish mid-copy (snapshot rotation); that is the point.
        let _ = Command::new("cp")
            .arg("-a")
            .arg(&data)
            .arg(&dest)
            .output()
            .unwrap();
        copies.push((dest, acked_before));
    }
    stop.store(true, Ordering::Relaxed);
    for b in buyers {
        b.join().unwrap();
    }
    server.child.kill().unwrap();
    let _ = server.child.wait();

    let paid = paid.lock().unwrap().clone();
    for (dest, acked_before) in &copies {
        let store = open_and_check(dest);
        for p in &paid[..*acked_before] {
            let o = store.order(&p.order_no).unwrap();
            assert_eq!(
                o.map(|o| o.status),
                Some(OrderStatus::Delivered),
                "{}: payment of {} acknowledged before the copy is missing",
                dest.display(),
                p.order_no
            );
        }
        store.close();
    }
    assert!(
        paid.len() >= 100,
        "the load produced payments: {}",
        paid.len()
    );
    let snaps = std::fs::read_dir(data.join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!(
        "{} payments, {} copies restored, {} snapshot files at the end",
        paid.len(),
        copies.len(),
        snaps
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn product(i: u32) -> faka::shop::NewProduct {
    faka::shop::NewProduct {
        id: format!("p{i}"),
        name: "P".into(),
        description: String::new(),
        price: 1,
        min_quantity: 1,
        max_quantity: 1,
        active: true,
        presentation: Default::default(),
    }
}

fn newest_snapshot(data: &Path) -> u64 {
    std::fs::read_dir(data.join("snapshots"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".snap")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Writes products until a snapshot lands on the newest batch (a snapshot
/// starts only after a commit, and only when none is running). Returns the
/// next free product number.
fn write_until_snapshot(store: &Store, data: &Path, mut next: u32) -> u32 {
    loop {
        let i = next;
        next += 1;
        store
            .write_blocking(move |tx| faka::shop::create_product(tx, product(i)))
            .unwrap();
        let seq = store
            .stats()
            .applied_seq
            .load(std::sync::atomic::Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if newest_snapshot(data) == seq {
                return next;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_copy_whose_journal_is_older_than_its_snapshot_still_restores_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut opts = StoreOptions::new(&data);
    opts.snapshot_bytes = 1; // a snapshot after every batch
    let store = Store::open(&opts).unwrap();
    let mut next = 0;
    for _ in 0..3 {
        next = write_until_snapshot(&store, &data, next);
    }
    let before_copy = next;
    // cp copies journal/ first ...
    let copy = dir.path().join("copy");
    copy_dir(&data.join("journal"), &copy.join("journal"));
    // ... a new snapshot completes meanwhile ...
    write_until_snapshot(&store, &data, next);
    // ... and only then does cp reach snapshots/.
    copy_dir(&data.join("snapshots"), &copy.join("snapshots"));
    store.close();
    let restored = open_and_check(&copy);
    for i in 0..before_copy {
        assert!(
            restored.product(&format!("p{i}")).unwrap().is_some(),
            "p{i} was in the copied journal"
        );
    }
    assert!(
        restored
            .product(&format!("p{before_copy}"))
            .unwrap()
            .is_none(),
        "later writes are not"
    );
    assert!(restored.was_rebuilt());
    restored
        .write_blocking(|tx| faka::shop::create_product(tx, product(99)))
        .unwrap();
    restored.close();
    drop(restored);
    // A crash-style reopen (no clean marker) replays without a gap.
    std::fs::remove_file(copy.join("CLEAN")).unwrap();
    let again = open_and_check(&copy);
    assert!(again.product("p99").unwrap().is_some());
    again.close();
}

/// A copy that left `journal/` out has snapshots and nothing to replay
/// after them: it is refused with the reason, not opened as an empty shop.
#[test]
fn a_copy_without_its_journal_is_refused_not_served_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut opts = StoreOptions::new(&data);
    opts.snapshot_bytes = 1; // a snapshot after every batch
    let store = Store::open(&opts).unwrap();
    write_until_snapshot(&store, &data, 0);
    store.close();
    drop(store);
    let copy = dir.path().join("copy");
    copy_dir(&data.join("snapshots"), &copy.join("snapshots"));
    let refused = Store::open(&StoreOptions::new(&copy))
        .err()
        .expect("refused");
    let text = refused.to_string();
    assert!(text.contains("no journal"), "{text}");
    assert_eq!(
        std::fs::read_dir(copy.join("snapshots")).unwrap().count(),
        1,
        "the snapshot is left as it was"
    );
    // With the journal copied too, it opens with what it held.
    copy_dir(&data.join("journal"), &copy.join("journal"));
    let restored = open_and_check(&copy);
    assert!(restored.product("p0").unwrap().is_some());
    restored.close();
}
