//! The buyer's pages: the storefront, a product with its order form, the
//! form's post (which places the order through the API's own checks and
//! `shop::create_order`), and the order page every gateway returns to.

use super::layout::{self, page};
use super::{csrf, markdown, money, query, see_other, Ctx, Form, Web};
use crate::domain::ids::{Gateway, ProductId};
use crate::domain::model::{Order, Product};
use crate::domain::order::OrderStatus;
use crate::error::Error;
use crate::http::limits::Limit;
use crate::http::orders::{client_ip, new_order, order_with_token, CreateBody};
use crate::http::{products, State};
use crate::shop::{self, Created};
use crate::views;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup, PreEscaped};

/// The gateways a buyer may choose on the storefront, in this order.
fn offered(state: &State) -> Vec<Gateway> {
    let mut out = Vec::new();
    for g in [
        Gateway::Epay,
        Gateway::Hmac,
        Gateway::Wechat,
        Gateway::Stripe,
    ] {
        if state.gateways.get(g).is_some() {
            out.push(g);
        }
    }
    if state.config.payments.manual.public {
        out.push(Gateway::Manual);
    }
    out
}

fn gateway_label(ctx: &Ctx, g: Gateway) -> &'static str {
    match g {
        Gateway::Epay => ctx.t().gateway_epay,
        Gateway::Hmac => ctx.t().gateway_online,
        Gateway::Manual => ctx.t().gateway_manual,
        Gateway::Wechat => ctx.t().gateway_wechat,
        Gateway::Stripe => ctx.t().gateway_stripe,
    }
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
            @if stock == 0 {
                span.stock.out { (t.sold_out) }
            } @else {
                span.stock { (t.in_stock) " " (stock) }
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
    if cacheable {
        if let Some(page) = web.home.get(version, ctx.lang, &chosen) {
            return ctx.respond(StatusCode::OK, &web, PreEscaped(page));
        }
    }
    let page = match home_page(&ctx, &state, chosen.as_deref()) {
        Ok(p) => p,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    if cacheable {
        web.home.put(version, ctx.lang, chosen, &page.0);
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
    let ctx = Ctx::new(&req, &state, &web);
    let body = product_body(&ctx, &state, &p, stock);
    ctx.respond(StatusCode::OK, &web, page(&ctx, &p.name, body))
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
                form.card.order method="post" action="/checkout" {
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
                        input type="password" name="query_password" maxlength="64" autocomplete="new-password";
                        small { (t.query_password_hint) }
                    }
                    fieldset {
                        legend { (t.pay_with) }
                        @for (i, g) in gateways.iter().enumerate() {
                            label.choice {
                                input type="radio" name="gateway" value=(g.as_str()) checked[i == 0];
                                (gateway_label(ctx, *g))
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
            let next = state
                .gateways
                .pay_url(&order, &token)
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
    let gateway = form.text("gateway").unwrap_or_default();
    // The storefront offers only some gateways; the API may take others.
    if !offered(state).iter().any(|g| g.as_str() == gateway) {
        return Err(crate::error::Error::invalid(
            "gateway",
            "choose a payment method",
        ));
    }
    let body = CreateBody {
        product_id: form.text("product_id").unwrap_or_default(),
        quantity: form
            .text("quantity")
            .and_then(|q| q.parse().ok())
            .ok_or_else(|| crate::error::Error::invalid("quantity", "must be a whole number"))?,
        email: form.text("email").unwrap_or_default(),
        gateway,
        query_password: form.text("query_password"),
    };
    let (new, token) = new_order(state, ip, body, None)?;
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
                dt { (t.amount) } dd { (money(o.amount, &state.config.shop.currency)) }
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
            p.hint { (t.keep_page) }
        }
    }
}
