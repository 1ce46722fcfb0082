//! MySQL and MariaDB: [`MySqlStorage`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use byok_core::storage::check_same_slot;
use byok_core::{
    ApiKey, ByokConfig, Cursor, KeyStorage, Result, ScanPage, StorageError, StorageErrorKind,
    UserApiKey, key, validate,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlRow};
use sqlx::{AssertSqlSafe, Row};

use crate::error::{self, Engine};
use crate::pool;
use crate::row::{self, COLUMNS};
use crate::sweeper::Sweeper;
use crate::table::TableName;

const ENGINE: Engine = Engine::MySql;

/// How long `migrate` waits for another process's migration of the table.
const MIGRATE_LOCK_TIMEOUT_SECS: i64 = 30;

/// [`KeyStorage`] in a MySQL or MariaDB table.
///
/// The text collations of MySQL and MariaDB ignore case and accents, and
/// on MariaDB even `utf8mb4_bin` ignores trailing spaces, so ids are stored
/// as `VARBINARY` (their UTF-8 bytes) to compare and sort byte for byte.
/// Times are `BIGINT` milliseconds since the Unix epoch, as on SQLite:
/// `DATETIME` holds only the years 1000 to 9999 (a later expiry would be
/// refused, or under a non-strict `sql_mode` silently zeroed), and
/// integers are never shifted by a server's or session's time zone.
///
/// `compare_and_swap` relies on `rows_affected` counting matched rows, not
/// changed rows, which sqlx arranges by always connecting with the
/// `CLIENT_FOUND_ROWS` flag: swapping a key for an identical one succeeds.
///
/// Clones share the pool. See the [crate docs](crate) for the schema.
#[derive(Clone)]
pub struct MySqlStorage {
    pool: MySqlPool,
    table: TableName,
    sql: Arc<Statements>,
    sweeper: Option<Arc<Sweeper>>,
    timeout: Duration,
}

struct Statements {
    create_table: Arc<str>,
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
        let live = "(expires_at IS NULL OR expires_at > ?)";
        Statements {
            // Indexes are declared inside CREATE TABLE: MySQL has no
            // CREATE INDEX IF NOT EXISTS, and their names are per table.
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 user_id VARBINARY(255) NOT NULL, \
                 provider VARBINARY(64) NOT NULL, \
                 encrypted_value MEDIUMBLOB NOT NULL, \
                 hint VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, \
                 created_at BIGINT NOT NULL, \
                 expires_at BIGINT NULL, \
                 UNIQUE KEY user_provider (user_id, provider), \
                 KEY expires_at_idx (expires_at)\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            )
            .into(),
            // VALUES(col) rather than MySQL 8's row alias: MariaDB has only
            // the former.
            store: format!(
                "INSERT INTO {t} (user_id, provider, encrypted_value, hint, created_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE \
                 encrypted_value = VALUES(encrypted_value), hint = VALUES(hint), \
                 created_at = VALUES(created_at), expires_at = VALUES(expires_at)"
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
            // The expanded form of (user_id, provider) > (?, ?), which
            // MySQL and MariaDB turn into an index range scan.
            scan_after: format!(
                "SELECT {COLUMNS} FROM {t} \
                 WHERE (user_id > ? OR (user_id = ? AND provider > ?)) AND {live} \
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

/// Rust's now as the milliseconds that the time columns hold.
fn now() -> i64 {
    key::now().timestamp_millis()
}

impl MySqlStorage {
    /// Connects to `url` (`mysql://user:password@host:3306/db`; `mariadb://`
    /// works too) and uses the table `config.db_table_name`. Does not
    /// create the table: call [`migrate`](Self::migrate).
    ///
    /// Fails with a retryable error when the server cannot be reached.
    /// With `config.auto_cleanup` on, a background task on the current
    /// Tokio runtime purges expired keys every minute until the last clone
    /// of this storage is dropped.
    pub async fn connect(url: &str, config: &ByokConfig) -> Result<Self> {
        let table = TableName::new(&config.db_table_name)?;
        let options = MySqlConnectOptions::from_str(url).map_err(|e| error::config(ENGINE, e))?;
        let pool = pool::connect(ENGINE, pool::options(), options).await?;
        Self::build(pool, table, config)
    }

    /// Uses a pool you configured, and the table `config.db_table_name`.
    ///
    /// With `config.auto_cleanup` on, this starts the background purge
    /// (see [`connect`](Self::connect)) and so must be called within a
    /// Tokio runtime.
    pub fn from_pool(pool: MySqlPool, config: &ByokConfig) -> Result<Self> {
        let table = TableName::new(&config.db_table_name)?;
        Self::build(pool, table, config)
    }

    fn build(pool: MySqlPool, table: TableName, config: &ByokConfig) -> Result<Self> {
        let mut store = MySqlStorage {
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
    /// Fails with a [`ConfigError`](byok_core::ConfigError) unless `name` is
    /// a plain identifier (see the [crate docs](crate#table-names)).
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

    /// Creates the table and its indexes if they are missing.
    ///
    /// Idempotent, and safe to run from several processes at once: the
    /// statement runs under a named lock (`GET_LOCK`, keyed by the table
    /// name), so later schema steps can never interleave either. It never
    /// touches sqlx's `_sqlx_migrations`. It is safe to cancel: the
    /// connection that took the lock is closed, not returned to the pool.
    pub async fn migrate(&self) -> Result<()> {
        let fail = |e| error::storage(ENGINE, "migrate", e);
        let lock = self.table.derived("byok_migrate", 64);
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        // A named lock belongs to the connection, not to a transaction: if
        // this future is dropped between GET_LOCK and RELEASE_LOCK, the
        // connection must not go back to the pool still holding it, or every
        // later migration of the table would wait for it in vain. Closing
        // the connection releases the lock; migrations are rare enough that
        // the lost connection does not matter.
        conn.close_on_drop();
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&lock)
            .bind(MIGRATE_LOCK_TIMEOUT_SECS)
            .fetch_one(&mut *conn)
            .await
            .map_err(fail)?;
        if locked != Some(1) {
            return Err(StorageError::new(
                ENGINE.name(),
                StorageErrorKind::Timeout,
                "migrate: another migration of this table holds the lock",
            )
            .into());
        }
        let created = sqlx::query(sql(&self.sql.create_table))
            .execute(&mut *conn)
            .await;
        let released = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(&lock)
            .execute(&mut *conn)
            .await;
        created.map_err(fail)?;
        released.map_err(fail)?;
        Ok(())
    }

    /// The connection pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The table the keys live in.
    pub fn table_name(&self) -> &str {
        self.table.as_str()
    }
}

impl fmt::Debug for MySqlStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStorage")
            .field("backend", &ENGINE.name())
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn decode(op: &'static str, r: &MySqlRow) -> Result<ApiKey> {
    let get = |e| error::storage(ENGINE, op, e);
    let user_id: Vec<u8> = r.try_get("user_id").map_err(get)?;
    let provider: Vec<u8> = r.try_get("provider").map_err(get)?;
    let created_at: i64 = r.try_get("created_at").map_err(get)?;
    let expires_at: Option<i64> = r.try_get("expires_at").map_err(get)?;
    let row = UserApiKey {
        id: r.try_get("id").map_err(get)?,
        user_id: row::id_from_bytes(ENGINE, op, "user id", user_id)?,
        provider: row::id_from_bytes(ENGINE, op, "provider", provider)?,
        encrypted_value: r.try_get("encrypted_value").map_err(get)?,
        hint: r.try_get("hint").map_err(get)?,
        created_at: row::from_millis(ENGINE, op, created_at)?,
        expires_at: expires_at
            .map(|ms| row::from_millis(ENGINE, op, ms))
            .transpose()?,
    };
    row::into_key(ENGINE, op, row)
}

#[async_trait]
impl KeyStorage for MySqlStorage {
    async fn store(&self, k: &ApiKey) -> Result<()> {
        pool::bounded(ENGINE, "store", self.timeout, async {
            sqlx::query(sql(&self.sql.store))
                .bind(k.user_id().as_bytes())
                .bind(k.provider().as_bytes())
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
                .bind(user_id.as_bytes())
                .bind(provider.as_bytes())
                .bind(now())
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
                .bind(user_id.as_bytes())
                .bind(provider.as_bytes())
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
            let providers: Vec<Vec<u8>> = sqlx::query_scalar(sql(&self.sql.list))
                .bind(user_id.as_bytes())
                .bind(now())
                .fetch_all(&self.pool)
                .await
                .map_err(|e| error::storage(ENGINE, "list_providers", e))?;
            providers
                .into_iter()
                .map(|p| row::id_from_bytes(ENGINE, "list_providers", "provider", p))
                .collect()
        })
        .await
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        pool::bounded(ENGINE, "clear_all", self.timeout, async {
            validate::user_id(user_id)?;
            let done = sqlx::query(sql(&self.sql.clear))
                .bind(user_id.as_bytes())
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
                .bind(now())
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
                .bind(current.user_id().as_bytes())
                .bind(current.provider().as_bytes())
                .bind(current.encrypted_value())
                .bind(now())
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
                    .bind(user_id.as_bytes())
                    .bind(user_id.as_bytes())
                    .bind(provider.as_bytes()),
                None => sqlx::query(sql(&self.sql.scan_first)),
            };
            let rows = query
                .bind(now())
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
