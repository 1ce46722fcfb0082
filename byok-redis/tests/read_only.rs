//! Opening a store and reading it writes nothing to Redis: a store is
//! marked by its first write, not by whoever looks at it.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use byok_core::{ApiKey, KeyStorage as _};
use byok_redis::RedisStorage;
use byok_redis::redis::{self, AsyncCommands as _};

/// Every Redis key under `prefix`, sorted.
async fn keys_under(raw: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = raw.keys(format!("{prefix}*")).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn opening_and_reading_write_nothing_and_the_first_write_marks() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let prefix = common::fresh_prefix();
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    let store = RedisStorage::connect(&url, &common::config(&prefix))
        .await
        .unwrap();
    assert_eq!(store.retrieve("alice", "openai").await.unwrap(), None);
    assert!(store.user_keys("alice").await.unwrap().is_empty());
    assert!(store.scan(None, 10).await.unwrap().keys.is_empty());
    assert!(!store.is_marked().await.unwrap());
    assert_eq!(keys_under(&mut raw, &prefix).await, Vec::<String>::new());

    // The first write marks the prefix, once.
    let key = ApiKey::new("alice", "openai", vec![1, 2, 3]).unwrap();
    store.store(&key).await.unwrap();
    assert!(store.is_marked().await.unwrap());
    let format: String = raw.get(format!("{prefix}format")).await.unwrap();
    assert_eq!(format, "2");

    // Once the keys are gone, unmarking leaves nothing under the prefix.
    store.clear_all("alice").await.unwrap();
    store.unmark().await.unwrap();
    assert_eq!(keys_under(&mut raw, &prefix).await, Vec::<String>::new());

    // `migrate` marks an empty prefix on purpose.
    store.migrate().await.unwrap();
    assert!(store.is_marked().await.unwrap());
    store.unmark().await.unwrap();
}
