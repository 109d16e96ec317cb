//! Buyers placing and viewing orders: holds, idempotency, tokens, expiry.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn an_order_holds_its_keys_and_shows_them_only_after_payment() {
    let app = spawn();
    app.product_with_keys("steam-10", 6900, 3);
    let o = app.order_ok("steam-10", 2, "manual");
    assert_eq!(o["status"], "pending");
    assert_eq!(o["amount"], 13800);
    assert_eq!(o["currency"], "CNY");
    assert_eq!(o["quantity"], 2);
    assert_eq!(o["email"], "buyer@example.com");
    assert_eq!(o["gateway"], "manual");
    assert!(o["pay_url"].is_null());
    assert!(
        o["token"].as_str().unwrap().len() >= 22,
        "token carries ≥ 128 bits"
    );
    assert!(o["created_at"].as_str().unwrap().ends_with('Z'));

    let p = app.admin_product("steam-10");
    assert_eq!(p["keys"], json!({"available": 1, "held": 2, "sold": 0}));
    assert_eq!(p["stock"], 1);

    let no = o["order_no"].as_str().unwrap();
    let tok = o["token"].as_str().unwrap();
    let view: Value = app.buyer_view(no, tok).json().unwrap();
    assert_eq!(view["status"], "pending");
    assert!(view.get("keys").is_none(), "no keys before payment");
    assert!(view.get("token").is_none());
}

#[test]
fn the_order_token_is_the_only_way_to_see_an_order() {
    let app = spawn();
    app.product_with_keys("p", 100, 1);
    let o = app.order_ok("p", 1, "manual");
    let no = o["order_no"].as_str().unwrap();
    let tok = o["token"].as_str().unwrap();
    assert_eq!(app.buyer_view(no, tok).status(), 200);
    let by_header = app
        .client
        .get(app.url(&format!("/api/v1/orders/{no}")))
        .header("X-Order-Token", tok)
        .send()
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let wrong = error_code(app.buyer_view(no, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    let missing = error_code(app.get(&format!("/api/v1/orders/{no}")));
    let unknown = error_code(app.buyer_view("F0000000000000000", tok));
    assert_eq!(wrong, (404, "not_found".into()));
    assert_eq!(missing, wrong, "a missing token looks like a wrong one");
    assert_eq!(unknown, wrong, "a wrong token looks like an unknown order");
}

#[test]
fn out_of_stock_holds_nothing() {
    let app = spawn();
    app.product_with_keys("p", 100, 2);
    let before = app.dump();
    assert_eq!(
        error_code(app.order("p", 3, "manual")),
        (409, "out_of_stock".into())
    );
    assert_eq!(app.dump(), before);
    app.order_ok("p", 2, "manual");
    assert_eq!(
        error_code(app.order("p", 1, "manual")),
        (409, "out_of_stock".into())
    );
}

/// An order is checked against the product as it is at that moment, even
/// though those checks are answered from a cache before the order queues:
/// keys imported, bounds changed and a product withdrawn each count for the
/// very next order.
#[test]
fn an_order_is_checked_against_the_product_as_it_is_now() {
    let app = spawn();
    app.product_with_keys("p", 100, 1);
    app.order_ok("p", 1, "manual");
    assert_eq!(
        error_code(app.order("p", 1, "manual")),
        (409, "out_of_stock".into())
    );
    app.import("p", &["p-MORE-1".into(), "p-MORE-2".into()]);
    app.order_ok("p", 1, "manual");
    let patch = |body: serde_json::Value| {
        let r = app
            .admin(app.client.patch(app.url("/api/v1/admin/products/p")))
            .json(&body)
            .send()
            .expect("patch");
        assert_eq!(r.status(), 200);
    };
    patch(serde_json::json!({"max_quantity": 1}));
    assert_eq!(
        error_code(app.order("p", 2, "manual")),
        (422, "invalid_request".into())
    );
    patch(serde_json::json!({"active": false}));
    assert_eq!(
        error_code(app.order("p", 1, "manual")),
        (404, "not_found".into())
    );
    patch(serde_json::json!({"active": true}));
    app.order_ok("p", 1, "manual");
    assert_eq!(
        error_code(app.order("p", 1, "manual")),
        (409, "out_of_stock".into())
    );
}

#[test]
fn order_requests_are_validated_field_by_field() {
    let app = spawn();
    app.product_with_keys("p", 100, 5);
    let inactive = app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "off", "name": "Off", "price": 1, "active": false}),
    );
    assert_eq!(inactive.status(), 201);
    let before = app.dump();
    let cases = [
        (
            json!({"product_id": "p", "quantity": 11, "email": "a@b.co", "gateway": "manual"}),
            422,
            "quantity",
        ),
        (
            json!({"product_id": "p", "quantity": 0, "email": "a@b.co", "gateway": "manual"}),
            422,
            "quantity",
        ),
        (
            json!({"product_id": "p", "quantity": 1, "email": "not-an-email", "gateway": "manual"}),
            422,
            "email",
        ),
        (
            json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "paypal"}),
            422,
            "gateway",
        ),
        (
            json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "epay"}),
            422,
            "gateway",
        ),
        (
            json!({"product_id": "nope", "quantity": 1, "email": "a@b.co", "gateway": "manual"}),
            404,
            "product nope not found",
        ),
        (
            json!({"product_id": "off", "quantity": 1, "email": "a@b.co", "gateway": "manual"}),
            404,
            "product off not found",
        ),
        (
            json!({"product_id": "p", "quantity": -1, "email": "a@b.co", "gateway": "manual"}),
            422,
            "quantity",
        ),
        (
            json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "manual", "coupon": "x"}),
            422,
            "coupon",
        ),
    ];
    for (body, status, field) in cases {
        let r = app.post("/api/v1/orders", body.clone());
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    assert_eq!(app.dump(), before, "no rejected order changed anything");
}

/// `retention.idempotency_hours` bounds how long a key is remembered: once
/// its record is pruned (here at once, with 0 hours), a repeat of the key
/// is a new order.
#[test]
fn a_repeat_of_an_idempotency_key_past_its_retention_is_a_new_order() {
    let app = spawn_with(|dir| {
        config_text(
            dir,
            "[retention]\nidempotency_hours = 0\nsweep_interval_secs = 1\n",
        )
    });
    app.product_with_keys("p", 100, 10);
    let body = json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "manual"});
    let send = || {
        let r = app
            .client
            .post(app.url("/api/v1/orders"))
            .header("Idempotency-Key", "old-key")
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().unwrap()["order_no"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = send();
    let second = eventually(Duration::from_secs(30), || {
        let no = send();
        (no != first).then_some(no)
    });
    assert_eq!(app.admin_order(&first)["status"], "pending");
    assert_eq!(app.admin_order(&second)["status"], "pending");
}

#[test]
fn an_idempotent_retry_returns_the_first_response_and_creates_nothing() {
    let app = spawn();
    app.product_with_keys("p", 100, 10);
    let body = json!({"product_id": "p", "quantity": 2, "email": "a@b.co", "gateway": "manual"});
    let send = |b: &Value, key: &str| {
        app.client
            .post(app.url("/api/v1/orders"))
            .header("Idempotency-Key", key)
            .json(b)
            .send()
            .unwrap()
    };
    let first = send(&body, "retry-1");
    assert_eq!(first.status(), 201);
    let first = first.text().unwrap();
    let again = send(&body, "retry-1");
    assert_eq!(again.status(), 201);
    assert_eq!(
        again.text().unwrap(),
        first,
        "the very same response, token included"
    );
    assert_eq!(
        app.admin_product("p")["keys"]["held"],
        2,
        "one order, not two"
    );

    // The same fields spaced and ordered differently are the same request.
    let respaced = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("Idempotency-Key", "retry-1")
        .header("Content-Type", "application/json")
        .body(r#"{ "gateway":"manual", "email": "a@b.co", "quantity": 2, "product_id": "p" }"#)
        .send()
        .unwrap();
    assert_eq!(respaced.status(), 201);
    assert_eq!(respaced.text().unwrap(), first);

    let other = json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "manual"});
    assert_eq!(
        error_code(send(&other, "retry-1")),
        (409, "conflict".into())
    );
    let with_password = json!({"product_id": "p", "quantity": 2, "email": "a@b.co",
        "gateway": "manual", "query_password": "pw-1"});
    assert_eq!(
        error_code(send(&with_password, "retry-1")),
        (409, "conflict".into()),
        "a field added is another request"
    );
    assert_eq!(
        send(&body, "retry 3").status(),
        201,
        "a space inside a key is allowed"
    );
    assert_eq!(error_code(send(&body, "")).0, 422);
    assert_eq!(error_code(send(&body, &"k".repeat(65))).0, 422);
    assert_eq!(
        send(&body, "retry-2").status(),
        201,
        "a new key is a new order"
    );
    assert_eq!(app.admin_product("p")["keys"]["held"], 6);
}

#[test]
fn an_unpaid_order_expires_and_its_keys_return_to_stock() {
    let app = spawn_with(|dir| config_text(dir, "").replace("hold_secs = 900", "hold_secs = 1"));
    app.product_with_keys("p", 100, 2);
    let o = app.order_ok("p", 2, "manual");
    assert_eq!(app.admin_product("p")["stock"], 0);
    let no = o["order_no"].as_str().unwrap();
    eventually(Duration::from_secs(10), || {
        (app.admin_order(no)["status"] == "expired").then_some(())
    });
    let p = app.admin_product("p");
    assert_eq!(p["keys"], json!({"available": 2, "held": 0, "sold": 0}));
    let events: Vec<String> = app.admin_order(no)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["created", "expired"]);
    // The released keys sell again.
    app.order_ok("p", 2, "manual");
}

#[test]
fn admin_lists_orders_newest_first_with_filters_and_cursor() {
    let app = spawn();
    app.product_with_keys("p", 100, 10);
    let mut nos = Vec::new();
    for _ in 0..5 {
        nos.push(
            app.order_ok("p", 1, "manual")["order_no"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        // Orders list by their creation ms (same-ms orders in no set
        // order): a different ms for each makes "newest first" one order.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let pay = app.admin_post(&format!("/api/v1/admin/orders/{}/pay", nos[1]), json!({}));
    assert_eq!(pay.status(), 200);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/admin/orders?limit=2&cursor={c}"),
            None => "/api/v1/admin/orders?limit=2".to_string(),
        };
        let page: Value = app.admin_get(&q).json().unwrap();
        for o in page["orders"].as_array().unwrap() {
            assert_eq!(o["email"], "buyer@example.com");
            assert!(o["events"].is_array());
            seen.push(o["order_no"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let newest_first: Vec<String> = nos.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let delivered: Value = app
        .admin_get("/api/v1/admin/orders?status=delivered")
        .json()
        .unwrap();
    assert_eq!(delivered["orders"].as_array().unwrap().len(), 1);
    assert_eq!(delivered["orders"][0]["order_no"], nos[1].as_str());
    let none: Value = app
        .admin_get("/api/v1/admin/orders?email=else@example.com")
        .json()
        .unwrap();
    assert!(none["orders"].as_array().unwrap().is_empty());
    // A filtered list pages too, and a page ending on the last match says
    // so with no cursor.
    let page_nos = |page: &Value| -> Vec<String> {
        page["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["order_no"].as_str().unwrap().to_string())
            .collect()
    };
    let pending: Value = app
        .admin_get("/api/v1/admin/orders?status=pending&limit=2")
        .json()
        .unwrap();
    assert_eq!(page_nos(&pending), [nos[4].clone(), nos[3].clone()]);
    let rest: Value = app
        .admin_get(&format!(
            "/api/v1/admin/orders?status=pending&limit=2&cursor={}",
            pending["next_cursor"].as_str().unwrap()
        ))
        .json()
        .unwrap();
    assert_eq!(page_nos(&rest), [nos[2].clone(), nos[0].clone()]);
    assert!(rest["next_cursor"].is_null());
    for bad in ["12", "", "F0000", "f0000000000000000"] {
        let (status, code) =
            error_code(app.admin_get(&format!("/api/v1/admin/orders?cursor={bad}")));
        assert_eq!(
            (status, code.as_str()),
            (422, "invalid_request"),
            "cursor {bad:?}"
        );
    }
    assert_eq!(error_code(app.get("/api/v1/admin/orders")).0, 401);
    assert_eq!(
        error_code(app.admin_get("/api/v1/admin/orders/F0000000000000000")).0,
        404
    );
}

#[test]
fn orders_and_keys_survive_a_restart() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    let o = app.order_ok("p", 1, "hmac");
    let no = o["order_no"].as_str().unwrap().to_string();
    let tok = o["token"].as_str().unwrap().to_string();
    assert_eq!(app.hmac_notify(&no, "T-1", 100).status(), 200);
    let dir = app.stop();
    let text = config_text(dir.path(), "");
    let app = start(dir, &text);
    let view: Value = app.buyer_view(&no, &tok).json().unwrap();
    assert_eq!(view["status"], "delivered");
    assert_eq!(view["keys"], json!(["p-KEY-00000"]));
    assert_eq!(
        app.admin_product("p")["keys"],
        json!({"available": 2, "held": 0, "sold": 1})
    );
}

#[test]
fn a_generated_admin_token_is_stored_hashed_and_works_after_restart() {
    let app = spawn_with(|dir| config_text(dir, "").replace(&format!("token = \"{ADMIN}\""), ""));
    let token = app
        .generated_admin_token
        .clone()
        .expect("a token was generated");
    let hash = std::fs::read_to_string(app.dir.path().join("data/admin_token.argon2")).unwrap();
    assert!(
        hash.starts_with("$argon2"),
        "only the argon2 hash is stored"
    );
    assert!(!hash.contains(&token));
    let ok = app
        .client
        .get(app.url("/api/v1/admin/products"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        error_code(app.admin_get("/api/v1/admin/products")).0,
        401,
        "another token is refused"
    );
    let dir = app.stop();
    let text = config_text(dir.path(), "").replace(&format!("token = \"{ADMIN}\""), "");
    let app = start(dir, &text);
    assert!(app.generated_admin_token.is_none(), "generated once only");
    let ok = app
        .client
        .get(app.url("/api/v1/admin/products"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn healthz_answers_ok() {
    let app = spawn();
    let r = app.get("/healthz");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap(), json!({"status": "ok"}));
}
