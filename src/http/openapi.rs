//! The OpenAPI 3 document of the API, generated from the route table
//! ([`super::ROUTES`]) that also registers the handlers: a route cannot exist
//! undocumented, nor be documented without existing. Served at
//! `GET /api/v1/openapi.json`.

use super::{HttpResult, State};
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

/// One route: method, path template, what it does, who may call it.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub admin: bool,
}

impl RouteDoc {
    pub const fn public(method: &'static str, path: &'static str, summary: &'static str) -> Self {
        RouteDoc {
            method,
            path,
            summary,
            admin: false,
        }
    }

    pub const fn admin(method: &'static str, path: &'static str, summary: &'static str) -> Self {
        RouteDoc {
            method,
            path,
            summary,
            admin: true,
        }
    }
}

fn error_responses() -> Value {
    let err = json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut m = Map::new();
    for (code, what) in [
        (
            "400",
            "invalid_json, invalid_signature, amount_mismatch, gateway_mismatch",
        ),
        ("401", "unauthorized"),
        ("404", "not_found"),
        ("409", "out_of_stock, conflict"),
        ("413", "payload_too_large"),
        ("422", "invalid_request (the message names the field)"),
        ("429", "rate_limited (Retry-After)"),
        ("503", "unavailable (Retry-After)"),
    ] {
        let mut e = err.clone();
        e["description"] = json!(what);
        m.insert(code.to_string(), e);
    }
    Value::Object(m)
}

fn operation(r: &RouteDoc) -> Value {
    let params: Vec<Value> = r
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let mut responses = error_responses();
    let ok = if r.method == "POST"
        && (r.path == "/api/v1/orders" || r.path == "/api/v1/admin/products")
    {
        "201"
    } else {
        "200"
    };
    responses[ok] = json!({"description": "Success", "content": {"application/json": {}}});
    let mut op = json!({
        "summary": r.summary,
        "operationId": format!("{} {}", r.method.to_lowercase(), r.path),
        "parameters": params,
        "responses": responses,
    });
    if r.admin {
        op["security"] = json!([{"adminToken": []}]);
    }
    if matches!(r.method, "POST" | "PATCH" | "DELETE") {
        let mut content = json!({"application/json": {"schema": {"type": "object"}}});
        if r.path.ends_with("/keys") && r.method == "POST" {
            content["text/plain"] =
                json!({"schema": {"type": "string", "description": "one key per line"}});
        }
        if r.path.contains("/epay/") {
            content = json!({"application/x-www-form-urlencoded": {"schema": {"type": "object"}}});
        }
        op["requestBody"] = json!({"required": false, "content": content});
    }
    op
}

/// The whole document.
pub fn document(public_url: &str) -> Value {
    let mut paths = Map::new();
    for r in super::ROUTES {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = operation(r);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "faka",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Automatic card-key shop (发卡网). Money is in minor units; times are RFC 3339 UTC."
        },
        "servers": [{"url": public_url}],
        "paths": paths,
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
                    }}
                }
            }
        }
    })
}

pub async fn serve(state: State) -> HttpResult {
    Ok(HttpResponse::Ok().json(document(&state.config.server.public_url)))
}
