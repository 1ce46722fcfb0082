//! PostgreSQL: [`PostgresStorage`].

use std::str::FromStr;

use byok_core::chrono::{DateTime, Utc};
use byok_core::{ByokConfig, ConfigError, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgQueryResult, PgRow, PgValueFormat, Postgres};
use sqlx::{Decode, Row, Type, ValueRef};

use crate::error::{self, Engine};
use crate::pool;
use crate::storage::{Dialect, SqlStorage, Statement, Statements, public_storage};
use crate::table::TableName;

const ENGINE: Engine = Engine::Postgres;

/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER_LEN: usize = 63;

/// [`KeyStorage`](byok_core::KeyStorage) in a PostgreSQL table.
///
/// Ids are `TEXT COLLATE "C"`, so they compare and sort byte for byte
/// whatever the database's default collation; times are `TIMESTAMPTZ`.
///
/// Clones share the pool. See the [crate docs](crate) for the schema.
#[derive(Clone)]
pub struct PostgresStorage {
    inner: SqlStorage<Postgres>,
}

/// The statements of `table`, in PostgreSQL's words: standard SQL with
/// numbered parameters.
///
/// The slot is the primary key, the only unique index, so a write that
/// cannot update its row in place (a HOT update) adds entries to two
/// indexes, not three. The index on `expires_at` is partial: keys that
/// never expire are not in it and never touch it. (A write that changes
/// `expires_at`, as every `set_key` with a time to live does, is never HOT
/// while that column is indexed at all; purges need the index.)
fn statements(table: &TableName) -> Statements {
    let t = table.as_str();
    let index = table.derived("expiring_idx", MAX_IDENTIFIER_LEN);
    let schema = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
             user_id TEXT COLLATE \"C\" NOT NULL, \
             provider TEXT COLLATE \"C\" NOT NULL, \
             encrypted_value BYTEA NOT NULL, \
             hint TEXT, \
             created_at TIMESTAMPTZ NOT NULL, \
             expires_at TIMESTAMPTZ, \
             last_check TEXT, \
             PRIMARY KEY (user_id, provider))"
        )
        .into(),
        format!(
            "CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at) WHERE expires_at IS NOT NULL"
        )
        .into(),
    ];
    Statements::standard(t, schema).numbered()
}

/// Quotes an identifier read from the catalog, which may hold anything.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The query parameters that sqlx 0.9 reads from a PostgreSQL URL
/// (`sqlx-postgres`, `options/parse.rs`), besides `options[…]`.
const KNOWN_URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Refuses a URL with a query parameter that sqlx does not know: sqlx
/// would skip it with a `WARN` log line that holds its value, which may be
/// a secret (`sslpassword=…`).
///
/// The error names the parameter only when it looks like one (`name=…`,
/// with a short plain name): a stray `?hunter2` is a key too, and must not
/// be echoed either.
fn check_url_parameters(url: &str) -> Result<(), ConfigError> {
    // A URL that does not parse is left to sqlx, whose error says so
    // without repeating it.
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    let query = parsed.query().unwrap_or("");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        // Decoded as sqlx decodes it, so that both agree on what is known.
        let Some((key, _)) = url::form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        let known = KNOWN_URL_PARAMETERS.contains(&&*key)
            || (key.starts_with("options[") && key.ends_with(']'));
        if known {
            continue;
        }
        let plain = pair.contains('=')
            && !key.is_empty()
            && key.len() <= 32
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let name = if plain {
            format!("`{key}`")
        } else {
            "a query parameter".to_owned()
        };
        return Err(ConfigError::new(format!(
            "the PostgreSQL URL has {name}, which sqlx does not support (it would log \
             the value); set such options on PgConnectOptions and use from_pool"
        )));
    }
    Ok(())
}

impl PostgresStorage {
    /// Connects to `url` (`postgres://user:password@host:5432/db`, with any
    /// option sqlx accepts) and uses the table `config.db_table_name`. Does
    /// not create the table: call [`migrate`](Self::migrate).
    ///
    /// Fails with a retryable error when the server cannot be reached.
    /// Starts no task: expired keys are purged by the manager's
    /// [`purge_every`](byok_core::store::purge_every) (see
    /// [`ByokConfig::auto_cleanup`](byok_core::ByokConfig::auto_cleanup)),
    /// or by a call to `purge_expired`.
    ///
    /// A query parameter that sqlx does not know (such as libpq's
    /// `sslpassword` or `passfile`) is refused with a
    /// [`ConfigError`](byok_core::ConfigError) that names the parameter but
    /// not its value, because sqlx would otherwise ignore it and log it,
    /// value included, at `WARN` level. sqlx knows `sslmode`,
    /// `sslrootcert`, `sslcert`, `sslkey`, `statement-cache-capacity`,
    /// `host`, `hostaddr`, `port`, `dbname`, `user`, `password`,
    /// `application_name` and `options` (and their aliases). For anything
    /// else, or to keep secrets out of a URL altogether, build a
    /// [`PgConnectOptions`] in code and use [`from_pool`](Self::from_pool).
    pub async fn connect(url: &str, config: &ByokConfig) -> Result<Self> {
        let table = TableName::new(&config.db_table_name)?;
        check_url_parameters(url)?;
        let options = PgConnectOptions::from_str(url).map_err(|e| error::config(ENGINE, e))?;
        let pool = pool::connect(ENGINE, pool::options(), options).await?;
        Ok(PostgresStorage {
            inner: SqlStorage::new(pool, table),
        })
    }

    /// Creates the table and its index if they are missing, and brings a
    /// table of an earlier layout up to date.
    ///
    /// Idempotent, and safe to run from several processes at once: two
    /// concurrent `CREATE TABLE IF NOT EXISTS` can both miss the table and
    /// then collide on PostgreSQL's catalog, so the statements run in one
    /// transaction that first takes a transaction-level advisory lock
    /// (keyed by the table name). It never touches sqlx's
    /// `_sqlx_migrations`.
    ///
    /// A table made by byok-sql 0.1 (with an `id` column) gets (user_id,
    /// provider) as its primary key in place of `id` and of the unique
    /// constraint, and the partial expiry index in place of the full one,
    /// in the same transaction. Building the new primary key reads the
    /// whole table while holding its lock, so other statements on it wait
    /// for that long; until then the old layout keeps working, only slower.
    pub async fn migrate(&self) -> Result<()> {
        let fail = |e| error::storage(ENGINE, "migrate", e);
        let table = &self.inner.table;
        let mut tx = self.inner.pool.begin().await.map_err(fail)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(table.lock_key())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        let old = self.inner.create_schema(&mut tx).await.map_err(fail)?;
        if old {
            let unique: Vec<String> = sqlx::query_scalar(
                "SELECT conname::text FROM pg_constraint \
                 WHERE conrelid = to_regclass($1) AND contype = 'u' \
                 AND pg_get_constraintdef(oid) = 'UNIQUE (user_id, provider)'",
            )
            .bind(table.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(fail)?;
            let t = table.as_str();
            let old_index = table.derived("expires_at_idx", MAX_IDENTIFIER_LEN);
            // Dropping `id` drops the primary key on it.
            let mut steps = vec![
                format!("ALTER TABLE {t} DROP COLUMN id"),
                format!("ALTER TABLE {t} ADD PRIMARY KEY (user_id, provider)"),
                format!("DROP INDEX IF EXISTS {old_index}"),
            ];
            steps.extend(
                unique
                    .iter()
                    .map(|c| format!("ALTER TABLE {t} DROP CONSTRAINT {}", quote_identifier(c))),
            );
            self.inner.run_raw(&mut tx, steps).await.map_err(fail)?;
        }
        self.inner.finish_migration(tx).await.map_err(fail)
    }
}

public_storage!(PostgresStorage, PgPool);

/// The Unix time of PostgreSQL's epoch, 2000-01-01, in microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A `TIMESTAMPTZ` column, decoded here rather than by sqlx, whose decoder
/// panics on a stored time beyond `chrono`'s range (`'infinity'`, or after
/// the year 262142, both of which PostgreSQL holds): such a time is a
/// decode error, and so reads back as `Corrupt`.
fn time(r: &PgRow, column: &'static str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let decode_error = |source| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source,
    };
    let value = r.try_get_raw(column)?;
    if value.is_null() {
        return Ok(None);
    }
    if !<DateTime<Utc> as Type<Postgres>>::compatible(&value.type_info()) {
        return Err(decode_error(
            format!("the column is {}, not TIMESTAMPTZ", value.type_info()).into(),
        ));
    }
    if value.format() == PgValueFormat::Text {
        // Text is parsed, not added up, so it cannot overflow.
        return <DateTime<Utc> as Decode<Postgres>>::decode(value)
            .map(Some)
            .map_err(decode_error);
    }
    // Binary: microseconds since 2000-01-01.
    let micros = <i64 as Decode<Postgres>>::decode(value).map_err(decode_error)?;
    micros
        .checked_add(PG_EPOCH_UNIX_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .map(Some)
        .ok_or_else(|| decode_error("the stored time is out of chrono's range".into()))
}

impl Dialect for Postgres {
    const ENGINE: Engine = ENGINE;
    const COLUMNS: &'static str = "SELECT convert_to(attname::text, 'UTF8') FROM pg_attribute \
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped";

    fn statements(table: &TableName) -> Statements {
        statements(table)
    }

    fn bind_id<'q>(q: Statement<'q, Self>, id: &str) -> Statement<'q, Self> {
        q.bind(id)
    }

    fn bind_time<'q>(q: Statement<'q, Self>, t: DateTime<Utc>) -> Statement<'q, Self> {
        q.bind(t)
    }

    fn bind_expiry<'q>(q: Statement<'q, Self>, t: Option<DateTime<Utc>>) -> Statement<'q, Self> {
        q.bind(t)
    }

    fn decode_id(op: &'static str, r: &PgRow, column: &'static str) -> Result<String> {
        r.try_get(column).map_err(|e| error::storage(ENGINE, op, e))
    }

    fn decode_time(
        op: &'static str,
        r: &PgRow,
        column: &'static str,
    ) -> Result<Option<DateTime<Utc>>> {
        time(r, column).map_err(|e| error::storage(ENGINE, op, e))
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_are_quoted() {
        assert_eq!(quote_identifier("t_key"), "\"t_key\"");
        assert_eq!(quote_identifier("a\"; DROP x; --"), "\"a\"\"; DROP x; --\"");
    }

    #[test]
    fn url_parameters_sqlx_would_log_are_refused_without_their_value() {
        for ok in [
            "postgres://u:p@h/db",
            "postgres://u@h/db?sslmode=require&application_name=keys",
            "postgres://u@h/db?options[search_path]=keys&statement-cache-capacity=10",
            "postgres:///db?host=/run/postgresql",
            "not a url",
        ] {
            assert!(check_url_parameters(ok).is_ok(), "{ok}");
        }
        let err =
            check_url_parameters("postgres://u:hunter2@h/db?sslmode=require&sslpassword=s3cret")
                .unwrap_err()
                .to_string();
        assert!(err.contains("`sslpassword`"), "{err}");
        assert!(!err.contains("s3cret") && !err.contains("hunter2"), "{err}");
        for stray in [
            "postgres://u@h/db?hunter2",
            "postgres://u@h/db?sslmode=require&hunter2",
            "postgres://u@h/db?hunter2%3D%26%20long+and+odd=1",
        ] {
            let err = check_url_parameters(stray).unwrap_err().to_string();
            assert!(err.contains("a query parameter"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
