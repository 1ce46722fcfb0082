//! `copy_into` never replaces a different target key silently, and checks
//! keys against a keyring before it writes.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test")]

use byok_core::chrono::{Duration, Utc};
use byok_core::copy::{CopyOptions, OnConflict, Resolution};
use byok_core::{ApiKey, KeyStorage, KeyStorageExt, Keyring, MasterKey};
use byok_memory::MemoryStorage;

fn key(ring: &Keyring, user: &str, provider: &str, plain: &str, age_s: i64) -> ApiKey {
    let ct = ring.encrypt(user, provider, plain.as_bytes()).unwrap();
    ApiKey::new(user, provider, ct)
        .unwrap()
        .with_created_at(Utc::now() - Duration::seconds(age_s))
}

async fn plain(store: &MemoryStorage, ring: &Keyring, user: &str, provider: &str) -> String {
    let k = store.retrieve(user, provider).await.unwrap().unwrap();
    let p = ring.decrypt(user, provider, k.encrypted_value()).unwrap();
    String::from_utf8(p.to_vec()).unwrap()
}

/// A source with alice/openai (set an hour ago) and bob/groq, copied once
/// into an empty target.
async fn copied_once(ring: &Keyring) -> (MemoryStorage, MemoryStorage) {
    let from = MemoryStorage::new();
    from.store(&key(ring, "alice", "openai", "old-alice", 3600))
        .await
        .unwrap();
    from.store(&key(ring, "bob", "groq", "bob", 3600))
        .await
        .unwrap();
    let to = MemoryStorage::new();
    let first = from.copy_into(&to, &CopyOptions::new()).await.unwrap();
    assert_eq!((first.copied, first.identical), (2, 0));
    assert!(first.is_complete(), "{first:?}");
    (from, to)
}

#[tokio::test]
async fn a_rerun_keeps_a_key_the_user_changed_in_the_target() {
    let ring = Keyring::new(1, MasterKey::generate());
    let (from, to) = copied_once(&ring).await;
    to.store(&key(&ring, "alice", "openai", "new-alice", 0))
        .await
        .unwrap();
    let report = from.copy_into(&to, &CopyOptions::new()).await.unwrap();
    assert_eq!(plain(&to, &ring, "alice", "openai").await, "new-alice");
    assert_eq!((report.copied, report.identical), (0, 1));
    assert_eq!(report.conflicts.len(), 1);
    let c = &report.conflicts[0];
    assert_eq!(
        (c.user_id.as_str(), c.provider.as_str()),
        ("alice", "openai")
    );
    assert_eq!(c.resolution, Resolution::KeptTarget);
    assert_eq!((c.source_key_id, c.target_key_id), (Some(1), Some(1)));
    assert!(c.source_created_at < c.target_created_at);
    assert!(!report.is_complete());
}

#[tokio::test]
async fn newer_keeps_the_later_key_on_either_side() {
    let ring = Keyring::new(1, MasterKey::generate());
    let (from, to) = copied_once(&ring).await;
    // The target's alice key is newer; the source's bob key is newer.
    to.store(&key(&ring, "alice", "openai", "new-alice", 0))
        .await
        .unwrap();
    from.store(&key(&ring, "bob", "groq", "new-bob", 0))
        .await
        .unwrap();
    let options = CopyOptions::new().on_conflict(OnConflict::Newer);
    let report = from.copy_into(&to, &options).await.unwrap();
    assert_eq!(plain(&to, &ring, "alice", "openai").await, "new-alice");
    assert_eq!(plain(&to, &ring, "bob", "groq").await, "new-bob");
    assert_eq!((report.replaced(), report.kept()), (1, 1));
}

#[tokio::test]
async fn overwrite_replaces_and_counts() {
    let ring = Keyring::new(1, MasterKey::generate());
    let (from, to) = copied_once(&ring).await;
    to.store(&key(&ring, "alice", "openai", "new-alice", 0))
        .await
        .unwrap();
    let options = CopyOptions::new().on_conflict(OnConflict::Overwrite);
    let report = from.copy_into(&to, &options).await.unwrap();
    assert_eq!(plain(&to, &ring, "alice", "openai").await, "old-alice");
    assert_eq!(report.replaced(), 1);
    assert!(report.is_complete(), "{report:?}");
}

#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let ring = Keyring::new(1, MasterKey::generate());
    let (from, to) = copied_once(&ring).await;
    to.store(&key(&ring, "alice", "openai", "new-alice", 0))
        .await
        .unwrap();
    from.store(&key(&ring, "carol", "openai", "carol", 0))
        .await
        .unwrap();
    let options = CopyOptions::new()
        .on_conflict(OnConflict::Overwrite)
        .dry_run(true);
    let report = from.copy_into(&to, &options).await.unwrap();
    assert!(report.dry_run);
    assert_eq!((report.copied, report.replaced()), (1, 1));
    assert_eq!(plain(&to, &ring, "alice", "openai").await, "new-alice");
    assert!(to.retrieve("carol", "openai").await.unwrap().is_none());
    assert_eq!(to.len(), 2);
}

#[tokio::test]
async fn a_target_under_an_unknown_master_key_blocks_every_write() {
    let ring = Keyring::new(1, MasterKey::generate());
    let other = Keyring::new(9, MasterKey::generate());
    let from = MemoryStorage::new();
    from.store(&key(&ring, "alice", "openai", "a", 0))
        .await
        .unwrap();
    let to = MemoryStorage::new();
    to.store(&key(&other, "zed", "openai", "z", 0))
        .await
        .unwrap();
    let options = CopyOptions::new().verify_with(ring.clone());
    let report = from.copy_into(&to, &options).await.unwrap();
    assert!(report.blocked());
    assert_eq!(report.unknown_target_key_ids.get(&9), Some(&1));
    assert_eq!(report.target_failed[0].user_id, "zed");
    assert_eq!(report.scanned, 0);
    assert!(to.retrieve("alice", "openai").await.unwrap().is_none());
}

#[tokio::test]
async fn a_source_key_that_does_not_decrypt_is_not_copied() {
    let ring = Keyring::new(1, MasterKey::generate());
    let wrong = Keyring::new(1, MasterKey::generate());
    let from = MemoryStorage::new();
    from.store(&key(&ring, "alice", "openai", "a", 0))
        .await
        .unwrap();
    from.store(&key(&wrong, "bob", "openai", "b", 0))
        .await
        .unwrap();
    let to = MemoryStorage::new();
    let options = CopyOptions::new().verify_with(ring.clone());
    let report = from.copy_into(&to, &options).await.unwrap();
    assert_eq!(report.copied, 1);
    assert_eq!(report.source_failed.len(), 1);
    assert_eq!(report.source_failed[0].user_id, "bob");
    assert!(!report.source_failed[0].reason.is_empty());
    assert!(to.retrieve("bob", "openai").await.unwrap().is_none());
    assert!(!report.is_complete());
}

/// A target where a user sets their own key in a slot right after the copy
/// read it as empty, once per slot.
#[derive(Debug)]
struct UserWritesMeanwhile {
    inner: MemoryStorage,
    ring: Keyring,
    written: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

#[deny(clippy::missing_trait_methods)]
#[byok_core::async_trait]
impl KeyStorage for UserWritesMeanwhile {
    async fn store(&self, key: &ApiKey) -> byok_core::Result<()> {
        self.inner.store(key).await
    }
    async fn store_if_absent(&self, key: &ApiKey) -> byok_core::Result<bool> {
        self.inner.store_if_absent(key).await
    }
    async fn retrieve(&self, u: &str, p: &str) -> byok_core::Result<Option<ApiKey>> {
        let found = self.inner.retrieve(u, p).await?;
        let first = self
            .written
            .lock()
            .unwrap()
            .insert((u.to_owned(), p.to_owned()));
        if found.is_none() && first {
            self.inner.store(&key(&self.ring, u, p, "user", 0)).await?;
        }
        Ok(found)
    }
    async fn delete(&self, u: &str, p: &str) -> byok_core::Result<bool> {
        self.inner.delete(u, p).await
    }
    async fn list_providers(&self, u: &str) -> byok_core::Result<Vec<String>> {
        self.inner.list_providers(u).await
    }
    async fn clear_all(&self, u: &str) -> byok_core::Result<u64> {
        self.inner.clear_all(u).await
    }
    async fn purge_expired(&self) -> byok_core::Result<u64> {
        self.inner.purge_expired().await
    }
    async fn compare_and_swap(&self, a: &ApiKey, b: &ApiKey) -> byok_core::Result<bool> {
        self.inner.compare_and_swap(a, b).await
    }
    async fn scan(
        &self,
        c: Option<&byok_core::Cursor>,
        n: usize,
    ) -> byok_core::Result<byok_core::ScanPage> {
        self.inner.scan(c, n).await
    }
    /// Through `retrieve`, so that reading a value also writes the key.
    async fn retrieve_value(
        &self,
        u: &str,
        p: &str,
    ) -> byok_core::Result<Option<std::sync::Arc<[u8]>>> {
        Ok(self
            .retrieve(u, p)
            .await?
            .map(|k| k.encrypted_value_shared()))
    }
    async fn user_keys(&self, u: &str) -> byok_core::Result<Vec<ApiKey>> {
        self.inner.user_keys(u).await
    }
    async fn store_check(&self, u: &str, p: &str, check: &str) -> byok_core::Result<bool> {
        self.inner.store_check(u, p, check).await
    }
    async fn checks(&self, u: &str) -> byok_core::Result<Vec<(String, String)>> {
        self.inner.checks(u).await
    }
    fn as_fast_tier(&self) -> Option<&dyn byok_core::FastTier> {
        None
    }
}

#[tokio::test]
async fn a_key_written_into_an_empty_target_slot_during_the_copy_is_kept() {
    let ring = Keyring::new(1, MasterKey::generate());
    let from = MemoryStorage::new();
    for user in ["alice", "bob"] {
        from.store(&key(&ring, user, "openai", "copied", 3600))
            .await
            .unwrap();
    }
    let to = UserWritesMeanwhile {
        inner: MemoryStorage::new(),
        ring: ring.clone(),
        written: Default::default(),
    };
    // Even with the source winning every conflict.
    let options = CopyOptions::new().on_conflict(OnConflict::Overwrite);
    let report = from.copy_into(&to, &options).await.unwrap();
    for user in ["alice", "bob"] {
        assert_eq!(plain(&to.inner, &ring, user, "openai").await, "user");
    }
    assert_eq!(report.copied, 0);
    assert_eq!(report.conflicts.len(), 2);
    for c in &report.conflicts {
        assert_eq!(c.resolution, Resolution::ChangedDuringCopy);
        assert!(c.source_created_at < c.target_created_at);
    }
    assert!(!report.is_complete());
}
