//! The OpenAPI document covers every route, and every documented route is
//! really served (it is generated from the same table that registers them).

use crate::helpers::*;
use serde_json::Value;

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let app = spawn();
    let doc: Value = app.get("/api/v1/openapi.json").json().unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for r in faka::http::ROUTES {
        let op = &paths[r.path][r.method.to_lowercase()];
        assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
        assert_eq!(
            op["security"].is_array(),
            r.admin,
            "{} {}",
            r.method,
            r.path
        );
        documented += 1;
        // The route exists: it never answers "no route" (404 from the
        // fallback) or 405 for its own method.
        let url = app.url(
            &r.path
                .replace("{id}", "zz-none")
                .replace("{order_no}", "F0000000000000000"),
        );
        let resp = app
            .admin(app.client.request(r.method.parse().unwrap(), url))
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().unwrap_or_default();
        assert_ne!(status, 405, "{} {}", r.method, r.path);
        assert!(
            !body.contains("no route for"),
            "{} {} is documented but not served",
            r.method,
            r.path
        );
    }
    // The contract's routes, all of them.
    for (m, p) in [
        ("get", "/api/v1/products"),
        ("get", "/api/v1/products/{id}"),
        ("post", "/api/v1/admin/products"),
        ("patch", "/api/v1/admin/products/{id}"),
        ("get", "/api/v1/admin/products"),
        ("post", "/api/v1/admin/products/{id}/keys"),
        ("get", "/api/v1/admin/products/{id}/keys"),
        ("delete", "/api/v1/admin/products/{id}/keys"),
        ("post", "/api/v1/orders"),
        ("get", "/api/v1/orders/{order_no}"),
        ("get", "/api/v1/admin/orders"),
        ("get", "/api/v1/admin/orders/{order_no}"),
        ("post", "/api/v1/admin/orders/{order_no}/refund"),
        ("post", "/api/v1/payments/hmac/notify"),
        ("post", "/api/v1/admin/orders/{order_no}/pay"),
        ("get", "/api/v1/payments/epay/notify"),
        ("post", "/api/v1/payments/epay/notify"),
        ("get", "/api/v1/admin/webhooks"),
        ("post", "/api/v1/admin/webhooks/{id}/retry"),
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("post", "/api/v1/admin/backup"),
    ] {
        assert!(paths[p][m].is_object(), "contract route {m} {p} missing");
    }
    assert_eq!(documented, faka::http::ROUTES.len());
    // And nothing is documented that is not served: the document's
    // operations are exactly the routes.
    let operations = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
        .count();
    assert_eq!(operations, faka::http::ROUTES.len());
}
