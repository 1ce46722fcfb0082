//! The conformance suite and cluster-specific tests against a Redis Cluster
//! (`BYOK_TEST_REDIS_CLUSTER_URLS`, as `scripts/redis-cluster.sh` sets it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]
#![cfg(feature = "cluster")]

mod common;

use byok_core::{ApiKey, KeyStorage};
use byok_redis::RedisStorage;
use byok_redis::redis::cluster_routing::Slot;

async fn setup() -> Option<common::Scratch> {
    let urls = byok_testkit::services::redis_cluster_urls().await?;
    Some(common::open_scratch(&common::cluster_url(&urls)).await)
}

byok_testkit::conformance_tests!(maybe: setup().await);
byok_testkit::admin_conformance_tests!(maybe: setup().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_keys_share_one_slot() {
    let Some(urls) = byok_testkit::services::redis_cluster_urls().await else {
        return;
    };
    let store = RedisStorage::builder(common::cluster_url(&urls))
        .config(&common::config(&common::fresh_prefix()))
        .open()
        .await
        .unwrap();
    assert!(store.is_cluster());
    let client = byok_redis::redis::cluster::ClusterClient::new(urls.clone()).unwrap();
    let mut raw = client.get_async_connection().await.unwrap();
    for user in ["{a}", "}{", "a}:{b", "{", "}", "x{y}z", "plain"] {
        let mut slots = std::collections::HashSet::new();
        let keys = [
            store.redis_user_key(user).unwrap(),
            common::expiry_set_of(&store, user),
            common::user_set_of(&store, user),
        ];
        for p in ["{p}", "p", "}", "*:"] {
            store
                .store(&ApiKey::new(user, p, vec![1]).unwrap())
                .await
                .unwrap();
        }
        for k in &keys {
            let slot: u16 = byok_redis::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(k)
                .query_async(&mut raw)
                .await
                .unwrap();
            slots.insert(slot);
            assert_eq!(Slot::for_key(k), Slot::for_key(&keys[0]), "{k}");
        }
        assert_eq!(slots.len(), 1, "the keys of {user:?} span slots {slots:?}");
        assert_eq!(
            store.list_providers(user).await.unwrap(),
            ["*:", "p", "{p}", "}"]
        );
        assert_eq!(store.clear_all(user).await.unwrap(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_url_opens_the_cluster() {
    let Some(urls) = byok_testkit::services::redis_cluster_urls().await else {
        return;
    };
    let hosts: Vec<&str> = urls
        .iter()
        .map(|u| u.trim_start_matches("redis://").trim_end_matches('/'))
        .collect();
    let url = format!("redis+cluster://{}", hosts.join(","));
    let config = common::config(&common::fresh_prefix());
    let store = RedisStorage::builder(&url)
        .config(&config)
        .open()
        .await
        .unwrap();
    assert!(store.is_cluster());
    let listed = RedisStorage::builder(urls.join(","))
        .config(&config)
        .open()
        .await
        .unwrap();
    assert!(listed.is_cluster());
    // Users in many buckets, so in slots of every master.
    for u in 0..50 {
        store
            .store(&ApiKey::new(format!("user-{u}"), "p", vec![u as u8]).unwrap())
            .await
            .unwrap();
    }
    let mut seen = 0;
    let mut cursor = None;
    loop {
        let page = listed.scan(cursor.as_ref(), 7).await.unwrap();
        seen += page.keys.len();
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, 50);
    for u in 0..50 {
        assert_eq!(listed.clear_all(&format!("user-{u}")).await.unwrap(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_stray_members_and_gets_past_them() {
    let Some(urls) = byok_testkit::services::redis_cluster_urls().await else {
        return;
    };
    let store = RedisStorage::builder(common::cluster_url(&urls))
        .config(&common::config(&common::fresh_prefix()))
        .open()
        .await
        .unwrap();
    let client = byok_redis::redis::cluster::ClusterClient::new(urls).unwrap();
    let mut raw = client.get_async_connection().await.unwrap();
    common::purge_gets_past_stray_members(&store, &mut raw).await;
}
