//! Helpers shared by the tests of the engines.
//!
//! Every test gets its own table, `byok_test_<unix seconds>_<random>`, made
//! by its setup and dropped when the test's store is dropped (also when
//! the test fails, as the store is dropped while unwinding). Tests thus run
//! in parallel against one shared server without seeing each other's rows
//! or purges, and a successful run leaves no table behind. Tables that a
//! killed run left behind are dropped by the next run once they are an
//! hour old; younger ones may belong to a run still going.
#![allow(dead_code, reason = "each test binary uses a part of these helpers")]
#![allow(
    clippy::expect_used,
    reason = "test helpers: a failure must fail the test"
)]

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use byok_core::chrono::{TimeZone, Utc};
use std::sync::atomic::{AtomicBool, Ordering};

use byok_core::store::{SchemaStatus, StoreStats};
use byok_core::{ApiKey, ByokConfig, KeyStorage, Result, StoreAdmin, async_trait};
use byok_sql::sqlx::pool::PoolOptions;
use byok_sql::sqlx::{
    self, AssertSqlSafe, ColumnIndex, Connection, Database, Decode, Executor, IntoArguments, Pool,
    Type,
};

/// The prefix of every table the tests make.
pub(crate) const TABLE_PREFIX: &str = "byok_test_";

/// Leftover tables older than this are dropped.
pub(crate) const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A fresh table name for one test.
pub(crate) fn table_name() -> String {
    format!(
        "{TABLE_PREFIX}{}_{:016x}",
        unix_secs(),
        rand::random::<u64>()
    )
}

/// Whether a table of the tests is a leftover of an earlier run.
pub(crate) fn is_stale(table: &str) -> bool {
    let Some(rest) = table.strip_prefix(TABLE_PREFIX) else {
        return false;
    };
    let Some((secs, _)) = rest.split_once('_') else {
        return false;
    };
    secs.parse::<u64>()
        .is_ok_and(|made| made + LEFTOVER_AGE.as_secs() < unix_secs())
}

/// Runs `f` to completion on a runtime of its own, in a thread of its own:
/// usable from `Drop` inside an async test, whose runtime must not block on
/// itself.
pub(crate) fn run_detached<F>(f: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()>,
{
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for cleanup");
        runtime.block_on(f());
    });
    let _ = worker.join();
}

/// A migrated store on a fresh table of the server at `url`, which is
/// dropped with it. Before the first, the leftovers of killed runs that
/// `list_tables` finds are dropped.
///
/// `C` is the engine's connection type; `connect` and `migrate` are the
/// storage's own.
pub(crate) async fn scratch<C, S>(
    url: String,
    list_tables: &'static str,
    connect: impl AsyncFnOnce(&str, &ByokConfig) -> Result<S>,
    migrate: impl AsyncFnOnce(&S) -> Result<()>,
) -> Scratch<S>
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
    String: Type<C::Database> + for<'r> Decode<'r, C::Database>,
    usize: ColumnIndex<<C::Database as Database>::Row>,
{
    drop_leftovers::<C>(&url, list_tables).await;
    let table = table_name();
    let config = ByokConfig::default().with_db_table_name(table.clone());
    let store = connect(&url, &config).await.expect("connect to the server");
    let scratch = Scratch::new(store, drop_table::<C>(url, table));
    migrate(&scratch.store).await.expect("migrate");
    scratch
}

/// Drops the tables that killed runs left behind, once per test binary;
/// `list_tables` selects the names of the tables of the tests.
async fn drop_leftovers<C>(url: &str, list_tables: &'static str)
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
    String: Type<C::Database> + for<'r> Decode<'r, C::Database>,
    usize: ColumnIndex<<C::Database as Database>::Row>,
{
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok(mut conn) = C::connect(url).await else {
        return;
    };
    let tables: Vec<String> = sqlx::query_scalar(list_tables)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    for table in tables.iter().filter(|t| is_stale(t)) {
        let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&mut conn)
            .await;
    }
    let _ = conn.close().await;
}

/// What drops `table` of the server at `url`, from anywhere, `Drop` of an
/// async test included.
pub(crate) fn drop_table<C>(url: String, table: String) -> impl FnOnce() + Send + Sync + 'static
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
{
    move || {
        run_detached(move || async move {
            if let Ok(mut conn) = C::connect(&url).await {
                let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        })
    }
}

/// The store under test, on its own table, which is dropped with it.
pub(crate) struct Scratch<S> {
    pub(crate) store: S,
    cleanup: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<S> Scratch<S> {
    pub(crate) fn new(store: S, cleanup: impl FnOnce() + Send + Sync + 'static) -> Self {
        Scratch {
            store,
            cleanup: Some(Box::new(cleanup)),
        }
    }
}

impl<S> Drop for Scratch<S> {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Scratch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.store.fmt(f)
    }
}

byok_core::forward_key_storage!(@impl [S: KeyStorage] Scratch<S>, (self) => self.store);

#[async_trait]
impl<S: StoreAdmin> StoreAdmin for Scratch<S> {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }
    async fn migrate(&self) -> Result<()> {
        self.store.migrate().await
    }
    async fn schema_status(&self) -> Result<SchemaStatus> {
        self.store.schema_status().await
    }
    async fn count_expired(&self) -> Result<Option<u64>> {
        self.store.count_expired().await
    }
    async fn count(&self) -> Result<u64> {
        self.store.count().await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.store.stats().await
    }
    async fn destroy(&self) -> Result<()> {
        self.store.destroy().await
    }
}

/// The [`SqlEngine`](byok_testkit::sql::SqlEngine) of a storage type:
/// `$storage`, its pool options `$pool`, its backend name and URL scheme,
/// and the function of `byok_testkit::services` that finds its server.
#[allow(unused_macros, reason = "each test binary uses one engine")]
macro_rules! sql_engine {
    ($storage:ty, $pool:ty, $backend:literal, $server:path) => {
        byok_testkit::sql::SqlEngine {
            type_name: stringify!($storage),
            backend: $backend,
            scheme: $backend,
            server: || Box::pin($server()),
            connect: |url, config| {
                Box::pin(async move {
                    <$storage>::connect(&url, &config)
                        .await
                        .map(byok_core::Store::new)
                })
            },
            lazy: |url, config, acquire, operation| {
                let pool = <$pool>::new()
                    .acquire_timeout(acquire)
                    .connect_lazy(url)
                    .expect("a lazy pool");
                let store = <$storage>::from_pool(pool, config)?;
                let store = match operation {
                    Some(timeout) => store.with_operation_timeout(timeout)?,
                    None => store,
                };
                Ok(byok_core::Store::new(store))
            },
            driver_error: |e| {
                use byok_testkit::sql::DriverError;
                match e.downcast_ref::<byok_sql::sqlx::Error>()? {
                    byok_sql::sqlx::Error::Io(_) => Some(DriverError::Io),
                    byok_sql::sqlx::Error::Database(_) => Some(DriverError::Database),
                    _ => Some(DriverError::Other),
                }
            },
        }
    };
}
#[allow(unused_imports, reason = "each test binary uses one engine")]
pub(crate) use sql_engine;

/// What the test file of a server engine runs first: `setup()`, a
/// migrated store on a fresh table (or `None` without a server); the
/// conformance, admin and SQL engine suites; and the test of a server
/// that goes silent. `$storage` is the storage type, `$conn` its
/// connection, `$pool` its pool options, `$backend` its name and URL
/// scheme, `$port` its default port, `$server` the function of
/// `byok_testkit::services` that finds its server, and `$list_tables`
/// selects the names of the tables of the tests.
#[allow(unused_macros, reason = "the SQLite tests need no server")]
macro_rules! server_suites {
    ($storage:ident, $conn:ty, $pool:ty, $backend:literal, $port:literal, $server:path, $list_tables:expr) => {
        /// A migrated store on a fresh table, or `None` without a server.
        async fn setup() -> Option<crate::common::Scratch<$storage>> {
            let url = $server().await?;
            Some(
                crate::common::scratch::<$conn, _>(url, $list_tables, $storage::connect, $storage::migrate)
                    .await,
            )
        }

        byok_testkit::conformance_tests!(maybe: setup().await);
        byok_testkit::admin_conformance_tests!(maybe: setup().await);
        byok_testkit::sql_engine_tests!(ENGINE);

        const ENGINE: byok_testkit::sql::SqlEngine =
            crate::common::sql_engine!($storage, $pool, $backend, $server);

        #[tokio::test]
        async fn a_server_that_goes_silent_fails_the_operation_with_a_retryable_timeout() {
            let Some(s) = setup().await else { return };
            let url = $server().await.expect("the server answered setup");
            crate::common::a_server_that_goes_silent(
                &url,
                $port,
                s.store.table_name(),
                |pool, config, deadline| {
                    let store = $storage::from_pool(pool, config)?;
                    match deadline {
                        Some(d) => store.with_operation_timeout(d),
                        None => Ok(store),
                    }
                },
            )
            .await;
        }
    };
}
#[allow(unused_imports, reason = "the SQLite tests need no server")]
pub(crate) use server_suites;

/// A loopback TCP proxy to `upstream` that can go silent: after
/// [`SilentProxy::freeze`], it forwards nothing more either way but keeps
/// every connection open, as a server that vanished without closing its
/// sockets (a crashed host, a cut network) looks to a client.
pub(crate) struct SilentProxy {
    pub(crate) port: u16,
    frozen: std::sync::Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentProxy {
    pub(crate) async fn start(upstream: (String, u16)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&frozen);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream.clone()).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(
                    client_read,
                    server_write,
                    std::sync::Arc::clone(&flag),
                ));
                tokio::spawn(forward(
                    server_read,
                    client_write,
                    std::sync::Arc::clone(&flag),
                ));
            }
        });
        SilentProxy { port, frozen, task }
    }

    /// From now on, nothing passes; the connections stay open.
    pub(crate) fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: std::sync::Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            // Hold both halves open and never answer again.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A store whose server goes silent fails its next operation at the
/// operation deadline with a retryable `Timeout` whose source is the
/// timer. The store is `open`ed (with the operation deadline when given)
/// over a pool of one connection, through a proxy to the server at `url`
/// that freezes once the connection is back in the pool, on `table`,
/// which is migrated.
pub(crate) async fn a_server_that_goes_silent<DB, S>(
    url: &str,
    default_port: u16,
    table: &str,
    open: impl Fn(Pool<DB>, &ByokConfig, Option<Duration>) -> Result<S>,
) where
    DB: Database,
    S: KeyStorage,
{
    use std::error::Error as _;
    let no_hang = byok_testkit::sql::NO_HANG;
    let proxy = SilentProxy::start(upstream(url, default_port)).await;
    let pool = PoolOptions::<DB>::new()
        .max_connections(1)
        .acquire_timeout(no_hang)
        // As in `connect`'s pool: the statement itself meets the silence.
        .test_before_acquire(false)
        .connect(&on_loopback_port(url, proxy.port))
        .await
        .expect("a pool through the proxy");
    let config = ByokConfig::default().with_db_table_name(table);
    let store = open(pool.clone(), &config, None).expect("a store");
    let key = ApiKey::new("u", "p", vec![1]).expect("a key");
    store.store(&key).await.expect("store");
    assert_eq!(store.retrieve("u", "p").await.expect("retrieve"), Some(key));

    // Once the connection is back in the pool (sqlx pings it on the way),
    // the server neither answers nor closes it any more.
    let start = std::time::Instant::now();
    while pool.num_idle() < 1 {
        assert!(start.elapsed() < no_hang, "the connection never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.freeze();
    let store = open(pool, &config, Some(Duration::from_millis(500))).expect("a store");
    let err = tokio::time::timeout(no_hang, store.retrieve("u", "p"))
        .await
        .expect("the operation gave up by itself")
        .expect_err("the server is silent");
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, byok_core::StorageErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    let source = storage.source().expect("the timer is kept as the source");
    assert!(source.is::<tokio::time::error::Elapsed>(), "{source:?}");
}

/// The host and port of a service URL.
pub(crate) fn upstream(url: &str, default_port: u16) -> (String, u16) {
    let parsed = url::Url::parse(url).expect("a service URL");
    let host = parsed.host_str().expect("a host").to_owned();
    (host, parsed.port().unwrap_or(default_port))
}

/// A service URL pointed at a port on loopback instead (a proxy's).
pub(crate) fn on_loopback_port(url: &str, port: u16) -> String {
    let mut parsed = url::Url::parse(url).expect("a service URL");
    parsed
        .set_host(Some("127.0.0.1"))
        .expect("the URL takes a host");
    parsed.set_port(Some(port)).expect("the URL takes a port");
    parsed.into()
}

/// `a` and `b`, two stores on a table of the first layout that holds the
/// rows [`old_layout_rows_read_back`] checks: the table serves reads and
/// its status is `Older` (version 1) before `migrate`, which runs from
/// both at once, then once more, and leaves it `UpToDate`.
pub(crate) async fn upgrade_from_the_first_layout(a: &dyn StoreAdmin, b: &dyn StoreAdmin) {
    // The old layout still serves reads before its upgrade.
    assert_eq!(a.user_keys("alice").await.expect("a read").len(), 2);
    assert!(
        a.retrieve("alice", "openai")
            .await
            .expect("a read")
            .is_some()
    );

    // What migrate would do is told without doing it.
    let older = SchemaStatus::Older {
        found: 1,
        current: 3,
    };
    assert_eq!(a.schema_status().await.expect("a read"), older);
    assert_eq!(a.schema_status().await.expect("a read"), older);

    // Two processes upgrading at once, then once more.
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("migrate");
    rb.expect("migrate");
    a.migrate().await.expect("migrate");
    assert_eq!(
        b.schema_status().await.expect("a read"),
        SchemaStatus::UpToDate
    );
}

/// Unix milliseconds of 2026-01-01, the creation time of the rows that
/// [`old_layout_rows_read_back`] checks.
pub(crate) const OLD_CREATED_MS: i64 = 1_767_225_600_000;
/// Unix milliseconds of 2100-01-01, the expiry of one of those rows.
pub(crate) const OLD_EXPIRES_MS: i64 = 4_102_444_800_000;

/// After `migrate` of a table of the first layout that held, written by
/// hand, alice/openai (value 01 02, hint `sk-...abcd`, no expiry),
/// alice/anthropic (value 03, no hint, expiring in 2100) and bob/openai
/// (value 04, expired in 1970), all created at [`OLD_CREATED_MS`]: every
/// row reads back whole, and the migrated table takes writes and purges.
pub(crate) async fn old_layout_rows_read_back(store: &dyn KeyStorage) {
    let created = Utc
        .timestamp_millis_opt(OLD_CREATED_MS)
        .single()
        .expect("a time");
    let expires = Utc
        .timestamp_millis_opt(OLD_EXPIRES_MS)
        .single()
        .expect("a time");
    let keys = store.user_keys("alice").await.expect("user_keys");
    let expected = [
        ApiKey::new("alice", "anthropic", vec![3])
            .expect("a key")
            .with_created_at(created)
            .with_expires_at(Some(expires)),
        ApiKey::new("alice", "openai", vec![1, 2])
            .expect("a key")
            .with_hint(Some("sk-...abcd".to_owned()))
            .expect("a hint")
            .with_created_at(created),
    ];
    assert_eq!(keys, expected);
    assert_eq!(
        store.retrieve("alice", "openai").await.expect("retrieve"),
        Some(expected[1].clone())
    );
    assert_eq!(
        store.retrieve("bob", "openai").await.expect("retrieve"),
        None
    );
    let page = store.scan(None, 10).await.expect("scan");
    assert_eq!(page.keys, expected);

    // The slot is still unique: a store replaces, it does not add.
    let new = ApiKey::new("alice", "openai", vec![9]).expect("a key");
    store.store(&new).await.expect("store");
    assert_eq!(
        store.retrieve("alice", "openai").await.expect("retrieve"),
        Some(new.clone())
    );
    assert_eq!(
        store.list_providers("alice").await.expect("list"),
        ["anthropic", "openai"]
    );
    assert!(
        store
            .compare_and_swap(&new, &new.clone().with_encrypted_value(vec![8]))
            .await
            .expect("swap")
    );
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    assert!(store.delete("alice", "anthropic").await.expect("delete"));
}

/// A check text as [`CheckRecord::encode`](byok_core::CheckRecord::encode)
/// makes them, with quotes, a backslash and a non-ASCII letter.
pub(crate) const CHECK_TEXT: &str = r#"{"o":"invalid","s":"Refusé: \"no\"","t":1767225600000}"#;

/// `a` and `b`, two stores opened by this version on a table of the
/// second layout (without the column of kept checks), which today's
/// statements filled with the rows that [`old_layout_rows_read_back`]
/// checks; `late` and `slow`, two more, that read the table's columns
/// again every time and once an hour.
///
/// Before `migrate`, the table serves every operation but checks: its
/// status is `Older` (version 2), no check is found, and `store_check` is
/// refused with a `Rejected` error that asks for `byok migrate`. `migrate`
/// runs from `a` and `b` at once, then once more; then every store that
/// ran it, or reads the columns again, keeps checks, and `slow` still
/// refuses them until its next read of the columns.
pub(crate) async fn upgrade_from_the_second_layout(
    a: &dyn StoreAdmin,
    b: &dyn StoreAdmin,
    late: &dyn StoreAdmin,
    slow: &dyn StoreAdmin,
) {
    let older = SchemaStatus::Older {
        found: 2,
        current: 3,
    };
    assert_eq!(a.schema_status().await.expect("a read"), older);
    assert_eq!(a.schema_status().await.expect("a read"), older);

    // Every existing operation works as before.
    assert_eq!(a.user_keys("alice").await.expect("a read").len(), 2);
    assert_eq!(
        a.list_providers("alice").await.expect("a read"),
        ["anthropic", "openai"]
    );
    let carol = ApiKey::new("carol", "openai", vec![5, 6]).expect("a key");
    b.store(&carol).await.expect("store");
    assert_eq!(
        a.retrieve("carol", "openai").await.expect("a read"),
        Some(carol.clone())
    );
    assert!(a.delete("carol", "openai").await.expect("delete"));

    // Checks: none found, none kept, and a typed refusal that says why.
    for store in [a, b, late, slow] {
        assert_eq!(store.checks("alice").await.expect("checks"), []);
        let err = store
            .store_check("alice", "openai", CHECK_TEXT)
            .await
            .expect_err("no column to keep the check in");
        let kind = match &err {
            byok_core::ByokError::Storage(e) => Some(e.kind),
            _ => None,
        };
        assert_eq!(kind, Some(byok_core::StorageErrorKind::Rejected), "{err}");
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("byok migrate"), "{err}");
    }
    // A refusal wrote nothing, and the layout is as it was.
    assert_eq!(a.schema_status().await.expect("a read"), older);

    // Two processes upgrading at once, then once more.
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("migrate");
    rb.expect("migrate");
    a.migrate().await.expect("migrate");
    assert_eq!(
        b.schema_status().await.expect("a read"),
        SchemaStatus::UpToDate
    );

    // The stores that migrated keep checks at once; `late` reads the
    // columns again and finds the new one, without a restart.
    assert!(
        a.store_check("alice", "openai", CHECK_TEXT)
            .await
            .expect("store_check")
    );
    assert!(
        late.store_check("bob", "openai", "expired, still kept")
            .await
            .expect("store_check")
    );
    assert!(
        !b.store_check("alice", "mistral", CHECK_TEXT)
            .await
            .expect("store_check"),
        "no key, no check"
    );
    let kept = vec![("openai".to_owned(), CHECK_TEXT.to_owned())];
    assert_eq!(b.checks("alice").await.expect("checks"), kept);
    assert_eq!(late.checks("alice").await.expect("checks"), kept);
    // `slow` trusts what it read an hour long: still no checks, and
    // every other operation unchanged.
    assert_eq!(slow.checks("alice").await.expect("checks"), []);
    assert!(slow.store_check("alice", "openai", "x").await.is_err());
    assert_eq!(slow.user_keys("alice").await.expect("a read").len(), 2);
    assert_eq!(b.checks("alice").await.expect("checks"), kept);
}
