//! What the three engines share: the state of a storage, its builder
//! steps, and the operations of [`KeyStorage`], written once over a
//! [`Dialect`] that says how each engine spells its SQL and its values.
//!
//! Each public type (`SqliteStorage`, …) wraps a [`SqlStorage`] of its
//! engine and adds what is its own: `connect` and `migrate`.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use byok_core::check_record::MAX_ENCODED_LEN;
use byok_core::chrono::{DateTime, Utc};
use byok_core::storage::check_same_slot;
use byok_core::store::SchemaStatus;
use byok_core::{ApiKey, Cursor, KeyStorage, Result, ScanPage, key, validate};
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::error::{self, Engine};
use crate::pool;
use crate::retry::retry;
use crate::row::{self, PROVIDER_COLUMNS, SLOT_COLUMNS, VALUE_COLUMNS};
use crate::table::{TableName, sql};

/// A statement of one engine, before its values are bound.
pub(crate) type Statement<'q, D> = Query<'q, D, <D as Database>::Arguments>;

/// The statements of one table, built once from constant text and a
/// validated [`TableName`]; values are always bound, never formatted in.
pub(crate) struct Statements {
    /// What `migrate` runs, in order.
    pub(crate) schema: Vec<Arc<str>>,
    /// Upsert: user, provider, value, hint, created, expires.
    pub(crate) store: Arc<str>,
    /// Stores only into an empty slot or over an expired key, one row
    /// affected when it did: user, provider, value, hint, created,
    /// expires, then now unless `replace_expired` is set (then it stores
    /// only into an empty slot, and fails with a unique violation
    /// otherwise).
    pub(crate) insert: Arc<str>,
    /// Where `insert` cannot replace an expired key itself (MySQL):
    /// value, hint, created, expires; user, provider, now. Replaces the
    /// slot's key only if it has expired; one row matched when it did.
    pub(crate) replace_expired: Option<Arc<str>>,
    /// User, provider, now; selects [`VALUE_COLUMNS`](crate::row::VALUE_COLUMNS).
    pub(crate) retrieve: Arc<str>,
    /// User, provider, now; selects `encrypted_value` only.
    pub(crate) retrieve_value: Arc<str>,
    /// User, provider.
    pub(crate) delete: Arc<str>,
    /// User, now; selects `provider` only.
    pub(crate) list: Arc<str>,
    /// User.
    pub(crate) clear: Arc<str>,
    /// Now; without `purge_batch`, deletes every expired key. With it,
    /// now, limit: selects `user_id, provider` of at most that many expired
    /// keys, without locking them.
    pub(crate) purge: Arc<str>,
    /// Deletes the keys of one batch of [`PURGE_BATCH`] slots that are
    /// still expired: `PURGE_BATCH` times user, provider, then now.
    pub(crate) purge_batch: Option<Arc<str>>,
    /// User; selects [`PROVIDER_COLUMNS`](crate::row::PROVIDER_COLUMNS)
    /// of every key of the user, expired ones included, sorted by provider.
    pub(crate) user_keys: Arc<str>,
    /// New value, hint, created, expires; user, provider, current value, now.
    pub(crate) swap: Arc<str>,
    /// Now, limit; selects [`SLOT_COLUMNS`](crate::row::SLOT_COLUMNS).
    pub(crate) scan_first: Arc<str>,
    /// [`Dialect::bind_after`], now, limit.
    pub(crate) scan_after: Arc<str>,
    /// Check, user, provider: keeps the check of the slot's key, expired
    /// or not; one row matched when there is one.
    pub(crate) store_check: Arc<str>,
    /// User; selects `provider, last_check` of the user's keys that have a
    /// check, sorted by provider.
    pub(crate) checks: Arc<str>,
    /// Adds the `last_check` column to a table of layout 2.
    pub(crate) add_check_column: Arc<str>,
    /// The statements of the admin side.
    pub(crate) admin: AdminStatements,
}

/// The version of the table's layout that `migrate` writes: 1 is the
/// layout of byok-sql 0.1 (an `id` column as the primary key), 2 the
/// slot as the primary key, 3 the current one (2 with a nullable
/// `last_check` column). Tables carry no version marker; the layout is
/// read from their columns.
pub(crate) const SCHEMA_VERSION: u32 = 3;

/// The column of the kept checks, added by layout 3; nullable, so that
/// the statements of earlier versions, which name their columns, work on
/// a table that has it.
pub(crate) const CHECK_COLUMN: &str = "last_check";

/// How long a storage that found no [`CHECK_COLUMN`] trusts that answer
/// before it reads the table's columns again, by default: an instance
/// started before the migration picks the column up within this time,
/// without a restart.
pub(crate) const SCHEMA_RECHECK: Duration = Duration::from_secs(60);

/// The columns of the current layout.
const COLUMNS: [&str; 6] = [
    "user_id",
    "provider",
    "encrypted_value",
    "hint",
    "created_at",
    "expires_at",
];

/// What the admin side of a table runs: counts and `DROP TABLE`.
pub(crate) struct AdminStatements {
    /// Now; counts the expired keys still stored.
    pub(crate) count_expired: Arc<str>,
    /// Now; counts the unexpired keys.
    pub(crate) count: Arc<str>,
    /// Drops the table if it exists.
    pub(crate) destroy: Arc<str>,
}

impl AdminStatements {
    /// The statements of table `t`, with `?` for each value.
    fn new(t: &str) -> Self {
        AdminStatements {
            count_expired: format!("SELECT COUNT(*) FROM {t} WHERE expires_at <= ?").into(),
            count: format!("SELECT COUNT(*) FROM {t} WHERE expires_at IS NULL OR expires_at > ?")
                .into(),
            destroy: format!("DROP TABLE IF EXISTS {t}").into(),
        }
    }
}

impl Statements {
    /// The statements of table `t` in standard SQL, with `?` for each
    /// value, as SQLite takes them (and PostgreSQL once
    /// [`numbered`](Self::numbered)); `schema` is the engine's own. An
    /// engine that spells some statements otherwise replaces them.
    pub(crate) fn standard(t: &str, schema: Vec<Arc<str>>) -> Self {
        let live = "(expires_at IS NULL OR expires_at > ?)";
        let store = format!(
            "INSERT INTO {t} (user_id, provider, encrypted_value, hint, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (user_id, provider) DO UPDATE SET \
             encrypted_value = excluded.encrypted_value, hint = excluded.hint, \
             created_at = excluded.created_at, expires_at = excluded.expires_at"
        );
        Statements {
            schema,
            // The upsert's WHERE leaves a live key alone: no row changes.
            insert: format!("{store} WHERE {t}.expires_at IS NOT NULL AND {t}.expires_at <= ?")
                .into(),
            store: store.into(),
            replace_expired: None,
            retrieve: format!(
                "SELECT {VALUE_COLUMNS} FROM {t} WHERE user_id = ? AND provider = ? AND {live}"
            )
            .into(),
            retrieve_value: format!(
                "SELECT encrypted_value FROM {t} WHERE user_id = ? AND provider = ? AND {live}"
            )
            .into(),
            delete: format!("DELETE FROM {t} WHERE user_id = ? AND provider = ?").into(),
            list: format!(
                "SELECT provider FROM {t} WHERE user_id = ? AND {live} ORDER BY provider"
            )
            .into(),
            clear: format!("DELETE FROM {t} WHERE user_id = ?").into(),
            purge: format!("DELETE FROM {t} WHERE expires_at <= ?").into(),
            purge_batch: None,
            user_keys: format!(
                "SELECT {PROVIDER_COLUMNS} FROM {t} WHERE user_id = ? ORDER BY provider"
            )
            .into(),
            swap: format!(
                "UPDATE {t} SET encrypted_value = ?, hint = ?, created_at = ?, expires_at = ? \
                 WHERE user_id = ? AND provider = ? AND encrypted_value = ? AND {live}"
            )
            .into(),
            scan_first: format!(
                "SELECT {SLOT_COLUMNS} FROM {t} WHERE {live} ORDER BY user_id, provider LIMIT ?"
            )
            .into(),
            scan_after: format!(
                "SELECT {SLOT_COLUMNS} FROM {t} WHERE (user_id, provider) > (?, ?) AND {live} \
                 ORDER BY user_id, provider LIMIT ?"
            )
            .into(),
            store_check: format!(
                "UPDATE {t} SET {CHECK_COLUMN} = ? WHERE user_id = ? AND provider = ?"
            )
            .into(),
            checks: format!(
                "SELECT provider, {CHECK_COLUMN} FROM {t} \
                 WHERE user_id = ? AND {CHECK_COLUMN} IS NOT NULL ORDER BY provider"
            )
            .into(),
            add_check_column: format!("ALTER TABLE {t} ADD COLUMN {CHECK_COLUMN} TEXT").into(),
            admin: AdminStatements::new(t),
        }
    }

    /// The same statements with the `?`s of each numbered `$1`, `$2`… in
    /// order, as PostgreSQL takes them. (A table name never holds a `?`,
    /// and no statement has one in a literal.)
    #[cfg(feature = "postgres")]
    pub(crate) fn numbered(self) -> Self {
        let n = |s: Arc<str>| -> Arc<str> { number(&s).into() };
        Statements {
            schema: self.schema.into_iter().map(n).collect(),
            store: n(self.store),
            insert: n(self.insert),
            replace_expired: self.replace_expired.map(n),
            retrieve: n(self.retrieve),
            retrieve_value: n(self.retrieve_value),
            delete: n(self.delete),
            list: n(self.list),
            clear: n(self.clear),
            purge: n(self.purge),
            purge_batch: self.purge_batch.map(n),
            user_keys: n(self.user_keys),
            swap: n(self.swap),
            scan_first: n(self.scan_first),
            scan_after: n(self.scan_after),
            store_check: n(self.store_check),
            checks: n(self.checks),
            add_check_column: n(self.add_check_column),
            admin: AdminStatements {
                count_expired: n(self.admin.count_expired),
                count: n(self.admin.count),
                destroy: n(self.admin.destroy),
            },
        }
    }
}

/// `statement` with its `?`s numbered `$1`, `$2`… in order.
#[cfg(feature = "postgres")]
fn number(statement: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(statement.len() + 16);
    let mut n = 0;
    for c in statement.chars() {
        if c == '?' {
            n += 1;
            let _ = write!(out, "${n}");
        } else {
            out.push(c);
        }
    }
    out
}

/// How many keys one statement of a batched purge deletes at most.
pub(crate) const PURGE_BATCH: usize = 500;

/// From this size of an encrypted value on, a write first asks the server
/// how large a statement it accepts, if the engine has such a limit
/// ([`Dialect::PACKET_LIMIT`]). Far above what byok itself stores (an API
/// key of at most 8 KiB, encrypted), so the common write pays nothing.
const CHECK_PACKET_FROM: usize = 16 * 1024;

/// What a write statement adds to its values, at most: its text, the ids,
/// the hint, the times and the protocol's framing.
const STATEMENT_OVERHEAD: usize = 4 * 1024;

/// How one engine writes its statements and its values, and reads its rows.
pub(crate) trait Dialect: Database {
    /// The engine, for errors.
    const ENGINE: Engine;

    /// The largest encrypted value the table's column holds, where the
    /// engine would otherwise cut a longer one short instead of refusing it.
    const MAX_VALUE_LEN: Option<usize> = None;

    /// A query for the largest statement the server accepts, in bytes, as
    /// a signed integer, where a larger one is refused in a way that looks
    /// like a lost connection.
    const PACKET_LIMIT: Option<&'static str> = None;

    /// Table name; selects the names of the table's columns, as text,
    /// and no row when there is no such table. Reads only.
    const COLUMNS: &'static str;

    /// The statements for `table`.
    fn statements(table: &TableName) -> Statements;

    /// Binds a user id or a provider.
    fn bind_id<'q>(q: Statement<'q, Self>, id: &str) -> Statement<'q, Self>;

    /// Binds a time (a creation time, or now).
    fn bind_time<'q>(q: Statement<'q, Self>, t: DateTime<Utc>) -> Statement<'q, Self>;

    /// Binds an expiry, null for never.
    fn bind_expiry<'q>(q: Statement<'q, Self>, t: Option<DateTime<Utc>>) -> Statement<'q, Self>;

    /// Binds the slot that a scan page starts after.
    fn bind_after<'q>(
        q: Statement<'q, Self>,
        user_id: &str,
        provider: &str,
    ) -> Statement<'q, Self> {
        Self::bind_id(Self::bind_id(q, user_id), provider)
    }

    /// How many rows a statement wrote (or, for MySQL, matched).
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// The id (user id or provider) in `column` of a row.
    fn decode_id(op: &'static str, row: &Self::Row, column: &'static str) -> Result<String>;

    /// The time in `column` of a row; `None` for null.
    fn decode_time(
        op: &'static str,
        row: &Self::Row,
        column: &'static str,
    ) -> Result<Option<DateTime<Utc>>>;
}

/// What a storage knows of the table's [`CHECK_COLUMN`], shared by its
/// clones.
#[derive(Debug, Clone, Copy)]
enum CheckColumn {
    /// Not read yet, or to be read again (after a failed statement).
    Unknown,
    /// The table has it: no more reads.
    Present,
    /// The table had none when its columns were read at this instant.
    Missing(Instant),
}

/// The [`CheckColumn`] of a table, read at most once per recheck interval
/// while missing, and never again once found.
#[derive(Debug)]
pub(crate) struct CheckColumnProbe(Mutex<CheckColumn>);

impl CheckColumnProbe {
    fn new() -> Arc<Self> {
        Arc::new(CheckColumnProbe(Mutex::new(CheckColumn::Unknown)))
    }

    fn get(&self) -> CheckColumn {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, state: CheckColumn) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }
}

/// The state of a storage on engine `D`; clones share the pool.
pub(crate) struct SqlStorage<D: Database> {
    pub(crate) pool: Pool<D>,
    pub(crate) table: TableName,
    pub(crate) sql: Arc<Statements>,
    timeout: Duration,
    check_column: Arc<CheckColumnProbe>,
    recheck: Duration,
}

impl<D: Database> Clone for SqlStorage<D> {
    fn clone(&self) -> Self {
        SqlStorage {
            pool: self.pool.clone(),
            table: self.table.clone(),
            sql: Arc::clone(&self.sql),
            timeout: self.timeout,
            check_column: Arc::clone(&self.check_column),
            recheck: self.recheck,
        }
    }
}

impl<D: Dialect> fmt::Debug for SqlStorage<D> {
    /// The engine and the table only: never the pool, whose options hold
    /// the connection string's password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.debug(f, "SqlStorage")
    }
}

impl<D: Dialect> SqlStorage<D> {
    /// The backend's name: `sqlite`, `postgres` or `mysql`.
    pub(crate) fn backend(&self) -> &'static str {
        D::ENGINE.name()
    }

    /// The `Debug` of the public type `name`.
    pub(crate) fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        f.debug_struct(name)
            .field("backend", &self.backend())
            .field("table", &self.table)
            .finish_non_exhaustive()
    }

    /// Runs `operation` under the operation deadline.
    async fn bounded<T>(
        &self,
        op: &'static str,
        operation: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        pool::bounded(D::ENGINE, op, self.timeout, operation).await
    }

    /// The error of operation `op`.
    fn fail(op: &'static str) -> impl Fn(sqlx::Error) -> byok_core::ByokError {
        move |e| error::storage(D::ENGINE, op, e)
    }
}

// What the operations need of an engine's sqlx types, which all three
// engines have; a trait cannot carry such bounds for its users, so they are
// spelled out here and on the `KeyStorage` impl below.
impl<D> SqlStorage<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'t> &'t [u8]: Encode<'t, D> + Type<D>,
    for<'t> Option<&'t str>: Encode<'t, D> + Type<D>,
    for<'t> i64: Encode<'t, D> + Type<D> + Decode<'t, D>,
    for<'t> Vec<u8>: Decode<'t, D> + Type<D>,
    usize: ColumnIndex<D::Row>,
    for<'t> &'t str: ColumnIndex<D::Row>,
    for<'t> String: Decode<'t, D> + Type<D>,
{
    /// A storage of `pool` on `table` (validated before connecting, so
    /// that a bad name is refused before any connection is made). Starts
    /// nothing and writes nothing.
    pub(crate) fn new(pool: Pool<D>, table: TableName) -> Self {
        SqlStorage {
            pool,
            sql: Arc::new(D::statements(&table)),
            table,
            timeout: pool::OPERATION_TIMEOUT,
            check_column: CheckColumnProbe::new(),
            recheck: SCHEMA_RECHECK,
        }
    }

    /// The same storage on another table.
    pub(crate) fn with_table_name(mut self, name: &str) -> Result<Self> {
        self.table = TableName::new(name)?;
        self.sql = Arc::new(D::statements(&self.table));
        self.check_column = CheckColumnProbe::new();
        Ok(self)
    }

    /// The same storage, reading the table's columns again at most every
    /// `every` while they lack the column of kept checks.
    pub(crate) fn with_schema_recheck(mut self, every: Duration) -> Self {
        self.recheck = every;
        self
    }

    /// Whether the table has the column of kept checks. Read from the
    /// table's columns on first use; once found, never read again; while
    /// missing, read again at most every `recheck`, so that a storage
    /// opened before `migrate` picks the column up without a restart.
    async fn has_check_column(&self, op: &'static str) -> Result<bool> {
        match self.check_column.get() {
            CheckColumn::Present => return Ok(true),
            CheckColumn::Missing(at) if at.elapsed() < self.recheck => return Ok(false),
            CheckColumn::Missing(_) | CheckColumn::Unknown => {}
        }
        let columns = retry(D::ENGINE, || self.columns(&self.pool))
            .await
            .map_err(Self::fail(op))?;
        let present = columns.iter().any(|c| c == CHECK_COLUMN);
        self.check_column.set(if present {
            CheckColumn::Present
        } else {
            CheckColumn::Missing(Instant::now())
        });
        Ok(present)
    }

    /// After `migrate`: the table has the column of kept checks.
    pub(crate) fn check_column_added(&self) {
        self.check_column.set(CheckColumn::Present);
    }

    /// After a statement on the column failed: read the columns again
    /// next time (the table may have been replaced by one without it).
    fn forget_check_column(&self) {
        self.check_column.set(CheckColumn::Unknown);
    }

    /// The same storage with another operation deadline.
    pub(crate) fn with_operation_timeout(mut self, timeout: Duration) -> Result<Self> {
        self.timeout = pool::operation_timeout(timeout)?;
        Ok(self)
    }

    /// A row of the `SELECT`s of keys, as a key. The user id and the
    /// provider are read from the row unless given (the statement then
    /// does not select them).
    fn decode(
        op: &'static str,
        r: &D::Row,
        user_id: Option<&str>,
        provider: Option<&str>,
    ) -> Result<ApiKey> {
        let id = |given: Option<&str>, column| match given {
            Some(id) => Ok(id.to_owned()),
            None => D::decode_id(op, r, column),
        };
        let row = row::KeyRow {
            user_id: id(user_id, "user_id")?,
            provider: id(provider, "provider")?,
            encrypted_value: r.try_get("encrypted_value").map_err(Self::fail(op))?,
            hint: r.try_get("hint").map_err(Self::fail(op))?,
            created_at: D::decode_time(op, r, "created_at")?.ok_or_else(|| {
                error::corrupt(D::ENGINE, op, "a stored created_at is null".to_owned())
            })?,
            expires_at: D::decode_time(op, r, "expires_at")?,
        };
        row::into_key(D::ENGINE, op, row)
    }

    /// Runs `statement`, which takes now and selects one count, under the
    /// operation deadline.
    async fn count_at_now(&self, op: &'static str, statement: &Arc<str>) -> Result<u64> {
        self.bounded(op, async {
            let now = key::now();
            let row = retry(D::ENGINE, || {
                D::bind_time(sqlx::query(sql(statement)), now).fetch_one(&self.pool)
            })
            .await
            .map_err(Self::fail(op))?;
            let n: i64 = row.try_get(0).map_err(Self::fail(op))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// See [`StoreAdmin::count_expired`](byok_core::StoreAdmin::count_expired).
    pub(crate) async fn count_expired(&self) -> Result<u64> {
        self.count_at_now("count_expired", &self.sql.admin.count_expired)
            .await
    }

    /// See [`StoreAdmin::count`](byok_core::StoreAdmin::count).
    pub(crate) async fn count(&self) -> Result<u64> {
        self.count_at_now("count", &self.sql.admin.count).await
    }

    /// See [`StoreAdmin::destroy`](byok_core::StoreAdmin::destroy).
    pub(crate) async fn destroy(&self) -> Result<()> {
        self.bounded("destroy", async {
            retry(D::ENGINE, || {
                sqlx::query(sql(&self.sql.admin.destroy)).execute(&self.pool)
            })
            .await
            .map_err(Self::fail("destroy"))?;
            Ok(())
        })
        .await
    }

    /// Where the table's layout stands, from its columns: `Missing` with
    /// none, `Older` (version 1) with the `id` column of byok-sql 0.1,
    /// `UpToDate` with every column of the current layout. A table that
    /// lacks one of those columns is not byok's: a `Corrupt` error names
    /// the column, as `migrate` cannot add it.
    pub(crate) async fn schema_status(&self) -> Result<SchemaStatus> {
        const OP: &str = "schema_status";
        let columns = self
            .bounded(OP, async {
                retry(D::ENGINE, || self.columns(&self.pool))
                    .await
                    .map_err(Self::fail(OP))
            })
            .await?;
        if columns.is_empty() {
            return Ok(SchemaStatus::Missing);
        }
        if let Some(missing) = COLUMNS
            .iter()
            .find(|c| !columns.iter().any(|have| have == *c))
        {
            return Err(error::corrupt(
                D::ENGINE,
                OP,
                format!("the table has no column `{missing}`, which migrate cannot add"),
            ));
        }
        if columns.iter().any(|c| c == "id") {
            return Ok(SchemaStatus::Older {
                found: 1,
                current: SCHEMA_VERSION,
            });
        }
        if !columns.iter().any(|c| c == CHECK_COLUMN) {
            return Ok(SchemaStatus::Older {
                found: 2,
                current: SCHEMA_VERSION,
            });
        }
        Ok(SchemaStatus::UpToDate)
    }

    /// The names of the table's columns, read through `executor`; none
    /// when there is no table.
    async fn columns<'e, E>(&self, executor: E) -> Result<Vec<String>, sqlx::Error>
    where
        E: Executor<'e, Database = D>,
    {
        let rows = D::bind_id(sqlx::query(D::COLUMNS), self.table.as_str())
            .fetch_all(executor)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<Vec<u8>, _>(0))
            .map(|name| name.map(|n| String::from_utf8_lossy(&n).into_owned()))
            .collect()
    }

    /// The first steps of every engine's `migrate`, on the connection
    /// that holds its lock: runs the schema statements, and tells whether
    /// the table has the `id` column of the first layout, which the
    /// engine then upgrades.
    pub(crate) async fn create_schema(
        &self,
        conn: &mut D::Connection,
    ) -> Result<bool, sqlx::Error> {
        for statement in &self.sql.schema {
            sqlx::query(sql(statement)).execute(&mut *conn).await?;
        }
        Ok(self.columns(&mut *conn).await?.iter().any(|c| c == "id"))
    }

    /// Runs `statements`, each of which may hold several, in order.
    pub(crate) async fn run_raw(
        &self,
        conn: &mut D::Connection,
        statements: impl IntoIterator<Item = String>,
    ) -> Result<(), sqlx::Error> {
        for statement in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Ends the migration of an engine that migrates in one transaction:
    /// adds the column of kept checks, commits, and notes the column.
    pub(crate) async fn finish_migration(
        &self,
        mut tx: sqlx::Transaction<'_, D>,
    ) -> Result<(), sqlx::Error> {
        self.add_check_column(&mut tx).await?;
        tx.commit().await?;
        self.check_column_added();
        Ok(())
    }

    /// The last step of every engine's `migrate`, on the connection that
    /// holds its lock, after the upgrade from the first layout: adds the
    /// column of kept checks unless the table has it. Another process's
    /// migration that added it first (without the same lock: an engine
    /// whose lock it did not take) is success too.
    pub(crate) async fn add_check_column(
        &self,
        conn: &mut D::Connection,
    ) -> Result<(), sqlx::Error> {
        let columns = self.columns(&mut *conn).await?;
        if !columns.iter().any(|c| c == CHECK_COLUMN) {
            match sqlx::query(sql(&self.sql.add_check_column))
                .execute(&mut *conn)
                .await
            {
                Ok(_) => {}
                Err(e) if error::is_duplicate_column(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Refuses, before anything is sent, a write whose encrypted values
    /// (`len` bytes in all) the column cannot hold or the server would not
    /// accept in one statement: the first would be cut short under a
    /// non-strict MySQL `sql_mode`, the second looks to the driver like a
    /// lost connection.
    async fn check_size(&self, op: &'static str, len: usize) -> Result<()> {
        if let Some(max) = D::MAX_VALUE_LEN
            && len > max
        {
            return Err(error::too_large(
                D::ENGINE,
                op,
                "the encrypted value",
                len,
                max,
            ));
        }
        if let Some(query) = D::PACKET_LIMIT
            && len > CHECK_PACKET_FROM
        {
            let limit: i64 = retry(D::ENGINE, || {
                sqlx::query_scalar(query).fetch_one(&self.pool)
            })
            .await
            .map_err(Self::fail(op))?;
            let max = usize::try_from(limit)
                .unwrap_or(0)
                .saturating_sub(STATEMENT_OVERHEAD);
            if len > max {
                return Err(error::too_large(
                    D::ENGINE,
                    op,
                    "the encrypted value (for max_allowed_packet)",
                    len,
                    max,
                ));
            }
        }
        Ok(())
    }

    /// Deletes expired keys in batches of at most [`PURGE_BATCH`], each
    /// under the operation deadline: the slots are read without locks,
    /// then deleted by primary key if still expired, so the delete locks
    /// rows in primary-key order (as every other statement does) and never
    /// locks the expiry index, which is what made whole-table purges
    /// deadlock with writes on MySQL.
    async fn purge_in_batches(&self, delete: &Arc<str>) -> Result<u64> {
        const OP: &str = "purge_expired";
        let now = key::now();
        let mut purged = 0;
        loop {
            let rows = self
                .bounded(OP, async {
                    retry(D::ENGINE, || {
                        D::bind_time(sqlx::query(sql(&self.sql.purge)), now)
                            .bind(row::limit(PURGE_BATCH))
                            .fetch_all(&self.pool)
                    })
                    .await
                    .map_err(Self::fail(OP))
                })
                .await?;
            let mut slots = rows
                .iter()
                .map(|r| Ok((r.try_get::<Vec<u8>, _>(0)?, r.try_get::<Vec<u8>, _>(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(Self::fail(OP))?;
            let Some(last) = slots.last().cloned() else {
                return Ok(purged);
            };
            let full = slots.len() == PURGE_BATCH;
            slots.sort_unstable();
            // A short batch repeats its last slot, so that every batch is
            // the same prepared statement.
            slots.resize(PURGE_BATCH, last);
            let done = self
                .bounded(OP, async {
                    retry(D::ENGINE, || {
                        let mut q = sqlx::query(sql(delete));
                        for (user_id, provider) in &slots {
                            q = q.bind(user_id.as_slice()).bind(provider.as_slice());
                        }
                        D::bind_time(q, now).execute(&self.pool)
                    })
                    .await
                    .map_err(Self::fail(OP))
                })
                .await?;
            let deleted = D::rows_affected(&done);
            purged += deleted;
            // Keys stored again meanwhile are no longer expired; if a
            // whole batch was, stop here rather than go round again.
            if !full || deleted == 0 {
                return Ok(purged);
            }
        }
    }

    /// The row of the slot's unexpired key, read by `statement` (which
    /// takes user, provider, now), after checking the ids.
    async fn fetch_live_slot(
        &self,
        op: &'static str,
        statement: &Arc<str>,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<D::Row>> {
        validate::stored_slot(user_id, provider)?;
        let now = key::now();
        retry(D::ENGINE, || {
            let q = sqlx::query(sql(statement));
            D::bind_time(D::bind_id(D::bind_id(q, user_id), provider), now)
                .fetch_optional(&self.pool)
        })
        .await
        .map_err(Self::fail(op))
    }
}

#[async_trait]
impl<D> KeyStorage for SqlStorage<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'t> &'t [u8]: Encode<'t, D> + Type<D>,
    for<'t> Option<&'t str>: Encode<'t, D> + Type<D>,
    for<'t> i64: Encode<'t, D> + Type<D> + Decode<'t, D>,
    for<'t> Vec<u8>: Decode<'t, D> + Type<D>,
    usize: ColumnIndex<D::Row>,
    for<'t> &'t str: ColumnIndex<D::Row>,
    for<'t> String: Decode<'t, D> + Type<D>,
{
    async fn store(&self, k: &ApiKey) -> Result<()> {
        self.bounded("store", async {
            self.check_size("store", k.encrypted_value().len()).await?;
            retry(D::ENGINE, || {
                let q = sqlx::query(sql(&self.sql.store));
                let q = D::bind_id(D::bind_id(q, k.user_id()), k.provider())
                    .bind(k.encrypted_value())
                    .bind(k.hint());
                D::bind_expiry(D::bind_time(q, k.created_at()), k.expires_at()).execute(&self.pool)
            })
            .await
            .map_err(Self::fail("store"))?;
            Ok(())
        })
        .await
    }

    async fn store_if_absent(&self, k: &ApiKey) -> Result<bool> {
        const OP: &str = "store_if_absent";
        self.bounded(OP, async {
            self.check_size(OP, k.encrypted_value().len()).await?;
            let now = key::now();
            let bind_key = |q| {
                let q = D::bind_id(D::bind_id(q, k.user_id()), k.provider())
                    .bind(k.encrypted_value())
                    .bind(k.hint());
                D::bind_expiry(D::bind_time(q, k.created_at()), k.expires_at())
            };
            let Some(replace) = &self.sql.replace_expired else {
                let done = retry(D::ENGINE, || {
                    D::bind_time(bind_key(sqlx::query(sql(&self.sql.insert))), now)
                        .execute(&self.pool)
                })
                .await
                .map_err(Self::fail(OP))?;
                return Ok(D::rows_affected(&done) == 1);
            };
            // Two statements, each atomic for the slot: the first replaces
            // an expired key, the second inserts into an empty slot and is
            // refused by the primary key otherwise. Of racing calls, each
            // success either took the one expired row or created the row.
            let done = retry(D::ENGINE, || {
                let q = sqlx::query(sql(replace))
                    .bind(k.encrypted_value())
                    .bind(k.hint());
                let q = D::bind_expiry(D::bind_time(q, k.created_at()), k.expires_at());
                D::bind_time(D::bind_id(D::bind_id(q, k.user_id()), k.provider()), now)
                    .execute(&self.pool)
            })
            .await
            .map_err(Self::fail(OP))?;
            if D::rows_affected(&done) == 1 {
                return Ok(true);
            }
            match retry(D::ENGINE, || {
                bind_key(sqlx::query(sql(&self.sql.insert))).execute(&self.pool)
            })
            .await
            {
                Ok(_) => Ok(true),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                Err(e) => Err(Self::fail(OP)(e)),
            }
        })
        .await
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        const OP: &str = "retrieve";
        self.bounded(OP, async {
            let row = self
                .fetch_live_slot(OP, &self.sql.retrieve, user_id, provider)
                .await?;
            row.map(|r| Self::decode(OP, &r, Some(user_id), Some(provider)))
                .transpose()
        })
        .await
    }

    async fn retrieve_value(&self, user_id: &str, provider: &str) -> Result<Option<Arc<[u8]>>> {
        const OP: &str = "retrieve_value";
        self.bounded(OP, async {
            let row = self
                .fetch_live_slot(OP, &self.sql.retrieve_value, user_id, provider)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let value: Vec<u8> = row.try_get(0).map_err(Self::fail(OP))?;
            Ok(Some(Arc::from(value)))
        })
        .await
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        self.bounded("delete", async {
            validate::stored_slot(user_id, provider)?;
            let done = retry(D::ENGINE, || {
                let q = sqlx::query(sql(&self.sql.delete));
                D::bind_id(D::bind_id(q, user_id), provider).execute(&self.pool)
            })
            .await
            .map_err(Self::fail("delete"))?;
            Ok(D::rows_affected(&done) > 0)
        })
        .await
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.bounded("list_providers", async {
            validate::stored_user_id(user_id)?;
            let now = key::now();
            let rows = retry(D::ENGINE, || {
                let q = sqlx::query(sql(&self.sql.list));
                D::bind_time(D::bind_id(q, user_id), now).fetch_all(&self.pool)
            })
            .await
            .map_err(Self::fail("list_providers"))?;
            rows.iter()
                .map(|r| D::decode_id("list_providers", r, "provider"))
                .collect()
        })
        .await
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        self.bounded("clear_all", async {
            validate::stored_user_id(user_id)?;
            let done = retry(D::ENGINE, || {
                D::bind_id(sqlx::query(sql(&self.sql.clear)), user_id).execute(&self.pool)
            })
            .await
            .map_err(Self::fail("clear_all"))?;
            Ok(D::rows_affected(&done))
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        if let Some(delete) = &self.sql.purge_batch {
            return self.purge_in_batches(delete).await;
        }
        self.bounded("purge_expired", async {
            let now = key::now();
            let done = retry(D::ENGINE, || {
                D::bind_time(sqlx::query(sql(&self.sql.purge)), now).execute(&self.pool)
            })
            .await
            .map_err(Self::fail("purge_expired"))?;
            Ok(D::rows_affected(&done))
        })
        .await
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        self.bounded("compare_and_swap", async {
            check_same_slot(current, new)?;
            let len = current
                .encrypted_value()
                .len()
                .saturating_add(new.encrypted_value().len());
            self.check_size("compare_and_swap", new.encrypted_value().len())
                .await?;
            self.check_size("compare_and_swap", len).await?;
            let now = key::now();
            let done = retry(D::ENGINE, || {
                let q = sqlx::query(sql(&self.sql.swap))
                    .bind(new.encrypted_value())
                    .bind(new.hint());
                let q = D::bind_expiry(D::bind_time(q, new.created_at()), new.expires_at());
                let q = D::bind_id(D::bind_id(q, current.user_id()), current.provider())
                    .bind(current.encrypted_value());
                D::bind_time(q, now).execute(&self.pool)
            })
            .await
            .map_err(Self::fail("compare_and_swap"))?;
            // MySQL counts matched rows here, not changed ones: sqlx always
            // connects with CLIENT_FOUND_ROWS.
            Ok(D::rows_affected(&done) == 1)
        })
        .await
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.bounded("scan", async {
            validate::page_size(limit)?;
            let after = cursor.map(row::cursor_slot).transpose()?;
            let now = key::now();
            let rows = retry(D::ENGINE, || {
                let q = match after {
                    Some((user_id, provider)) => {
                        D::bind_after(sqlx::query(sql(&self.sql.scan_after)), user_id, provider)
                    }
                    None => sqlx::query(sql(&self.sql.scan_first)),
                };
                D::bind_time(q, now)
                    .bind(row::limit(limit))
                    .fetch_all(&self.pool)
            })
            .await
            .map_err(Self::fail("scan"))?;
            let keys = rows
                .iter()
                .map(|r| Self::decode("scan", r, None, None))
                .collect::<Result<Vec<_>>>()?;
            Ok(crate::page(keys, limit))
        })
        .await
    }

    async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
        const OP: &str = "store_check";
        self.bounded(OP, async {
            validate::stored_slot(user_id, provider)?;
            if check.len() > MAX_ENCODED_LEN {
                return Err(error::too_large(
                    D::ENGINE,
                    OP,
                    "the check",
                    check.len(),
                    MAX_ENCODED_LEN,
                ));
            }
            if !self.has_check_column(OP).await? {
                return Err(error::schema_older(D::ENGINE, OP));
            }
            let done = retry(D::ENGINE, || {
                let q = sqlx::query(sql(&self.sql.store_check)).bind(Some(check));
                D::bind_id(D::bind_id(q, user_id), provider).execute(&self.pool)
            })
            .await
            .map_err(|e| {
                self.forget_check_column();
                Self::fail(OP)(e)
            })?;
            // MySQL counts matched rows, as the others do for an UPDATE:
            // a check equal to the one kept still finds its key.
            Ok(D::rows_affected(&done) > 0)
        })
        .await
    }

    async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        const OP: &str = "checks";
        self.bounded(OP, async {
            validate::stored_user_id(user_id)?;
            // A table of an earlier layout keeps no checks.
            if !self.has_check_column(OP).await? {
                return Ok(Vec::new());
            }
            let rows = retry(D::ENGINE, || {
                D::bind_id(sqlx::query(sql(&self.sql.checks)), user_id).fetch_all(&self.pool)
            })
            .await
            .map_err(|e| {
                self.forget_check_column();
                Self::fail(OP)(e)
            })?;
            rows.iter()
                .map(|r| {
                    let provider = D::decode_id(OP, r, "provider")?;
                    let check: String = r.try_get(1).map_err(Self::fail(OP))?;
                    Ok((provider, check))
                })
                .collect()
        })
        .await
    }

    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.bounded("user_keys", async {
            validate::stored_user_id(user_id)?;
            let rows = retry(D::ENGINE, || {
                D::bind_id(sqlx::query(sql(&self.sql.user_keys)), user_id).fetch_all(&self.pool)
            })
            .await
            .map_err(Self::fail("user_keys"))?;
            rows.iter()
                .map(|r| Self::decode("user_keys", r, Some(user_id), None))
                .collect()
        })
        .await
    }
}

/// The part of each engine's public type that is the same for all three:
/// the type wraps a [`SqlStorage`] of its engine in a field `inner`, and
/// this adds `from_pool`, the builder methods, `pool`, `table_name`, a
/// `Debug` that shows no connection details, and [`KeyStorage`].
/// The schema statements of the table `name` in the dialect of `Pool<D>`.
pub(crate) fn schema_sql<D: Dialect>(
    name: &str,
    _pool: std::marker::PhantomData<Pool<D>>,
) -> Result<Vec<String>> {
    let table = TableName::new(name)?;
    Ok(D::statements(&table)
        .schema
        .iter()
        .map(|s| s.to_string())
        .collect())
}

macro_rules! public_storage {
    ($name:ident, $pool:ty) => {
        $crate::storage::public_storage!(@common $name, $pool, {});

        impl $name {
            /// `retrieve_value`, by sqlx.
            async fn read_value(
                &self,
                user_id: &str,
                provider: &str,
            ) -> byok_core::Result<Option<std::sync::Arc<[u8]>>> {
                byok_core::KeyStorage::retrieve_value(&self.inner, user_id, provider).await
            }
        }
    };
    // The type has more fields, each set to its default by `from_pool`,
    // and its own `read_value`.
    ($name:ident, $pool:ty, { $($field:ident: $default:expr),* }) => {
        $crate::storage::public_storage!(@common $name, $pool, { $($field: $default),* });
    };
    (@common $name:ident, $pool:ty, { $($field:ident: $default:expr),* }) => {
        impl $name {
            /// Uses a pool you configured, and the table `config.db_table_name`.
            ///
            /// Sends nothing to the database and starts no task: expired
            /// keys are purged by the manager's
            /// [`purge_every`](byok_core::store::purge_every) (see
            /// [`ByokConfig::auto_cleanup`](byok_core::ByokConfig::auto_cleanup)),
            /// or by a call to `purge_expired`.
            pub fn from_pool(
                pool: $pool,
                config: &byok_core::ByokConfig,
            ) -> byok_core::Result<Self> {
                let table = $crate::table::TableName::new(&config.db_table_name)?;
                Ok($name {
                    inner: $crate::storage::SqlStorage::new(pool, table),
                    $($field: $default),*
                })
            }

            /// The same storage on another table of the same database.
            ///
            /// Fails with a [`ConfigError`](byok_core::ConfigError) unless
            /// `name` is a plain identifier (see the
            /// [crate docs](crate#table-names)).
            pub fn with_table_name(mut self, name: &str) -> byok_core::Result<Self> {
                self.inner = self.inner.with_table_name(name)?;
                Ok(self)
            }

            /// The same storage with another deadline for each operation of
            /// [`KeyStorage`](byok_core::KeyStorage) (10 s by default), after
            /// which it fails with a retryable
            /// [`Timeout`](byok_core::StorageErrorKind::Timeout).
            ///
            /// The deadline covers waiting for a connection and the
            /// statement's round trip, so a server that vanished without
            /// closing the connection fails the call instead of holding it
            /// until the kernel gives up on the socket (many minutes). Use
            /// `Duration::MAX` for no deadline. Fails with a
            /// [`ConfigError`](byok_core::ConfigError) for a zero duration,
            /// which would fail every operation.
            pub fn with_operation_timeout(
                mut self,
                timeout: std::time::Duration,
            ) -> byok_core::Result<Self> {
                self.inner = self.inner.with_operation_timeout(timeout)?;
                Ok(self)
            }

            /// The same storage, reading the table's columns again at most
            /// every `every` (60 s by default) while the table lacks the
            /// column of kept checks, which `migrate` adds.
            ///
            /// Until then, `checks` finds none and `store_check` fails with
            /// a `Rejected` error that asks for `byok migrate`; every other
            /// operation works as on the current layout. A storage reads
            /// the columns once, when it is first asked about checks, and
            /// never again once it has found the column; this interval is
            /// how soon an instance started before the migration picks the
            /// column up without a restart.
            pub fn with_schema_recheck(mut self, every: std::time::Duration) -> Self {
                self.inner = self.inner.with_schema_recheck(every);
                self
            }

            /// The connection pool.
            pub fn pool(&self) -> &$pool {
                &self.inner.pool
            }

            /// The table the keys live in.
            pub fn table_name(&self) -> &str {
                self.inner.table.as_str()
            }

            /// The statements that [`migrate`](Self::migrate) runs to
            /// create the table `name` and its index, for review or to run
            /// by hand (`byok migrate --print-sql`); upgrading a table of an
            /// earlier layout takes more, which only `migrate` runs (for a
            /// table of the layout before kept checks, by hand: `ALTER
            /// TABLE <name> ADD COLUMN last_check TEXT`, on MySQL with
            /// `CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL`). Fails
            /// with a [`ConfigError`](byok_core::ConfigError) unless `name`
            /// is a plain identifier.
            pub fn schema_sql(name: &str) -> byok_core::Result<Vec<String>> {
                $crate::storage::schema_sql(name, std::marker::PhantomData::<$pool>)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.inner.debug(f, stringify!($name))
            }
        }

        /// The table's admin side: [`migrate`](Self::migrate), a
        /// read-only `schema_status` (from the table's columns: see
        /// the [crate docs](crate#schema-status)), counts in one `SELECT
        /// COUNT(*)` each, and `destroy`, which drops the table.
        #[async_trait::async_trait]
        impl byok_core::StoreAdmin for $name {
            fn backend(&self) -> &'static str {
                self.inner.backend()
            }
            async fn migrate(&self) -> byok_core::Result<()> {
                $name::migrate(self).await
            }
            async fn schema_status(&self) -> byok_core::Result<byok_core::store::SchemaStatus> {
                self.inner.schema_status().await
            }
            async fn count_expired(&self) -> byok_core::Result<Option<u64>> {
                self.inner.count_expired().await.map(Some)
            }
            async fn count(&self) -> byok_core::Result<u64> {
                self.inner.count().await
            }
            async fn destroy(&self) -> byok_core::Result<()> {
                self.inner.destroy().await
            }
        }

        #[async_trait::async_trait]
        impl byok_core::KeyStorage for $name {
            async fn store(&self, key: &byok_core::ApiKey) -> byok_core::Result<()> {
                self.inner.store(key).await
            }
            async fn store_if_absent(&self, key: &byok_core::ApiKey) -> byok_core::Result<bool> {
                self.inner.store_if_absent(key).await
            }
            async fn retrieve(
                &self,
                user_id: &str,
                provider: &str,
            ) -> byok_core::Result<Option<byok_core::ApiKey>> {
                self.inner.retrieve(user_id, provider).await
            }
            async fn retrieve_value(
                &self,
                user_id: &str,
                provider: &str,
            ) -> byok_core::Result<Option<std::sync::Arc<[u8]>>> {
                self.read_value(user_id, provider).await
            }
            async fn delete(&self, user_id: &str, provider: &str) -> byok_core::Result<bool> {
                self.inner.delete(user_id, provider).await
            }
            async fn list_providers(&self, user_id: &str) -> byok_core::Result<Vec<String>> {
                self.inner.list_providers(user_id).await
            }
            async fn clear_all(&self, user_id: &str) -> byok_core::Result<u64> {
                self.inner.clear_all(user_id).await
            }
            async fn purge_expired(&self) -> byok_core::Result<u64> {
                self.inner.purge_expired().await
            }
            async fn compare_and_swap(
                &self,
                current: &byok_core::ApiKey,
                new: &byok_core::ApiKey,
            ) -> byok_core::Result<bool> {
                self.inner.compare_and_swap(current, new).await
            }
            async fn scan(
                &self,
                cursor: Option<&byok_core::Cursor>,
                limit: usize,
            ) -> byok_core::Result<byok_core::ScanPage> {
                self.inner.scan(cursor, limit).await
            }
            async fn user_keys(&self, user_id: &str) -> byok_core::Result<Vec<byok_core::ApiKey>> {
                self.inner.user_keys(user_id).await
            }
            async fn store_check(
                &self,
                user_id: &str,
                provider: &str,
                check: &str,
            ) -> byok_core::Result<bool> {
                self.inner.store_check(user_id, provider, check).await
            }
            async fn checks(
                &self,
                user_id: &str,
            ) -> byok_core::Result<Vec<(String, String)>> {
                self.inner.checks(user_id).await
            }
        }
    };
}

pub(crate) use public_storage;

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements of every operation but checks, which are those of
    /// the version before kept checks: none names `last_check`, reads
    /// `*` or inserts without naming its columns, so they work the same on
    /// a table with or without the column, and the earlier versions that
    /// run them keep working on a migrated table. (A cached prepared
    /// statement that reads `*` is what PostgreSQL refuses after a column
    /// is added: "cached plan must not change result type".)
    fn earlier_statements_name_their_columns<D: Dialect>() {
        let table = TableName::new("t").expect("a table name");
        let s = D::statements(&table);
        let mut earlier: Vec<&Arc<str>> = vec![
            &s.store,
            &s.insert,
            &s.retrieve,
            &s.retrieve_value,
            &s.delete,
            &s.list,
            &s.clear,
            &s.purge,
            &s.user_keys,
            &s.swap,
            &s.scan_first,
            &s.scan_after,
            &s.admin.count_expired,
            &s.admin.count,
        ];
        earlier.extend(s.replace_expired.iter());
        earlier.extend(s.purge_batch.iter());
        for statement in earlier {
            assert!(!statement.contains(CHECK_COLUMN), "{statement}");
            assert!(
                !statement.replace("COUNT(*)", "").contains('*'),
                "{statement}"
            );
            if statement.starts_with("INSERT") {
                assert!(
                    statement.starts_with("INSERT INTO t (user_id, "),
                    "{statement}"
                );
            }
        }
        assert!(s.store_check.contains(CHECK_COLUMN));
        assert!(s.checks.contains(CHECK_COLUMN));
        assert!(s.add_check_column.contains(CHECK_COLUMN));
        assert!(s.schema[0].contains(CHECK_COLUMN), "{}", s.schema[0]);
    }

    #[test]
    fn statements_of_earlier_operations_do_not_depend_on_the_check_column() {
        #[cfg(feature = "sqlite")]
        earlier_statements_name_their_columns::<sqlx::Sqlite>();
        #[cfg(feature = "postgres")]
        earlier_statements_name_their_columns::<sqlx::Postgres>();
        #[cfg(feature = "mysql")]
        earlier_statements_name_their_columns::<sqlx::MySql>();
    }
}
