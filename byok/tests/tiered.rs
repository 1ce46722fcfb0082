//! TieredStorage: memory in front of memory passes the conformance suite,
//! and the tiers stay consistent.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;

use byok::{ApiKey, KeyStorage, MemoryStorage, TieredStorage};

fn tiered() -> TieredStorage {
    TieredStorage::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(MemoryStorage::new()),
    )
}

byok_testkit::conformance_tests!(tiered());

#[tokio::test]
async fn reads_fill_the_fast_store_and_writes_reach_both() {
    let fast = MemoryStorage::new();
    let durable = MemoryStorage::new();
    let store = TieredStorage::new(Arc::new(fast.clone()), Arc::new(durable.clone()));

    durable
        .store(&ApiKey::new("u", "p", vec![1]).unwrap())
        .await
        .unwrap();
    assert!(fast.is_empty());
    assert_eq!(
        store
            .retrieve("u", "p")
            .await
            .unwrap()
            .unwrap()
            .encrypted_value(),
        [1]
    );
    assert_eq!(fast.len(), 1, "a miss fills the fast store");

    store
        .store(&ApiKey::new("u", "p", vec![2]).unwrap())
        .await
        .unwrap();
    for tier in [&fast, &durable] {
        assert_eq!(
            tier.retrieve("u", "p")
                .await
                .unwrap()
                .unwrap()
                .encrypted_value(),
            [2]
        );
    }
    assert!(store.delete("u", "p").await.unwrap());
    assert!(fast.is_empty() && durable.is_empty());
}

#[tokio::test]
async fn a_failed_swap_evicts_the_fast_copy() {
    let fast = MemoryStorage::new();
    let durable = MemoryStorage::new();
    let store = TieredStorage::new(Arc::new(fast.clone()), Arc::new(durable.clone()));
    let a = ApiKey::new("u", "p", vec![1]).unwrap();
    store.store(&a).await.unwrap();
    // Another writer changes the durable store behind the cache's back.
    let b = ApiKey::new("u", "p", vec![2]).unwrap();
    durable.store(&b).await.unwrap();
    let c = ApiKey::new("u", "p", vec![3]).unwrap();
    assert!(!store.compare_and_swap(&a, &c).await.unwrap());
    assert_eq!(store.retrieve("u", "p").await.unwrap().unwrap(), b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_leave_both_tiers_equal() {
    let fast = MemoryStorage::new();
    let durable = MemoryStorage::new();
    let store = Arc::new(TieredStorage::new(
        Arc::new(fast.clone()),
        Arc::new(durable.clone()),
    ));
    let tasks: Vec<_> = (0..64u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .store(&ApiKey::new("u", "p", vec![i]).unwrap())
                    .await
                    .unwrap();
                store.retrieve("u", "p").await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        fast.retrieve("u", "p").await.unwrap(),
        durable.retrieve("u", "p").await.unwrap()
    );
}

#[tokio::test]
async fn copy_into_moves_every_key_between_backends() {
    use byok::KeyStorageExt;
    let from = MemoryStorage::new();
    for u in 0..30 {
        for p in ["openai", "groq"] {
            from.store(&ApiKey::new(format!("u{u}"), p, vec![u as u8]).unwrap())
                .await
                .unwrap();
        }
    }
    let to = MemoryStorage::new();
    let options = byok::CopyOptions::new().page_size(7);
    assert_eq!(from.copy_into(&to, &options).await.unwrap().copied, 60);
    assert_eq!(to.len(), 60);
    assert_eq!(
        to.retrieve("u29", "groq").await.unwrap(),
        from.retrieve("u29", "groq").await.unwrap()
    );
}
