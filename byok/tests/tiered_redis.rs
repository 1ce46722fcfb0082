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

/// A check kept through a tiered store lives in its durable store only:
/// the manager shows it in the key's summary, and the Redis in front holds
/// none. (Memory is the durable store here, a store that keeps checks.)
#[tokio::test]
async fn a_check_kept_through_redis_in_front_lives_in_the_durable_store() {
    use byok::{Byok, CheckRecord, KeyStorage, Keyring, MasterKey, MemoryStorage, Ttl};

    let prefix = format!("byok_test_{:016x}_", rand_u64());
    let config = ByokConfig::for_tests().with_session_key_prefix(&prefix);
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let _cleanup = redis_support::destroyed_on_drop(&url, &prefix);
    let fast = Arc::new(
        RedisStorage::builder(&url)
            .config(&config)
            .open()
            .await
            .unwrap(),
    );
    let durable = Arc::new(MemoryStorage::new());
    let tiered = TieredStorage::new(fast.clone(), durable.clone())
        .with_copy_ttl(std::time::Duration::from_secs(60));
    let byok = Byok::new(
        Arc::new(tiered),
        Keyring::new(1, MasterKey::generate()),
        config,
    )
    .unwrap();

    byok.set_key("alice", "openai", "sk-proj-0123456789abcdef", Ttl::Never)
        .await
        .unwrap();
    // A read fills the fast store's copy first.
    assert!(byok.get_key("alice", "openai").await.unwrap().is_some());
    let record = CheckRecord::new("valid", "OpenAI accepts this key.").unwrap();
    assert!(byok.record_check("alice", "openai", &record).await.unwrap());

    let summary = byok.key_summary("alice").await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].last_check.as_ref(), Some(&record));
    assert_eq!(
        byok.last_check("alice", "openai").await.unwrap(),
        Some(record)
    );
    assert_eq!(durable.checks("alice").await.unwrap().len(), 1);
    assert!(fast.checks("alice").await.unwrap().is_empty());

    // A new key starts unchecked, through both tiers.
    byok.set_key("alice", "openai", "sk-proj-fedcba9876543210", Ttl::Never)
        .await
        .unwrap();
    assert_eq!(byok.last_check("alice", "openai").await.unwrap(), None);
    assert_eq!(byok.key_summary("alice").await.unwrap()[0].last_check, None);
}
