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
use byok_testkit::services::WithCleanup;

#[path = "support/redis.rs"]
mod redis_support;

/// The tiered store, which removes its Redis keys when dropped.
async fn redis_over_sqlite() -> Option<WithCleanup<TieredStorage>> {
    let prefix = format!("byok_test_{:016x}_", rand_u64());
    let config = ByokConfig::for_tests().with_session_key_prefix(&prefix);
    let url = byok_testkit::services::redis_url().await?;
    let cleanup = redis_support::destroyed_on_drop(&url, &prefix);
    let fast = RedisStorage::builder(&url)
        .config(&config)
        .open()
        .await
        .unwrap();
    let durable = SqliteStorage::connect("sqlite::memory:", &config)
        .await
        .unwrap();
    durable.migrate().await.unwrap();
    let tiered = TieredStorage::new(Arc::new(fast), Arc::new(durable))
        .with_copy_ttl(std::time::Duration::from_secs(60));
    Some(WithCleanup::new(tiered, cleanup))
}

fn rand_u64() -> u64 {
    std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
}

byok_testkit::conformance_tests!(maybe: redis_over_sqlite().await);

/// Redis wrapped in the testkit's layers and in `ObservedStorage` is still
/// a fast store with leased fills, and its steps go through the faults.
#[tokio::test]
async fn a_wrapped_redis_store_keeps_its_fast_tier() {
    use byok::KeyStorage;
    use byok_testkit::layers::{CountingStorage, FaultyStorage, Op};

    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    // Nothing is written: opening writes nothing, and the lookup fails
    // before it reaches Redis.
    let config =
        ByokConfig::for_tests().with_session_key_prefix(format!("byok_test_{:016x}_", rand_u64()));
    let redis = RedisStorage::builder(&url)
        .config(&config)
        .open()
        .await
        .unwrap();
    assert!(redis.as_fast_tier().is_some());
    let faulty = FaultyStorage::new(redis);
    let wrapped = byok::ObservedStorage::new(CountingStorage::new(faulty.clone()), "redis");
    let tier = wrapped.as_fast_tier().unwrap();
    faulty.fail(&[Op::Retrieve]);
    let token = byok::LeaseToken::generate();
    let lease = std::time::Duration::from_secs(1);
    assert!(tier.lookup("u", "p", &token, lease).await.is_err());
    assert_eq!(faulty.injected(), 1);
}
