//! `key_summary` reads a user's keys and their kept checks in two storage
//! calls, whatever the number of keys, and shows an expired key that the
//! store still returns as expired.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;

use byok::{
    ApiKey, Byok, ByokConfig, Cursor, KeyStorage, Keyring, MasterKey, MemoryStorage, Result,
    ScanPage, Ttl, async_trait,
};
use byok_testkit::layers::{CountingStorage, Op};

fn manager(storage: Arc<dyn KeyStorage>) -> Byok {
    let config = ByokConfig::for_tests();
    Byok::new(storage, Keyring::new(1, MasterKey::generate()), config).unwrap()
}

#[tokio::test]
async fn two_storage_calls_per_summary() {
    let counted = CountingStorage::new(MemoryStorage::new());
    let byok = manager(Arc::new(counted.clone()));
    for p in ["openai", "anthropic", "groq", "my_llm"] {
        byok.set_key("u", p, "sk-0123456789abcdefghij", Ttl::Default)
            .await
            .unwrap();
    }
    counted.reset();
    let summary = byok.key_summary("u").await.unwrap();
    let names: Vec<&str> = summary.iter().map(|s| s.display_name.as_str()).collect();
    assert_eq!(names, ["Anthropic", "Groq", "My Llm", "OpenAI"]);
    assert_eq!(counted.calls(Op::UserKeys), 1);
    assert_eq!(counted.calls(Op::Checks), 1);
    assert_eq!(counted.total(), 2, "storage calls for one summary");
}

/// TieredStorage overrides `user_keys` and `checks`: both reach the
/// durable store, nothing the fast one.
#[tokio::test]
async fn two_durable_calls_per_summary_through_tiered_storage() {
    let fast = CountingStorage::new(MemoryStorage::new());
    let durable = CountingStorage::new(MemoryStorage::new());
    let tiered = byok::TieredStorage::new(Arc::new(fast.clone()), Arc::new(durable.clone()));
    let byok = manager(Arc::new(tiered));
    for p in ["openai", "anthropic", "groq"] {
        byok.set_key("u", p, "sk-0123456789abcdefghij", Ttl::Default)
            .await
            .unwrap();
    }
    fast.reset();
    durable.reset();
    assert_eq!(byok.key_summary("u").await.unwrap().len(), 3);
    assert_eq!(durable.calls(Op::UserKeys), 1);
    assert_eq!(durable.calls(Op::Checks), 1);
    assert_eq!(durable.total(), 2, "durable store calls for one summary");
    assert_eq!(fast.total(), 0, "fast store calls for one summary");
}

/// A store whose `user_keys` also returns keys that expired but are not
/// purged yet, as the SQL and Redis backends may.
#[derive(Debug, Default)]
struct KeepsExpired {
    inner: MemoryStorage,
    expired: std::sync::Mutex<Vec<ApiKey>>,
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl KeyStorage for KeepsExpired {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        if key.is_expired() {
            self.expired.lock().unwrap().push(key.clone());
        }
        self.inner.store(key).await
    }
    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        let stored = self.inner.store_if_absent(key).await?;
        if stored && key.is_expired() {
            self.expired.lock().unwrap().push(key.clone());
        }
        Ok(stored)
    }
    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        self.inner.retrieve(user_id, provider).await
    }
    async fn retrieve_value(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<std::sync::Arc<[u8]>>> {
        self.inner.retrieve_value(user_id, provider).await
    }
    fn as_fast_tier(&self) -> Option<&dyn byok::FastTier> {
        None
    }
    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
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
        self.inner.compare_and_swap(current, new).await
    }
    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.inner.scan(cursor, limit).await
    }
    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        let mut keys = self.inner.user_keys(user_id).await?;
        keys.extend(
            self.expired
                .lock()
                .unwrap()
                .iter()
                .filter(|k| k.user_id() == user_id)
                .cloned(),
        );
        keys.sort_by(|a, b| a.provider().cmp(b.provider()));
        Ok(keys)
    }
    async fn store_check(&self, u: &str, p: &str, check: &str) -> Result<bool> {
        self.inner.store_check(u, p, check).await
    }
    async fn checks(&self, u: &str) -> Result<Vec<(String, String)>> {
        self.inner.checks(u).await
    }
}

#[tokio::test]
async fn expired_keys_the_store_returns_show_as_expired() {
    let store = Arc::new(KeepsExpired::default());
    let byok = manager(store.clone());
    byok.set_key("u", "openai", "sk-0123456789abcdefghij", Ttl::Never)
        .await
        .unwrap();
    let past = byok::key::now() - byok::chrono::Duration::hours(1);
    store
        .store(
            &ApiKey::new("u", "groq", vec![1, 2, 3])
                .unwrap()
                .with_hint(Some("gsk_...wxyz".into()))
                .unwrap()
                .with_expires_at(Some(past)),
        )
        .await
        .unwrap();

    let summary = byok.key_summary("u").await.unwrap();
    assert_eq!(summary.len(), 2, "{summary:?}");
    let groq = &summary[0];
    assert_eq!(groq.provider, "groq");
    assert!(groq.is_expired);
    assert_eq!(groq.expires, "Expired");
    assert_eq!(groq.hint, "gsk_...wxyz");
    let openai = &summary[1];
    assert!(!openai.is_expired);
    assert_eq!(openai.expires, "Never");
}
