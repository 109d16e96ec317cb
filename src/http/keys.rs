//! Card keys: import (text lines or JSON), masked listing, deletion of
//! available keys. Key text is sealed before it reaches the writer and only
//! ever leaves again inside a delivered order.

use super::auth::Admin;
use super::body::{cursor, limit, parse_json, parse_query, read_body, PageQuery};
use super::{path_param, HttpResult, State};
use crate::crypto::{mask_key, Crypto};
use crate::domain::ids::{printable, ProductId};
use crate::domain::shop::{self, SealedKey};
use crate::error::Error;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;

pub const MAX_KEY_BYTES: usize = 4096;

fn product_id(req: &HttpRequest) -> Result<ProductId, Error> {
    let raw = path_param(req, "id");
    ProductId::parse(raw)
        .map_err(|_| Error::not_found(format!("product {} not found", printable(raw, 64))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonKeys {
    keys: Vec<String>,
}

/// A key as stored: without surrounding white space, and without the byte
/// order mark Windows tools put at the start of a "UTF-8" file (it would
/// make the first key a different key: sold again under a new fingerprint,
/// and handed over with an invisible prefix).
fn trim_key(k: &str) -> &str {
    k.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// Splits an upload into trimmed keys, all or nothing: one bad key rejects
/// the whole upload with its position.
pub fn parse_upload(content_type: &str, body: &[u8]) -> Result<Vec<String>, Error> {
    let json = content_type.starts_with("application/json");
    let raw: Vec<String> = if json {
        parse_json::<JsonKeys>(body)?.keys
    } else if content_type.is_empty() || content_type.starts_with("text/plain") {
        let text = std::str::from_utf8(body).map_err(|e| {
            Error::invalid(
                "body",
                format!(
                    "keys must be UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )
        })?;
        text.lines()
            .map(trim_key)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        return Err(Error::invalid(
            "Content-Type",
            "send keys as text/plain (one per line) or application/json {\"keys\": [...]}",
        ));
    };
    let mut keys = Vec::with_capacity(raw.len());
    for (i, k) in raw.into_iter().enumerate() {
        let t = trim_key(&k);
        let field = if json {
            format!("keys[{i}]")
        } else {
            format!("line {}", i + 1)
        };
        if t.is_empty() {
            return Err(Error::invalid(&field, "a key must not be empty"));
        }
        if t.len() > MAX_KEY_BYTES {
            return Err(Error::invalid(
                &field,
                format!("a key must be at most {MAX_KEY_BYTES} bytes"),
            ));
        }
        keys.push(if t.len() == k.len() { k } else { t.to_string() });
    }
    if keys.is_empty() {
        return Err(Error::invalid("keys", "the upload holds no keys"));
    }
    Ok(keys)
}

pub fn seal_keys(crypto: &Crypto, product_id: &str, keys: Vec<String>) -> Vec<SealedKey> {
    keys.into_iter()
        .map(|k| SealedKey {
            fingerprint: crypto.key_fingerprint(product_id, &k),
            sealed: crypto.seal(k.as_bytes(), product_id.as_bytes()),
        })
        .collect()
}

/// Keys per writer command. A huge upload committed as one batch makes sled
/// build oversized nodes that slow every later write and hold gigabytes, so
/// big uploads are committed as a sequence of batches. The upload was
/// validated as a whole first; if faka dies midway, the keys committed so far
/// stay, nobody was told success, and re-sending the same upload completes it
/// (the committed ones count as duplicates).
pub const IMPORT_CHUNK: usize = 10_000;

/// Chunks queued at the writer at once: chunk N+1 is sealed and computed
/// while chunk N is journaled and copied into sled.
const CHUNKS_IN_FLIGHT: usize = 2;

/// Seals and imports `keys` chunk by chunk (sealing off the async workers),
/// keeping [`CHUNKS_IN_FLIGHT`] chunks queued; answers are taken in order and
/// the first error ends the import (chunks already queued still commit).
pub async fn import_in_chunks(
    store: &crate::store::Store,
    crypto: &Arc<Crypto>,
    product_id: &str,
    mut keys: Vec<String>,
) -> Result<shop::ImportResult, Error> {
    let mut total = shop::ImportResult {
        added: 0,
        duplicates: 0,
        stock: 0,
    };
    let mut queued = VecDeque::new();
    while !keys.is_empty() || !queued.is_empty() {
        if !keys.is_empty() && queued.len() < CHUNKS_IN_FLIGHT {
            let rest = keys.split_off(keys.len().min(IMPORT_CHUNK));
            let chunk = std::mem::replace(&mut keys, rest);
            let (c, pid) = (crypto.clone(), product_id.to_string());
            let sealed = web::block(move || seal_keys(&c, &pid, chunk))
                .await
                .map_err(|_| Error::unavailable("server busy"))?;
            let pid = product_id.to_string();
            queued.push_back(store.submit(move |tx| shop::import_keys(tx, &pid, sealed))?);
            continue;
        }
        if let Some(next) = queued.pop_front() {
            let r = next.await?;
            total.added += r.added;
            total.duplicates += r.duplicates;
            total.stock = r.stock;
        }
    }
    Ok(total)
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
    // Parsing 100k keys takes a while: keep it off the async workers.
    let keys = web::block(move || parse_upload(&ct, &bytes))
        .await
        .map_err(|_| Error::unavailable("server busy"))??;
    let result = import_in_chunks(&state.store, &state.crypto, pid.as_str(), keys).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "added": result.added, "duplicates": result.duplicates, "stock": result.stock
    })))
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
                serde_json::json!({
                    "id": id.to_string(),
                    "state": rec.state.name(),
                    "masked": masked,
                    "order_no": rec.state.order_no(),
                })
            })
            .collect();
        Ok(serde_json::json!({
            "keys": keys,
            "next_cursor": page.next_cursor.map(|c| c.to_string()),
        }))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "removed": removed })))
}
