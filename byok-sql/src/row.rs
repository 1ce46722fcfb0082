//! Rows to keys: the checks every engine shares.

use byok_core::chrono::{DateTime, Utc};
use byok_core::error::{Field, Problem};
use byok_core::{ApiKey, Cursor, InvalidInput, Result, validate};

use crate::error::{Engine, corrupt};

/// The columns of a key that a `SELECT` reads when it knows the slot: a
/// read fetches only what the caller does not already have.
pub(crate) const VALUE_COLUMNS: &str = "encrypted_value, hint, created_at, expires_at";

/// The columns of a key that a `SELECT` of one user's keys reads.
pub(crate) const PROVIDER_COLUMNS: &str = "provider, encrypted_value, hint, created_at, expires_at";

/// The columns of a key that a `SELECT` of anyone's keys reads.
pub(crate) const SLOT_COLUMNS: &str =
    "user_id, provider, encrypted_value, hint, created_at, expires_at";

/// The columns of one key as an engine reads them.
pub(crate) struct KeyRow {
    pub(crate) user_id: String,
    pub(crate) provider: String,
    pub(crate) encrypted_value: Vec<u8>,
    pub(crate) hint: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// A row read back, turned into an `ApiKey`; a row that breaks the input
/// rules (written by hand or by something else) is corrupt, not invalid
/// input: the caller did nothing wrong. Ids stored before format
/// characters were refused stay readable (`ApiKey::new` checks a slot as
/// stored ids are checked).
pub(crate) fn into_key(engine: Engine, op: &'static str, row: KeyRow) -> Result<ApiKey> {
    ApiKey::new(row.user_id, row.provider, row.encrypted_value)
        .and_then(|k| k.with_hint(row.hint))
        .map(|k| {
            k.with_created_at(row.created_at)
                .with_expires_at(row.expires_at)
        })
        .map_err(|e| corrupt(engine, op, format!("a stored row is not a valid key ({e})")))
}

/// Milliseconds since the Unix epoch, as stored by SQLite and MySQL.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) fn from_millis(
    engine: Engine,
    op: &'static str,
    ms: i64,
) -> Result<byok_core::chrono::DateTime<byok_core::chrono::Utc>> {
    use byok_core::chrono::{TimeZone, Utc};
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| corrupt(engine, op, "a stored timestamp is out of range".to_owned()))
}

/// A column of milliseconds since the Unix epoch, null for none, as read.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) fn millis_column(
    engine: Engine,
    op: &'static str,
    read: Result<Option<i64>, sqlx::Error>,
) -> Result<Option<byok_core::chrono::DateTime<byok_core::chrono::Utc>>> {
    read.map_err(|e| crate::error::storage(engine, op, e))?
        .map(|ms| from_millis(engine, op, ms))
        .transpose()
}

/// An id stored as bytes (MySQL `VARBINARY`), back to a `String`.
#[cfg(feature = "mysql")]
pub(crate) fn id_from_bytes(
    engine: Engine,
    op: &'static str,
    column: &'static str,
    bytes: Vec<u8>,
) -> Result<String> {
    String::from_utf8(bytes)
        .map_err(|_| corrupt(engine, op, format!("a stored {column} is not UTF-8")))
}

/// How many keys a scan page asks the database for, as SQL wants it.
pub(crate) fn limit(limit: usize) -> i64 {
    // `validate::page_size` already bounded it to 10 000.
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The slot a scan cursor starts after, checked as an id is before it is
/// bound: a cursor is input like any other, and one holding a NUL or a
/// control character would otherwise reach the database (PostgreSQL
/// refuses a NUL in text, which would read as a storage error).
pub(crate) fn cursor_slot(cursor: &Cursor) -> Result<(&str, &str), InvalidInput> {
    let (user_id, provider) = cursor.slot()?;
    validate::stored_slot(user_id, provider).map_err(|_| {
        InvalidInput::new(
            Field::Cursor,
            Problem::Other("does not name a valid (user, provider) slot"),
        )
    })?;
    Ok((user_id, provider))
}
