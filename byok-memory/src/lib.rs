//! In-memory storage for byok: [`MemoryStorage`].
//!
//! The backend for tests, single-process applications and session-scoped
//! keys. It is concurrent without a global lock (keys are sharded by user),
//! cheap to clone (clones share the same keys), and enforces expiry on every
//! read. `list_providers` and `clear_all` cost time proportional to that
//! user's keys, never to all keys.
//!
//! ```
//! use byok_core::{ApiKey, KeyStorage};
//! use byok_memory::MemoryStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> byok_core::Result<()> {
//! let store = MemoryStorage::new();
//! store.store(&ApiKey::new("alice", "openai", b"ciphertext".to_vec())?).await?;
//! assert_eq!(store.list_providers("alice").await?, ["openai"]);
//! assert!(store.retrieve("bob", "openai").await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! Nothing survives a restart of the process; keys are lost with it by
//! design. Use a SQL or Redis backend for keys that must last.

use std::collections::BinaryHeap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use byok_core::error::ConfigError;
use byok_core::storage::check_same_slot;
use byok_core::{ApiKey, ByokConfig, Cursor, KeyStorage, Result, ScanPage, key, validate};
use dashmap::DashMap;

/// How often the background sweeper purges expired keys by default.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Keys of one user, sorted by provider.
///
/// A vector rather than a map: users hold a handful of keys (often one, a
/// session's), a binary search over a few entries is as fast as a map, and
/// it costs one allocation of exactly the keys held. Each `ApiKey` shares
/// its buffers, so reading one copies no bytes.
#[derive(Default)]
struct UserKeys(Vec<ApiKey>);

impl UserKeys {
    fn find(&self, provider: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|k| k.provider().cmp(provider))
    }

    fn get(&self, provider: &str) -> Option<&ApiKey> {
        self.find(provider).ok().map(|i| &self.0[i])
    }

    fn put(&mut self, key: &ApiKey) {
        match self.find(key.provider()) {
            Ok(i) => self.0[i] = key.clone(),
            Err(i) => {
                // Grow by one: most users keep one to four keys.
                self.0.reserve_exact(1);
                self.0.insert(i, key.clone());
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `key` is live at `now`, reading the clock only for keys that
/// expire at all.
fn is_live(key: &ApiKey, now: &mut Option<chrono::DateTime<chrono::Utc>>) -> bool {
    match key.expires_at() {
        None => true,
        Some(at) => at > *now.get_or_insert_with(chrono::Utc::now),
    }
}

/// In-memory [`KeyStorage`].
///
/// Clones share the same keys. See the [crate docs](crate).
#[derive(Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The map's key shares its buffer with the `user_id` of the user's
    /// first key, so each id is held once.
    users: DashMap<Arc<str>, UserKeys>,
}

impl MemoryStorage {
    /// An empty store without a background sweeper.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store configured from `config`: when `auto_cleanup` is on,
    /// a background task purges expired keys every
    /// [`DEFAULT_SWEEP_INTERVAL`]. Needs a Tokio runtime in that case.
    pub fn from_config(config: &ByokConfig) -> Result<Self> {
        let store = Self::new();
        if config.auto_cleanup {
            store.start_sweeper(DEFAULT_SWEEP_INTERVAL)?;
        }
        Ok(store)
    }

    /// Starts a background task on the current Tokio runtime that purges
    /// expired keys every `interval`. The task ends by itself once every
    /// clone of this store has been dropped.
    pub fn start_sweeper(&self, interval: Duration) -> Result<()> {
        if interval.is_zero() {
            return Err(ConfigError::new("the sweep interval must be longer than zero").into());
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            ConfigError::new("the memory sweeper needs a running Tokio runtime").with_source(e)
        })?;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        handle.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let purged = inner.purge(key::now());
                if purged > 0 {
                    tracing::debug!(purged, "memory store purged expired keys");
                }
            }
        });
        Ok(())
    }

    /// How many keys are stored, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.inner.users.iter().map(|u| u.len()).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.inner.users.is_empty()
    }
}

impl Inner {
    fn purge(&self, now: chrono::DateTime<chrono::Utc>) -> u64 {
        let mut purged = 0u64;
        self.users.retain(|_, keys| {
            let before = keys.len();
            keys.0.retain(|k| !k.is_expired_at(now));
            purged += (before - keys.len()) as u64;
            !keys.is_empty()
        });
        purged
    }
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("users", &self.inner.users.len())
            .finish()
    }
}

#[async_trait]
impl KeyStorage for MemoryStorage {
    async fn store(&self, k: &ApiKey) -> Result<()> {
        // The user usually exists: look it up by reference first, and make
        // a map key only for a new user.
        if let Some(mut keys) = self.inner.users.get_mut(k.user_id()) {
            keys.put(k);
            return Ok(());
        }
        self.inner
            .users
            .entry(k.user_id_shared())
            .or_default()
            .put(k);
        Ok(())
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        if let Some(keys) = self.inner.users.get(user_id)
            && let Some(k) = keys.get(provider)
        {
            // Found, so both ids equal stored, valid ones: no validation.
            return Ok(is_live(k, &mut None).then(|| k.clone()));
        }
        // Not found: invalid input is still an error, not a miss.
        validate::slot(user_id, provider)?;
        Ok(None)
    }

    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        validate::user_id(user_id)?;
        let Some(keys) = self.inner.users.get(user_id) else {
            return Ok(Vec::new());
        };
        // Sorted by provider already. Only live keys, as `retrieve` and
        // `list_providers` of this store see them.
        let mut now = None;
        Ok(keys
            .0
            .iter()
            .filter(|k| is_live(k, &mut now))
            .cloned()
            .collect())
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        validate::slot(user_id, provider)?;
        let removed = match self.inner.users.get_mut(user_id) {
            Some(mut keys) => match keys.find(provider) {
                Ok(i) => {
                    keys.0.remove(i);
                    true
                }
                Err(_) => false,
            },
            None => return Ok(false),
        };
        self.inner
            .users
            .remove_if(user_id, |_, keys| keys.is_empty());
        Ok(removed)
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        validate::user_id(user_id)?;
        let Some(keys) = self.inner.users.get(user_id) else {
            return Ok(Vec::new());
        };
        let mut now = None;
        Ok(keys
            .0
            .iter()
            .filter(|k| is_live(k, &mut now))
            .map(|k| k.provider().to_owned())
            .collect())
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        validate::user_id(user_id)?;
        Ok(self
            .inner
            .users
            .remove(user_id)
            .map_or(0, |(_, keys)| keys.len() as u64))
    }

    async fn purge_expired(&self) -> Result<u64> {
        Ok(self.inner.purge(chrono::Utc::now()))
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        check_same_slot(current, new)?;
        let Some(mut keys) = self.inner.users.get_mut(current.user_id()) else {
            return Ok(false);
        };
        let now = chrono::Utc::now();
        match keys
            .find(current.provider())
            .ok()
            .and_then(|i| keys.0.get_mut(i))
        {
            Some(stored)
                if !stored.is_expired_at(now)
                    && stored.encrypted_value() == current.encrypted_value() =>
            {
                *stored = new.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        validate::page_size(limit)?;
        let after = cursor.map(Cursor::slot).transpose()?;
        let now = chrono::Utc::now();
        // The `limit` smallest slots after the cursor, by a bounded max-heap:
        // one pass over the keys, cloning only those that enter the heap.
        let mut heap: BinaryHeap<(String, String)> = BinaryHeap::with_capacity(limit + 1);
        for user in self.inner.users.iter() {
            let user_id: &str = user.key();
            if after.is_some_and(|(u, _)| user_id < u) {
                continue;
            }
            for k in &user.value().0 {
                let provider = k.provider();
                let slot = (user_id, provider);
                if after.is_some_and(|a| slot <= a) || k.is_expired_at(now) {
                    continue;
                }
                if heap.len() == limit {
                    match heap.peek() {
                        Some((u, p)) if slot < (u.as_str(), p.as_str()) => {
                            heap.pop();
                        }
                        _ => continue,
                    }
                }
                heap.push((user_id.to_owned(), provider.to_owned()));
            }
        }
        let full = heap.len() == limit;
        let slots = heap.into_sorted_vec();
        let next = if full {
            slots.last().map(|(u, p)| Cursor::after_slot(u, p))
        } else {
            None
        };
        let keys = slots
            .iter()
            .filter_map(|(u, p)| {
                self.inner
                    .users
                    .get(u.as_str())
                    .and_then(|keys| keys.get(p).cloned())
            })
            .collect();
        Ok(ScanPage { keys, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    byok_testkit::conformance_tests!(MemoryStorage::new());

    #[tokio::test]
    async fn purge_counts_exactly_and_frees_users() {
        let store = MemoryStorage::new();
        let past = Some(Utc::now() - chrono::Duration::seconds(5));
        for p in ["a", "b", "c"] {
            store
                .store(&ApiKey::new("u1", p, vec![1]).unwrap().with_expires_at(past))
                .await
                .unwrap();
        }
        store
            .store(&ApiKey::new("u2", "a", vec![1]).unwrap())
            .await
            .unwrap();
        assert_eq!(store.len(), 4);
        assert_eq!(store.purge_expired().await.unwrap(), 3);
        assert_eq!(store.len(), 1);
        assert_eq!(store.inner.users.len(), 1, "empty users are dropped");
    }

    #[tokio::test]
    async fn reads_copy_nothing_and_ids_are_held_once() {
        let store = MemoryStorage::new();
        let k = ApiKey::new("u", "p", vec![1; 64]).unwrap();
        store.store(&k).await.unwrap();
        let got = store.retrieve("u", "p").await.unwrap().unwrap();
        assert_eq!(got, k);
        assert_eq!(got.encrypted_value().as_ptr(), k.encrypted_value().as_ptr());
        let entry = store.inner.users.iter().next().unwrap();
        assert!(Arc::ptr_eq(entry.key(), &k.user_id_shared()));
        drop(entry);
        // A miss still rejects bad input with a typed error.
        assert!(store.retrieve("", "p").await.is_err());
        assert!(store.retrieve("u", "bad\u{7}").await.is_err());
        assert!(store.retrieve("u", "other").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn user_keys_is_one_lookup_sorted_by_provider() {
        let store = MemoryStorage::new();
        for p in ["openai", "anthropic", "mistral"] {
            store
                .store(&ApiKey::new("u", p, vec![1]).unwrap())
                .await
                .unwrap();
        }
        let past = Some(Utc::now() - chrono::Duration::seconds(5));
        store
            .store(
                &ApiKey::new("u", "groq", vec![1])
                    .unwrap()
                    .with_expires_at(past),
            )
            .await
            .unwrap();
        let keys = store.user_keys("u").await.unwrap();
        let providers: Vec<&str> = keys.iter().map(ApiKey::provider).collect();
        assert_eq!(
            providers,
            ["anthropic", "mistral", "openai"],
            "live keys only"
        );
        assert!(store.user_keys("").await.is_err());
    }

    #[tokio::test]
    async fn clones_share_keys_and_delete_frees_users() {
        let a = MemoryStorage::new();
        let b = a.clone();
        a.store(&ApiKey::new("u", "p", vec![1]).unwrap())
            .await
            .unwrap();
        assert!(b.retrieve("u", "p").await.unwrap().is_some());
        assert!(b.delete("u", "p").await.unwrap());
        assert!(a.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn sweeper_purges_and_stops_with_the_store() {
        let store = MemoryStorage::new();
        store.start_sweeper(Duration::from_secs(10)).unwrap();
        let past = Some(Utc::now() - chrono::Duration::seconds(1));
        store
            .store(
                &ApiKey::new("u", "p", vec![1])
                    .unwrap()
                    .with_expires_at(past),
            )
            .await
            .unwrap();
        assert_eq!(store.len(), 1);
        tokio::time::sleep(Duration::from_secs(11)).await;
        tokio::task::yield_now().await;
        assert_eq!(store.len(), 0, "the sweeper purged the expired key");
        let weak = Arc::downgrade(&store.inner);
        drop(store);
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert!(
            weak.upgrade().is_none(),
            "the sweeper holds no strong reference"
        );
    }

    #[test]
    fn sweeper_needs_a_runtime() {
        let err = MemoryStorage::from_config(&ByokConfig::default()).unwrap_err();
        assert!(err.to_string().contains("Tokio runtime"), "{err}");
        let off = ByokConfig {
            auto_cleanup: false,
            ..ByokConfig::default()
        };
        assert!(MemoryStorage::from_config(&off).is_ok());
    }
}
