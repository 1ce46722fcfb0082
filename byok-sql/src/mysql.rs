//! MySQL and MariaDB: [`MySqlStorage`].

use std::str::FromStr;

use byok_core::chrono::{DateTime, Utc};
use byok_core::{ByokConfig, Result, StorageError, StorageErrorKind};
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlQueryResult, MySqlRow,
};
use sqlx::{AssertSqlSafe, Executor, Row};

use crate::error::{self, Engine};
use crate::pool;
use crate::row::{self, SLOT_COLUMNS};
use crate::storage::{Dialect, PURGE_BATCH, SqlStorage, Statement, Statements, public_storage};
use crate::table::TableName;

const ENGINE: Engine = Engine::MySql;

/// The largest value a `MEDIUMBLOB` holds: 16 MiB less one byte.
const MEDIUMBLOB_MAX: usize = (1 << 24) - 1;

/// What every connection of [`MySqlStorage::connect`] runs first.
///
/// A strict `sql_mode` makes the server refuse a value that does not fit
/// its column instead of storing it cut short with a warning. `READ
/// COMMITTED` takes no gap locks for searches: at the default `REPEATABLE
/// READ`, a delete of a missing row or of one user's keys locks the gap
/// next to it, which blocks inserts of other users' keys and let writes on
/// different users deadlock each other.
const SESSION_SETUP: [&str; 2] = [
    "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// How long `migrate` waits for another process's migration of the table.
const MIGRATE_LOCK_TIMEOUT_SECS: i64 = 30;

/// [`KeyStorage`](byok_core::KeyStorage) in a MySQL or MariaDB table.
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
    inner: SqlStorage<MySql>,
}

/// The statements of `table`, in MySQL's words: standard SQL but for
/// the schema, the writes, the purge and the scan after a slot.
fn statements(table: &TableName) -> Statements {
    let t = table.as_str();
    let live = "(expires_at IS NULL OR expires_at > ?)";
    Statements {
        // Indexes are declared inside CREATE TABLE: MySQL has no
        // CREATE INDEX IF NOT EXISTS, and their names are per table. The
        // slot is the primary key, so InnoDB keeps each row in the slot's
        // own B-tree: a read is one lookup, and a write touches two indexes
        // (one if the expiry stays the same), not three.
        schema: vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 user_id VARBINARY(255) NOT NULL, \
                 provider VARBINARY(64) NOT NULL, \
                 encrypted_value MEDIUMBLOB NOT NULL, \
                 hint VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, \
                 created_at BIGINT NOT NULL, \
                 expires_at BIGINT NULL, \
                 last_check TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, \
                 PRIMARY KEY (user_id, provider), \
                 KEY expires_at_idx (expires_at)\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            )
            .into(),
        ],
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
        // Not one `ON DUPLICATE KEY UPDATE`: under CLIENT_FOUND_ROWS, which
        // sqlx always sets, a duplicate left as it was counts one row, as
        // an insert does, so the answer could not tell them apart.
        // `store_if_absent` runs `replace_expired`, then this plain insert,
        // which the primary key refuses when the slot holds a key.
        insert: format!(
            "INSERT INTO {t} (user_id, provider, encrypted_value, hint, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)"
        )
        .into(),
        replace_expired: Some(
            format!(
                "UPDATE {t} SET encrypted_value = ?, hint = ?, created_at = ?, expires_at = ? \
                 WHERE user_id = ? AND provider = ? AND expires_at <= ?"
            )
            .into(),
        ),
        // No ORDER BY: the expiry index yields the first batch as it is,
        // where sorting every expired key for each batch would not scale.
        purge: format!("SELECT user_id, provider FROM {t} WHERE expires_at <= ? LIMIT ?").into(),
        // `expires_at + 0` keeps the optimizer off the expiry index, so that
        // rows are found (and locked) by primary key, in its order.
        purge_batch: Some(
            format!(
                "DELETE FROM {t} WHERE (user_id, provider) IN ({}) AND expires_at + 0 <= ?",
                vec!["(?, ?)"; PURGE_BATCH].join(", ")
            )
            .into(),
        ),
        // The expanded form of (user_id, provider) > (?, ?), which
        // MySQL and MariaDB turn into an index range scan.
        scan_after: format!(
            "SELECT {SLOT_COLUMNS} FROM {t} \
             WHERE (user_id > ? OR (user_id = ? AND provider > ?)) AND {live} \
             ORDER BY user_id, provider LIMIT ?"
        )
        .into(),
        // The server adds a nullable column in place, without copying
        // the table (ALGORITHM=INSTANT on MySQL 8 and MariaDB 10.3+).
        add_check_column: format!(
            "ALTER TABLE {t} ADD COLUMN last_check \
             TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL"
        )
        .into(),
        ..Statements::standard(t, Vec::new())
    }
}

impl MySqlStorage {
    /// Connects to `url` (`mysql://user:password@host:3306/db`; `mariadb://`
    /// works too) and uses the table `config.db_table_name`. Does not
    /// create the table: call [`migrate`](Self::migrate).
    ///
    /// Fails with a retryable error when the server cannot be reached.
    /// Starts no task: expired keys are purged by the manager's
    /// [`purge_every`](byok_core::store::purge_every) (see
    /// [`ByokConfig::auto_cleanup`](byok_core::ByokConfig::auto_cleanup)),
    /// or by a call to `purge_expired`.
    pub async fn connect(url: &str, config: &ByokConfig) -> Result<Self> {
        let table = TableName::new(&config.db_table_name)?;
        let options = MySqlConnectOptions::from_str(url).map_err(|e| error::config(ENGINE, e))?;
        let pool = pool::options().after_connect(|conn: &mut MySqlConnection, _| {
            Box::pin(async move {
                for statement in SESSION_SETUP {
                    conn.execute(statement).await?;
                }
                Ok(())
            })
        });
        let pool = pool::connect(ENGINE, pool, options).await?;
        Ok(MySqlStorage {
            inner: SqlStorage::new(pool, table),
        })
    }

    /// Creates the table and its indexes if they are missing, and brings a
    /// table of an earlier layout up to date.
    ///
    /// Idempotent, and safe to run from several processes at once: the
    /// statements run under a named lock (`GET_LOCK`, keyed by the table
    /// name), so two migrations never interleave. It never touches sqlx's
    /// `_sqlx_migrations`. It is safe to cancel: the connection that took
    /// the lock is closed, not returned to the pool.
    ///
    /// A table made by byok-sql 0.1 (with an `id` column) gets (user_id,
    /// provider) as its primary key in place of `id` and of the unique key
    /// `user_provider`, in one `ALTER TABLE`. InnoDB rebuilds the table
    /// for that, letting reads and writes go on meanwhile; until then the
    /// old layout keeps working, only slower.
    pub async fn migrate(&self) -> Result<()> {
        let fail = |e| error::storage(ENGINE, "migrate", e);
        let lock = self.inner.table.derived("byok_migrate", 64);
        let mut conn = self.inner.pool.acquire().await.map_err(fail)?;
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
        let created = async {
            let old = self.inner.create_schema(&mut conn).await?;
            if old {
                // One statement, so that the table is never left half done.
                let t = self.inner.table.as_str();
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "ALTER TABLE {t} DROP PRIMARY KEY, DROP COLUMN id, \
                     DROP INDEX user_provider, ADD PRIMARY KEY (user_id, provider)"
                )))
                .execute(&mut *conn)
                .await?;
            }
            self.inner.add_check_column(&mut conn).await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let released = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(&lock)
            .execute(&mut *conn)
            .await;
        created.map_err(fail)?;
        released.map_err(fail)?;
        self.inner.check_column_added();
        Ok(())
    }
}

public_storage!(MySqlStorage, MySqlPool);

impl Dialect for MySql {
    const ENGINE: Engine = ENGINE;
    const COLUMNS: &'static str = "SELECT CAST(column_name AS BINARY) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ?";
    const MAX_VALUE_LEN: Option<usize> = Some(MEDIUMBLOB_MAX);
    const PACKET_LIMIT: Option<&'static str> =
        Some("SELECT CAST(@@session.max_allowed_packet AS SIGNED)");

    fn statements(table: &TableName) -> Statements {
        statements(table)
    }

    /// Ids are sent as their UTF-8 bytes, for the `VARBINARY` columns.
    fn bind_id<'q>(q: Statement<'q, Self>, id: &str) -> Statement<'q, Self> {
        q.bind(id.as_bytes())
    }

    fn bind_time<'q>(q: Statement<'q, Self>, t: DateTime<Utc>) -> Statement<'q, Self> {
        q.bind(t.timestamp_millis())
    }

    fn bind_expiry<'q>(q: Statement<'q, Self>, t: Option<DateTime<Utc>>) -> Statement<'q, Self> {
        q.bind(t.map(|t| t.timestamp_millis()))
    }

    /// The expanded form of `scan_after` names the user id twice.
    fn bind_after<'q>(
        q: Statement<'q, Self>,
        user_id: &str,
        provider: &str,
    ) -> Statement<'q, Self> {
        q.bind(user_id.as_bytes())
            .bind(user_id.as_bytes())
            .bind(provider.as_bytes())
    }

    /// Ids are stored as their UTF-8 bytes.
    fn decode_id(op: &'static str, r: &MySqlRow, column: &'static str) -> Result<String> {
        let bytes: Vec<u8> = r
            .try_get(column)
            .map_err(|e| error::storage(ENGINE, op, e))?;
        row::id_from_bytes(ENGINE, op, column, bytes)
    }

    fn decode_time(
        op: &'static str,
        r: &MySqlRow,
        column: &'static str,
    ) -> Result<Option<DateTime<Utc>>> {
        row::millis_column(ENGINE, op, r.try_get(column))
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }
}
