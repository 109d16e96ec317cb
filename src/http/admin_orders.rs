//! The merchant's order admin: list, detail with keys, manual payment (补单)
//! and refund.

use super::auth::Admin;
use super::body::{limit, order_cursor, parse_query, read_body};
use super::payments::trade_no;
use super::{path_param, HttpResult, State};
use crate::domain::ids::{printable, Gateway, OrderNo};
use crate::domain::model::Order;
use crate::domain::order::{OrderStatus, PaymentSource};
use crate::error::Error;
use crate::json::parse_json;
use crate::shop::{self, Payment};
use crate::store::OrderFilter;
use crate::views;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

/// The admin order listing's query. `limit` is read as text so a bad one
/// gets the contract's 422, but documented as the number it must be.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only orders in this status.
    status: Option<String>,
    /// Only orders of this buyer.
    email: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn order_no(req: &HttpRequest) -> Result<OrderNo, Error> {
    let raw = path_param(req, "order_no");
    OrderNo::parse(raw)
        .map_err(|_| Error::not_found(format!("order {} not found", printable(raw, 40))))
}

/// AdminOrder JSON: keys included once the order has sold keys; the order's
/// events merged with the audit trail of payment attempts that changed
/// nothing (repeats and refusals), each where it happened among them.
fn admin_view(state: &State, order: &Order) -> Result<serde_json::Value, Error> {
    let keys = match order.status {
        OrderStatus::Delivered | OrderStatus::Refunded if !order.key_ids.is_empty() => {
            Some(views::key_texts(&state.store, &state.crypto, order)?)
        }
        _ => None,
    };
    let mut v = serde_json::to_value(views::admin_order(order, &state.config.shop.currency, keys))
        .map_err(|_| Error::unavailable("rendering failed"))?;
    let attempts = state.store.payment_attempts(&order.order_no)?;
    if !attempts.is_empty() {
        let events: Vec<(i64, serde_json::Value)> = order
            .events
            .iter()
            .zip(v["events"].as_array().cloned().unwrap_or_default())
            .map(|(e, j)| (e.at_ms, j))
            .collect();
        let attempts = attempts
            .into_iter()
            .map(|(a, seen)| {
                // Shaped like the order's own events (no `note` when empty).
                let kind = format!("payment_{}", a.result);
                let j = serde_json::to_value(views::EventView {
                    kind: &kind,
                    at: views::rfc3339(a.at_ms),
                    gateway: Some(&a.gateway),
                    trade_no: Some(&a.trade_no),
                    amount: Some(a.amount),
                    note: a.reason.as_deref(),
                })
                .unwrap_or_default();
                (a.at_ms, seen, j)
            })
            .collect();
        v["events"] = serde_json::Value::Array(merge_attempts(events, attempts));
    }
    Ok(v)
}

/// The order's events with the payment attempts placed among them: each
/// attempt after the events the order had when it was decided (`seen`),
/// and before the ones that came after. Attempts recorded before that count
/// was kept go after every event of their millisecond or earlier.
fn merge_attempts(
    events: Vec<(i64, serde_json::Value)>,
    attempts: Vec<(i64, Option<u32>, serde_json::Value)>,
) -> Vec<serde_json::Value> {
    let mut placed: Vec<(usize, i64, serde_json::Value)> = attempts
        .into_iter()
        .map(|(at, seen, j)| {
            let after = match seen {
                Some(n) => (n as usize).min(events.len()),
                None => events.iter().filter(|(e_at, _)| *e_at <= at).count(),
            };
            (after, at, j)
        })
        .collect();
    // Stable: attempts of one place keep their time order (the scan's).
    placed.sort_by_key(|(after, at, _)| (*after, *at));
    let mut out = Vec::with_capacity(events.len() + placed.len());
    let mut placed = placed.into_iter().peekable();
    for (i, (_, e)) in events.into_iter().enumerate() {
        while let Some((_, _, j)) = placed.next_if(|(after, _, _)| *after <= i) {
            out.push(j);
        }
        out.push(e);
    }
    out.extend(placed.map(|(_, _, j)| j));
    out
}

pub async fn list(_: Admin, state: State, req: HttpRequest) -> HttpResult {
    let q: ListQuery = parse_query(&req)?;
    let filter = OrderFilter {
        status: match q.status.as_deref() {
            None | Some("") => None,
            Some(s) => Some(OrderStatus::parse(s).ok_or_else(|| {
                Error::invalid(
                    "status",
                    "must be pending, paid, delivered, expired, awaiting_stock or refunded",
                )
            })?),
        },
        email: q.email.filter(|e| !e.is_empty()),
    };
    let limit = limit(q.limit.as_deref(), 50, 500)?;
    let cursor = order_cursor(q.cursor.as_deref())?;
    let st = state.clone();
    let page =
        super::off_worker(move || st.store.orders_page(&filter, limit, cursor.as_ref())).await?;
    let currency = &state.config.shop.currency;
    let orders: Vec<_> = page
        .orders
        .iter()
        .map(|o| views::admin_order(o, currency, None))
        .collect();
    Ok(HttpResponse::Ok().json(views::AdminOrderList {
        orders,
        next_cursor: page.next_cursor,
    }))
}

pub async fn get(_: Admin, state: State, req: HttpRequest) -> HttpResult {
    let no = order_no(&req)?;
    let order = state
        .store
        .order(no.as_str())?
        .ok_or_else(|| Error::not_found(format!("order {no} not found")))?;
    Ok(HttpResponse::Ok().json(admin_view(&state, &order)?))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ManualPayment)]
pub struct PayBody {
    trade_no: Option<String>,
    note: Option<String>,
}

fn note(n: Option<String>) -> Result<Option<String>, Error> {
    match n {
        Some(n) if n.chars().count() > 500 => {
            Err(Error::invalid("note", "must be at most 500 characters"))
        }
        n => Ok(n),
    }
}

async fn optional_body<T: serde::de::DeserializeOwned + Default>(
    state: &State,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, Error> {
    let bytes = read_body(req, payload, state.config.limits.body_kb * 1024).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(&bytes)
    }
}

pub async fn pay(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let no = order_no(&req)?;
    let body: PayBody = optional_body(&state, &req, payload).await?;
    let payment = Payment {
        order_no: no.as_str().to_string(),
        gateway: Gateway::Manual,
        trade_no: match body.trade_no {
            Some(t) => trade_no(&t)?,
            None => format!("manual-{no}"),
        },
        amount: None,
        source: PaymentSource::Manual,
        note: note(body.note)?,
    };
    let result = state
        .store
        .write(move |tx| shop::apply_payment(tx, payment))
        .await;
    super::payments::count(&state, Gateway::Manual, &result);
    let applied = result?;
    tracing::info!(order_no = %applied.order.order_no, status = applied.order.status.as_str(), "manual payment applied");
    Ok(HttpResponse::Ok().json(admin_view(&state, &applied.order)?))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Refund)]
pub struct RefundBody {
    note: Option<String>,
}

pub async fn refund(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let no = order_no(&req)?;
    let body: RefundBody = optional_body(&state, &req, payload).await?;
    let note = note(body.note)?;
    let order = state
        .store
        .write(move |tx| shop::refund_order(tx, no.as_str(), note))
        .await?;
    Ok(HttpResponse::Ok().json(admin_view(&state, &order)?))
}

#[cfg(test)]
mod tests {
    use super::merge_attempts;
    use serde_json::{json, Value};

    fn names(v: &[Value]) -> Vec<&str> {
        v.iter()
            .map(|j| j["type"].as_str().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn attempts_sit_among_the_events_they_were_decided_against_even_within_one_millisecond() {
        let events = vec![
            (100, json!({"type": "created"})),
            (200, json!({"type": "paid"})),
            (200, json!({"type": "delivered"})),
        ];
        let merged = merge_attempts(
            events.clone(),
            vec![
                // Refused in the millisecond of the payment, before it.
                (200, Some(1), json!({"type": "payment_refused"})),
                // Repeated in the same millisecond, after the delivery.
                (200, Some(3), json!({"type": "payment_repeated"})),
                // A refusal before anything was paid, 50 ms earlier.
                (150, Some(1), json!({"type": "payment_refused_early"})),
            ],
        );
        assert_eq!(
            names(&merged),
            [
                "created",
                "payment_refused_early",
                "payment_refused",
                "paid",
                "delivered",
                "payment_repeated"
            ]
        );
        // Attempts stored before the count was kept: by time, after the
        // events of their millisecond.
        let old = merge_attempts(
            events,
            vec![
                (150, None, json!({"type": "a"})),
                (200, None, json!({"type": "b"})),
                (999, Some(99), json!({"type": "c"})),
            ],
        );
        assert_eq!(names(&old), ["created", "a", "paid", "delivered", "b", "c"]);
    }
}
