//! Buyers finding their orders again, and the merchant's e-mail outbox.
//!
//! Lookup by e-mail and query password reads the e-mail's newest orders
//! from the lookup index (only orders created with a password are in it)
//! and checks the password against each distinct stored argon2 hash once,
//! on the blocking pool. An unknown e-mail runs one verify against a dummy
//! hash, so it answers like a wrong password: the same empty list, in about
//! the same time. Resend answers the same whether or not the e-mail
//! matches. The admin routes list e-mails by state and re-queue dead ones,
//! as the webhook routes do.

use super::auth::Admin;
use super::body::{cursor, limit, parse_query, read_body, PageQuery};
use super::limits::Limit;
use super::orders::{check_query_password, client_ip};
use super::{off_worker, path_param, HttpResult, State};
use crate::crypto::{slow_hash, slow_verify};
use crate::domain::ids::{printable, Email, OrderNo};
use crate::domain::model::{DeliveryState, EmailEvent, Order};
use crate::domain::order::OrderStatus;
use crate::error::Error;
use crate::json::parse_json;
use crate::views;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::sync::OnceLock;

/// Most orders one lookup answers (the contract's).
pub const LOOKUP_MAX: usize = 50;

/// A buyer's e-mail and the query password of their orders.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupBody {
    pub email: String,
    pub query_password: String,
}

/// The e-mail the order was placed with.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendBody {
    pub email: String,
}

/// A hash no password is checked against but to spend the time a real
/// check takes (made once, with the same parameters).
fn dummy_phc() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| slow_hash("faka: no order has this password").unwrap_or_default())
}

/// The orders of `email` that `password` opens, newest first, with their
/// keys when delivered. Rate-limited per client and per e-mail; the same
/// empty answer for an unknown e-mail and a wrong password.
pub async fn lookup_orders(
    state: &State,
    req: &HttpRequest,
    email: &str,
    password: String,
) -> Result<Vec<(Order, Option<Vec<String>>)>, Error> {
    let ip = client_ip(req, &state.config.server.trusted_proxies);
    let limits = &state.limits;
    limits.take(Limit::PasswordLookups, ip.as_deref().unwrap_or("unknown"))?;
    let email = Email::parse(email)?;
    check_query_password(&password)?;
    limits.take(Limit::EmailLookups, &email.as_str().to_lowercase())?;
    let st = state.clone();
    off_worker(move || {
        let orders = st.store.orders_by_email(email.as_str(), LOOKUP_MAX)?;
        let opened = opened_by(&password, orders);
        opened
            .into_iter()
            .map(|o| {
                let keys = (o.status == OrderStatus::Delivered)
                    .then(|| views::key_texts(&st.store, &st.crypto, &o))
                    .transpose()?;
                Ok((o, keys))
            })
            .collect()
    })
    .await
}

/// The orders among `orders` whose query password is `password`: each
/// distinct hash is verified once (a buyer tends to reuse one password);
/// with none to verify, one dummy verify keeps the time alike.
fn opened_by(password: &str, orders: Vec<Order>) -> Vec<Order> {
    let mut verdicts: Vec<(String, bool)> = Vec::new();
    let mut out = Vec::new();
    for o in orders {
        let Some(phc) = o.query_password_phc.as_deref() else {
            continue;
        };
        let ok = match verdicts.iter().find(|(p, _)| p == phc) {
            Some(&(_, ok)) => ok,
            None => {
                let ok = slow_verify(password, phc);
                verdicts.push((phc.to_string(), ok));
                ok
            }
        };
        if ok {
            out.push(o);
        }
    }
    if verdicts.is_empty() {
        slow_verify(password, dummy_phc());
    }
    out
}

pub async fn lookup(state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let b: LookupBody = parse_json(&bytes)?;
    let found = lookup_orders(&state, &req, &b.email, b.query_password).await?;
    let currency = &state.config.shop.currency;
    Ok(HttpResponse::Ok().json(views::LookupList {
        orders: found
            .iter()
            .map(|(o, keys)| views::order(o, currency, keys.clone()))
            .collect(),
    }))
}

/// Queues the delivery e-mail of `raw` again when `email` is its buyer's
/// and it is delivered, at most 3 times an hour per order; the caller
/// answers the same whatever happened.
pub async fn resend_delivery(state: &State, raw: &str, email: &str) -> Result<(), Error> {
    let Ok(order_no) = OrderNo::parse(raw) else {
        return Ok(());
    };
    let matches = state.store.order(order_no.as_str())?.is_some_and(|o| {
        o.status == OrderStatus::Delivered && o.email.eq_ignore_ascii_case(email.trim())
    });
    if !matches
        || state
            .limits
            .take(Limit::Resends, order_no.as_str())
            .is_err()
    {
        return Ok(());
    }
    let email = email.trim().to_string();
    state
        .store
        .write(move |tx| crate::shop::resend_delivery(tx, order_no.as_str(), &email))
        .await?;
    Ok(())
}

pub async fn resend(state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let ip = client_ip(&req, &state.config.server.trusted_proxies);
    state
        .limits
        .take(Limit::Lookups, ip.as_deref().unwrap_or("unknown"))?;
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let b: ResendBody = parse_json(&bytes)?;
    resend_delivery(&state, path_param(&req, "order_no"), &b.email).await?;
    Ok(HttpResponse::Accepted().json(views::OkView { ok: true }))
}

/// An e-mail's state as the contract names it (`sent`, not `delivered`).
fn state_name(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Delivered => "sent",
        other => other.as_str(),
    }
}

fn view(e: &EmailEvent) -> views::EmailView<'_> {
    views::EmailView {
        id: &e.id,
        kind: e.kind.as_str(),
        to: e.to.as_str(),
        order_no: e.order_no.as_deref(),
        product_id: e.product_id.as_deref(),
        state: state_name(e.state),
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
        Some("sent") => Some(DeliveryState::Delivered),
        Some("dead") => Some(DeliveryState::Dead),
        Some(_) => return Err(Error::invalid("state", "must be pending, sent or dead")),
    };
    let limit = limit(q.limit.as_deref(), 100, 1000)?;
    let cursor = cursor(q.cursor.as_deref())?;
    let shop = state.clone();
    let (emails, next) = off_worker(move || shop.store.emails_page(st, limit, cursor)).await?;
    Ok(HttpResponse::Ok().json(views::EmailList {
        emails: emails.iter().map(view).collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// E-mail ids are `eml_<seq, 16 digits>`.
fn email_seq(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("eml_")?;
    (digits.len() == 16).then(|| digits.parse().ok())?
}

pub async fn retry(_: Admin, state: State, req: HttpRequest) -> HttpResult {
    let id = path_param(&req, "id").to_string();
    let not_found = || Error::not_found(format!("e-mail {} not found", printable(&id, 80)));
    let seq = email_seq(&id).ok_or_else(not_found)?;
    if state.store.email_event(seq)?.is_none() {
        return Err(not_found());
    }
    let e = state
        .store
        .write(move |tx| crate::shop::requeue_email(tx, seq))
        .await?;
    state.store.email_rescan_from(seq);
    Ok(HttpResponse::Ok().json(view(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_with(phc: Option<String>) -> Order {
        let mut o = Order::pending_for_test("F0000000000000001", "a@b.co", "1.2.3.4", 0);
        o.query_password_phc = phc;
        o
    }

    /// Two orders with one password and one with another: the password
    /// opens exactly its own; an order without a password is never opened.
    #[test]
    fn a_password_opens_only_the_orders_it_protects() {
        let a = slow_hash("first-pass").unwrap();
        let b = slow_hash("other-pass").unwrap();
        let orders = vec![
            order_with(Some(a.clone())),
            order_with(Some(b)),
            order_with(None),
            order_with(Some(a)),
        ];
        let opened = opened_by("first-pass", orders.clone());
        assert_eq!(opened.len(), 2);
        assert!(opened
            .iter()
            .all(|o| o.query_password_phc == orders[0].query_password_phc));
        assert!(opened_by("wrong-pass", orders.clone()).is_empty());
        assert!(opened_by("", vec![order_with(None)]).is_empty());
    }

    #[test]
    fn email_ids_parse_only_in_their_own_shape() {
        assert_eq!(email_seq("eml_0000000000000042"), Some(42));
        for bad in [
            "eml_42",
            "evt_0000000000000042",
            "eml_000000000000004x",
            "eml_00000000000000420",
        ] {
            assert_eq!(email_seq(bad), None, "{bad}");
        }
    }
}
