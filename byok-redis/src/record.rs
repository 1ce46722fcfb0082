//! How one key is stored: the fields of its hash.

use std::collections::HashMap;

use byok_core::{ApiKey, Result};
use chrono::{DateTime, TimeZone, Utc};

use crate::error::corrupt;

pub(crate) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// A key from the fields of its hash; `None` when the hash is absent.
pub(crate) fn decode(
    user: &str,
    provider: &str,
    mut fields: HashMap<Vec<u8>, Vec<u8>>,
) -> Result<Option<ApiKey>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let value = fields
        .remove(b"v".as_slice())
        .ok_or_else(|| corrupt("a byok key hash has no ciphertext field"))?;
    let created = fields
        .remove(b"c".as_slice())
        .and_then(|c| parse_millis(&c))
        .ok_or_else(|| corrupt("a byok key hash has no valid creation time"))?;
    let hint = match fields.remove(b"h".as_slice()) {
        None => None,
        Some(h) => Some(
            String::from_utf8(h).map_err(|_| corrupt("a byok key hash has a non-UTF-8 hint"))?,
        ),
    };
    let expires = match fields.remove(b"e".as_slice()) {
        None => None,
        Some(e) => {
            Some(parse_millis(&e).ok_or_else(|| corrupt("a byok key hash has an invalid expiry"))?)
        }
    };
    if !fields.is_empty() {
        return Err(corrupt("a byok key hash has unknown fields"));
    }
    let key = ApiKey::new(user, provider, value)
        .and_then(|k| k.with_hint(hint))
        .map_err(|_| {
            corrupt("a byok key hash, or the index naming it, holds an invalid id or hint")
        })?
        .with_created_at(created)
        .with_expires_at(expires);
    Ok(Some(key))
}

fn parse_millis(bytes: &[u8]) -> Option<DateTime<Utc>> {
    std::str::from_utf8(bytes)
        .ok()?
        .parse::<i64>()
        .ok()
        .and_then(millis_to_time)
}

#[cfg(test)]
mod tests {
    use byok_core::error::StorageErrorKind;

    use super::*;

    #[test]
    fn decode_rejects_foreign_hashes() {
        let mut f = HashMap::new();
        assert!(decode("u", "p", f.clone()).unwrap().is_none());
        f.insert(b"x".to_vec(), b"1".to_vec());
        let e = decode("u", "p", f.clone()).unwrap_err();
        assert_eq!(
            e.as_storage().map(|s| s.kind),
            Some(StorageErrorKind::Corrupt)
        );
        assert!(!e.is_retryable());
        f.clear();
        f.insert(b"v".to_vec(), vec![0, 1]);
        f.insert(b"c".to_vec(), b"1700000000123".to_vec());
        let k = decode("u", "p", f.clone()).unwrap().unwrap();
        assert_eq!(k.encrypted_value(), [0, 1]);
        assert_eq!(k.created_at().timestamp_millis(), 1_700_000_000_123);
        f.insert(b"e".to_vec(), b"soon".to_vec());
        assert!(decode("u", "p", f).is_err());
    }
}
