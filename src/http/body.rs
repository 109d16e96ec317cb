//! Reading and parsing request bodies and queries into the contract's errors:
//! syntax errors are 400 `invalid_json`; wrong types, missing or unknown
//! fields are 422 `invalid_request` naming the field; oversized bodies 413.

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
        Ok(())
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

/// Parses a JSON object into `T`. Two steps, so the answer never depends on
/// which problem comes first: any syntax error is 400 `invalid_json`; then a
/// body that is not an object (serde would take an array as a struct), a
/// wrong type, a missing or an unknown field is 422 naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // A body that is an object and parses straight into `T` is the common
    // case: one pass, without building a `serde_json::Value` first. Anything
    // else takes the two steps below, so every error is exactly what they
    // make of it.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        if let Ok(t) = T::deserialize(&mut de) {
            if de.end().is_ok() {
                return Ok(t);
            }
        }
    }
    parse_json_in_two_steps(bytes)
}

fn parse_json_in_two_steps<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidJson(
            "request body must be a JSON object".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidJson(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        Error::invalid(&field, strip_position(&e.into_inner().to_string()))
    })
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Parses the query string into `T` (unknown parameters are refused).
pub fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, Error> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| Error::invalid("query", e.to_string()))
}

/// The query of the paged admin listings: `state`, `limit`, `cursor`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub state: Option<String>,
    pub limit: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        quantity: u32,
        email: String,
    }

    #[test]
    fn json_errors_map_to_contract_codes() {
        assert_eq!(parse_json::<T>(b"{").unwrap_err().code(), "invalid_json");
        assert_eq!(parse_json::<T>(b"").unwrap_err().code(), "invalid_json");
        assert_eq!(parse_json::<T>(b"{} x").unwrap_err().code(), "invalid_json");
        assert_eq!(
            parse_json::<T>(br#"{"extra": }"#).unwrap_err().code(),
            "invalid_json"
        );
        assert_eq!(
            parse_json::<T>(br#"[2, "a"]"#).unwrap_err().code(),
            "invalid_request"
        );
        let e = parse_json::<T>(br#"{"quantity":"2","email":"a"}"#).unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        assert!(e.to_string().starts_with("quantity:"), "{e}");
        let e = parse_json::<T>(br#"{"quantity":2,"email":"a","extra":1}"#).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        let e = parse_json::<T>(br#"{"quantity":2}"#).unwrap_err();
        assert!(e.to_string().contains("email"), "{e}");
        assert!(parse_json::<T>(br#"{"quantity":2,"email":"a"}"#).is_ok());
    }

    /// The one-pass parse of an object and the two steps behind it give the
    /// same answers: a repeated field is taken as its last value (as the
    /// two steps always did), trailing bytes and arrays are still refused.
    #[test]
    fn the_one_pass_parse_answers_as_the_two_steps_do() {
        let bodies: [&[u8]; 8] = [
            br#" {"quantity":2,"email":"a"} "#,
            br#"{"quantity":1,"email":"a","quantity":3}"#,
            br#"{"quantity":2,"email":"a"} {}"#,
            br#"{"quantity":2.0,"email":"a"}"#,
            br#"{"quantity":99999999999999999999,"email":"a"}"#,
            br#"{"quantity":2,"email":"\ud800"}"#,
            br#"[2,"a"]"#,
            br#"{"quantity":2,"email":null}"#,
        ];
        for body in bodies {
            let one = parse_json::<T>(body).map(|t| (t.quantity, t.email));
            let two = parse_json_in_two_steps::<T>(body).map(|t| (t.quantity, t.email));
            match (one, two) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => {
                    assert_eq!((a.code(), a.to_string()), (b.code(), b.to_string()))
                }
                (a, b) => panic!("{}: {a:?} vs {b:?}", String::from_utf8_lossy(body)),
            }
        }
        let t = parse_json::<T>(br#"{"quantity":1,"email":"a","quantity":3}"#).unwrap();
        assert_eq!(t.quantity, 3);
    }
}
