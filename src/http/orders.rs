//! Buyer orders: create (holding keys), and look up with the order's token.

use super::body::read_body;
use super::limits::Limit;
use super::{path_param, HttpResult, State};
use crate::crypto::{ct_eq, sha256, slow_hash};
use crate::domain::ids::{printable, Email, Gateway, OrderNo, ProductId};
use crate::domain::model::{Order, Pricing};
use crate::domain::order::OrderStatus;
use crate::domain::pricing;
use crate::error::Error;
use crate::json::parse_json;
use crate::shop::{self, Created, Idempotency, NewOrder};
use crate::store::now_ms;
use crate::views;
use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

const IDEMPOTENCY_CONTEXT: &[u8] = b"faka/idempotency/v1";

/// An order as the API and the storefront's form send it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewOrder)]
pub struct CreateBody {
    pub product_id: String,
    pub quantity: u32,
    pub email: String,
    pub gateway: String,
    pub query_password: Option<String>,
    /// A coupon code, in any letter case; empty is none.
    pub coupon: Option<String>,
    /// One of the gateway's `pay_types` (`GET /api/v1/gateways`); without
    /// it, the gateway's default for the buyer's device.
    pub pay_type: Option<String>,
}

/// The hash of the request's `Idempotency-Key`, if it has one: 1 to 64
/// printable ASCII characters (spaces inside count; HTTP drops them at
/// the ends).
fn idempotency_key(req: &HttpRequest) -> Result<Option<[u8; 32]>, Error> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| {
            (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        })
        .ok_or_else(|| {
            Error::invalid(
                "Idempotency-Key",
                "must be 1 to 64 printable ASCII characters",
            )
        })?;
    let mut scoped = b"idempotency-key:".to_vec();
    scoped.extend_from_slice(key.as_bytes());
    Ok(Some(sha256(&scoped)))
}

/// What a repeat must match: the request's fields as parsed, so the same
/// JSON spaced or ordered differently is the same request.
fn fingerprint(b: &CreateBody) -> [u8; 32] {
    let mut buf = Vec::with_capacity(128);
    let fields = [
        Some(b.product_id.as_str()),
        Some(b.email.as_str()),
        Some(b.gateway.as_str()),
        b.query_password.as_deref(),
        b.coupon.as_deref(),
    ];
    for field in fields {
        match field {
            Some(f) => {
                buf.push(1);
                buf.extend_from_slice(&(f.len() as u64).to_le_bytes());
                buf.extend_from_slice(f.as_bytes());
            }
            None => buf.push(0),
        }
    }
    buf.extend_from_slice(&b.quantity.to_le_bytes());
    // Appended only when present, so a request without one keeps the
    // fingerprint it had before pay types existed.
    if let Some(t) = &b.pay_type {
        buf.push(2);
        buf.extend_from_slice(t.as_bytes());
    }
    sha256(&buf)
}

/// An address as text, as `IpAddr`'s `Display` writes it; IPv4 (every
/// buyer of most shops) without the formatting machinery, which showed in
/// the profile of a flash sale's refusals.
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
    s
}

/// The client's address as the socket sees it (proxies are honoured only
/// when trusted; see `[server] trusted_proxies`).
pub fn client_ip(req: &HttpRequest, trusted: &[String]) -> Option<String> {
    // IPv4 peers on a dual-stack socket arrive as ::ffff:a.b.c.d.
    let peer = req.peer_addr().map(|a| ip_text(a.ip().to_canonical()))?;
    if trusted.contains(&peer) {
        // Every header line, in order (a proxy may add its own line rather
        // than append to the client's), entry by entry: bytes a client put
        // in an entry of its own do not spoil the ones the proxies added.
        let entries: Vec<&[u8]> = req
            .headers()
            .get_all("x-forwarded-for")
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .collect();
        let forwarded = entries
            .into_iter()
            .rev()
            .map(|e| std::str::from_utf8(e).unwrap_or("").trim())
            .find(|ip| !trusted.iter().any(|t| t == ip))
            .and_then(|ip| {
                ip.parse::<std::net::IpAddr>()
                    .or_else(|_| ip.parse::<std::net::SocketAddr>().map(|s| s.ip()))
                    .ok()
            });
        if let Some(ip) = forwarded {
            return Some(ip.to_string());
        }
    }
    Some(peer)
}

pub async fn create(state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let ip = client_ip(&req, &state.config.server.trusted_proxies);
    state
        .limits
        .take(Limit::Orders, ip.as_deref().unwrap_or("unknown"))?;
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let idem_key = idempotency_key(&req)?;
    let b: CreateBody = parse_json(&bytes)?;
    let idem = idem_key.map(|key_hash| Idempotency {
        key_hash,
        fingerprint: fingerprint(&b),
    });
    let (new, token) = place_order(&state, ip, mobile(&req), b, idem).await?;
    let st = state.clone();
    let tok = token.clone();
    let created = state
        .store
        .write(move |tx| {
            shop::create_order(tx, new, |order| {
                st.crypto
                    .seal(&replay_body(&st, order, &tok), IDEMPOTENCY_CONTEXT)
            })
        })
        .await?;
    match created {
        Created::New(order) => Ok(HttpResponse::Created()
            .content_type(ContentType::json())
            .body(created_body(&state, &order, &token))),
        Created::Replay(sealed) => {
            let body = state
                .crypto
                .open(&sealed, IDEMPOTENCY_CONTEXT)
                .map_err(|_| Error::unavailable("stored response could not be read"))?;
            Ok(HttpResponse::Created()
                .content_type(ContentType::json())
                .body(with_pay_url(&state, body)?))
        }
    }
}

/// Whether the request comes from a phone's browser (by its User-Agent).
pub fn mobile(req: &HttpRequest) -> bool {
    req.headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::payments::is_mobile)
}

/// The order's fields that need no read: product id, quantity, e-mail,
/// gateway (the order and the quote check them alike).
fn checked_fields(state: &State, b: &CreateBody) -> Result<(ProductId, Email, Gateway), Error> {
    let product_id = ProductId::parse(&b.product_id).map_err(|_| {
        Error::not_found(format!(
            "product {} not found",
            printable(&b.product_id, 64)
        ))
    })?;
    if b.quantity == 0 {
        return Err(Error::invalid("quantity", "must be at least 1"));
    }
    let email = Email::parse(&b.email)?;
    let gateway = Gateway::parse(&b.gateway)?;
    if !state.gateways.accepts_orders(gateway) {
        return Err(Error::invalid(
            "gateway",
            format!("gateway {} is not enabled", gateway.as_str()),
        ));
    }
    if let Some(pw) = &b.query_password {
        check_query_password(pw)?;
    }
    Ok((product_id, email, gateway))
}

/// Checks an order's fields and fixes what must be known before the write
/// (order number, the buyer's fresh token, the clock). The JSON API and
/// the storefront's form both place orders through this; `mobile` picks
/// the default pay type of gateways with a phone cashier.
pub fn new_order(
    state: &State,
    ip: Option<String>,
    mobile: bool,
    b: CreateBody,
    idem: Option<Idempotency>,
) -> Result<(NewOrder, String), Error> {
    let (product_id, email, gateway) = checked_fields(state, &b)?;
    let pay_type = state
        .gateways
        .pay_type(gateway, b.pay_type.as_deref(), mobile)?;
    if idem.is_none() {
        refuse_early(state, product_id.as_str(), b.quantity)?;
    }
    let now = now_ms();
    let order_no = OrderNo::generate(now);
    let coupon = coupon_code(b.coupon)?;
    let token = state.tokens.token(order_no.as_str());
    let new = NewOrder {
        order_no: order_no.as_str().to_string(),
        product_id: product_id.as_str().to_string(),
        quantity: b.quantity,
        email: email.as_str().to_string(),
        gateway,
        token_hash: sha256(token.as_bytes()),
        query_password_hash: None,
        query_password_phc: None,
        pay_type,
        client_ip: ip,
        created_at_ms: now,
        hold_ms: state.config.orders.hold_secs as i64 * 1000,
        idempotency: idem,
        max_pending_per_ip: state.config.limits.max_pending_per_ip,
        max_pending_per_email: state.config.limits.max_pending_per_email,
        coupon,
    };
    Ok((new, token))
}

/// A query password is 4 to 64 characters.
pub fn check_query_password(pw: &str) -> Result<(), Error> {
    if (4..=64).contains(&pw.chars().count()) {
        Ok(())
    } else {
        Err(Error::invalid(
            "query_password",
            "must be 4 to 64 characters",
        ))
    }
}

/// [`new_order`], then the query password's slow hash, if the order has
/// one: on the blocking pool and before the write, so the writer never
/// waits on argon2 and orders without a password cost nothing more.
pub async fn place_order(
    state: &State,
    ip: Option<String>,
    mobile: bool,
    b: CreateBody,
    idem: Option<Idempotency>,
) -> Result<(NewOrder, String), Error> {
    let password = b.query_password.clone();
    let (mut new, token) = new_order(state, ip, mobile, b, idem)?;
    if let Some(pw) = password {
        let phc = web::block(move || slow_hash(&pw))
            .await
            .map_err(|_| Error::unavailable("busy, try again"))?
            .map_err(|_| Error::unavailable("could not hash the query password"))?;
        new.query_password_phc = Some(phc);
    }
    Ok((new, token))
}

/// The buyer's coupon code: absent or empty is none; one that cannot be a
/// code is refused as unknown, like one no coupon has.
pub fn coupon_code(raw: Option<String>) -> Result<Option<String>, Error> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) if pricing::valid_code(c) => Ok(Some(c.to_string())),
        Some(c) => Err(Error::InvalidCoupon(format!(
            "coupon {} is unknown",
            printable(c, 32)
        ))),
    }
}

/// Answers what a read can already tell — unknown product, quantity out of
/// range, not enough stock — without queueing for the writer. In a flash
/// sale this keeps thousands of losing buyers off the write path. The writer
/// checks everything again; stock read here can only be stale in the buyer's
/// favour of an earlier refusal, which is a valid answer at that moment.
fn refuse_early(state: &State, product_id: &str, quantity: u32) -> Result<(), Error> {
    let Some(p) = state.views.active_product(&state.store, product_id)? else {
        return Err(Error::not_found(format!("product {product_id} not found")));
    };
    if quantity < p.min_quantity || quantity > p.max_quantity {
        return Err(Error::invalid(
            "quantity",
            format!("must be between {} and {}", p.min_quantity, p.max_quantity),
        ));
    }
    // The writer's count is ahead of the stored one while the batch that
    // claimed the last keys is made durable: buyers after it are refused
    // here instead of queueing behind that batch.
    let available = match state.store.early_available(product_id) {
        Some(early) => early.min(p.counts.available),
        None => p.counts.available,
    };
    if available < quantity as u64 {
        return Err(Error::OutOfStock(format!(
            "only {available} keys left for product {}",
            p.id
        )));
    }
    Ok(())
}

/// `POST /api/v1/orders/quote`: what the order would cost now, with the
/// order's own checks, answered from reads (nothing is held or claimed).
pub async fn quote(state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let ip = client_ip(&req, &state.config.server.trusted_proxies);
    state
        .limits
        .take(Limit::Lookups, ip.as_deref().unwrap_or("unknown"))?;
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let (price, stock) = quote_order(&state, parse_json(&bytes)?)?;
    Ok(HttpResponse::Ok().json(views::QuoteView {
        unit_price: price.unit_price,
        subtotal: price.subtotal,
        discount: price.discount,
        amount: price.amount(),
        currency: &state.config.shop.currency,
        stock,
    }))
}

/// The price an order of `b` would get now and the product's stock; the
/// same 404/409/422 as placing it. The coupon is checked against its
/// committed counts: an order placed after may still find it used up.
pub fn quote_order(state: &State, b: CreateBody) -> Result<(Pricing, u64), Error> {
    let (product_id, email, _) = checked_fields(state, &b)?;
    let coupon = coupon_code(b.coupon)?;
    let Some(p) = state
        .views
        .active_product(&state.store, product_id.as_str())?
    else {
        return Err(Error::not_found(format!(
            "product {} not found",
            product_id.as_str()
        )));
    };
    if b.quantity < p.min_quantity || b.quantity > p.max_quantity {
        return Err(Error::invalid(
            "quantity",
            format!("must be between {} and {}", p.min_quantity, p.max_quantity),
        ));
    }
    let mut price = pricing::price_before_coupon(p.price, &p.presentation.tiers, b.quantity)
        .ok_or_else(|| Error::invalid("quantity", "order amount is too large"))?;
    if let Some(code) = coupon {
        let u = pricing::CouponUse {
            product_id: &p.id,
            subtotal: price.subtotal,
            now_ms: now_ms(),
            email_uses: state.store.coupon_email_uses(&code, email.as_str())?,
        };
        let c = shop::check_coupon_use(state.store.coupon(&code)?, &code, u)?;
        price = price.with_coupon(&c);
    }
    let stock = state.store.stock(&p)?;
    if stock < b.quantity as u64 {
        return Err(Error::OutOfStock(format!(
            "only {stock} keys left for product {}",
            p.id
        )));
    }
    Ok((price, stock))
}

/// The answer kept for an `Idempotency-Key` repeat, made on the writer
/// thread: without its pay URL, which a gateway may take milliseconds to
/// sign (Alipay's RSA) while every other write waits. A repeat gets the
/// URL made afresh ([`with_pay_url`]).
fn replay_body(state: &State, order: &Order, token: &str) -> Vec<u8> {
    let view = views::created_order(order, token, &state.config.shop.currency, None);
    serde_json::to_vec(&view).unwrap_or_default()
}

/// A kept answer with its order's pay URL filled in. Answers kept before
/// pay URLs were left out already hold theirs (no `"pay_url":null`).
fn with_pay_url(state: &State, body: Vec<u8>) -> Result<Vec<u8>, Error> {
    const UNSET: &str = "\"pay_url\":null";
    #[derive(Deserialize)]
    struct Kept {
        order_no: String,
        token: String,
    }
    let Ok(text) = String::from_utf8(body) else {
        return Err(Error::unavailable("stored response could not be read"));
    };
    let Ok(kept) = serde_json::from_str::<Kept>(&text) else {
        return Ok(text.into_bytes());
    };
    // A string value holding the same characters would be escaped
    // (`\"pay_url\"`), so this finds only the field itself.
    let url = match state.store.order(&kept.order_no)? {
        Some(order) if text.contains(UNSET) => state.gateways.pay_url(&order, &kept.token),
        _ => None,
    };
    Ok(match url.and_then(|u| serde_json::to_string(&u).ok()) {
        Some(json) => text.replacen(UNSET, &format!("\"pay_url\":{json}"), 1),
        None => text,
    }
    .into_bytes())
}

fn created_body(state: &State, order: &Order, token: &str) -> Vec<u8> {
    // A free order is delivered already: nothing to pay.
    let pay_url = match order.status {
        OrderStatus::Pending => state.gateways.pay_url(order, token),
        _ => None,
    };
    let view = views::created_order(order, token, &state.config.shop.currency, pay_url);
    serde_json::to_vec(&view).unwrap_or_default()
}

/// The order `raw` if `token` is its token; a wrong token looks exactly
/// like an unknown order (`None`).
pub fn order_with_token(state: &State, raw: &str, token: &str) -> Result<Option<Order>, Error> {
    let Ok(order_no) = OrderNo::parse(raw) else {
        return Ok(None);
    };
    Ok(state
        .store
        .order(order_no.as_str())?
        .filter(|o| ct_eq(&sha256(token.as_bytes()), &o.token_hash)))
}

pub async fn get(state: State, req: HttpRequest) -> HttpResult {
    let ip = client_ip(&req, &state.config.server.trusted_proxies);
    state
        .limits
        .take(Limit::Lookups, ip.as_deref().unwrap_or("unknown"))?;
    let raw = path_param(&req, "order_no");
    let not_found = || Error::not_found(format!("order {} not found", printable(raw, 40)));
    let token = req
        .headers()
        .get("x-order-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v)
        })
        .ok_or_else(not_found)?;
    let order = order_with_token(&state, raw, &token)?.ok_or_else(not_found)?;
    let keys = match order.status {
        OrderStatus::Delivered => Some(views::key_texts(&state.store, &state.crypto, &order)?),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(views::order(&order, &state.config.shop.currency, keys)))
}

#[cfg(test)]
mod tests {
    use super::ip_text;
    use std::net::IpAddr;

    #[test]
    fn addresses_read_as_their_display_writes_them() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.0.100.9",
            "1.20.3.199",
            "192.168.10.250",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string(), "{text}");
            assert_eq!(ip_text(ip), text);
        }
        for n in [
            0u32,
            1,
            9,
            10,
            99,
            100,
            101,
            199,
            200,
            255,
            256,
            0x0a0b0c0d,
            u32::MAX,
        ] {
            let ip = IpAddr::V4(n.into());
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
