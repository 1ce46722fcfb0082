//! SQLite: [`SqliteStorage`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use byok_core::chrono::{DateTime, Utc};
use byok_core::{ByokConfig, ConfigError, KeyStorage, Result, key, validate};
use sqlx::Row;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteQueryResult, SqliteRow,
};

use crate::error::{self, Engine};
use crate::pool;
use crate::row;
use crate::sqlite_read::InlineReader;
use crate::storage::{Dialect, SqlStorage, Statement, Statements, public_storage};
use crate::table::TableName;

const ENGINE: Engine = Engine::Sqlite;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page cache of each connection to a file database, in KiB (SQLite's
/// default is 2 MiB). A key's row is about 250 bytes with its slot in the
/// primary key, so the default holds some 8,000 keys and reads of a larger
/// table go to the operating system for pages; 8 MiB holds some 32,000.
/// Pages are allocated as they are read, so a small database costs no more.
pub const SQLITE_PAGE_CACHE_KIB: u32 = 8 * 1024;

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
    /// Reads `retrieve_value` on the calling thread (file databases opened
    /// by [`connect`](SqliteStorage::connect)).
    reader: Option<Arc<InlineReader>>,
    /// Whether `reader` is used.
    inline: bool,
}

/// The table `name`, as `migrate` creates it.
///
/// The slot is the primary key of a `WITHOUT ROWID` table: the rows live
/// in the key's own B-tree, so a read is one lookup and a write updates one
/// tree, where a rowid table with a unique (user, provider) index needs two.
/// STRICT makes SQLite refuse a value of the wrong type instead of storing
/// it, so what is read back has the declared type.
fn create_table(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (\
         user_id TEXT NOT NULL, \
         provider TEXT NOT NULL, \
         encrypted_value BLOB NOT NULL, \
         hint TEXT, \
         created_at INTEGER NOT NULL, \
         expires_at INTEGER, \
         last_check TEXT, \
         PRIMARY KEY (user_id, provider)) STRICT, WITHOUT ROWID"
    )
}

/// The index that purges use: partial, so that keys that never expire are
/// not in it, and writing such a key does not touch it.
fn create_expiry_index(table: &TableName) -> String {
    let t = table.as_str();
    let index = table.derived("expiring_idx", usize::MAX);
    format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at) WHERE expires_at IS NOT NULL")
}

/// The statements of `table`, in SQLite's words: standard SQL.
fn statements(table: &TableName) -> Statements {
    let schema = vec![
        create_table(table.as_str()).into(),
        create_expiry_index(table).into(),
    ];
    Statements::standard(table.as_str(), schema)
}

/// What turns a table of the first layout (a rowid table with an `id`
/// column, a unique (user, provider) index and a full index on
/// `expires_at`) into the current one. SQLite cannot change a primary key
/// in place, so the rows move to a new table that then takes the name.
fn upgrade(table: &TableName) -> Vec<String> {
    let t = table.as_str();
    let new = table.derived("byok_upgrade", usize::MAX);
    let columns = "user_id, provider, encrypted_value, hint, created_at, expires_at";
    vec![
        format!("DROP TABLE IF EXISTS {new}"),
        create_table(&new),
        format!("INSERT INTO {new} ({columns}) SELECT {columns} FROM {t}"),
        // Takes the old indexes with it.
        format!("DROP TABLE {t}"),
        format!("ALTER TABLE {new} RENAME TO {t}"),
        create_expiry_index(table),
    ]
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
    /// never wait for the writer) with a 5 s busy timeout, and each
    /// connection caches up to [`SQLITE_PAGE_CACHE_KIB`] of its pages. An in-memory
    /// database is kept on one connection that never closes, so every
    /// operation sees the same database for the life of the pool. On a
    /// file, `retrieve_value` runs on the calling thread (see
    /// [`with_inline_reads`](Self::with_inline_reads)).
    ///
    /// Starts no task: expired keys are purged by the manager's
    /// [`purge_every`](byok_core::store::purge_every) (see
    /// [`ByokConfig::auto_cleanup`](byok_core::ByokConfig::auto_cleanup)),
    /// or by a call to `purge_expired`.
    pub async fn connect(url: &str, config: &ByokConfig) -> Result<Self> {
        let table = TableName::new(&config.db_table_name)?;
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| error::config(ENGINE, e))?
            .busy_timeout(BUSY_TIMEOUT);
        let mut reader = None;
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
                .journal_mode(SqliteJournalMode::Wal)
                .pragma("cache_size", format!("-{SQLITE_PAGE_CACHE_KIB}"));
            let pool: SqlitePool = pool::connect(ENGINE, pool::options(), options).await?;
            // The pool has created the file; a later change of the working
            // directory must not move the reader to another one.
            reader = std::fs::canonicalize(pool.connect_options().get_filename())
                .ok()
                .map(|path| Arc::new(InlineReader::new(&path)));
            pool
        };
        Ok(SqliteStorage {
            inner: SqlStorage::new(pool, table),
            inline: reader.is_some(),
            reader,
        })
    }

    /// Creates the table and its index if they are missing, and brings a
    /// table of an earlier layout up to date.
    ///
    /// Idempotent, and safe to run from several tasks or processes at once:
    /// it runs in one `BEGIN IMMEDIATE` transaction, which SQLite grants to
    /// one connection at a time, and looks at the table only once it holds
    /// it. It never touches sqlx's `_sqlx_migrations`.
    ///
    /// A table made by byok-sql 0.1 (with an `id` column) is rebuilt with
    /// (user_id, provider) as its primary key: its rows are copied into a
    /// new table that takes its name, within the same transaction, so other
    /// connections see either the old table or the new one. Writers wait
    /// for the copy (the busy timeout is 5 s; run it before the traffic for
    /// a large table). Until then the old layout keeps working, only slower.
    pub async fn migrate(&self) -> Result<()> {
        let fail = |e| error::storage(ENGINE, "migrate", e);
        let mut tx = self
            .inner
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail)?;
        let old = self.inner.create_schema(&mut tx).await.map_err(fail)?;
        if old {
            self.inner
                .run_raw(&mut tx, upgrade(&self.inner.table))
                .await
                .map_err(fail)?;
        }
        self.inner.finish_migration(tx).await.map_err(fail)
    }
}

public_storage!(SqliteStorage, SqlitePool, { reader: None, inline: false });

impl SqliteStorage {
    /// Whether `retrieve_value` (the read of [`Byok::get_key`]) runs on
    /// the calling thread; on by default for a file database opened by
    /// [`connect`](Self::connect), and never for an in-memory database or a
    /// pool given to [`from_pool`](Self::from_pool) (whose options byok
    /// cannot repeat).
    ///
    /// sqlx runs each SQLite statement on a worker thread of its
    /// connection and sends the result back: two thread wake-ups per query,
    /// which take longer than SQLite's own work when the row's page is in
    /// the cache. With inline reads on, the read of one key runs on the
    /// task's own thread instead, on connections of its own to the same
    /// file (which cannot write, and whose reads see every committed
    /// write): as many as threads read at once, of which up to 16 stay open
    /// between reads, each with a page cache of up to
    /// [`SQLITE_PAGE_CACHE_KIB`]. A read that would have to wait for a
    /// lock, or fails in any way, is handed to sqlx, which then waits,
    /// answers or fails as it would have without this path; so is every
    /// read once [`pool`](Self::pool)`().close()` was called, which also
    /// closes these connections. A task that reads many keys in a row gives
    /// the runtime back its thread as any Tokio I/O does (its cooperative
    /// budget).
    ///
    /// What it costs: a read takes a few microseconds while the row's page
    /// is cached, and blocks the thread while a page comes from the disk
    /// (as long as the disk takes: a hung network file system hangs the
    /// thread, where sqlx's path would fail at the operation deadline), or
    /// while SQLite retries taking a WAL read lock against a busy writer
    /// and checkpointer (rare; SQLite gives up after some seconds, and the
    /// read then goes to sqlx). Turn it off where that matters.
    ///
    /// [`Byok::get_key`]: https://docs.rs/byok/latest/byok/struct.Byok.html#method.get_key
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use byok_core::ByokConfig;
    /// use byok_sql::SqliteStorage;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    /// let store = SqliteStorage::connect(&url, &ByokConfig::default()).await?;
    /// assert!(store.inline_reads());
    ///
    /// // Every read through sqlx's worker threads.
    /// let store = store.with_inline_reads(false);
    /// assert!(!store.inline_reads());
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_inline_reads(mut self, on: bool) -> Self {
        if on && self.reader.is_none() {
            tracing::debug!(
                "inline reads stay off: this SQLite storage did not open a database file itself"
            );
        }
        self.inline = on && self.reader.is_some();
        self
    }

    /// Whether `retrieve_value` runs on the calling thread (see
    /// [`with_inline_reads`](Self::with_inline_reads)).
    pub fn inline_reads(&self) -> bool {
        self.inline
    }

    /// `retrieve_value`: on the calling thread where it can be, else by
    /// sqlx.
    async fn read_value(&self, user_id: &str, provider: &str) -> Result<Option<Arc<[u8]>>> {
        if let Some(reader) = self.reader.as_ref().filter(|_| self.inline) {
            if self.inner.pool.is_closed() {
                // Let the file go as the pool did; sqlx reports the closed pool.
                reader.close();
            } else {
                validate::stored_slot(user_id, provider)?;
                // A read answered here never waits, so it takes a unit of
                // the task's budget, as Tokio's own I/O does: a task that
                // reads many keys in a row yields now and then.
                tokio::task::coop::consume_budget().await;
                let now = key::now().timestamp_millis();
                let statement = &self.inner.sql.retrieve_value;
                if let Some(answer) = reader.value(statement, user_id, provider, now) {
                    return Ok(answer);
                }
            }
        }
        self.inner.retrieve_value(user_id, provider).await
    }
}

impl Dialect for Sqlite {
    const ENGINE: Engine = ENGINE;
    const COLUMNS: &'static str = "SELECT CAST(name AS BLOB) FROM pragma_table_info(?)";

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

    fn decode_id(op: &'static str, r: &SqliteRow, column: &'static str) -> Result<String> {
        r.try_get(column).map_err(|e| error::storage(ENGINE, op, e))
    }

    fn decode_time(
        op: &'static str,
        r: &SqliteRow,
        column: &'static str,
    ) -> Result<Option<DateTime<Utc>>> {
        row::millis_column(ENGINE, op, r.try_get(column))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byok_core::ApiKey;

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

    /// A migrated store on a file in `dir`, holding one key of `u`.
    async fn store_in(dir: &tempfile::TempDir) -> SqliteStorage {
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        let store = SqliteStorage::connect(&url, &ByokConfig::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let key = ApiKey::new("u", "openai", vec![7; 32]).unwrap();
        byok_core::KeyStorage::store(&store, &key).await.unwrap();
        store
    }

    fn answered(store: &SqliteStorage) -> u64 {
        store.reader.as_ref().map_or(0, |r| r.answered())
    }

    #[tokio::test]
    async fn reads_are_answered_inline_only_while_inline_reads_are_on() {
        use byok_core::KeyStorage;
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let read = |s: SqliteStorage| async move {
            s.retrieve_value("u", "openai")
                .await
                .unwrap()
                .map(|v| v.len())
        };
        assert_eq!(read(store.clone()).await, Some(32));
        assert_eq!(answered(&store), 1);
        let off = store.clone().with_inline_reads(false);
        assert_eq!(read(off.clone()).await, Some(32));
        assert_eq!(answered(&store), 1, "off: read by sqlx");
        assert_eq!(read(off.with_inline_reads(true)).await, Some(32));
        assert_eq!(answered(&store), 2, "on again");
        // Invalid ids are refused before either path.
        assert!(store.retrieve_value("", "openai").await.is_err());
        assert_eq!(answered(&store), 2);

        // Once the pool is closed, the inline connections are closed too
        // and every read fails as sqlx's does.
        store.pool().close().await;
        assert!(store.retrieve_value("u", "openai").await.is_err());
        assert_eq!(answered(&store), 2);
        let reader = store.reader.as_ref().unwrap();
        assert!(reader.idle_is_empty());

        let memory = SqliteStorage::connect("sqlite::memory:", &ByokConfig::default())
            .await
            .unwrap();
        assert!(memory.reader.is_none() && !memory.inline_reads());
    }

    /// Inline reads never wait, so without the cooperative budget a task
    /// reading in a loop would keep a current-thread runtime to itself.
    #[tokio::test(flavor = "current_thread")]
    async fn a_task_reading_many_keys_lets_other_tasks_run() {
        use byok_core::KeyStorage;
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let ticks = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&ticks);
        let other = tokio::spawn(async move {
            loop {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::Relaxed);
        for _ in 0..2_000 {
            assert!(store.retrieve_value("u", "openai").await.unwrap().is_some());
        }
        let after = ticks.load(Ordering::Relaxed);
        assert_eq!(answered(&store), 2_000, "every read was inline");
        assert!(after > before, "the other task ran during the reads");
        other.abort();
    }
}
