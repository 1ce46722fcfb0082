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

use byok_core::chrono::{DateTime, Duration as TimeDelta, TimeZone, Utc};
use std::sync::atomic::{AtomicBool, Ordering};

use byok_core::{ApiKey, ByokConfig, Cursor, KeyStorage, Result, ScanPage, async_trait};
use byok_sql::sqlx::{
    self, AssertSqlSafe, ColumnIndex, Connection, Database, Decode, Executor, IntoArguments, Type,
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

#[async_trait]
impl<S: KeyStorage> KeyStorage for Scratch<S> {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        self.store.store(key).await
    }
    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        self.store.store_if_absent(key).await
    }
    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        self.store.retrieve(user_id, provider).await
    }
    async fn retrieve_value(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<std::sync::Arc<[u8]>>> {
        self.store.retrieve_value(user_id, provider).await
    }
    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        self.store.delete(user_id, provider).await
    }
    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.store.list_providers(user_id).await
    }
    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        self.store.clear_all(user_id).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.store.purge_expired().await
    }
    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        self.store.compare_and_swap(current, new).await
    }
    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.store.scan(cursor, limit).await
    }
    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.store.user_keys(user_id).await
    }
}

/// A loopback port where nothing listens: port 1 (tcpmux) is privileged
/// and unused, so a connection is refused at once, and no other test or
/// server can take it in the meantime, as could happen to a port that was
/// free a moment ago.
pub(crate) fn closed_port() -> u16 {
    1
}

/// A loopback listener that accepts connections and never says a word, as
/// a hung server or a black-holing middlebox would; it lives as long as
/// the returned task, which holds every accepted socket open.
pub(crate) async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("a bound address").port();
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    (port, task)
}

/// The bound on a call that must fail by itself well before it: a
/// regression fails the test instead of hanging it.
pub(crate) const NO_HANG: Duration = Duration::from_secs(60);

/// Keys created and expiring after the year 9999 (where MySQL's `DATETIME`
/// stops), up to `chrono`'s last millisecond, are stored, found, swapped
/// and read back exactly, and are not purged.
pub(crate) async fn far_future_times_round_trip(store: &dyn KeyStorage) {
    let year_10000 = Utc
        .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
        .single()
        .expect("chrono holds the year 10000")
        + TimeDelta::milliseconds(123);
    let times = [
        year_10000,
        Utc.with_ymd_and_hms(99_999, 12, 31, 23, 59, 59)
            .single()
            .expect("chrono holds the year 99999"),
        DateTime::<Utc>::MAX_UTC,
    ];
    let mut providers = Vec::new();
    for (i, at) in times.into_iter().enumerate() {
        let provider = format!("far{i}");
        let key = ApiKey::new("far", provider.as_str(), vec![1, 2, 3])
            .expect("a valid key")
            .with_created_at(at)
            .with_expires_at(Some(at));
        assert_eq!(
            key.expires_at().map(|t| t.timestamp_millis()),
            Some(at.timestamp_millis())
        );
        store.store(&key).await.expect("store a far-future key");
        let back = store
            .retrieve("far", &provider)
            .await
            .expect("retrieve a far-future key");
        assert_eq!(back.as_ref(), Some(&key), "expiring at {at}");
        providers.push(provider);
    }
    assert_eq!(store.list_providers("far").await.expect("list"), providers);
    let page = store.scan(None, 10).await.expect("scan");
    assert_eq!(page.keys.len(), times.len());

    let current = store
        .retrieve("far", "far0")
        .await
        .expect("retrieve")
        .expect("the key is live");
    let swapped = current
        .clone()
        .with_encrypted_value(vec![9])
        .with_expires_at(Some(DateTime::<Utc>::MAX_UTC));
    assert!(
        store
            .compare_and_swap(&current, &swapped)
            .await
            .expect("swap a far-future key")
    );
    assert_eq!(
        store.retrieve("far", "far0").await.expect("retrieve"),
        Some(swapped)
    );
    assert_eq!(store.purge_expired().await.expect("purge"), 0);
}

/// Fails if `secret` shows in the `Display` or `Debug` of `err` or of any
/// error in its `source()` chain.
pub(crate) fn assert_hidden(err: &(dyn std::error::Error + 'static), secret: &str) {
    let mut next = Some(err);
    let mut depth = 0;
    while let Some(e) = next {
        let (display, debug) = (e.to_string(), format!("{e:?}"));
        assert!(
            !display.contains(secret),
            "source {depth} shows it: {display}"
        );
        assert!(!debug.contains(secret), "source {depth} shows it: {debug}");
        next = e.source();
        depth += 1;
    }
}

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

/// A scan cursor that is malformed, or that names a slot no key can have
/// (an id with NUL or another control character, an empty id), is refused
/// as invalid input naming the cursor, before anything reaches the
/// database.
pub(crate) async fn bad_cursors_are_invalid_input(store: &dyn KeyStorage) {
    use byok_core::ByokError;
    use byok_core::error::Field;
    let bad = [
        Cursor::after_slot("a\0b", "p"),
        Cursor::after_slot("u", "p\0"),
        Cursor::after_slot("u\n", "p"),
        Cursor::after_slot("", "p"),
        Cursor::after_slot("u", ""),
        Cursor::new("no length"),
        Cursor::new("99:short"),
    ];
    for cursor in &bad {
        let result = store.scan(Some(cursor), 10).await;
        assert!(
            matches!(&result, Err(ByokError::InvalidInput(e)) if e.field == Field::Cursor),
            "{cursor:?}: {result:?}"
        );
    }
}

/// `user_keys` answers with one read that includes a key which has expired
/// but is not purged yet (the fallback of the trait, a `list_providers`
/// and a `retrieve` per provider, never does), sorted by provider bytes.
pub(crate) async fn user_keys_include_expired_keys_in_byte_order(store: &dyn KeyStorage) {
    let past = Some(byok_core::key::now() - TimeDelta::seconds(5));
    for (provider, expires) in [("b", None), ("B", past), ("a", None), ("é", None)] {
        let key = ApiKey::new("keys", provider, vec![1])
            .expect("a valid key")
            .with_expires_at(expires);
        store.store(&key).await.expect("store");
    }
    let keys = store.user_keys("keys").await.expect("user_keys");
    let providers: Vec<&str> = keys.iter().map(ApiKey::provider).collect();
    assert_eq!(providers, ["B", "a", "b", "é"]);
    assert!(keys[0].is_expired());
    assert!(keys[1..].iter().all(|k| !k.is_expired()));
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
