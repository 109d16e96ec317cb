//! The merchant's coupons: create, list, view and edit. Orders claim their
//! uses in `shop::create_order`; the counts shown here are the writer's.

use super::auth::Admin;
use super::body::read_body;
use super::{path_param, HttpResult, State};
use crate::domain::ids::{printable, ProductId};
use crate::domain::pricing::{self, Coupon, CouponKind};
use crate::error::Error;
use crate::json::parse_json;
use crate::shop::{self, CouponPatch, NewCoupon};
use crate::views;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

/// Most products one coupon may name.
const MAX_PRODUCTS: usize = 1000;
/// The largest amount a coupon may name (as a product's price).
const MAX_AMOUNT: u64 = 1_000_000_000_000;

/// A new coupon as the API and the admin panel's form send it.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCoupon)]
pub struct CreateBody {
    pub code: String,
    /// `percent` or `fixed`.
    pub kind: String,
    /// Percent 1–100, or minor units off.
    pub value: u64,
    pub product_ids: Option<Vec<String>>,
    pub min_amount: Option<u64>,
    pub max_uses: Option<u64>,
    pub max_uses_per_email: Option<u64>,
    /// RFC 3339.
    pub starts_at: Option<String>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    pub active: Option<bool>,
}

/// A coupon edit; for the nullable fields an explicit `null` clears.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CouponEdit)]
pub struct PatchBody {
    pub kind: Option<String>,
    pub value: Option<u64>,
    pub product_ids: Option<Vec<String>>,
    pub min_amount: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_uses: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_uses_per_email: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub starts_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<String>>,
    pub active: Option<bool>,
}

fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn kind(v: &str) -> Result<CouponKind, Error> {
    CouponKind::parse(v).ok_or_else(|| Error::invalid("kind", "must be percent or fixed"))
}

fn product_ids(v: Vec<String>) -> Result<Vec<String>, Error> {
    if v.len() > MAX_PRODUCTS {
        return Err(Error::invalid(
            "product_ids",
            format!("at most {MAX_PRODUCTS} products"),
        ));
    }
    let mut ids = v
        .iter()
        .map(|id| {
            ProductId::parse(id)
                .map(|p| p.as_str().to_string())
                .map_err(|_| {
                    Error::invalid(
                        "product_ids",
                        format!("{} is not a product id", printable(id, 64)),
                    )
                })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn amount(v: u64) -> Result<u64, Error> {
    if v > MAX_AMOUNT {
        return Err(Error::invalid("min_amount", "is too large"));
    }
    Ok(v)
}

/// An RFC 3339 time as ms since the epoch.
pub fn time_ms(field: &str, v: &str) -> Result<i64, Error> {
    let t = time::OffsetDateTime::parse(v.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
        Error::invalid(field, "must be an RFC 3339 time like 2026-12-01T00:00:00Z")
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn optional_time(field: &str, v: Option<String>) -> Result<Option<i64>, Error> {
    v.map(|s| time_ms(field, &s)).transpose()
}

/// Checks every field of a new coupon; the JSON API and the admin panel
/// both create coupons through this.
pub fn new_coupon(b: CreateBody) -> Result<NewCoupon, Error> {
    let code = b.code.trim().to_string();
    if !pricing::valid_code(&code) {
        return Err(Error::invalid("code", "must be 3 to 32 of A-Z a-z 0-9 _ -"));
    }
    Ok(NewCoupon {
        code,
        kind: kind(&b.kind)?,
        value: b.value,
        product_ids: product_ids(b.product_ids.unwrap_or_default())?,
        min_amount: amount(b.min_amount.unwrap_or(0))?,
        max_uses: b.max_uses,
        max_uses_per_email: b.max_uses_per_email,
        starts_at_ms: optional_time("starts_at", b.starts_at)?,
        expires_at_ms: optional_time("expires_at", b.expires_at)?,
        active: b.active.unwrap_or(true),
    })
}

/// Checks every field of a coupon edit, for the API and the admin panel.
pub fn coupon_patch(b: PatchBody) -> Result<CouponPatch, Error> {
    Ok(CouponPatch {
        kind: b.kind.as_deref().map(kind).transpose()?,
        value: b.value,
        product_ids: b.product_ids.map(product_ids).transpose()?,
        min_amount: b.min_amount.map(amount).transpose()?,
        max_uses: b.max_uses,
        max_uses_per_email: b.max_uses_per_email,
        starts_at_ms: b
            .starts_at
            .map(|v| optional_time("starts_at", v))
            .transpose()?,
        expires_at_ms: b
            .expires_at
            .map(|v| optional_time("expires_at", v))
            .transpose()?,
        active: b.active,
    })
}

/// The coupon named in the path, or 404.
fn load(state: &State, req: &HttpRequest) -> Result<Coupon, Error> {
    let code = path_param(req, "code");
    let not_found = || Error::not_found(format!("coupon {} not found", printable(code, 32)));
    if !pricing::valid_code(code) {
        return Err(not_found());
    }
    state.store.coupon(code)?.ok_or_else(not_found)
}

pub async fn create(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let new = new_coupon(parse_json(&bytes)?)?;
    let c = state
        .store
        .write(move |tx| shop::create_coupon(tx, new))
        .await?;
    Ok(HttpResponse::Created().json(views::coupon(&c)))
}

pub async fn list(_: Admin, state: State) -> HttpResult {
    let coupons = state.store.coupons()?;
    Ok(HttpResponse::Ok().json(views::CouponList {
        coupons: coupons.iter().map(views::coupon).collect(),
    }))
}

pub async fn get(_: Admin, state: State, req: HttpRequest) -> HttpResult {
    let c = load(&state, &req)?;
    Ok(HttpResponse::Ok().json(views::coupon(&c)))
}

pub async fn update(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let code = load(&state, &req)?.code;
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let patch = coupon_patch(parse_json(&bytes)?)?;
    let c = state
        .store
        .write(move |tx| shop::update_coupon(tx, &code, patch))
        .await?;
    Ok(HttpResponse::Ok().json(views::coupon(&c)))
}
