//! TieredStorage with Redis (leased fills) in front of SQLite passes the
//! conformance suite.

#![cfg(all(feature = "redis", feature = "sqlite"))]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;

use byok::{ByokConfig, RedisStorage, SqliteStorage, TieredStorage};

async fn redis_over_sqlite() -> Option<TieredStorage> {
    // Copies expire by themselves: nothing to clean up in Redis.
    let config =
        ByokConfig::for_tests().with_session_key_prefix(format!("byok_test_{:016x}_", rand_u64()));
    let url = byok_testkit::services::redis_url().await?;
    let fast = RedisStorage::builder(&url)
        .config(&config)
        .open()
        .await
        .unwrap();
    let durable = SqliteStorage::connect("sqlite::memory:", &config)
        .await
        .unwrap();
    durable.migrate().await.unwrap();
    Some(
        TieredStorage::new(Arc::new(fast), Arc::new(durable))
            .with_copy_ttl(std::time::Duration::from_secs(60)),
    )
}

fn rand_u64() -> u64 {
    std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
}

byok_testkit::conformance_tests!(maybe: redis_over_sqlite().await);
