//! What the three engines share: the state of a storage, its builder
//! steps, and the eight operations of [`KeyStorage`], written once over a
//! [`Dialect`] that says how each engine spells its SQL and its values.
//!
//! Each public type (`SqliteStorage`, …) wraps a [`SqlStorage`] of its
//! engine and adds what is its own: `connect` and `migrate`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use byok_core::chrono::{DateTime, Utc};
use byok_core::storage::check_same_slot;
use byok_core::{ApiKey, ByokConfig, Cursor, KeyStorage, Result, ScanPage, key, validate};
use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use crate::error::{self, Engine};
use crate::pool;
use crate::row;
use crate::sweeper::Sweeper;
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
    /// User, provider, now.
    pub(crate) retrieve: Arc<str>,
    /// User, provider.
    pub(crate) delete: Arc<str>,
    /// User, now; selects `provider` only.
    pub(crate) list: Arc<str>,
    /// User.
    pub(crate) clear: Arc<str>,
    /// Now.
    pub(crate) purge: Arc<str>,
    /// New value, hint, created, expires; user, provider, current value, now.
    pub(crate) swap: Arc<str>,
    /// Now, limit.
    pub(crate) scan_first: Arc<str>,
    /// [`Dialect::bind_after`], now, limit.
    pub(crate) scan_after: Arc<str>,
}

/// How one engine writes its statements and its values, and reads its rows.
pub(crate) trait Dialect: Database {
    /// The engine, for errors.
    const ENGINE: Engine;

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

    /// A row of the `SELECT`s of keys, as a key.
    fn decode(op: &'static str, row: &Self::Row) -> Result<ApiKey>;

    /// A row of the `SELECT` of `list_providers`, as a provider.
    fn decode_provider(row: &Self::Row) -> Result<String>;
}

/// The state of a storage on engine `D`; clones share the pool.
pub(crate) struct SqlStorage<D: Database> {
    pub(crate) pool: Pool<D>,
    pub(crate) table: TableName,
    pub(crate) sql: Arc<Statements>,
    sweeper: Option<Arc<Sweeper>>,
    timeout: Duration,
}

impl<D: Database> Clone for SqlStorage<D> {
    fn clone(&self) -> Self {
        SqlStorage {
            pool: self.pool.clone(),
            table: self.table.clone(),
            sql: Arc::clone(&self.sql),
            sweeper: self.sweeper.clone(),
            timeout: self.timeout,
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
    /// The `Debug` of the public type `name`.
    pub(crate) fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        f.debug_struct(name)
            .field("backend", &D::ENGINE.name())
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
    for<'t> i64: Encode<'t, D> + Type<D>,
{
    /// A storage of `pool` on `table` (validated before connecting, so
    /// that a bad name is refused before any connection is made), with the
    /// background purge if `config.auto_cleanup` asks for it.
    pub(crate) fn new(pool: Pool<D>, table: TableName, config: &ByokConfig) -> Result<Self> {
        let mut store = SqlStorage {
            pool,
            sql: Arc::new(D::statements(&table)),
            table,
            sweeper: None,
            timeout: pool::OPERATION_TIMEOUT,
        };
        if config.auto_cleanup {
            // Started on a clone without a sweeper, so that the task does
            // not keep itself alive.
            store.sweeper = Some(Arc::new(Sweeper::start(
                store.clone(),
                pool::SWEEP_INTERVAL,
            )?));
        }
        Ok(store)
    }

    /// The same storage on another table.
    pub(crate) fn with_table_name(mut self, name: &str) -> Result<Self> {
        self.table = TableName::new(name)?;
        self.sql = Arc::new(D::statements(&self.table));
        Ok(self.restart_sweeper())
    }

    /// The same storage with another operation deadline.
    pub(crate) fn with_operation_timeout(mut self, timeout: Duration) -> Result<Self> {
        self.timeout = pool::operation_timeout(timeout)?;
        Ok(self.restart_sweeper())
    }

    /// Points the background purge, if any, at this storage as it now is.
    fn restart_sweeper(mut self) -> Self {
        if let Some(sweeper) = self.sweeper.take() {
            self.sweeper = Some(Arc::new(sweeper.restart(self.clone())));
        }
        self
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
    for<'t> i64: Encode<'t, D> + Type<D>,
{
    async fn store(&self, k: &ApiKey) -> Result<()> {
        self.bounded("store", async {
            let q = sqlx::query(sql(&self.sql.store));
            let q = D::bind_id(D::bind_id(q, k.user_id()), k.provider())
                .bind(k.encrypted_value())
                .bind(k.hint());
            D::bind_expiry(D::bind_time(q, k.created_at()), k.expires_at())
                .execute(&self.pool)
                .await
                .map_err(Self::fail("store"))?;
            Ok(())
        })
        .await
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        self.bounded("retrieve", async {
            validate::slot(user_id, provider)?;
            let q = sqlx::query(sql(&self.sql.retrieve));
            let row = D::bind_time(D::bind_id(D::bind_id(q, user_id), provider), key::now())
                .fetch_optional(&self.pool)
                .await
                .map_err(Self::fail("retrieve"))?;
            row.map(|r| D::decode("retrieve", &r)).transpose()
        })
        .await
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        self.bounded("delete", async {
            validate::slot(user_id, provider)?;
            let q = sqlx::query(sql(&self.sql.delete));
            let done = D::bind_id(D::bind_id(q, user_id), provider)
                .execute(&self.pool)
                .await
                .map_err(Self::fail("delete"))?;
            Ok(D::rows_affected(&done) > 0)
        })
        .await
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.bounded("list_providers", async {
            validate::user_id(user_id)?;
            let q = sqlx::query(sql(&self.sql.list));
            let rows = D::bind_time(D::bind_id(q, user_id), key::now())
                .fetch_all(&self.pool)
                .await
                .map_err(Self::fail("list_providers"))?;
            rows.iter().map(D::decode_provider).collect()
        })
        .await
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        self.bounded("clear_all", async {
            validate::user_id(user_id)?;
            let q = sqlx::query(sql(&self.sql.clear));
            let done = D::bind_id(q, user_id)
                .execute(&self.pool)
                .await
                .map_err(Self::fail("clear_all"))?;
            Ok(D::rows_affected(&done))
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.bounded("purge_expired", async {
            let q = sqlx::query(sql(&self.sql.purge));
            let done = D::bind_time(q, key::now())
                .execute(&self.pool)
                .await
                .map_err(Self::fail("purge_expired"))?;
            Ok(D::rows_affected(&done))
        })
        .await
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        self.bounded("compare_and_swap", async {
            check_same_slot(current, new)?;
            let q = sqlx::query(sql(&self.sql.swap))
                .bind(new.encrypted_value())
                .bind(new.hint());
            let q = D::bind_expiry(D::bind_time(q, new.created_at()), new.expires_at());
            let q = D::bind_id(D::bind_id(q, current.user_id()), current.provider())
                .bind(current.encrypted_value());
            let done = D::bind_time(q, key::now())
                .execute(&self.pool)
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
            let after = cursor.map(Cursor::slot).transpose()?;
            let q = match after {
                Some((user_id, provider)) => {
                    D::bind_after(sqlx::query(sql(&self.sql.scan_after)), user_id, provider)
                }
                None => sqlx::query(sql(&self.sql.scan_first)),
            };
            let rows = D::bind_time(q, key::now())
                .bind(row::limit(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(Self::fail("scan"))?;
            let keys = rows
                .iter()
                .map(|r| D::decode("scan", r))
                .collect::<Result<Vec<_>>>()?;
            Ok(crate::page(keys, limit))
        })
        .await
    }
}

/// The part of each engine's public type that is the same for all three:
/// the type wraps a [`SqlStorage`] of its engine in a field `inner`, and
/// this adds `from_pool`, the builder methods, `pool`, `table_name`, a
/// `Debug` that shows no connection details, and [`KeyStorage`].
macro_rules! public_storage {
    ($name:ident, $pool:ty) => {
        impl $name {
            /// Uses a pool you configured, and the table `config.db_table_name`.
            ///
            /// With `config.auto_cleanup` on, this starts the background purge
            /// (see [`connect`](Self::connect)) and so must be called within a
            /// Tokio runtime.
            pub fn from_pool(
                pool: $pool,
                config: &byok_core::ByokConfig,
            ) -> byok_core::Result<Self> {
                let table = $crate::table::TableName::new(&config.db_table_name)?;
                Ok($name {
                    inner: $crate::storage::SqlStorage::new(pool, table, config)?,
                })
            }

            /// The same storage on another table of the same database.
            ///
            /// Fails with a [`ConfigError`](byok_core::ConfigError) unless
            /// `name` is a plain identifier (see the
            /// [crate docs](crate#table-names)).
            pub fn with_table_name(self, name: &str) -> byok_core::Result<Self> {
                Ok($name {
                    inner: self.inner.with_table_name(name)?,
                })
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
                self,
                timeout: std::time::Duration,
            ) -> byok_core::Result<Self> {
                Ok($name {
                    inner: self.inner.with_operation_timeout(timeout)?,
                })
            }

            /// The connection pool.
            pub fn pool(&self) -> &$pool {
                &self.inner.pool
            }

            /// The table the keys live in.
            pub fn table_name(&self) -> &str {
                self.inner.table.as_str()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.inner.debug(f, stringify!($name))
            }
        }

        #[async_trait::async_trait]
        impl byok_core::KeyStorage for $name {
            async fn store(&self, key: &byok_core::ApiKey) -> byok_core::Result<()> {
                self.inner.store(key).await
            }
            async fn retrieve(
                &self,
                user_id: &str,
                provider: &str,
            ) -> byok_core::Result<Option<byok_core::ApiKey>> {
                self.inner.retrieve(user_id, provider).await
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
        }
    };
}

pub(crate) use public_storage;
