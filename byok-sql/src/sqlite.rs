//! SQLite: [`SqliteStorage`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use byok_core::storage::check_same_slot;
use byok_core::{
    ApiKey, ByokConfig, ConfigError, Cursor, KeyStorage, Result, ScanPage, UserApiKey, key,
    validate,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Row};

use crate::error::{self, Engine};
use crate::pool;
use crate::row::{self, COLUMNS};
use crate::sweeper::Sweeper;
use crate::table::TableName;

const ENGINE: Engine = Engine::Sqlite;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`KeyStorage`] in a SQLite database, a file or in memory.
///
/// Timestamps are stored as `INTEGER` milliseconds since the Unix epoch
/// (SQLite has no time type; integers compare and index exactly). Ids are
/// `TEXT`, which SQLite compares byte for byte (`BINARY` collation).
///
/// Clones share the pool. See the [crate docs](crate) for the schema.
#[derive(Clone)]
pub struct SqliteStorage {
    pool: SqlitePool,
    table: TableName,
    sql: Arc<Statements>,
    sweeper: Option<Arc<Sweeper>>,
    timeout: Duration,
}

struct Statements {
    create_table: Arc<str>,
    create_index: Arc<str>,
    store: Arc<str>,
    retrieve: Arc<str>,
    delete: Arc<str>,
    list: Arc<str>,
    clear: Arc<str>,
    purge: Arc<str>,
    swap: Arc<str>,
    scan_first: Arc<str>,
    scan_after: Arc<str>,
}

impl Statements {
    fn new(table: &TableName) -> Self {
        let t = table.as_str();
        let index = table.derived("expires_at_idx", usize::MAX);
        let live = "(expires_at IS NULL OR expires_at > ?)";
        Statements {
            // STRICT makes SQLite refuse a value of the wrong type instead of
            // storing it, so what is read back has the declared type.
            create_table: format!(
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
            create_index: format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)").into(),
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
            list: format!(
                "SELECT provider FROM {t} WHERE user_id = ? AND {live} ORDER BY provider"
            )
            .into(),
            clear: format!("DELETE FROM {t} WHERE user_id = ?").into(),
            purge: format!("DELETE FROM {t} WHERE expires_at <= ?").into(),
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
}

fn sql(s: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    // Every statement is built by `Statements::new` from constant text and a
    // validated `TableName`; values are always bound, never formatted in.
    AssertSqlSafe(Arc::clone(s))
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
        Self::build(pool, table, config)
    }

    /// Uses a pool you configured, and the table `config.db_table_name`.
    ///
    /// With `config.auto_cleanup` on, this starts the background purge
    /// (see [`connect`](Self::connect)) and so must be called within a
    /// Tokio runtime.
    pub fn from_pool(pool: SqlitePool, config: &ByokConfig) -> Result<Self> {
        let table = TableName::new(&config.db_table_name)?;
        Self::build(pool, table, config)
    }

    fn build(pool: SqlitePool, table: TableName, config: &ByokConfig) -> Result<Self> {
        let mut store = SqliteStorage {
            pool,
            sql: Arc::new(Statements::new(&table)),
            table,
            sweeper: None,
            timeout: pool::OPERATION_TIMEOUT,
        };
        if config.auto_cleanup {
            store.sweeper = Some(Arc::new(Sweeper::start(
                store.clone(),
                pool::SWEEP_INTERVAL,
            )?));
        }
        Ok(store)
    }

    /// The same storage on another table of the same database.
    ///
    /// Fails with a [`ConfigError`] unless `name` is a plain identifier
    /// (see the [crate docs](crate#table-names)).
    pub fn with_table_name(mut self, name: &str) -> Result<Self> {
        self.table = TableName::new(name)?;
        self.sql = Arc::new(Statements::new(&self.table));
        if let Some(sweeper) = self.sweeper.take() {
            self.sweeper = Some(Arc::new(sweeper.restart(self.clone())));
        }
        Ok(self)
    }

    /// The same storage with another deadline for each operation of
    /// [`KeyStorage`] (10 s by default), after which it fails with a
    /// retryable [`Timeout`](byok_core::StorageErrorKind::Timeout).
    ///
    /// The deadline covers waiting for a connection and the statement's
    /// round trip, so a server that vanished without closing the
    /// connection fails the call instead of holding it until the kernel
    /// gives up on the socket (many minutes). Use `Duration::MAX` for no
    /// deadline. Fails with a [`ConfigError`](byok_core::ConfigError) for a
    /// zero duration, which would fail every operation.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Result<Self> {
        self.timeout = pool::operation_timeout(timeout)?;
        if let Some(sweeper) = self.sweeper.take() {
            self.sweeper = Some(Arc::new(sweeper.restart(self.clone())));
        }
        Ok(self)
    }

    /// Creates the table and its index if they are missing.
    ///
    /// Idempotent, and safe to run from several tasks or processes at once:
    /// each statement is `IF NOT EXISTS` and SQLite serializes schema
    /// changes. It never touches sqlx's `_sqlx_migrations`.
    pub async fn migrate(&self) -> Result<()> {
        for statement in [&self.sql.create_table, &self.sql.create_index] {
            sqlx::query(sql(statement))
                .execute(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "migrate", e))?;
        }
        Ok(())
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The table the keys live in.
    pub fn table_name(&self) -> &str {
        self.table.as_str()
    }
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("backend", &ENGINE.name())
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
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

fn now_millis() -> i64 {
    key::now().timestamp_millis()
}

#[async_trait]
impl KeyStorage for SqliteStorage {
    async fn store(&self, k: &ApiKey) -> Result<()> {
        pool::bounded(ENGINE, "store", self.timeout, async {
            sqlx::query(sql(&self.sql.store))
                .bind(k.user_id())
                .bind(k.provider())
                .bind(k.encrypted_value())
                .bind(k.hint())
                .bind(k.created_at().timestamp_millis())
                .bind(k.expires_at_millis())
                .execute(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "store", e))?;
            Ok(())
        })
        .await
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        pool::bounded(ENGINE, "retrieve", self.timeout, async {
            validate::slot(user_id, provider)?;
            let row = sqlx::query(sql(&self.sql.retrieve))
                .bind(user_id)
                .bind(provider)
                .bind(now_millis())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "retrieve", e))?;
            row.map(|r| decode("retrieve", &r)).transpose()
        })
        .await
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        pool::bounded(ENGINE, "delete", self.timeout, async {
            validate::slot(user_id, provider)?;
            let done = sqlx::query(sql(&self.sql.delete))
                .bind(user_id)
                .bind(provider)
                .execute(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "delete", e))?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        pool::bounded(ENGINE, "list_providers", self.timeout, async {
            validate::user_id(user_id)?;
            sqlx::query_scalar(sql(&self.sql.list))
                .bind(user_id)
                .bind(now_millis())
                .fetch_all(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "list_providers", e))
        })
        .await
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        pool::bounded(ENGINE, "clear_all", self.timeout, async {
            validate::user_id(user_id)?;
            let done = sqlx::query(sql(&self.sql.clear))
                .bind(user_id)
                .execute(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "clear_all", e))?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        pool::bounded(ENGINE, "purge_expired", self.timeout, async {
            let done = sqlx::query(sql(&self.sql.purge))
                .bind(now_millis())
                .execute(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "purge_expired", e))?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        pool::bounded(ENGINE, "compare_and_swap", self.timeout, async {
            check_same_slot(current, new)?;
            let done = sqlx::query(sql(&self.sql.swap))
                .bind(new.encrypted_value())
                .bind(new.hint())
                .bind(new.created_at().timestamp_millis())
                .bind(new.expires_at_millis())
                .bind(current.user_id())
                .bind(current.provider())
                .bind(current.encrypted_value())
                .bind(now_millis())
                .execute(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "compare_and_swap", e))?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        pool::bounded(ENGINE, "scan", self.timeout, async {
            validate::page_size(limit)?;
            let after = cursor.map(Cursor::slot).transpose()?;
            let query = match after {
                Some((user_id, provider)) => sqlx::query(sql(&self.sql.scan_after))
                    .bind(user_id)
                    .bind(provider),
                None => sqlx::query(sql(&self.sql.scan_first)),
            };
            let rows = query
                .bind(now_millis())
                .bind(row::limit(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "scan", e))?;
            let keys = rows
                .iter()
                .map(|r| decode("scan", r))
                .collect::<Result<Vec<_>>>()?;
            Ok(crate::page(keys, limit))
        })
        .await
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
