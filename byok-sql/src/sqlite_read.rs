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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::sqlite::SQLITE_PAGE_CACHE_KIB;

/// Connections kept open between reads; more are opened while more tasks
/// read at once, and closed again when they are done.
const MAX_IDLE: usize = 16;

/// Statements kept prepared on each connection.
const STATEMENT_CACHE: usize = 8;

/// Reads `retrieve_value` rows of one database file without sqlx.
pub(crate) struct InlineReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Set when the file could not be opened (say, it may only be read):
    /// from then on every read goes to sqlx.
    unusable: AtomicBool,
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
            unusable: AtomicBool::new(false),
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
        if self.unusable.load(Ordering::Relaxed) {
            return None;
        }
        let conn = match self.take() {
            Some(conn) => conn,
            None => match self.open() {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(error = %e, "SQLite reads go through sqlx: the file could not be opened for reading");
                    self.unusable.store(true, Ordering::Relaxed);
                    return None;
                }
            },
        };
        let answer = query(&conn, statement, user_id, provider, now_millis);
        self.put_back(conn);
        answer.ok()
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

    /// A connection to the existing file (never creating one) that cannot
    /// write and never waits for a lock.
    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "query_only", true)?;
        conn.pragma_update(None, "cache_size", -i64::from(SQLITE_PAGE_CACHE_KIB))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }
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
