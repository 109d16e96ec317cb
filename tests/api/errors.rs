//! Requests that go wrong: every one gets the contract's error body with a
//! stable code, a message that names the field at fault, and changes nothing.

use crate::helpers::*;
use reqwest::blocking::Response;
use serde_json::{json, Value};

/// Every stored record, compared without dumping megabytes on failure.
pub fn assert_unchanged(app: &TestApp, before: &[(u8, Vec<u8>, Vec<u8>)], what: &str) {
    let after = app.dump();
    assert!(
        after.as_slice() == before,
        "{what}: a rejected request changed the store ({} records before, {} after)",
        before.len(),
        after.len()
    );
}

/// Checks that `r` is the contract's error: the status, a JSON body of
/// exactly `{"error": {"code", "message"}}` with the expected code. Returns
/// the message.
pub fn expect_error(r: Response, status: u16, code: &str) -> String {
    let got_status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().expect("error body");
    assert_eq!(
        got_status, status,
        "status of an error answer; body: {text}"
    );
    assert!(
        content_type.starts_with("application/json"),
        "an error body is JSON, got Content-Type {content_type:?}: {text}"
    );
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let top = v
        .as_object()
        .unwrap_or_else(|| panic!("error body is an object: {text}"));
    assert_eq!(top.len(), 1, "the error body has only `error`: {text}");
    let err = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("`error` is an object: {text}"));
    assert_eq!(
        err.len(),
        2,
        "`error` holds exactly code and message: {text}"
    );
    assert_eq!(v["error"]["code"], code, "error code; body: {text}");
    let message = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("`error.message` is a string: {text}"));
    assert!(
        !message.is_empty(),
        "the message explains the error: {text}"
    );
    message.to_string()
}

/// Like `expect_error`, for a code of the client's own choosing: any
/// non-empty string code is fine (405 has no code in the contract's table).
fn expect_error_body(r: Response, status: u16) -> String {
    let got_status = r.status().as_u16();
    let text = r.text().expect("error body");
    assert_eq!(got_status, status, "status; body: {text}");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "only `error`: {text}"
    );
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("a string code: {text}"));
    assert!(!code.is_empty(), "{text}");
    let message = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("a string message: {text}"));
    assert!(!message.is_empty(), "{text}");
    assert_eq!(v["error"].as_object().map(|o| o.len()), Some(2), "{text}");
    code.to_string()
}

fn send_raw(
    app: &TestApp,
    method: &str,
    path: &str,
    admin: bool,
    content_type: &str,
    body: Vec<u8>,
) -> Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = app.client.request(method, app.url(path));
    if admin {
        rb = app.admin(rb);
    }
    rb.header("Content-Type", content_type)
        .body(body)
        .send()
        .expect("request")
}

fn send_json(app: &TestApp, method: &str, path: &str, admin: bool, body: Value) -> Response {
    send_raw(
        app,
        method,
        path,
        admin,
        "application/json",
        body.to_string().into_bytes(),
    )
}

/// A shop with one product holding keys and one pending order, so that
/// every kind of route has something a broken request could damage.
fn shop_with_an_order() -> (TestApp, String) {
    let app = spawn();
    app.product_with_keys("p", 100, 5);
    let o = app.order_ok("p", 1, "manual");
    let no = o["order_no"].as_str().expect("order_no").to_string();
    (app, no)
}

#[test]
fn malformed_json_is_invalid_json_everywhere_and_changes_nothing() {
    let (app, no) = shop_with_an_order();
    let before = app.dump();
    let bodies: [&[u8]; 8] = [
        b"{",
        b"{\"name\": }",
        b"not json at all",
        b"{\"name\": \"x\", \"price\": 1} trailing",
        b"{\"name\": \"x\",}",
        b"{'name': 'x'}",
        b"",
        b"   ",
    ];
    let routes: [(&str, String, bool); 6] = [
        ("POST", "/api/v1/orders".into(), false),
        ("POST", "/api/v1/admin/products".into(), true),
        ("PATCH", "/api/v1/admin/products/p".into(), true),
        ("DELETE", "/api/v1/admin/products/p/keys".into(), true),
        ("POST", "/api/v1/admin/products/p/keys".into(), true),
        ("POST", format!("/api/v1/admin/orders/{no}/pay"), true),
    ];
    let mut wrong = Vec::new();
    for (method, path, admin) in &routes {
        for body in bodies {
            // An empty body is allowed on manual pay (all its fields are optional).
            let blank = body.iter().all(u8::is_ascii_whitespace);
            if path.ends_with("/pay") && blank {
                continue;
            }
            let r = send_raw(
                &app,
                method,
                path,
                *admin,
                "application/json",
                body.to_vec(),
            );
            let what = format!("{method} {path} with {:?}", String::from_utf8_lossy(body));
            if r.status() == 400 {
                expect_error(r, 400, "invalid_json");
            } else {
                wrong.push(format!(
                    "{what}: {} {}",
                    r.status(),
                    r.text().unwrap_or_default()
                ));
            }
            assert_unchanged(&app, &before, &what);
        }
    }
    assert!(
        wrong.is_empty(),
        "malformed JSON must be 400 invalid_json:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        app.admin_product("p")["keys"],
        json!({"available": 4, "held": 1, "sold": 0})
    );
}

#[test]
fn json_nested_too_deep_or_not_utf8_is_refused_without_a_server_error() {
    let app = spawn();
    app.product_with_keys("p", 100, 2);
    let before = app.dump();
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    for (path, body) in [
        ("/api/v1/orders", deep.clone()),
        ("/api/v1/admin/products", format!("{{\"name\": {deep}}}")),
        (
            "/api/v1/admin/products/p/keys",
            format!("{{\"keys\": [{deep}]}}"),
        ),
    ] {
        let r = send_raw(
            &app,
            "POST",
            path,
            true,
            "application/json",
            body.into_bytes(),
        );
        let status = r.status().as_u16();
        assert!(
            status == 400 || status == 422,
            "{path}: deeply nested JSON got {status}"
        );
        expect_error(
            r,
            status,
            if status == 400 {
                "invalid_json"
            } else {
                "invalid_request"
            },
        );
    }
    let mut bad_utf8 =
        br#"{"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": ""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    let r = send_raw(
        &app,
        "POST",
        "/api/v1/orders",
        false,
        "application/json",
        bad_utf8,
    );
    expect_error(r, 400, "invalid_json");
    assert_unchanged(&app, &before, "deep or non-UTF-8 JSON");
}

#[test]
fn wrong_types_missing_and_unknown_fields_are_invalid_requests_naming_the_field() {
    let (app, no) = shop_with_an_order();
    let before = app.dump();
    let order = |extra: Value| {
        let mut base =
            json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "manual"});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                base.as_object_mut().expect("object").remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    let cases: Vec<(&str, String, bool, Value, &str)> = vec![
        // wrong types
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"quantity": "1"})),
            "quantity",
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"quantity": 1.5})),
            "quantity",
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"quantity": -1})),
            "quantity",
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"email": 7})),
            "email",
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"product_id": ["p"]})),
            "product_id",
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"gateway": {"name": "manual"}})),
            "gateway",
        ),
        // missing fields
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"email": null})),
            "email",
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"quantity": null})),
            "quantity",
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            json!({}),
            "product_id",
        ),
        // unknown fields
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"voucher": "FREE"})),
            "voucher",
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            false,
            order(json!({"Quantity": 1})),
            "Quantity",
        ),
        (
            "POST",
            "/api/v1/admin/products".into(),
            true,
            json!({"name": 5, "price": 100}),
            "name",
        ),
        (
            "POST",
            "/api/v1/admin/products".into(),
            true,
            json!({"name": "n", "price": 100, "active": "yes"}),
            "active",
        ),
        (
            "POST",
            "/api/v1/admin/products".into(),
            true,
            json!({"name": "n", "price": 100, "max_quantity": "10"}),
            "max_quantity",
        ),
        (
            "POST",
            "/api/v1/admin/products".into(),
            true,
            json!({"name": "n", "price": 100, "stock": 5}),
            "stock",
        ),
        (
            "POST",
            "/api/v1/admin/products".into(),
            true,
            json!({"price": 100}),
            "name",
        ),
        (
            "PATCH",
            "/api/v1/admin/products/p".into(),
            true,
            json!({"description": false}),
            "description",
        ),
        (
            "PATCH",
            "/api/v1/admin/products/p".into(),
            true,
            json!({"prise": 1}),
            "prise",
        ),
        (
            "POST",
            "/api/v1/admin/products/p/keys".into(),
            true,
            json!({"keys": "KEY-1"}),
            "keys",
        ),
        (
            "POST",
            "/api/v1/admin/products/p/keys".into(),
            true,
            json!({"keys": ["KEY-1", 2]}),
            "keys",
        ),
        (
            "POST",
            "/api/v1/admin/products/p/keys".into(),
            true,
            json!({"key": ["KEY-1"]}),
            "key",
        ),
        (
            "POST",
            "/api/v1/admin/products/p/keys".into(),
            true,
            json!({}),
            "keys",
        ),
        (
            "DELETE",
            "/api/v1/admin/products/p/keys".into(),
            true,
            json!({"ids": "1"}),
            "ids",
        ),
        (
            "DELETE",
            "/api/v1/admin/products/p/keys".into(),
            true,
            json!({"ids": ["1"], "all": true}),
            "all",
        ),
        (
            "DELETE",
            "/api/v1/admin/products/p/keys".into(),
            true,
            json!({}),
            "ids",
        ),
        (
            "POST",
            format!("/api/v1/admin/orders/{no}/pay"),
            true,
            json!({"trade_no": 42}),
            "trade_no",
        ),
        (
            "POST",
            format!("/api/v1/admin/orders/{no}/pay"),
            true,
            json!({"amount": 100}),
            "amount",
        ),
        (
            "POST",
            format!("/api/v1/admin/orders/{no}/refund"),
            true,
            json!({"reason": "x"}),
            "reason",
        ),
    ];
    for (method, path, admin, body, field) in cases {
        let what = format!("{method} {path} {body}");
        let msg = expect_error(
            send_json(&app, method, &path, admin, body),
            422,
            "invalid_request",
        );
        assert!(
            msg.contains(field),
            "{what}: the message {msg:?} names `{field}`"
        );
        assert_unchanged(&app, &before, &what);
    }
}

#[test]
fn a_body_that_is_not_a_json_object_is_refused() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    let before = app.dump();
    let cases: [(&str, &str, Value); 7] = [
        // The fields of each body, in order, as an array instead of an object.
        (
            "/api/v1/orders",
            "POST",
            json!(["p", 1, "a@b.co", "manual", null]),
        ),
        (
            "/api/v1/admin/products",
            "POST",
            json!(["arr", "Array", null, 100, null, null, null]),
        ),
        (
            "/api/v1/admin/products/p/keys",
            "POST",
            json!([["KEY-FROM-AN-ARRAY"]]),
        ),
        ("/api/v1/admin/products/p/keys", "DELETE", json!([["1"]])),
        // Scalars.
        ("/api/v1/orders", "POST", json!("p")),
        ("/api/v1/orders", "POST", json!(null)),
        ("/api/v1/admin/products", "POST", json!(42)),
    ];
    let mut wrong = Vec::new();
    let mut before = before;
    for (path, method, body) in cases {
        let what = format!("{method} {path} {body}");
        let r = send_json(&app, method, path, path.contains("admin"), body);
        if r.status() == 422 {
            expect_error(r, 422, "invalid_request");
        } else {
            wrong.push(format!(
                "{what}: {} {}",
                r.status(),
                r.text().unwrap_or_default()
            ));
        }
        let after = app.dump();
        if after != before {
            wrong.push(format!("{what}: changed the store"));
            before = after;
        }
    }
    assert!(
        wrong.is_empty(),
        "a non-object body is a wrong type (422):\n{}",
        wrong.join("\n")
    );
    assert_eq!(app.admin_product("p")["keys"]["held"], 0);
}

#[test]
fn an_oversized_body_on_a_normal_route_is_payload_too_large() {
    let (app, _) = shop_with_an_order();
    let before = app.dump();
    let just_over = 64 * 1024 + 1;
    let padded = |template: Value, field: &str| {
        let small = template.to_string().len();
        let mut v = template;
        v[field] = Value::String("x".repeat(just_over - small + 2));
        let text = v.to_string();
        assert!(text.len() > 64 * 1024);
        text
    };
    let order = padded(
        json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "manual", "query_password": ""}),
        "query_password",
    );
    let product = padded(
        json!({"name": "big", "price": 1, "description": ""}),
        "description",
    );
    let patch = padded(json!({"description": ""}), "description");
    let cases = [
        ("POST", "/api/v1/orders", false, order),
        ("POST", "/api/v1/admin/products", true, product),
        ("PATCH", "/api/v1/admin/products/p", true, patch),
    ];
    for (method, path, admin, body) in &cases {
        let r = send_raw(
            &app,
            method,
            path,
            *admin,
            "application/json",
            body.clone().into_bytes(),
        );
        expect_error(r, 413, "payload_too_large");
        assert_unchanged(
            &app,
            &before,
            &format!("{method} {path} of {} bytes", body.len()),
        );
    }
    // Without a Content-Length (chunked), the limit holds while the body arrives.
    let chunked =
        reqwest::blocking::Body::new(std::io::Cursor::new(cases[0].3.clone().into_bytes()));
    let r = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("Content-Type", "application/json")
        .body(chunked)
        .send()
        .expect("chunked request");
    expect_error(r, 413, "payload_too_large");
    assert_unchanged(&app, &before, "chunked oversized order");
    // Just under the limit is read (and judged on its content).
    let fits = format!(
        "{}{}",
        json!({"name": "fits", "price": 1}),
        " ".repeat(63 * 1024)
    );
    let r = send_raw(
        &app,
        "POST",
        "/api/v1/admin/products",
        true,
        "application/json",
        fits.into_bytes(),
    );
    assert_eq!(r.status(), 201, "a body under 64 KiB is read");
}

#[test]
fn an_unknown_path_is_not_found_with_the_error_body() {
    let app = spawn();
    app.product_with_keys("p", 100, 1);
    let before = app.dump();
    let cases = [
        ("GET", "/nope"),
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v2/products"),
        ("POST", "/api/v1/products/p/buy"),
        ("GET", "/api/v1/admin/products/p/keys/extra"),
        ("DELETE", "/api/v1/everything"),
        ("GET", "/api/v1/products/p/keys"),
    ];
    for (method, path) in cases {
        let r = send_raw(&app, method, path, false, "application/json", Vec::new());
        expect_error(r, 404, "not_found");
        assert_unchanged(&app, &before, path);
    }
}

#[test]
fn a_wrong_method_is_405_with_the_error_body() {
    let app = spawn();
    app.product_with_keys("p", 100, 1);
    let before = app.dump();
    let cases = [
        ("DELETE", "/api/v1/products", false),
        ("POST", "/api/v1/products/p", false),
        ("PUT", "/api/v1/orders", false),
        ("GET", "/api/v1/payments/hmac/notify", false),
        ("POST", "/healthz", false),
        ("DELETE", "/api/v1/admin/products", true),
        ("GET", "/api/v1/admin/products/p", true),
        ("PUT", "/api/v1/admin/products/p/keys", true),
        ("DELETE", "/api/v1/admin/orders", true),
    ];
    for (method, path, admin) in cases {
        let r = send_json(&app, method, path, admin, json!({"name": "x", "price": 1}));
        let code = expect_error_body(r, 405);
        assert_ne!(code, "not_found", "{method} {path}");
        assert_unchanged(&app, &before, &format!("{method} {path}"));
    }
}

#[test]
fn bad_query_values_are_invalid_requests_naming_the_parameter() {
    let (app, _) = shop_with_an_order();
    let before = app.dump();
    let cases = [
        ("/api/v1/admin/products/p/keys?limit=0", "limit"),
        ("/api/v1/admin/products/p/keys?limit=abc", "limit"),
        ("/api/v1/admin/products/p/keys?limit=-1", "limit"),
        ("/api/v1/admin/products/p/keys?limit=1.5", "limit"),
        ("/api/v1/admin/products/p/keys?cursor=xyz", "cursor"),
        ("/api/v1/admin/products/p/keys?cursor=-3", "cursor"),
        ("/api/v1/admin/products/p/keys?state=bogus", "state"),
        ("/api/v1/admin/products/p/keys?state=AVAILABLE", "state"),
        ("/api/v1/admin/orders?limit=0", "limit"),
        ("/api/v1/admin/orders?limit=abc", "limit"),
        ("/api/v1/admin/orders?cursor=xyz", "cursor"),
        ("/api/v1/admin/orders?status=bogus", "status"),
        ("/api/v1/admin/orders?status=Delivered", "status"),
    ];
    for (path, field) in cases {
        let msg = expect_error(app.admin_get(path), 422, "invalid_request");
        assert!(
            msg.contains(field),
            "{path}: the message {msg:?} names `{field}`"
        );
        assert_unchanged(&app, &before, path);
    }
    // The same parameters with good values work.
    for path in [
        "/api/v1/admin/products/p/keys?limit=1&state=available",
        "/api/v1/admin/orders?limit=1&status=pending",
    ] {
        assert_eq!(app.admin_get(path).status(), 200, "{path}");
    }
}

#[test]
fn no_malformed_request_gets_a_server_error() {
    let (app, no) = shop_with_an_order();
    let before = app.dump();
    let junk: [&[u8]; 5] = [
        b"\x00\x01\x02",
        b"\xff\xfe\xfd",
        b"{\"a\":\"\\ud800\"}",
        b"[]",
        b"1e999999",
    ];
    let routes = [
        ("POST", "/api/v1/orders".to_string(), false),
        ("POST", "/api/v1/admin/products".to_string(), true),
        ("PATCH", "/api/v1/admin/products/p".to_string(), true),
        ("POST", "/api/v1/admin/products/p/keys".to_string(), true),
        ("DELETE", "/api/v1/admin/products/p/keys".to_string(), true),
        ("POST", format!("/api/v1/admin/orders/{no}/pay"), true),
        ("POST", format!("/api/v1/admin/orders/{no}/refund"), true),
    ];
    for (method, path, admin) in &routes {
        for body in junk {
            for ct in ["application/json", "text/plain", "application/octet-stream"] {
                // Any UTF-8 line is a valid key in a text upload.
                if path.ends_with("/keys") && method == &"POST" && ct == "text/plain" {
                    continue;
                }
                let r = send_raw(&app, method, path, *admin, ct, body.to_vec());
                let status = r.status().as_u16();
                let what = format!("{method} {path} ({ct}) {:?}", String::from_utf8_lossy(body));
                assert!((400..500).contains(&status), "{what}: got {status}");
                expect_error_body(r, status);
                assert_unchanged(&app, &before, &what);
            }
        }
    }
}
