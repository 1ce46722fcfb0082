//! Reads of one key from a SQLite file on the calling thread.
//!
//! sqlx runs every SQLite statement on a worker thread of its connection and
//! hands the result back over a channel: two thread wake-ups per query,
//! which cost more than SQLite's own work when the page is in the cache
//! (tens of microseconds against a few). [`InlineReader`] answers
//! `retrieve_value`, the read behind `Byok::get_key`, on the task's own
//! thread instead, on connections of its own to the same file.
//!
//! It only answers when it can do so at once: its connections have no busy
//! timeout, and on any error (a lock it would have to wait for, a table not
//! yet created, an I/O error) the caller asks sqlx, whose answer, wait or
//! error is the one it would have got anyway. The database is in WAL mode,
//! where readers do not wait for the writer, so the fallback is rare.

use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::sqlite::SQLITE_PAGE_CACHE_KIB;

/// Connections kept open between reads; more are opened while more tasks
/// read at once, and closed again when they are done.
const MAX_IDLE: usize = 16;

/// Statements kept prepared on each connection.
const STATEMENT_CACHE: usize = 8;

/// How long reads go to sqlx after the file could not be opened.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Reads `retrieve_value` rows of one database file without sqlx.
pub(crate) struct InlineReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// No connection is opened before this: set for [`REOPEN_AFTER`] when
    /// opening failed. Only looked at when no idle connection is left.
    reopen_at: Mutex<Option<Instant>>,
    /// Reads answered here.
    #[cfg(test)]
    answered: AtomicU64,
}

impl std::fmt::Debug for InlineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineReader").finish_non_exhaustive()
    }
}

impl InlineReader {
    /// A reader of the database file at `path` (opened when first needed).
    pub(crate) fn new(path: &Path) -> Self {
        InlineReader {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            reopen_at: Mutex::new(None),
            #[cfg(test)]
            answered: AtomicU64::new(0),
        }
    }

    /// The value of the row that `statement` (taking user, provider, now
    /// in milliseconds; selecting one `BLOB`) finds, or `None` when this
    /// reader cannot answer now and the caller must ask sqlx.
    pub(crate) fn value(
        &self,
        statement: &str,
        user_id: &str,
        provider: &str,
        now_millis: i64,
    ) -> Option<Option<Arc<[u8]>>> {
        let conn = match self.take() {
            Some(conn) => conn,
            None => self.open()?,
        };
        let answer = query(&conn, statement, user_id, provider, now_millis);
        self.put_back(conn);
        let answer = answer.ok()?;
        #[cfg(test)]
        self.answered.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }

    /// How many reads this reader has answered.
    #[cfg(test)]
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Whether no connection is kept open between reads.
    #[cfg(test)]
    pub(crate) fn idle_is_empty(&self) -> bool {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Closes the idle connections (sqlx's pool was closed: the file is to
    /// be let go).
    pub(crate) fn close(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// A new connection, unless opening failed less than [`REOPEN_AFTER`]
    /// ago; a failure (the file briefly gone, no file descriptors left, a
    /// file that may only be read) sends reads to sqlx for that long.
    fn open(&self) -> Option<Connection> {
        let mut reopen_at = self
            .reopen_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if reopen_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        match open(&self.path) {
            Ok(conn) => {
                *reopen_at = None;
                Some(conn)
            }
            Err(e) => {
                tracing::debug!(error = %e, "SQLite reads go through sqlx for a while: the file could not be opened for reading");
                *reopen_at = Some(Instant::now() + REOPEN_AFTER);
                None
            }
        }
    }

    fn take(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// A connection to the existing file at `path` (never creating one) that
/// cannot write and never waits for a lock.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "cache_size", -i64::from(SQLITE_PAGE_CACHE_KIB))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// One run of `statement`: the first row's `BLOB`, if any row.
fn query(
    conn: &Connection,
    statement: &str,
    user_id: &str,
    provider: &str,
    now_millis: i64,
) -> rusqlite::Result<Option<Arc<[u8]>>> {
    let mut stmt = conn.prepare_cached(statement)?;
    let mut rows = stmt.query((user_id, provider, now_millis))?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    match row.get_ref(0)? {
        ValueRef::Blob(value) => Ok(Some(Arc::from(value))),
        // Not what byok stores: sqlx's read reports it.
        other => Err(rusqlite::Error::InvalidColumnType(
            0,
            "encrypted_value".to_owned(),
            other.data_type(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "SELECT encrypted_value FROM t WHERE user_id = ? AND provider = ? \
                        AND (expires_at IS NULL OR expires_at > ?)";

    /// A file that cannot be opened sends reads to sqlx for a while, not
    /// for good: once it is there, and the while is over, reads are inline
    /// again.
    #[test]
    fn a_failed_open_is_tried_again_after_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.db");
        let reader = InlineReader::new(&path);
        assert_eq!(reader.value(READ, "u", "p", 0), None);
        assert!(reader.reopen_at.lock().unwrap().is_some());

        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (user_id TEXT, provider TEXT, encrypted_value BLOB, expires_at INTEGER);
             INSERT INTO t VALUES ('u', 'p', x'0102', NULL);",
        )
        .unwrap();
        assert_eq!(reader.value(READ, "u", "p", 0), None, "still waiting");
        std::thread::sleep(REOPEN_AFTER + Duration::from_millis(50));
        assert_eq!(
            reader.value(READ, "u", "p", 0).unwrap().as_deref(),
            Some(&[1u8, 2][..])
        );
        assert!(reader.reopen_at.lock().unwrap().is_none());
        assert_eq!(reader.value(READ, "u", "nobody", 0), Some(None));
        assert_eq!(reader.answered.load(Ordering::Relaxed), 2);
    }
}
