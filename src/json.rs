//! Parsing a JSON object into a typed value with the contract's errors:
//! syntax errors are 400 `invalid_json`; a body that is not an object, a
//! wrong type, a missing or an unknown field is 422 `invalid_request`
//! naming the field. Shared by the API's bodies, key uploads and the
//! gateways' callbacks.

use crate::error::Error;
use serde::de::DeserializeOwned;

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
