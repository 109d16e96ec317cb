//! Reading request bodies and parsing queries into the contract's errors:
//! oversized bodies are 413; unknown or malformed query parameters 422
//! `invalid_request`. JSON bodies are parsed by [`crate::json`].

use crate::domain::ids::OrderNo;
use crate::error::Error;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;

/// Reads the whole body, refusing more than `limit` bytes (413) before or
/// while it arrives.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, Error> {
    let too_large = || Error::PayloadTooLarge(format!("request body is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    let append = |buf: &mut web::BytesMut, chunk: Result<web::Bytes, PayloadError>| {
        let chunk = chunk
            .map_err(|e| Error::invalid("body", format!("could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
        Ok(())
    };
    // A small body usually arrived with its headers: take what is already
    // there without arming a timer, and only wait (under the deadline) for
    // the rest.
    loop {
        match payload.next().now_or_never() {
            Some(Some(chunk)) => append(&mut buf, chunk)?,
            Some(None) => return Ok(buf.freeze()),
            None => break,
        }
    }
    // A client that trickles its body must not hold a worker forever.
    // `[server] request_timeout_secs` for ordinary bodies, 60 times that for
    // bulk uploads (key imports).
    let secs = req
        .app_data::<super::State>()
        .map_or(10, |s| s.config.server.request_timeout_secs.max(1));
    let deadline = std::time::Duration::from_secs(if limit <= 1 << 20 { secs } else { secs * 60 });
    let read = async {
        while let Some(chunk) = payload.next().await {
            append(&mut buf, chunk)?;
        }
        Ok::<(), Error>(())
    };
    actix_web::rt::time::timeout(deadline, read)
        .await
        .map_err(|_| {
            Error::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                deadline.as_secs()
            ))
        })??;
    Ok(buf.freeze())
}

/// Parses the query string into `T` (unknown parameters are refused).
pub fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, Error> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| Error::invalid("query", e.to_string()))
}

/// The query of the paged admin listings: `state`, `limit`, `cursor`.
/// `limit` is read as text so a bad one gets the contract's 422, but
/// documented as the number it must be.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Only entries in this state (the listing names its states).
    pub state: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Parses an optional paging limit: default `def`, at most `max`.
pub fn limit(raw: Option<&str>, def: usize, max: usize) -> Result<usize, Error> {
    match raw {
        None => Ok(def),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Error::invalid(
                "limit",
                format!("must be a number from 1 to {max}"),
            )),
        },
    }
}

fn bad_cursor() -> Error {
    Error::invalid("cursor", "must be a cursor returned by a previous page")
}

/// Parses an optional numeric cursor.
pub fn cursor(raw: Option<&str>) -> Result<Option<u64>, Error> {
    raw.map(|s| s.parse::<u64>().map_err(|_| bad_cursor()))
        .transpose()
}

/// Parses an optional order-number cursor (the order list's).
pub fn order_cursor(raw: Option<&str>) -> Result<Option<OrderNo>, Error> {
    raw.map(|s| OrderNo::parse(s).map_err(|_| bad_cursor()))
        .transpose()
}
