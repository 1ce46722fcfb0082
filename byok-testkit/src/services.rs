//! Finding the servers that backend tests run against.
//!
//! Each helper reads its environment variable, or falls back to the
//! service's default loopback address, and checks that something answers
//! there. When nothing does, it prints one clear line such as
//! `skipped: no Redis at redis://127.0.0.1:6379 (…)` to the terminal and
//! returns `None`, so that `cargo test` passes on a machine without the
//! servers — unless `BYOK_TEST_REQUIRE_SERVICES=1`, when it panics instead,
//! so that CI cannot skip silently.
//!
//! | service | variable | default |
//! |---|---|---|
//! | Redis | `BYOK_TEST_REDIS_URL` | `redis://127.0.0.1:6379` |
//! | Redis Cluster | `BYOK_TEST_REDIS_CLUSTER_URLS` (comma-separated nodes) | none |
//! | PostgreSQL | `BYOK_TEST_POSTGRES_URL` | `postgres://postgres@127.0.0.1:5432/test` |
//! | MySQL/MariaDB | `BYOK_TEST_MYSQL_URL` | `mysql://root@127.0.0.1:3306/test` |
//!
//! The TLS tests read the variables that `scripts/tls-servers.sh` exports
//! (`BYOK_TEST_POSTGRES_TLS_URL`, `BYOK_TEST_MYSQL_TLS_URL`,
//! `BYOK_TEST_TLS_CA`, `BYOK_TEST_TLS_OTHER_CA`) through [`from_env`].

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// The variable that turns skips into failures when set to `1` or `true`.
pub const REQUIRE_SERVICES_VAR: &str = "BYOK_TEST_REQUIRE_SERVICES";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether missing services must fail the tests (`BYOK_TEST_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    matches!(
        std::env::var(REQUIRE_SERVICES_VAR).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// The URL of the test Redis, if one answers.
pub async fn redis_url() -> Option<String> {
    locate(
        "Redis",
        "BYOK_TEST_REDIS_URL",
        "redis://127.0.0.1:6379",
        6379,
    )
    .await
}

/// The URL of the test PostgreSQL, if one answers.
pub async fn postgres_url() -> Option<String> {
    locate(
        "PostgreSQL",
        "BYOK_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        5432,
    )
    .await
}

/// The URL of the test MySQL or MariaDB, if one answers.
pub async fn mysql_url() -> Option<String> {
    locate(
        "MySQL",
        "BYOK_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
        3306,
    )
    .await
}

/// The node URLs of the test Redis Cluster, if every node answers.
///
/// A cluster has no default address: without `BYOK_TEST_REDIS_CLUSTER_URLS`
/// the tests skip (or fail, when services are required).
pub async fn redis_cluster_urls() -> Option<Vec<String>> {
    const VAR: &str = "BYOK_TEST_REDIS_CLUSTER_URLS";
    let Some(list) = std::env::var(VAR).ok().filter(|v| !v.trim().is_empty()) else {
        unavailable("Redis Cluster", &format!("({VAR} is not set)"));
        return None;
    };
    let urls: Vec<String> = list
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    for url in &urls {
        if let Err(why) = reachable(url, 6379).await {
            unavailable("Redis Cluster", &format!("at {}: {why}", redact(url)));
            return None;
        }
    }
    Some(urls)
}

/// The value of `env_var`, for a service that has no default address
/// (such as the throwaway TLS servers of `scripts/tls-servers.sh`): when it
/// is unset or empty, a skip line (or a panic when services are required)
/// and `None`.
pub fn from_env(service: &str, env_var: &str) -> Option<String> {
    let value = std::env::var(env_var).ok().filter(|v| !v.trim().is_empty());
    if value.is_none() {
        unavailable(service, &format!("({env_var} is not set)"));
    }
    value
}

/// The URL of a service from `env_var` or `default_url`, if a TCP
/// connection to it succeeds; otherwise a skip line (or a panic when
/// services are required) and `None`.
pub async fn locate(
    service: &str,
    env_var: &str,
    default_url: &str,
    default_port: u16,
) -> Option<String> {
    let url = std::env::var(env_var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default_url.to_owned());
    match reachable(&url, default_port).await {
        Ok(()) => Some(url),
        Err(why) => {
            unavailable(service, &format!("at {}: {why}", redact(&url)));
            None
        }
    }
}

async fn reachable(url: &str, default_port: u16) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let Some(host) = parsed.host_str() else {
        // A Unix socket or a file: nothing to probe over TCP.
        return Ok(());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port().unwrap_or(default_port);
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[allow(clippy::panic, reason = "failing the test is the documented behaviour")]
fn unavailable(service: &str, detail: &str) {
    if services_required() {
        panic!("{REQUIRE_SERVICES_VAR} is set, but there is no {service} {detail}");
    }
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let line = format!("skipped: no {service} {detail}");
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(line.clone()) {
        // Written to the process's stderr directly, not through `eprintln!`,
        // so that the test harness does not capture it.
        let _ = writeln!(
            std::io::stderr(),
            "{line} (set {REQUIRE_SERVICES_VAR}=1 to fail instead)"
        );
    }
}

/// The future a [`CleanupOnDrop`] runs: it reopens what it removes.
type CleanupFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Runs a cleanup when dropped, also when the test panics: for a test's
/// own table or key prefix on a shared server, which nobody else removes.
///
/// The cleanup runs on a thread and a runtime of its own (the test's
/// runtime may be unwinding), so it must open its own connection rather
/// than use the test's. A failed cleanup is reported on stderr.
///
/// ```
/// let guard = byok_testkit::services::CleanupOnDrop::new("nothing", || async { Ok(()) });
/// drop(guard);
/// ```
#[must_use = "the cleanup runs when the guard is dropped"]
pub struct CleanupOnDrop {
    what: String,
    cleanup: Option<Box<dyn FnOnce() -> CleanupFuture + Send + Sync>>,
}

impl std::fmt::Debug for CleanupOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanupOnDrop")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl CleanupOnDrop {
    /// A guard that runs `cleanup` on drop; `what` names it in a failure.
    pub fn new<F, Fut>(what: impl Into<String>, cleanup: F) -> Self
    where
        F: FnOnce() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        CleanupOnDrop {
            what: what.into(),
            cleanup: Some(Box::new(move || Box::pin(cleanup()) as CleanupFuture)),
        }
    }
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(cleanup())
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = writeln!(std::io::stderr(), "cleanup of {} failed: {e}", self.what);
            }
            Err(_) => {
                let _ = writeln!(std::io::stderr(), "cleanup of {} panicked", self.what);
            }
        }
    }
}

/// A store with a [`CleanupOnDrop`] that removes it: a `KeyStorage`
/// itself (so the conformance suite runs on it), and the store through
/// `Deref`.
#[derive(Debug)]
pub struct WithCleanup<S> {
    store: S,
    _cleanup: CleanupOnDrop,
}

impl<S> WithCleanup<S> {
    /// `store`, cleaned up by `cleanup` when dropped.
    pub fn new(store: S, cleanup: CleanupOnDrop) -> Self {
        WithCleanup {
            store,
            _cleanup: cleanup,
        }
    }
}

impl<S> std::ops::Deref for WithCleanup<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.store
    }
}

byok_core::forward_key_storage!(@impl [S: byok_core::KeyStorage] WithCleanup<S>, (self) => self.store);

/// The guarded store's admin side, so that the admin suite runs on it.
#[deny(clippy::missing_trait_methods)]
#[byok_core::async_trait]
impl<S: byok_core::StoreAdmin> byok_core::StoreAdmin for WithCleanup<S> {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }
    async fn migrate(&self) -> byok_core::Result<()> {
        self.store.migrate().await
    }
    async fn schema_status(&self) -> byok_core::Result<byok_core::SchemaStatus> {
        self.store.schema_status().await
    }
    async fn count_expired(&self) -> byok_core::Result<Option<u64>> {
        self.store.count_expired().await
    }
    async fn count(&self) -> byok_core::Result<u64> {
        self.store.count().await
    }
    async fn stats(&self) -> byok_core::Result<byok_core::StoreStats> {
        self.store.stats().await
    }
    async fn destroy(&self) -> byok_core::Result<()> {
        self.store.destroy().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact("postgres://app:hunter2@db:5432/keys"),
            "postgres://app:***@db:5432/keys"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert!(!redact("mysql://u:p%40ss@h/db").contains("p%40ss"));
    }

    #[tokio::test]
    async fn unreachable_service_is_reported() {
        // Port 1 on loopback: nothing listens there.
        let e = reachable("redis://127.0.0.1:1", 6379).await.unwrap_err();
        assert!(!e.is_empty());
        assert!(reachable("sqlite::memory:", 0).await.is_ok());
    }
}
