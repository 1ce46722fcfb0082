//! SQL storage for byok: [`SqliteStorage`], [`PostgresStorage`] and
//! [`MySqlStorage`], through [`sqlx`].
//!
//! Each keeps one row per (user, provider) slot in one table, writes with a
//! single statement (an upsert, a conditional `UPDATE`, a `DELETE`), and
//! compares expiry against a time bound from Rust, never the database's
//! clock or time zone. The one exception is `store_if_absent` on MySQL: a
//! conditional `UPDATE` of an expired key, then an `INSERT` that the
//! primary key refuses when the slot holds a key, each atomic, because
//! under the `CLIENT_FOUND_ROWS` flag that sqlx always sets a refused
//! upsert counts one row, as an insert does.
//!
//! # Features
//!
//! | feature | backend | default |
//! |---|---|---|
//! | `sqlite` | [`SqliteStorage`] (bundled SQLite) | yes |
//! | `postgres` | [`PostgresStorage`] | no |
//! | `mysql` | [`MySqlStorage`] (MySQL or MariaDB; tested on MariaDB 10.11) | no |
//! | `tls-rustls` | TLS through rustls, with Mozilla's root certificates | yes |
//! | `tls-native-tls` | TLS through the platform's library (OpenSSL on Linux) | no |
//! | `python` | [`python`]: import from the Python library cjm-fasthtml-byok | no |
//!
//! The features are additive; any combination builds. With both TLS
//! features on, sqlx uses native-tls. A URL asks for TLS in the driver's
//! words (`?sslmode=verify-full&sslrootcert=ca.pem`,
//! `?ssl-mode=VERIFY_IDENTITY&ssl-ca=ca.pem`); a certificate that does not
//! verify fails `connect` with a `StorageError` that is not retryable.
//!
//! # Example
//!
//! ```
//! use byok_core::{ApiKey, ByokConfig, KeyStorage};
//! use byok_sql::SqliteStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> byok_core::Result<()> {
//! let store = SqliteStorage::connect("sqlite::memory:", &ByokConfig::default()).await?;
//! store.migrate().await?;
//! store.store(&ApiKey::new("alice", "openai", b"ciphertext".to_vec())?).await?;
//! assert_eq!(store.list_providers("alice").await?, ["openai"]);
//! assert!(store.retrieve("alice", "anthropic").await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! Each backend has `connect(url, &config)` (makes a pool tuned for a key
//! store, see below), `from_pool(pool, &config)` (uses yours),
//! `with_table_name(name)`, `with_operation_timeout(duration)`,
//! `migrate()`, `pool()` and `table_name()`, and implements
//! [`StoreAdmin`](byok_core::StoreAdmin) beside
//! [`KeyStorage`](byok_core::KeyStorage). Opening a store creates no
//! table and starts no task: expired keys are purged by the manager's
//! [`purge_every`](byok_core::store::purge_every) when
//! `config.auto_cleanup` is on, or by a call to `purge_expired`.
//!
//! A file database opened by [`SqliteStorage::connect`] answers
//! `retrieve_value` (the read behind `get_key`) on the calling thread,
//! without the hand-off to sqlx's worker thread that costs more than the
//! read itself; see [`SqliteStorage::with_inline_reads`].
//!
//! # Schema
//!
//! [`migrate`](SqliteStorage::migrate) creates the table (named by
//! [`ByokConfig::db_table_name`](byok_core::ByokConfig::db_table_name), `user_api_keys` by default) and an index
//! on `expires_at` for purges, if missing, and upgrades a table of an
//! earlier layout (see below). It is idempotent, safe to run from several
//! processes at once, and does not use sqlx's `_sqlx_migrations` table, so
//! it never interferes with the application's own migrations.
//!
//! | column | SQLite | PostgreSQL | MySQL / MariaDB |
//! |---|---|---|---|
//! | `user_id` | `TEXT` | `TEXT COLLATE "C"` | `VARBINARY(255)` (UTF-8 bytes) |
//! | `provider` | `TEXT` | `TEXT COLLATE "C"` | `VARBINARY(64)` (UTF-8 bytes) |
//! | `encrypted_value` | `BLOB` | `BYTEA` | `MEDIUMBLOB` |
//! | `hint` | `TEXT` | `TEXT` | `VARCHAR(64)` `utf8mb4_bin` |
//! | `created_at` | `INTEGER` (Unix ms) | `TIMESTAMPTZ` | `BIGINT` (Unix ms) |
//! | `expires_at` | `INTEGER` (Unix ms), null = never | `TIMESTAMPTZ` | `BIGINT` (Unix ms) |
//! | `last_check` | `TEXT`, null = none | `TEXT` | `TEXT` `utf8mb4_bin` |
//!
//! `last_check` keeps the last check of the row's key
//! ([`KeyStorage::store_check`](byok_core::KeyStorage::store_check)), an
//! opaque text of at most 1024 bytes; it leaves with its row.
//!
//! `(user_id, provider)` is the primary key, and the only unique index: a
//! read is one index lookup and a write updates as few indexes as can be.
//! The SQLite table is `STRICT` and `WITHOUT ROWID` (the rows live in the
//! primary key's B-tree). The index on `expires_at` is partial (`WHERE
//! expires_at IS NOT NULL`) on SQLite and PostgreSQL, so keys that never
//! expire stay out of it; MySQL has no partial indexes. Reads fetch only
//! the columns the caller does not already know.
//!
//! ## Schema status
//!
//! Tables carry no version marker; `schema_status` reads the table's
//! columns (and writes nothing): no columns is
//! [`Missing`](byok_core::store::SchemaStatus::Missing), an `id` column
//! is the layout of byok-sql 0.1,
//! [`Older { found: 1, current: 3 }`](byok_core::store::SchemaStatus::Older),
//! which `migrate` upgrades (see below), the first six columns above
//! without `id` nor `last_check` are the layout of the versions before
//! kept checks, `Older { found: 2, current: 3 }`, and all seven without
//! `id` are [`UpToDate`](byok_core::store::SchemaStatus::UpToDate).
//! A table that lacks one of the first six is not byok's, and is a
//! `Corrupt` error that names the column.
//!
//! ## Adding `last_check`: rolling upgrades
//!
//! `migrate` adds the nullable `last_check` column in place (`ALTER TABLE
//! … ADD COLUMN`, which copies no rows), under the same lock as the rest
//! of the migration; a racing migration that added it first counts as
//! success. Instances may be upgraded one by one, in either order:
//!
//! - Earlier versions name the columns of every statement, so they keep
//!   working on a table that has `last_check` (and leave it alone: a check
//!   kept for a key they replace names the old key and is not shown).
//! - This version on a table without the column serves every other
//!   operation as before; `checks` finds none, and `store_check` fails
//!   with a non-retryable `Rejected` error that asks for `byok migrate`.
//!   A storage reads the table's columns when first asked about checks,
//!   never again once it found the column, and at most once a minute
//!   while it has not (see `with_schema_recheck`), so an instance started
//!   before the migration picks the column up without a restart, and no
//!   request pays an extra query.
//!
//! ## Upgrading a table of byok-sql 0.1
//!
//! byok-sql 0.1 made tables with an `id` column as their primary key and
//! a unique index on (user_id, provider). Everything keeps working on such
//! a table, only with an index more to read and write; `migrate` turns it
//! into the layout above, keeping every row: an `ALTER TABLE` on
//! PostgreSQL and MySQL, a copy into a new table that takes the old one's
//! name on SQLite (which cannot change a primary key in place). It runs in
//! one transaction (on MySQL, one statement) under the migration lock, so
//! concurrent `migrate` calls upgrade once and the table is never left
//! half done. The upgrade reads the whole table and, on SQLite and
//! PostgreSQL, holds its write lock meanwhile: for a large table, run it
//! before the traffic comes.
//!
//! Ids compare byte for byte on every engine, as byok requires (`alice`,
//! `Alice` and `alice ` are three users), and sort by bytes: SQLite's
//! default `BINARY` collation does this; PostgreSQL's columns use the `"C"`
//! collation; on MySQL and MariaDB, whose text collations ignore case,
//! accents or trailing spaces, the ids are stored as binary strings.
//!
//! Times keep their milliseconds, and every time that `chrono` can hold
//! is stored and read back exactly on SQLite and MySQL. MySQL and MariaDB
//! get integers rather than `DATETIME`, which stops at the year 9999 (a
//! later expiry would be refused, or silently zeroed under a non-strict
//! `sql_mode`) and which no time zone can then shift. PostgreSQL's
//! `TIMESTAMPTZ` holds 4713 BC to 294276 AD: an earlier time is
//! `Rejected` by the server, and a stored time that `chrono` cannot hold
//! (such as `'infinity'`) reads back as `Corrupt`.
//!
//! # Table names
//!
//! A table name is formatted into SQL, so it must be a plain identifier: an
//! ASCII letter or `_`, then ASCII letters, digits or `_`, at most 63
//! bytes. Any other name (with a quote, a semicolon, a space, a dot…) is
//! refused with a [`ConfigError`](byok_core::ConfigError) before any SQL
//! runs.
//!
//! # Pools
//!
//! `connect` makes a pool of at most 10 connections that does not ping a
//! connection before handing it out: sqlx already pings each connection as
//! it returns to the pool, off the caller's path, and a second ping on
//! acquire would add a round trip before every operation. A connection
//! that dies while idle fails its next statement with a retryable error
//! instead, and connections are recycled after 5 minutes idle or 30
//! minutes of life. Waiting for a connection times out after 5 s with a
//! retryable error, and so does `connect` when the server accepts the
//! connection but never answers. Use `from_pool` to choose otherwise.
//!
//! Whatever the pool, each operation of [`KeyStorage`](byok_core::KeyStorage)
//! has a deadline, 10 s by default (`with_operation_timeout`), after which
//! it fails with a retryable `Timeout`: neither sqlx nor the servers bound a
//! statement whose connection went silent, as when a server vanishes
//! without closing the socket. `migrate` has no such deadline, as it may
//! wait for another process's migration; it is safe to cancel.
//!
//! # MySQL and MariaDB sessions
//!
//! Every connection that `MySqlStorage::connect` makes adds
//! `STRICT_ALL_TABLES` to its `sql_mode` (so the server refuses a value
//! that does not fit its column instead of cutting it short with a
//! warning) and runs at `READ COMMITTED` (so that searches take no gap
//! locks, which let writes on different users deadlock each other). A pool
//! given to `from_pool` keeps its own settings; the size checks below
//! still apply to it.
//!
//! # Errors
//!
//! Driver errors become [`StorageError`](byok_core::StorageError)s with the
//! `sqlx::Error` as their source. Lost connections, pool timeouts, lock
//! timeouts and deadlocks are retryable; a row that cannot be decoded is
//! `Corrupt`, and a statement the database refuses is `Rejected`.
//!
//! A statement that the database fails to resolve a lock conflict (a
//! deadlock, a lock wait timeout, a serialization failure) is run again,
//! up to 8 times with jittered backoff, within the operation deadline:
//! each statement is its own transaction, which the database rolled back,
//! so nothing is applied twice. Only a conflict that outlasts that reaches
//! the caller, as a retryable error.
//!
//! On MySQL, an encrypted value longer than a `MEDIUMBLOB` (16 MiB less a
//! byte), or one that would make the statement larger than the server's
//! `max_allowed_packet`, is refused before anything is sent, as a
//! `Rejected` error that says how large it was and what fits: retrying it
//! cannot help. A scan cursor that does not name a valid (user, provider)
//! slot is [`InvalidInput`](byok_core::InvalidInput) for the cursor, before
//! it reaches the database.
//!
//! # Purges
//!
//! `purge_expired` is one `DELETE` on SQLite and PostgreSQL. On MySQL it
//! deletes in batches of at most 500 keys, each under the operation
//! deadline: it reads the expired slots without locking them, then deletes
//! them by primary key if they are still expired, so that it locks rows in
//! the same order as every other statement and never holds many locks at
//! once.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod error;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod pool;
#[cfg(all(
    feature = "python",
    any(feature = "sqlite", feature = "postgres", feature = "mysql")
))]
#[cfg_attr(docsrs, doc(cfg(feature = "python")))]
pub mod python;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod retry;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod row;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod storage;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod table;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_read;

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql::MySqlStorage;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStorage;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SQLITE_PAGE_CACHE_KIB, SqliteStorage};

pub use sqlx;

/// The page of a scan: a full page may be followed by more keys, so it
/// carries a cursor after its last key; a short page ends the walk.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
fn page(keys: Vec<byok_core::ApiKey>, limit: usize) -> byok_core::ScanPage {
    let next = if keys.len() == limit {
        keys.last()
            .map(|k| byok_core::Cursor::after_slot(k.user_id(), k.provider()))
    } else {
        None
    };
    byok_core::ScanPage { keys, next }
}
