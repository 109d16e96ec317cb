//! The buyer's pages: the storefront, a product with its order form, the
//! form's post (which places the order through the API's own checks and
//! `shop::create_order`), and the order page every gateway returns to.

use super::layout::{self, page};
use super::page_cache::Page;
use super::{csrf, markdown, money, query, see_other, Ctx, Form, Web};
use crate::domain::ids::{Gateway, ProductId};
use crate::domain::model::{Order, Product};
use crate::domain::order::OrderStatus;
use crate::error::Error;
use crate::http::limits::Limit;
use crate::http::orders::{client_ip, mobile, order_with_token, place_order, CreateBody};
use crate::http::{products, State};
use crate::shop::{self, Created};
use crate::views;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup, PreEscaped};

/// The payment choices of the storefront, in this order: a gateway, or
/// one of its pay types (epay's channels) as the form's `gateway` value
/// `gateway:pay_type`. Alipay's pay types are the buyer's device, which
/// its User-Agent tells; the buyer does not choose them.
fn offered(state: &State) -> Vec<(Gateway, Option<String>)> {
    let mut out = Vec::new();
    for g in state.gateways.offered(state.config.payments.manual.public) {
        let types = state.gateways.pay_types(g);
        if g == Gateway::Alipay || types.len() < 2 {
            out.push((g, None));
        } else {
            out.extend(types.into_iter().map(|t| (g, Some(t))));
        }
    }
    out
}

/// A choice's form value (see [`offered`]).
fn choice_value(g: Gateway, pay_type: Option<&str>) -> String {
    match pay_type {
        Some(t) => format!("{}:{t}", g.as_str()),
        None => g.as_str().to_string(),
    }
}

/// A choice's label. An epay channel is named with epay (`WeChat Pay
/// (epay)`): with Alipay enabled beside epay, "Alipay" alone would be two
/// choices.
fn gateway_label(ctx: &Ctx, g: Gateway, pay_type: Option<&str>) -> String {
    let t = ctx.t();
    let Some(pay_type) = pay_type else {
        return match g {
            Gateway::Epay => t.gateway_epay,
            Gateway::Hmac => t.gateway_online,
            Gateway::Manual => t.gateway_manual,
            Gateway::Alipay => t.gateway_alipay,
            Gateway::Wechat => t.gateway_wechat,
            Gateway::Stripe => t.gateway_stripe,
        }
        .into();
    };
    let name = match pay_type {
        "alipay" => t.pay_type_alipay,
        "wxpay" => t.pay_type_wxpay,
        "qqpay" => t.pay_type_qqpay,
        other => other,
    };
    let via = if g == Gateway::Epay { t.via_epay } else { "" };
    format!("{name}{via}")
}

fn card(ctx: &Ctx, p: &Product, stock: u64, currency: &str) -> Markup {
    let t = ctx.t();
    html! {
        a.product href={ "/products/" (p.id) } data-product-id=(p.id) {
            @if let Some(src) = &p.presentation.image_url {
                img src=(src) alt="" loading="lazy";
            }
            span.name { (p.name) }
            span.price { (money(p.price, currency)) }
            (tier_hint(ctx, p, currency))
            @if stock == 0 {
                span.stock.out { (t.sold_out) }
            } @else {
                span.stock { (t.in_stock) " " (stock) }
            }
        }
    }
}

/// The wholesale prices of a product, if it has any: "Wholesale 10 or
/// more ¥9.00 · 50 or more ¥8.50".
fn tier_hint(ctx: &Ctx, p: &Product, currency: &str) -> Markup {
    let t = ctx.t();
    html! {
        @if !p.presentation.tiers.is_empty() {
            span.tiers data-tiers {
                (t.wholesale)
                @for (i, tier) in p.presentation.tiers.iter().enumerate() {
                    @if i > 0 { " ·" }
                    " " (tier.min_quantity) " " (t.from_quantity) " " (money(tier.price, currency))
                }
            }
        }
    }
}

pub async fn home(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    let ctx = Ctx::new(&req, &state, &web);
    let chosen = query(&req, "category");
    // Only `lang` and `category` shape the page (the language switch's link
    // repeats the query): any other parameter is rendered, not kept.
    let cacheable = ctx.query_only(&["lang", "category"]);
    let version = state.store.products_version();
    let key = Page::Home(chosen.clone());
    if cacheable {
        if let Some(page) = web.pages.get(version, ctx.lang, &key) {
            return ctx.respond(StatusCode::OK, &web, PreEscaped(page));
        }
    }
    let page = match home_page(&ctx, &state, chosen.as_deref()) {
        Ok(p) => p,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    if cacheable {
        web.pages.put(version, ctx.lang, key, &page.0);
    }
    ctx.respond(StatusCode::OK, &web, page)
}

/// The storefront: category links and a card per active product (of the
/// chosen category).
fn home_page(ctx: &Ctx, state: &State, chosen: Option<&str>) -> Result<Markup, Error> {
    let t = ctx.t();
    let products = products::storefront(&state.store)?;
    let categories = products::categories(&products);
    let currency = &state.config.shop.currency;
    let mut cards = Vec::new();
    for p in products
        .iter()
        .filter(|p| chosen.is_none() || p.presentation.category.as_deref() == chosen)
    {
        cards.push(card(ctx, p, state.store.stock(p)?, currency));
    }
    let body = html! {
        @if !categories.is_empty() {
            nav.categories {
                a href="/" aria-current=[chosen.is_none().then_some("page")] { (t.all) }
                @for (name, _) in &categories {
                    a href={ "/?category=" (urlencode(name)) }
                        aria-current=[(chosen == Some(*name)).then_some("page")] { (name) }
                }
            }
        }
        @if cards.is_empty() {
            p.empty { (t.no_products) }
        } @else {
            section.grid { @for c in &cards { (c) } }
        }
    };
    Ok(page(ctx, "", body))
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

pub async fn product(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    let id = req.match_info().get("id").unwrap_or("");
    let mut ctx = Ctx::new(&req, &state, &web);
    // Only `lang` shapes the page; the buyer's CSRF token goes into the
    // kept page where the placeholder stands.
    let key = Page::Product(id.to_string());
    let cacheable = ctx.query_only(&["lang"]);
    let version = state.store.products_version();
    if cacheable {
        if let Some(page) = web.pages.get(version, ctx.lang, &key) {
            let page = page.replace(&web.csrf_slot, &ctx.csrf.token);
            return ctx.respond(StatusCode::OK, &web, PreEscaped(page));
        }
    }
    let found = ProductId::parse(id)
        .ok()
        .map(|id| state.store.product(id.as_str()))
        .transpose();
    let p = match found {
        Ok(Some(Some(p))) if p.active => p,
        Ok(_) => return layout::not_found(&req, &state, &web),
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    let stock = match state.store.stock(&p) {
        Ok(s) => s,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    let token = std::mem::replace(&mut ctx.csrf.token, web.csrf_slot.clone());
    let body = product_body(&ctx, &state, &p, stock);
    let html = page(&ctx, &p.name, body).0;
    if cacheable {
        web.pages.put(version, ctx.lang, key, &html);
    }
    let html = html.replace(&web.csrf_slot, &token);
    ctx.csrf.token = token;
    ctx.respond(StatusCode::OK, &web, PreEscaped(html))
}

fn product_body(ctx: &Ctx, state: &State, p: &Product, stock: u64) -> Markup {
    let t = ctx.t();
    let gateways = offered(state);
    let max = (p.max_quantity as u64).min(stock.max(1));
    html! {
        article.card.product-page data-product-id=(p.id) {
            @if let Some(src) = &p.presentation.image_url { img.hero src=(src) alt=""; }
            h1 { (p.name) }
            p.price { (money(p.price, &state.config.shop.currency)) " " small { (t.per_key) } }
            p { (tier_hint(ctx, p, &state.config.shop.currency)) }
            @if stock == 0 {
                p.stock.out { (t.sold_out) }
            } @else {
                p.stock { (t.in_stock) " " (stock) }
            }
            div.description { (PreEscaped(markdown::render(&p.description))) }
        }
        @if stock > 0 {
            @if gateways.is_empty() {
                p.card.notice { (t.no_gateway) }
            } @else {
                form.card.order method="post" action="/checkout" data-quote-form {
                    input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
                    input type="hidden" name="product_id" value=(p.id);
                    label { (t.quantity)
                        input type="number" name="quantity" value=(p.min_quantity)
                            min=(p.min_quantity) max=(max) required inputmode="numeric";
                    }
                    label { (t.email)
                        input type="email" name="email" required maxlength="254" autocomplete="email"
                            placeholder="you@example.com";
                        small { (t.email_hint) }
                    }
                    label { (t.query_password)
                        input type="password" name="query_password" minlength="4" maxlength="64" autocomplete="new-password";
                        small { (t.query_password_hint) }
                    }
                    label { (t.coupon)
                        input type="text" name="coupon" maxlength="32" autocomplete="off";
                        small { (t.coupon_hint) }
                    }
                    // Filled by the page's script from POST /api/v1/orders/quote;
                    // without it the order is priced when it is placed.
                    p.quote hidden data-quote data-to-pay=(t.to_pay) data-discount=(t.discount) {}
                    fieldset {
                        legend { (t.pay_with) }
                        @for (i, (g, pay_type)) in gateways.iter().enumerate() {
                            label.choice {
                                input type="radio" name="gateway"
                                    value=(choice_value(*g, pay_type.as_deref())) checked[i == 0];
                                (gateway_label(ctx, *g, pay_type.as_deref()))
                            }
                        }
                    }
                    button type="submit" { (t.buy) }
                }
            }
        }
    }
}

/// The order form's post: the API's checks and `shop::create_order`, then
/// the gateway's payment page, or the order page when there is none.
pub async fn checkout(
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
    match place(&req, &state, &form).await {
        Ok((order, token)) => {
            // A free order is delivered already: straight to its page.
            let next = (order.status == OrderStatus::Pending)
                .then(|| state.gateways.pay_url(&order, &token))
                .flatten()
                .unwrap_or_else(|| format!("/orders/{}?token={token}", order.order_no));
            see_other(&next)
        }
        Err(e) => layout::error(&req, &state, &web, &e),
    }
}

async fn place(
    req: &HttpRequest,
    state: &State,
    form: &Form,
) -> Result<(Order, String), crate::error::Error> {
    let ip = client_ip(req, &state.config.server.trusted_proxies);
    state
        .limits
        .take(Limit::Orders, ip.as_deref().unwrap_or("unknown"))?;
    let choice = form.text("gateway").unwrap_or_default();
    // The storefront offers only some gateways; the API may take others.
    let Some((gateway, pay_type)) = offered(state)
        .into_iter()
        .find(|(g, t)| choice_value(*g, t.as_deref()) == choice)
    else {
        return Err(crate::error::Error::invalid(
            "gateway",
            "choose a payment method",
        ));
    };
    let body = CreateBody {
        product_id: form.text("product_id").unwrap_or_default(),
        quantity: form
            .text("quantity")
            .and_then(|q| q.parse().ok())
            .ok_or_else(|| crate::error::Error::invalid("quantity", "must be a whole number"))?,
        email: form.text("email").unwrap_or_default(),
        gateway: gateway.as_str().to_string(),
        query_password: form.text("query_password"),
        coupon: form.text("coupon"),
        pay_type,
    };
    let (new, token) = place_order(state, ip, mobile(req), body, None).await?;
    let created = state
        .store
        .write(move |tx| shop::create_order(tx, new, |_| Vec::new()))
        .await?;
    match created {
        Created::New(order) => Ok((*order, token)),
        // Only requests with an Idempotency-Key replay, and forms have none.
        Created::Replay(_) => Err(crate::error::Error::unavailable("try again")),
    }
}

pub async fn order(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    let ip = client_ip(&req, &state.config.server.trusted_proxies);
    if let Err(e) = state
        .limits
        .take(Limit::Lookups, ip.as_deref().unwrap_or("unknown"))
    {
        return layout::error(&req, &state, &web, &e);
    }
    let no = req.match_info().get("order_no").unwrap_or("");
    let token = query(&req, "token").unwrap_or_default();
    let order = match order_with_token(&state, no, &token) {
        Ok(Some(o)) => o,
        Ok(None) => return layout::not_found(&req, &state, &web),
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    render_order(&req, &state, &web, &order, &token)
}

/// The order page of `order`, whose token the buyer showed: also what
/// `/pay/{order_no}` shows for a gateway paid by QR code.
pub(super) fn render_order(
    req: &HttpRequest,
    state: &State,
    web: &Web,
    order: &Order,
    token: &str,
) -> HttpResponse {
    let keys = match order.status {
        OrderStatus::Delivered => match views::key_texts(&state.store, &state.crypto, order) {
            Ok(k) => k,
            Err(e) => return layout::error(req, state, web, &e),
        },
        _ => Vec::new(),
    };
    let product = state.store.product(&order.product_id).ok().flatten();
    let ctx = Ctx::new(req, state, web);
    let qr = super::pay_page::qr_code(&ctx, state, order);
    let pay_url = (order.status == OrderStatus::Pending && qr.is_none())
        .then(|| state.gateways.pay_url(order, token))
        .flatten();
    let body = order_body(
        &ctx,
        state,
        order,
        token,
        product.as_ref(),
        &keys,
        (pay_url, qr),
    );
    let title = format!("{} {}", ctx.t().order, order.order_no);
    ctx.respond(StatusCode::OK, web, page(&ctx, &title, body))
}

fn order_body(
    ctx: &Ctx,
    state: &State,
    o: &Order,
    token: &str,
    product: Option<&Product>,
    keys: &[String],
    (pay_url, qr): (Option<String>, Option<Markup>),
) -> Markup {
    let t = ctx.t();
    let status = o.status.as_str();
    let help = match o.status {
        OrderStatus::Pending => t.pending_help,
        OrderStatus::Paid => t.paid_help,
        OrderStatus::AwaitingStock => t.awaiting_help,
        OrderStatus::Expired => t.expired_help,
        OrderStatus::Refunded => t.refunded_help,
        OrderStatus::Delivered => "",
    };
    let manual = &state.config.payments.manual.instructions;
    let instructions = product.and_then(|p| p.presentation.instructions.as_deref());
    html! {
        section.card.order-page data-order-no=(o.order_no) data-token=(token)
            data-copied=(t.copied) data-copy=(t.copy) data-delivered=(t.status_delivered) {
            h1 { (t.order) " " code { (o.order_no) } }
            p.status-line {
                span.badge data-status-label { (t.status(status)) }
                " "
                span.raw-status data-order-status { (status) }
            }
            dl {
                (price_lines(ctx, o, &state.config.shop.currency))
                @if let Some(p) = product { dt { "#" } dd { (p.name) " × " (o.quantity) } }
                dt { (t.created) } dd { time { (views::rfc3339(o.created_at_ms)) } }
                @if o.status == OrderStatus::Pending {
                    dt data-pending-only { (t.expires) } dd { time { (views::rfc3339(o.expires_at_ms)) } }
                }
            }
            p.help data-help { (help) }
            @if let Some(url) = pay_url {
                p { a.button.pay href=(url) rel="noreferrer" { (t.pay_now) } }
            }
            @if let Some(qr) = qr {
                (qr)
            }
            @if o.status == OrderStatus::Pending && o.gateway == "manual" && !manual.is_empty() {
                p.manual { (manual) }
            }
            div.keys hidden[keys.is_empty()] data-keys {
                h2 { (t.your_keys) }
                ul {
                    @for k in keys {
                        li { code data-key { (k) } button type="button" data-copy-key { (t.copy) } }
                    }
                }
            }
            @if let Some(text) = instructions {
                div.instructions hidden[keys.is_empty()] data-instructions {
                    h2 { (t.instructions) }
                    p { (text) }
                }
            }
            @if o.status == OrderStatus::Delivered && state.config.email().is_some() {
                (super::lookup_pages::resend_form(ctx, &o.order_no, None))
            }
            p.hint { (t.keep_page) }
        }
    }
}

/// An order's price as it was fixed: unit price, subtotal, the coupon's
/// discount when there is one, and the amount.
fn price_lines(ctx: &Ctx, o: &Order, currency: &str) -> Markup {
    let t = ctx.t();
    let p = &o.pricing;
    html! {
        dt { (t.unit_price) } dd data-unit-price { (money(p.unit_price, currency)) " × " (o.quantity) }
        @if p.discount > 0 || p.coupon.is_some() {
            dt { (t.subtotal) } dd { (money(p.subtotal, currency)) }
            dt { (t.discount) } dd data-discount {
                "−" (money(p.discount, currency))
                @if let Some(code) = &p.coupon { " (" code { (code) } ")" }
            }
        }
        dt { (t.amount) } dd data-amount { (money(o.amount, currency)) }
    }
}
