//! The OpenAPI document covers every route, and every documented route is
//! really served (it is generated from the same table that registers them);
//! and real answers of the API's flows match the document's schemas, field
//! for field: a field a view gains without its schema fails here.

use crate::helpers::*;
use serde_json::{json, Value};

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let app = spawn();
    let doc: Value = app.get("/api/v1/openapi.json").json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
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
        let ok = ["201", "202", "204"]
            .into_iter()
            .find(|c| op["responses"][c].is_object())
            .unwrap_or("200");
        // 204 (the wechat notify) is success without a body.
        assert!(
            ok == "204" || op["responses"][ok]["content"].is_object(),
            "{} {} documents no success body",
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

/// A strict reading of the document's schemas: every field of an object
/// must be declared (`allOf` branches pooled, as `#[serde(flatten)]`
/// documents them), every required field present, types as declared.
struct Validator<'a> {
    schemas: &'a Value,
}

impl Validator<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").expect("local $ref");
                let target = &self.schemas[name];
                assert!(target.is_object(), "dangling $ref {r}");
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// Properties and required names of an object schema, `allOf` pooled.
    fn object_parts(
        &self,
        schema: &Value,
        props: &mut Vec<(String, Value)>,
        req: &mut Vec<String>,
    ) {
        let schema = self.resolve(schema);
        for branch in schema["allOf"].as_array().into_iter().flatten() {
            self.object_parts(branch, props, req);
        }
        for (k, v) in schema["properties"].as_object().into_iter().flatten() {
            props.push((k.clone(), v.clone()));
        }
        for k in schema["required"].as_array().into_iter().flatten() {
            req.push(k.as_str().unwrap().to_string());
        }
    }

    fn type_ok(ty: &str, v: &Value) -> bool {
        match ty {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            other => panic!("unknown type {other}"),
        }
    }

    fn check(&self, schema: &Value, v: &Value, at: &str) {
        let schema = self.resolve(schema);
        if let Some(branches) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
            let fits = branches.iter().any(|b| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.check(b, v, at)))
                    .is_ok()
            });
            assert!(fits, "{at}: {v} fits no branch of {schema}");
            return;
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        assert!(
            types.is_empty() || types.iter().any(|t| Self::type_ok(t, v)),
            "{at}: {v} is not {types:?}"
        );
        if v.is_null() {
            return;
        }
        if let Some(allowed) = schema["enum"].as_array() {
            assert!(allowed.contains(v), "{at}: {v} is not one of {allowed:?}");
        }
        if let Some(min) = schema["minimum"].as_f64() {
            assert!(v.as_f64().unwrap() >= min, "{at}: {v} below {min}");
        }
        if let Some(items) = v.as_array() {
            for (i, item) in items.iter().enumerate() {
                self.check(&schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        if let Some(obj) = v.as_object() {
            let (mut props, mut req) = (Vec::new(), Vec::new());
            self.object_parts(schema, &mut props, &mut req);
            for r in &req {
                assert!(obj.contains_key(r), "{at}: required {r} missing in {v}");
            }
            for (k, field) in obj {
                let Some((_, s)) = props.iter().find(|(p, _)| p == k) else {
                    panic!("{at}: field {k} is not in the schema");
                };
                self.check(s, field, &format!("{at}.{k}"));
            }
        }
    }
}

/// Asserts a real response has the status and body the document declares
/// for `method path`.
fn assert_documented(
    doc: &Value,
    method: &str,
    path: &str,
    resp: reqwest::blocking::Response,
) -> Value {
    let status = resp.status().as_u16().to_string();
    let body: Value = resp.json().expect("json body");
    let declared = &doc["paths"][path][method]["responses"][&status];
    let schema = &declared["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} does not document {status}: {body}"
    );
    let v = Validator {
        schemas: &doc["components"]["schemas"],
    };
    v.check(schema, &body, &format!("{method} {path} {status}"));
    body
}

#[test]
fn real_answers_match_the_documented_schemas() {
    let app = spawn_with(|d| {
        config_text(
            d,
            "[webhooks]\nurl = \"http://127.0.0.1:1/hook\"\nsecret = \"hook-secret\"\nretry_base_ms = 50\n",
        )
    });
    let doc: Value = app.get("/api/v1/openapi.json").json().unwrap();
    let d = &doc;
    let c = app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "p1", "name": "P", "price": 500, "category": "games",
               "image_url": "https://example.com/p.png", "instructions": "Redeem it"}),
    );
    assert_documented(d, "post", "/api/v1/admin/products", c);
    app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "p2", "name": "Q", "price": 1}),
    );
    let keys = app
        .admin(app.client.post(app.url("/api/v1/admin/products/p1/keys")))
        .json(&json!({"keys": ["K-0001", "K-0002", "K-0003"]}))
        .send()
        .unwrap();
    assert_documented(d, "post", "/api/v1/admin/products/{id}/keys", keys);
    let edit = app
        .admin(app.client.patch(app.url("/api/v1/admin/products/p2")))
        .json(&json!({"category": null, "description": "d"}))
        .send()
        .unwrap();
    assert_documented(d, "patch", "/api/v1/admin/products/{id}", edit);
    assert_documented(d, "get", "/api/v1/products", app.get("/api/v1/products"));
    assert_documented(
        d,
        "get",
        "/api/v1/products/{id}",
        app.get("/api/v1/products/p1"),
    );
    assert_documented(
        d,
        "get",
        "/api/v1/products/{id}",
        app.get("/api/v1/products/p2"),
    );
    assert_documented(
        d,
        "get",
        "/api/v1/categories",
        app.get("/api/v1/categories"),
    );
    assert_documented(
        d,
        "get",
        "/api/v1/admin/products",
        app.admin_get("/api/v1/admin/products"),
    );
    assert_documented(d, "get", "/healthz", app.get("/healthz"));

    // An order through payment and delivery, and one left pending.
    let created = assert_documented(d, "post", "/api/v1/orders", app.order("p1", 1, "hmac"));
    let (no, token) = (
        created["order_no"].as_str().unwrap(),
        created["token"].as_str().unwrap(),
    );
    let pending = app.buyer_view(no, token);
    assert_documented(d, "get", "/api/v1/orders/{order_no}", pending);
    let paid = app.hmac_notify(no, "T-1", created["amount"].as_u64().unwrap());
    assert_documented(d, "post", "/api/v1/payments/hmac/notify", paid);
    let delivered = assert_documented(
        d,
        "get",
        "/api/v1/orders/{order_no}",
        app.buyer_view(no, token),
    );
    assert_eq!(
        delivered["keys"].as_array().map(Vec::len),
        Some(1),
        "{delivered}"
    );
    // A repeated payment adds an audit entry to the admin view's events.
    app.hmac_notify(no, "T-1", created["amount"].as_u64().unwrap());
    let admin = assert_documented(
        d,
        "get",
        "/api/v1/admin/orders/{order_no}",
        app.admin_get(&format!("/api/v1/admin/orders/{no}")),
    );
    assert!(admin["events"].as_array().unwrap().len() >= 3, "{admin}");
    let other = app.order_ok("p1", 1, "hmac");
    let other_no = other["order_no"].as_str().unwrap();
    let manual = app.admin_post(
        &format!("/api/v1/admin/orders/{other_no}/pay"),
        json!({"trade_no": "M-1", "note": "cash"}),
    );
    assert_documented(d, "post", "/api/v1/admin/orders/{order_no}/pay", manual);
    let refund = app.admin_post(&format!("/api/v1/admin/orders/{no}/refund"), json!({}));
    assert_documented(d, "post", "/api/v1/admin/orders/{order_no}/refund", refund);
    app.order_ok("p1", 1, "hmac");
    let list = assert_documented(
        d,
        "get",
        "/api/v1/admin/orders",
        app.admin_get("/api/v1/admin/orders?limit=2"),
    );
    assert!(list["next_cursor"].is_string(), "{list}");

    let keys = assert_documented(
        d,
        "get",
        "/api/v1/admin/products/{id}/keys",
        app.admin_get("/api/v1/admin/products/p1/keys"),
    );
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(3), "{keys}");
    let sold = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "sold");
    assert!(sold.is_some_and(|k| k["order_no"].is_string()), "{keys}");
    let available: Vec<_> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "available")
        .map(|k| k["id"].clone())
        .collect();
    let gone = app
        .admin(app.client.delete(app.url("/api/v1/admin/products/p1/keys")))
        .json(&json!({ "ids": available }))
        .send()
        .unwrap();
    assert_documented(d, "delete", "/api/v1/admin/products/{id}/keys", gone);

    // The webhook receiver refuses connections: events wait with an error.
    eventually(std::time::Duration::from_secs(30), || {
        let r: Value = app
            .admin_get("/api/v1/admin/webhooks?state=pending")
            .json()
            .ok()?;
        let failed = r["webhooks"]
            .as_array()?
            .iter()
            .any(|w| w["last_error"].is_string());
        failed.then_some(())
    });
    let listed = assert_documented(
        d,
        "get",
        "/api/v1/admin/webhooks",
        app.admin_get("/api/v1/admin/webhooks"),
    );
    assert!(
        !listed["webhooks"].as_array().unwrap().is_empty(),
        "{listed}"
    );
    let backup = app.admin_post("/api/v1/admin/backup", json!({}));
    assert_documented(d, "post", "/api/v1/admin/backup", backup);

    // The check has teeth: a field the schema does not declare, or a
    // declared one missing, fails it.
    let v = Validator {
        schemas: &doc["components"]["schemas"],
    };
    let product = &doc["components"]["schemas"]["AdminProductView"];
    let mut one = app.admin_product("p1");
    v.check(product, &one, "p1");
    for broken in [
        |p: &mut Value| p["undocumented"] = json!(1),
        |p: &mut Value| drop(p.as_object_mut().unwrap().remove("category")),
        |p: &mut Value| p["keys"]["sold"] = json!("one"),
        |p: &mut Value| p["active"] = Value::Null,
    ] {
        let mut bad = one.clone();
        broken(&mut bad);
        let caught = std::panic::catch_unwind(|| v.check(product, &bad, "broken"));
        assert!(caught.is_err(), "the validator accepted {bad}");
    }
    one["category"] = Value::Null;
    v.check(product, &one, "no category");
    let mut odd = delivered.clone();
    odd["status"] = json!("shipped");
    let order = &doc["components"]["schemas"]["OrderView"];
    let caught = std::panic::catch_unwind(|| v.check(order, &odd, "odd status"));
    assert!(caught.is_err(), "the validator accepted {odd}");

    // Errors: the one body every JSON route shares.
    assert_documented(
        d,
        "get",
        "/api/v1/products/{id}",
        app.get("/api/v1/products/nope"),
    );
    assert_documented(d, "post", "/api/v1/orders", app.order("p1", 99, "hmac"));
    assert_documented(
        d,
        "get",
        "/api/v1/admin/orders",
        app.get("/api/v1/admin/orders"),
    );
}

#[test]
fn non_json_routes_declare_their_content_types() {
    let app = spawn();
    let doc: Value = app.get("/api/v1/openapi.json").json().unwrap();
    let ok = |m: &str, p: &str| doc["paths"][p][m]["responses"]["200"]["content"].clone();
    let metrics = app.admin_get("/metrics");
    let ct = metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(ok("get", "/metrics")["text/plain; version=0.0.4"].is_object());
    for m in ["get", "post"] {
        let op = &doc["paths"]["/api/v1/payments/epay/notify"][m];
        assert!(op["responses"]["200"]["content"]["text/plain"].is_object());
        assert!(op["responses"]["400"]["content"]["text/plain"].is_object());
    }
    let form = &doc["paths"]["/api/v1/payments/epay/notify"]["post"]["requestBody"]["content"];
    assert!(
        form["application/x-www-form-urlencoded"].is_object(),
        "{form}"
    );
    let upload =
        &doc["paths"]["/api/v1/admin/products/{id}/keys"]["post"]["requestBody"]["content"];
    assert!(upload["text/plain"].is_object() && upload["application/json"].is_object());
    // Headers and queries are where the handlers read them.
    let has = |m: &str, p: &str, name: &str, place: &str| {
        doc["paths"][p][m]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == name && x["in"] == place)
    };
    assert!(has("post", "/api/v1/orders", "Idempotency-Key", "header"));
    assert!(has(
        "get",
        "/api/v1/orders/{order_no}",
        "X-Order-Token",
        "header"
    ));
    assert!(has("get", "/api/v1/orders/{order_no}", "token", "query"));
    assert!(has(
        "post",
        "/api/v1/payments/hmac/notify",
        "X-Faka-Signature",
        "header"
    ));
    assert!(has("get", "/api/v1/admin/orders", "status", "query"));
    assert!(has("get", "/api/v1/admin/webhooks", "cursor", "query"));
    let limit = doc["paths"]["/api/v1/admin/orders"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    assert_eq!(limit["type"], "integer", "{limit}");
    assert_eq!(limit["maximum"], 500, "{limit}");
    assert_eq!(
        doc["components"]["securitySchemes"]["adminToken"]["scheme"],
        "bearer"
    );
}
