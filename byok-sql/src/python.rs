//! Moving keys from the Python library cjm-fasthtml-byok: reads its table,
//! decrypts its Fernet tokens and stores each key re-encrypted under a
//! byok [`Keyring`]. Behind the `python` feature; the `byok import-python`
//! command is built on it.
//!
//! # What the Python library stores
//!
//! Its `DatabaseStorage` (SQLAlchemy) keeps one row per key in a table
//! named by `BYOKConfig.db_table_name` (`user_api_keys` by default): `id`,
//! `user_id`, `provider`, `encrypted_value` (the Fernet token's ASCII,
//! hex-encoded), `created_at` and `expires_at` (`datetime.isoformat()` text
//! of naive local times, `expires_at` null for no expiry). The Fernet key is
//! `BYOKConfig.encryption_key` if the application set one, otherwise
//! PBKDF2-HMAC-SHA256 of the application's secret with the salt
//! `cjm-fasthtml-byok-v1`, 100 000 iterations, 32 bytes
//! ([`PythonSecret::from_app_secret`]).
//!
//! # What the import does
//!
//! Every row is accounted for in the [`ImportReport`]: converted, failed
//! (with the reason) or skipped (expired, or the target already holds a key
//! for the slot). Nothing is written for a row that fails. The source is
//! only read: a SQLite file is opened read-only.
//!
//! ```no_run
//! use byok_core::{KeyStorage, Keyring};
//! use byok_sql::python::{ImportOptions, PythonSecret, import_table};
//!
//! # async fn run(target: &dyn KeyStorage, ring: &Keyring) -> byok_core::Result<()> {
//! let secret = PythonSecret::from_app_secret("the FastHTML app's secret key");
//! let report = import_table(
//!     "sqlite://byok_keys.db",
//!     "user_api_keys",
//!     &secret,
//!     ring,
//!     target,
//!     &ImportOptions::default(),
//! )
//! .await?;
//! for row in &report.rows {
//!     println!("row {}: {:?} {}", row.id, row.outcome, row.reason.as_deref().unwrap_or(""));
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr as _;

use base64::Engine as _;

use byok_core::chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone as _, Utc};
use byok_core::display::mask_key;
use byok_core::{ApiKey, ConfigError, KeyStorage, Keyring, Result, key, validate};
use serde::Serialize;
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, Row as _};
use zeroize::Zeroizing;

use crate::error::{self, Engine};
use crate::table::TableName;

/// The salt the Python library derives its Fernet key with.
const SALT: &[u8] = b"cjm-fasthtml-byok-v1";
/// Its PBKDF2 iterations.
const ITERATIONS: u32 = 100_000;

/// The Fernet key of a Python-library deployment. Its `Debug` prints no
/// key material.
#[derive(Clone)]
pub struct PythonSecret {
    key: Zeroizing<[u8; 32]>,
}

impl PythonSecret {
    /// The key the Python library derives from the application's secret
    /// key (its `get_or_create_app_key`).
    pub fn from_app_secret(app_secret: &str) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(app_secret.as_bytes(), SALT, ITERATIONS, key.as_mut());
        PythonSecret { key }
    }

    /// A Fernet key as the application configured it
    /// (`BYOKConfig.encryption_key`): 32 bytes in URL-safe base64.
    pub fn from_fernet_key(text: &str) -> std::result::Result<Self, ConfigError> {
        let raw = Zeroizing::new(
            fernet::base64()
                .decode(text.trim())
                .map_err(|_| ConfigError::new("a Fernet key is 32 bytes in URL-safe base64"))?,
        );
        let key: [u8; 32] = raw[..]
            .try_into()
            .map_err(|_| ConfigError::new("a Fernet key is 32 bytes in URL-safe base64"))?;
        Ok(PythonSecret {
            key: Zeroizing::new(key),
        })
    }

    fn decrypt(&self, token: &[u8]) -> std::result::Result<Zeroizing<Vec<u8>>, &'static str> {
        fernet::decrypt(&self.key, token)
    }
}

impl fmt::Debug for PythonSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PythonSecret(***)")
    }
}

/// Fernet (<https://github.com/fernet/spec>): AES-128-CBC with PKCS #7
/// padding, authenticated by HMAC-SHA256 over the whole token.
mod fernet {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use cbc::cipher::{BlockDecryptMut as _, KeyIvInit as _, block_padding::Pkcs7};
    use hmac::{Hmac, Mac as _};
    use sha2::Sha256;
    use zeroize::Zeroizing;

    const VERSION: u8 = 0x80;
    const HEADER: usize = 1 + 8 + 16;
    const TAG: usize = 32;

    /// URL-safe base64, with or without padding.
    pub(super) fn base64() -> GeneralPurpose {
        GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        )
    }

    pub(super) fn decrypt(
        key: &[u8; 32],
        token: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, &'static str> {
        let data = base64()
            .decode(token)
            .map_err(|_| "not a Fernet token (not URL-safe base64)")?;
        if data.len() < HEADER + 16 + TAG || !(data.len() - HEADER - TAG).is_multiple_of(16) {
            return Err("not a Fernet token (wrong length)");
        }
        if data[0] != VERSION {
            return Err("not a Fernet token (unknown version)");
        }
        let (signed, tag) = data.split_at(data.len() - TAG);
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&key[..16])
            .map_err(|_| "unusable Fernet key")?;
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| {
            "does not decrypt with this secret (another app secret or Fernet key, or altered data)"
        })?;
        let iv = &signed[9..HEADER];
        let mut buf = Zeroizing::new(signed[HEADER..].to_vec());
        let n = cbc::Decryptor::<aes::Aes128>::new_from_slices(&key[16..], iv)
            .map_err(|_| "unusable Fernet key")?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| "the Fernet token's padding is wrong")?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

/// One row of the Python library's table, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonRow {
    /// The row's `id`.
    pub id: i64,
    /// The user.
    pub user_id: String,
    /// The provider.
    pub provider: String,
    /// The Fernet token, hex-encoded.
    pub encrypted_value: String,
    /// `datetime.isoformat()` text, usually a naive local time.
    pub created_at: String,
    /// The same, or `None` for a key that never expires.
    pub expires_at: Option<String>,
}

fn select(table: &TableName) -> String {
    format!(
        "SELECT id, user_id, provider, encrypted_value, created_at, expires_at FROM {} ORDER BY id",
        table.as_str()
    )
}

macro_rules! read_rows {
    ($engine:expr, $conn:expr, $sql:expr, $read_only:expr) => {{
        // The source is only read; on a server, the session says so too.
        if let Some(statement) = $read_only {
            sqlx::query(statement)
                .execute(&mut $conn)
                .await
                .map_err(|e| error::storage($engine, "open the Python database", e))?;
        }
        let rows = sqlx::query(AssertSqlSafe($sql))
            .fetch_all(&mut $conn)
            .await
            .map_err(|e| error::storage($engine, "read the Python table", e))?;
        let _ = $conn.close().await;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let bad =
                |e: sqlx::Error| error::corrupt($engine, "read the Python table", e.to_string());
            let id: i64 = match r.try_get::<i64, _>(0) {
                Ok(id) => id,
                Err(_) => i64::from(r.try_get::<i32, _>(0).map_err(bad)?),
            };
            out.push(PythonRow {
                id,
                user_id: r.try_get(1).map_err(bad)?,
                provider: r.try_get(2).map_err(bad)?,
                encrypted_value: r.try_get(3).map_err(bad)?,
                created_at: r.try_get(4).map_err(bad)?,
                expires_at: r.try_get(5).map_err(bad)?,
            });
        }
        out
    }};
}

/// A connection of `engine` to `url`, with its options as the URL gives
/// them.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn open<C: sqlx::Connection>(engine: Engine, url: &str) -> Result<C>
where
    C::Options: std::str::FromStr<Err = sqlx::Error>,
{
    let options: C::Options = url.parse().map_err(|e| error::config(engine, e))?;
    options
        .connect()
        .await
        .map_err(|e| error::storage(engine, "open the Python database", e))
}

/// Reads every row of the Python library's `table` at `url` (`sqlite://`,
/// `postgres://` or `mysql://`, in sqlx's form: `sqlite://byok_keys.db` is
/// SQLAlchemy's `sqlite:///byok_keys.db`), in `id` order. Only reads: a
/// SQLite file is opened read-only, and must exist.
pub async fn read_table(url: &str, table: &str) -> Result<Vec<PythonRow>> {
    let table = TableName::new(table)?;
    let sql = select(&table);
    let scheme = url.split(':').next().unwrap_or_default();
    Ok(match scheme {
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let engine = Engine::Sqlite;
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|e| error::config(engine, e))?
                .read_only(true)
                .create_if_missing(false);
            let mut conn = options
                .connect()
                .await
                .map_err(|e| error::storage(engine, "open the Python database", e))?;
            read_rows!(engine, conn, sql, None::<&str>)
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            let engine = Engine::Postgres;
            let mut conn: sqlx::PgConnection = open(engine, url).await?;
            read_rows!(
                engine,
                conn,
                sql,
                Some("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            )
        }
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => {
            let engine = Engine::MySql;
            let mut conn: sqlx::MySqlConnection = open(engine, url).await?;
            read_rows!(engine, conn, sql, Some("SET SESSION TRANSACTION READ ONLY"))
        }
        _ => {
            return Err(ConfigError::new(
                "the Python library's database must be a sqlite://, postgres:// or mysql:// URL \
                 (of an engine this build supports)",
            )
            .into());
        }
    })
}

/// How to import.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ImportOptions {
    /// The UTC offset of the naive times the Python library wrote (its
    /// machine's local time); `None`: this machine's local time zone.
    pub naive_offset: Option<FixedOffset>,
    /// Report what would happen and write nothing.
    pub dry_run: bool,
}

impl ImportOptions {
    /// Naive times are at this UTC offset.
    pub fn naive_offset(mut self, offset: FixedOffset) -> Self {
        self.naive_offset = Some(offset);
        self
    }

    /// Report what would happen and write nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What became of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Decrypted, re-encrypted and stored (or would be, in a dry run).
    Converted,
    /// Not converted, for the reason given; nothing was written for it.
    Failed,
    /// Left out on purpose (expired, or the target holds a key already).
    Skipped,
}

/// One row's outcome. Holds no key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowReport {
    /// The row's `id` in the Python table.
    pub id: i64,
    /// The user.
    pub user_id: String,
    /// The provider.
    pub provider: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// The master key id it was encrypted under.
    pub key_id: Option<u32>,
}

/// Every row of an import, in `id` order.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ImportReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// One entry per row read.
    pub rows: Vec<RowReport>,
}

impl ImportReport {
    /// How many rows ended so.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.rows.iter().filter(|r| r.outcome == outcome).count()
    }
}

fn parse_time(text: &str, offset: Option<FixedOffset>) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%:z") {
        return Some(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    match offset {
        Some(o) => o.from_local_datetime(&naive).earliest(),
        None => Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.fixed_offset()),
    }
    .map(|t| t.with_timezone(&Utc))
}

/// Converts one row: the key to store, or why not.
fn convert(
    row: &PythonRow,
    secret: &PythonSecret,
    ring: &Keyring,
    options: &ImportOptions,
    now: DateTime<Utc>,
) -> std::result::Result<ApiKey, (Outcome, String)> {
    let failed = |why: String| (Outcome::Failed, why);
    let created = parse_time(&row.created_at, options.naive_offset)
        .ok_or_else(|| failed("created_at is not an ISO 8601 time".to_owned()))?;
    let expires = match &row.expires_at {
        None => None,
        Some(t) => Some(
            parse_time(t, options.naive_offset)
                .ok_or_else(|| failed("expires_at is not an ISO 8601 time".to_owned()))?,
        ),
    };
    if let Some(at) = expires
        && at <= now
    {
        return Err((Outcome::Skipped, format!("expired at {}", at.to_rfc3339())));
    }
    validate::slot(&row.user_id, &row.provider).map_err(|e| failed(e.to_string()))?;
    let token = Zeroizing::new(
        hex::decode(row.encrypted_value.trim())
            .map_err(|_| failed("encrypted_value is not hex".to_owned()))?,
    );
    let plain = secret
        .decrypt(&token)
        .map_err(|why| failed(why.to_owned()))?;
    let plain = std::str::from_utf8(&plain)
        .map_err(|_| failed("the decrypted key is not UTF-8 text".to_owned()))?;
    let plain = validate::api_key(plain).map_err(|e| failed(e.to_string()))?;
    let ciphertext = ring
        .encrypt(&row.user_id, &row.provider, plain.as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    ApiKey::new(row.user_id.as_str(), row.provider.as_str(), ciphertext)
        .and_then(|k| k.with_hint(Some(mask_key(plain))))
        .map(|k| {
            k.with_created_at(key::to_millis(created))
                .with_expires_at(expires.map(key::to_millis))
        })
        .map_err(|e| failed(e.to_string()))
}

/// Converts `rows` of the Python library into `target`, re-encrypted under
/// `ring`'s primary key. A row is skipped when it has expired, when the
/// target already holds a key for its slot (so re-running an import
/// changes nothing), or when an earlier row of the same slot was
/// converted. Errors of the target end the import; a row's own problems
/// are reported in its [`RowReport`].
pub async fn import_rows(
    rows: &[PythonRow],
    secret: &PythonSecret,
    ring: &Keyring,
    target: &dyn KeyStorage,
    options: &ImportOptions,
) -> Result<ImportReport> {
    let now = Utc::now();
    let mut report = ImportReport {
        dry_run: options.dry_run,
        rows: Vec::with_capacity(rows.len()),
    };
    let mut converted: HashMap<(&str, &str), i64> = HashMap::new();
    for row in rows {
        let mut entry = RowReport {
            id: row.id,
            user_id: row.user_id.clone(),
            provider: row.provider.clone(),
            outcome: Outcome::Converted,
            reason: None,
            key_id: None,
        };
        let slot = (row.user_id.as_str(), row.provider.as_str());
        match convert(row, secret, ring, options, now) {
            Err((outcome, reason)) => {
                entry.outcome = outcome;
                entry.reason = Some(reason);
            }
            Ok(_) if converted.contains_key(&slot) => {
                entry.outcome = Outcome::Skipped;
                entry.reason = Some(format!(
                    "row {} of the same user and provider was converted",
                    converted[&slot]
                ));
            }
            Ok(new) => {
                if target.retrieve(slot.0, slot.1).await?.is_some() {
                    entry.outcome = Outcome::Skipped;
                    entry.reason =
                        Some("the target already holds a key for this user and provider".into());
                } else {
                    if !options.dry_run {
                        target.store(&new).await?;
                    }
                    entry.key_id = Some(ring.primary_id());
                    converted.insert(slot, row.id);
                }
            }
        }
        report.rows.push(entry);
    }
    Ok(report)
}

/// [`read_table`] then [`import_rows`].
pub async fn import_table(
    url: &str,
    table: &str,
    secret: &PythonSecret,
    ring: &Keyring,
    target: &dyn KeyStorage,
    options: &ImportOptions,
) -> Result<ImportReport> {
    let rows = read_table(url, table).await?;
    import_rows(&rows, secret, ring, target, options).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_not_printed() {
        assert_eq!(
            format!("{:?}", PythonSecret::from_app_secret("hunter2")),
            "PythonSecret(***)"
        );
    }

    #[test]
    fn a_token_made_by_python_decrypts_and_a_tampered_one_does_not() {
        // Fernet("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=") of b"hello",
        // the example key of the Fernet specification.
        let secret =
            PythonSecret::from_fernet_key("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=").unwrap();
        let token = b"gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
        assert_eq!(&secret.decrypt(token).unwrap()[..], b"hello");
        let mut bad = token.to_vec();
        bad[60] = if bad[60] == b'A' { b'B' } else { b'A' };
        assert!(
            secret
                .decrypt(&bad)
                .unwrap_err()
                .contains("does not decrypt")
        );
        assert!(secret.decrypt(b"not base64 !").is_err());
        assert!(secret.decrypt(b"").is_err());
    }

    #[test]
    fn naive_times_take_the_offset_and_aware_ones_keep_theirs() {
        let utc = FixedOffset::east_opt(0);
        let two = FixedOffset::east_opt(7200);
        let t = parse_time("2026-12-02T07:59:39.020284", utc).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-02T07:59:39.020284+00:00");
        let t = parse_time("2026-12-02T07:59:39", two).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-02T05:59:39+00:00");
        let t = parse_time("2026-12-02T07:59:39.5+01:00", two).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-02T06:59:39.500+00:00");
        assert!(parse_time("yesterday", utc).is_none());
    }
}
