//! Payments: signed callbacks deliver at once; forgeries change nothing;
//! late payments are honoured; manual payment (补单) and refunds.

use crate::helpers::*;
use serde_json::{json, Value};

fn events(app: &TestApp, no: &str) -> Vec<String> {
    app.admin_order(no)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_signed_payment_delivers_the_held_keys_at_once() {
    let app = spawn();
    let keys = app.product_with_keys("p", 250, 3);
    let o = app.order_ok("p", 2, "hmac");
    let no = o["order_no"].as_str().unwrap();
    let r = app.hmac_notify(no, "TRADE-1", 500);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"ok": true, "status": "delivered"})
    );
    let view: Value = app
        .buyer_view(no, o["token"].as_str().unwrap())
        .json()
        .unwrap();
    assert_eq!(view["status"], "delivered");
    assert_eq!(view["keys"], json!([keys[0], keys[1]]));
    assert!(view["paid_at"].is_string() && view["delivered_at"].is_string());
    assert_eq!(
        app.admin_product("p")["keys"],
        json!({"available": 1, "held": 0, "sold": 2})
    );
    let detail = app.admin_order(no);
    assert_eq!(detail["trade_no"], "TRADE-1");
    assert_eq!(detail["keys"], json!([keys[0], keys[1]]));
    assert_eq!(events(&app, no), ["created", "paid", "delivered"]);
    assert_eq!(detail["events"][1]["gateway"], "hmac");
    assert_eq!(detail["events"][1]["amount"], 500);
}

#[test]
fn forged_callbacks_are_refused_and_change_nothing() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    let o = app.order_ok("p", 1, "hmac");
    let manual = app.order_ok("p", 1, "manual");
    let no = o["order_no"].as_str().unwrap();
    let body = |no: &str, amount: u64| {
        json!({"order_no": no, "trade_no": "T-1", "amount": amount, "status": "paid"}).to_string()
    };
    let before = app.dump();
    let now = now_secs();
    // A minute past the ±300 s window, so a second that ticks over while
    // the cases are sent cannot bring one back inside it (the exact edge is
    // the unit test `payments::hmac`'s, on a fixed clock).
    let (stale, future) = (now - 361, now + 361);
    let cases = [
        (
            "bad signature",
            app.hmac_notify_raw(&body(no, 100), now, "not-the-secret"),
            400,
            "invalid_signature",
        ),
        (
            "stale timestamp",
            app.hmac_notify_raw(&body(no, 100), stale, HMAC_SECRET),
            400,
            "invalid_signature",
        ),
        (
            "future timestamp",
            app.hmac_notify_raw(&body(no, 100), future, HMAC_SECRET),
            400,
            "invalid_signature",
        ),
        (
            "wrong amount",
            app.hmac_notify_raw(&body(no, 99), now, HMAC_SECRET),
            400,
            "amount_mismatch",
        ),
        (
            "wrong gateway",
            app.hmac_notify_raw(
                &body(manual["order_no"].as_str().unwrap(), 100),
                now,
                HMAC_SECRET,
            ),
            400,
            "gateway_mismatch",
        ),
        (
            "unknown order",
            app.hmac_notify_raw(&body("F0000000000000000", 100), now, HMAC_SECRET),
            404,
            "not_found",
        ),
        (
            "not paid",
            app.hmac_notify_raw(
                &json!({"order_no": no, "trade_no": "T-1", "amount": 100, "status": "failed"})
                    .to_string(),
                now,
                HMAC_SECRET,
            ),
            422,
            "invalid_request",
        ),
        (
            "malformed",
            app.hmac_notify_raw("{nope", now, HMAC_SECRET),
            400,
            "invalid_json",
        ),
    ];
    for (what, r, status, code) in cases {
        assert_eq!(error_code(r), (status, code.to_string()), "{what}");
    }
    let unsigned = app
        .client
        .post(app.url("/api/v1/payments/hmac/notify"))
        .body(body(no, 100))
        .send()
        .unwrap();
    assert_eq!(error_code(unsigned), (400, "invalid_signature".into()));
    // A signature over one body does not cover another.
    let ts = now.to_string();
    let sig = faka::payments::hmac::HmacGateway::sign(
        HMAC_SECRET.as_bytes(),
        &ts,
        body(no, 1).as_bytes(),
    );
    let swapped = app
        .client
        .post(app.url("/api/v1/payments/hmac/notify"))
        .header("X-Faka-Timestamp", ts)
        .header("X-Faka-Signature", sig)
        .body(body(no, 100))
        .send()
        .unwrap();
    assert_eq!(error_code(swapped), (400, "invalid_signature".into()));
    assert_eq!(app.dump(), before, "no refused callback changed anything");
}

#[test]
fn a_replayed_callback_answers_success_and_changes_nothing() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    let o = app.order_ok("p", 1, "hmac");
    let no = o["order_no"].as_str().unwrap();
    assert_eq!(app.hmac_notify(no, "T-1", 100).status(), 200);
    let before = app.dump();
    let again = app.hmac_notify(no, "T-1", 100);
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().unwrap()["status"], "delivered");
    assert_eq!(app.dump(), before);
}

#[test]
fn a_second_different_payment_is_recorded_for_refund() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    let o = app.order_ok("p", 1, "hmac");
    let no = o["order_no"].as_str().unwrap();
    assert_eq!(app.hmac_notify(no, "T-1", 100).status(), 200);
    let r = app.hmac_notify(no, "T-2", 100);
    assert_eq!(r.status(), 200);
    let detail = app.admin_order(no);
    assert_eq!(detail["status"], "delivered");
    assert_eq!(detail["trade_no"], "T-1");
    let second = detail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(second["type"], "second_payment");
    assert_eq!(second["trade_no"], "T-2");
    assert_eq!(second["amount"], 100);
    assert_eq!(
        app.admin_product("p")["keys"]["sold"],
        1,
        "no extra keys for a second payment"
    );
}

#[test]
fn a_disabled_gateway_refuses_its_callbacks() {
    let app = spawn_with(|dir| {
        config_text(dir, "").replace(&format!("secret = \"{HMAC_SECRET}\""), "secret = \"\"")
    });
    app.product_with_keys("p", 100, 1);
    assert_eq!(
        error_code(app.order("p", 1, "hmac")),
        (422, "invalid_request".into())
    );
    let r = app.hmac_notify_raw("{}", now_secs(), "");
    assert_eq!(error_code(r), (400, "invalid_signature".into()));
}

#[test]
fn a_late_payment_is_delivered_from_stock() {
    let app = spawn_with(|dir| config_text(dir, "").replace("hold_secs = 900", "hold_secs = 1"));
    app.product_with_keys("p", 100, 2);
    let o = app.order_ok("p", 1, "hmac");
    let no = o["order_no"].as_str().unwrap();
    eventually(std::time::Duration::from_secs(10), || {
        (app.admin_order(no)["status"] == "expired").then_some(())
    });
    let r = app.hmac_notify(no, "LATE-1", 100);
    assert_eq!(r.json::<Value>().unwrap()["status"], "delivered");
    let view: Value = app
        .buyer_view(no, o["token"].as_str().unwrap())
        .json()
        .unwrap();
    assert_eq!(view["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.admin_product("p")["keys"],
        json!({"available": 1, "held": 0, "sold": 1})
    );
}

#[test]
fn a_late_payment_without_stock_waits_and_is_backfilled_oldest_first() {
    let app = spawn_with(|dir| config_text(dir, "").replace("hold_secs = 900", "hold_secs = 1"));
    app.product_with_keys("p", 100, 3);
    let a = app.order_ok("p", 2, "hmac");
    let b = app.order_ok("p", 1, "manual");
    let (na, nb) = (
        a["order_no"].as_str().unwrap(),
        b["order_no"].as_str().unwrap(),
    );
    eventually(std::time::Duration::from_secs(10), || {
        (app.admin_order(nb)["status"] == "expired" && app.admin_order(na)["status"] == "expired")
            .then_some(())
    });
    // Someone else buys the released stock.
    app.order_ok("p", 3, "manual");
    let r = app.hmac_notify(na, "LATE-A", 200);
    assert_eq!(r.json::<Value>().unwrap()["status"], "awaiting_stock");
    let r = app.admin_post(
        &format!("/api/v1/admin/orders/{nb}/pay"),
        json!({"note": "paid by bank transfer"}),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["status"], "awaiting_stock");
    assert!(app
        .buyer_view(na, a["token"].as_str().unwrap())
        .json::<Value>()
        .unwrap()
        .get("keys")
        .is_none());

    // One key: not enough for A (2, first in line), so B must wait too.
    let added = app.import("p", &["NEW-1".to_string()]);
    assert_eq!(added["added"], 1);
    assert_eq!(added["stock"], 0, "the key is the waiting orders'");
    assert_eq!(app.admin_order(na)["status"], "awaiting_stock");
    assert_eq!(app.admin_order(nb)["status"], "awaiting_stock");
    // Nobody new may hold it while paid buyers wait, and no one is shown it.
    let public: Value = app.get("/api/v1/products/p").json().unwrap();
    assert_eq!(public["stock"], 0);
    let listed: Value = app.get("/api/v1/products").json().unwrap();
    assert_eq!(listed["products"][0]["stock"], 0);
    let admin = app.admin_product("p");
    assert_eq!(
        (admin["stock"].clone(), admin["keys"]["available"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        error_code(app.order("p", 1, "manual")),
        (409, "out_of_stock".into())
    );
    app.import("p", &["NEW-2".to_string(), "NEW-3".to_string()]);
    let va: Value = app
        .buyer_view(na, a["token"].as_str().unwrap())
        .json()
        .unwrap();
    let vb: Value = app
        .buyer_view(nb, b["token"].as_str().unwrap())
        .json()
        .unwrap();
    assert_eq!(va["status"], "delivered");
    assert_eq!(va["keys"], json!(["NEW-1", "NEW-2"]));
    assert_eq!(vb["keys"], json!(["NEW-3"]));
    assert_eq!(
        events(&app, na),
        ["created", "expired", "paid", "awaiting_stock", "delivered"]
    );
    // Nobody waits any more: new keys are for sale again.
    assert_eq!(app.import("p", &["NEW-4".to_string()])["stock"], 1);
    let public: Value = app.get("/api/v1/products/p").json().unwrap();
    assert_eq!(public["stock"], 1);
    app.order_ok("p", 1, "manual");
}

#[test]
fn manual_payment_delivers_and_refuses_a_paid_order() {
    let app = spawn();
    let keys = app.product_with_keys("p", 100, 2);
    let o = app.order_ok("p", 1, "hmac");
    let no = o["order_no"].as_str().unwrap();
    let r = app.admin_post(
        &format!("/api/v1/admin/orders/{no}/pay"),
        json!({"trade_no": "BANK-7", "note": "wire"}),
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["status"], "delivered");
    assert_eq!(v["keys"], json!([keys[0]]));
    assert_eq!(v["events"][1]["gateway"], "manual");
    assert_eq!(v["events"][1]["trade_no"], "BANK-7");
    assert_eq!(v["events"][1]["note"], "wire");
    let again = app.admin_post(&format!("/api/v1/admin/orders/{no}/pay"), json!({}));
    assert_eq!(error_code(again), (409, "conflict".into()));
    let unknown = app.admin_post("/api/v1/admin/orders/F0000000000000000/pay", json!({}));
    assert_eq!(error_code(unknown).0, 404);
    let anon = app.post(&format!("/api/v1/admin/orders/{no}/pay"), json!({}));
    assert_eq!(error_code(anon), (401, "unauthorized".into()));
}

#[test]
fn refunds_mark_delivered_or_waiting_orders_and_keep_keys_sold() {
    let app = spawn();
    app.product_with_keys("p", 100, 2);
    let o = app.order_ok("p", 1, "manual");
    let no = o["order_no"].as_str().unwrap();
    let pending = app.admin_post(&format!("/api/v1/admin/orders/{no}/refund"), json!({}));
    assert_eq!(error_code(pending), (409, "conflict".into()));
    app.admin_post(&format!("/api/v1/admin/orders/{no}/pay"), json!({}));
    let r = app.admin_post(
        &format!("/api/v1/admin/orders/{no}/refund"),
        json!({"note": "buyer complained"}),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["status"], "refunded");
    assert_eq!(
        app.admin_product("p")["keys"],
        json!({"available": 1, "held": 0, "sold": 1})
    );
    let twice = app.admin_post(&format!("/api/v1/admin/orders/{no}/refund"), json!({}));
    assert_eq!(error_code(twice), (409, "conflict".into()));
}

#[test]
fn repeated_and_refused_callbacks_are_recorded_beside_the_order() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    let o = app.order_ok("p", 1, "hmac");
    let no = o["order_no"].as_str().unwrap();
    assert_eq!(app.hmac_notify(no, "T-1", 99).status(), 400, "wrong amount");
    assert_eq!(app.hmac_notify(no, "T-1", 100).status(), 200);
    let state = app.dump();
    assert_eq!(
        app.hmac_notify(no, "T-1", 100).status(),
        200,
        "the gateway retries"
    );
    assert_eq!(app.dump(), state, "the repeat changed no state");
    let forged = app.hmac_notify_raw(
        &json!({"order_no": no, "trade_no": "T-9", "amount": 100, "status": "paid"}).to_string(),
        now_secs(),
        "not-the-secret",
    );
    assert_eq!(forged.status(), 400);
    let events = eventually(std::time::Duration::from_secs(10), || {
        let v = app.admin_order(no);
        let e = v["events"].as_array().unwrap().clone();
        (e.len() >= 5).then_some(e)
    });
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "payment_refused",
            "paid",
            "delivered",
            "payment_repeated"
        ]
    );
    assert_eq!(events[1]["note"], "amount_mismatch");
    assert_eq!(events[1]["amount"], 99);
    assert_eq!(events[1]["trade_no"], "T-1");
    assert_eq!(events[1]["gateway"], "hmac");
    assert_eq!(events[4]["amount"], 100);
    assert!(
        events[4].get("note").is_none(),
        "no empty note, as in the order's own events"
    );
    assert!(
        events.iter().all(|e| e["trade_no"] != "T-9"),
        "an unsigned callback is not recorded"
    );
}

/// A genuine callback replayed without end (a gateway retrying, or someone
/// who kept a copy) is answered every time, changes no state, and leaves at
/// most 32 records beside its order.
#[test]
fn a_replayed_callback_leaves_a_bounded_trail() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    let o = app.order_ok("p", 1, "hmac");
    let no = o["order_no"].as_str().unwrap();
    assert_eq!(app.hmac_notify(no, "T-1", 100).status(), 200);
    let state = app.dump();
    for _ in 0..40 {
        assert_eq!(app.hmac_notify(no, "T-1", 100).status(), 200);
    }
    assert_eq!(app.dump(), state, "the repeats changed no state");
    let repeated = |v: &Value| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "payment_repeated")
            .count()
    };
    eventually(std::time::Duration::from_secs(10), || {
        (repeated(&app.admin_order(no)) >= 32).then_some(())
    });
    // Another order's refusal, sent after every repeat was answered, is
    // recorded after them: once it shows, no repeat is still on its way.
    let other = app.order_ok("p", 1, "hmac");
    let other_no = other["order_no"].as_str().unwrap();
    assert_eq!(app.hmac_notify(other_no, "T-2", 99).status(), 400);
    eventually(std::time::Duration::from_secs(10), || {
        let v = app.admin_order(other_no);
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "payment_refused")
            .then_some(())
    });
    assert_eq!(repeated(&app.admin_order(no)), 32);
}
