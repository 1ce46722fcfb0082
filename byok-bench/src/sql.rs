//! Hand-written SQL stores: a table keyed by (user_id, provider), a pool
//! without a ping before each query, one statement per call.

use std::sync::Arc;

use byok::byok_sql::sqlx::{self, AssertSqlSafe};

use crate::hand::{HandStore, Record, now_ms};
use crate::harness::BResult;

/// The statements of one engine, with the table name in them.
#[derive(Debug)]
pub(crate) struct Statements {
    schema: Vec<Arc<str>>,
    read: Arc<str>,
    write: Arc<str>,
    list: Arc<str>,
    clear: Arc<str>,
    purge: Arc<str>,
    all: Arc<str>,
    swap: Arc<str>,
    drop: Arc<str>,
}

/// Which SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// Numbers `?` placeholders as `$1`, `$2`, … for PostgreSQL.
fn numbered(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len() + 8);
    let mut n = 0;
    for c in statement.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

impl Statements {
    pub(crate) fn new(dialect: Dialect, table: &str) -> Self {
        let fix = |s: String| -> Arc<str> {
            match dialect {
                Dialect::Postgres => numbered(&s).into(),
                _ => s.into(),
            }
        };
        let (text, blob) = match dialect {
            Dialect::Sqlite => ("TEXT", "BLOB"),
            Dialect::Postgres => ("TEXT", "BYTEA"),
            Dialect::MySql => ("VARCHAR(255)", "BLOB"),
        };
        let create = match dialect {
            Dialect::MySql => format!(
                "CREATE TABLE {table} (user_id VARCHAR(255) NOT NULL, provider VARCHAR(64) NOT NULL, \
                 value BLOB NOT NULL, hint VARCHAR(64), created_at BIGINT NOT NULL, expires_at BIGINT, \
                 PRIMARY KEY (user_id, provider), INDEX (expires_at)) \
                 ENGINE=InnoDB CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ),
            _ => format!(
                "CREATE TABLE {table} (user_id {text} NOT NULL, provider {text} NOT NULL, \
                 value {blob} NOT NULL, hint {text}, created_at BIGINT NOT NULL, expires_at BIGINT, \
                 PRIMARY KEY (user_id, provider))"
            ),
        };
        let mut schema = vec![fix(create)];
        if dialect != Dialect::MySql {
            schema.push(fix(format!(
                "CREATE INDEX {table}_expires ON {table} (expires_at)"
            )));
        }
        let upsert = match dialect {
            Dialect::MySql => "ON DUPLICATE KEY UPDATE value = VALUES(value), hint = VALUES(hint), \
                 created_at = VALUES(created_at), expires_at = VALUES(expires_at)"
                .to_owned(),
            _ => "ON CONFLICT (user_id, provider) DO UPDATE SET value = excluded.value, \
                 hint = excluded.hint, created_at = excluded.created_at, expires_at = excluded.expires_at"
                .to_owned(),
        };
        Statements {
            schema,
            read: fix(format!(
                "SELECT value FROM {table} WHERE user_id = ? AND provider = ? \
                 AND (expires_at IS NULL OR expires_at > ?)"
            )),
            write: fix(format!(
                "INSERT INTO {table} (user_id, provider, value, hint, created_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?) {upsert}"
            )),
            list: fix(format!(
                "SELECT provider FROM {table} WHERE user_id = ? \
                 AND (expires_at IS NULL OR expires_at > ?) ORDER BY provider"
            )),
            clear: fix(format!("DELETE FROM {table} WHERE user_id = ?")),
            purge: fix(format!("DELETE FROM {table} WHERE expires_at <= ?")),
            all: fix(format!("SELECT user_id, provider, value FROM {table}")),
            swap: fix(format!(
                "UPDATE {table} SET value = ? WHERE user_id = ? AND provider = ? AND value = ?"
            )),
            drop: fix(format!("DROP TABLE IF EXISTS {table}")),
        }
    }
}

/// One `INSERT … SELECT` that writes `n` keys of other users into `table`
/// (whose value column is `value_column`), user ids `{namespace}other-{i}`
/// for `i` in `0..n`, every tenth expiring soon: the rows that the scaling
/// rows need, in seconds where a million writes through either API take
/// minutes. The numbers come from a cross join of digit tables, which all
/// three engines accept. Binds: namespace, value, hint, created, expiry of
/// the expiring tenth, expiry of the rest, `n`.
pub(crate) fn bulk_statement(
    dialect: Dialect,
    table: &str,
    value_column: &str,
    n: usize,
) -> String {
    let digits = format!(
        "(SELECT 0 AS x{})",
        (1..10)
            .map(|d| format!(" UNION ALL SELECT {d}"))
            .collect::<String>()
    );
    let places = n.saturating_sub(1).max(1).to_string().len();
    let from = (0..places)
        .map(|p| format!("{digits} d{p}"))
        .collect::<Vec<_>>()
        .join(" CROSS JOIN ");
    let i = (0..places)
        .map(|p| format!("{} * d{p}.x", 10u64.pow(p as u32)))
        .collect::<Vec<_>>()
        .join(" + ");
    let id = match dialect {
        Dialect::MySql => format!("CONCAT(?, 'other-', {i})"),
        _ => format!("(? || 'other-' || CAST({i} AS TEXT))"),
    };
    let statement = format!(
        "INSERT INTO {table} (user_id, provider, {value_column}, hint, created_at, expires_at) \
         SELECT {id}, 'openai', ?, ?, ?, CASE WHEN ({i}) % 10 = 0 THEN ? ELSE ? END \
         FROM {from} WHERE {i} < ?"
    );
    match dialect {
        Dialect::Postgres => numbered(&statement),
        _ => statement,
    }
}

/// The times of a bulk load: created now, a tenth expiring one second from
/// now, the rest in a day.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BulkTimes {
    pub(crate) created: chrono::DateTime<chrono::Utc>,
    pub(crate) expiring: chrono::DateTime<chrono::Utc>,
    pub(crate) later: chrono::DateTime<chrono::Utc>,
}

impl BulkTimes {
    pub(crate) fn now() -> Self {
        let created = chrono::Utc::now();
        BulkTimes {
            created,
            expiring: created + chrono::Duration::seconds(1),
            later: created + chrono::Duration::days(1),
        }
    }
}

/// What [`BulkLoad::load`] returns.
pub(crate) type Loading<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = BResult<()>> + Send + 'a>>;

/// Loads other users' keys straight into the tables of both sides.
pub(crate) trait BulkLoad: Send + Sync {
    /// `n` keys into byok's table and the hand-written one; all of them
    /// expiring in a second if `all_expiring`, else a tenth.
    fn load<'a>(
        &'a self,
        namespace: &'a str,
        n: usize,
        value: &'a [u8],
        all_expiring: bool,
    ) -> Loading<'a>;
}

fn q(statement: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(statement))
}

macro_rules! sql_hand {
    ($name:ident, $db:ty, $opts:ty, $dialect:expr) => {
        /// A hand-written store on one engine.
        #[derive(Debug)]
        pub(crate) struct $name {
            pub(crate) pool: sqlx::Pool<$db>,
            table: String,
            sql: Statements,
        }

        impl $name {
            const DIALECT: Dialect = $dialect;

            /// A pool of 10 connections without a ping before each query
            /// (byok's pool has the same size), and a fresh `table`.
            pub(crate) async fn create(options: $opts, table: &str) -> BResult<Self> {
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(10)
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await?;
                let sql = Statements::new(Self::DIALECT, table);
                for s in &sql.schema {
                    sqlx::query(q(s)).execute(&pool).await?;
                }
                Ok($name {
                    pool,
                    table: table.to_owned(),
                    sql,
                })
            }

            /// Binds the three times of a bulk load: as `DateTime`s where
            /// byok's table keeps `TIMESTAMPTZ` (PostgreSQL), else as
            /// milliseconds.
            fn bind_times<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
                t: BulkTimes,
                timestamps: bool,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                if timestamps {
                    query.bind(t.created).bind(t.expiring).bind(t.later)
                } else {
                    let ms = |d: chrono::DateTime<chrono::Utc>| d.timestamp_millis();
                    query
                        .bind(ms(t.created))
                        .bind(ms(t.expiring))
                        .bind(ms(t.later))
                }
            }

            /// A bulk loader into byok's `byok_table` of `byok_pool` and into
            /// this store's table.
            pub(crate) fn bulk(
                &self,
                byok_pool: sqlx::Pool<$db>,
                byok_table: &str,
            ) -> Arc<dyn BulkLoad> {
                struct Loader {
                    byok_pool: sqlx::Pool<$db>,
                    hand_pool: sqlx::Pool<$db>,
                    byok_table: String,
                    hand_table: String,
                }
                impl BulkLoad for Loader {
                    fn load<'a>(
                        &'a self,
                        namespace: &'a str,
                        n: usize,
                        value: &'a [u8],
                        all_expiring: bool,
                    ) -> Loading<'a> {
                        Box::pin(async move {
                            let mut t = BulkTimes::now();
                            if all_expiring {
                                t.later = t.expiring;
                            }
                            let n64 = i64::try_from(n)?;
                            let d = $name::DIALECT;
                            let byok_sql: Arc<str> =
                                bulk_statement(d, &self.byok_table, "encrypted_value", n).into();
                            let hand_sql: Arc<str> =
                                bulk_statement(d, &self.hand_table, "value", n).into();
                            let byok = sqlx::query(q(&byok_sql))
                                .bind(namespace)
                                .bind(value)
                                .bind(None::<&str>);
                            let byok = $name::bind_times(byok, t, d == Dialect::Postgres);
                            let done = byok.bind(n64).execute(&self.byok_pool).await?;
                            let hand = sqlx::query(q(&hand_sql))
                                .bind(namespace)
                                .bind(value)
                                .bind(Some("sk-p...xxxx"));
                            let hand = $name::bind_times(hand, t, false)
                                .bind(n64)
                                .execute(&self.hand_pool)
                                .await?;
                            let (b, h) = (done.rows_affected(), hand.rows_affected());
                            if b != n as u64 || h != n as u64 {
                                return Err(format!(
                                    "bulk load wrote {b} and {h} rows, expected {n}"
                                )
                                .into());
                            }
                            Ok(())
                        })
                    }
                }
                Arc::new(Loader {
                    byok_pool,
                    hand_pool: self.pool.clone(),
                    byok_table: byok_table.to_owned(),
                    hand_table: self.table.clone(),
                })
            }
        }

        impl HandStore for $name {
            async fn read(&self, user: &str, provider: &str) -> BResult<Option<Vec<u8>>> {
                Ok(sqlx::query_scalar(q(&self.sql.read))
                    .bind(user)
                    .bind(provider)
                    .bind(now_ms())
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn write(&self, user: &str, provider: &str, record: Record) -> BResult<()> {
                sqlx::query(q(&self.sql.write))
                    .bind(user)
                    .bind(provider)
                    .bind(record.value)
                    .bind(record.hint)
                    .bind(record.created_at_ms)
                    .bind(record.expires_at_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list(&self, user: &str) -> BResult<Option<Vec<String>>> {
                Ok(Some(
                    sqlx::query_scalar(q(&self.sql.list))
                        .bind(user)
                        .bind(now_ms())
                        .fetch_all(&self.pool)
                        .await?,
                ))
            }

            async fn clear(&self, user: &str) -> BResult<Option<u64>> {
                let done = sqlx::query(q(&self.sql.clear))
                    .bind(user)
                    .execute(&self.pool)
                    .await?;
                Ok(Some(done.rows_affected()))
            }

            async fn purge(&self) -> BResult<Option<u64>> {
                let done = sqlx::query(q(&self.sql.purge))
                    .bind(now_ms())
                    .execute(&self.pool)
                    .await?;
                Ok(Some(done.rows_affected()))
            }

            async fn all(&self) -> BResult<Option<crate::hand::Slots>> {
                Ok(Some(
                    sqlx::query_as(q(&self.sql.all))
                        .fetch_all(&self.pool)
                        .await?,
                ))
            }

            async fn swap(
                &self,
                user: &str,
                provider: &str,
                old: &[u8],
                new: &[u8],
            ) -> BResult<bool> {
                let done = sqlx::query(q(&self.sql.swap))
                    .bind(new)
                    .bind(user)
                    .bind(provider)
                    .bind(old)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn cleanup(&self) -> BResult<()> {
                sqlx::query(q(&self.sql.drop)).execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

sql_hand!(
    SqliteHand,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteConnectOptions,
    Dialect::Sqlite
);
sql_hand!(
    PostgresHand,
    sqlx::Postgres,
    sqlx::postgres::PgConnectOptions,
    Dialect::Postgres
);
sql_hand!(
    MySqlHand,
    sqlx::MySql,
    sqlx::mysql::MySqlConnectOptions,
    Dialect::MySql
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND c = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        let s = Statements::new(Dialect::Postgres, "t");
        assert!(s.write.contains("$6"), "{}", s.write);
        assert!(!s.read.contains('?'), "{}", s.read);
    }

    #[test]
    fn bulk_statements_cross_join_just_enough_digits() {
        for (n, places) in [
            (1, 1),
            (10, 1),
            (11, 2),
            (2_000, 4),
            (1_000_000, 6),
            (1_000_001, 7),
        ] {
            let s = bulk_statement(Dialect::Sqlite, "t", "v", n);
            assert_eq!(s.matches("CROSS JOIN").count(), places - 1, "{n}: {s}");
            assert_eq!(s.matches('?').count(), 7, "{s}");
        }
        let pg = bulk_statement(Dialect::Postgres, "t", "v", 100);
        assert!(pg.contains("$7") && !pg.contains('?'), "{pg}");
        assert!(bulk_statement(Dialect::MySql, "t", "v", 100).contains("CONCAT("));
    }
}
