//! Stored values: one format-version byte, then bincode 2 (pinned `=2.0.1`) of
//! a serde struct. Decoding has a size limit and refuses trailing bytes, so a
//! torn or foreign value is an error, never a silently wrong record.

use serde::{de::DeserializeOwned, Serialize};

/// The format version written today. Readers reject other versions loudly
/// instead of guessing.
pub const FORMAT_VERSION: u8 = 1;

/// No stored value is bigger than this (a 100k-key import is many values).
const LIMIT: usize = 16 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("bincode: {0}")]
    Decode(String),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Encoding a plain struct into a Vec cannot fail except past the limit,
    // which no record reaches (they are bounded at the edge).
    match bincode::serde::encode_to_vec(value, config()) {
        Ok(body) => out.extend_from_slice(&body),
        Err(e) => panic!("encoding a stored record failed: {e}"),
    }
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version(version));
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{KeyRecord, KeyState};

    #[test]
    fn records_round_trip() {
        let k = KeyRecord {
            product_id: "p".into(),
            state: KeyState::Held {
                order_no: "F1".into(),
            },
            sealed: vec![1, 2, 3],
            imported_at_ms: 42,
        };
        assert_eq!(decode::<KeyRecord>(&encode(&k)).unwrap(), k);
    }

    #[test]
    fn foreign_versions_torn_values_and_trailing_bytes_are_refused() {
        let k = KeyRecord {
            product_id: "p".into(),
            state: KeyState::Available,
            sealed: vec![9; 10],
            imported_at_ms: 1,
        };
        let mut bytes = encode(&k);
        assert!(decode::<KeyRecord>(&[]).is_err());
        assert!(decode::<KeyRecord>(&bytes[..bytes.len() - 3]).is_err());
        bytes.push(0);
        assert!(matches!(
            decode::<KeyRecord>(&bytes),
            Err(CodecError::Trailing(1))
        ));
        bytes[0] = 9;
        assert!(matches!(
            decode::<KeyRecord>(&bytes),
            Err(CodecError::Version(9))
        ));
    }
}
