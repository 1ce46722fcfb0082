//! Tracing spans and metrics around every storage and manager operation.
//!
//! Observation wraps the operations from outside, as a layer, rather than
//! being written into each backend: [`ObservedStorage`] wraps any
//! [`KeyStorage`] (the `byok::connect` functions apply it, naming the
//! backend), and the [`Byok`](crate::Byok) manager observes its own
//! operations.
//!
//! # Spans
//!
//! | span | level | fields |
//! |---|---|---|
//! | `byok.manager` | `INFO` | `operation` (`get_key`, `set_key`, …), `outcome`, `error_kind`, `duration_ms` |
//! | `byok.storage` | `DEBUG` | `backend` (`postgres`, `redis`, …), `operation` (`retrieve`, `store`, …), `outcome`, `error_kind`, `duration_ms` |
//!
//! `outcome` is `ok` or `error`; `error_kind` (on errors only) is one of
//! `unavailable`, `timeout`, `corrupt`, `rejected`, `other` (another
//! storage failure), `not_replicated` (the names of
//! [`StorageErrorKind::as_str`](crate::StorageErrorKind::as_str)),
//! `decryption`, `encryption`, `not_found`, `invalid_input` and `config`
//! (see [`error_kind`]). A storage error that leaves an
//! [`ObservedStorage`] or the manager names its operation
//! ([`StorageError::operation`](crate::StorageError::operation)). A storage span is the child of the manager span
//! of the call that made it. No span or metric carries a user id, a
//! provider, a key, a hint or a ciphertext: ids stay out unless the
//! application records them in a span of its own around the call.
//!
//! # Metrics
//!
//! With the `metrics` cargo feature, operations also report to whatever
//! recorder the application installed for the [`metrics`] crate (a
//! Prometheus exporter, for instance); without a recorder this costs next to
//! nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `byok_manager_operations_total` | counter | `operation`, `outcome` |
//! | `byok_manager_operation_duration_seconds` | histogram | `operation` |
//! | `byok_storage_operations_total` | counter | `backend`, `operation`, `outcome` |
//! | `byok_storage_operation_duration_seconds` | histogram | `backend`, `operation` |
//! | `byok_decryption_failures_total` | counter | |
//! | `byok_purged_keys_total` | counter | `backend` |
//! | `byok_tiered_lookups_total` | counter | `result` (`hit`, `miss`) |
//!
//! Failed operations also add `error_kind` to the `…_operations_total`
//! counters.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::error::{ByokError, EncryptionError, Result};
use crate::key::ApiKey;
use crate::storage::{Cursor, KeyStorage, ScanPage};
use crate::store::{SchemaStatus, StoreAdmin, StoreStats};

/// A [`KeyStorage`] that puts a `byok.storage` span (and, with the
/// `metrics` feature, a count and a latency) around every operation of the
/// store it wraps.
///
/// ```
/// use std::sync::Arc;
/// use byok_core::observe::ObservedStorage;
/// use byok_core::{Byok, ByokConfig, KeyStorage, Keyring, MasterKey};
/// # use byok_memory::MemoryStorage;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> byok_core::Result<()> {
/// let store = ObservedStorage::of(MemoryStorage::new());
/// assert_eq!(store.backend(), "memory");
/// let storage: Arc<dyn KeyStorage> = Arc::new(store);
/// let byok = Byok::new(storage, Keyring::new(1, MasterKey::generate()), ByokConfig::default())?;
/// // Runs in a `byok.manager` span around a `byok.storage` span.
/// assert!(byok.get_key("alice", "openai").await?.is_none());
/// # Ok(())
/// # }
/// ```
///
/// Its `Debug` output is the wrapped store's: the layer is transparent.
#[derive(Clone)]
pub struct ObservedStorage<S> {
    inner: S,
    backend: &'static str,
}

impl<S: fmt::Debug> fmt::Debug for ObservedStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<S: StoreAdmin> ObservedStorage<S> {
    /// Wraps `store`, whose spans and metrics carry the store's own name,
    /// [`StoreAdmin::backend`]. The result is a [`StoreAdmin`] too, its
    /// operations observed as well: this is the [`Store`](crate::Store)
    /// that `byok::connect` returns.
    pub fn of(store: S) -> Self {
        let backend = store.backend();
        ObservedStorage {
            inner: store,
            backend,
        }
    }
}

impl<S: KeyStorage> ObservedStorage<S> {
    /// Wraps `inner`, whose spans and metrics carry `backend` (such as
    /// `"postgres"`) as the backend's name; for a store without a
    /// [`StoreAdmin`] side. A store with one is wrapped with
    /// [`of`](Self::of).
    pub fn new(inner: S, backend: &'static str) -> Self {
        ObservedStorage { inner, backend }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The backend's name in spans and metrics.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    async fn run<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::debug_span!(
            "byok.storage",
            backend = self.backend,
            operation,
            outcome = Empty,
            error_kind = Empty,
            duration_ms = Empty,
        );
        let start = Instant::now();
        let result = crate::error::name_operation(work.instrument(span.clone()).await, operation);
        let elapsed = start.elapsed();
        let kind = record(&span, &result, Some(elapsed));
        #[cfg(feature = "metrics")]
        {
            let labels = [("backend", self.backend), ("operation", operation)];
            count("byok_storage_operations_total", &labels, kind);
            metrics::histogram!("byok_storage_operation_duration_seconds", &labels)
                .record(elapsed.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = kind;
        result
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: KeyStorage> KeyStorage for ObservedStorage<S> {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        self.run("store", self.inner.store(key)).await
    }

    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        self.run("store_if_absent", self.inner.store_if_absent(key))
            .await
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        self.run("retrieve", self.inner.retrieve(user_id, provider))
            .await
    }

    async fn retrieve_value(&self, user_id: &str, provider: &str) -> Result<Option<Arc<[u8]>>> {
        self.run(
            "retrieve_value",
            self.inner.retrieve_value(user_id, provider),
        )
        .await
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        self.run("delete", self.inner.delete(user_id, provider))
            .await
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.run("list_providers", self.inner.list_providers(user_id))
            .await
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        self.run("clear_all", self.inner.clear_all(user_id)).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        let purged = self
            .run("purge_expired", self.inner.purge_expired())
            .await?;
        purged_keys(self.backend, purged);
        Ok(purged)
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        self.run(
            "compare_and_swap",
            self.inner.compare_and_swap(current, new),
        )
        .await
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.run("scan", self.inner.scan(cursor, limit)).await
    }

    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.run("user_keys", self.inner.user_keys(user_id)).await
    }

    async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
        self.run(
            "store_check",
            self.inner.store_check(user_id, provider, check),
        )
        .await
    }

    async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.run("checks", self.inner.checks(user_id)).await
    }

    /// The inner store's: the steps of leased fills are not observed one
    /// by one (the `TieredStorage` over them counts hits and misses).
    fn as_fast_tier(&self) -> Option<&dyn crate::tiered::FastTier> {
        self.inner.as_fast_tier()
    }
}

/// The admin side of the wrapped store, each operation in a
/// `byok.storage` span like those of [`KeyStorage`].
#[async_trait]
impl<S: StoreAdmin> StoreAdmin for ObservedStorage<S> {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn migrate(&self) -> Result<()> {
        self.run("migrate", self.inner.migrate()).await
    }

    async fn schema_status(&self) -> Result<SchemaStatus> {
        self.run("schema_status", self.inner.schema_status()).await
    }

    async fn count_expired(&self) -> Result<Option<u64>> {
        self.run("count_expired", self.inner.count_expired()).await
    }

    async fn count(&self) -> Result<u64> {
        self.run("count", self.inner.count()).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.run("stats", self.inner.stats()).await
    }

    async fn destroy(&self) -> Result<()> {
        self.run("destroy", self.inner.destroy()).await
    }
}

/// Runs one operation of the manager in a `byok.manager` span, and counts
/// and times it.
pub(crate) async fn manager<T>(
    operation: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let span = tracing::info_span!(
        "byok.manager",
        operation,
        outcome = Empty,
        error_kind = Empty,
        duration_ms = Empty,
    );
    // Timed only when the time can be read: by a subscriber that wants the
    // span, by a `log` logger (tracing's `log` feature hands span fields to
    // it when no subscriber is set), or as a metric.
    let timed = cfg!(feature = "metrics")
        || !span.is_disabled()
        || log::max_level() >= log::LevelFilter::Info;
    let start = timed.then(Instant::now);
    let result = crate::error::name_operation(work.instrument(span.clone()).await, operation);
    let elapsed = start.map(|start| start.elapsed());
    let kind = record(&span, &result, elapsed);
    if let Err(ByokError::Encryption(e)) = &result
        && is_decryption_failure(e)
    {
        decryption_failure();
    }
    #[cfg(feature = "metrics")]
    {
        let labels = [("operation", operation)];
        count("byok_manager_operations_total", &labels, kind);
        metrics::histogram!("byok_manager_operation_duration_seconds", &labels)
            .record(elapsed.unwrap_or_default().as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = kind;
    result
}

/// Counts a key that could not be decrypted (a wrong master key, tampered
/// data), wherever it was met.
pub(crate) fn decryption_failure() {
    #[cfg(feature = "metrics")]
    metrics::counter!("byok_decryption_failures_total").increment(1);
}

/// Counts the keys a purge removed.
pub(crate) fn purged_keys(backend: &'static str, purged: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!("byok_purged_keys_total", "backend" => backend).increment(purged);
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, purged);
}

/// Counts a read of a [`TieredStorage`](crate::TieredStorage) that the fast
/// store answered (`hit`) or that went on to the durable store (`miss`).
pub(crate) fn tiered_lookup(hit: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!("byok_tiered_lookups_total", "result" => if hit { "hit" } else { "miss" })
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = hit;
}

fn is_decryption_failure(e: &EncryptionError) -> bool {
    !matches!(e, EncryptionError::EncryptFailed)
}

/// Records the outcome, the error kind and the duration (where it was
/// measured) on `span`; returns the error kind.
fn record<T>(span: &Span, result: &Result<T>, elapsed: Option<Duration>) -> Option<&'static str> {
    let kind = result.as_ref().err().map(error_kind);
    span.record("outcome", if kind.is_some() { "error" } else { "ok" });
    if let Some(kind) = kind {
        span.record("error_kind", kind);
    }
    if let Some(elapsed) = elapsed {
        span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
    }
    kind
}

#[cfg(feature = "metrics")]
fn count(name: &'static str, labels: &[(&'static str, &'static str)], kind: Option<&'static str>) {
    let mut all: Vec<(&'static str, &'static str)> = labels.to_vec();
    all.push(("outcome", if kind.is_some() { "error" } else { "ok" }));
    if let Some(kind) = kind {
        all.push(("error_kind", kind));
    }
    metrics::counter!(name, &all).increment(1);
}

/// A short, stable name for the kind of an error, for spans and metric
/// labels; it never holds anything of the error's message.
pub fn error_kind(error: &ByokError) -> &'static str {
    match error {
        ByokError::Storage(e) => e.kind.as_str(),
        ByokError::Encryption(EncryptionError::EncryptFailed) => "encryption",
        ByokError::Encryption(_) => "decryption",
        ByokError::KeyNotFound { .. } => "not_found",
        ByokError::InvalidInput(_) => "invalid_input",
        ByokError::Config(_) => "config",
    }
}
