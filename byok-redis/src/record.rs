//! How one key is stored.
//!
//! Format 2 (current): one binary value per key, a field of its user's
//! hash (see the [crate docs](crate#key-layout)):
//!
//! | bytes | holds |
//! |---|---|
//! | 0 | the record version, 1 |
//! | 1 | flags: bit 0 set when the key expires, bit 1 when it has a hint |
//! | 2..10 | created, Unix ms, i64 big-endian |
//! | 10..18 | expires, Unix ms, i64 big-endian (0 when it never expires) |
//! | 18 | the hint's length in bytes (0 without a hint) |
//! | 19.. | the hint (UTF-8), then the ciphertext to the end |
//!
//! The fixed offsets let the compare-and-swap script read the expiry and
//! the ciphertext without a parser. Format 1 (byok-redis 0.1 before the
//! change) kept a hash per key with the fields `v`, `c`, `h` and `e`;
//! [`decode_v1`] reads it for the migration.

use std::collections::HashMap;

use byok_core::{ApiKey, Result};
use chrono::{DateTime, TimeZone, Utc};

use crate::error::corrupt;

/// The version byte of the records written now.
const RECORD_VERSION: u8 = 1;
const FLAG_EXPIRES: u8 = 1;
const FLAG_HINT: u8 = 2;
/// Bytes before the hint.
const HEADER_LEN: usize = 19;

pub(crate) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// The record of a key (its slot is the hash and field it is stored in).
pub(crate) fn encode(key: &ApiKey) -> Vec<u8> {
    let hint = key.hint().unwrap_or("");
    let value = key.encrypted_value();
    let mut out = Vec::with_capacity(HEADER_LEN + hint.len() + value.len());
    let mut flags = 0;
    if key.expires_at().is_some() {
        flags |= FLAG_EXPIRES;
    }
    if key.hint().is_some() {
        flags |= FLAG_HINT;
    }
    out.push(RECORD_VERSION);
    out.push(flags);
    out.extend_from_slice(&key.created_at().timestamp_millis().to_be_bytes());
    out.extend_from_slice(&key.expires_at_millis().unwrap_or(0).to_be_bytes());
    // A hint is at most 64 bytes (`validate::MAX_HINT_LEN`), so it fits.
    out.push(u8::try_from(hint.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(hint.as_bytes());
    out.extend_from_slice(value);
    out
}

/// The parts of a record, borrowed from it.
struct Parts<'a> {
    created: i64,
    expires: Option<i64>,
    hint: Option<&'a [u8]>,
    value: &'a [u8],
}

fn parts(record: &[u8]) -> Result<Parts<'_>> {
    let bad = || corrupt("a byok record is not of the byok format");
    let header: &[u8; HEADER_LEN] = record
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(bad)?;
    let [
        version,
        flags,
        c0,
        c1,
        c2,
        c3,
        c4,
        c5,
        c6,
        c7,
        e0,
        e1,
        e2,
        e3,
        e4,
        e5,
        e6,
        e7,
        hint_len,
    ] = *header;
    if version != RECORD_VERSION || flags & !(FLAG_EXPIRES | FLAG_HINT) != 0 {
        return Err(bad());
    }
    let hint_end = HEADER_LEN + usize::from(hint_len);
    let hint = record.get(HEADER_LEN..hint_end).ok_or_else(bad)?;
    if flags & FLAG_HINT == 0 && !hint.is_empty() {
        return Err(bad());
    }
    Ok(Parts {
        created: i64::from_be_bytes([c0, c1, c2, c3, c4, c5, c6, c7]),
        expires: (flags & FLAG_EXPIRES != 0)
            .then(|| i64::from_be_bytes([e0, e1, e2, e3, e4, e5, e6, e7])),
        hint: (flags & FLAG_HINT != 0).then_some(hint),
        value: record.get(hint_end..).ok_or_else(bad)?,
    })
}

/// The key stored as `record` in the slot (`user`, `provider`).
pub(crate) fn decode(user: &str, provider: &str, record: &[u8]) -> Result<ApiKey> {
    let p = parts(record)?;
    let created = millis_to_time(p.created)
        .ok_or_else(|| corrupt("a byok record has an invalid creation time"))?;
    let expires = match p.expires {
        None => None,
        Some(e) => {
            Some(millis_to_time(e).ok_or_else(|| corrupt("a byok record has an invalid expiry"))?)
        }
    };
    let hint = match p.hint {
        None => None,
        Some(h) => Some(
            String::from_utf8(h.to_vec())
                .map_err(|_| corrupt("a byok record has a non-UTF-8 hint"))?,
        ),
    };
    let key = ApiKey::new(user, provider, p.value.to_vec())
        .and_then(|k| k.with_hint(hint))
        .map_err(|_| corrupt("a byok record, or the hash naming it, holds an invalid id or hint"))?
        .with_created_at(created)
        .with_expires_at(expires);
    Ok(key)
}

/// Whether the record has expired at `now_ms`, reading only its header.
pub(crate) fn is_expired_at(record: &[u8], now_ms: i64) -> Result<bool> {
    Ok(parts(record)?.expires.is_some_and(|e| e <= now_ms))
}

/// A key from the fields of its format-1 hash; `None` when the hash is absent.
pub(crate) fn decode_v1(
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
    fn decode_v1_rejects_foreign_hashes() {
        let mut f = HashMap::new();
        assert!(decode_v1("u", "p", f.clone()).unwrap().is_none());
        f.insert(b"x".to_vec(), b"1".to_vec());
        let e = decode_v1("u", "p", f.clone()).unwrap_err();
        assert_eq!(
            e.as_storage().map(|s| s.kind),
            Some(StorageErrorKind::Corrupt)
        );
        assert!(!e.is_retryable());
        f.clear();
        f.insert(b"v".to_vec(), vec![0, 1]);
        f.insert(b"c".to_vec(), b"1700000000123".to_vec());
        let k = decode_v1("u", "p", f.clone()).unwrap().unwrap();
        assert_eq!(k.encrypted_value(), [0, 1]);
        assert_eq!(k.created_at().timestamp_millis(), 1_700_000_000_123);
        f.insert(b"e".to_vec(), b"soon".to_vec());
        assert!(decode_v1("u", "p", f).is_err());
    }

    #[test]
    fn records_round_trip() {
        let base = ApiKey::new("u", "p", vec![0, 1, 2, 255]).unwrap();
        let variants = [
            base.clone(),
            base.clone().with_hint(Some("sk-...abcd".into())).unwrap(),
            base.clone()
                .with_expires_at(millis_to_time(1_900_000_000_123))
                .with_created_at(millis_to_time(1_700_000_000_001).unwrap()),
            base.with_hint(Some("日本".into()))
                .unwrap()
                .with_expires_at(millis_to_time(-5))
                .with_encrypted_value(Vec::new()),
        ];
        for key in variants {
            let created = byok_core::key::to_millis(key.created_at());
            let key = key.with_created_at(created);
            let record = encode(&key);
            assert_eq!(decode("u", "p", &record).unwrap(), key);
            let expired = key.expires_at_millis().is_some_and(|e| e <= 0);
            assert_eq!(is_expired_at(&record, 0).unwrap(), expired);
        }
    }

    #[test]
    fn records_have_fixed_offsets() {
        let key = ApiKey::new("u", "p", b"ct".to_vec())
            .unwrap()
            .with_hint(Some("hi".into()))
            .unwrap()
            .with_created_at(millis_to_time(258).unwrap())
            .with_expires_at(millis_to_time(513));
        assert_eq!(
            encode(&key),
            [
                1, 3, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 2, 1, 2, b'h', b'i', b'c', b't'
            ]
        );
    }

    #[test]
    fn malformed_records_are_corrupt() {
        let good = encode(&ApiKey::new("u", "p", b"ct".to_vec()).unwrap());
        let mut bad_version = good.clone();
        bad_version[0] = 2;
        let mut bad_flags = good.clone();
        bad_flags[1] = 4;
        let mut long_hint = good.clone();
        long_hint[18] = 200;
        let mut hint_without_flag = good.clone();
        hint_without_flag[18] = 1;
        for bad in [
            Vec::new(),
            good[..18].to_vec(),
            bad_version,
            bad_flags,
            long_hint,
            hint_without_flag,
            b"not a byok key".to_vec(),
        ] {
            let e = decode("u", "p", &bad).unwrap_err();
            assert_eq!(
                e.as_storage().map(|s| s.kind),
                Some(StorageErrorKind::Corrupt),
                "{bad:?}"
            );
            assert!(is_expired_at(&bad, 0).is_err());
        }
    }
}
