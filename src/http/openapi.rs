//! The OpenAPI 3.1 document of the API, generated from the route table
//! ([`super::ROUTES`]) that also registers the handlers: a route cannot exist
//! undocumented, nor be documented without existing. Bodies' schemas and
//! query parameters are derived (`utoipa`) from the very types the handlers
//! parse and answer with ([`crate::views`], the request structs), so they
//! cannot drift either. Served at `GET /api/v1/openapi.json`.

use super::{HttpResult, State};
use crate::views;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};
use utoipa::openapi::path::ParameterIn;
use utoipa::{IntoParams, ToSchema};
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

/// The document's `components.schemas`, filled as operations name types.
#[derive(Default)]
struct Schemas(Map<String, Value>);

impl Schemas {
    /// A `$ref` to `T`'s schema, registering it and the schemas it uses.
    fn of<T: ToSchema>(&mut self) -> Value {
        let mut used = Vec::new();
        T::schemas(&mut used);
        used.push((T::name().into_owned(), T::schema()));
        for (name, schema) in used {
            let schema = serde_json::to_value(schema).unwrap_or(Value::Null);
            self.0.insert(name, schema);
        }
        json!({"$ref": format!("#/components/schemas/{}", T::name())})
    }
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// The query parameters of `T`. A parameter is sent or not, never `null`:
/// utoipa documents an `Option` field as nullable, which a generator would
/// read as "may send null", so the `null` type goes.
fn query_params<T: IntoParams>() -> Vec<Value> {
    T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .map(|p| {
            let mut p = serde_json::to_value(p).unwrap_or(Value::Null);
            if let Some(types) = p["schema"]["type"].as_array() {
                let mut kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
                p["schema"]["type"] = match kept.len() {
                    1 => kept.remove(0),
                    _ => Value::Array(kept),
                };
            }
            p
        })
        .collect()
}

fn param(name: &str, place: &str, required: bool, description: &str) -> Value {
    json!({"name": name, "in": place, "required": required,
           "description": description, "schema": {"type": "string"}})
}

/// The fields of an epay (易支付) notification, by query or form.
const EPAY_FIELDS: &[&str] = &[
    "pid",
    "trade_no",
    "out_trade_no",
    "type",
    "name",
    "money",
    "trade_status",
    "sign",
    "sign_type",
];

/// The fields of an Alipay notify that faka reads (it verifies all of
/// them; Alipay sends more).
const ALIPAY_FIELDS: &[&str] = &[
    "app_id",
    "out_trade_no",
    "trade_no",
    "total_amount",
    "trade_status",
    "sign",
    "sign_type",
];

/// What one route takes and answers beyond its path parameters.
struct Shape {
    params: Vec<Value>,
    /// `requestBody.content`.
    body: Option<Value>,
    ok_status: &'static str,
    /// The success response's `content`.
    ok: Value,
}

impl Shape {
    fn new(ok: Value) -> Self {
        Shape {
            params: Vec::new(),
            body: None,
            ok_status: "200",
            ok,
        }
    }
    fn body(mut self, content: Value) -> Self {
        self.body = Some(content);
        self
    }
    fn params(mut self, params: Vec<Value>) -> Self {
        self.params.extend(params);
        self
    }
    fn created(mut self) -> Self {
        self.ok_status = "201";
        self
    }
    /// Success is `204` without a body (`ok` is not used).
    fn no_content(mut self) -> Self {
        self.ok_status = "204";
        self
    }
}

/// The shape of each route of [`super::ROUTES`]; `None` for one this does
/// not know, which the document's test refuses. Public routes here.
fn shape(method: &str, path: &str, s: &mut Schemas) -> Option<Shape> {
    use super::orders;
    let shape = match (method, path) {
        ("GET", "/healthz") => Shape::new(json_content(s.of::<views::HealthView>())),
        ("GET", "/api/v1/openapi.json") => Shape::new(json_content(json!({"type": "object"}))),
        ("GET", "/api/v1/products") => Shape::new(json_content(s.of::<views::ProductList>()))
            .params(vec![param(
                "category",
                "query",
                false,
                "Only products of this category",
            )]),
        ("GET", "/api/v1/products/{id}") => Shape::new(json_content(s.of::<views::ProductView>())),
        ("GET", "/api/v1/categories") => Shape::new(json_content(s.of::<views::CategoryList>())),
        ("POST", "/api/v1/orders") => Shape::new(json_content(s.of::<views::CreatedOrderView>()))
            .created()
            .body(json_content(s.of::<orders::CreateBody>()))
            .params(vec![param(
                "Idempotency-Key",
                "header",
                false,
                "1 to 64 printable ASCII characters; a repeat answers the first order",
            )]),
        ("GET", "/api/v1/orders/{order_no}") => {
            Shape::new(json_content(s.of::<views::OrderView>())).params(vec![
                param(
                    "X-Order-Token",
                    "header",
                    false,
                    "The order's token (or ?token=)",
                ),
                param(
                    "token",
                    "query",
                    false,
                    "The order's token (or X-Order-Token)",
                ),
            ])
        }
        ("POST", "/api/v1/payments/hmac/notify") => {
            Shape::new(json_content(s.of::<views::CallbackAck>()))
                .body(json_content(s.of::<crate::payments::hmac::Notification>()))
                .params(vec![
                    param(
                        "X-Faka-Timestamp",
                        "header",
                        true,
                        "Unix seconds of the signature",
                    ),
                    param(
                        "X-Faka-Signature",
                        "header",
                        true,
                        "hex HMAC-SHA256 of timestamp.body",
                    ),
                ])
        }
        ("GET", "/api/v1/payments/epay/notify") => Shape::new(plain_text("success")).params(
            EPAY_FIELDS
                .iter()
                .map(|f| param(f, "query", false, ""))
                .collect(),
        ),
        ("POST", "/api/v1/payments/epay/notify") => {
            let props: Map<String, Value> = EPAY_FIELDS
                .iter()
                .map(|f| (f.to_string(), json!({"type": "string"})))
                .collect();
            Shape::new(plain_text("success")).body(json!({
                "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": props}}
            }))
        }
        ("POST", "/api/v1/orders/lookup") => Shape::new(json_content(s.of::<views::LookupList>()))
            .body(json_content(s.of::<super::emails::LookupBody>())),
        ("POST", "/api/v1/orders/{order_no}/resend") => {
            let mut shape = Shape::new(json_content(s.of::<views::OkView>()))
                .body(json_content(s.of::<super::emails::ResendBody>()));
            shape.ok_status = "202";
            shape
        }
        ("POST", "/api/v1/orders/quote") => Shape::new(json_content(s.of::<views::QuoteView>()))
            .body(json_content(s.of::<orders::CreateBody>())),
        ("GET", "/api/v1/gateways") => Shape::new(json_content(s.of::<views::GatewayList>())),
        ("POST", "/api/v1/payments/alipay/notify") => {
            let props: Map<String, Value> = ALIPAY_FIELDS
                .iter()
                .map(|f| (f.to_string(), json!({"type": "string"})))
                .collect();
            Shape::new(plain_text("success")).body(json!({
                "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": props}}
            }))
        }
        ("POST", "/api/v1/payments/wechat/notify") => Shape::new(Value::Null)
            .no_content()
            .body(json_content(json!({"type": "object"})))
            .params(
                [
                    "Wechatpay-Timestamp",
                    "Wechatpay-Nonce",
                    "Wechatpay-Signature",
                    "Wechatpay-Serial",
                ]
                .iter()
                .map(|h| param(h, "header", true, "WeChat Pay's signature headers"))
                .collect(),
            ),
        ("POST", "/api/v1/payments/stripe/notify") => Shape::new(json_content(json!({
            "type": "object",
            "properties": {"received": {"type": "string", "enum": ["applied", "ignored"]}},
        })))
        .body(json_content(json!({"type": "object"})))
        .params(vec![param(
            "Stripe-Signature",
            "header",
            true,
            "t=<unix seconds>,v1=<hex HMAC-SHA256>",
        )]),
        _ => return admin_shape(method, path, s),
    };
    Some(shape)
}

/// The shapes of the merchant's routes (see [`shape`]).
fn admin_shape(method: &str, path: &str, s: &mut Schemas) -> Option<Shape> {
    use super::{admin_orders, body::PageQuery, keys, products};
    let admin_order = |s: &mut Schemas| json_content(s.of::<views::AdminOrderView>());
    let shape = match (method, path) {
        ("GET", "/api/v1/admin/products") => {
            Shape::new(json_content(s.of::<views::AdminProductList>()))
        }
        ("POST", "/api/v1/admin/products") => {
            Shape::new(json_content(s.of::<views::AdminProductView>()))
                .created()
                .body(json_content(s.of::<products::CreateBody>()))
        }
        ("PATCH", "/api/v1/admin/products/{id}") => {
            Shape::new(json_content(s.of::<views::AdminProductView>()))
                .body(json_content(s.of::<products::PatchBody>()))
        }
        ("POST", "/api/v1/admin/products/{id}/keys") => {
            let mut content = json_content(s.of::<crate::shop::key_parse::JsonKeys>());
            content["text/plain"] =
                json!({"schema": {"type": "string", "description": "one key per line"}});
            Shape::new(json_content(s.of::<views::ImportedView>())).body(content)
        }
        ("GET", "/api/v1/admin/products/{id}/keys") => {
            Shape::new(json_content(s.of::<views::KeyList>())).params(query_params::<PageQuery>())
        }
        ("DELETE", "/api/v1/admin/products/{id}/keys") => {
            Shape::new(json_content(s.of::<views::RemovedView>()))
                .body(json_content(s.of::<keys::DeleteBody>()))
        }
        ("GET", "/api/v1/admin/orders") => {
            Shape::new(json_content(s.of::<views::AdminOrderList>()))
                .params(query_params::<admin_orders::ListQuery>())
        }
        ("GET", "/api/v1/admin/orders/{order_no}") => Shape::new(admin_order(s)),
        ("POST", "/api/v1/admin/orders/{order_no}/pay") => {
            Shape::new(admin_order(s)).body(json_content(s.of::<admin_orders::PayBody>()))
        }
        ("POST", "/api/v1/admin/orders/{order_no}/refund") => {
            Shape::new(admin_order(s)).body(json_content(s.of::<admin_orders::RefundBody>()))
        }
        ("GET", "/api/v1/admin/webhooks") => Shape::new(json_content(s.of::<views::WebhookList>()))
            .params(query_params::<PageQuery>()),
        ("POST", "/api/v1/admin/webhooks/{id}/retry") => {
            Shape::new(json_content(s.of::<views::WebhookView>()))
        }
        ("POST", "/api/v1/admin/backup") => Shape::new(json_content(s.of::<views::BackupView>())),
        ("GET", "/api/v1/admin/emails") => {
            Shape::new(json_content(s.of::<views::EmailList>())).params(query_params::<PageQuery>())
        }
        ("POST", "/api/v1/admin/emails/{id}/retry") => {
            Shape::new(json_content(s.of::<views::EmailView>()))
        }
        ("GET", "/metrics") => Shape::new(json!({
            "text/plain; version=0.0.4": {"schema": {"type": "string"}}
        })),
        ("GET", "/api/v1/admin/coupons") => Shape::new(json_content(s.of::<views::CouponList>())),
        ("POST", "/api/v1/admin/coupons") => Shape::new(json_content(s.of::<views::CouponView>()))
            .created()
            .body(json_content(s.of::<super::coupons::CreateBody>())),
        ("GET", "/api/v1/admin/coupons/{code}") => {
            Shape::new(json_content(s.of::<views::CouponView>()))
        }
        ("PATCH", "/api/v1/admin/coupons/{code}") => {
            Shape::new(json_content(s.of::<views::CouponView>()))
                .body(json_content(s.of::<super::coupons::PatchBody>()))
        }
        _ => return None,
    };
    Some(shape)
}
fn plain_text(example: &str) -> Value {
    json!({"text/plain": {"schema": {"type": "string", "example": example}}})
}

/// The error answers every route may give; the epay and Alipay callbacks
/// answer them as the plain text `fail` their gateways expect, the wechat one as WeChat
/// Pay's `{"code": "FAIL", "message": …}`.
fn error_responses(s: &mut Schemas, path: &str) -> Map<String, Value> {
    let content = if path.contains("/epay/") || path.contains("/alipay/") {
        plain_text("fail")
    } else if path.contains("/wechat/") {
        json_content(json!({"type": "object", "properties": {
            "code": {"type": "string", "example": "FAIL"}, "message": {"type": "string"}}}))
    } else {
        json_content(s.of::<views::ErrorBody>())
    };
    [
        (
            "400",
            "invalid_json, invalid_signature, amount_mismatch, gateway_mismatch",
        ),
        ("401", "unauthorized"),
        ("404", "not_found"),
        ("409", "out_of_stock, conflict"),
        ("413", "payload_too_large"),
        (
            "422",
            "invalid_request (the message names the field), invalid_coupon (the message says why)",
        ),
        ("429", "rate_limited (Retry-After)"),
        ("503", "unavailable (Retry-After)"),
    ]
    .into_iter()
    .map(|(code, what)| {
        let response = json!({"description": what, "content": content});
        (code.to_string(), response)
    })
    .collect()
}

fn operation(r: &RouteDoc, s: &mut Schemas) -> Value {
    let mut params: Vec<Value> = r
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let mut responses = error_responses(s, r.path);
    let mut op = json!({
        "summary": r.summary,
        "operationId": format!("{} {}", r.method.to_lowercase(), r.path),
    });
    // A route without a shape is documented without one; the API tests
    // refuse that, so it cannot ship.
    if let Some(shape) = shape(r.method, r.path, s) {
        params.extend(shape.params);
        let ok = match shape.ok_status {
            "204" => json!({"description": "Success"}),
            _ => json!({"description": "Success", "content": shape.ok}),
        };
        responses.insert(shape.ok_status.to_string(), ok);
        if let Some(body) = shape.body {
            // Manual payments and refunds take an empty body too.
            let required = !r.path.ends_with("/pay") && !r.path.ends_with("/refund");
            op["requestBody"] = json!({"required": required, "content": body});
        }
    }
    op["parameters"] = Value::Array(params);
    op["responses"] = Value::Object(responses);
    if r.admin {
        op["security"] = json!([{"adminToken": []}]);
    }
    op
}

/// The whole document.
pub fn document(public_url: &str) -> Value {
    let mut schemas = Schemas::default();
    let mut paths = Map::new();
    for r in super::ROUTES {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = operation(r, &mut schemas);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "faka",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Automatic card-key shop (发卡网). Money is in minor units; times are RFC 3339 UTC."
        },
        "servers": [{"url": public_url}],
        "paths": paths,
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas.0,
        }
    })
}

pub async fn serve(state: State) -> HttpResult {
    Ok(HttpResponse::Ok().json(document(&state.config.server.public_url)))
}
