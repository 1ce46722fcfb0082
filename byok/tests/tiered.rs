//! TieredStorage: memory in front of memory passes the conformance suite,
//! and the tiers stay consistent.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;

use std::time::Duration;

use byok::{ApiKey, FastTier, KeyStorage, LeaseToken, Lookup, MemoryStorage, TieredStorage};

fn tiered() -> TieredStorage {
    TieredStorage::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(MemoryStorage::new()),
    )
}

byok_testkit::conformance_tests!(tiered());

/// The fast store's copy of a slot, through its `FastTier` (a miss takes
/// a lease, which the next write ends).
async fn copy_in(fast: &MemoryStorage, user: &str, provider: &str) -> Option<ApiKey> {
    let token = LeaseToken::generate();
    match fast
        .lookup(user, provider, &token, Duration::from_secs(5))
        .await
        .unwrap()
    {
        Lookup::Hit(key) => Some(key),
        _ => None,
    }
}

#[tokio::test]
async fn reads_fill_the_fast_store_and_writes_reach_both() {
    let fast = MemoryStorage::new();
    let durable = MemoryStorage::new();
    let store = TieredStorage::new(Arc::new(fast.clone()), Arc::new(durable.clone()));

    durable
        .store(&ApiKey::new("u", "p", vec![1]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        store
            .retrieve("u", "p")
            .await
            .unwrap()
            .unwrap()
            .encrypted_value(),
        [1]
    );
    let copy = copy_in(&fast, "u", "p").await;
    assert_eq!(
        copy.unwrap().encrypted_value(),
        [1],
        "a miss fills the fast store"
    );
    assert!(fast.is_empty(), "copies are not keys of the fast store");

    store
        .store(&ApiKey::new("u", "p", vec![2]).unwrap())
        .await
        .unwrap();
    let copy = copy_in(&fast, "u", "p").await;
    assert_eq!(
        copy.unwrap().encrypted_value(),
        [2],
        "a write puts its key in"
    );
    assert_eq!(
        durable
            .retrieve("u", "p")
            .await
            .unwrap()
            .unwrap()
            .encrypted_value(),
        [2]
    );
    assert!(store.delete("u", "p").await.unwrap());
    assert!(copy_in(&fast, "u", "p").await.is_none() && durable.is_empty());
}

#[tokio::test]
async fn copies_end_with_their_lifetime() {
    let fast = MemoryStorage::new();
    let durable = MemoryStorage::new();
    let store = TieredStorage::new(Arc::new(fast.clone()), Arc::new(durable.clone()))
        .with_copy_ttl(Duration::from_millis(50));
    store
        .store(&ApiKey::new("u", "p", vec![1]).unwrap())
        .await
        .unwrap();
    assert!(copy_in(&fast, "u", "p").await.is_some());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        copy_in(&fast, "u", "p").await.is_none(),
        "the copy outlived its TTL"
    );
}

/// Two `TieredStorage`s over one memory fast store, as two managers of one
/// process might share it: a read through one cannot put back a key that
/// the other deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tiered_stores_sharing_a_fast_store_never_refill_a_deleted_key() {
    let fast: Arc<dyn KeyStorage> = Arc::new(MemoryStorage::new());
    let durable: Arc<dyn KeyStorage> = Arc::new(MemoryStorage::new());
    let writer = TieredStorage::new(fast.clone(), durable.clone());
    let reader = Arc::new(TieredStorage::new(fast.clone(), durable.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (reader, stop) = (reader.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    reader.retrieve("u", "p").await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut stale = 0;
    for round in 0..200u8 {
        writer
            .store(&ApiKey::new("u", "p", vec![round]).unwrap())
            .await
            .unwrap();
        tokio::task::yield_now().await;
        writer.delete("u", "p").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        if reader.retrieve("u", "p").await.unwrap().is_some() {
            stale += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(stale, 0, "rounds in which a deleted key was read back");
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

#[tokio::test]
async fn store_if_absent_asks_the_durable_store_and_settles_the_fast_one() {
    let fast = MemoryStorage::new();
    let durable = MemoryStorage::new();
    let store = TieredStorage::new(Arc::new(fast.clone()), Arc::new(durable.clone()));
    let a = ApiKey::new("u", "p", vec![1]).unwrap();
    store.store(&a).await.unwrap();
    // Another writer changes the durable store behind the cache's back:
    // the fast store's copy says the slot holds `a`.
    let b = ApiKey::new("u", "p", vec![2]).unwrap();
    durable.store(&b).await.unwrap();
    let c = ApiKey::new("u", "p", vec![3]).unwrap();
    assert!(!store.store_if_absent(&c).await.unwrap());
    assert!(
        copy_in(&fast, "u", "p").await.is_none(),
        "a refusal evicts the copy"
    );
    assert_eq!(store.retrieve("u", "p").await.unwrap().unwrap(), b);
    // Into an empty slot: stored in the durable store, copied to the fast.
    let d = ApiKey::new("u", "q", vec![4]).unwrap();
    assert!(store.store_if_absent(&d).await.unwrap());
    assert_eq!(durable.retrieve("u", "q").await.unwrap(), Some(d.clone()));
    assert_eq!(copy_in(&fast, "u", "q").await, Some(d));
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
    // The copy, if any, is the durable store's key.
    if let Some(copy) = copy_in(&fast, "u", "p").await {
        assert_eq!(Some(copy), durable.retrieve("u", "p").await.unwrap());
    }
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
