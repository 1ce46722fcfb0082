//! `connect` opens the backend a URL names, or says which feature is missing.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use byok::{ApiKey, ByokConfig, ByokError, KeyStorage, SchemaStatus};

#[tokio::test]
async fn memory_urls_open_a_memory_store() {
    let store = byok::connect("memory:").await.unwrap();
    store
        .store(&ApiKey::new("u", "p", vec![1]).unwrap())
        .await
        .unwrap();
    assert_eq!(store.list_providers("u").await.unwrap(), ["p"]);
    assert!(format!("{store:?}").starts_with("MemoryStorage"));
    assert_eq!(store.backend(), "memory");
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn unknown_schemes_and_hybrid_are_configuration_errors() {
    for url in ["ftp://user:hunter2@host/x", "hybrid:"] {
        let err = byok::connect(url).await.unwrap_err();
        assert!(matches!(err, ByokError::Config(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[cfg(not(feature = "postgres"))]
#[tokio::test]
async fn a_backend_compiled_out_names_its_feature() {
    let err = byok::connect("postgres://app:hunter2@db/keys")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("`postgres` cargo feature"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_urls_open_a_migrated_sqlite_store() {
    let dir = std::env::temp_dir().join(format!("byok-connect-{:x}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let config = ByokConfig::for_tests();
    let store = byok::connect_with(&url, &config).await.unwrap();
    store
        .store(&ApiKey::new("u", "p", vec![7]).unwrap())
        .await
        .unwrap();
    drop(store);
    // The file persists: a second connection reads the key back.
    let again = byok::connect_with(&url, &config).await.unwrap();
    assert_eq!(
        again
            .retrieve("u", "p")
            .await
            .unwrap()
            .unwrap()
            .encrypted_value(),
        [7]
    );
    drop(again);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn open_runs_no_ddl_and_connect_creates_the_schema() {
    let dir = std::env::temp_dir().join(format!("byok-open-{:x}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let config = ByokConfig::for_tests();
    let key = ApiKey::new("u", "p", vec![7]).unwrap();
    let opened = byok::open_with(&url, &config).await.unwrap();
    assert_eq!(opened.backend(), "sqlite");
    assert_eq!(opened.schema_status().await.unwrap(), SchemaStatus::Missing);
    // No table: the store answers with a storage error, not an empty list.
    let err = opened.list_providers("u").await.unwrap_err();
    assert!(matches!(err, ByokError::Storage(_)), "{err:?}");
    assert!(opened.store(&key).await.is_err());
    byok::connect_with(&url, &config).await.unwrap();
    assert_eq!(
        opened.schema_status().await.unwrap(),
        SchemaStatus::UpToDate
    );
    // The same handle, opened before the migration, now works.
    opened.store(&key).await.unwrap();
    assert_eq!(opened.list_providers("u").await.unwrap(), ["p"]);
    drop(opened);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A configuration whose table name and Redis prefix belong to this test
/// alone, so tests share servers safely.
#[allow(dead_code, reason = "used by the tests of some features only")]
fn isolated_config() -> ByokConfig {
    let suffix = rand_suffix();
    ByokConfig::default()
        .with_db_table_name(format!("byok_connect_{suffix:x}"))
        .with_session_key_prefix(format!("byok_connect_{suffix:x}_"))
        .with_auto_cleanup(false)
}

/// Writes, lists and clears one key of a fresh user through `store`.
#[allow(dead_code, reason = "used by the tests of some features only")]
async fn write_list_clear(store: &dyn KeyStorage) {
    let user = format!("connect-{:x}", rand_suffix());
    store
        .store(&ApiKey::new(user.as_str(), "p", vec![1]).unwrap())
        .await
        .unwrap();
    assert_eq!(store.list_providers(&user).await.unwrap(), ["p"]);
    assert_eq!(store.clear_all(&user).await.unwrap(), 1);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_urls_open_a_migrated_store() {
    let Some(url) = byok_testkit::services::postgres_url().await else {
        return;
    };
    open_connect_destroy(&url, "postgres").await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_urls_open_a_migrated_store() {
    let Some(url) = byok_testkit::services::mysql_url().await else {
        return;
    };
    open_connect_destroy(&url, "mysql").await;
}

/// `open` on a namespace of its own writes nothing, `connect` creates the
/// schema, the store works, and `destroy` removes it all.
#[allow(dead_code, reason = "used by the tests of some features only")]
async fn open_connect_destroy(url: &str, backend: &str) {
    let config = isolated_config();
    let opened = byok::open_with(url, &config).await.unwrap();
    assert_eq!(opened.backend(), backend);
    assert_eq!(opened.schema_status().await.unwrap(), SchemaStatus::Missing);
    let store = byok::connect_with(url, &config).await.unwrap();
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);
    write_list_clear(&store).await;
    store.destroy().await.unwrap();
    assert_eq!(opened.schema_status().await.unwrap(), SchemaStatus::Missing);
}

#[cfg(feature = "redis")]
#[path = "support/redis.rs"]
mod redis_support;

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_urls_open_a_redis_store() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    open_connect_destroy(&url, "redis").await;
}

#[cfg(feature = "redis-cluster")]
#[tokio::test]
async fn cluster_urls_open_a_cluster_store() {
    let Some(urls) = byok_testkit::services::redis_cluster_urls().await else {
        return;
    };
    let (url, config) = (urls.join(","), isolated_config());
    let _cleanup = redis_support::destroyed_on_drop(&url, &config.session_key_prefix);
    let store = byok::connect_with(&url, &config).await.unwrap();
    assert!(format!("{store:?}").contains("luster"), "{store:?}");
    write_list_clear(&store).await;
}

#[allow(dead_code, reason = "used by the tests of some features only")]
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// With the facade's TLS feature on, a `rediss://` URL reaches the Redis
/// backend's TLS support: nothing listens on port 1, so the connection
/// fails, instead of a configuration error about TLS not being built in.
#[cfg(all(
    feature = "redis",
    any(feature = "tls-rustls", feature = "tls-native-tls")
))]
#[tokio::test]
async fn rediss_urls_have_tls_built_in() {
    let err = byok::connect("rediss://127.0.0.1:1").await.unwrap_err();
    assert!(err.as_storage().is_some(), "{err:?}");
}
