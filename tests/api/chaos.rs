//! The chaos harness: the real binary under a mixed load — orders, payments
//! (with duplicates), late payments, imports, expiries, manual payments and
//! refunds — killed with SIGKILL at random moments and restarted on the same
//! data dir. After every kill, `faka check` must pass on the data dir, and
//! after every restart the API must show every acknowledged payment applied,
//! no key owned twice, counts adding up, and an outbox event for every
//! change. `CHAOS_CYCLES=50 cargo test --test api chaos -- --nocapture` is
//! the long mode; CI runs the short one (5 cycles). Also: a full disk.

use crate::helpers::*;
use rand::Rng;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Ledger {
    /// order no → token, for orders whose payment was acknowledged.
    paid: HashMap<String, String>,
    refunded: HashSet<String>,
    /// Keys whose import was acknowledged, and keys sent without an answer
    /// (the kill may have come after the commit, before the reply).
    imported: u64,
    maybe_imported: u64,
}

/// One actor: a random mix of everything a shop sees.
fn actor(base: String, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>, seed: u64) {
    let c = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut rng = rand::rngs::StdRng::from_seed_u64(seed);
    let mut unpaid: Vec<(String, String)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let roll: u32 = rng.gen_range(0..100);
        let ok = match roll {
            // Create an order, pay it (sometimes twice).
            0..=49 => {
                let Ok(r) = c
                    .post(format!("{base}/api/v1/orders"))
                    .json(&json!({"product_id": "chaos", "quantity": rng.gen_range(1..=2), "email": "c@example.com", "gateway": "hmac"}))
                    .send()
                else {
                    return;
                };
                if r.status() != 201 {
                    continue;
                }
                let Ok(o) = r.json::<Value>() else { return };
                let (no, token) = (
                    o["order_no"].as_str().unwrap().to_string(),
                    o["token"].as_str().unwrap().to_string(),
                );
                let amount = o["amount"].as_u64().unwrap();
                if rng.gen_bool(0.3) {
                    unpaid.push((no, token)); // left to expire, maybe paid late
                    true
                } else {
                    let mut acked = false;
                    for _ in 0..rng.gen_range(1..=2) {
                        match pay_hmac(&c, &base, &no, &format!("T-{no}"), amount) {
                            Some(200) => acked = true,
                            Some(_) => {}
                            None => break,
                        }
                    }
                    if acked {
                        ledger.lock().unwrap().paid.insert(no, token);
                    }
                    acked
                }
            }
            // A late payment for an order left unpaid (maybe expired by now).
            50..=64 if !unpaid.is_empty() => {
                let (no, token) = unpaid.swap_remove(rng.gen_range(0..unpaid.len()));
                let Ok(v) = c
                    .get(format!("{base}/api/v1/orders/{no}?token={token}"))
                    .send()
                else {
                    return;
                };
                let Ok(v) = v.json::<Value>() else { return };
                let amount = v["amount"].as_u64().unwrap_or(0);
                let acked = pay_hmac(&c, &base, &no, &format!("LATE-{no}"), amount) == Some(200);
                if acked {
                    ledger.lock().unwrap().paid.insert(no, token);
                }
                acked
            }
            // The merchant pays one manually (补单).
            65..=74 if !unpaid.is_empty() => {
                let (no, token) = unpaid.swap_remove(rng.gen_range(0..unpaid.len()));
                let r = c
                    .post(format!("{base}/api/v1/admin/orders/{no}/pay"))
                    .bearer_auth(ADMIN)
                    .json(&json!({"note": "chaos"}))
                    .send();
                let acked = matches!(&r, Ok(r) if r.status() == 200);
                if acked {
                    ledger.lock().unwrap().paid.insert(no, token);
                }
                acked
            }
            // The merchant imports more keys.
            75..=84 => {
                let keys: Vec<String> = (0..50)
                    .map(|_| format!("CHAOS-{:016x}", rng.gen::<u64>()))
                    .collect();
                let r = c
                    .post(format!("{base}/api/v1/admin/products/chaos/keys"))
                    .bearer_auth(ADMIN)
                    .header("Content-Type", "text/plain")
                    .body(keys.join("\n"))
                    .send();
                match r {
                    Ok(r) if r.status() == 200 => {
                        let added = r
                            .json::<Value>()
                            .map(|v| v["added"].as_u64().unwrap_or(0))
                            .unwrap_or(0);
                        ledger.lock().unwrap().imported += added;
                        true
                    }
                    _ => {
                        ledger.lock().unwrap().maybe_imported += 50;
                        false
                    }
                }
            }
            // The merchant refunds a paid order.
            85..=89 => {
                let pick = ledger.lock().unwrap().paid.keys().next().cloned();
                let Some(no) = pick else { continue };
                let r = c
                    .post(format!("{base}/api/v1/admin/orders/{no}/refund"))
                    .bearer_auth(ADMIN)
                    .send();
                if matches!(&r, Ok(r) if r.status() == 200) {
                    ledger.lock().unwrap().refunded.insert(no);
                }
                true
            }
            _ => c
                .get(format!("{base}/api/v1/products/chaos"))
                .send()
                .is_ok(),
        };
        if !ok && stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

trait FromSeed {
    fn from_seed_u64(seed: u64) -> Self;
}

impl FromSeed for rand::rngs::StdRng {
    fn from_seed_u64(seed: u64) -> Self {
        <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed)
    }
}

fn all_pending_events(c: &Client, base: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cur) => format!("{base}/api/v1/admin/webhooks?limit=1000&cursor={cur}"),
            None => format!("{base}/api/v1/admin/webhooks?limit=1000"),
        };
        let v: Value = c
            .get(url)
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        for e in v["webhooks"].as_array().unwrap() {
            out.entry(e["order_no"].as_str().unwrap().to_string())
                .or_default()
                .push(e["type"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn verify(server: &Server, ledger: &Ledger) -> usize {
    let c = Client::new();
    let base = &server.base;
    let events = all_pending_events(&c, base);
    let mut keys = HashSet::new();
    for (no, token) in &ledger.paid {
        let v: Value = c
            .get(format!("{base}/api/v1/orders/{no}?token={token}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let status = v["status"].as_str().unwrap_or("?");
        assert!(
            ["delivered", "awaiting_stock", "refunded"].contains(&status),
            "acknowledged payment of {no} not applied: {status}"
        );
        if ledger.refunded.contains(no) {
            assert_eq!(status, "refunded", "{no}");
        }
        for k in v["keys"].as_array().into_iter().flatten() {
            assert!(
                keys.insert(k.as_str().unwrap().to_string()),
                "key {k} sold twice"
            );
        }
        let ev = events.get(no).cloned().unwrap_or_default();
        assert!(
            ev.contains(&"order.paid".to_string()),
            "order {no} lost its order.paid event: {ev:?}"
        );
        if status == "delivered" {
            assert!(ev.contains(&"order.delivered".to_string()), "{no}: {ev:?}");
        }
    }
    let k = &key_counts(&c, base);
    let total = k["available"].as_u64().unwrap()
        + k["held"].as_u64().unwrap()
        + k["sold"].as_u64().unwrap();
    assert!(
        (ledger.imported..=ledger.imported + ledger.maybe_imported).contains(&total),
        "available + held + sold = imported: {k}, acknowledged imports {}, unanswered {}",
        ledger.imported,
        ledger.maybe_imported
    );
    ledger.paid.len()
}

#[test]
fn chaos_kill_9_under_mixed_load_breaks_no_promise() {
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // Webhooks to an address nobody listens on: every event stays in the outbox to be counted.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = config_text(
        dir.path(),
        &format!("[webhooks]\nurl = \"http://{dead}/hook\"\nsecret = \"s\"\nretry_base_ms = 600000\n[log]\nformat = \"json\"\nlevel = \"warn,faka=info\"\n"),
    )
    .replace("hold_secs = 900", "hold_secs = 1");
    std::fs::write(&config, text).unwrap();
    let mut server = start_binary(&config);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let keys: Vec<String> = (0..3000).map(|i| format!("SEED-{i:05}")).collect();
    seed(
        &server.base,
        json!({"id": "chaos", "name": "Chaos", "price": 100}),
        &keys,
    );
    ledger.lock().unwrap().imported = 3000;
    let mut rng = rand::thread_rng();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let actors: Vec<_> = (0..6)
            .map(|i| {
                let (b, s, l) = (server.base.clone(), stop.clone(), ledger.clone());
                let seed = (cycle * 100 + i) as u64;
                std::thread::spawn(move || actor(b, s, l, seed))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
        server.child.kill().unwrap();
        let _ = server.child.wait();
        stop.store(true, Ordering::Relaxed);
        for a in actors {
            a.join().unwrap();
        }
        assert_check_passes(&config);
        server = start_binary(&config);
        let paid = verify(&server, &ledger.lock().unwrap());
        eprintln!(
            "chaos cycle {}/{cycles}: {paid} payments acknowledged, all applied",
            cycle + 1
        );
    }
    let l = ledger.lock().unwrap();
    eprintln!(
        "chaos done: {cycles} kills, {} payments acknowledged, {} refunds, {} keys imported, 0 violations",
        l.paid.len(),
        l.refunded.len(),
        l.imported
    );
    assert!(!l.paid.is_empty());
}
