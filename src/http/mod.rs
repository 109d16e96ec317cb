//! The HTTP API of `../shared/API.md`: routes per resource, the error
//! mapping, admin auth, and the body/path/query parsing that turns requests
//! into domain types. Handlers parse, call the store or domain, and render;
//! they never decide transitions themselves.

pub mod admin_orders;
pub mod auth;
pub(crate) mod body;
pub mod coupons;
pub mod emails;
mod health;
pub mod keys;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod products;
pub mod webhooks;

pub use body::read_body;

use crate::config::Config;
use crate::crypto::Crypto;
use crate::error::Error;
use crate::store::Store;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use std::sync::Arc;

/// What every handler can reach.
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub crypto: Arc<Crypto>,
    /// Buyers' order tokens.
    pub tokens: crate::crypto::OrderTokens,
    pub admin: auth::AdminAuth,
    pub gateways: crate::payments::Gateways,
    pub metrics: Arc<crate::ops::metrics::Metrics>,
    pub limits: Arc<limits::Limits>,
    /// The public catalogue's rendered answers (see `products::PublicViews`).
    pub views: products::PublicViews,
}

pub type State = web::Data<AppState>;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.json(crate::views::ErrorBody {
            error: crate::views::ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        })
    }
}

pub type HttpResult = Result<HttpResponse, Error>;

/// Runs a read that may walk a whole tree (the filtered admin listings) on
/// actix's blocking pool: an HTTP worker serves many connections, and a
/// filter that matches nothing among 1M orders reads for seconds.
pub(crate) async fn off_worker<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    web::block(read)
        .await
        .map_err(|_| Error::unavailable("server busy"))?
}

async fn not_found(req: HttpRequest) -> HttpResult {
    Err(Error::not_found(format!(
        "no route for {} {}",
        req.method(),
        crate::domain::ids::printable(req.path(), 100)
    )))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResult {
    Err(Error::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        crate::domain::ids::printable(req.path(), 100)
    )))
}

/// The route template a request matched, kept as resource data so the
/// metrics middleware need not ask actix to match the path again
/// (`match_pattern` re-runs the router's regexes on every request).
#[derive(Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

/// A resource whose other methods answer 405 with the contract's body.
fn resource(path: &'static str) -> actix_web::Resource {
    web::resource(path)
        .app_data(RouteTemplate(path))
        .default_service(web::to(method_not_allowed))
}

/// Every route of the API: the one table that both registers the handlers
/// ([`routes`]) and generates the OpenAPI document ([`openapi`]), so the
/// two cannot drift apart.
pub const ROUTES: &[openapi::RouteDoc] = &[
    openapi::RouteDoc::public(
        "GET",
        "/healthz",
        "Health: 200 when the store is open and writable",
    ),
    openapi::RouteDoc::public("GET", "/api/v1/openapi.json", "This OpenAPI document"),
    openapi::RouteDoc::public("GET", "/api/v1/products", "Active products with live stock"),
    openapi::RouteDoc::public("GET", "/api/v1/products/{id}", "One active product"),
    openapi::RouteDoc::public(
        "GET",
        "/api/v1/categories",
        "Categories of active products with counts",
    ),
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/orders",
        "Create an order holding keys (Idempotency-Key supported)",
    ),
    // Before `/orders/{order_no}`: a resource matches by path first.
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/orders/quote",
        "Price an order (tiers, coupon) without holding anything",
    ),
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/orders/lookup",
        "Find orders by e-mail and query password",
    ),
    openapi::RouteDoc::public(
        "GET",
        "/api/v1/orders/{order_no}",
        "View an order with its token (?token= or X-Order-Token)",
    ),
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/payments/hmac/notify",
        "hmac gateway callback (X-Faka-Timestamp, X-Faka-Signature)",
    ),
    openapi::RouteDoc::public(
        "GET",
        "/api/v1/payments/epay/notify",
        "epay (易支付) notify by query",
    ),
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/payments/epay/notify",
        "epay (易支付) notify by form",
    ),
    openapi::RouteDoc::public(
        "GET",
        "/api/v1/gateways",
        "The gateways a buyer may choose, with their pay types",
    ),
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/payments/alipay/notify",
        "Alipay asynchronous notify (form, RSA2)",
    ),
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/payments/wechat/notify",
        "WeChat Pay v3 notify (Wechatpay-Signature, encrypted resource)",
    ),
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/payments/stripe/notify",
        "Stripe webhook (Stripe-Signature)",
    ),
    openapi::RouteDoc::admin(
        "GET",
        "/api/v1/admin/products",
        "All products with key counts",
    ),
    openapi::RouteDoc::admin("POST", "/api/v1/admin/products", "Create a product"),
    openapi::RouteDoc::admin("PATCH", "/api/v1/admin/products/{id}", "Edit a product"),
    openapi::RouteDoc::admin(
        "POST",
        "/api/v1/admin/products/{id}/keys",
        "Import keys (text/plain lines or JSON)",
    ),
    openapi::RouteDoc::admin(
        "GET",
        "/api/v1/admin/products/{id}/keys",
        "Masked key listing with cursor paging",
    ),
    openapi::RouteDoc::admin(
        "DELETE",
        "/api/v1/admin/products/{id}/keys",
        "Delete available keys",
    ),
    openapi::RouteDoc::admin(
        "GET",
        "/api/v1/admin/orders",
        "Orders, newest first, with filters",
    ),
    openapi::RouteDoc::admin(
        "GET",
        "/api/v1/admin/orders/{order_no}",
        "One order with keys and events",
    ),
    openapi::RouteDoc::admin(
        "POST",
        "/api/v1/admin/orders/{order_no}/pay",
        "Manual payment (补单)",
    ),
    openapi::RouteDoc::admin(
        "POST",
        "/api/v1/admin/orders/{order_no}/refund",
        "Mark refunded",
    ),
    openapi::RouteDoc::admin(
        "GET",
        "/api/v1/admin/webhooks",
        "Outbound webhook events by state",
    ),
    openapi::RouteDoc::admin(
        "POST",
        "/api/v1/admin/webhooks/{id}/retry",
        "Re-queue a dead webhook event",
    ),
    openapi::RouteDoc::admin(
        "POST",
        "/api/v1/admin/backup",
        "Write a consistent backup while serving",
    ),
    openapi::RouteDoc::admin("GET", "/metrics", "Prometheus metrics"),
    openapi::RouteDoc::public(
        "POST",
        "/api/v1/orders/{order_no}/resend",
        "Send the delivery e-mail again (202 whether or not the e-mail matches)",
    ),
    openapi::RouteDoc::admin("GET", "/api/v1/admin/emails", "Outgoing e-mails by state"),
    openapi::RouteDoc::admin(
        "POST",
        "/api/v1/admin/emails/{id}/retry",
        "Re-queue a dead e-mail",
    ),
    openapi::RouteDoc::admin(
        "GET",
        "/api/v1/admin/coupons",
        "All coupons with use counts",
    ),
    openapi::RouteDoc::admin("POST", "/api/v1/admin/coupons", "Create a coupon"),
    openapi::RouteDoc::admin("GET", "/api/v1/admin/coupons/{code}", "One coupon"),
    openapi::RouteDoc::admin("PATCH", "/api/v1/admin/coupons/{code}", "Edit a coupon"),
];

/// The handler of one table entry. A route in [`ROUTES`] without a handler
/// here fails at start-up (and in every test), never silently.
fn handler(method: &str, path: &str) -> Option<actix_web::Route> {
    let r = match (method, path) {
        ("GET", "/healthz") => web::get().to(health::healthz),
        ("GET", "/api/v1/openapi.json") => web::get().to(openapi::serve),
        ("GET", "/api/v1/products") => web::get().to(products::list_public),
        ("GET", "/api/v1/products/{id}") => web::get().to(products::get_public),
        ("GET", "/api/v1/categories") => web::get().to(products::list_categories),
        ("POST", "/api/v1/orders") => web::post().to(orders::create),
        ("GET", "/api/v1/orders/{order_no}") => web::get().to(orders::get),
        ("POST", "/api/v1/payments/hmac/notify") => web::post().to(payments::hmac_notify),
        ("GET", "/api/v1/payments/epay/notify") => web::get().to(payments::epay_notify),
        ("POST", "/api/v1/payments/epay/notify") => web::post().to(payments::epay_notify),
        ("GET", "/api/v1/gateways") => web::get().to(payments::list_gateways),
        ("POST", "/api/v1/payments/alipay/notify") => web::post().to(payments::alipay_notify),
        ("POST", "/api/v1/payments/wechat/notify") => web::post().to(payments::wechat_notify),
        ("POST", "/api/v1/payments/stripe/notify") => web::post().to(payments::stripe_notify),
        ("GET", "/api/v1/admin/products") => web::get().to(products::list_admin),
        ("POST", "/api/v1/admin/products") => web::post().to(products::create),
        ("PATCH", "/api/v1/admin/products/{id}") => web::patch().to(products::update),
        ("POST", "/api/v1/admin/products/{id}/keys") => web::post().to(keys::import),
        ("GET", "/api/v1/admin/products/{id}/keys") => web::get().to(keys::list),
        ("DELETE", "/api/v1/admin/products/{id}/keys") => web::delete().to(keys::delete),
        ("GET", "/api/v1/admin/orders") => web::get().to(admin_orders::list),
        ("GET", "/api/v1/admin/orders/{order_no}") => web::get().to(admin_orders::get),
        ("POST", "/api/v1/admin/orders/{order_no}/pay") => web::post().to(admin_orders::pay),
        ("POST", "/api/v1/admin/orders/{order_no}/refund") => web::post().to(admin_orders::refund),
        ("GET", "/api/v1/admin/webhooks") => web::get().to(webhooks::list),
        ("POST", "/api/v1/admin/webhooks/{id}/retry") => web::post().to(webhooks::retry),
        ("POST", "/api/v1/admin/backup") => web::post().to(ops::backup),
        ("GET", "/metrics") => web::get().to(ops::metrics),
        ("POST", "/api/v1/orders/lookup") => web::post().to(emails::lookup),
        ("POST", "/api/v1/orders/{order_no}/resend") => web::post().to(emails::resend),
        ("GET", "/api/v1/admin/emails") => web::get().to(emails::list),
        ("POST", "/api/v1/admin/emails/{id}/retry") => web::post().to(emails::retry),
        ("POST", "/api/v1/orders/quote") => web::post().to(orders::quote),
        ("GET", "/api/v1/admin/coupons") => web::get().to(coupons::list),
        ("POST", "/api/v1/admin/coupons") => web::post().to(coupons::create),
        ("GET", "/api/v1/admin/coupons/{code}") => web::get().to(coupons::get),
        ("PATCH", "/api/v1/admin/coupons/{code}") => web::patch().to(coupons::update),
        _ => return None,
    };
    Some(r)
}

/// Registers every route of [`ROUTES`], one resource per path.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&str> = Vec::new();
    for r in ROUTES {
        if !paths.contains(&r.path) {
            paths.push(r.path);
        }
    }
    for path in paths {
        let mut res = resource(path);
        for r in ROUTES.iter().filter(|r| r.path == path) {
            match handler(r.method, r.path) {
                Some(route) => res = res.route(route),
                None => panic!("route {} {} has no handler", r.method, r.path),
            }
        }
        cfg.service(res);
    }
    cfg.default_service(web::to(not_found));
}

/// A path segment by name; routes only call this for names they declare.
pub fn path_param<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or("")
}
