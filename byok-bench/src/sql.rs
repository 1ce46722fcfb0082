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

fn q(statement: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(statement))
}

macro_rules! sql_hand {
    ($name:ident, $pool:ty, $opts:ty) => {
        /// A hand-written store on one engine.
        #[derive(Debug)]
        pub(crate) struct $name {
            pub(crate) pool: $pool,
            sql: Statements,
        }

        impl $name {
            /// A pool of 10 connections without a ping before each query
            /// (byok's pool has the same size), and a fresh table.
            pub(crate) async fn create(
                options: $opts,
                dialect: Dialect,
                table: &str,
            ) -> BResult<Self> {
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(10)
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await?;
                let sql = Statements::new(dialect, table);
                for s in &sql.schema {
                    sqlx::query(q(s)).execute(&pool).await?;
                }
                Ok($name { pool, sql })
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
    sqlx::SqlitePool,
    sqlx::sqlite::SqliteConnectOptions
);
sql_hand!(PostgresHand, sqlx::PgPool, sqlx::postgres::PgConnectOptions);
sql_hand!(MySqlHand, sqlx::MySqlPool, sqlx::mysql::MySqlConnectOptions);

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
}
