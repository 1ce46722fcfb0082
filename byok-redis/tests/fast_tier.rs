//! `RedisStorage` as a `FastTier`: the lease rules step by step, against a
//! standalone Redis (`BYOK_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Every test uses a prefix of its own; every
//! key it makes expires within seconds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::time::Duration;

use byok_core::{ApiKey, FastTier, KeyStorage, LeaseToken, Lookup};

const LEASE: Duration = Duration::from_secs(5);
const TTL: Duration = Duration::from_secs(5);

async fn setup() -> Option<common::Scratch> {
    let url = byok_testkit::services::redis_url().await?;
    Some(common::open_scratch(&url).await)
}

fn key(value: u8) -> ApiKey {
    ApiKey::new("alice", "openai", vec![value]).unwrap()
}

async fn lookup(tier: &dyn FastTier) -> (Lookup, LeaseToken) {
    let token = LeaseToken::generate();
    let found = tier.lookup("alice", "openai", &token, LEASE).await.unwrap();
    (found, token)
}

fn value(found: &Lookup) -> Option<u8> {
    match found {
        Lookup::Hit(k) => Some(k.encrypted_value()[0]),
        _ => None,
    }
}

#[tokio::test]
async fn redis_storage_offers_the_capability() {
    let Some(store) = setup().await else { return };
    assert!(store.as_fast_tier().is_some());
    let shared: std::sync::Arc<dyn KeyStorage> = std::sync::Arc::new(store);
    assert!(shared.as_fast_tier().is_some());
}

#[tokio::test]
async fn one_miss_takes_the_lease_others_are_busy_until_it_fills() {
    let Some(store) = setup().await else { return };
    let (first, token) = lookup(&*store).await;
    assert!(matches!(first, Lookup::Leased), "{first:?}");
    let (second, _) = lookup(&*store).await;
    assert!(matches!(second, Lookup::Busy), "{second:?}");
    let filled = store
        .fill("alice", "openai", &token, Some(&key(1)), TTL)
        .await
        .unwrap();
    assert!(filled);
    assert_eq!(value(&lookup(&*store).await.0), Some(1));
    // The copy is not a key of the store itself.
    assert_eq!(store.retrieve("alice", "openai").await.unwrap(), None);
}

#[tokio::test]
async fn a_hold_invalidates_an_earlier_lease_and_blocks_fills_until_settled() {
    let Some(store) = setup().await else { return };
    let (_, reader) = lookup(&*store).await;
    let writer = LeaseToken::generate();
    store.hold("alice", "openai", &writer, LEASE).await.unwrap();
    let late = store
        .fill("alice", "openai", &reader, Some(&key(1)), TTL)
        .await
        .unwrap();
    assert!(!late, "a fill under a lease taken before the hold");
    assert!(matches!(lookup(&*store).await.0, Lookup::Busy));
    store
        .settle("alice", "openai", Some(&writer), Some(&key(2)), TTL)
        .await
        .unwrap();
    assert_eq!(value(&lookup(&*store).await.0), Some(2));
}

#[tokio::test]
async fn a_writer_overtaken_by_another_hold_leaves_no_copy() {
    let Some(store) = setup().await else { return };
    let (first, second) = (LeaseToken::generate(), LeaseToken::generate());
    store.hold("alice", "openai", &first, LEASE).await.unwrap();
    store.hold("alice", "openai", &second, LEASE).await.unwrap();
    store
        .settle("alice", "openai", Some(&second), Some(&key(2)), TTL)
        .await
        .unwrap();
    assert_eq!(value(&lookup(&*store).await.0), Some(2));
    // The first writer may have written the durable store last: its
    // settle removes the copy rather than trust either value.
    store
        .settle("alice", "openai", Some(&first), Some(&key(1)), TTL)
        .await
        .unwrap();
    assert!(matches!(lookup(&*store).await.0, Lookup::Leased));
}

#[tokio::test]
async fn a_user_hold_drops_every_copy_and_lease_of_the_user() {
    let Some(store) = setup().await else { return };
    let (_, token) = lookup(&*store).await;
    assert!(
        store
            .fill("alice", "openai", &token, Some(&key(1)), TTL)
            .await
            .unwrap()
    );
    let (_, stale_lease) = {
        let token = LeaseToken::generate();
        let found = store
            .lookup("alice", "anthropic", &token, LEASE)
            .await
            .unwrap();
        (found, token)
    };
    let clearing = LeaseToken::generate();
    store
        .hold_user("alice", &clearing, LEASE, TTL)
        .await
        .unwrap();
    assert!(matches!(lookup(&*store).await.0, Lookup::Busy));
    store
        .settle_user("alice", Some(&clearing), TTL)
        .await
        .unwrap();
    assert!(matches!(lookup(&*store).await.0, Lookup::Leased));
    let late = store
        .fill("alice", "anthropic", &stale_lease, Some(&key(3)), TTL)
        .await
        .unwrap();
    assert!(!late, "a fill under a lease taken before the user's hold");
}

#[tokio::test]
async fn copies_and_leases_end_with_their_lifetime() {
    let Some(store) = setup().await else { return };
    let short = Duration::from_millis(100);
    let token = LeaseToken::generate();
    store
        .lookup("alice", "openai", &token, short)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (after, token) = lookup(&*store).await;
    assert!(
        matches!(after, Lookup::Leased),
        "the lease ended: {after:?}"
    );
    assert!(
        store
            .fill("alice", "openai", &token, Some(&key(1)), short)
            .await
            .unwrap()
    );
    assert_eq!(value(&lookup(&*store).await.0), Some(1));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(matches!(lookup(&*store).await.0, Lookup::Leased));
}
