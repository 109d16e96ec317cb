//! The buyer's way back to their orders: `/lookup` (e-mail and query
//! password → their orders with keys, through the API's own lookup with its
//! rate limits and equal answers) and the resend form's post, which queues
//! the delivery e-mail again through the API's resend and answers the same
//! whatever happened.

use super::layout::{self, page};
use super::{csrf, money, Ctx, Form, Web};
use crate::domain::model::Order;
use crate::domain::order::OrderStatus;
use crate::http::emails::{lookup_orders, resend_delivery};
use crate::http::State;
use crate::views;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

fn lookup_form(ctx: &Ctx, email: &str) -> Markup {
    let t = ctx.t();
    html! {
        form.card.lookup method="post" action="/lookup" {
            h1 { (t.lookup_title) }
            p.help { (t.lookup_help) }
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            label { (t.email)
                input type="email" name="email" required maxlength="254" autocomplete="email"
                    value=(email) placeholder="you@example.com";
            }
            label { (t.lookup_password)
                input type="password" name="query_password" required minlength="4" maxlength="64"
                    autocomplete="current-password";
            }
            button type="submit" { (t.lookup_button) }
        }
    }
}

/// A resend button for a delivered order (the buyer's e-mail prefilled
/// when known).
pub fn resend_form(ctx: &Ctx, order_no: &str, email: Option<&str>) -> Markup {
    let t = ctx.t();
    html! {
        form.resend method="post" action={ "/orders/" (order_no) "/resend" } {
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            @if let Some(e) = email {
                input type="hidden" name="email" value=(e);
            } @else {
                label { (t.resend_help)
                    input type="email" name="email" required maxlength="254" autocomplete="email";
                }
            }
            button type="submit" { (t.resend_button) }
        }
    }
}

pub async fn form(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    let ctx = Ctx::new(&req, &state, &web);
    let body = lookup_form(&ctx, "");
    ctx.respond(StatusCode::OK, &web, page(&ctx, ctx.t().lookup_title, body))
}

pub async fn find(req: HttpRequest, state: State, web: Web, payload: web::Payload) -> HttpResponse {
    let form = match Form::read(&req, payload, state.config.limits.body_kb * 1024).await {
        Ok(f) => f,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    if !csrf::valid(&req, &form) {
        return layout::refused(&req, &state, &web);
    }
    let email = form.text("email").unwrap_or_default();
    let password = form.get("query_password").unwrap_or_default().to_string();
    let found = match lookup_orders(&state, &req, &email, password).await {
        Ok(f) => f,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    let ctx = Ctx::new(&req, &state, &web);
    let t = ctx.t();
    let body = html! {
        (lookup_form(&ctx, &email))
        @if found.is_empty() {
            p.card.notice data-lookup-empty { (t.lookup_none) }
        }
        @for (o, keys) in &found {
            (found_order(&ctx, &state, o, keys.as_deref().unwrap_or_default(), &email))
        }
    };
    ctx.respond(StatusCode::OK, &web, page(&ctx, t.lookup_title, body))
}

fn found_order(ctx: &Ctx, state: &State, o: &Order, keys: &[String], email: &str) -> Markup {
    let t = ctx.t();
    let name = state
        .store
        .product(&o.product_id)
        .ok()
        .flatten()
        .map(|p| p.name)
        .unwrap_or_default();
    html! {
        section.card.found-order data-order-no=(o.order_no) {
            h2 { (t.order) " " code { (o.order_no) } }
            p.status-line { span.badge { (t.status(o.status.as_str())) } }
            dl {
                dt { (t.amount) } dd { (money(o.amount, &state.config.shop.currency)) }
                dt { "#" } dd { (name) " × " (o.quantity) }
                dt { (t.created) } dd { time { (views::rfc3339(o.created_at_ms)) } }
            }
            @if !keys.is_empty() {
                h3 { (t.your_keys) }
                ul { @for k in keys { li { code data-key { (k) } } } }
            }
            @if o.status == OrderStatus::Delivered && state.config.email().is_some() {
                (resend_form(ctx, &o.order_no, Some(email)))
            }
        }
    }
}

pub async fn resend(
    req: HttpRequest,
    state: State,
    web: Web,
    payload: web::Payload,
) -> HttpResponse {
    let form = match Form::read(&req, payload, state.config.limits.body_kb * 1024).await {
        Ok(f) => f,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    if !csrf::valid(&req, &form) {
        return layout::refused(&req, &state, &web);
    }
    let no = req.match_info().get("order_no").unwrap_or("");
    let email = form.text("email").unwrap_or_default();
    if let Err(e) = resend_delivery(&state, no, &email).await {
        return layout::error(&req, &state, &web, &e);
    }
    let ctx = Ctx::new(&req, &state, &web);
    let t = ctx.t();
    let body = html! {
        section.card.notice data-resend-done {
            h1 { (t.resend_button) }
            p { (t.resend_done) }
            p { a.button href="/" { (t.back_home) } }
        }
    };
    ctx.respond(
        StatusCode::ACCEPTED,
        &web,
        page(&ctx, t.resend_button, body),
    )
}
