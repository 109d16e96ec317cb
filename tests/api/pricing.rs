//! Wholesale tiers and coupons: what an order costs, fixed when it is made;
//! every reason a coupon is refused; a quote that equals the order; caps
//! that hold under a crowd of buyers, given back by expiry and exact after
//! a kill -9.

use crate::helpers::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn buy(app: &TestApp, product: &str, quantity: u32, email: &str, coupon: Option<&str>) -> Response {
    let mut body =
        json!({"product_id": product, "quantity": quantity, "email": email, "gateway": "hmac"});
    if let Some(c) = coupon {
        body["coupon"] = json!(c);
    }
    app.post("/api/v1/orders", body)
}

fn quote(app: &TestApp, product: &str, quantity: u32, coupon: Option<&str>) -> Response {
    let mut body = json!({"product_id": product, "quantity": quantity, "email": "q@example.com", "gateway": "hmac"});
    if let Some(c) = coupon {
        body["coupon"] = json!(c);
    }
    app.post("/api/v1/orders/quote", body)
}

fn coupon(app: &TestApp, body: Value) -> Value {
    let r = app.admin_post("/api/v1/admin/coupons", body);
    assert_eq!(r.status(), 201);
    r.json().unwrap()
}

fn coupon_counts(app: &TestApp, code: &str) -> (u64, u64) {
    let v: Value = app
        .admin_get(&format!("/api/v1/admin/coupons/{code}"))
        .json()
        .unwrap();
    (v["uses"].as_u64().unwrap(), v["held"].as_u64().unwrap())
}

fn message(r: Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    let msg = v["error"]["message"].as_str().unwrap_or("").to_string();
    (status, code, msg)
}

fn tiered(app: &TestApp, id: &str, keys: usize) {
    let r = app.admin_post(
        "/api/v1/admin/products",
        json!({"id": id, "name": id, "price": 1000, "max_quantity": 100,
               "tiers": [{"min_quantity": 10, "price": 900}, {"min_quantity": 5, "price": 950}]}),
    );
    assert_eq!(r.status(), 201);
    let keys: Vec<String> = (0..keys).map(|i| format!("{id}-K{i}")).collect();
    app.import(id, &keys);
}

type Response = reqwest::blocking::Response;

#[test]
fn each_key_costs_the_price_of_the_highest_tier_reached() {
    let app = spawn();
    tiered(&app, "bulk", 100);
    let p: Value = app.get("/api/v1/products/bulk").json().unwrap();
    assert_eq!(
        p["tiers"],
        json!([{"min_quantity": 5, "price": 950}, {"min_quantity": 10, "price": 900}]),
        "stored sorted"
    );
    for (q, unit) in [
        (4, 1000),
        (5, 950),
        (6, 950),
        (9, 950),
        (10, 900),
        (11, 900),
    ] {
        let o: Value = buy(&app, "bulk", q, "t@example.com", None).json().unwrap();
        assert_eq!(o["unit_price"], unit, "quantity {q}");
        assert_eq!(o["subtotal"], unit * q as u64);
        assert_eq!(
            (o["discount"].clone(), o["coupon"].clone()),
            (json!(0), Value::Null)
        );
        assert_eq!(o["amount"], unit * q as u64);
        let view: Value = app
            .buyer_view(
                o["order_no"].as_str().unwrap(),
                o["token"].as_str().unwrap(),
            )
            .json()
            .unwrap();
        assert_eq!(view["unit_price"], unit);
        assert_eq!(view["amount"], o["amount"]);
    }
    // A later price change never touches an order already made.
    let o = buy(&app, "bulk", 10, "t@example.com", None)
        .json::<Value>()
        .unwrap();
    let r = app
        .admin(app.client.patch(app.url("/api/v1/admin/products/bulk")))
        .json(&json!({"tiers": [{"min_quantity": 2, "price": 1}]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let admin = app.admin_order(o["order_no"].as_str().unwrap());
    assert_eq!(
        (admin["unit_price"].clone(), admin["amount"].clone()),
        (json!(900), json!(9000))
    );
    let o: Value = buy(&app, "bulk", 2, "t@example.com", None).json().unwrap();
    assert_eq!(o["amount"], 2);
}

#[test]
fn bad_tiers_are_refused_and_change_nothing() {
    let app = spawn();
    app.product_with_keys("p", 100, 1);
    let before = app.dump();
    for tiers in [
        json!([{"min_quantity": 1, "price": 5}]),
        json!([{"min_quantity": 3, "price": 5}, {"min_quantity": 3, "price": 4}]),
        json!([{"min_quantity": 3, "price": -1}]),
        json!([{"min_quantity": 3}]),
        json!([{"min_quantity": 3, "price": 5, "extra": 1}]),
    ] {
        let r = app
            .admin(app.client.patch(app.url("/api/v1/admin/products/p")))
            .json(&json!({"tiers": tiers}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 422, "{tiers}");
        let r = app.admin_post(
            "/api/v1/admin/products",
            json!({"id": "q", "name": "q", "price": 5, "tiers": tiers}),
        );
        assert_eq!(r.status(), 422, "{tiers}");
    }
    assert_eq!(app.dump(), before);
}

#[test]
fn coupons_take_their_discount_and_the_quote_equals_the_order() {
    let app = spawn();
    tiered(&app, "bulk", 100);
    coupon(
        &app,
        json!({"code": "Third", "kind": "percent", "value": 33}),
    );
    coupon(
        &app,
        json!({"code": "minus-500", "kind": "fixed", "value": 500}),
    );
    // 3 × 1000 = 3000, 33 % = 990; 7 × 950 = 6650, 33 % = 2194.5 → 2194.
    for (q, code, discount) in [(3, "third", 990), (7, "THIRD", 2194), (1, "Minus-500", 500)] {
        let quoted: Value = quote(&app, "bulk", q, Some(code)).json().unwrap();
        let o: Value = buy(&app, "bulk", q, "d@example.com", Some(code))
            .json()
            .unwrap();
        assert_eq!(o["discount"], discount, "{q} {code}");
        assert_eq!(o["amount"], o["subtotal"].as_u64().unwrap() - discount);
        for f in ["unit_price", "subtotal", "discount", "amount"] {
            assert_eq!(quoted[f], o[f], "{f}");
        }
        assert_eq!(quoted["currency"], "CNY");
        assert!(quoted["stock"].as_u64().unwrap() > 0);
        // The merchant's spelling, whatever the buyer typed.
        let want = if code.eq_ignore_ascii_case("third") {
            "Third"
        } else {
            "minus-500"
        };
        assert_eq!(o["coupon"], want);
        // The gateway is asked for exactly the amount.
        let no = o["order_no"].as_str().unwrap();
        let amount = o["amount"].as_u64().unwrap();
        assert_eq!(
            app.hmac_notify(no, &format!("T-{no}"), amount + discount)
                .status(),
            400
        );
        assert_eq!(
            app.hmac_notify(no, &format!("T-{no}"), amount).status(),
            200
        );
    }
    assert_eq!(coupon_counts(&app, "THIRD"), (2, 0));
    // A code exists once, in any case.
    let r = app.admin_post(
        "/api/v1/admin/coupons",
        json!({"code": "THIRD", "kind": "fixed", "value": 1}),
    );
    assert_eq!(r.status(), 409);
}

#[test]
fn a_fixed_discount_past_the_subtotal_makes_a_free_order_delivered_at_once() {
    let app = spawn();
    let keys = app.product_with_keys("cheap", 300, 2);
    coupon(
        &app,
        json!({"code": "gift", "kind": "fixed", "value": 100000}),
    );
    let q: Value = quote(&app, "cheap", 1, Some("gift")).json().unwrap();
    assert_eq!(
        (q["discount"].clone(), q["amount"].clone()),
        (json!(300), json!(0))
    );
    let o: Value = buy(&app, "cheap", 1, "free@example.com", Some("gift"))
        .json()
        .unwrap();
    assert_eq!(o["status"], "delivered");
    assert_eq!(
        (o["amount"].clone(), o["pay_url"].clone()),
        (json!(0), Value::Null)
    );
    let view: Value = app
        .buyer_view(
            o["order_no"].as_str().unwrap(),
            o["token"].as_str().unwrap(),
        )
        .json()
        .unwrap();
    assert!(keys.contains(&view["keys"][0].as_str().unwrap().to_string()));
    let admin = app.admin_order(o["order_no"].as_str().unwrap());
    let paid = admin["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "paid")
        .expect("a payment event")
        .clone();
    assert_eq!(
        (paid["gateway"].clone(), paid["amount"].clone()),
        (json!("free"), json!(0))
    );
    assert_eq!(coupon_counts(&app, "gift"), (1, 0));
    assert_checked(&app);
}

#[test]
fn every_refusal_is_invalid_coupon_with_its_reason_and_changes_nothing() {
    let app = spawn();
    app.product_with_keys("p", 1000, 20);
    app.product_with_keys("other", 1000, 5);
    let hour = 3600;
    let at = |secs: i64| faka::views::rfc3339(secs * 1000);
    let now = now_secs();
    coupon(
        &app,
        json!({"code": "off", "kind": "percent", "value": 10, "active": false}),
    );
    coupon(
        &app,
        json!({"code": "later", "kind": "percent", "value": 10, "starts_at": at(now + hour)}),
    );
    coupon(
        &app,
        json!({"code": "past", "kind": "percent", "value": 10, "expires_at": at(now - hour)}),
    );
    coupon(
        &app,
        json!({"code": "elsewhere", "kind": "percent", "value": 10, "product_ids": ["other"]}),
    );
    coupon(
        &app,
        json!({"code": "big-only", "kind": "fixed", "value": 100, "min_amount": 2001}),
    );
    coupon(
        &app,
        json!({"code": "once", "kind": "fixed", "value": 100, "max_uses": 1}),
    );
    coupon(
        &app,
        json!({"code": "one-each", "kind": "fixed", "value": 100, "max_uses_per_email": 1}),
    );
    coupon(
        &app,
        json!({"code": "window", "kind": "fixed", "value": 100,
                        "starts_at": at(now - hour), "expires_at": at(now + hour)}),
    );
    assert_eq!(
        buy(&app, "p", 1, "a@example.com", Some("once")).status(),
        201
    );
    assert_eq!(
        buy(&app, "p", 1, "a@example.com", Some("ONE-EACH")).status(),
        201
    );
    assert_eq!(
        buy(&app, "p", 2, "a@example.com", Some("window")).status(),
        201
    );
    assert_eq!(
        buy(&app, "p", 3, "a@example.com", Some("big-only")).status(),
        201
    );
    let before = app.dump();
    for (code, email, q, why) in [
        ("nope", "a@example.com", 1, "unknown"),
        ("no", "a@example.com", 1, "unknown"),
        ("bad code!", "a@example.com", 1, "unknown"),
        ("off", "a@example.com", 1, "inactive"),
        ("later", "a@example.com", 1, "not started"),
        ("past", "a@example.com", 1, "expired"),
        ("elsewhere", "a@example.com", 1, "not for this product"),
        ("big-only", "a@example.com", 2, "at least 2001"),
        ("once", "b@example.com", 1, "used up"),
        ("one-each", "A@EXAMPLE.COM", 1, "used up for this e-mail"),
    ] {
        let (s, c, m) = message(buy(&app, "p", q, email, Some(code)));
        assert_eq!((s, c.as_str()), (422, "invalid_coupon"), "{code}: {m}");
        assert!(m.contains(why), "{code}: {m:?} should say {why:?}");
        let (s, c, _) = message(quote(&app, "p", q, Some(code)));
        if code != "one-each" {
            assert_eq!((s, c.as_str()), (422, "invalid_coupon"), "quote {code}");
        }
    }
    assert_eq!(app.dump(), before, "refusals change nothing");
    // The quote answers the order's other errors too.
    assert_eq!(quote(&app, "ghost", 1, None).status(), 404);
    assert_eq!(
        error_code(quote(&app, "p", 50, None)),
        (422, "invalid_request".into())
    );
    assert_eq!(
        error_code(quote(&app, "other", 6, None)),
        (409, "out_of_stock".into())
    );
}

#[test]
fn the_merchant_lists_views_and_edits_coupons() {
    let app = spawn();
    app.product_with_keys("p", 1000, 5);
    let c = coupon(
        &app,
        json!({"code": "Summer_24", "kind": "percent", "value": 20,
                               "product_ids": ["p"], "max_uses": 5}),
    );
    assert_eq!(c["code"], "Summer_24");
    assert_eq!((c["uses"].clone(), c["held"].clone()), (json!(0), json!(0)));
    assert_eq!(c["expires_at"], Value::Null);
    for bad in [
        json!({"code": "ab", "kind": "percent", "value": 5}),
        json!({"code": "ok-code", "kind": "half", "value": 5}),
        json!({"code": "ok-code", "kind": "percent", "value": 101}),
        json!({"code": "ok-code", "kind": "percent", "value": 0}),
        json!({"code": "ok-code", "kind": "fixed", "value": 0}),
        json!({"code": "ok-code", "kind": "fixed", "value": 1, "expires_at": "tomorrow"}),
        json!({"code": "ok-code", "kind": "fixed", "value": 1, "product_ids": ["Bad Id"]}),
        json!({"code": "ok-code", "kind": "fixed", "value": 1,
               "starts_at": "2026-12-02T00:00:00Z", "expires_at": "2026-12-01T00:00:00Z"}),
        json!({"code": "ok-code", "kind": "fixed", "value": 1, "typo": true}),
    ] {
        assert_eq!(
            app.admin_post("/api/v1/admin/coupons", bad.clone())
                .status(),
            422,
            "{bad}"
        );
    }
    assert_eq!(
        buy(&app, "p", 1, "x@example.com", Some("summer_24")).status(),
        201
    );
    let list: Value = app.admin_get("/api/v1/admin/coupons").json().unwrap();
    assert_eq!(list["coupons"].as_array().unwrap().len(), 1);
    assert_eq!(list["coupons"][0]["held"], 1);
    let patch = |body: Value| {
        app.admin(app.client.patch(app.url("/api/v1/admin/coupons/SUMMER_24")))
            .json(&body)
            .send()
            .unwrap()
    };
    let r = patch(json!({"active": false, "max_uses": null}));
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (
            v["active"].clone(),
            v["max_uses"].clone(),
            v["held"].clone()
        ),
        (json!(false), Value::Null, json!(1))
    );
    assert_eq!(
        patch(json!({"kind": "percent", "value": 500})).status(),
        422
    );
    let (s, c) = error_code(buy(&app, "p", 1, "x@example.com", Some("summer_24")));
    assert_eq!((s, c.as_str()), (422, "invalid_coupon"));
    assert_eq!(patch(json!({"active": true})).status(), 200);
    assert_eq!(
        buy(&app, "p", 1, "x@example.com", Some("summer_24")).status(),
        201
    );
    assert_eq!(app.admin_get("/api/v1/admin/coupons/nothing").status(), 404);
    assert_eq!(app.get("/api/v1/admin/coupons").status(), 401);
    // Buyers' counts are kept only while a coupon has a per-e-mail cap: one
    // added after orders used it would not see their uses, so it is refused
    // and changes nothing; a coupon nobody used yet may get one.
    let r = patch(json!({"max_uses_per_email": 1}));
    assert_eq!(r.status(), 422);
    let now: Value = app
        .admin_get("/api/v1/admin/coupons/summer_24")
        .json()
        .unwrap();
    assert_eq!(now["max_uses_per_email"], Value::Null);
    coupon(&app, json!({"code": "fresh", "kind": "fixed", "value": 10}));
    let r = app
        .admin(app.client.patch(app.url("/api/v1/admin/coupons/fresh")))
        .json(&json!({"max_uses_per_email": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        buy(&app, "p", 1, "y@example.com", Some("fresh")).status(),
        201
    );
    let (s, c) = error_code(buy(&app, "p", 1, "Y@example.com", Some("FRESH")));
    assert_eq!((s, c.as_str()), (422, "invalid_coupon"));
    assert_checked(&app);
}

/// Runs `n` orders at once, each `(email, coupon)`; returns their answers.
fn crowd(app: &Arc<TestApp>, orders: Vec<(String, String)>) -> Vec<(u16, Value)> {
    let barrier = Arc::new(Barrier::new(orders.len()));
    let handles: Vec<_> = orders
        .into_iter()
        .map(|(email, code)| {
            let (app, barrier) = (app.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = buy(&app, "flash", 1, &email, Some(&code));
                (r.status().as_u16(), r.json::<Value>().unwrap())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn carrying(results: &[(u16, Value)], code: &str) -> usize {
    for (s, v) in results {
        let refused =
            v["error"]["code"] == "invalid_coupon" || v["error"]["code"] == "out_of_stock";
        assert!(*s == 201 || refused, "{s} {v}");
    }
    results
        .iter()
        .filter(|(s, v)| *s == 201 && v["coupon"] == code)
        .count()
}

#[test]
fn three_hundred_buyers_race_for_twenty_coupon_uses() {
    let app = Arc::new(spawn());
    app.product_with_keys("flash", 1000, 100);
    coupon(
        &app,
        json!({"code": "flash20", "kind": "percent", "value": 50, "max_uses": 20}),
    );
    let orders = (0..300)
        .map(|i| (format!("b{i}@example.com"), "FLASH20".to_string()))
        .collect();
    let results = crowd(&app, orders);
    assert_eq!(carrying(&results, "flash20"), 20);
    assert_eq!(coupon_counts(&app, "flash20"), (0, 20));
    assert_eq!(app.admin_product("flash")["keys"]["held"], 20);
    assert_checked(&app);
}

/// `faka check` agrees: every coupon's counts are its orders'.
fn assert_checked(app: &TestApp) {
    let report = faka::ops::check::run(&app.store).unwrap();
    assert!(report.ok(), "{report}");
}

#[test]
fn the_per_email_cap_holds_under_a_crowd() {
    let app = Arc::new(spawn());
    app.product_with_keys("flash", 1000, 200);
    coupon(
        &app,
        json!({"code": "each2", "kind": "fixed", "value": 10, "max_uses_per_email": 2}),
    );
    let orders = (0..150)
        .map(|i| {
            // Five buyers, their e-mails in varying case.
            let email = if i % 2 == 0 {
                format!("buyer{}@example.com", i % 5)
            } else {
                format!("BUYER{}@Example.com", i % 5)
            };
            (email, "each2".to_string())
        })
        .collect();
    let results = crowd(&app, orders);
    assert_eq!(carrying(&results, "each2"), 10);
    for b in 0..5 {
        let n = results
            .iter()
            .filter(|(s, v)| {
                *s == 201
                    && v["email"]
                        .as_str()
                        .unwrap()
                        .eq_ignore_ascii_case(&format!("buyer{b}@example.com"))
            })
            .count();
        assert_eq!(n, 2, "buyer{b}");
    }
    assert_checked(&app);
}

#[test]
fn an_expired_hold_gives_its_use_back_and_a_payment_keeps_it() {
    let app = Arc::new(spawn_with(|dir| {
        config_text(dir, "").replace("hold_secs = 900", "hold_secs = 1")
    }));
    app.product_with_keys("flash", 1000, 20);
    coupon(
        &app,
        json!({"code": "three", "kind": "fixed", "value": 100,
                        "max_uses": 3, "max_uses_per_email": 2}),
    );
    let first: Vec<Value> = (0..3)
        .map(|i| {
            buy(
                &app,
                "flash",
                1,
                &format!("e{}@example.com", i % 2),
                Some("three"),
            )
            .json()
            .unwrap()
        })
        .collect();
    assert_eq!(
        error_code(buy(&app, "flash", 1, "z@example.com", Some("three"))).1,
        "invalid_coupon"
    );
    let paid = first[0]["order_no"].as_str().unwrap();
    assert_eq!(app.hmac_notify(paid, "T-paid", 900).status(), 200);
    assert_eq!(coupon_counts(&app, "three"), (1, 2));
    // The two unpaid orders expire and give their uses back.
    eventually(Duration::from_secs(20), || {
        (coupon_counts(&app, "three") == (1, 0)).then_some(())
    });
    let again = crowd(
        &app,
        (0..10)
            .map(|i| (format!("n{i}@example.com"), "three".to_string()))
            .collect(),
    );
    assert_eq!(carrying(&again, "three"), 2);
    // Three uses again: the paid one and the two new holds.
    assert_eq!(coupon_counts(&app, "three"), (1, 2));
    // A late payment of an expired order is honoured at its price, and
    // counts as a use again.
    let late = first[1]["order_no"].as_str().unwrap();
    assert_eq!(app.admin_order(late)["status"], "expired");
    assert_eq!(app.hmac_notify(late, "T-late", 900).status(), 200);
    assert_eq!(coupon_counts(&app, "three"), (2, 2));
    assert_checked(&app);
}

/// Buyers with a coupon, paying half their orders, until stopped or the
/// server dies.
fn coupon_load(base: String, stop: Arc<AtomicBool>) {
    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Ok(r) = client
            .post(format!("{base}/api/v1/orders"))
            .json(&json!({"product_id": "crash", "quantity": 1, "email": format!("c{}@example.com", n % 7),
                          "gateway": "hmac", "coupon": "CRASH"}))
            .send()
        else {
            return;
        };
        if r.status() != 201 {
            continue;
        }
        let Ok(o) = r.json::<Value>() else { return };
        if n.is_multiple_of(2) {
            let no = o["order_no"].as_str().unwrap();
            if pay_hmac(&client, &base, no, &format!("T-{no}"), 90).is_none() {
                return;
            }
        }
    }
}

/// Every order, through the admin listing's pages.
fn all_orders(c: &Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = c
            .get(format!("{base}/api/v1/admin/orders?limit=500{cursor}"))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        out.extend(page["orders"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return out,
        }
    }
}

#[test]
fn after_a_kill_9_under_load_the_coupon_counts_equal_the_orders_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), |text| text);
    let mut server = start_binary(&config);
    let keys: Vec<String> = (0..5000).map(|i| format!("CC-{i:05}")).collect();
    seed(
        &server.base,
        json!({"id": "crash", "name": "Crash", "price": 100}),
        &keys,
    );
    let c = Client::new();
    let r = c
        .post(format!("{}/api/v1/admin/coupons", server.base))
        .bearer_auth(ADMIN)
        .json(&json!({"code": "crash", "kind": "fixed", "value": 10, "max_uses": 4000}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    for cycle in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let buyers: Vec<_> = (0..6)
            .map(|_| {
                let (b, s) = (server.base.clone(), stop.clone());
                std::thread::spawn(move || coupon_load(b, s))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + 300 * cycle));
        server.child.kill().expect("kill -9");
        let _ = server.child.wait();
        stop.store(true, Ordering::Relaxed);
        for b in buyers {
            b.join().unwrap();
        }
        server = start_binary(&config);
        // The start's own check (after a crash) finds the counts right.
        eventually(Duration::from_secs(60), || {
            server.checked.load(Ordering::SeqCst).then_some(())
        });
        let orders = all_orders(&c, &server.base);
        let with = |paid: bool| {
            orders
                .iter()
                .filter(|o| o["coupon"] == "crash")
                .filter(|o| (o["status"] != "pending") == paid)
                .count() as u64
        };
        let v: Value = c
            .get(format!("{}/api/v1/admin/coupons/crash", server.base))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        eprintln!("cycle {cycle}: {} orders, coupon {v}", orders.len());
        assert!(with(false) + with(true) > 0, "the load made orders");
        assert_eq!(
            v["held"],
            with(false),
            "cycle {cycle}: held = pending orders"
        );
        assert_eq!(v["uses"], with(true), "cycle {cycle}: uses = paid orders");
    }
}

#[test]
fn the_storefront_shows_tiers_and_prices_a_coupon_through_the_order_form() {
    use crate::web::{browser, csrf_of, manual_shop, page};
    let app = manual_shop();
    tiered(&app, "bulk", 20);
    app.product_with_keys("cheap", 100, 1);
    coupon(
        &app,
        json!({"code": "Web-10", "kind": "percent", "value": 10}),
    );
    coupon(
        &app,
        json!({"code": "all-free", "kind": "fixed", "value": 1000000}),
    );
    let buyer = browser();
    let home = page(&buyer, &app, "/?lang=en").text().unwrap();
    assert!(
        home.contains("Wholesale 5 or more ¥9.50 · 10 or more ¥9.00"),
        "{home}"
    );
    let html = page(&buyer, &app, "/products/bulk?lang=en").text().unwrap();
    assert!(html.contains("data-tiers") && html.contains("name=\"coupon\""));
    assert!(html.contains("data-quote"), "the live quote's place");
    let checkout = |product: &str, quantity: &str, coupon: &str| {
        buyer
            .post(app.url("/checkout"))
            .form(&[
                ("csrf", csrf_of(&html).as_str()),
                ("product_id", product),
                ("quantity", quantity),
                ("email", "w@example.com"),
                ("gateway", "manual"),
                ("coupon", coupon),
            ])
            .send()
            .unwrap()
    };
    let r = checkout("bulk", "10", "web-10");
    assert_eq!(r.status(), 303);
    let order_page = r.headers()["location"].to_str().unwrap().to_string();
    let body = page(&buyer, &app, &format!("{order_page}&lang=en"))
        .text()
        .unwrap();
    // 10 × ¥9.00 = ¥90.00, 10 % off: ¥81.00.
    for shown in ["¥9.00 × 10", "¥90.00", "−¥9.00", "Web-10", "¥81.00"] {
        assert!(body.contains(shown), "{shown} in {body}");
    }
    assert_eq!(coupon_counts(&app, "web-10"), (0, 1));
    // A free order goes straight to its page, delivered.
    let r = checkout("cheap", "1", "ALL-FREE");
    assert_eq!(r.status(), 303);
    let order_page = r.headers()["location"].to_str().unwrap().to_string();
    assert!(order_page.starts_with("/orders/"), "{order_page}");
    let body = page(&buyer, &app, &order_page).text().unwrap();
    assert!(body.contains("data-order-status>delivered<") && body.contains("cheap-KEY-00000"));
    // An empty coupon field is no coupon; a bad one is refused.
    assert_eq!(checkout("bulk", "1", "").status(), 303);
    let r = checkout("bulk", "1", "nope");
    assert_eq!(r.status(), 422);
}

#[test]
fn the_merchant_creates_and_switches_coupons_in_the_admin_panel_behind_csrf() {
    use crate::web::{csrf_of, page, signed_in_admin};
    let app = spawn();
    let merchant = signed_in_admin(&app);
    let html = page(&merchant, &app, "/admin/coupons").text().unwrap();
    assert!(html.contains("data-coupon-form"));
    let before = app.dump();
    let r = merchant
        .post(app.url("/admin/coupons"))
        .form(&[
            ("action", "create"),
            ("code", "NOCSRF"),
            ("kind", "fixed"),
            ("value", "5"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.dump(), before, "refused without its CSRF token");
    let csrf = csrf_of(&html);
    let r = merchant
        .post(app.url("/admin/coupons"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", "create"),
            ("code", "Panel-5"),
            ("kind", "fixed"),
            ("value", "500"),
            ("max_uses", "10"),
            ("product_ids", "a, b"),
            ("expires_at", "2030-01-01T00:00:00Z"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let c: Value = app
        .admin_get("/api/v1/admin/coupons/panel-5")
        .json()
        .unwrap();
    assert_eq!(
        (
            c["value"].clone(),
            c["max_uses"].clone(),
            c["product_ids"].clone(),
            c["active"].clone()
        ),
        (json!(500), json!(10), json!(["a", "b"]), json!(true))
    );
    let list = page(&merchant, &app, "/admin/coupons").text().unwrap();
    assert!(list.contains("data-admin-coupon=\"Panel-5\""));
    let toggle = |active: &str| {
        merchant
            .post(app.url("/admin/coupons"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("action", "toggle"),
                ("code", "Panel-5"),
                ("active", active),
            ])
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(toggle("0"), 303);
    let c: Value = app
        .admin_get("/api/v1/admin/coupons/Panel-5")
        .json()
        .unwrap();
    assert_eq!(c["active"], false);
    assert_eq!(toggle("1"), 303);
    let c: Value = app
        .admin_get("/api/v1/admin/coupons/Panel-5")
        .json()
        .unwrap();
    assert_eq!(c["active"], true);
    // The product form takes tiers as quantity:price.
    let products = page(&merchant, &app, "/admin/products").text().unwrap();
    let r = merchant
        .post(app.url("/admin/products"))
        .form(&[
            ("csrf", csrf_of(&products).as_str()),
            ("id", "tiered"),
            ("name", "Tiered"),
            ("price", "1000"),
            ("tiers", "10:900, 5:950"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        app.admin_product("tiered")["tiers"],
        json!([{"min_quantity": 5, "price": 950}, {"min_quantity": 10, "price": 900}])
    );
}
