//! Presentation fields on products (contract v1.1): category, sort, image,
//! instructions and the low-stock threshold, through create, PATCH and the
//! public and admin bodies; the category filter and the category list.

use crate::errors::{assert_unchanged, expect_error};
use crate::helpers::*;
use serde_json::{json, Value};

fn create(app: &TestApp, body: Value) -> reqwest::blocking::Response {
    app.admin_post("/api/v1/admin/products", body)
}

fn patch(app: &TestApp, id: &str, body: Value) -> reqwest::blocking::Response {
    app.admin(
        app.client
            .patch(app.url(&format!("/api/v1/admin/products/{id}"))),
    )
    .json(&body)
    .send()
    .expect("patch")
}

fn ids(app: &TestApp, path: &str) -> Vec<String> {
    let v: Value = app.get(path).json().expect("json");
    v["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn presentation_fields_are_kept_shown_and_cleared_by_null() {
    let app = spawn();
    let r = create(
        &app,
        json!({"id": "steam-10", "name": "Steam", "price": 6900, "category": " 游戏 ",
               "sort": -2, "image_url": "https://img.example.com/s.png",
               "instructions": "Redeem in the Steam client.", "low_stock": 5}),
    );
    assert_eq!(r.status(), 201);
    let p: Value = r.json().expect("json");
    assert_eq!(p["category"], "游戏", "trimmed");
    assert_eq!(p["sort"], -2);
    assert_eq!(p["image_url"], "https://img.example.com/s.png");
    assert_eq!(p["instructions"], "Redeem in the Steam client.");
    assert_eq!(p["low_stock"], 5);
    let public: Value = app.get("/api/v1/products/steam-10").json().expect("json");
    assert_eq!(public["category"], "游戏");
    assert_eq!(public["instructions"], "Redeem in the Steam client.");

    let r = patch(&app, "steam-10", json!({"category": null, "sort": 3}));
    assert_eq!(r.status(), 200);
    let p: Value = r.json().expect("json");
    assert_eq!(p["category"], Value::Null, "null clears");
    assert_eq!(p["sort"], 3);
    assert_eq!(
        p["image_url"], "https://img.example.com/s.png",
        "absent keeps"
    );
    let p = app.admin_product("steam-10");
    assert_eq!(p["low_stock"], 5);
    assert_eq!(p["category"], Value::Null);

    let r = create(&app, json!({"id": "plain", "name": "Plain", "price": 1}));
    let p: Value = r.json().expect("json");
    assert_eq!(
        (
            &p["category"],
            &p["sort"],
            &p["image_url"],
            &p["instructions"],
            &p["low_stock"]
        ),
        (
            &Value::Null,
            &json!(0),
            &Value::Null,
            &Value::Null,
            &json!(0)
        ),
        "defaults"
    );
}

#[test]
fn bad_presentation_fields_are_refused_naming_the_field_and_change_nothing() {
    let app = spawn();
    app.product_with_keys("p", 500, 1);
    let before = app.dump();
    let cases = [
        (json!({"category": "x".repeat(65)}), "category"),
        (json!({"category": 5}), "category"),
        (json!({"sort": "1"}), "sort"),
        (json!({"sort": 1.5}), "sort"),
        (
            json!({"image_url": "http://plain.example.com/a.png"}),
            "image_url",
        ),
        (
            json!({"image_url": "//evil.example.com/a.png"}),
            "image_url",
        ),
        (json!({"image_url": "javascript:alert(1)"}), "image_url"),
        (json!({"image_url": "/a b.png"}), "image_url"),
        (
            json!({"image_url": format!("/{}", "a".repeat(2048))}),
            "image_url",
        ),
        (json!({"instructions": "i".repeat(4097)}), "instructions"),
        (json!({"low_stock": -1}), "low_stock"),
        (json!({"tiers": [{"min_quantity": 1, "price": 5}]}), "tiers"),
    ];
    for (body, field) in cases {
        let msg = expect_error(patch(&app, "p", body.clone()), 422, "invalid_request");
        assert!(msg.contains(field), "{body}: {msg:?} names {field}");
        let mut create_body = body.clone();
        create_body["name"] = json!("N");
        create_body["price"] = json!(1);
        let msg = expect_error(create(&app, create_body), 422, "invalid_request");
        assert!(msg.contains(field), "{body}: {msg:?} names {field}");
        assert_unchanged(&app, &before, &body.to_string());
    }
}

#[test]
fn the_catalogue_is_ordered_by_sort_then_id_and_filters_by_category() {
    let app = spawn();
    for (id, sort, category) in [
        ("b", 1, Some("games")),
        ("a", 1, Some("games")),
        ("c", -5, Some("software")),
        ("d", 0, None),
        ("e", 9, Some("games")),
    ] {
        let r = create(
            &app,
            json!({"id": id, "name": id, "price": 1, "sort": sort, "category": category}),
        );
        assert_eq!(r.status(), 201);
    }
    patch(&app, "e", json!({"active": false}));
    assert_eq!(ids(&app, "/api/v1/products"), ["c", "d", "a", "b"]);
    assert_eq!(ids(&app, "/api/v1/products?category=games"), ["a", "b"]);
    assert_eq!(
        ids(&app, "/api/v1/products?category=nothing"),
        Vec::<String>::new()
    );
    let cats: Value = app.get("/api/v1/categories").json().expect("json");
    assert_eq!(
        cats,
        json!({"categories": [{"name": "software", "products": 1}, {"name": "games", "products": 2}]}),
        "active products only, in storefront order"
    );
}
