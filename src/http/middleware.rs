//! Per-request plumbing: a request id (taken from a sane `X-Request-Id` or
//! made up) that every log line of the request carries and the response
//! echoes, and the HTTP metrics by route template, method and status.

use crate::ops::metrics::Metrics;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::Error;
use std::sync::Arc;
use std::time::Instant;

const REQUEST_ID: &str = "x-request-id";

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(rand::random::<u64>().to_be_bytes()))
}

pub async fn observe(
    metrics: Arc<Metrics>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let mut res = crate::telemetry::with_request_id(&id, next.call(req)).await?;
    let status = res.status().as_u16();
    let route = res
        .request()
        .app_data::<super::RouteTemplate>()
        .map_or("unmatched", |r| r.0);
    let elapsed = started.elapsed();
    metrics.observe_http(route, method.as_str(), status, elapsed);
    crate::telemetry::in_request(&id, || {
        if status >= 500 {
            tracing::warn!(status, method = %method, route = %route, micros = elapsed.as_micros() as u64, "request failed");
        } else {
            tracing::debug!(status, method = %method, route = %route, micros = elapsed.as_micros() as u64, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), v);
    }
    Ok(res)
}
