//! A flash sale: many buyers racing for few keys. Exactly as many orders
//! succeed as there are keys, and every key is delivered exactly once, even
//! with every payment sent twice at the same time.

use crate::helpers::*;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Barrier};

#[test]
fn two_hundred_buyers_race_for_fifty_keys_and_each_key_sells_once() {
    let app = Arc::new(spawn());
    let keys: HashSet<String> = app
        .product_with_keys("flash", 100, 50)
        .into_iter()
        .collect();
    let barrier = Arc::new(Barrier::new(200));
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let (app, barrier) = (app.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = app.order("flash", 1, "hmac");
                let status = r.status().as_u16();
                (status, r.json::<Value>().unwrap())
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let created: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, v)| v)
        .collect();
    let refused = results
        .iter()
        .filter(|(s, v)| *s == 409 && v["error"]["code"] == "out_of_stock")
        .count();
    assert_eq!(created.len(), 50);
    assert_eq!(refused, 150);

    // Every payment twice, concurrently.
    let pay_barrier = Arc::new(Barrier::new(100));
    let payers: Vec<_> = created
        .iter()
        .flat_map(|o| {
            let no = o["order_no"].as_str().unwrap().to_string();
            [no.clone(), no]
        })
        .map(|no| {
            let (app, barrier) = (app.clone(), pay_barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                app.hmac_notify(&no, &format!("T-{no}"), 100)
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for p in payers {
        assert_eq!(p.join().unwrap(), 200);
    }
    let mut delivered = Vec::new();
    for o in &created {
        let v: Value = app
            .buyer_view(
                o["order_no"].as_str().unwrap(),
                o["token"].as_str().unwrap(),
            )
            .json()
            .unwrap();
        assert_eq!(v["status"], "delivered");
        for k in v["keys"].as_array().unwrap() {
            delivered.push(k.as_str().unwrap().to_string());
        }
    }
    let unique: HashSet<String> = delivered.iter().cloned().collect();
    assert_eq!(delivered.len(), 50);
    assert_eq!(unique, keys, "every key delivered exactly once");
    assert_eq!(
        app.admin_product("flash")["keys"],
        serde_json::json!({"available": 0, "held": 0, "sold": 50})
    );
    let report = faka::ops::check::run(&app.store).unwrap();
    assert!(report.ok(), "{report}");
}
