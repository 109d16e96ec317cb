//! The catalogue: buyers see active products with live stock; the merchant
//! creates, edits and counts products with the admin token.

use crate::errors::{assert_unchanged, expect_error};
use crate::helpers::*;
use reqwest::blocking::Response;
use serde_json::{json, Value};

fn patch(app: &TestApp, id: &str, body: Value) -> Response {
    app.admin(
        app.client
            .patch(app.url(&format!("/api/v1/admin/products/{id}"))),
    )
    .json(&body)
    .send()
    .expect("patch")
}

fn create(app: &TestApp, body: Value) -> Response {
    app.admin_post("/api/v1/admin/products", body)
}

fn public_list(app: &TestApp) -> Vec<Value> {
    let r = app.get("/api/v1/products");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().expect("json");
    v["products"].as_array().expect("products array").clone()
}

fn public_ids(app: &TestApp) -> Vec<String> {
    let mut ids: Vec<String> = public_list(app)
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

fn public_detail(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/products/{id}"));
    assert_eq!(r.status(), 200, "public detail of {id}");
    r.json().expect("json")
}

/// `[a-z0-9][a-z0-9_-]{0,63}`
fn is_product_id(s: &str) -> bool {
    let b = s.as_bytes();
    let first = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let rest = |c: &u8| first(c) || *c == b'_' || *c == b'-';
    (1..=64).contains(&b.len()) && first(&b[0]) && b[1..].iter().all(rest)
}

fn pay(app: &TestApp, order_no: &str) -> Value {
    let r = app.admin_post(&format!("/api/v1/admin/orders/{order_no}/pay"), json!({}));
    assert_eq!(r.status(), 200, "manual payment");
    r.json().expect("json")
}

#[test]
fn buyers_see_only_active_products_with_their_live_stock() {
    let app = spawn();
    let r = create(
        &app,
        json!({"id": "steam-10", "name": "Steam 10 USD", "description": "A gift card", "price": 6900,
               "min_quantity": 1, "max_quantity": 5}),
    );
    assert_eq!(r.status(), 201);
    app.import("steam-10", &["S-1".into(), "S-2".into(), "S-3".into()]);
    let r = create(
        &app,
        json!({"id": "retired", "name": "Retired", "price": 100, "active": false}),
    );
    assert_eq!(r.status(), 201);
    app.import("retired", &["R-1".into()]);

    let list = public_list(&app);
    assert_eq!(list.len(), 1, "only the active product is listed: {list:?}");
    let expected = json!({"id": "steam-10", "name": "Steam 10 USD", "description": "A gift card",
        "price": 6900, "currency": "CNY", "stock": 3, "min_quantity": 1, "max_quantity": 5, "active": true,
        "category": null, "sort": 0, "image_url": null, "instructions": null, "low_stock": 0,
        "tiers": []});
    assert_eq!(list[0], expected);
    assert_eq!(public_detail(&app, "steam-10"), expected);
    assert!(
        list[0].get("keys").is_none(),
        "key counts are for the merchant only"
    );

    // A pending order holds two keys: they can no longer be bought.
    let o = app.order_ok("steam-10", 2, "manual");
    assert_eq!(public_list(&app)[0]["stock"], 1);
    assert_eq!(public_detail(&app, "steam-10")["stock"], 1);
    // Once paid they are sold, and stock stays at what is left.
    pay(&app, o["order_no"].as_str().expect("order_no"));
    assert_eq!(public_detail(&app, "steam-10")["stock"], 1);
    app.import("steam-10", &["S-4".into()]);
    assert_eq!(public_detail(&app, "steam-10")["stock"], 2);

    expect_error(app.get("/api/v1/products/retired"), 404, "not_found");
    expect_error(app.get("/api/v1/products/never-made"), 404, "not_found");
    expect_error(app.get("/api/v1/products/NOT%20AN%20ID"), 404, "not_found");
}

#[test]
fn a_new_product_is_answered_with_201_and_its_full_description() {
    let app = spawn();
    let r = create(
        &app,
        json!({"id": "vip-month", "name": "VIP month", "price": 1500}),
    );
    assert_eq!(r.status(), 201);
    let p: Value = r.json().expect("json");
    assert_eq!(p["id"], "vip-month");
    assert_eq!(p["name"], "VIP month");
    assert_eq!(p["price"], 1500);
    assert_eq!(p["currency"], "CNY");
    assert_eq!(p["stock"], 0);
    assert_eq!(
        p["active"], true,
        "a product is active unless told otherwise"
    );
    assert!(p["min_quantity"].as_u64().expect("min") >= 1);
    assert!(p["max_quantity"].as_u64().expect("max") >= p["min_quantity"].as_u64().expect("min"));
    assert_eq!(public_detail(&app, "vip-month")["name"], "VIP month");
    assert_eq!(
        app.admin_product("vip-month")["keys"],
        json!({"available": 0, "held": 0, "sold": 0})
    );
}

#[test]
fn a_product_created_without_an_id_gets_a_valid_generated_one() {
    let app = spawn();
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = create(
            &app,
            json!({"name": format!("Nameless {n}"), "price": 100 + n}),
        );
        assert_eq!(r.status(), 201);
        let p: Value = r.json().expect("json");
        let id = p["id"].as_str().expect("a generated id").to_string();
        assert!(
            is_product_id(&id),
            "generated id {id:?} matches [a-z0-9][a-z0-9_-]{{0,63}}"
        );
        assert_eq!(public_detail(&app, &id)["name"], format!("Nameless {n}"));
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every generated id is new");
    assert_eq!(public_ids(&app), ids);
}

#[test]
fn an_existing_id_is_a_conflict_and_leaves_the_first_product_alone() {
    let app = spawn();
    app.product_with_keys("steam-10", 6900, 2);
    let before = app.dump();
    let r = create(
        &app,
        json!({"id": "steam-10", "name": "Impostor", "price": 1}),
    );
    expect_error(r, 409, "conflict");
    assert_unchanged(&app, &before, "duplicate product id");
    let p = public_detail(&app, "steam-10");
    assert_eq!(p["name"], "Product steam-10");
    assert_eq!(p["price"], 6900);
    assert_eq!(p["stock"], 2);
}

#[test]
fn product_ids_outside_the_allowed_pattern_are_refused() {
    let app = spawn();
    let before = app.dump();
    let bad = [
        String::new(),
        "Steam".into(),
        "-leading-dash".into(),
        "_leading-underscore".into(),
        "has space".into(),
        "dot.ted".into(),
        "slash/ed".into(),
        "ünïcode".into(),
        "a".repeat(65),
        "tab\there".into(),
    ];
    for id in &bad {
        let r = create(&app, json!({"id": id, "name": "Bad", "price": 100}));
        let msg = expect_error(r, 422, "invalid_request");
        assert!(msg.contains("id"), "{id:?}: the message {msg:?} names `id`");
        assert_unchanged(&app, &before, id);
    }
    let r = create(&app, json!({"id": 12, "name": "Bad", "price": 100}));
    expect_error(r, 422, "invalid_request");
    assert_unchanged(&app, &before, "numeric id");

    let good = [
        "a".to_string(),
        "0".into(),
        "9lives_x-y".into(),
        "z".repeat(64),
    ];
    for id in &good {
        let r = create(&app, json!({"id": id, "name": "Good", "price": 100}));
        assert_eq!(r.status(), 201, "{id:?} is a valid id");
        assert_eq!(r.json::<Value>().expect("json")["id"], id.as_str());
    }
    let mut expected: Vec<String> = good.to_vec();
    expected.sort();
    assert_eq!(public_ids(&app), expected);
}

#[test]
fn a_price_must_be_a_positive_whole_number_of_minor_units() {
    let app = spawn();
    let before = app.dump();
    let prices = [
        json!(0),
        json!(-1),
        json!(-6900),
        json!("6900"),
        json!(69.5),
        json!(null),
        json!(true),
    ];
    for price in prices {
        let r = create(&app, json!({"id": "p", "name": "Priced", "price": price}));
        let msg = expect_error(r, 422, "invalid_request");
        assert!(
            msg.contains("price"),
            "price {price}: the message {msg:?} names `price`"
        );
        assert_unchanged(&app, &before, &format!("price {price}"));
    }
    let r = create(&app, json!({"id": "p", "name": "Priceless"}));
    let msg = expect_error(r, 422, "invalid_request");
    assert!(msg.contains("price"), "a missing price is named: {msg:?}");
    assert_unchanged(&app, &before, "missing price");
    expect_error(app.get("/api/v1/products/p"), 404, "not_found");

    let r = create(&app, json!({"id": "p", "name": "One fen", "price": 1}));
    assert_eq!(r.status(), 201);
    assert_eq!(public_detail(&app, "p")["price"], 1);
}

#[test]
fn patching_a_product_changes_only_the_fields_given() {
    let app = spawn();
    app.product_with_keys("p", 500, 4);
    let r = patch(&app, "p", json!({"name": "Renamed", "price": 750}));
    assert_eq!(r.status(), 200);
    let p: Value = r.json().expect("json");
    assert_eq!(p["id"], "p");
    assert_eq!(p["name"], "Renamed");
    assert_eq!(p["price"], 750);
    assert_eq!(p["max_quantity"], 10, "untouched fields keep their values");
    assert_eq!(p["stock"], 4);

    let r = patch(
        &app,
        "p",
        json!({"description": "Now with words", "max_quantity": 3}),
    );
    assert_eq!(r.status(), 200);
    let shown = public_detail(&app, "p");
    assert_eq!(shown["name"], "Renamed");
    assert_eq!(shown["price"], 750);
    assert_eq!(shown["description"], "Now with words");
    assert_eq!(shown["max_quantity"], 3);
    assert_eq!(shown["stock"], 4);

    // The new price and limits apply to the next order.
    expect_error(app.order("p", 4, "manual"), 422, "invalid_request");
    let o = app.order_ok("p", 3, "manual");
    assert_eq!(o["amount"], 2250);
}

#[test]
fn an_inactive_product_disappears_from_the_shop_but_not_from_the_admin_list() {
    let app = spawn();
    app.product_with_keys("seasonal", 300, 2);
    app.product_with_keys("always", 300, 1);
    let r = patch(&app, "seasonal", json!({"active": false}));
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().expect("json")["active"], false);

    assert_eq!(public_ids(&app), vec!["always".to_string()]);
    expect_error(app.get("/api/v1/products/seasonal"), 404, "not_found");
    expect_error(app.order("seasonal", 1, "manual"), 404, "not_found");
    let admin = app.admin_product("seasonal");
    assert_eq!(admin["active"], false);
    assert_eq!(admin["keys"]["available"], 2);

    let r = patch(&app, "seasonal", json!({"active": true}));
    assert_eq!(r.status(), 200);
    assert_eq!(
        public_ids(&app),
        vec!["always".to_string(), "seasonal".to_string()]
    );
    assert_eq!(public_detail(&app, "seasonal")["stock"], 2);
}

#[test]
fn a_patch_cannot_change_the_id_or_set_unknown_or_invalid_fields() {
    let app = spawn();
    app.product_with_keys("p", 500, 1);
    let before = app.dump();
    let cases = [
        (json!({"id": "q"}), "id"),
        (json!({"name": "ok", "id": "p"}), "id"),
        (json!({"colour": "red"}), "colour"),
        (json!({"stock": 100}), "stock"),
        (json!({"price": 0}), "price"),
        (json!({"price": -5}), "price"),
        (json!({"price": "600"}), "price"),
        (json!({"name": ""}), "name"),
        (json!({"active": "no"}), "active"),
    ];
    for (body, field) in cases {
        let msg = expect_error(patch(&app, "p", body.clone()), 422, "invalid_request");
        assert!(
            msg.contains(field),
            "{body}: the message {msg:?} names `{field}`"
        );
        assert_unchanged(&app, &before, &body.to_string());
    }
    // min above max (the product's max_quantity is 10): the message starts
    // with the field that was sent.
    for (body, field) in [
        (json!({"min_quantity": 11}), "min_quantity:"),
        (
            json!({"max_quantity": 1, "min_quantity": 2}),
            "max_quantity:",
        ),
    ] {
        let msg = expect_error(patch(&app, "p", body.clone()), 422, "invalid_request");
        assert!(msg.starts_with(field), "{body}: {msg:?}");
        assert_unchanged(&app, &before, &body.to_string());
    }
    let p = public_detail(&app, "p");
    assert_eq!(p["name"], "Product p");
    assert_eq!(p["price"], 500);
    expect_error(app.get("/api/v1/products/q"), 404, "not_found");
}

#[test]
fn patching_an_unknown_product_is_not_found() {
    let app = spawn();
    app.product_with_keys("p", 500, 1);
    let before = app.dump();
    expect_error(
        patch(&app, "ghost", json!({"name": "Boo"})),
        404,
        "not_found",
    );
    expect_error(
        patch(&app, "NOT-AN-ID", json!({"name": "Boo"})),
        404,
        "not_found",
    );
    assert_unchanged(&app, &before, "patch of an unknown product");
    expect_error(app.get("/api/v1/products/ghost"), 404, "not_found");
}

#[test]
fn the_admin_list_counts_available_held_and_sold_keys_of_every_product() {
    let app = spawn();
    app.product_with_keys("p", 100, 6);
    let r = create(
        &app,
        json!({"id": "hidden", "name": "Hidden", "price": 100, "active": false}),
    );
    assert_eq!(r.status(), 201);
    app.import("hidden", &["H-1".into(), "H-2".into()]);

    let held = app.order_ok("p", 2, "manual");
    let sold = app.order_ok("p", 3, "manual");
    let paid = pay(&app, sold["order_no"].as_str().expect("order_no"));
    assert_eq!(paid["status"], "delivered");
    assert_eq!(held["status"], "pending");

    let list: Value = app
        .admin_get("/api/v1/admin/products")
        .json()
        .expect("json");
    let products = list["products"].as_array().expect("products");
    assert_eq!(
        products.len(),
        2,
        "inactive products are listed for the merchant"
    );
    let p = app.admin_product("p");
    assert_eq!(p["keys"], json!({"available": 1, "held": 2, "sold": 3}));
    assert_eq!(p["stock"], 1);
    assert_eq!(p["price"], 100);
    assert_eq!(p["currency"], "CNY");
    let h = app.admin_product("hidden");
    assert_eq!(h["keys"], json!({"available": 2, "held": 0, "sold": 0}));
    assert_eq!(h["active"], false);
}

#[test]
fn admin_endpoints_refuse_a_missing_or_wrong_token() {
    let app = spawn();
    app.product_with_keys("p", 100, 2);
    let o = app.order_ok("p", 1, "manual");
    let no = o["order_no"].as_str().expect("order_no").to_string();
    let before = app.dump();
    let endpoints: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/v1/admin/products".into(), None),
        (
            "POST",
            "/api/v1/admin/products".into(),
            Some(json!({"id": "x", "name": "X", "price": 1})),
        ),
        (
            "PATCH",
            "/api/v1/admin/products/p".into(),
            Some(json!({"price": 1})),
        ),
        ("GET", "/api/v1/admin/products/p/keys".into(), None),
        (
            "POST",
            "/api/v1/admin/products/p/keys".into(),
            Some(json!({"keys": ["STOLEN-1"]})),
        ),
        (
            "DELETE",
            "/api/v1/admin/products/p/keys".into(),
            Some(json!({"ids": ["1", "2"]})),
        ),
        ("GET", "/api/v1/admin/orders".into(), None),
        ("GET", format!("/api/v1/admin/orders/{no}"), None),
        (
            "POST",
            format!("/api/v1/admin/orders/{no}/pay"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/api/v1/admin/orders/{no}/refund"),
            Some(json!({})),
        ),
    ];
    let wrong_auth: [Option<String>; 7] = [
        None,
        Some("Bearer not-the-token".into()),
        Some(format!("Bearer {ADMIN}x")),
        Some(format!("Bearer {}", &ADMIN[..ADMIN.len() - 1])),
        Some(format!("Basic {ADMIN}")),
        Some(ADMIN.to_string()),
        Some("Bearer ".into()),
    ];
    for (method, path, body) in &endpoints {
        for auth in &wrong_auth {
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut rb = app.client.request(m, app.url(path));
            if let Some(a) = auth {
                rb = rb.header("Authorization", a);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let r = rb.send().expect("request");
            let what = format!("{method} {path} with Authorization {auth:?}");
            let status = r.status();
            assert_eq!(status, 401, "{what}");
            expect_error(r, 401, "unauthorized");
            assert_unchanged(&app, &before, &what);
        }
    }
    // The public side needs no token at all.
    assert_eq!(app.get("/api/v1/products").status(), 200);
    assert_eq!(app.get("/api/v1/products/p").status(), 200);
}

/// The authorization scheme is case-insensitive, as HTTP says.
#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn();
    for (scheme, status) in [
        ("Bearer", 200),
        ("bearer", 200),
        ("BEARER", 200),
        ("Basic", 401),
    ] {
        let r = app
            .client
            .get(app.url("/api/v1/admin/products"))
            .header("Authorization", format!("{scheme} {ADMIN}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), status, "{scheme}");
    }
}
