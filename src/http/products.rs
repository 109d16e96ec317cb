//! Products: the public catalogue and the merchant's product admin.

use super::auth::Admin;
use super::body::{parse_json, read_body};
use super::{path_param, render, HttpResult, State};
use crate::domain::ids::{printable, ProductId};
use crate::domain::shop::{self, NewProduct, ProductPatch};
use crate::error::Error;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng;
use serde::Deserialize;

const MAX_PRICE: u64 = 1_000_000_000_000;
const MAX_QUANTITY: u32 = 100_000;

pub async fn list_public(state: State) -> HttpResult {
    let currency = &state.config.shop.currency;
    let products = state.store.products()?;
    let views: Vec<_> = products
        .iter()
        .filter(|p| p.active)
        .map(|p| render::product(p, currency))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "products": views })))
}

pub async fn get_public(state: State, req: HttpRequest) -> HttpResult {
    let id = path_param(&req, "id");
    let not_found = || Error::not_found(format!("product {} not found", printable(id, 64)));
    let id = ProductId::parse(id).map_err(|_| not_found())?;
    let p = state
        .store
        .product(id.as_str())?
        .filter(|p| p.active)
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(render::product(&p, &state.config.shop.currency)))
}

pub async fn list_admin(_: Admin, state: State) -> HttpResult {
    let currency = &state.config.shop.currency;
    let products = state.store.products()?;
    let views: Vec<_> = products
        .iter()
        .map(|p| render::admin_product(p, currency))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "products": views })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: Option<String>,
    name: String,
    description: Option<String>,
    price: u64,
    min_quantity: Option<u32>,
    max_quantity: Option<u32>,
    active: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    name: Option<String>,
    description: Option<String>,
    price: Option<u64>,
    min_quantity: Option<u32>,
    max_quantity: Option<u32>,
    active: Option<bool>,
}

fn name(v: String) -> Result<String, Error> {
    let v = v.trim().to_string();
    if v.is_empty() || v.chars().count() > 200 {
        return Err(Error::invalid("name", "must be 1 to 200 characters"));
    }
    Ok(v)
}

fn description(v: String) -> Result<String, Error> {
    if v.chars().count() > 10_000 {
        return Err(Error::invalid(
            "description",
            "must be at most 10000 characters",
        ));
    }
    Ok(v)
}

fn price(v: u64) -> Result<u64, Error> {
    if v == 0 || v > MAX_PRICE {
        return Err(Error::invalid(
            "price",
            format!("must be from 1 to {MAX_PRICE} minor units"),
        ));
    }
    Ok(v)
}

fn quantity(field: &str, v: u32) -> Result<u32, Error> {
    if v == 0 || v > MAX_QUANTITY {
        return Err(Error::invalid(
            field,
            format!("must be from 1 to {MAX_QUANTITY}"),
        ));
    }
    Ok(v)
}

fn generated_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..10)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("p-{tail}")
}

pub async fn create(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let b: CreateBody = parse_json(&bytes)?;
    let id = match b.id {
        Some(id) => ProductId::parse(&id)?.as_str().to_string(),
        None => generated_id(),
    };
    let new = NewProduct {
        id,
        name: name(b.name)?,
        description: description(b.description.unwrap_or_default())?,
        price: price(b.price)?,
        min_quantity: quantity("min_quantity", b.min_quantity.unwrap_or(1))?,
        max_quantity: quantity("max_quantity", b.max_quantity.unwrap_or(10))?,
        active: b.active.unwrap_or(true),
    };
    let p = state
        .store
        .write(move |tx| shop::create_product(tx, new))
        .await?;
    Ok(HttpResponse::Created().json(render::admin_product(&p, &state.config.shop.currency)))
}

pub async fn update(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let raw_id = path_param(&req, "id").to_string();
    let id = ProductId::parse(&raw_id)
        .map_err(|_| Error::not_found(format!("product {} not found", printable(&raw_id, 64))))?;
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let b: PatchBody = parse_json(&bytes)?;
    let patch = ProductPatch {
        name: b.name.map(name).transpose()?,
        description: b.description.map(description).transpose()?,
        price: b.price.map(price).transpose()?,
        min_quantity: b
            .min_quantity
            .map(|v| quantity("min_quantity", v))
            .transpose()?,
        max_quantity: b
            .max_quantity
            .map(|v| quantity("max_quantity", v))
            .transpose()?,
        active: b.active,
    };
    let p = state
        .store
        .write(move |tx| shop::update_product(tx, id.as_str(), patch))
        .await?;
    Ok(HttpResponse::Ok().json(render::admin_product(&p, &state.config.shop.currency)))
}
