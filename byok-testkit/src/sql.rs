//! Cases for stores of a SQL server (PostgreSQL, MySQL…) that are the
//! same for every engine: how `connect` fails, what errors and `Debug`
//! show, deadlines, concurrent migrations, `user_keys` in one read.
//!
//! The engine comes in as a [`SqlEngine`], which says how to open its
//! store; [`sql_engine_tests!`] makes one `#[tokio::test]` per case, named
//! after it, in the calling test file, so that a failure reads
//! `postgres::an_unreachable_server_is_a_retryable_error`. The cases need
//! no driver of their own: what they check of a driver's error goes
//! through [`SqlEngine::driver_error`].
//!
//! [`sql_engine_tests!`]: crate::sql_engine_tests

use std::error::Error as StdError;
use std::time::Duration;

use byok_core::store::Store;
use byok_core::{ApiKey, ByokConfig, ByokError, KeyStorage, StorageErrorKind, StoreAdmin};
use futures::future::BoxFuture;

use crate::{CaseResult, Failure, Namespace};

/// The bound on a call that must fail by itself well before it: a
/// regression fails the case instead of hanging it.
pub const NO_HANG: Duration = Duration::from_secs(60);

/// What a driver's error is, as [`SqlEngine::driver_error`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverError {
    /// An I/O error (a refused connection…).
    Io,
    /// An error the database answered with.
    Database,
    /// Another error of the driver.
    Other,
}

/// How the cases of this module open the stores of one engine.
#[derive(Debug, Clone, Copy)]
pub struct SqlEngine {
    /// The name of the store's type, as its `Debug` shows it
    /// (`"PostgresStorage"`).
    pub type_name: &'static str,
    /// The backend's name (`"postgres"`).
    pub backend: &'static str,
    /// The scheme of its URLs (`"postgres"`).
    pub scheme: &'static str,
    /// The URL of the test server, or `None` (with a skip line) when there
    /// is none: one of [`services`](crate::services)' functions.
    pub server: fn() -> BoxFuture<'static, Option<String>>,
    /// The engine's `connect(url, config)`.
    pub connect: fn(String, ByokConfig) -> BoxFuture<'static, byok_core::Result<Store>>,
    /// The engine's `from_pool` over a pool that connects to `url` only
    /// when first used and waits at most `acquire` for a connection, with
    /// `with_operation_timeout(operation)` when given.
    pub lazy: fn(
        url: &str,
        config: &ByokConfig,
        acquire: Duration,
        operation: Option<Duration>,
    ) -> byok_core::Result<Store>,
    /// What an error is, if it is the driver's (a `sqlx::Error`).
    pub driver_error: fn(&(dyn StdError + 'static)) -> Option<DriverError>,
}

impl SqlEngine {
    /// A URL of this engine to `127.0.0.1:port`, database `test`.
    fn url(&self, user: &str, port: u16) -> String {
        format!("{}://{user}@127.0.0.1:{port}/test", self.scheme)
    }

    /// The driver's error that `err`'s storage error keeps as its source.
    fn source_of(&self, what: &str, err: &ByokError) -> Result<DriverError, Failure> {
        let storage = err
            .as_storage()
            .ok_or_else(|| Failure::new(format!("{what}: not a storage error: {err:?}")))?;
        let source = storage
            .source()
            .ok_or_else(|| Failure::new(format!("{what}: the driver's error is not kept")))?;
        (self.driver_error)(source)
            .ok_or_else(|| Failure::new(format!("{what}: the source is {source:?}")))
    }
}

/// A loopback port where nothing listens: port 1 (tcpmux) is privileged
/// and unused, so a connection is refused at once, and no other test or
/// server can take it in the meantime, as could happen to a port that was
/// free a moment ago.
pub const CLOSED_PORT: u16 = 1;

/// A loopback listener that accepts connections and never says a word, as
/// a hung server or a black-holing middlebox would; it lives as long as
/// the returned task, which holds every accepted socket open.
pub async fn silent_server() -> Result<(u16, tokio::task::JoinHandle<()>), Failure> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::new(format!("a loopback port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Failure::new(format!("a bound address: {e}")))?
        .port();
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    Ok((port, task))
}

/// Fails if `secret` shows in the `Display` or `Debug` of `err` or of any
/// error in its `source()` chain.
pub fn ensure_hidden(err: &(dyn StdError + 'static), secret: &str) -> CaseResult {
    let mut next = Some(err);
    let mut depth = 0;
    while let Some(e) = next {
        let (display, debug) = (e.to_string(), format!("{e:?}"));
        ensure!(
            !display.contains(secret),
            "source {depth} shows it: {display}"
        );
        ensure!(!debug.contains(secret), "source {depth} shows it: {debug}");
        next = e.source();
        depth += 1;
    }
    Ok(())
}

/// Fails unless `err` is a retryable timeout of the operation deadline,
/// with the elapsed timer as its source.
fn ensure_deadline_timeout(err: &ByokError) -> CaseResult {
    let storage = err
        .as_storage()
        .ok_or_else(|| Failure::new(format!("not a storage error: {err:?}")))?;
    ensure!(
        storage.kind == StorageErrorKind::Timeout,
        "not a timeout: {err}"
    );
    ensure!(err.is_retryable(), "a timeout that is not retryable: {err}");
    let source = storage
        .source()
        .ok_or_else(|| Failure::new("the timer is not kept as the source"))?;
    ensure!(
        source.is::<tokio::time::error::Elapsed>(),
        "the source is {source:?}, not the timer"
    );
    Ok(())
}

/// `connect` to a port where nothing listens fails at once with a
/// retryable `Unavailable` error that keeps the driver's I/O error; a
/// store over a pool that cannot connect fails its operations with a
/// retryable error of the backend, the driver's error kept.
pub async fn an_unreachable_server_is_a_retryable_error(engine: &SqlEngine) -> CaseResult {
    let url = engine.url("root", CLOSED_PORT);
    let config = ByokConfig::default();
    let err = match (engine.connect)(url.clone(), config.clone()).await {
        Ok(store) => return Err(Failure::new(format!("connect succeeded: {store:?}"))),
        Err(e) => e,
    };
    ensure!(err.is_retryable(), "not retryable: {err:?}");
    ensure!(
        err.as_storage().map(|s| s.kind) == Some(StorageErrorKind::Unavailable),
        "not Unavailable: {err:?}"
    );
    let driver = engine.source_of("connect", &err)?;
    ensure!(
        driver == DriverError::Io,
        "the driver's error is {driver:?}, not I/O"
    );

    // A pool that cannot connect times out waiting for a connection.
    let store = (engine.lazy)(&url, &config, Duration::from_secs(2), None)?;
    let err = match store.list_providers("u").await {
        Ok(p) => return Err(Failure::new(format!("list_providers answered {p:?}"))),
        Err(e) => e,
    };
    ensure!(err.is_retryable(), "not retryable: {err:?}");
    let storage = err
        .as_storage()
        .ok_or_else(|| Failure::new(format!("not a storage error: {err:?}")))?;
    ensure!(
        storage.backend == engine.backend,
        "backend {:?}",
        storage.backend
    );
    ensure!(
        matches!(
            storage.kind,
            StorageErrorKind::Unavailable | StorageErrorKind::Timeout
        ),
        "kind {:?}",
        storage.kind
    );
    engine.source_of("an operation", &err)?;
    Ok(())
}

/// The password of a connection string shows neither in a store's `Debug`
/// (which names the backend and the table only) nor in the errors of
/// `connect`, for an unreachable server and for malformed URLs (which are
/// `Config` errors that keep the driver's error).
pub async fn neither_debug_nor_errors_show_the_connection_string(engine: &SqlEngine) -> CaseResult {
    let config = ByokConfig::default();
    let url = engine.url("app:hunter2", CLOSED_PORT);
    let store = (engine.lazy)(&url, &config, NO_HANG, None)?;
    let debug = format!("{store:?}");
    let expected = format!(
        "{} {{ backend: {:?}, table: \"user_api_keys\", .. }}",
        engine.type_name, engine.backend
    );
    ensure!(debug == expected, "Debug shows {debug}, not {expected}");
    let err = match (engine.connect)(url, config.clone()).await {
        Ok(_) => return Err(Failure::new("connect succeeded")),
        Err(e) => e,
    };
    ensure!(err.is_retryable(), "not retryable: {err:?}");
    ensure_hidden(&err, "hunter2")?;

    let scheme = engine.scheme;
    for malformed in [
        // A port out of range.
        format!("{scheme}://app:hunter2@127.0.0.1:99999/test"),
        // A `#` in the password ends the authority: the password becomes
        // the "port" of host `app`.
        format!("{scheme}://app:hunter2#x@127.0.0.1:5432/test"),
        // An SSL mode that does not exist.
        format!("{scheme}://app:hunter2@127.0.0.1:5432/test?sslmode=sometimes"),
    ] {
        let err = match (engine.connect)(malformed.clone(), config.clone()).await {
            Ok(_) => return Err(Failure::new(format!("{malformed}: connect succeeded"))),
            Err(e) => e,
        };
        ensure!(matches!(err, ByokError::Config(_)), "{malformed}: {err:?}");
        ensure!(
            err.source().is_some(),
            "{malformed}: the driver's error is not kept"
        );
        ensure_hidden(&err, "hunter2")?;
    }
    Ok(())
}

/// `connect` to a server that accepts the connection and never answers
/// gives up by itself, with a retryable `Timeout`.
pub async fn a_server_that_never_answers_times_out_on_connect(engine: &SqlEngine) -> CaseResult {
    let (port, server) = silent_server().await?;
    let url = engine.url("root", port);
    let result = tokio::time::timeout(NO_HANG, (engine.connect)(url, ByokConfig::default())).await;
    server.abort();
    let err = match result {
        Err(_) => return Err(Failure::new("connect did not give up by itself")),
        Ok(Ok(_)) => return Err(Failure::new("connect succeeded")),
        Ok(Err(e)) => e,
    };
    ensure!(
        err.as_storage().map(|s| s.kind) == Some(StorageErrorKind::Timeout),
        "not a timeout: {err:?}"
    );
    ensure!(err.is_retryable(), "not retryable: {err}");
    Ok(())
}

/// An operation that the server never answers fails at the operation
/// deadline (here 200 ms, where the pool would wait far longer) with a
/// retryable `Timeout` whose source is the timer; a zero deadline is a
/// `Config` error.
pub async fn an_operation_past_its_deadline_fails_with_a_retryable_timeout(
    engine: &SqlEngine,
) -> CaseResult {
    let (port, server) = silent_server().await?;
    let url = engine.url("root", port);
    let config = ByokConfig::default();
    let store = (engine.lazy)(&url, &config, NO_HANG, Some(Duration::from_millis(200)))?;
    let result = tokio::time::timeout(NO_HANG, store.retrieve("u", "p")).await;
    server.abort();
    let err = match result {
        Err(_) => return Err(Failure::new("the operation did not give up by itself")),
        Ok(Ok(k)) => return Err(Failure::new(format!("retrieve answered {k:?}"))),
        Ok(Err(e)) => e,
    };
    ensure_deadline_timeout(&err)?;
    match (engine.lazy)(&url, &config, NO_HANG, Some(Duration::ZERO)) {
        Err(ByokError::Config(_)) => Ok(()),
        other => Err(Failure::new(format!(
            "a zero operation timeout: expected a Config error, got {other:?}"
        ))),
    }
}

/// On a table that was never migrated the database refuses every
/// statement: `Rejected`, not retryable, the driver's error kept.
pub async fn a_refused_statement_is_rejected_with_the_driver_error(
    engine: &SqlEngine,
) -> CaseResult {
    let Some(url) = (engine.server)().await else {
        return Ok(());
    };
    let table = format!("byok_never_made_{:016x}", rand::random::<u64>());
    let config = ByokConfig::default().with_db_table_name(table);
    let store = (engine.connect)(url, config).await?;
    ensure!(
        store.schema_status().await? == byok_core::SchemaStatus::Missing,
        "the table exists"
    );
    let err = match store.retrieve("u", "p").await {
        Ok(k) => return Err(Failure::new(format!("retrieve answered {k:?}"))),
        Err(e) => e,
    };
    ensure!(
        err.as_storage().map(|s| s.kind) == Some(StorageErrorKind::Rejected),
        "not Rejected: {err:?}"
    );
    ensure!(!err.is_retryable(), "retryable: {err}");
    let driver = engine.source_of("retrieve", &err)?;
    ensure!(
        driver == DriverError::Database,
        "the driver's error is {driver:?}"
    );
    Ok(())
}

/// Runs `case` on a migrated store of `engine` on a fresh table, which is
/// dropped after; does nothing without a server.
async fn on_fresh_table(
    engine: &SqlEngine,
    case: impl AsyncFnOnce(&Store, &Store) -> CaseResult,
) -> CaseResult {
    let Some(url) = (engine.server)().await else {
        return Ok(());
    };
    let table = format!("byok_case_{:016x}", rand::random::<u64>());
    let config = ByokConfig::default().with_db_table_name(table);
    let a = (engine.connect)(url.clone(), config.clone()).await?;
    let b = (engine.connect)(url, config).await?;
    let result = case(&a, &b).await;
    let dropped = a.destroy().await;
    result?;
    Ok(dropped?)
}

/// [`migrations_at_once_succeed`] on two stores of `engine`, each with
/// a pool of its own, on a fresh table.
pub async fn concurrent_migrations_from_two_pools_both_succeed(engine: &SqlEngine) -> CaseResult {
    on_fresh_table(engine, async |a, b| migrations_at_once_succeed(a, b).await).await
}

/// [`user_keys_include_expired_keys`] on a store of `engine`, on a fresh
/// table.
pub async fn user_keys_is_one_read_that_includes_expired_keys(engine: &SqlEngine) -> CaseResult {
    on_fresh_table(engine, async |a, _| {
        a.migrate().await?;
        user_keys_include_expired_keys(a).await
    })
    .await
}

/// Four `migrate` calls at once from two stores (two pools, as two
/// processes would have) on one table all succeed, and the stores then
/// share the table.
pub async fn migrations_at_once_succeed(a: &dyn StoreAdmin, b: &dyn StoreAdmin) -> CaseResult {
    let (ra, rb, rc, rd) = tokio::join!(a.migrate(), b.migrate(), a.migrate(), b.migrate());
    for r in [ra, rb, rc, rd] {
        r?;
    }
    let ns = Namespace::new();
    let user = ns.user("u");
    let result = async {
        a.store(&ApiKey::new(&user, "p", vec![7])?).await?;
        let back = b.retrieve(&user, "p").await?;
        ensure!(
            back.as_ref().map(|k| k.encrypted_value()) == Some(&[7][..]),
            "the other store read {back:?}"
        );
        Ok(())
    }
    .await;
    ns.cleanup(a).await;
    result
}

/// `user_keys` answers with one read that includes a key which has expired
/// but is not purged yet (the fallback of the trait, a `list_providers`
/// and a `retrieve` per provider, never does), sorted by provider bytes.
pub async fn user_keys_include_expired_keys(store: &dyn KeyStorage) -> CaseResult {
    let ns = Namespace::new();
    let user = ns.user("keys");
    let result = async {
        let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
        for (provider, expires) in [("b", None), ("B", past), ("a", None), ("é", None)] {
            let key = ApiKey::new(&user, provider, vec![1])?.with_expires_at(expires);
            store.store(&key).await?;
        }
        let keys = store.user_keys(&user).await?;
        let providers: Vec<&str> = keys.iter().map(ApiKey::provider).collect();
        ensure!(providers == ["B", "a", "b", "é"], "providers {providers:?}");
        ensure!(keys[0].is_expired(), "the expired key is not expired");
        ensure!(
            keys[1..].iter().all(|k| !k.is_expired()),
            "a live key is expired"
        );
        Ok(())
    }
    .await;
    ns.cleanup(store).await;
    result
}

/// Expands to a module `sql` with one `#[tokio::test]` per case of
/// [`sql`](crate::sql) that takes a [`SqlEngine`], each named after its
/// case and calling it with the engine that the argument gives.
///
/// ```ignore
/// const ENGINE: byok_testkit::sql::SqlEngine = /* … */;
/// byok_testkit::sql_engine_tests!(ENGINE);
/// ```
#[macro_export]
macro_rules! sql_engine_tests {
    ($engine:expr) => {
        $crate::__case_tests!(sql, sql, Some($engine);
            an_unreachable_server_is_a_retryable_error,
            neither_debug_nor_errors_show_the_connection_string,
            a_server_that_never_answers_times_out_on_connect,
            an_operation_past_its_deadline_fails_with_a_retryable_timeout,
            a_refused_statement_is_rejected_with_the_driver_error,
            concurrent_migrations_from_two_pools_both_succeed,
            user_keys_is_one_read_that_includes_expired_keys,
        );
    };
}
