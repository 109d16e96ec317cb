//! The merchant's card keys: importing them (text or JSON, all or nothing,
//! never twice), listing them masked, paging, and removing unsold ones.

use crate::errors::{assert_unchanged, expect_error};
use crate::helpers::*;
use reqwest::blocking::Response;
use serde_json::{json, Value};
use std::collections::HashSet;

fn keys_path(id: &str) -> String {
    format!("/api/v1/admin/products/{id}/keys")
}

fn import_text(app: &TestApp, id: &str, body: &str) -> Response {
    app.admin(app.client.post(app.url(&keys_path(id))))
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(body.to_string())
        .send()
        .expect("import")
}

fn import_json(app: &TestApp, id: &str, body: Value) -> Response {
    app.admin_post(&keys_path(id), body)
}

fn ok_json(r: Response) -> Value {
    let status = r.status();
    let text = r.text().expect("body");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("json")
}

fn delete_keys(app: &TestApp, id: &str, ids: &[String]) -> Response {
    app.admin(app.client.delete(app.url(&keys_path(id))))
        .json(&json!({ "ids": ids }))
        .send()
        .expect("delete")
}

/// One page of the key listing, as raw text and JSON.
fn page(app: &TestApp, id: &str, query: &str) -> (String, Value) {
    let r = app.admin_get(&format!("{}?{query}", keys_path(id)));
    let status = r.status();
    let text = r.text().expect("body");
    assert_eq!(status, 200, "{query}: {text}");
    let v = serde_json::from_str(&text).expect("json");
    (text, v)
}

/// Every key of a product (optionally in one state), following `next_cursor`.
fn walk(app: &TestApp, id: &str, state: Option<&str>, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut q = format!("limit={limit}");
        if let Some(s) = state {
            q.push_str(&format!("&state={s}"));
        }
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (_, v) = page(app, id, &q);
        let keys = v["keys"].as_array().expect("keys array");
        assert!(keys.len() <= limit, "a page holds at most `limit` keys");
        out.extend(keys.iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(
                    v["next_cursor"].is_null(),
                    "next_cursor is a string or null"
                );
                return out;
            }
        }
    }
    panic!("paging never ended");
}

fn ids_of(keys: &[Value]) -> Vec<String> {
    keys.iter()
        .map(|k| k["id"].as_str().expect("key id is a string").to_string())
        .collect()
}

fn pay(app: &TestApp, order_no: &str) -> Value {
    let r = app.admin_post(&format!("/api/v1/admin/orders/{order_no}/pay"), json!({}));
    ok_json(r)
}

/// The keys a buyer receives for a paid order.
fn delivered(app: &TestApp, order: &Value) -> Vec<String> {
    let no = order["order_no"].as_str().expect("order_no");
    pay(app, no);
    let view = ok_json(app.buyer_view(no, order["token"].as_str().expect("token")));
    assert_eq!(view["status"], "delivered");
    view["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key text").to_string())
        .collect()
}

fn counts(app: &TestApp, id: &str) -> Value {
    app.admin_product(id)["keys"].clone()
}

fn new_product(app: &TestApp, id: &str) {
    app.product_with_keys(id, 100, 0);
}

#[test]
fn a_text_upload_is_trimmed_and_blank_lines_are_skipped() {
    let app = spawn();
    app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "p", "name": "P", "price": 100, "max_quantity": 10}),
    );
    let body = "  ALPHA-0001  \n\n\tBRAVO-0002\r\n   \r\n\n CHARLIE 0003\t\n\n";
    let r = ok_json(import_text(&app, "p", body));
    assert_eq!(r, json!({"added": 3, "duplicates": 0, "stock": 3}));
    assert_eq!(
        counts(&app, "p"),
        json!({"available": 3, "held": 0, "sold": 0})
    );

    // What the buyer gets is the trimmed text, inner spaces kept.
    let o = app.order_ok("p", 3, "manual");
    let mut got = delivered(&app, &o);
    got.sort();
    assert_eq!(got, vec!["ALPHA-0001", "BRAVO-0002", "CHARLIE 0003"]);
}

#[test]
fn a_duplicate_key_is_never_imported_twice() {
    let app = spawn();
    new_product(&app, "p");
    let r = ok_json(import_text(
        &app,
        "p",
        "KEY-A\nKEY-B\nKEY-A\n  KEY-B  \nKEY-C",
    ));
    assert_eq!(r, json!({"added": 3, "duplicates": 2, "stock": 3}));
    let r = ok_json(import_text(&app, "p", "KEY-C\nKEY-D\nKEY-A"));
    assert_eq!(r, json!({"added": 1, "duplicates": 2, "stock": 4}));
    let r = ok_json(import_json(
        &app,
        "p",
        json!({"keys": ["KEY-D", " KEY-A", "KEY-E"]}),
    ));
    assert_eq!(r, json!({"added": 1, "duplicates": 2, "stock": 5}));
    assert_eq!(walk(&app, "p", None, 100).len(), 5);

    // The same text on another product is a different key.
    new_product(&app, "q");
    let r = ok_json(import_text(&app, "q", "KEY-A\nKEY-B"));
    assert_eq!(r, json!({"added": 2, "duplicates": 0, "stock": 2}));
    assert_eq!(counts(&app, "p")["available"], 5);

    // Every key is sold once: buying all five gives five different texts.
    let o = app.order_ok("p", 5, "manual");
    let got: HashSet<String> = delivered(&app, &o).into_iter().collect();
    let want: HashSet<String> = ["KEY-A", "KEY-B", "KEY-C", "KEY-D", "KEY-E"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn keys_that_were_held_sold_or_deleted_still_count_as_duplicates() {
    let app = spawn();
    new_product(&app, "p");
    // Keys are handed out in import order, so each step picks the key it means.
    assert_eq!(app.import("p", &["SOLD-KEY-0001".into()])["added"], 1);
    let sold = app.order_ok("p", 1, "manual");
    assert_eq!(delivered(&app, &sold), vec!["SOLD-KEY-0001"]);

    assert_eq!(app.import("p", &["HELD-KEY-0002".into()])["added"], 1);
    let held = app.order_ok("p", 1, "manual");

    assert_eq!(app.import("p", &["DELETED-KEY-0003".into()])["added"], 1);
    let available = walk(&app, "p", Some("available"), 100);
    assert_eq!(available.len(), 1);
    let r = ok_json(delete_keys(&app, "p", &ids_of(&available)));
    assert_eq!(r, json!({"removed": 1}));
    assert_eq!(
        counts(&app, "p"),
        json!({"available": 0, "held": 1, "sold": 1})
    );

    let again = "SOLD-KEY-0001\nHELD-KEY-0002\nDELETED-KEY-0003\nFRESH-KEY-0004\n";
    let r = ok_json(import_text(&app, "p", again));
    assert_eq!(r, json!({"added": 1, "duplicates": 3, "stock": 1}));
    let r = ok_json(import_json(
        &app,
        "p",
        json!({"keys": ["SOLD-KEY-0001", "HELD-KEY-0002", "DELETED-KEY-0003", "FRESH-KEY-0004"]}),
    ));
    assert_eq!(r, json!({"added": 0, "duplicates": 4, "stock": 1}));
    assert_eq!(
        counts(&app, "p"),
        json!({"available": 1, "held": 1, "sold": 1})
    );

    // The held order still gets its own key, and the fresh one is the only one left.
    assert_eq!(delivered(&app, &held), vec!["HELD-KEY-0002"]);
    let last = app.order_ok("p", 1, "manual");
    assert_eq!(delivered(&app, &last), vec!["FRESH-KEY-0004"]);
}

#[test]
fn a_json_upload_imports_its_keys_array() {
    let app = spawn();
    new_product(&app, "p");
    let r = ok_json(import_json(
        &app,
        "p",
        json!({"keys": ["JSON-1", "  JSON-2\n", "卡密-3", "JSON-1"]}),
    ));
    assert_eq!(r, json!({"added": 3, "duplicates": 1, "stock": 3}));
    let r = ok_json(import_text(&app, "p", "JSON-2\n卡密-3"));
    assert_eq!(
        r,
        json!({"added": 0, "duplicates": 2, "stock": 3}),
        "JSON keys are trimmed too"
    );
    let o = app.order_ok("p", 3, "manual");
    let mut got = delivered(&app, &o);
    got.sort();
    assert_eq!(got, vec!["JSON-1", "JSON-2", "卡密-3"]);
}

#[test]
fn one_key_over_4096_bytes_rejects_the_whole_upload() {
    let app = spawn();
    app.product_with_keys("p", 100, 2);
    let before = app.dump();
    let too_long = "K".repeat(4097);
    // 2049 two-byte characters: 2049 chars is fine, 4098 bytes is not.
    let too_long_utf8 = "é".repeat(2049);

    let text = format!("GOOD-1\nGOOD-2\n{too_long}\nGOOD-3");
    let msg = expect_error(import_text(&app, "p", &text), 422, "invalid_request");
    assert!(
        msg.contains("4096"),
        "the message says what the limit is: {msg:?}"
    );
    assert_unchanged(&app, &before, "text upload with a 4097-byte key");

    let text = format!("GOOD-1\n{too_long_utf8}");
    expect_error(import_text(&app, "p", &text), 422, "invalid_request");
    assert_unchanged(&app, &before, "text upload with a 4098-byte UTF-8 key");

    let body = json!({"keys": ["GOOD-1", "GOOD-2", too_long]});
    let msg = expect_error(import_json(&app, "p", body), 422, "invalid_request");
    assert!(msg.contains("keys"), "the message names the field: {msg:?}");
    assert_unchanged(&app, &before, "JSON upload with a 4097-byte key");
    assert_eq!(
        counts(&app, "p"),
        json!({"available": 2, "held": 0, "sold": 0})
    );

    // 4096 bytes after trimming is the largest key there is.
    let biggest = "B".repeat(4096);
    let r = ok_json(import_text(&app, "p", &format!("   {biggest}   \nGOOD-1")));
    assert_eq!(r, json!({"added": 2, "duplicates": 0, "stock": 4}));
    let r = ok_json(import_json(&app, "p", json!({"keys": ["é".repeat(2048)]})));
    assert_eq!(r["added"], 1);
}

#[test]
fn an_empty_json_key_rejects_the_whole_upload() {
    let app = spawn();
    app.product_with_keys("p", 100, 1);
    let before = app.dump();
    for keys in [
        json!(["GOOD-1", ""]),
        json!(["", "GOOD-1"]),
        json!(["GOOD-1", "   ", "GOOD-2"]),
        json!(["\n\t"]),
    ] {
        let msg = expect_error(
            import_json(&app, "p", json!({ "keys": keys })),
            422,
            "invalid_request",
        );
        assert!(
            msg.contains("keys"),
            "{keys}: the message names the field: {msg:?}"
        );
        assert_unchanged(&app, &before, &keys.to_string());
    }
    assert_eq!(
        counts(&app, "p"),
        json!({"available": 1, "held": 0, "sold": 0})
    );
}

#[test]
fn a_hundred_thousand_keys_import_in_one_request() {
    let app = spawn();
    new_product(&app, "bulk");
    let keys: Vec<String> = (0..100_000)
        .map(|i| format!("BULK-{i:06}-ABCDEFGH"))
        .collect();
    let r = app.import("bulk", &keys);
    assert_eq!(
        r,
        json!({"added": 100_000, "duplicates": 0, "stock": 100_000})
    );
    assert_eq!(
        counts(&app, "bulk"),
        json!({"available": 100_000, "held": 0, "sold": 0})
    );
    let shown: Value = app.get("/api/v1/products/bulk").json().expect("json");
    assert_eq!(shown["stock"], 100_000);
    // A later upload overlapping the big one only adds what is new.
    let r = app.import(
        "bulk",
        &[
            "BULK-000000-ABCDEFGH".into(),
            "BULK-099999-ABCDEFGH".into(),
            "EXTRA".into(),
        ],
    );
    assert_eq!(r, json!({"added": 1, "duplicates": 2, "stock": 100_001}));
}

#[test]
fn the_key_listing_shows_masked_keys_and_never_their_text() {
    let app = spawn();
    new_product(&app, "p");
    let keys: Vec<String> = vec![
        "ABCDEFGHI".into(),
        "ABCD-EFGH-IJKL".into(),
        "ABCD-EFGH-IJKL-WXYZ".into(),
        "卡密卡密卡密卡密卡密卡密卡密".into(),
        "XXXXXXXXXXXXXXXXXXXXXXXX".into(),
        format!("LONG-{}", "Q".repeat(4000)),
        "SHORTKEY".into(),
        "QZJ".into(),
    ];
    assert_eq!(app.import("p", &keys)["added"], keys.len());
    let o = app.order_ok("p", 2, "manual");
    let (text, v) = page(&app, "p", "");
    let listed = v["keys"].as_array().expect("keys");
    assert_eq!(listed.len(), keys.len());
    assert!(v["next_cursor"].is_null(), "all keys fit on the first page");
    for k in &keys {
        assert!(
            !text.contains(k.as_str()),
            "the listing must not contain the key text {k:?}"
        );
    }
    let no = o["order_no"].as_str().expect("order_no");
    for entry in listed {
        let masked = entry["masked"].as_str().expect("masked is a string");
        for key in &keys {
            assert_ne!(masked, key.as_str());
            if key.len() > 8 {
                assert!(!masked.contains(key.as_str()), "{masked:?} hides {key:?}");
            }
        }
        assert!(
            masked.chars().count() <= 4 + 4 + 4,
            "{masked:?} shows at most a few characters"
        );
        assert!(entry["id"].is_string(), "{entry}");
        let state = entry["state"].as_str().expect("state");
        match state {
            "held" => assert_eq!(entry["order_no"], no),
            "available" => assert!(entry["order_no"].is_null(), "{entry}"),
            other => panic!("unexpected state {other}"),
        }
        let fields: HashSet<&str> = entry
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            HashSet::from(["id", "state", "masked", "order_no"]),
            "{entry}"
        );
    }
    assert_eq!(listed.iter().filter(|k| k["state"] == "held").count(), 2);
    // The contract's own example.
    assert!(
        listed.iter().any(|k| k["masked"] == "ABCD****WXYZ"),
        "{text}"
    );
    // Shorter keys show fewer characters: 2 + 2 of a 9-character key
    // (never 8 of its 9), 1 + 1 of an 8-character one, none of 4 or fewer.
    let masks: HashSet<&str> = listed.iter().filter_map(|k| k["masked"].as_str()).collect();
    for m in ["AB****HI", "ABCD****IJKL", "S****Y", "****", "LONG****QQQQ"] {
        assert!(masks.contains(m), "{m} in {masks:?}");
    }
    // Sold keys stay masked too.
    pay(&app, no);
    let (text, _) = page(&app, "p", "state=sold");
    for k in &keys {
        assert!(
            !text.contains(k.as_str()),
            "the sold listing must not contain {k:?}"
        );
    }
}

#[test]
fn cursor_paging_walks_every_key_exactly_once() {
    let app = spawn();
    app.product_with_keys("p", 100, 25);
    app.product_with_keys("other", 100, 10);
    let held = app.order_ok("p", 3, "manual");
    let sold = app.order_ok("p", 2, "manual");
    pay(&app, sold["order_no"].as_str().expect("order_no"));

    for limit in [1, 7, 10, 25, 1000] {
        let all = walk(&app, "p", None, limit);
        let ids = ids_of(&all);
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            ids.len(),
            25,
            "limit {limit}: every key of this product, no other"
        );
        assert_eq!(unique.len(), 25, "limit {limit}: no key twice");
    }
    let first: Value = page(&app, "p", "limit=7").1;
    assert_eq!(first["keys"].as_array().expect("keys").len(), 7);
    assert!(first["next_cursor"].is_string());

    let available = walk(&app, "p", Some("available"), 4);
    assert_eq!(available.len(), 20);
    assert!(available
        .iter()
        .all(|k| k["state"] == "available" && k["order_no"].is_null()));
    let on_hold = walk(&app, "p", Some("held"), 2);
    assert_eq!(on_hold.len(), 3);
    assert!(on_hold
        .iter()
        .all(|k| k["state"] == "held" && k["order_no"] == held["order_no"]));
    let gone = walk(&app, "p", Some("sold"), 1);
    assert_eq!(gone.len(), 2);
    assert!(gone
        .iter()
        .all(|k| k["state"] == "sold" && k["order_no"] == sold["order_no"]));

    let mut by_state: Vec<String> = [available, on_hold, gone]
        .iter()
        .flat_map(|ks| ids_of(ks))
        .collect();
    let mut everything = ids_of(&walk(&app, "p", None, 100));
    by_state.sort();
    everything.sort();
    assert_eq!(by_state, everything, "the states partition the keys");
    let other: HashSet<String> = ids_of(&walk(&app, "other", None, 3)).into_iter().collect();
    assert_eq!(other.len(), 10);
    assert!(everything.iter().all(|id| !other.contains(id)));
}

#[test]
fn deleting_keys_removes_only_available_ones() {
    let app = spawn();
    app.product_with_keys("p", 100, 6);
    let held = app.order_ok("p", 2, "manual");
    let sold = app.order_ok("p", 1, "manual");
    pay(&app, sold["order_no"].as_str().expect("order_no"));
    let all = ids_of(&walk(&app, "p", None, 100));
    assert_eq!(all.len(), 6);

    let mut ids = all.clone();
    ids.push("987654321".into());
    let r = ok_json(delete_keys(&app, "p", &ids));
    assert_eq!(r, json!({"removed": 3}), "only the three available keys go");
    assert_eq!(
        counts(&app, "p"),
        json!({"available": 0, "held": 2, "sold": 1})
    );
    assert_eq!(walk(&app, "p", Some("available"), 100).len(), 0);
    assert_eq!(walk(&app, "p", Some("held"), 100).len(), 2);
    assert_eq!(walk(&app, "p", Some("sold"), 100).len(), 1);
    let shown: Value = app.get("/api/v1/products/p").json().expect("json");
    assert_eq!(shown["stock"], 0);

    let r = ok_json(delete_keys(&app, "p", &all));
    assert_eq!(r, json!({"removed": 0}), "deleting again removes nothing");

    // The held order keeps its keys and still delivers them.
    let sold_view = app.admin_order(sold["order_no"].as_str().expect("order_no"));
    let sold_key = sold_view["keys"][0]
        .as_str()
        .expect("the sold key")
        .to_string();
    let got = delivered(&app, &held);
    assert_eq!(got.len(), 2);
    let originals: HashSet<String> = (0..6).map(|i| format!("p-KEY-{i:05}")).collect();
    assert!(
        got.iter().all(|k| originals.contains(k) && *k != sold_key),
        "{got:?}"
    );
    assert_ne!(got[0], got[1]);
}

#[test]
fn keys_of_one_product_cannot_be_deleted_through_another() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    app.product_with_keys("q", 100, 1);
    let p_ids = ids_of(&walk(&app, "p", None, 100));
    let before = app.dump();
    let r = ok_json(delete_keys(&app, "q", &p_ids));
    assert_eq!(r["removed"], 0);
    assert_unchanged(&app, &before, "deleting another product's keys");
    assert_eq!(counts(&app, "p")["available"], 3);

    let msg = expect_error(
        delete_keys(&app, "p", &["not-an-id".to_string()]),
        422,
        "invalid_request",
    );
    assert!(msg.contains("ids"), "{msg:?}");
    assert_unchanged(&app, &before, "a malformed key id");
}

#[test]
fn key_endpoints_of_an_unknown_product_are_not_found() {
    let app = spawn();
    app.product_with_keys("p", 100, 2);
    let ids = ids_of(&walk(&app, "p", None, 100));
    let before = app.dump();
    for product in ["ghost", "NOT-AN-ID"] {
        expect_error(
            import_text(&app, product, "GHOST-1\nGHOST-2"),
            404,
            "not_found",
        );
        expect_error(
            import_json(&app, product, json!({"keys": ["GHOST-1"]})),
            404,
            "not_found",
        );
        expect_error(app.admin_get(&keys_path(product)), 404, "not_found");
        expect_error(
            app.admin_get(&format!("{}?state=available", keys_path(product))),
            404,
            "not_found",
        );
        expect_error(delete_keys(&app, product, &ids), 404, "not_found");
        assert_unchanged(&app, &before, product);
    }
    assert_eq!(counts(&app, "p")["available"], 2);
}

/// Chunks of one upload are queued at the writer while the one before them
/// commits: a key repeated in a later chunk is still a duplicate, and every
/// row of every chunk lands (the check reads them all).
#[test]
fn a_key_repeated_chunks_apart_in_one_upload_is_one_duplicate() {
    let app = spawn();
    new_product(&app, "rep");
    let mut keys: Vec<String> = (0..25_000).map(|i| format!("REP-{i:06}")).collect();
    keys[22_222] = keys[3].clone();
    keys[12_345] = keys[10_001].clone();
    let r = app.import("rep", &keys);
    assert_eq!(
        r,
        json!({"added": 24_998, "duplicates": 2, "stock": 24_998})
    );
    let report = faka::ops::check::run(&app.store).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(report.keys, 24_998);
}

/// A file saved by a Windows tool starts with a byte order mark: it is not
/// part of the first key, which stays one key (a duplicate when imported
/// again without it) and reaches the buyer as it was written.
#[test]
fn a_byte_order_mark_is_not_part_of_a_key() {
    let app = spawn();
    app.product_with_keys("p", 100, 0);
    let added = app.import("p", &["\u{feff}BOM-KEY-1".into(), "BOM-KEY-2".into()]);
    assert_eq!(
        (added["added"].clone(), added["duplicates"].clone()),
        (json!(2), json!(0))
    );
    let again = app.import("p", &["BOM-KEY-1".into(), "\u{feff}BOM-KEY-2".into()]);
    assert_eq!(
        (again["added"].clone(), again["duplicates"].clone()),
        (json!(0), json!(2))
    );
    let json_upload = app
        .admin(app.client.post(app.url(&keys_path("p"))))
        .json(&json!({"keys": ["\u{feff}BOM-KEY-1"]}))
        .send()
        .unwrap();
    assert_eq!(json_upload.json::<Value>().unwrap()["duplicates"], 1);
    let o = app.order_ok("p", 1, "manual");
    let no = o["order_no"].as_str().unwrap();
    let paid: Value = app
        .admin_post(&format!("/api/v1/admin/orders/{no}/pay"), json!({}))
        .json()
        .unwrap();
    assert_eq!(paid["keys"], json!(["BOM-KEY-1"]));
}
