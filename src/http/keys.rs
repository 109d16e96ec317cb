//! Card keys: import (text lines or JSON, all or nothing: see
//! `ops::upload`), masked listing, deletion of available keys. Key text is
//! sealed before it reaches the writer and only ever leaves again inside a
//! delivered order.

use super::auth::Admin;
use super::body::{cursor, limit, parse_query, read_body, PageQuery};
use super::{path_param, HttpResult, State};
use crate::crypto::mask_key;
use crate::domain::ids::{printable, ProductId};
use crate::error::Error;
use crate::json::parse_json;
use crate::ops::upload;
use crate::shop;
use crate::shop::key_parse::{self, Format};
use crate::views;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

fn product_id(req: &HttpRequest) -> Result<ProductId, Error> {
    let raw = path_param(req, "id");
    ProductId::parse(raw)
        .map_err(|_| Error::not_found(format!("product {} not found", printable(raw, 64))))
}

pub async fn import(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let pid = product_id(&req)?;
    if state.store.product(pid.as_str())?.is_none() {
        return Err(Error::not_found(format!("product {pid} not found")));
    }
    let limit = state.config.limits.import_body_mb * 1024 * 1024;
    let bytes = read_body(&req, payload, limit).await?;
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = Format::of(&ct)?;
    let (store, crypto) = (state.store.clone(), state.crypto.clone());
    // Reading, sealing and storing 100k keys takes a while, and waits on
    // the writer: off the async workers. Read twice: checked whole first,
    // then handed on key by key (see `key_parse`).
    let result = web::block(move || {
        let checked = key_parse::check(format, &bytes)?;
        upload::import(
            &store,
            &crypto,
            pid.as_str(),
            checked.total(),
            move |each| checked.for_each_key(&bytes, each),
        )
    })
    .await
    .map_err(|_| Error::unavailable("server busy"))??;
    Ok(HttpResponse::Ok().json(views::ImportedView {
        added: result.added,
        duplicates: result.duplicates,
        stock: result.stock,
    }))
}

pub async fn list(_: Admin, state: State, req: HttpRequest) -> HttpResult {
    let pid = product_id(&req)?;
    let q: PageQuery = parse_query(&req)?;
    let key_state = match q.state.as_deref() {
        None | Some("") => None,
        Some("available") => Some("available"),
        Some("held") => Some("held"),
        Some("sold") => Some("sold"),
        Some(_) => return Err(Error::invalid("state", "must be available, held or sold")),
    };
    let limit = limit(q.limit.as_deref(), 100, 1000)?;
    let cursor = cursor(q.cursor.as_deref())?;
    if state.store.product(pid.as_str())?.is_none() {
        return Err(Error::not_found(format!("product {pid} not found")));
    }
    let st = state.clone();
    // Off the HTTP worker: a state filter walks every key, and each key on
    // the page is opened to be masked.
    let body = super::off_worker(move || {
        let page = st.store.keys_page(pid.as_str(), key_state, limit, cursor)?;
        let keys: Vec<_> = page
            .keys
            .iter()
            .map(|(id, rec)| {
                let masked = st
                    .crypto
                    .open(&rec.sealed, rec.product_id.as_bytes())
                    .map(|plain| mask_key(&String::from_utf8_lossy(&plain)))
                    .unwrap_or_else(|_| "<sealed>".to_string());
                views::KeyView {
                    id: id.to_string(),
                    state: rec.state.name(),
                    masked,
                    order_no: rec.state.order_no(),
                }
            })
            .collect();
        // Rendered here: the views borrow the page.
        serde_json::to_vec(&views::KeyList {
            keys,
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        })
        .map_err(|_| Error::unavailable("could not render the key listing"))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KeyDeletion)]
pub struct DeleteBody {
    ids: Vec<String>,
}

pub async fn delete(_: Admin, state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let pid = product_id(&req)?;
    let bytes = read_body(&req, payload, state.config.limits.body_kb * 1024 * 16).await?;
    let body: DeleteBody = parse_json(&bytes)?;
    let ids = body
        .ids
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<u64>()
                .map_err(|_| Error::invalid(&format!("ids[{i}]"), "not a key id"))
        })
        .collect::<Result<Vec<u64>, Error>>()?;
    let removed = state
        .store
        .write(move |tx| shop::delete_keys(tx, pid.as_str(), &ids))
        .await?;
    Ok(HttpResponse::Ok().json(views::RemovedView { removed }))
}
