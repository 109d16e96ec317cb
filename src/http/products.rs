//! Products: the public catalogue and the merchant's product admin.

use super::auth::Admin;
use super::body::read_body;
use super::{path_param, HttpResult, State};
use crate::domain::ids::{printable, ProductId};
use crate::domain::model::{Presentation, Product, Tier};
use crate::domain::pricing;
use crate::error::Error;
use crate::json::parse_json;
use crate::shop::{self, NewProduct, ProductPatch};
use crate::store::Store;
use crate::views;
use actix_web::http::header::ContentType;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const MAX_PRICE: u64 = 1_000_000_000_000;
const MAX_QUANTITY: u32 = 100_000;

/// The public catalogue's answers, rendered once per products version, so a
/// browsing buyer costs a lookup instead of a sled read, a decode and a JSON
/// render. No answer is staler than a sled read would be: the writer raises
/// `Store::products_version` after a batch is in sled and before its callers
/// hear of it, an answer is kept only under the version read before its
/// product was, and a newer version empties the cache. Only active products
/// are kept, so it holds at most one entry per product plus the list.
#[derive(Default)]
pub struct PublicViews(Mutex<Views>);

#[derive(Default)]
struct Views {
    version: u64,
    one: HashMap<String, Bytes>,
    list: Option<Bytes>,
    /// Decoded active products, for the checks an order makes before it
    /// queues for the writer (`orders::refuse_early`).
    products: HashMap<String, Arc<Product>>,
}

impl PublicViews {
    /// An active product, as a sled read would find it now; kept under the
    /// same rule as the rendered answers. In a flash sale the thousands of
    /// buyers who come after the last key cost a lookup, not a sled read and
    /// a decode each.
    pub fn active_product(&self, store: &Store, id: &str) -> Result<Option<Arc<Product>>, Error> {
        let version = store.products_version();
        if let Some(p) = self.get(version, |v| v.products.get(id).cloned()) {
            return Ok(Some(p));
        }
        let Some(p) = store.product(id)?.filter(|p| p.active) else {
            return Ok(None);
        };
        let p = Arc::new(p);
        self.keep(version, |v| {
            v.products.insert(p.id.clone(), p.clone());
        });
        Ok(Some(p))
    }

    fn get<R>(&self, version: u64, pick: impl FnOnce(&Views) -> Option<R>) -> Option<R> {
        let views = self.0.lock().ok()?;
        if views.version != version {
            return None;
        }
        pick(&views)
    }

    fn keep(&self, version: u64, put: impl FnOnce(&mut Views)) {
        let Ok(mut views) = self.0.lock() else {
            return;
        };
        if version < views.version {
            return; // rendered from an older state
        }
        if version > views.version {
            *views = Views {
                version,
                ..Views::default()
            };
        }
        put(&mut views);
    }
}

fn json_body(body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(body)
}

fn render_json(v: &impl serde::Serialize) -> Result<Bytes, Error> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|_| Error::unavailable("could not render the answer"))
}

/// The active products in the storefront's order: by `sort`, then id.
pub fn storefront(store: &Store) -> Result<Vec<Product>, Error> {
    let mut products: Vec<Product> = store.products()?.into_iter().filter(|p| p.active).collect();
    // `products()` comes in id order and the sort is stable.
    products.sort_by_key(|p| p.presentation.sort);
    Ok(products)
}

/// The categories of active products, each with its product count, in
/// the order their first product appears in the storefront.
pub fn categories(products: &[Product]) -> Vec<(&str, u64)> {
    let mut out: Vec<(&str, u64)> = Vec::new();
    for c in products
        .iter()
        .filter_map(|p| p.presentation.category.as_deref())
    {
        match out.iter_mut().find(|(name, _)| *name == c) {
            Some((_, n)) => *n += 1,
            None => out.push((c, 1)),
        }
    }
    out
}

fn category_param(req: &HttpRequest) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "category")
        .map(|(_, v)| v)
}

pub async fn list_public(state: State, req: HttpRequest) -> HttpResult {
    let category = category_param(&req);
    let version = state.store.products_version();
    if category.is_none() {
        if let Some(body) = state.views.get(version, |v| v.list.clone()) {
            return Ok(json_body(body));
        }
    }
    let currency = &state.config.shop.currency;
    let products = storefront(&state.store)?;
    let views = products
        .iter()
        .filter(|p| category.is_none() || p.presentation.category == category)
        .map(|p| Ok(views::product(p, state.store.stock(p)?, currency)))
        .collect::<Result<Vec<_>, Error>>()?;
    let body = render_json(&views::ProductList { products: views })?;
    if category.is_none() {
        state.views.keep(version, |v| v.list = Some(body.clone()));
    }
    Ok(json_body(body))
}

pub async fn list_categories(state: State) -> HttpResult {
    let products = storefront(&state.store)?;
    let list: Vec<_> = categories(&products)
        .into_iter()
        .map(|(name, products)| views::CategoryView { name, products })
        .collect();
    Ok(HttpResponse::Ok().json(views::CategoryList { categories: list }))
}

pub async fn get_public(state: State, req: HttpRequest) -> HttpResult {
    let id = path_param(&req, "id");
    let not_found = || Error::not_found(format!("product {} not found", printable(id, 64)));
    let id = ProductId::parse(id).map_err(|_| not_found())?;
    let version = state.store.products_version();
    if let Some(body) = state
        .views
        .get(version, |v| v.one.get(id.as_str()).cloned())
    {
        return Ok(json_body(body));
    }
    let p = state
        .store
        .product(id.as_str())?
        .filter(|p| p.active)
        .ok_or_else(not_found)?;
    let stock = state.store.stock(&p)?;
    let body = render_json(&views::product(&p, stock, &state.config.shop.currency))?;
    state.views.keep(version, |v| {
        v.one.insert(p.id.clone(), body.clone());
    });
    Ok(json_body(body))
}

pub async fn list_admin(_: Admin, state: State) -> HttpResult {
    let currency = &state.config.shop.currency;
    let products = state.store.products()?;
    let views = products
        .iter()
        .map(|p| Ok(views::admin_product(p, state.store.stock(p)?, currency)))
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(HttpResponse::Ok().json(views::AdminProductList { products: views }))
}

/// A new product as the API and the admin panel's form send it.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewProduct)]
pub struct CreateBody {
    pub id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub price: u64,
    pub min_quantity: Option<u32>,
    pub max_quantity: Option<u32>,
    pub active: Option<bool>,
    pub category: Option<String>,
    pub sort: Option<i64>,
    pub image_url: Option<String>,
    pub instructions: Option<String>,
    pub low_stock: Option<u64>,
    pub tiers: Option<Vec<TierBody>>,
}

/// A product edit as the API and the admin panel's form send it; for the
/// nullable fields an explicit `null` clears, absence keeps.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProductEdit)]
pub struct PatchBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<u64>,
    pub min_quantity: Option<u32>,
    pub max_quantity: Option<u32>,
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub category: Option<Option<String>>,
    pub sort: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub image_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub instructions: Option<Option<String>>,
    pub low_stock: Option<u64>,
    pub tiers: Option<Vec<TierBody>>,
}

/// A wholesale price: from `min_quantity` keys on, each costs `price`.
#[derive(Deserialize, Clone, Copy, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Tier)]
pub struct TierBody {
    pub min_quantity: u32,
    pub price: u64,
}

/// Tiers in any order, stored sorted by `min_quantity` (see
/// `pricing::parse_tiers` for the checks).
fn tiers(v: Vec<TierBody>) -> Result<Vec<Tier>, Error> {
    let tiers = v
        .into_iter()
        .map(|t| Tier {
            min_quantity: t.min_quantity,
            price: t.price,
        })
        .collect();
    pricing::parse_tiers(tiers, MAX_PRICE).map_err(|m| Error::invalid("tiers", m))
}

/// A present field, `null` or not: `Some(None)` is an explicit `null`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Empty (after trimming) is none; otherwise at most `max` characters.
fn optional_text(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, Error> {
    let Some(v) = v else { return Ok(None) };
    let trimmed = v.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(Some(trimmed.to_string()))
}

fn category(v: Option<String>) -> Result<Option<String>, Error> {
    let v = optional_text("category", v, 64)?;
    if v.as_deref()
        .is_some_and(|c| c.chars().any(char::is_control))
    {
        return Err(Error::invalid(
            "category",
            "must not hold control characters",
        ));
    }
    Ok(v)
}

fn instructions(v: Option<String>) -> Result<Option<String>, Error> {
    optional_text("instructions", v, 4096)
}

/// `https://…` or a path on this shop. Protocol-relative `//host` and
/// backslash tricks are refused: a page must never load from elsewhere
/// but a deliberate https address.
fn image_url(v: Option<String>) -> Result<Option<String>, Error> {
    let Some(v) = optional_text("image_url", v, 2048)? else {
        return Ok(None);
    };
    let local = v.starts_with('/') && !v.starts_with("//") && !v.starts_with("/\\");
    let ok = (local || v.starts_with("https://"))
        && !v
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\');
    if !ok {
        return Err(Error::invalid(
            "image_url",
            "must be an https:// address or a path starting with /",
        ));
    }
    Ok(Some(v))
}

fn low_stock(v: u64) -> Result<u64, Error> {
    if v > MAX_PRICE {
        return Err(Error::invalid("low_stock", "is too large"));
    }
    Ok(v)
}

fn sort(v: i64) -> Result<i64, Error> {
    if v.unsigned_abs() > 1_000_000_000 {
        return Err(Error::invalid(
            "sort",
            "must be between -1000000000 and 1000000000",
        ));
    }
    Ok(v)
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

/// Checks every field of a new product; the JSON API and the admin panel
/// both create products through this.
pub fn new_product(b: CreateBody) -> Result<NewProduct, Error> {
    let id = match b.id {
        Some(id) => ProductId::parse(&id)?.as_str().to_string(),
        None => generated_id(),
    };
    Ok(NewProduct {
        id,
        name: name(b.name)?,
        description: description(b.description.unwrap_or_default())?,
        price: price(b.price)?,
        min_quantity: quantity("min_quantity", b.min_quantity.unwrap_or(1))?,
        max_quantity: quantity("max_quantity", b.max_quantity.unwrap_or(10))?,
        active: b.active.unwrap_or(true),
        presentation: Presentation {
            category: category(b.category)?,
            sort: sort(b.sort.unwrap_or(0))?,
            image_url: image_url(b.image_url)?,
            instructions: instructions(b.instructions)?,
            low_stock: low_stock(b.low_stock.unwrap_or(0))?,
            tiers: tiers(b.tiers.unwrap_or_default())?,
        },
    })
}

/// Checks every field of a product edit, for the API and the admin panel.
pub fn product_patch(b: PatchBody) -> Result<ProductPatch, Error> {
    Ok(ProductPatch {
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
        category: b.category.map(category).transpose()?,
        sort: b.sort.map(sort).transpose()?,
        image_url: b.image_url.map(image_url).transpose()?,
        instructions: b.instructions.map(instructions).transpose()?,
        low_stock: b.low_stock.map(low_stock).transpose()?,
        tiers: b.tiers.map(tiers).transpose()?,
    })
}

pub async fn create(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let new = new_product(parse_json(&bytes)?)?;
    let p = state
        .store
        .write(move |tx| shop::create_product(tx, new))
        .await?;
    let stock = p.counts.available; // a new product: nobody waits for it
    Ok(HttpResponse::Created().json(views::admin_product(&p, stock, &state.config.shop.currency)))
}

pub async fn update(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let raw_id = path_param(&req, "id").to_string();
    let id = ProductId::parse(&raw_id)
        .map_err(|_| Error::not_found(format!("product {} not found", printable(&raw_id, 64))))?;
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
    let patch = product_patch(parse_json(&bytes)?)?;
    let p = state
        .store
        .write(move |tx| shop::update_product(tx, id.as_str(), patch))
        .await?;
    let stock = state.store.stock(&p)?;
    Ok(HttpResponse::Ok().json(views::admin_product(&p, stock, &state.config.shop.currency)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_rendered_from_an_older_products_version_are_never_kept() {
        let views = PublicViews::default();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        views.keep(2, |v| v.list = Some(b("two")));
        assert_eq!(views.get(2, |v| v.list.clone()), Some(b("two")));
        assert_eq!(
            views.get(3, |v| v.list.clone()),
            None,
            "a newer version misses"
        );
        views.keep(1, |v| v.list = Some(b("one")));
        assert_eq!(
            views.get(2, |v| v.list.clone()),
            Some(b("two")),
            "an answer rendered from an older version is dropped"
        );
        views.keep(3, |v| {
            v.one.insert("p".into(), b("p3"));
        });
        assert_eq!(
            views.get(3, |v| v.list.clone()),
            None,
            "a newer version empties it"
        );
        assert_eq!(views.get(3, |v| v.one.get("p").cloned()), Some(b("p3")));
    }
}
