//! Pool settings shared by the engines.

use std::time::Duration;

use byok_core::{ConfigError, Result};
use sqlx::pool::PoolOptions;
use sqlx::{ConnectOptions, Connection, Database, Pool};

use crate::error::{self, Engine};

/// How long an operation waits for a free connection before it fails with
/// a retryable timeout.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool of [`connect`](crate::SqliteStorage::connect), for a key
/// store's traffic: short one-row statements, bursty, latency-bound.
///
/// * No ping before handing out a connection (`test_before_acquire(false)`).
///   sqlx 0.9 already pings every connection as it goes back to the pool,
///   in a task of its own and off the caller's path, and closes it if that
///   fails; sqlx's default would add a second ping on acquire, a full round
///   trip on the caller's path before every operation. A connection that
///   dies while idle in the pool fails its next statement with a retryable
///   error (`Unavailable`), and connections are recycled before servers or
///   middleboxes tend to drop idle ones (`idle_timeout`, `max_lifetime`).
/// * `acquire_timeout` of 5 s: a saturated or unreachable database fails
///   fast with a retryable `Timeout` instead of hanging a request for the
///   default 30 s.
/// * At most 10 connections: each operation holds one for a single round
///   trip, so a few connections serve many requests.
pub(crate) fn options<DB: Database>() -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(10)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(5 * 60))
        .max_lifetime(Duration::from_secs(30 * 60))
}

/// Makes the pool of `connect`, after one direct connection to check that
/// the database answers: a pool retries failed connections until its
/// acquire timeout and then reports only that it timed out, while the
/// direct attempt fails at once with the real cause (connection refused,
/// authentication failed, no such database) kept as the error's source.
///
/// The direct attempt gets the pool's acquire timeout as its deadline:
/// sqlx puts none on a TCP connect or a handshake, so a server (or a
/// firewall) that accepts the connection but never answers would otherwise
/// hang `connect` for good.
pub(crate) async fn connect<DB: Database>(
    engine: Engine,
    pool: PoolOptions<DB>,
    options: <DB::Connection as Connection>::Options,
) -> Result<Pool<DB>> {
    let fail = |e| error::storage(engine, "connect", e);
    let probe = tokio::time::timeout(pool.get_acquire_timeout(), options.connect())
        .await
        .map_err(|elapsed| error::timed_out(engine, "connect", elapsed))?
        .map_err(fail)?;
    // A failed goodbye does not make the database unusable.
    let _ = probe.close().await;
    pool.connect_with(options).await.map_err(fail)
}

/// How long one operation of `KeyStorage` may take by default, waiting for
/// a connection included: longer than the acquire timeout, so that a busy
/// pool still reports itself as such.
pub(crate) const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a deadline given to `with_operation_timeout`.
pub(crate) fn operation_timeout(timeout: Duration) -> Result<Duration> {
    if timeout.is_zero() {
        return Err(ConfigError::new("the operation timeout must be longer than zero").into());
    }
    Ok(timeout)
}

/// Runs one operation under its deadline: neither sqlx nor the servers put
/// one on a statement whose connection went silent (a server that vanished
/// without closing the socket), so without this a call could wait for the
/// kernel to give up on the connection, many minutes later.
///
/// Dropping the operation's future on timeout leaves no half-read reply
/// for the next caller: sqlx pings a connection as it goes back to the
/// pool, which first drains what an interrupted statement left unread, and
/// closes the connection if that fails.
pub(crate) async fn bounded<T>(
    engine: Engine,
    op: &'static str,
    timeout: Duration,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|elapsed| error::timed_out(engine, op, elapsed))?
}
