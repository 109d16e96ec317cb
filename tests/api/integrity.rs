//! Damaged or misused data is refused, never silently rolled back: a
//! damaged journal, a second process on the same data directory, a wrong
//! master key. Every test runs the real binary on a temp directory and
//! proves a refusal changed no byte; `faka check` never changes one either;
//! `faka repair` is the only way past damage and says what it drops.

use crate::helpers::*;
use rand::Rng;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A shop with `n` paid and delivered orders, stopped.
struct Shop {
    dir: tempfile::TempDir,
    config: PathBuf,
    /// (order_no, token, delivered key)
    orders: Vec<(String, String, String)>,
}

enum Stop {
    Clean,
    /// kill -9, once sled's periodic flush marker covers every order.
    Kill,
}

/// `storage` is added to the config's `[storage]` section.
fn shop_with_paid_orders(n: usize, storage: &str, stop: Stop) -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), |t| {
        t.replacen("[storage]\n", &format!("[storage]\n{storage}\n"), 1)
    });
    let server = start_binary(&config);
    let keys: Vec<String> = (0..n)
        .map(|i| format!("KEY-{i:04}-{}", "X".repeat(8)))
        .collect();
    seed(
        &server.base,
        json!({"id": "p", "name": "P", "price": 100}),
        &keys,
    );
    let c = Client::new();
    let mut orders = Vec::new();
    for i in 0..n {
        let o: Value = c
            .post(format!("{}/api/v1/orders", server.base))
            .json(&json!({"product_id": "p", "quantity": 1, "email": "b@example.com", "gateway": "hmac"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let no = o["order_no"].as_str().unwrap().to_string();
        assert_eq!(
            pay_hmac(&c, &server.base, &no, &format!("T{i}"), 100),
            Some(200)
        );
        let token = o["token"].as_str().unwrap().to_string();
        let key = delivered_key(&c, &server.base, &no, &token).expect("delivered");
        orders.push((no, token, key));
    }
    match stop {
        Stop::Clean => server.stop_gracefully(),
        Stop::Kill => {
            wait_for_flush_marker(&server, dir.path());
            kill_9(server);
        }
    }
    Shop {
        dir,
        config,
        orders,
    }
}

fn delivered_key(c: &Client, base: &str, no: &str, token: &str) -> Option<String> {
    let v: Value = c
        .get(format!("{base}/api/v1/orders/{no}?token={token}"))
        .send()
        .ok()?
        .json()
        .ok()?;
    (v["status"] == "delivered").then(|| v["keys"][0].as_str().unwrap_or("").to_string())
}

fn kill_9(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Waits until the shop's `SLED_SYNCED` marker names its last durable
/// batch: sled was flushed after every order so far. The shop is idle
/// now; it still moves the marker up to its last batch within seconds.
fn wait_for_flush_marker(server: &Server, dir: &Path) {
    let metrics = Client::new()
        .get(format!("{}/metrics", server.base))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let durable: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("faka_writer_applied_batch "))
        .and_then(|v| v.trim().parse().ok())
        .expect("faka_writer_applied_batch");
    let marker = dir.join("data/SLED_SYNCED");
    eventually(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(100));
        let text = std::fs::read_to_string(&marker).ok()?;
        let synced: u64 = text.split_whitespace().next()?.parse().ok()?;
        (synced >= durable).then_some(())
    });
}

/// Every file under `dir` with its length and SHA-256.
fn hash_dir(dir: &Path) -> BTreeMap<PathBuf, (u64, String)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(hash_dir(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.insert(
                path,
                (bytes.len() as u64, hex::encode(Sha256::digest(&bytes))),
            );
        }
    }
    out
}

/// `faka serve` on `config`, expected to refuse: its exit and output. A
/// serve that starts serving instead fails the test.
fn serve_refused(config: &Path) -> String {
    let mut child = faka_command(config, &["serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("faka served a store it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "refused with a non-zero exit");
    cli_text(&out)
}

fn newest_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("data/journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    segs
}

/// Damages `seg` with `damage`, proves that serve refuses and check
/// reports it without changing a byte, then puts the segment back.
fn assert_refused(shop: &Shop, seg: &Path, what: &str, damage: impl FnOnce(&mut Vec<u8>)) {
    let original = std::fs::read(seg).unwrap();
    let mut bytes = original.clone();
    damage(&mut bytes);
    std::fs::write(seg, &bytes).unwrap();
    let before = hash_dir(shop.dir.path());
    let refused = serve_refused(&shop.config);
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        refused.contains("refusing to open the store"),
        "{what}: {refused}"
    );
    assert!(refused.contains(name), "{what}: names the file: {refused}");
    assert_eq!(
        hash_dir(shop.dir.path()),
        before,
        "{what}: serve changed nothing"
    );
    let checked = faka_cli(&shop.config, &["check"]);
    assert!(!checked.status.success(), "{what}: check fails");
    assert!(
        cli_text(&checked).contains(name),
        "{what}: {}",
        cli_text(&checked)
    );
    assert_eq!(
        hash_dir(shop.dir.path()),
        before,
        "{what}: check changed nothing"
    );
    std::fs::write(seg, &original).unwrap();
}

// Every damage takes the segment as a Vec: cutting it needs one.
#[allow(clippy::ptr_arg)]
fn flip_middle(b: &mut Vec<u8>) {
    let at = b.len() / 2;
    b[at] ^= 0x10;
}

fn truncate_half(b: &mut Vec<u8>) {
    b.truncate(b.len() / 2);
}

#[allow(clippy::ptr_arg)]
fn zeros_in_middle(b: &mut Vec<u8>) {
    let from = b.len() / 2 - 2048;
    b[from..from + 4096].fill(0);
}

/// Serves the shop and asserts every order is still delivered with its key.
fn assert_all_delivered(shop: &Shop) {
    let server = start_binary(&shop.config);
    let c = Client::new();
    for (no, token, key) in &shop.orders {
        assert_eq!(
            delivered_key(&c, &server.base, no, token).as_deref(),
            Some(key.as_str()),
            "order {no}"
        );
    }
    server.stop_gracefully();
}

#[test]
fn a_damaged_newest_segment_is_refused_after_a_clean_stop_or_a_kill_9() {
    for stop in [Stop::Clean, Stop::Kill] {
        let shop = shop_with_paid_orders(40, "", stop);
        let seg = newest_segment(shop.dir.path());
        assert_refused(&shop, &seg, "a flipped bit", flip_middle);
        assert_refused(&shop, &seg, "cut to half", truncate_half);
        assert_refused(&shop, &seg, "4 KiB of zeros", zeros_in_middle);
        // Put back, the shop serves every order as before.
        assert_all_delivered(&shop);
        assert_check_passes(&shop.config);
    }
}

/// With segments rotated by snapshots, a bit flipped at 20 random offsets
/// of the newest and of an older segment is refused every time.
#[test]
fn a_bit_flipped_anywhere_in_the_journal_is_refused() {
    let shop = shop_with_paid_orders(60, "snapshot_mb = 0", Stop::Clean);
    let segs = segments(shop.dir.path());
    assert!(segs.len() >= 2, "snapshots rotated the journal: {segs:?}");
    let mut rng = rand::thread_rng();
    for seg in [segs[0].clone(), segs[segs.len() - 1].clone()] {
        let len = std::fs::metadata(&seg).unwrap().len() as usize;
        if len == 0 {
            continue;
        }
        for _ in 0..20 {
            let at = rng.gen_range(0..len);
            let bit = 1u8 << rng.gen_range(0..8);
            assert_refused(&shop, &seg, &format!("bit {bit} at {at}"), |b| b[at] ^= bit);
        }
    }
    assert_all_delivered(&shop);
}

/// The end of an interrupted write (half a record after the last batch,
/// never acknowledged) is set aside at the next start, not served as
/// damage; every acknowledged order stays.
#[test]
fn an_interrupted_last_write_is_set_aside_and_nothing_acknowledged_is_lost() {
    let shop = shop_with_paid_orders(10, "", Stop::Clean);
    let seg = newest_segment(shop.dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    let half_record = [200u8, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9];
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &half_record).unwrap();
    drop(f);
    let before = hash_dir(shop.dir.path());
    let checked = assert_check_passes(&shop.config);
    assert!(
        cli_text(&checked).contains("interrupted write"),
        "{}",
        cli_text(&checked)
    );
    assert_eq!(hash_dir(shop.dir.path()), before, "check changed nothing");
    assert_all_delivered(&shop);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    let mut side = seg.clone().into_os_string();
    side.push(format!(".torn-{len}"));
    assert_eq!(
        std::fs::read(side).unwrap(),
        half_record,
        "the torn bytes are kept"
    );
}

#[test]
fn faka_check_changes_no_byte_of_a_healthy_store() {
    for stop in [Stop::Clean, Stop::Kill] {
        let shop = shop_with_paid_orders(5, "", stop);
        let before = hash_dir(shop.dir.path());
        let checked = assert_check_passes(&shop.config);
        assert!(
            cli_text(&checked).contains("0 violation(s)"),
            "{}",
            cli_text(&checked)
        );
        assert_eq!(hash_dir(shop.dir.path()), before);
    }
}

/// `rm data/LOCK` is no way in: the lock is on the directory itself.
#[test]
fn a_second_faka_on_the_same_data_directory_is_refused_even_after_rm_lock() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), |t| t);
    let server = start_binary(&config);
    let _ = std::fs::remove_file(dir.path().join("data/LOCK"));
    let refused = serve_refused(&config);
    assert!(
        refused.contains("in use by another faka process"),
        "{refused}"
    );
    let checked = faka_cli(&config, &["check"]);
    assert!(!checked.status.success());
    assert!(
        cli_text(&checked).contains("in use by another faka process"),
        "{}",
        cli_text(&checked)
    );
    let repaired = faka_cli(&config, &["repair"]);
    assert!(!repaired.status.success());
    assert!(
        cli_text(&repaired).contains("in use by another faka process"),
        "{}",
        cli_text(&repaired)
    );
    server.stop_gracefully();
}

/// A well-formed master key that is not the shop's is refused at start;
/// `faka check` says so; the right key serves again.
#[test]
fn a_wrong_master_key_is_refused() {
    let shop = shop_with_paid_orders(3, "", Stop::Clean);
    let key_file = shop.dir.path().join("faka.key");
    let right = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, format!("{}\n", hex::encode([7u8; 32]))).unwrap();
    let journal = shop.dir.path().join("data/journal");
    let before = hash_dir(&journal);
    let refused = serve_refused(&shop.config);
    assert!(refused.contains("is not the key this shop"), "{refused}");
    assert!(
        !refused.contains(&hex::encode([7u8; 32])),
        "no key text in messages"
    );
    assert_eq!(hash_dir(&journal), before, "nothing written");
    let checked = faka_cli(&shop.config, &["check"]);
    assert!(!checked.status.success());
    assert!(
        cli_text(&checked).contains("NOT this shop's"),
        "{}",
        cli_text(&checked)
    );
    std::fs::write(&key_file, right).unwrap();
    assert_all_delivered(&shop);
}

/// `faka repair` is the way past damage: it keeps the journal up to the
/// bad bytes, renames what it sets aside, names the batches and orders it
/// drops, and the shop serves what was kept.
#[test]
fn repair_sets_damage_aside_and_reports_the_orders_it_drops() {
    let shop = shop_with_paid_orders(40, "", Stop::Clean);
    let seg = newest_segment(shop.dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    zeros_in_middle(&mut bytes);
    std::fs::write(&seg, &bytes).unwrap();
    serve_refused(&shop.config);
    let repaired = faka_cli(&shop.config, &["repair"]);
    let report = cli_text(&repaired);
    assert!(repaired.status.success(), "{report}");
    assert!(report.contains("DROPPED batches"), "{report}");
    let dropped: Vec<&(String, String, String)> = shop
        .orders
        .iter()
        .filter(|(no, _, _)| report.contains(no.as_str()))
        .collect();
    assert!(!dropped.is_empty() && dropped.len() < 40, "{report}");
    let mut damaged = seg.file_name().unwrap().to_os_string();
    damaged.push(".damaged-");
    let set_aside: Vec<_> = std::fs::read_dir(seg.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(&*damaged.to_string_lossy()))
        .collect();
    assert_eq!(set_aside.len(), 1, "the damaged segment is kept, renamed");
    let server = start_binary(&shop.config);
    let c = Client::new();
    for (no, token, key) in &shop.orders {
        let got = delivered_key(&c, &server.base, no, token);
        if report.contains(no.as_str()) {
            assert_ne!(
                got.as_deref(),
                Some(key.as_str()),
                "{no} was reported dropped"
            );
        } else {
            assert_eq!(got.as_deref(), Some(key.as_str()), "{no} was kept");
        }
    }
    server.stop_gracefully();
    assert_check_passes(&shop.config);
}
