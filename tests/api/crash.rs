//! Crash safety of the real binary: run `faka serve` under order + payment
//! load, kill -9 it at a random moment, restart it on the same data dir, and
//! check that every payment answered 200 ends delivered, no key is in two
//! orders, and the counts add up. Five cycles, then `faka check`.

use crate::helpers::*;
use rand::Rng;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn write_config(dir: &Path) -> std::path::PathBuf {
    write_config_with(dir, |text| text)
}

#[derive(Clone)]
struct Acked {
    order_no: String,
    token: String,
}

/// Buyers: create → pay (sometimes twice) until told to stop or the server dies.
fn load(base: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<Acked>>>) {
    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let created = client
            .post(format!("{base}/api/v1/orders"))
            .json(&json!({"product_id": "crash", "quantity": 1, "email": "c@example.com", "gateway": "hmac"}))
            .send();
        let Ok(r) = created else { return };
        if r.status() != 201 {
            continue;
        }
        let Ok(o) = r.json::<Value>() else { return };
        let no = o["order_no"].as_str().unwrap().to_string();
        for _ in 0..(1 + n % 2) {
            match pay_hmac(&client, &base, &no, &format!("T-{no}"), 100) {
                Some(200) => acked.lock().unwrap().push(Acked {
                    order_no: no.clone(),
                    token: o["token"].as_str().unwrap().to_string(),
                }),
                Some(_) => {}
                None => return,
            }
        }
    }
}

fn verify(base: &str, acked: &[Acked], imported: u64) {
    let client = Client::new();
    let mut all_keys = HashSet::new();
    let mut seen = HashSet::new();
    for a in acked {
        if !seen.insert(a.order_no.clone()) {
            continue;
        }
        let v: Value = client
            .get(format!(
                "{base}/api/v1/orders/{}?token={}",
                a.order_no, a.token
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            v["status"], "delivered",
            "acknowledged payment of {} was lost",
            a.order_no
        );
        for k in v["keys"].as_array().unwrap() {
            assert!(
                all_keys.insert(k.as_str().unwrap().to_string()),
                "key {k} is in two orders"
            );
        }
    }
    let k = &key_counts(&client, base);
    let total = k["available"].as_u64().unwrap()
        + k["held"].as_u64().unwrap()
        + k["sold"].as_u64().unwrap();
    assert_eq!(total, imported, "counts add up: {k}");
    assert!(k["sold"].as_u64().unwrap() >= seen.len() as u64);
}

#[test]
fn kill_9_under_load_never_loses_an_acknowledged_payment() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut server = start_binary(&config);
    let imported = 20_000u64;
    let keys: Vec<String> = (0..imported).map(|i| format!("CRASH-{i:06}")).collect();
    seed(
        &server.base,
        json!({"id": "crash", "name": "Crash", "price": 100}),
        &keys,
    );

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = rand::thread_rng();
    for cycle in 0..5 {
        let stop = Arc::new(AtomicBool::new(false));
        let buyers: Vec<_> = (0..8)
            .map(|_| {
                let (b, s, a) = (server.base.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || load(b, s, a))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1200)));
        server.child.kill().expect("kill -9");
        let _ = server.child.wait();
        stop.store(true, Ordering::Relaxed);
        for b in buyers {
            b.join().unwrap();
        }
        // The last restart skips the invariant check, as configured.
        let last = cycle == 4;
        if last {
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(
                &config,
                text.replace("[storage]\n", "[storage]\ncheck_after_crash = false\n"),
            )
            .unwrap();
        }
        server = start_binary(&config);
        // sled is resumed from its last flush (at the latest, the previous
        // start's), not rebuilt from the snapshot; then checked while the
        // shop already serves.
        assert_eq!(server.recovery, "resumed", "cycle {cycle}");
        if last {
            assert!(server.check_skipped, "cycle {cycle}: skipped as configured");
        } else {
            assert!(!server.check_skipped, "cycle {cycle}");
            eventually(Duration::from_secs(60), || {
                server.checked.load(Ordering::SeqCst).then_some(())
            });
        }
        let snapshot = acked.lock().unwrap().clone();
        eprintln!(
            "crash cycle {cycle}: {} payments acknowledged so far",
            snapshot.len()
        );
        verify(&server.base, &snapshot, imported);
    }
    let acked_total = acked.lock().unwrap().len();
    assert!(acked_total > 0, "the load produced acknowledged payments");
    // A clean stop, then the offline checker agrees.
    server.stop_gracefully();
    assert_check_passes(&config);
}

/// The caps on unpaid orders hold across a kill -9: the restarted shop
/// counts the unpaid orders again before it serves (not inside the first
/// buyer's order), and refuses an e-mail that is at its cap.
#[test]
fn the_hold_caps_are_counted_again_before_serving_after_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), |text| {
        text.replace("max_pending_per_email = 0", "max_pending_per_email = 2")
    });
    let mut server = start_binary(&config);
    assert!(server.holds_counted, "counted before serving");
    let keys: Vec<String> = (0..10).map(|i| format!("CAP-{i}")).collect();
    seed(
        &server.base,
        json!({"id": "cap", "name": "Cap", "price": 100}),
        &keys,
    );
    let c = Client::new();
    let order = |base: &str, email: &str| {
        c.post(format!("{base}/api/v1/orders"))
            .json(&json!({"product_id": "cap", "quantity": 1, "email": email, "gateway": "hmac"}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(order(&server.base, "capped@example.com"), 201);
    assert_eq!(order(&server.base, "Capped@example.com"), 201);
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    let server = start_binary(&config);
    assert_eq!(server.recovery, "resumed");
    assert!(server.holds_counted, "counted again before serving");
    assert_eq!(order(&server.base, "CAPPED@example.com"), 429);
    assert_eq!(order(&server.base, "other@example.com"), 201);
}
