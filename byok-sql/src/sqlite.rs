//! SQLite: [`SqliteStorage`].

use std::str::FromStr;
use std::time::Duration;

use byok_core::chrono::{DateTime, Utc};
use byok_core::{ApiKey, ByokConfig, ConfigError, Result, UserApiKey};
use sqlx::Row;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteQueryResult, SqliteRow,
};

use crate::error::{self, Engine};
use crate::pool;
use crate::row::{self, COLUMNS};
use crate::storage::{Dialect, SqlStorage, Statement, Statements, public_storage};
use crate::table::{TableName, sql};

const ENGINE: Engine = Engine::Sqlite;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`KeyStorage`](byok_core::KeyStorage) in a SQLite database, a file or in memory.
///
/// Timestamps are stored as `INTEGER` milliseconds since the Unix epoch
/// (SQLite has no time type; integers compare and index exactly). Ids are
/// `TEXT`, which SQLite compares byte for byte (`BINARY` collation).
///
/// Clones share the pool. See the [crate docs](crate) for the schema.
#[derive(Clone)]
pub struct SqliteStorage {
    inner: SqlStorage<Sqlite>,
}

/// The statements of `table`, in SQLite's words.
fn statements(table: &TableName) -> Statements {
    let t = table.as_str();
    let index = table.derived("expires_at_idx", usize::MAX);
    let live = "(expires_at IS NULL OR expires_at > ?)";
    Statements {
        // STRICT makes SQLite refuse a value of the wrong type instead of
        // storing it, so what is read back has the declared type.
        schema: vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id INTEGER PRIMARY KEY, \
                 user_id TEXT NOT NULL, \
                 provider TEXT NOT NULL, \
                 encrypted_value BLOB NOT NULL, \
                 hint TEXT, \
                 created_at INTEGER NOT NULL, \
                 expires_at INTEGER, \
                 UNIQUE (user_id, provider)) STRICT"
            )
            .into(),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)").into(),
        ],
        store: format!(
            "INSERT INTO {t} (user_id, provider, encrypted_value, hint, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (user_id, provider) DO UPDATE SET \
             encrypted_value = excluded.encrypted_value, hint = excluded.hint, \
             created_at = excluded.created_at, expires_at = excluded.expires_at"
        )
        .into(),
        retrieve: format!(
            "SELECT {COLUMNS} FROM {t} WHERE user_id = ? AND provider = ? AND {live}"
        )
        .into(),
        delete: format!("DELETE FROM {t} WHERE user_id = ? AND provider = ?").into(),
        list: format!("SELECT provider FROM {t} WHERE user_id = ? AND {live} ORDER BY provider")
            .into(),
        clear: format!("DELETE FROM {t} WHERE user_id = ?").into(),
        purge: format!("DELETE FROM {t} WHERE expires_at <= ?").into(),
        purge_batch: None,
        user_keys: format!("SELECT {COLUMNS} FROM {t} WHERE user_id = ? ORDER BY provider").into(),
        swap: format!(
            "UPDATE {t} SET encrypted_value = ?, hint = ?, created_at = ?, expires_at = ? \
             WHERE user_id = ? AND provider = ? AND encrypted_value = ? AND {live}"
        )
        .into(),
        scan_first: format!(
            "SELECT {COLUMNS} FROM {t} WHERE {live} ORDER BY user_id, provider LIMIT ?"
        )
        .into(),
        scan_after: format!(
            "SELECT {COLUMNS} FROM {t} WHERE (user_id, provider) > (?, ?) AND {live} \
             ORDER BY user_id, provider LIMIT ?"
        )
        .into(),
    }
}

/// Whether a SQLite URL names an in-memory database, which lives only as
/// long as a connection to it stays open.
fn is_in_memory(url: &str) -> bool {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
    path == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

impl SqliteStorage {
    /// Opens (and creates, if missing) the database at `url` and uses the
    /// table `config.db_table_name`. Does not create the table: call
    /// [`migrate`](Self::migrate).
    ///
    /// `url` is `sqlite://path/to/keys.db`, `sqlite:keys.db`, a plain path,
    /// or `sqlite::memory:`. A file database is put in WAL mode (readers
    /// never wait for the writer) with a 5 s busy timeout. An in-memory
    /// database is kept on one connection that never closes, so every
    /// operation sees the same database for the life of the pool.
    ///
    /// With `config.auto_cleanup` on, a background task on the current
    /// Tokio runtime purges expired keys every minute until the last clone
    /// of this storage is dropped.
    pub async fn connect(url: &str, config: &ByokConfig) -> Result<Self> {
        let table = TableName::new(&config.db_table_name)?;
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| error::config(ENGINE, e))?
            .busy_timeout(BUSY_TIMEOUT);
        let pool = if is_in_memory(url) {
            // One connection, kept open: the database vanishes when its last
            // connection closes, and a second connection would see another
            // (or, with a shared cache, a table-locked) database.
            let pool = pool::options()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
            pool::connect(ENGINE, pool, options).await?
        } else {
            if options.get_filename().as_os_str().is_empty() {
                return Err(ConfigError::new(
                    "the SQLite URL names no database file (use sqlite::memory: for memory)",
                )
                .into());
            }
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            pool::connect(ENGINE, pool::options(), options).await?
        };
        Ok(SqliteStorage {
            inner: SqlStorage::new(pool, table, config)?,
        })
    }

    /// Creates the table and its index if they are missing.
    ///
    /// Idempotent, and safe to run from several tasks or processes at once:
    /// each statement is `IF NOT EXISTS` and SQLite serializes schema
    /// changes. It never touches sqlx's `_sqlx_migrations`.
    pub async fn migrate(&self) -> Result<()> {
        for statement in &self.inner.sql.schema {
            sqlx::query(sql(statement))
                .execute(&self.inner.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "migrate", e))?;
        }
        Ok(())
    }
}

public_storage!(SqliteStorage, SqlitePool);

impl Dialect for Sqlite {
    const ENGINE: Engine = ENGINE;

    fn statements(table: &TableName) -> Statements {
        statements(table)
    }

    fn bind_id<'q>(q: Statement<'q, Self>, id: &str) -> Statement<'q, Self> {
        q.bind(id)
    }

    fn bind_time<'q>(q: Statement<'q, Self>, t: DateTime<Utc>) -> Statement<'q, Self> {
        q.bind(t.timestamp_millis())
    }

    fn bind_expiry<'q>(q: Statement<'q, Self>, t: Option<DateTime<Utc>>) -> Statement<'q, Self> {
        q.bind(t.map(|t| t.timestamp_millis()))
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn decode(op: &'static str, r: &SqliteRow) -> Result<ApiKey> {
        let get = |e| error::storage(ENGINE, op, e);
        let created_at: i64 = r.try_get("created_at").map_err(get)?;
        let expires_at: Option<i64> = r.try_get("expires_at").map_err(get)?;
        let row = UserApiKey {
            id: r.try_get("id").map_err(get)?,
            user_id: r.try_get("user_id").map_err(get)?,
            provider: r.try_get("provider").map_err(get)?,
            encrypted_value: r.try_get("encrypted_value").map_err(get)?,
            hint: r.try_get("hint").map_err(get)?,
            created_at: row::from_millis(ENGINE, op, created_at)?,
            expires_at: expires_at
                .map(|ms| row::from_millis(ENGINE, op, ms))
                .transpose()?,
        };
        row::into_key(ENGINE, op, row)
    }

    fn decode_provider(r: &SqliteRow) -> Result<String> {
        r.try_get(0)
            .map_err(|e| error::storage(ENGINE, "list_providers", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_in_memory_urls() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://?mode=memory",
            "sqlite:x?cache=shared&mode=memory",
        ] {
            assert!(is_in_memory(url), "{url}");
        }
        for url in [
            "sqlite://keys.db",
            "sqlite:keys.db",
            "keys.db",
            "sqlite:///tmp/memory.db",
        ] {
            assert!(!is_in_memory(url), "{url}");
        }
    }
}
