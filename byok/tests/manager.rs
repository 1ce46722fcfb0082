//! The manager: encryption bound to slots, wrong keys, rotation, TTLs and
//! the helpers ported from the Python library.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;
use std::time::Duration;

use byok::chrono;
use byok::error::Field;
use byok::secrecy::ExposeSecret;
use byok::{
    ApiKey, Byok, ByokConfig, ByokError, EncryptionError, ImportOutcome, KeyStorage, Keyring,
    MasterKey, MemoryStorage, Ttl, async_trait,
};

fn key(b: u8) -> MasterKey {
    MasterKey::from_bytes(&[b; 32]).unwrap()
}

fn config() -> ByokConfig {
    ByokConfig::for_tests()
}

fn manager(storage: Arc<dyn KeyStorage>, ring: Keyring) -> Byok {
    Byok::new(storage, ring, config()).unwrap()
}

fn ring(entries: &[(u32, u8)], primary: u32) -> Keyring {
    let mut ring = Keyring::new(entries[0].0, key(entries[0].1));
    for (id, b) in &entries[1..] {
        ring.add(*id, key(*b)).unwrap();
    }
    ring.set_primary(primary).unwrap();
    ring
}

fn auth_failed(e: &ByokError) -> bool {
    matches!(
        e,
        ByokError::Encryption(EncryptionError::AuthenticationFailed { .. })
    )
}

#[tokio::test]
async fn ciphertext_moved_to_another_slot_fails() {
    let store = Arc::new(MemoryStorage::new());
    let byok = manager(store.clone(), Keyring::new(1, key(1)));
    byok.set_key("alice", "openai", "sk-alice-0123456789abcdef", Ttl::Never)
        .await
        .unwrap();
    let stored = store.retrieve("alice", "openai").await.unwrap().unwrap();
    for (user, provider) in [("bob", "openai"), ("alice", "anthropic")] {
        let moved = ApiKey::new(user, provider, stored.encrypted_value().to_vec()).unwrap();
        store.store(&moved).await.unwrap();
        let err = byok.get_key(user, provider).await.unwrap_err();
        assert!(auth_failed(&err), "{user}/{provider}: {err:?}");
    }
    let alice = byok.get_key("alice", "openai").await.unwrap().unwrap();
    assert_eq!(alice.expose_secret(), "sk-alice-0123456789abcdef");
}

#[tokio::test]
async fn wrong_master_key_is_an_error_and_leaves_the_key_as_it_was() {
    let store = Arc::new(MemoryStorage::new());
    let right = manager(store.clone(), Keyring::new(1, key(1)));
    right
        .set_key("alice", "openai", "sk-right-0123456789abcdef", Ttl::Default)
        .await
        .unwrap();
    let before = store.retrieve("alice", "openai").await.unwrap().unwrap();

    let wrong = manager(store.clone(), Keyring::new(1, key(2)));
    for _ in 0..3 {
        let err = wrong.get_key("alice", "openai").await.unwrap_err();
        assert!(auth_failed(&err), "{err:?}");
    }
    let after = store.retrieve("alice", "openai").await.unwrap().unwrap();
    assert_eq!(after, before, "the stored key changed");
    assert_eq!(wrong.list_providers("alice").await.unwrap(), ["openai"]);
    assert!(wrong.has_key("alice", "openai").await.unwrap());
    let summary = wrong.key_summary("alice").await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].hint, "sk-r...cdef");
    assert_eq!(summary[0].display_name, "OpenAI");
    assert!(
        summary[0].expires.starts_with("Expires in"),
        "{:?}",
        summary[0]
    );

    // A keyring without the key id is told which id is missing.
    let other_id = manager(store.clone(), Keyring::new(7, key(1)));
    let err = other_id.get_key("alice", "openai").await.unwrap_err();
    assert!(matches!(
        err,
        ByokError::Encryption(EncryptionError::UnknownKeyId { key_id: 1 })
    ));
    assert!(err.to_string().contains("key id 1"), "{err}");
    assert_eq!(
        store.retrieve("alice", "openai").await.unwrap().unwrap(),
        before
    );
    assert_eq!(
        right
            .get_key("alice", "openai")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "sk-right-0123456789abcdef"
    );
}

#[tokio::test]
async fn rotation_reads_old_keys_writes_new_ones_and_retires_the_old_id() {
    let store = Arc::new(MemoryStorage::new());
    let old = manager(store.clone(), Keyring::new(1, key(1)));
    for i in 0..25 {
        old.set_key(
            &format!("user-{i}"),
            "openai",
            &format!("sk-old-{i:04}-abcdefghijkl"),
            Ttl::Never,
        )
        .await
        .unwrap();
    }
    let both = manager(store.clone(), ring(&[(1, 1), (2, 2)], 2));
    // Reads old keys, writes new ones under the new id.
    assert_eq!(
        both.require_key("user-3", "openai")
            .await
            .unwrap()
            .expose_secret(),
        "sk-old-0003-abcdefghijkl"
    );
    both.set_key("user-new", "openai", "sk-new-0000-abcdefghijkl", Ttl::Never)
        .await
        .unwrap();
    let stored = store.retrieve("user-new", "openai").await.unwrap().unwrap();
    assert_eq!(
        byok::crypto::key_id_of(stored.encrypted_value()).unwrap(),
        2
    );

    // Before rotation, a keyring without id 1 cannot read old keys.
    let only_new = manager(store.clone(), Keyring::new(2, key(2)));
    let err = only_new.get_key("user-3", "openai").await.unwrap_err();
    assert!(err.to_string().contains("key id 1"), "{err}");

    let report = both.rotate().await.unwrap();
    assert_eq!(report.primary_key_id, 2);
    assert_eq!(report.rotated.get(&1), Some(&25));
    assert_eq!(report.already_current, 1);
    assert!(report.is_complete(), "{report:?}");

    let again = both.rotate().await.unwrap();
    assert!(
        again.rotated.is_empty(),
        "rotation is idempotent: {again:?}"
    );
    assert_eq!(again.already_current, 26);

    for i in 0..25 {
        let user = format!("user-{i}");
        let k = store.retrieve(&user, "openai").await.unwrap().unwrap();
        assert_eq!(byok::crypto::key_id_of(k.encrypted_value()).unwrap(), 2);
        assert_eq!(
            only_new
                .require_key(&user, "openai")
                .await
                .unwrap()
                .expose_secret(),
            format!("sk-old-{i:04}-abcdefghijkl")
        );
    }
}

#[tokio::test]
async fn rotation_counts_undecryptable_keys_and_leaves_them() {
    let store = Arc::new(MemoryStorage::new());
    manager(store.clone(), Keyring::new(9, key(9)))
        .set_key("u", "lost", "sk-lost-0123456789abcdef", Ttl::Never)
        .await
        .unwrap();
    store
        .store(&ApiKey::new("u", "junk", b"not a ciphertext".to_vec()).unwrap())
        .await
        .unwrap();
    let lost_before = store.retrieve("u", "lost").await.unwrap();
    let byok = manager(store.clone(), ring(&[(1, 1), (2, 2)], 2));
    let report = byok.rotate().await.unwrap();
    assert_eq!(report.failed.get(&9), Some(&1));
    assert_eq!(report.malformed, 1);
    assert!(!report.is_complete());
    assert_eq!(store.retrieve("u", "lost").await.unwrap(), lost_before);
}

/// A store whose compare-and-swap lets a "user" set a new key in the slot
/// just before it runs: the race that rotation must lose.
#[derive(Debug)]
struct RacingStore {
    inner: MemoryStorage,
    writer: Keyring,
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl KeyStorage for RacingStore {
    async fn store(&self, key: &ApiKey) -> byok::Result<()> {
        self.inner.store(key).await
    }
    async fn retrieve(&self, u: &str, p: &str) -> byok::Result<Option<ApiKey>> {
        self.inner.retrieve(u, p).await
    }
    async fn delete(&self, u: &str, p: &str) -> byok::Result<bool> {
        self.inner.delete(u, p).await
    }
    async fn list_providers(&self, u: &str) -> byok::Result<Vec<String>> {
        self.inner.list_providers(u).await
    }
    async fn clear_all(&self, u: &str) -> byok::Result<u64> {
        self.inner.clear_all(u).await
    }
    async fn purge_expired(&self) -> byok::Result<u64> {
        self.inner.purge_expired().await
    }
    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> byok::Result<bool> {
        let (u, p) = (current.user_id(), current.provider());
        let fresh = self
            .writer
            .encrypt(u, p, format!("sk-fresh-{u}").as_bytes())?;
        self.inner.store(&ApiKey::new(u, p, fresh).unwrap()).await?;
        self.inner.compare_and_swap(current, new).await
    }
    async fn scan(&self, c: Option<&byok::Cursor>, l: usize) -> byok::Result<byok::ScanPage> {
        self.inner.scan(c, l).await
    }
    async fn store_if_absent(&self, key: &ApiKey) -> byok::Result<bool> {
        self.inner.store_if_absent(key).await
    }
    async fn retrieve_value(&self, u: &str, p: &str) -> byok::Result<Option<Arc<[u8]>>> {
        self.inner.retrieve_value(u, p).await
    }
    async fn user_keys(&self, u: &str) -> byok::Result<Vec<ApiKey>> {
        self.inner.user_keys(u).await
    }
    async fn store_check(&self, u: &str, p: &str, check: &str) -> byok::Result<bool> {
        self.inner.store_check(u, p, check).await
    }
    async fn checks(&self, u: &str) -> byok::Result<Vec<(String, String)>> {
        self.inner.checks(u).await
    }
    fn as_fast_tier(&self) -> Option<&dyn byok::FastTier> {
        None
    }
}

#[tokio::test]
async fn rotation_never_overwrites_a_key_set_during_it() {
    let inner = MemoryStorage::new();
    let old = manager(Arc::new(inner.clone()), Keyring::new(1, key(1)));
    for i in 0..10 {
        old.set_key(
            &format!("u{i}"),
            "openai",
            "sk-stale-0123456789abcdef",
            Ttl::Never,
        )
        .await
        .unwrap();
    }
    let store = Arc::new(RacingStore {
        inner: inner.clone(),
        writer: ring(&[(1, 1), (2, 2)], 2),
    });
    let byok = manager(store, ring(&[(1, 1), (2, 2)], 2));
    let report = byok.rotate().await.unwrap();
    assert_eq!(report.changed_concurrently, 10, "{report:?}");
    assert!(report.rotated.is_empty());
    for i in 0..10 {
        let user = format!("u{i}");
        assert_eq!(
            byok.require_key(&user, "openai")
                .await
                .unwrap()
                .expose_secret(),
            format!("sk-fresh-{user}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_racing_64_concurrent_set_key_calls_loses_none() {
    let store = Arc::new(MemoryStorage::new());
    let old = manager(store.clone(), Keyring::new(1, key(1)));
    for i in 0..2000 {
        old.set_key(
            &format!("u{i}"),
            "openai",
            "sk-old-0123456789abcdef",
            Ttl::Never,
        )
        .await
        .unwrap();
    }
    let byok = manager(store.clone(), ring(&[(1, 1), (2, 2)], 2));
    let rotation = {
        let byok = byok.clone();
        tokio::spawn(async move {
            let mut total = 0;
            let mut cursor = None;
            loop {
                let page = byok.rotate_page(cursor.as_ref(), 20).await.unwrap();
                total += page.rotated.values().sum::<u64>() + page.changed_concurrently;
                tokio::task::yield_now().await;
                match page.resume_from {
                    Some(c) => cursor = Some(c),
                    None => return total,
                }
            }
        })
    };
    let writers: Vec<_> = (0..64)
        .map(|i| {
            let byok = byok.clone();
            tokio::spawn(async move {
                // Spread the writes over the walk.
                for _ in 0..(i % 8) {
                    tokio::task::yield_now().await;
                }
                let user = format!("u{}", i * 31);
                byok.set_key(
                    &user,
                    "openai",
                    &format!("sk-new-{user}-abcdefgh"),
                    Ttl::Never,
                )
                .await
                .unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let handled = rotation.await.unwrap();
    assert!(handled > 0);
    for i in 0..64 {
        let user = format!("u{}", i * 31);
        assert_eq!(
            byok.require_key(&user, "openai")
                .await
                .unwrap()
                .expose_secret(),
            format!("sk-new-{user}-abcdefgh"),
            "rotation overwrote the key that {user} set"
        );
    }
    // Everything else still reads, and a second pass finishes the job.
    let report = byok.rotate().await.unwrap();
    assert!(report.is_complete());
    let only_new = manager(store.clone(), Keyring::new(2, key(2)));
    assert_eq!(
        only_new
            .require_key("u1", "openai")
            .await
            .unwrap()
            .expose_secret(),
        "sk-old-0123456789abcdef"
    );
}

#[tokio::test]
async fn set_key_validates_without_echoing_the_key() {
    let byok = manager(Arc::new(MemoryStorage::new()), Keyring::new(1, key(1)));
    let long = format!("sk-CANARY{}", "x".repeat(8 * 1024));
    let cases = ["", " \n", "sk-CANARY\nzz", "sk-CANARY\0zz", long.as_str()];
    for bad in cases {
        let err = byok.set_key("u", "p", bad, Ttl::Default).await.unwrap_err();
        match &err {
            ByokError::InvalidInput(e) => assert_eq!(e.field, Field::ApiKey),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert!(!format!("{err} {err:?}").contains("CANARY"));
    }
    let exact = "k".repeat(8 * 1024);
    byok.set_key("u", "p", &exact, Ttl::Default).await.unwrap();
    assert_eq!(
        byok.require_key("u", "p")
            .await
            .unwrap()
            .expose_secret()
            .len(),
        8192
    );
    let err = byok
        .set_key("", "p", "sk-abc", Ttl::Default)
        .await
        .unwrap_err();
    assert!(matches!(err, ByokError::InvalidInput(ref e) if e.field == Field::UserId));
}

#[tokio::test]
async fn ttl_falls_back_to_the_configured_default() {
    let store = Arc::new(MemoryStorage::new());
    let byok = manager(store.clone(), Keyring::new(1, key(1)));
    let now = byok::key::now();
    byok.set_key("u", "default", "sk-0123456789abcdef", None)
        .await
        .unwrap();
    byok.set_key("u", "never", "sk-0123456789abcdef", Ttl::Never)
        .await
        .unwrap();
    byok.set_key(
        "u",
        "hour",
        "sk-0123456789abcdef",
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let exp = |p: &'static str| {
        let store = store.clone();
        async move { store.retrieve("u", p).await.unwrap().unwrap().expires_at() }
    };
    let day = exp("default").await.unwrap() - now;
    assert!(
        (day - chrono::Duration::hours(24)).num_seconds().abs() < 60,
        "{day}"
    );
    assert_eq!(exp("never").await, None);
    let hour = exp("hour").await.unwrap() - now;
    assert!(
        (hour - chrono::Duration::hours(1)).num_seconds().abs() < 60,
        "{hour}"
    );

    let forever = Byok::new(
        store.clone(),
        Keyring::new(1, key(1)),
        ByokConfig::default()
            .with_default_ttl(None)
            .with_auto_cleanup(false),
    )
    .unwrap();
    forever
        .set_key("u", "cfg", "sk-0123456789abcdef", None)
        .await
        .unwrap();
    assert_eq!(exp("cfg").await, None);

    let err = byok
        .set_key("u", "zero", "sk-0123456789abcdef", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, ByokError::InvalidInput(ref e) if e.field == Field::Ttl));
    let err = byok
        .set_key("u", "huge", "sk-0123456789abcdef", Duration::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, ByokError::InvalidInput(ref e) if e.field == Field::Ttl));
}

#[tokio::test]
async fn missing_keys_and_deletes() {
    let byok = manager(Arc::new(MemoryStorage::new()), Keyring::new(1, key(1)));
    let err = byok.require_key("alice", "groq").await.unwrap_err();
    assert!(matches!(err, ByokError::KeyNotFound { .. }));
    assert_eq!(
        err.to_string(),
        "no \"groq\" key is stored for user \"alice\""
    );
    byok.set_key("alice", "groq", "gsk_0123456789abcdef", Ttl::Default)
        .await
        .unwrap();
    byok.set_key("alice", "xai", "xai-0123456789abcdef", Ttl::Default)
        .await
        .unwrap();
    assert!(byok.has_key("alice", "groq").await.unwrap());
    assert!(byok.delete_key("alice", "groq").await.unwrap());
    assert!(!byok.delete_key("alice", "groq").await.unwrap());
    assert_eq!(byok.list_providers("alice").await.unwrap(), ["xai"]);
    assert_eq!(byok.clear_keys("alice").await.unwrap(), 1);
    assert!(byok.list_providers("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn from_config_requires_an_encryption_key() {
    let store: Arc<dyn KeyStorage> = Arc::new(MemoryStorage::new());
    let err = Byok::from_config(store.clone(), config()).unwrap_err();
    assert!(matches!(err, ByokError::Config(_)));
    let with_key = config().with_encryption_key(Some(key(4)));
    let byok = Byok::from_config(store, with_key).unwrap();
    byok.set_key("u", "p", "sk-0123456789abcdef", Ttl::Default)
        .await
        .unwrap();
    assert!(byok.get_key("u", "p").await.unwrap().is_some());
}

#[tokio::test]
async fn import_from_env_reads_prefixed_variables() {
    let byok = manager(Arc::new(MemoryStorage::new()), Keyring::new(1, key(1)));
    // PATH is set in every process; with an empty prefix, provider "path"
    // reads it. A random name is not set.
    let path = std::env::var("PATH").unwrap();
    let missing = format!("byok_unset_{:x}", std::process::id());
    let results = byok
        .import_from_env("u", &["path", missing.as_str()], Some(""))
        .await;
    assert!(
        matches!(results["path"], ImportOutcome::Imported),
        "{results:?}"
    );
    assert!(matches!(results[missing.as_str()], ImportOutcome::NotSet));
    assert_eq!(
        byok.require_key("u", "path").await.unwrap().expose_secret(),
        path
    );
    let results = byok.import_from_env("u", &["path"], None).await;
    assert!(
        matches!(results["path"], ImportOutcome::NotSet),
        "API_KEY_PATH is not set"
    );
}

#[tokio::test]
async fn keyed_fingerprints_differ_between_deployments() {
    let a = manager(Arc::new(MemoryStorage::new()), Keyring::new(1, key(1)));
    let b = manager(Arc::new(MemoryStorage::new()), Keyring::new(1, key(2)));
    let k = "sk-0123456789abcdef";
    assert_ne!(a.keyed_fingerprint(k), b.keyed_fingerprint(k));
    assert_ne!(
        a.keyed_fingerprint(k),
        byok::display::unkeyed_fingerprint(k)
    );
    assert_eq!(byok::display::unkeyed_fingerprint(k).len(), 16);
}

#[tokio::test]
async fn auto_cleanup_purges_and_stops_with_the_manager() {
    let store = Arc::new(MemoryStorage::new());
    let past = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    store
        .store(
            &ApiKey::new("u", "p", vec![1])
                .unwrap()
                .with_expires_at(past),
        )
        .await
        .unwrap();
    let byok = Byok::builder(store.clone(), Keyring::new(1, key(1)))
        .config(ByokConfig::default())
        .cleanup_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    // Bounded wait for the task's first purge.
    for _ in 0..200 {
        if store.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.is_empty(), "the cleanup task did not purge");
    assert_eq!(Arc::strong_count(&store), 3, "test, manager and task");
    drop(byok);
    for _ in 0..200 {
        if Arc::strong_count(&store) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "the cleanup task outlived the manager"
    );
}

#[test]
fn auto_cleanup_without_a_runtime_is_a_configuration_error() {
    let err = Byok::new(
        Arc::new(MemoryStorage::new()),
        Keyring::new(1, key(1)),
        ByokConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ByokError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn set_key_if_absent_creates_once_and_keeps_a_live_key() {
    let store = MemoryStorage::new();
    let byok = manager(Arc::new(store.clone()), Keyring::new(1, key(1)));
    assert!(
        byok.set_key_if_absent("u", "openai", "sk-first-0123456789abcdef", Ttl::Never)
            .await
            .unwrap()
    );
    let before = store.retrieve("u", "openai").await.unwrap();
    assert!(
        !byok
            .set_key_if_absent("u", "openai", "sk-second-0123456789abcdef", Ttl::Never)
            .await
            .unwrap()
    );
    assert_eq!(store.retrieve("u", "openai").await.unwrap(), before);
    let got = byok.get_key("u", "openai").await.unwrap().unwrap();
    assert_eq!(got.expose_secret(), "sk-first-0123456789abcdef");
    // Input is checked as set_key checks it, before the store is asked.
    assert!(matches!(
        byok.set_key_if_absent("u", "p", "  ", Ttl::Never).await,
        Err(ByokError::InvalidInput(_))
    ));
    // An expired key is replaced.
    byok.set_key(
        "u",
        "short",
        "sk-short-0123456789abcdef",
        Ttl::After(Duration::from_millis(1)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        byok.set_key_if_absent("u", "short", "sk-new-0123456789abcdef", Ttl::Never)
            .await
            .unwrap()
    );
    let got = byok.get_key("u", "short").await.unwrap().unwrap();
    assert_eq!(got.expose_secret(), "sk-new-0123456789abcdef");
}
