//! The HTTP API of `../shared/API.md`: routes per resource, the error
//! mapping, admin auth, and the body/path/query parsing that turns requests
//! into domain types. Handlers parse, call the store or domain, and render;
//! they never decide transitions themselves.

mod admin_orders;
pub mod auth;
mod body;
mod health;
pub mod keys;
pub mod limits;
pub mod middleware;
mod ops;
mod orders;
mod payments;
mod products;
pub mod render;
mod webhooks;

pub use body::{parse_json, read_body};

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
    pub admin: auth::AdminAuth,
    pub gateways: crate::payments::Gateways,
    pub metrics: Arc<crate::ops::metrics::Metrics>,
    pub limits: Arc<limits::Limits>,
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
        res.json(serde_json::json!({
            "error": {"code": self.code(), "message": self.to_string()}
        }))
    }
}

pub type HttpResult = Result<HttpResponse, Error>;

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

/// A resource whose other methods answer 405 with the contract's body.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/api/v1/products").route(web::get().to(products::list_public)))
        .service(resource("/api/v1/products/{id}").route(web::get().to(products::get_public)))
        .service(resource("/api/v1/orders").route(web::post().to(orders::create)))
        .service(resource("/api/v1/orders/{order_no}").route(web::get().to(orders::get)))
        .service(
            resource("/api/v1/payments/hmac/notify").route(web::post().to(payments::hmac_notify)),
        )
        .service(
            resource("/api/v1/payments/epay/notify")
                .route(web::get().to(payments::epay_notify))
                .route(web::post().to(payments::epay_notify)),
        )
        .service(
            resource("/api/v1/admin/products")
                .route(web::get().to(products::list_admin))
                .route(web::post().to(products::create)),
        )
        .service(resource("/api/v1/admin/products/{id}").route(web::patch().to(products::update)))
        .service(
            resource("/api/v1/admin/products/{id}/keys")
                .route(web::post().to(keys::import))
                .route(web::get().to(keys::list))
                .route(web::delete().to(keys::delete)),
        )
        .service(resource("/api/v1/admin/orders").route(web::get().to(admin_orders::list)))
        .service(
            resource("/api/v1/admin/orders/{order_no}").route(web::get().to(admin_orders::get)),
        )
        .service(
            resource("/api/v1/admin/orders/{order_no}/pay")
                .route(web::post().to(admin_orders::pay)),
        )
        .service(
            resource("/api/v1/admin/orders/{order_no}/refund")
                .route(web::post().to(admin_orders::refund)),
        )
        .service(resource("/api/v1/admin/webhooks").route(web::get().to(webhooks::list)))
        .service(
            resource("/api/v1/admin/webhooks/{id}/retry").route(web::post().to(webhooks::retry)),
        )
        .service(resource("/api/v1/admin/backup").route(web::post().to(ops::backup)))
        .service(resource("/metrics").route(web::get().to(ops::metrics)))
        .default_service(web::to(not_found));
}

/// A path segment by name; routes only call this for names they declare.
pub fn path_param<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or("")
}
