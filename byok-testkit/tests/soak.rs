//! The soak is only worth running if it catches what it claims to: it
//! passes on the memory store, and finds the bugs planted here.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use byok_core::{ApiKey, Cursor, KeyStorage, Result, ScanPage, async_trait};
use byok_memory::MemoryStorage;
use byok_testkit::soak::{SoakConfig, soak};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bug {
    /// Compare-and-swap reads, waits, then writes: not atomic.
    RacySwap,
    /// Expiry is dropped on the way in, so expired keys stay visible.
    DropsExpiry,
    /// `delete` reports success without removing anything.
    LostDelete,
}

#[derive(Debug)]
struct Buggy {
    inner: MemoryStorage,
    bug: Bug,
}

#[async_trait]
impl KeyStorage for Buggy {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        if self.bug == Bug::DropsExpiry {
            return self.inner.store(&key.clone().with_expires_at(None)).await;
        }
        self.inner.store(key).await
    }
    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        self.inner.retrieve(user_id, provider).await
    }
    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        if self.bug == Bug::LostDelete {
            return Ok(self.inner.retrieve(user_id, provider).await?.is_some());
        }
        self.inner.delete(user_id, provider).await
    }
    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.inner.list_providers(user_id).await
    }
    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        self.inner.clear_all(user_id).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.inner.purge_expired().await
    }
    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        if self.bug == Bug::RacySwap {
            let stored = self
                .inner
                .retrieve(current.user_id(), current.provider())
                .await?;
            if stored.is_none_or(|s| s.encrypted_value() != current.encrypted_value()) {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.inner.store(new).await?;
            return Ok(true);
        }
        self.inner.compare_and_swap(current, new).await
    }
    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.inner.scan(cursor, limit).await
    }
}

fn config() -> SoakConfig {
    SoakConfig {
        ops_per_task: 200,
        ..SoakConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_soaks_clean() {
    let report = soak(Arc::new(MemoryStorage::new()), &SoakConfig::default()).await;
    let _ = writeln!(std::io::stderr(), "soak memory: {report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.ops, 16 * 320);
    assert!(
        report.increments > 0 && report.expired_checks > 0,
        "{report}"
    );
}

async fn finds(bug: Bug) -> u64 {
    let store = Buggy {
        inner: MemoryStorage::new(),
        bug,
    };
    let report = soak(Arc::new(store), &config()).await;
    assert_eq!(report.other_errors, 0, "{report}");
    report.mismatches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_that_is_not_atomic_is_caught() {
    assert!(finds(Bug::RacySwap).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_drops_expiry_is_caught() {
    assert!(finds(Bug::DropsExpiry).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_removes_nothing_is_caught() {
    assert!(finds(Bug::LostDelete).await > 0);
}
