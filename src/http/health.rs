//! `GET /healthz`: 200 when the store is open and writable.

use super::{HttpResult, State};
use crate::error::Error;
use actix_web::HttpResponse;

pub async fn healthz(state: State) -> HttpResult {
    if state.store.healthy() {
        Ok(HttpResponse::Ok().json(crate::views::HealthView { status: "ok" }))
    } else {
        Err(Error::unavailable("store is not writable"))
    }
}
