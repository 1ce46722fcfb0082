//! `StoreAdmin` for `RedisStorage`: exact counts with expired keys still
//! stored, the schema's status, and `destroy` leaving nothing under the
//! prefix, on a server and (under `scripts/redis-cluster.sh`) on a cluster.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use byok_core::{ApiKey, KeyStorage, SchemaStatus, StoreAdmin};
use byok_redis::redis;
use chrono::Utc;

/// Stores live and expired keys and checks every count, before and after
/// a purge, then destroys the store.
async fn counts_are_exact(store: &common::Scratch) {
    assert_eq!(store.backend(), "redis");
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Missing);
    let past = Some(Utc::now() - chrono::Duration::seconds(10));
    let later = Some(Utc::now() + chrono::Duration::hours(1));
    let live = [
        ApiKey::new("alice", "openai", vec![1]).unwrap(),
        ApiKey::new("alice", "anthropic", vec![2])
            .unwrap()
            .with_expires_at(later),
        ApiKey::new("b:{o}b", "openai", vec![3]).unwrap(),
    ];
    let expired = [
        ApiKey::new("alice", "mistral", vec![4])
            .unwrap()
            .with_expires_at(past),
        ApiKey::new("carol", "openai", vec![5])
            .unwrap()
            .with_expires_at(past),
    ];
    for key in live.iter().chain(&expired) {
        store.store(key).await.unwrap();
    }
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);
    assert_eq!(store.count().await.unwrap(), 3);
    assert_eq!(store.count_expired().await.unwrap(), Some(2));
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.keys, 3);
    assert_eq!(stats.expired, Some(2));
    assert_eq!(stats.by_provider.get("openai"), Some(&2));
    assert_eq!(stats.by_provider.get("anthropic"), Some(&1));
    assert_eq!(stats.by_provider.get("mistral"), None);

    assert_eq!(store.purge_expired().await.unwrap(), 2);
    assert_eq!(store.count_expired().await.unwrap(), Some(0));
    assert_eq!(store.count().await.unwrap(), 3);
    assert_eq!(store.stats().await.unwrap().expired, Some(0));
    assert_eq!(store.clear_all("alice").await.unwrap(), 2);
    assert_eq!(store.count().await.unwrap(), 1);

    store.destroy().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Missing);
    assert_eq!(store.retrieve("b:{o}b", "openai").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_counts_are_exact_and_destroy_leaves_nothing() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let store = common::open_scratch(&url).await;
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // A key of no store's layout under the prefix goes too.
    let () = redis::cmd("SET")
        .arg(format!("{}stray", store.prefix()))
        .arg(1)
        .query_async(&mut raw)
        .await
        .unwrap();
    counts_are_exact(&store).await;
    assert_eq!(
        common::keys_under(&mut raw, store.prefix()).await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_glob_characters_destroys_only_itself() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let base = common::fresh_prefix();
    let glob = common::open_scratch_at(&url, &format!("{base}[a]*")).await;
    let neighbour = common::open_scratch_at(&url, &format!("{base}a-")).await;
    let key = ApiKey::new("alice", "openai", vec![1]).unwrap();
    glob.store(&key).await.unwrap();
    neighbour.store(&key).await.unwrap();
    glob.destroy().await.unwrap();
    assert_eq!(glob.count().await.unwrap(), 0);
    assert_eq!(
        neighbour.retrieve("alice", "openai").await.unwrap(),
        Some(key)
    );
    assert_eq!(
        neighbour.schema_status().await.unwrap(),
        SchemaStatus::UpToDate
    );
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_counts_are_exact_and_destroy_leaves_nothing_on_any_master() {
    let Some(urls) = byok_testkit::services::redis_cluster_urls().await else {
        return;
    };
    let store = common::open_scratch(&common::cluster_url(&urls)).await;
    // Users in many buckets, so that every master holds some of them.
    for i in 0..64 {
        let key = ApiKey::new(format!("user-{i}"), "openai", vec![1]).unwrap();
        store.store(&key).await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 64);
    store.destroy().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
    counts_are_exact(&store).await;
    for url in &urls {
        let mut node = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut node).await.unwrap();
        let is_master = role
            .first()
            .is_some_and(|r| redis::from_redis_value_ref::<String>(r).is_ok_and(|r| r == "master"));
        if is_master {
            assert_eq!(
                common::keys_under(&mut node, store.prefix()).await,
                Vec::<String>::new(),
                "{url}"
            );
        }
    }
}
