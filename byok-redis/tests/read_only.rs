//! Opening a store and reading it writes nothing to Redis: a store is
//! marked by its first write or by `migrate`, not by whoever looks at it.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use byok_core::{ApiKey, KeyStorage as _, SchemaStatus, StoreAdmin as _};
use byok_redis::RedisStorage;
use byok_redis::redis::{self, AsyncCommands as _};

/// Every key under `prefix` with its `DUMP`, so that a changed value shows.
async fn dump_under(
    raw: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for key in common::keys_under(raw, prefix).await {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query_async(raw).await.unwrap();
        out.push((key, dump));
    }
    out
}

async fn open(url: &str, prefix: &str) -> RedisStorage {
    RedisStorage::builder(url)
        .config(&common::config(prefix))
        .open()
        .await
        .unwrap()
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn opening_and_reading_write_nothing_and_the_first_write_marks() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let prefix = common::fresh_prefix();
    let _cleanup = common::cleanup(&url, &prefix);
    let mut raw = raw(&url).await;

    let store = open(&url, &prefix).await;
    assert_eq!(store.retrieve("alice", "openai").await.unwrap(), None);
    assert!(store.user_keys("alice").await.unwrap().is_empty());
    assert!(store.scan(None, 10).await.unwrap().keys.is_empty());
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Missing);
    assert_eq!(store.stats().await.unwrap().keys, 0);
    assert_eq!(
        common::keys_under(&mut raw, &prefix).await,
        Vec::<String>::new()
    );

    // The first write marks the prefix, once.
    let key = ApiKey::new("alice", "openai", vec![1, 2, 3]).unwrap();
    store.store(&key).await.unwrap();
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);
    let format: String = raw.get(format!("{prefix}format")).await.unwrap();
    assert_eq!(format, "2");

    // Destroying leaves nothing under the prefix, the mark included.
    store.destroy().await.unwrap();
    assert_eq!(
        common::keys_under(&mut raw, &prefix).await,
        Vec::<String>::new()
    );
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Missing);

    // `migrate` marks an empty prefix on purpose.
    store.migrate().await.unwrap();
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);
}

#[tokio::test]
async fn opening_an_unmarked_prefix_with_keys_writes_nothing() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let prefix = common::fresh_prefix();
    let _cleanup = common::cleanup(&url, &prefix);
    let mut raw = raw(&url).await;
    let key = ApiKey::new("alice", "openai", vec![1]).unwrap();
    common::write_format_1(&mut raw, &prefix, &key).await;
    let before = dump_under(&mut raw, &prefix).await;
    assert!(!before.is_empty());

    let store = open(&url, &prefix).await;
    assert_eq!(store.retrieve("alice", "openai").await.unwrap(), None);
    assert!(store.list_providers("alice").await.unwrap().is_empty());
    assert!(store.scan(None, 10).await.unwrap().keys.is_empty());
    assert_eq!(
        store.schema_status().await.unwrap(),
        SchemaStatus::Older {
            found: 1,
            current: 2
        }
    );
    store.stats().await.unwrap();
    assert_eq!(dump_under(&mut raw, &prefix).await, before);
}
