//! From `sqlx::Error` to byok's [`StorageError`], keeping the driver's error
//! as the source and deciding whether a retry can help.

use byok_core::{ByokError, ConfigError, StorageError, StorageErrorKind};

/// The engine an error came from; it decides how database error codes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "mysql")]
    MySql,
}

impl Engine {
    /// The backend name carried by [`StorageError::backend`].
    pub(crate) fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Engine::Sqlite => "sqlite",
            #[cfg(feature = "postgres")]
            Engine::Postgres => "postgres",
            #[cfg(feature = "mysql")]
            Engine::MySql => "mysql",
        }
    }
}

/// The error of operation `op` (a method name such as `"retrieve"`).
///
/// The message names the operation and the class of failure only; the
/// driver's own text (which can quote SQL or, for some constraint errors,
/// values) stays in the source.
pub(crate) fn storage(engine: Engine, op: &'static str, err: sqlx::Error) -> ByokError {
    let (kind, what) = classify(engine, &err);
    let message = match &err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{op}: {what} (code {code})"),
            None => format!("{op}: {what}"),
        },
        _ => format!("{op}: {what}"),
    };
    StorageError::new(engine.name(), kind, message)
        .with_source(err)
        .into()
}

/// A row that cannot become an `ApiKey`: not retryable.
pub(crate) fn corrupt(engine: Engine, op: &'static str, what: String) -> ByokError {
    StorageError::new(
        engine.name(),
        StorageErrorKind::Corrupt,
        format!("{op}: {what}"),
    )
    .into()
}

/// An operation that did not finish within its deadline: retryable.
///
/// The elapsed timer is kept as the source, so that the error still has
/// one to downcast, as every driver error does.
pub(crate) fn timed_out(
    engine: Engine,
    op: &'static str,
    elapsed: tokio::time::error::Elapsed,
) -> ByokError {
    StorageError::new(
        engine.name(),
        StorageErrorKind::Timeout,
        format!("{op}: the database did not answer in time"),
    )
    .with_source(elapsed)
    .into()
}

/// A value too large for what the database can store or receive; nothing
/// was sent. Not retryable: the same value would fail again.
pub(crate) fn too_large(
    engine: Engine,
    op: &'static str,
    what: &'static str,
    len: usize,
    max: usize,
) -> ByokError {
    StorageError::new(
        engine.name(),
        StorageErrorKind::Rejected,
        format!("{op}: {what} is {len} bytes long; at most {max} bytes fit"),
    )
    .into()
}

/// `store_check` on a table that has no `last_check` column yet: the
/// schema is older than this version of byok. Not retryable until someone
/// runs `migrate`.
pub(crate) fn schema_older(engine: Engine, op: &'static str) -> ByokError {
    StorageError::new(
        engine.name(),
        StorageErrorKind::Rejected,
        format!(
            "{op}: the table's schema is older than this version of byok (it has no \
             last_check column); run `byok migrate` to keep checks"
        ),
    )
    .into()
}

/// Whether `err` says that the column being added exists already: a
/// migration of another process added it first.
pub(crate) fn is_duplicate_column(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    // PostgreSQL's duplicate_column, MySQL's ER_DUP_FIELDNAME; SQLite has
    // no code of its own for it, only the message.
    matches!(db.code().as_deref(), Some("42701" | "42S21"))
        || db.message().contains("duplicate column")
        || db.message().contains("Duplicate column")
}

/// Whether `err` is a lock conflict that the database resolved by failing
/// this statement (a deadlock victim, a lock wait that timed out) and left
/// nothing half-done: each statement of this crate runs alone in its own
/// transaction, which the database rolled back, so running the same
/// statement again is safe and will usually succeed.
pub(crate) fn is_lock_conflict(engine: Engine, err: &sqlx::Error) -> bool {
    match (engine, err) {
        // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes: SQLite
        // waits for a lock itself for the busy timeout, but many writers on
        // a loaded machine can still wait longer than that, and a busy
        // statement changed nothing.
        #[cfg(feature = "sqlite")]
        (Engine::Sqlite, sqlx::Error::Database(db)) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
        // deadlock_detected, serialization_failure
        #[cfg(feature = "postgres")]
        (Engine::Postgres, sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        // deadlock, lock wait timeout
        #[cfg(feature = "mysql")]
        (Engine::MySql, sqlx::Error::Database(db)) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1213 | 1205)),
        #[allow(unreachable_patterns, reason = "with SQLite alone, its arm takes all")]
        _ => false,
    }
}

/// A connection URL or option that sqlx refused, before any connection.
pub(crate) fn config(engine: Engine, err: sqlx::Error) -> ByokError {
    ConfigError::new(format!(
        "invalid {} connection URL or options",
        engine.name()
    ))
    .with_source(err)
    .into()
}

fn classify(engine: Engine, err: &sqlx::Error) -> (StorageErrorKind, &'static str) {
    use StorageErrorKind::*;
    match err {
        sqlx::Error::PoolTimedOut => (Timeout, "timed out waiting for a database connection"),
        sqlx::Error::PoolClosed => (Unavailable, "the connection pool is closed"),
        // sqlx hands rustls's verdict on the handshake (an unknown issuer,
        // a name the certificate does not carry) on inside an I/O error:
        // it is no network trouble, and a retry would meet the same
        // certificate.
        sqlx::Error::Io(io) if is_tls_error(io) => (Other, "TLS with the database failed"),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            (Timeout, "the database did not answer in time")
        }
        sqlx::Error::Io(_) => (Unavailable, "cannot reach the database"),
        // A broken conversation with the server or a crashed SQLite worker:
        // a fresh connection may well succeed.
        sqlx::Error::Protocol(_) => (Unavailable, "unexpected data from the database"),
        sqlx::Error::WorkerCrashed => (Unavailable, "the database worker stopped"),
        // A certificate or TLS configuration problem does not heal by itself.
        sqlx::Error::Tls(_) => (Other, "TLS with the database failed"),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            (Corrupt, "a stored value cannot be decoded")
        }
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => {
            (Corrupt, "the table does not have the expected columns")
        }
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => {
            (Rejected, "a value could not be sent to the database")
        }
        sqlx::Error::Configuration(_) => (Other, "invalid connection options"),
        sqlx::Error::Database(db) => classify_database(engine, db.as_ref()),
        _ => (Other, "database operation failed"),
    }
}

/// Whether an I/O error carries a TLS error (rustls's, the only TLS stack
/// that sqlx reports this way).
fn is_tls_error(io: &std::io::Error) -> bool {
    #[cfg(feature = "tls-rustls")]
    if io
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
    {
        return true;
    }
    let _ = io;
    false
}

fn classify_database(
    engine: Engine,
    db: &dyn sqlx::error::DatabaseError,
) -> (StorageErrorKind, &'static str) {
    use StorageErrorKind::*;
    const REJECTED: (StorageErrorKind, &str) = (Rejected, "the database refused the statement");
    const UNAVAILABLE: (StorageErrorKind, &str) = (Unavailable, "the database is unavailable");
    const BUSY: (StorageErrorKind, &str) = (
        Timeout,
        "the database was busy (lock, deadlock or serialization conflict)",
    );
    let code = db.code();
    let code = code.as_deref().unwrap_or("");
    match engine {
        #[cfg(feature = "sqlite")]
        Engine::Sqlite => {
            // Extended result codes carry the primary code in the low byte.
            match code.parse::<i32>().map(|c| c & 0xff) {
                // SQLITE_BUSY, SQLITE_LOCKED
                Ok(5 | 6) => BUSY,
                // SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_NOMEM
                Ok(10 | 14 | 7) => UNAVAILABLE,
                // SQLITE_CORRUPT, SQLITE_NOTADB
                Ok(11 | 26) => (Corrupt, "the database file is damaged"),
                _ => REJECTED,
            }
        }
        #[cfg(feature = "postgres")]
        Engine::Postgres => match code {
            // serialization_failure, deadlock_detected, lock_not_available,
            // query_canceled (statement_timeout)
            "40001" | "40P01" | "55P03" | "57014" => BUSY,
            // admin/crash shutdown, cannot_connect_now, too_many_connections,
            // and the connection_exception class
            "57P01" | "57P02" | "57P03" | "53300" => UNAVAILABLE,
            c if c.starts_with("08") => UNAVAILABLE,
            _ => REJECTED,
        },
        #[cfg(feature = "mysql")]
        Engine::MySql => {
            let number = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number());
            match number {
                // A statement larger than `max_allowed_packet`: the server
                // answers this (with SQLSTATE 08S01, a connection error) and
                // hangs up, but resending the same statement can never work.
                Some(1153 | 1301) => (Rejected, "the statement is larger than max_allowed_packet"),
                // lock wait timeout, deadlock, statement time limits
                // (MySQL 3024, MariaDB 1969)
                Some(1205 | 1213 | 3024 | 1969) => BUSY,
                // too many connections, server shutdown in progress
                Some(1040 | 1053) => UNAVAILABLE,
                _ if code.starts_with("08") => UNAVAILABLE,
                _ => REJECTED,
            }
        }
    }
}

#[cfg(all(test, feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod duplicate_column_tests {
    #![allow(
        clippy::expect_used,
        reason = "test code: a failure must fail the test"
    )]

    use sqlx::{AssertSqlSafe, Connection, Executor};

    /// Adds the column twice to a fresh table on `conn` and returns the
    /// error of the second time.
    async fn second_add<C>(conn: &mut C, table: &str, column_type: &str) -> sqlx::Error
    where
        C: Connection,
        for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    {
        conn.execute(AssertSqlSafe(format!("CREATE TABLE {table} (a INTEGER)")))
            .await
            .expect("create");
        let add = format!("ALTER TABLE {table} ADD COLUMN last_check {column_type}");
        conn.execute(AssertSqlSafe(add.clone())).await.expect("add");
        let err = conn
            .execute(AssertSqlSafe(add))
            .await
            .map(|_| ())
            .expect_err("twice");
        let _ = conn
            .execute(AssertSqlSafe(format!("DROP TABLE {table}")))
            .await;
        err
    }

    fn table() -> String {
        // Named as the integration tests name theirs, so that a run
        // killed midway leaves a table their cleanup removes.
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("byok_test_{secs}_{:016x}", rand::random::<u64>())
    }

    /// What a migration that lost the race to add `last_check` gets from
    /// each engine is recognized, and nothing else is.
    #[tokio::test]
    async fn a_column_added_twice_is_a_duplicate_column_on_every_engine() {
        let mut sqlite = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        let err = second_add(&mut sqlite, &table(), "TEXT").await;
        assert!(super::is_duplicate_column(&err), "{err}");
        let other = sqlite
            .execute("ALTER TABLE no_such_table ADD COLUMN x TEXT")
            .await
            .expect_err("no table");
        assert!(!super::is_duplicate_column(&other), "{other}");

        if let Some(url) = byok_testkit::services::postgres_url().await {
            let mut pg = sqlx::PgConnection::connect(&url).await.expect("postgres");
            let err = second_add(&mut pg, &table(), "TEXT").await;
            assert!(super::is_duplicate_column(&err), "{err}");
        }
        if let Some(url) = byok_testkit::services::mysql_url().await {
            let mut my = sqlx::MySqlConnection::connect(&url).await.expect("mysql");
            let err = second_add(&mut my, &table(), "TEXT NULL").await;
            assert!(super::is_duplicate_column(&err), "{err}");
        }
    }
}
