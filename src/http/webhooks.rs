//! The merchant's view of outbound webhooks: list by state, retry dead ones.

use super::auth::Admin;
use super::body::{cursor, limit, parse_query, PageQuery};
use super::{path_param, HttpResult, State};
use crate::domain::ids::printable;
use crate::domain::model::{DeliveryState, OutboxEvent};
use crate::error::Error;
use crate::views;
use actix_web::{HttpRequest, HttpResponse};

fn view(e: &OutboxEvent) -> views::WebhookView<'_> {
    views::WebhookView {
        id: &e.id,
        kind: e.kind.webhook_type(),
        order_no: &e.order_no,
        state: e.state.as_str(),
        attempts: e.attempts,
        last_error: e.last_error.as_deref(),
        created_at: views::rfc3339(e.created_at_ms),
        next_attempt_at: (e.state == DeliveryState::Pending)
            .then(|| views::rfc3339(e.next_attempt_ms)),
    }
}

pub async fn list(_: Admin, state: State, req: HttpRequest) -> HttpResult {
    let q: PageQuery = parse_query(&req)?;
    let st = match q.state.as_deref() {
        None | Some("") => None,
        Some("pending") => Some(DeliveryState::Pending),
        Some("delivered") => Some(DeliveryState::Delivered),
        Some("dead") => Some(DeliveryState::Dead),
        Some(_) => {
            return Err(Error::invalid(
                "state",
                "must be pending, delivered or dead",
            ))
        }
    };
    let limit = limit(q.limit.as_deref(), 100, 1000)?;
    let cursor = cursor(q.cursor.as_deref())?;
    let shop = state.clone();
    let (events, next) =
        super::off_worker(move || shop.store.outbox_page(st, limit, cursor)).await?;
    Ok(HttpResponse::Ok().json(views::WebhookList {
        webhooks: events.iter().map(view).collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// Event ids are `evt_<seq, 16 digits>_<order no>`.
fn event_seq(id: &str) -> Option<u64> {
    let rest = id.strip_prefix("evt_")?;
    rest.get(..16)?.parse().ok()
}

pub async fn retry(_: Admin, state: State, req: HttpRequest) -> HttpResult {
    let id = path_param(&req, "id").to_string();
    let not_found = || Error::not_found(format!("webhook event {} not found", printable(&id, 80)));
    let seq = event_seq(&id).ok_or_else(not_found)?;
    match state.store.outbox_event(seq)? {
        Some(e) if e.id == id => {}
        _ => return Err(not_found()),
    }
    let e = state
        .store
        .write(move |tx| crate::shop::requeue_webhook(tx, seq))
        .await?;
    state.store.outbox_rescan_from(seq);
    Ok(HttpResponse::Ok().json(view(&e)))
}
