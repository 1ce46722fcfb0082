//! `TieredStorage` with Redis in front of SQLite, when the network to Redis
//! fails: a loopback proxy (`byok_testkit::proxy`) crashes or stalls the
//! connection to the shared test Redis, never the server itself.
//!
//! Whatever the writes made during the outage returned, once Redis is
//! back the tiered store must answer exactly what the durable store holds:
//! a key deleted or replaced while Redis was unreachable must not come
//! back from Redis. And while Redis is unreachable, reads must be answered
//! by the durable store. Each test prints its figures on a
//! `fault tiered …` line.

#![cfg(all(feature = "redis", feature = "sqlite"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use byok::byok_redis::RedisOptions;
use byok::{ApiKey, ByokConfig, ByokError, KeyStorage, RedisStorage, SqliteStorage, TieredStorage};
use byok_testkit::Namespace;
use byok_testkit::proxy::FaultProxy;

/// The hang detector: far above Redis's deadline of 0.6 s.
const BOUND: Duration = Duration::from_secs(30);

/// Slots written before the outage: one deleted, one replaced, one left
/// alone during it.
const SLOTS: [&str; 3] = ["deleted", "replaced", "kept"];

struct Tiers {
    store: TieredStorage,
    proxy: FaultProxy,
    _cleanup: byok_testkit::services::CleanupOnDrop,
}

#[path = "support/redis.rs"]
mod redis_support;

/// Redis (through a proxy, on a key prefix of its own) in front of an
/// in-memory SQLite; `None` without a Redis.
async fn tiers() -> Option<Tiers> {
    let url = byok_testkit::services::redis_url().await?;
    let (proxy, through) = FaultProxy::in_front_of(&url, 6379).await.unwrap();
    let prefix = fresh_prefix();
    let cleanup = redis_support::destroyed_on_drop(&url, &prefix);
    let config = ByokConfig::default()
        .with_session_key_prefix(prefix)
        .with_auto_cleanup(false);
    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(300))
        .with_response_timeout(Duration::from_millis(300));
    let fast = RedisStorage::builder(&through)
        .config(&config)
        .options(options)
        .open()
        .await
        .unwrap();
    let durable = SqliteStorage::connect("sqlite::memory:", &config)
        .await
        .unwrap();
    durable.migrate().await.unwrap();
    Some(Tiers {
        store: TieredStorage::new(Arc::new(fast), Arc::new(durable)),
        proxy,
        _cleanup: cleanup,
    })
}

/// A Redis key prefix of this test's own, `byok_test_<random>_`, made from
/// a fresh namespace's random part.
fn fresh_prefix() -> String {
    let ns = Namespace::new();
    let random = ns
        .prefix()
        .trim_start_matches("byok-test-")
        .trim_end_matches('-');
    format!("byok_test_{random}_")
}

async fn bounded<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, work)
        .await
        .expect("a call hung past the bound")
}

/// `Ok`, or a retryable storage error: what a write may return while the
/// fast tier is down.
fn ok_or_retryable<T>(name: &str, outcome: &Result<T, ByokError>) -> bool {
    match outcome {
        Ok(_) => true,
        Err(e) => {
            assert!(
                e.is_retryable() && matches!(e, ByokError::Storage(_)),
                "{name}: {e} ({e:?})"
            );
            false
        }
    }
}

/// Retries `work` while it fails retryably (at most 100 times).
async fn settle<T, F: Future<Output = Result<T, ByokError>>>(mut work: impl FnMut() -> F) -> T {
    for _ in 0..100 {
        match bounded(work()).await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("not retryable: {e} ({e:?})"),
        }
    }
    panic!("the store did not recover")
}

/// Writes the three slots and reads each back, so Redis holds a copy.
async fn fill(t: &Tiers, user: &str) -> Vec<ApiKey> {
    let mut keys = Vec::new();
    for (i, provider) in SLOTS.iter().enumerate() {
        let key = ApiKey::new(user, *provider, vec![i as u8; 32]).unwrap();
        bounded(t.store.store(&key)).await.unwrap();
        let back = bounded(t.store.retrieve(user, provider)).await.unwrap();
        assert_eq!(back, Some(key.clone()));
        keys.push(key);
    }
    keys
}

/// Deletes one slot and replaces another while Redis is unreachable
/// (crashed, or stalled and then cut), then checks, with Redis back, that the tiered
/// store agrees with the durable one on every slot, several reads over.
async fn writes_during_an_outage_are_not_undone(stall: bool) {
    let Some(t) = tiers().await else { return };
    let ns = Namespace::new();
    let user = ns.user("tiered");
    let keys = fill(&t, &user).await;

    if stall {
        t.proxy.stall();
    } else {
        t.proxy.cut();
        t.proxy.refuse();
    }
    let deleted = bounded(t.store.delete(&user, "deleted")).await;
    let replacement = keys[1].clone().with_encrypted_value(vec![9; 32]);
    let replaced = bounded(t.store.store(&replacement)).await;
    let acked = [
        ok_or_retryable("delete", &deleted),
        ok_or_retryable("store", &replaced),
    ];
    if stall {
        // The frozen connection then dies: what it held never reaches
        // Redis, as when a frozen server is restarted.
        t.proxy.cut();
    }
    t.proxy.resume();

    // The first answer after the outage, and the ones after it (a read may
    // fill the fast tier), are all the durable store's.
    let durable = t.store.durable();
    for round in 0..3 {
        for provider in SLOTS {
            let tiered = settle(|| t.store.retrieve(&user, provider)).await;
            let truth = settle(|| durable.retrieve(&user, provider)).await;
            assert_eq!(
                tiered, truth,
                "read {round} of slot {provider:?} after the outage serves what the durable \
                 store does not hold"
            );
        }
        let listed = settle(|| t.store.list_providers(&user)).await;
        let mut served = Vec::new();
        for provider in &listed {
            if settle(|| t.store.retrieve(&user, provider)).await.is_some() {
                served.push(provider.clone());
            }
        }
        assert_eq!(listed, served, "list_providers and retrieve disagree");
    }
    // What was acknowledged holds.
    if acked[0] {
        assert_eq!(settle(|| t.store.retrieve(&user, "deleted")).await, None);
    }
    if acked[1] {
        assert_eq!(
            settle(|| t.store.retrieve(&user, "replaced")).await,
            Some(replacement)
        );
    }
    assert_eq!(
        settle(|| t.store.retrieve(&user, "kept")).await,
        Some(keys[2].clone())
    );
    let _ = writeln!(
        std::io::stderr(),
        "fault tiered {}: 2 writes during the outage ({} acknowledged), {} slots checked \
         against the durable store over 3 rounds, {} connections reset",
        if stall {
            "stall then cut"
        } else {
            "crash (cut + refuse)"
        },
        acked.iter().filter(|a| **a).count(),
        SLOTS.len(),
        t.proxy.stats().cut + t.proxy.stats().refused,
    );
    settle(|| t.store.clear_all(&user)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_or_replace_during_a_fast_tier_crash_is_not_undone() {
    writes_during_an_outage_are_not_undone(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_or_replace_during_a_fast_tier_stall_is_not_undone() {
    writes_during_an_outage_are_not_undone(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_the_durable_store_while_the_fast_tier_is_down() {
    let Some(t) = tiers().await else { return };
    let ns = Namespace::new();
    let user = ns.user("fallback");
    let keys = fill(&t, &user).await;
    t.proxy.cut();
    t.proxy.refuse();
    for key in &keys {
        let back = bounded(t.store.retrieve(&user, key.provider()))
            .await
            .unwrap_or_else(|e| panic!("retrieve while the fast tier is down: {e}"));
        assert_eq!(back.as_ref(), Some(key));
    }
    let listed = bounded(t.store.list_providers(&user)).await.unwrap();
    assert_eq!(listed.len(), SLOTS.len());
    t.proxy.resume();
    let _ = writeln!(
        std::io::stderr(),
        "fault tiered fallback: {} reads answered by the durable store during a crash",
        keys.len()
    );
    settle(|| t.store.clear_all(&user)).await;
}
