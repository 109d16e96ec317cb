//! The body of a key upload, read one key at a time: text (one key per
//! line) or JSON `{"keys": [...]}`.
//!
//! An upload is read twice, straight from the body's bytes: once to check
//! it whole ([`check`]: a bad key refuses it before anything is stored),
//! once to hand each key on to be sealed and stored
//! ([`Checked::for_each_key`]). Neither pass keeps the keys, so an
//! upload costs about its body in memory, not a string per key (which made
//! a big upload take several times its size). Every rule of the contract is
//! kept: keys trimmed (white space and a byte order mark), blank lines
//! skipped, 1–4096 bytes of UTF-8, one bad key refuses the whole upload and
//! names it, and a JSON body's errors are exactly those of `parse_json`.

use crate::error::{Error, Result};
use crate::json::parse_json;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;

pub const MAX_KEY_BYTES: usize = 4096;

/// How the keys of an upload are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain` (or no Content-Type): one key per line.
    Text,
    /// `application/json`: `{"keys": ["…"]}`.
    Json,
}

impl Format {
    /// The format of a lower-cased Content-Type.
    pub fn of(content_type: &str) -> Result<Format> {
        if content_type.starts_with("application/json") {
            Ok(Format::Json)
        } else if content_type.is_empty() || content_type.starts_with("text/plain") {
            Ok(Format::Text)
        } else {
            Err(Error::invalid(
                "Content-Type",
                "send keys as text/plain (one per line) or application/json {\"keys\": [...]}",
            ))
        }
    }
}

/// A JSON key upload: `{"keys": ["…"]}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KeyUpload)]
pub struct JsonKeys {
    keys: Vec<String>,
}

/// A key as stored: without surrounding white space, and without the byte
/// order mark Windows tools put at the start of a "UTF-8" file (it would
/// make the first key a different key: sold again under a new fingerprint,
/// and handed over with an invisible prefix).
fn trim_key(k: &str) -> &str {
    k.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// Why a trimmed key is refused, if it is.
fn refusal(key: &str) -> Option<String> {
    if key.is_empty() {
        Some("a key must not be empty".into())
    } else if key.len() > MAX_KEY_BYTES {
        Some(format!("a key must be at most {MAX_KEY_BYTES} bytes"))
    } else {
        None
    }
}

fn no_keys() -> Error {
    Error::invalid("keys", "the upload holds no keys")
}

/// An upload checked whole: how many keys it holds, and how to read them
/// again.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    format: Format,
    total: u64,
    /// Whether the JSON body is read as a stream (else it is collected).
    streamed: bool,
}

/// Checks a whole upload without keeping its keys: how many it holds, or
/// the error that refuses it (naming the first bad key).
pub fn check(format: Format, body: &[u8]) -> Result<Checked> {
    let (total, streamed) = match format {
        Format::Text => (text_keys(body, &mut |_| Ok(()))?, false),
        Format::Json => match streamed_keys(body, &mut |_| Ok(())) {
            Some(read) => (read?, true),
            None => (collected_keys(body, &mut |_| Ok(()))?, false),
        },
    };
    Ok(Checked {
        format,
        total,
        streamed,
    })
}

impl Checked {
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Calls `each` with every key of `body`, the body that was checked,
    /// trimmed, in order. An error from `each` stops the reading and is
    /// returned as it is.
    pub fn for_each_key(
        &self,
        body: &[u8],
        each: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        let read = match (self.format, self.streamed) {
            (Format::Text, _) => text_keys(body, each),
            (Format::Json, true) => streamed_keys(body, each).unwrap_or_else(|| Err(changed())),
            (Format::Json, false) => collected_keys(body, each),
        };
        match read? == self.total {
            true => Ok(()),
            false => Err(changed()),
        }
    }
}

fn changed() -> Error {
    Error::unavailable("the upload changed while it was read")
}

/// Splits an upload into trimmed keys, all or nothing: one bad key rejects
/// the whole upload with its position. (A big upload's keys are not
/// collected: see [`check`] and [`Checked::for_each_key`].)
pub fn parse_upload(content_type: &str, body: &[u8]) -> Result<Vec<String>> {
    let checked = check(Format::of(content_type)?, body)?;
    let mut keys = Vec::with_capacity(checked.total() as usize);
    checked.for_each_key(body, &mut |k| {
        keys.push(k.to_string());
        Ok(())
    })?;
    Ok(keys)
}

fn text_keys(body: &[u8], each: &mut dyn FnMut(&str) -> Result<()>) -> Result<u64> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Error::invalid(
            "body",
            format!(
                "keys must be UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let mut n = 0u64;
    for key in text.lines().map(trim_key).filter(|k| !k.is_empty()) {
        n += 1;
        if let Some(why) = refusal(key) {
            return Err(Error::invalid(&format!("line {n}"), why));
        }
        each(key)?;
    }
    match n {
        0 => Err(no_keys()),
        n => Ok(n),
    }
}

/// The streamed read of `{"keys": [...]}`; `None` for a body it does not
/// take as that shape (a syntax or type error, an unknown or repeated
/// field, a body that is not an object), which [`collected_keys`] then
/// answers as every other JSON body is answered.
fn streamed_keys(body: &[u8], each: &mut dyn FnMut(&str) -> Result<()>) -> Option<Result<u64>> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let mut read = Reading {
        each,
        n: 0,
        bad: None,
        stopped: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let streamed = de
        .deserialize_map(Object(&mut read))
        .and_then(|()| de.end());
    if let Some(e) = read.stopped {
        return Some(Err(e));
    }
    streamed.ok()?;
    Some(match (read.bad, read.n) {
        (Some(e), _) => Err(e),
        (None, 0) => Err(no_keys()),
        (None, n) => Ok(n),
    })
}

/// `parse_json` of the whole body, then the key rules: the answer any
/// body gets; its keys collected (the streamed read takes every body that
/// is not an error, but for a repeated `keys` field).
fn collected_keys(body: &[u8], each: &mut dyn FnMut(&str) -> Result<()>) -> Result<u64> {
    let keys = parse_json::<JsonKeys>(body)?.keys;
    for (i, k) in keys.iter().enumerate() {
        if let Some(why) = refusal(trim_key(k)) {
            return Err(Error::invalid(&format!("keys[{i}]"), why));
        }
    }
    for k in &keys {
        each(trim_key(k))?;
    }
    match keys.len() {
        0 => Err(no_keys()),
        n => Ok(n as u64),
    }
}

/// What the streamed JSON read has seen so far.
struct Reading<'a> {
    each: &'a mut dyn FnMut(&str) -> Result<()>,
    /// Elements of `keys` seen.
    n: u64,
    /// The first bad key: the answer, unless the body turns out not to be
    /// well-formed (a syntax or type error comes first, as with any body).
    bad: Option<Error>,
    /// The error `each` stopped the read with.
    stopped: Option<Error>,
}

/// The top-level object: exactly one field, `keys`.
struct Object<'r, 'a>(&'r mut Reading<'a>);

impl<'de> Visitor<'de> for Object<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with a keys array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(field) = map.next_key::<Cow<'de, str>>()? {
            if field != "keys" || seen {
                return Err(de::Error::custom("not the shape of an upload"));
            }
            seen = true;
            map.next_value_seed(Keys(&mut *self.0))?;
        }
        match seen {
            true => Ok(()),
            false => Err(de::Error::missing_field("keys")),
        }
    }
}

/// The `keys` array.
struct Keys<'r, 'a>(&'r mut Reading<'a>);

impl<'de> DeserializeSeed<'de> for Keys<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Keys<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of keys")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Key(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One element of `keys`.
struct Key<'r, 'a>(&'r mut Reading<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, raw: &str) -> Result<(), E> {
        let r = self.0;
        let i = r.n;
        r.n += 1;
        let key = trim_key(raw);
        if r.bad.is_some() {
            return Ok(());
        }
        if let Some(why) = refusal(key) {
            r.bad = Some(Error::invalid(&format!("keys[{i}]"), why));
            return Ok(());
        }
        (r.each)(key).map_err(|e| {
            r.stopped = Some(e);
            E::custom("stopped")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ct: &str, body: &str) -> Result<Vec<String>> {
        parse_upload(ct, body.as_bytes())
    }

    fn field(e: Error) -> String {
        match e {
            Error::Invalid { field, .. } => field,
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn text_keys_are_trimmed_and_blank_lines_skipped() {
        let got = keys("text/plain", "\u{feff}A-1\r\n\n  B-2 \t\n\u{3000}\nC-3").unwrap();
        assert_eq!(got, ["A-1", "B-2", "C-3"]);
        assert_eq!(keys("", "X").unwrap(), ["X"]);
        assert_eq!(
            field(keys("text/plain", "\n \n").unwrap_err()),
            "keys",
            "no keys"
        );
        let e = parse_upload("text/plain", b"A\n\xff").unwrap_err();
        assert!(e.to_string().contains("offset 2"), "{e}");
        assert_eq!(field(keys("text/csv", "A").unwrap_err()), "Content-Type");
    }

    /// A key is 1-4096 bytes of UTF-8 after trimming; the first one over
    /// is named by its place among the keys.
    #[test]
    fn one_bad_key_refuses_the_whole_upload() {
        let biggest = "é".repeat(2048);
        let text = format!("A\n\n {biggest} \nB");
        assert_eq!(keys("text/plain", &text).unwrap().len(), 3);
        let text = format!("A\n\n{biggest}é\nB\n{biggest}é");
        assert_eq!(field(keys("text/plain", &text).unwrap_err()), "line 2");
        let body = serde_json::json!({"keys": ["A", " ", "B"]}).to_string();
        assert_eq!(
            field(keys("application/json", &body).unwrap_err()),
            "keys[1]"
        );
        let body = serde_json::json!({"keys": ["A", "K".repeat(4097)]}).to_string();
        assert_eq!(
            field(keys("application/json", &body).unwrap_err()),
            "keys[1]"
        );
    }

    /// The streamed JSON read answers every body as `parse_json` of
    /// `{"keys": [String]}` followed by the key rules did: syntax errors
    /// (even after a bad key) are 400, type errors beat key errors, a
    /// repeated field is taken as its last value.
    #[test]
    fn json_bodies_get_the_answers_of_the_collected_parse() {
        let ok = |body: &str| keys("application/json", body).unwrap();
        assert_eq!(
            ok(r#" {"keys": ["a", " b\u0020", "\ufeffc"]} "#),
            ["a", "b", "c"]
        );
        assert_eq!(ok(r#"{"keys": ["a"], "keys": ["b"]}"#), ["b"]);
        let code = |body: &str| keys("application/json", body).unwrap_err().code();
        assert_eq!(code(r#"{"keys": ["", "a"] x"#), "invalid_json");
        assert_eq!(code(r#"{"keys": ["a", "#), "invalid_json");
        assert_eq!(code(""), "invalid_json");
        for (body, named) in [
            (r#"{"keys": ["", 5]}"#, "keys[1]"),
            (r#"{"keys": "a"}"#, "keys"),
            (r#"{"keys": ["a"], "more": 1}"#, "more"),
            (r#"{}"#, "keys"),
            (r#"[["a"]]"#, "body"),
            (r#"{"keys": []}"#, "keys"),
        ] {
            let e = keys("application/json", body).unwrap_err();
            assert_eq!(e.code(), "invalid_request", "{body}");
            assert!(e.to_string().contains(named), "{body}: {e}");
        }
    }

    #[test]
    fn an_error_from_the_consumer_stops_the_read_and_is_returned() {
        for (format, body) in [
            (Format::Text, "A\nB\nC"),
            (Format::Json, r#"{"keys": ["A", "B", "C"]}"#),
            (Format::Json, r#"{"keys": ["X"], "keys": ["A", "B", "C"]}"#),
        ] {
            let checked = check(format, body.as_bytes()).unwrap();
            assert_eq!(checked.total(), 3);
            let mut seen = Vec::new();
            let e = checked
                .for_each_key(body.as_bytes(), &mut |k| {
                    seen.push(k.to_string());
                    match seen.len() {
                        2 => Err(Error::unavailable("storage is full")),
                        _ => Ok(()),
                    }
                })
                .unwrap_err();
            assert_eq!(e, Error::unavailable("storage is full"));
            assert_eq!(seen, ["A", "B"]);
        }
    }
}
