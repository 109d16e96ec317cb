//! The frame of every page (head, header with the shop's name and the
//! language switch) and the pages every part shares: 404 and refusal.

use super::{assets, Ctx, WebState};
use crate::http::State;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use maud::{html, Markup, DOCTYPE};

pub fn page(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    let full_title = if title.is_empty() {
        ctx.shop.clone()
    } else {
        format!("{title} · {}", ctx.shop)
    };
    html! {
        (DOCTYPE)
        html lang=(ctx.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (full_title) }
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(assets::css());
                script src=(assets::js()) defer {}
            }
            body {
                header.top {
                    a.brand href="/" { (ctx.shop) }
                    a.lookup href="/lookup" { (ctx.t().lookup_link) }
                    a.lang href=(ctx.switch_href()) hreflang=(ctx.lang.other().code()) data-lang-switch {
                        (ctx.lang.other().own_name())
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The HTML 404 for browsers.
pub fn not_found(req: &HttpRequest, state: &State, web: &WebState) -> HttpResponse {
    let ctx = Ctx::new(req, state, web);
    let t = ctx.t();
    let body = html! {
        section.card.notice {
            h1 { (t.not_found) }
            p { (t.not_found_help) }
            p { a.button href="/" { (t.back_home) } }
        }
    };
    ctx.respond(StatusCode::NOT_FOUND, web, page(&ctx, t.not_found, body))
}

/// A form post refused (no CSRF token, or a stale one).
pub fn refused(req: &HttpRequest, state: &State, web: &WebState) -> HttpResponse {
    let ctx = Ctx::new(req, state, web);
    let t = ctx.t();
    let body = html! {
        section.card.notice {
            h1 { (t.refused) }
            p { (t.refused_help) }
            p { a.button href="/" { (t.back_home) } }
        }
    };
    ctx.respond(StatusCode::FORBIDDEN, web, page(&ctx, t.refused, body))
}

/// An error from the shop (validation, out of stock, …) shown as a page,
/// with its stable code and message.
pub fn error(
    req: &HttpRequest,
    state: &State,
    web: &WebState,
    e: &crate::error::Error,
) -> HttpResponse {
    if e.status() == 404 {
        return not_found(req, state, web);
    }
    let ctx = Ctx::new(req, state, web);
    let t = ctx.t();
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let body = html! {
        section.card.notice {
            h1 { (t.error) }
            p.error data-error-code=(e.code()) { (e.to_string()) }
            p { a.button href="/" { (t.back_home) } }
        }
    };
    ctx.respond(status, web, page(&ctx, t.error, body))
}
