//! The admin panel's routes, sign-in and the guard every admin page passes.
//! Signing in checks the admin token exactly as the API does
//! (`AdminAuth::check`, with the same per-address failure throttling), then
//! starts a session (`session.rs`). Every admin form is CSRF-checked.

use super::layout::{self, page};
use super::{admin_pages, csrf, see_other, session, Ctx, Form, Web, WebState};
use crate::http::orders::client_ip;
use crate::http::State;
use crate::store::now_ms;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::page;
    cfg.service(page(
        "/admin/login",
        vec![web::get().to(login_page), web::post().to(login)],
    ))
    .service(page("/admin/logout", vec![web::post().to(logout)]))
    .service(page("/admin", vec![web::get().to(admin_pages::dashboard)]))
    .service(page(
        "/admin/products",
        vec![
            web::get().to(admin_pages::products),
            web::post().to(admin_pages::save_product),
        ],
    ))
    .service(page(
        "/admin/products/{id}/keys",
        vec![
            web::get().to(admin_pages::keys),
            web::post().to(admin_pages::key_action),
        ],
    ))
    .service(page(
        "/admin/products/{id}/keys/file",
        vec![web::post().to(super::key_file::upload)],
    ))
    .service(page(
        "/admin/orders",
        vec![web::get().to(admin_pages::orders)],
    ))
    .service(page(
        "/admin/orders/{order_no}",
        vec![
            web::get().to(admin_pages::order),
            web::post().to(admin_pages::order_action),
        ],
    ))
    .service(page(
        "/admin/webhooks",
        vec![
            web::get().to(admin_pages::webhooks),
            web::post().to(admin_pages::webhook_retry),
        ],
    ))
    .service(page(
        "/admin/emails",
        vec![web::post().to(super::admin_emails::retry)],
    ))
    .service(page(
        "/admin/backup",
        vec![web::post().to(admin_pages::backup)],
    ))
    .service(page(
        "/admin/coupons",
        vec![
            web::get().to(super::admin_coupons::coupons),
            web::post().to(super::admin_coupons::coupon_action),
        ],
    ));
}

/// Whether the request carries a live admin session (using it keeps it
/// alive).
pub fn signed_in(req: &HttpRequest, web: &WebState) -> bool {
    req.cookie(session::COOKIE)
        .is_some_and(|c| web.sessions.touch(c.value(), now_ms()))
}

/// A posted admin form, or the answer that refuses it: signed out → the
/// sign-in page, no CSRF token → 403.
pub async fn admin_form(
    req: &HttpRequest,
    state: &State,
    web: &WebState,
    payload: web::Payload,
    limit: usize,
) -> Result<Form, HttpResponse> {
    if !signed_in(req, web) {
        return Err(see_other("/admin/login"));
    }
    let form = Form::read(req, payload, limit)
        .await
        .map_err(|e| layout::error(req, state, web, &e))?;
    if !csrf::valid(req, &form) {
        return Err(layout::refused(req, state, web));
    }
    Ok(form)
}

async fn login_page(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    if signed_in(&req, &web) {
        return see_other("/admin");
    }
    login_form(&req, &state, &web, StatusCode::OK, None)
}

fn login_form(
    req: &HttpRequest,
    state: &State,
    web: &WebState,
    status: StatusCode,
    problem: Option<&str>,
) -> HttpResponse {
    let ctx = Ctx::new(req, state, web);
    let zh = ctx.lang == super::Lang::Zh;
    let body = html! {
        form.card.login method="post" action="/admin/login" {
            h1 { @if zh { "商家后台" } @else { "Admin" } }
            @if let Some(p) = problem { p.error { (p) } }
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            label { @if zh { "管理令牌" } @else { "Admin token" }
                input type="password" name="token" required autocomplete="current-password";
            }
            button type="submit" { @if zh { "登录" } @else { "Sign in" } }
        }
    };
    ctx.respond(status, web, page(&ctx, "Admin", body))
}

async fn login(req: HttpRequest, state: State, web: Web, payload: web::Payload) -> HttpResponse {
    let form = match Form::read(&req, payload, 8 * 1024).await {
        Ok(f) => f,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    if !csrf::valid(&req, &form) {
        return layout::refused(&req, &state, &web);
    }
    let ip =
        client_ip(&req, &state.config.server.trusted_proxies).unwrap_or_else(|| "unknown".into());
    let token = form
        .get("token")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && t.len() <= 512);
    let st = state.clone();
    let client = ip.clone();
    let checked = web::block(move || st.admin.check(&st.limits, &client, token.as_deref())).await;
    match checked {
        Ok(Ok(true)) => {
            let id = web.sessions.start(now_ms());
            let mut res = see_other("/admin");
            let _ = res.add_cookie(&session::cookie(id, web.secure_cookies));
            res
        }
        Ok(Ok(false)) => {
            tracing::warn!(client = %ip, "admin sign-in failed");
            login_form(
                &req,
                &state,
                &web,
                StatusCode::UNAUTHORIZED,
                Some("✗ token"),
            )
        }
        Ok(Err(e)) => layout::error(&req, &state, &web, &e),
        Err(_) => layout::error(
            &req,
            &state,
            &web,
            &crate::error::Error::unavailable("server busy"),
        ),
    }
}

async fn logout(req: HttpRequest, state: State, web: Web, payload: web::Payload) -> HttpResponse {
    let form = match admin_form(&req, &state, &web, payload, 8 * 1024).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    drop(form);
    if let Some(c) = req.cookie(session::COOKIE) {
        web.sessions.end(c.value());
    }
    let mut res = see_other("/admin/login");
    let _ = res.add_cookie(&session::removal(web.secure_cookies));
    res
}
