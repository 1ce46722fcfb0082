//! TieredStorage when its fast tier fails: nothing the durable tier no
//! longer holds is ever served, reads fall back to the durable tier during
//! the outage, and the tiers agree once the fast tier is back.
//!
//! Every scenario runs with memory and (with the `sqlite` feature) SQLite
//! as the durable tier; the fast tier is a memory store behind a
//! `FaultyStorage` switch, offered without its fast-tier capability.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;

use byok::{ApiKey, KeyStorage, MemoryStorage, TieredStorage};
use byok_testkit::layers::{FaultyStorage, Op};

struct Tiers {
    store: TieredStorage,
    fast: FaultyStorage<MemoryStorage>,
    durable: Arc<dyn KeyStorage>,
}

fn tiers(durable: Arc<dyn KeyStorage>) -> Tiers {
    // Without the fast-tier capability: these scenarios are those of a
    // fast store that evicts, which is what they check.
    let fast = FaultyStorage::new(MemoryStorage::new()).with_fast_tier(false);
    Tiers {
        store: TieredStorage::new(Arc::new(fast.clone()), durable.clone()),
        fast,
        durable,
    }
}

fn key(value: u8) -> ApiKey {
    ApiKey::new("u", "p", vec![value; 8]).unwrap()
}

async fn value(store: &dyn KeyStorage) -> Option<Vec<u8>> {
    store
        .retrieve("u", "p")
        .await
        .unwrap()
        .map(|k| k.encrypted_value().to_vec())
}

/// Reads of every kind through the tiered store agree with the durable one.
async fn assert_agrees_with_durable(t: &Tiers) {
    let durable = value(&*t.durable).await;
    assert_eq!(value(&t.store).await, durable, "retrieve");
    let listed = t.store.list_providers("u").await.unwrap();
    assert_eq!(listed.is_empty(), durable.is_none(), "list_providers");
    let keys = t.store.user_keys("u").await.unwrap();
    assert_eq!(
        keys.first().map(|k| k.encrypted_value().to_vec()),
        durable,
        "user_keys"
    );
}

async fn delete_during_outage(durable: Arc<dyn KeyStorage>) {
    let t = tiers(durable);
    t.store.store(&key(1)).await.unwrap();
    assert_eq!(value(&t.store).await, Some(vec![1; 8]));
    assert_eq!(t.fast.inner().len(), 1, "the fast tier holds the key");

    t.fast.fail_all();
    assert!(t.store.delete("u", "p").await.unwrap(), "the delete");
    assert_eq!(value(&*t.durable).await, None, "the durable tier");
    assert_eq!(value(&t.store).await, None, "a read during the outage");

    t.fast.recover();
    assert_eq!(value(&t.store).await, None, "a read after the outage");
    assert_agrees_with_durable(&t).await;
    assert!(t.fast.inner().is_empty(), "the stale copy was evicted");
}

async fn store_during_outage(durable: Arc<dyn KeyStorage>) {
    let t = tiers(durable);
    t.store.store(&key(1)).await.unwrap();
    assert_eq!(value(&t.store).await, Some(vec![1; 8]));

    t.fast.fail_all();
    t.store.store(&key(2)).await.unwrap();
    assert_eq!(value(&t.store).await, Some(vec![2; 8]), "during the outage");

    t.fast.recover();
    assert_eq!(value(&t.store).await, Some(vec![2; 8]), "after the outage");
    assert_agrees_with_durable(&t).await;
    assert_eq!(
        value(t.fast.inner()).await,
        Some(vec![2; 8]),
        "the fast tier was refilled with the durable value"
    );
}

async fn clear_during_outage(durable: Arc<dyn KeyStorage>) {
    let t = tiers(durable);
    t.store.store(&key(1)).await.unwrap();
    t.store
        .store(&ApiKey::new("u", "q", vec![3]).unwrap())
        .await
        .unwrap();
    assert!(t.store.retrieve("u", "q").await.unwrap().is_some());

    t.fast.fail_all();
    assert_eq!(t.store.clear_all("u").await.unwrap(), 2);
    t.fast.recover();
    assert_eq!(value(&t.store).await, None);
    assert!(t.store.retrieve("u", "q").await.unwrap().is_none());
    assert_agrees_with_durable(&t).await;
}

async fn swap_during_outage(durable: Arc<dyn KeyStorage>) {
    let t = tiers(durable);
    t.store.store(&key(1)).await.unwrap();
    assert_eq!(value(&t.store).await, Some(vec![1; 8]));

    t.fast.fail_all();
    assert!(t.store.compare_and_swap(&key(1), &key(2)).await.unwrap());
    t.fast.recover();
    assert_eq!(value(&t.store).await, Some(vec![2; 8]));
    assert_agrees_with_durable(&t).await;
}

/// The fast tier acts on a write but the reply is lost: the write that
/// did reach it is no reason to serve it, nor to lose the durable value.
async fn lost_replies_from_the_fast_tier(durable: Arc<dyn KeyStorage>) {
    let t = tiers(durable);
    t.store.store(&key(1)).await.unwrap();
    t.fast.apply_then_fail(true);
    t.fast.fail(&[Op::Store, Op::Delete]);
    t.store.store(&key(2)).await.unwrap();
    assert_eq!(value(&t.store).await, Some(vec![2; 8]));
    assert!(t.store.delete("u", "p").await.unwrap());
    assert_eq!(value(&t.store).await, None);
    t.fast.recover();
    assert_agrees_with_durable(&t).await;
}

/// While the fast tier cannot be read, reads come from the durable tier.
async fn reads_fall_back_during_outage(durable: Arc<dyn KeyStorage>) {
    let t = tiers(durable);
    t.store.store(&key(1)).await.unwrap();
    t.fast.fail_all();
    let injected = t.fast.injected();
    assert_eq!(value(&t.store).await, Some(vec![1; 8]));
    assert!(t.fast.injected() > injected, "the fast tier was tried");
    assert_eq!(t.store.list_providers("u").await.unwrap(), ["p"]);
    assert_eq!(t.store.user_keys("u").await.unwrap().len(), 1);
    assert!(t.store.retrieve("u", "missing").await.unwrap().is_none());

    // Only reads fail: a read does not fill the fast tier it cannot read.
    t.fast.recover();
    t.fast.inner().clear_all("u").await.unwrap();
    t.fast.fail(&[Op::Retrieve]);
    assert_eq!(value(&t.store).await, Some(vec![1; 8]));
    t.fast.recover();
    assert_eq!(value(&t.store).await, Some(vec![1; 8]));
}

/// A slot written during the outage and never read again is still made
/// right in the fast tier, by the next purge, for other processes that
/// share the fast tier.
async fn purge_repairs_slots_never_read_again(durable: Arc<dyn KeyStorage>) {
    let t = tiers(durable);
    t.store.store(&key(1)).await.unwrap();
    t.fast.fail_all();
    assert!(t.store.delete("u", "p").await.unwrap());
    t.fast.recover();
    assert_eq!(t.fast.inner().len(), 1, "the stale copy is still there");
    assert_eq!(t.store.pending_evictions(), 1);
    t.store.purge_expired().await.unwrap();
    assert!(
        t.fast.inner().is_empty(),
        "the purge evicted the stale copy"
    );
    assert_eq!(t.store.pending_evictions(), 0);
}

/// A failure of the durable tier fails the call and leaves the fast tier
/// without a copy that the durable tier might not hold.
async fn durable_failure_fails_the_write(durable: Arc<dyn KeyStorage>) {
    let faulty = FaultyStorage::new(durable);
    let fast = MemoryStorage::new();
    let store = TieredStorage::new(Arc::new(fast.clone()), Arc::new(faulty.clone()));
    store.store(&key(1)).await.unwrap();
    faulty.fail_all();
    assert!(store.store(&key(2)).await.unwrap_err().is_retryable());
    assert!(store.delete("u", "p").await.unwrap_err().is_retryable());
    faulty.recover();
    assert_eq!(value(&store).await, Some(vec![1; 8]));
}

/// With strict writes, a write whose eviction fails is refused and the
/// durable store keeps the old key, which every read then agrees on.
async fn strict_writes_refuse_during_outage(durable: Arc<dyn KeyStorage>) {
    let fast = FaultyStorage::new(MemoryStorage::new()).with_fast_tier(false);
    let t = Tiers {
        store: TieredStorage::new(Arc::new(fast.clone()), durable.clone()).with_strict_writes(true),
        fast,
        durable,
    };
    t.store.store(&key(1)).await.unwrap();
    assert_eq!(value(&t.store).await, Some(vec![1; 8]));

    t.fast.fail_all();
    assert!(t.store.store(&key(2)).await.unwrap_err().is_retryable());
    assert!(t.store.delete("u", "p").await.unwrap_err().is_retryable());
    assert!(t.store.clear_all("u").await.unwrap_err().is_retryable());
    assert!(
        t.store
            .compare_and_swap(&key(1), &key(3))
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert_eq!(
        value(&*t.durable).await,
        Some(vec![1; 8]),
        "the durable tier is untouched"
    );
    assert_eq!(
        value(&t.store).await,
        Some(vec![1; 8]),
        "a read during the outage"
    );

    t.fast.recover();
    assert_eq!(t.store.pending_evictions(), 0);
    assert_agrees_with_durable(&t).await;
    t.store.store(&key(4)).await.unwrap();
    assert_eq!(value(t.fast.inner()).await, Some(vec![4; 8]));
    assert_agrees_with_durable(&t).await;
}

macro_rules! scenarios {
    ($durable:expr) => {
        #[tokio::test]
        async fn delete_during_outage() {
            super::delete_during_outage($durable).await;
        }
        #[tokio::test]
        async fn store_during_outage() {
            super::store_during_outage($durable).await;
        }
        #[tokio::test]
        async fn clear_during_outage() {
            super::clear_during_outage($durable).await;
        }
        #[tokio::test]
        async fn swap_during_outage() {
            super::swap_during_outage($durable).await;
        }
        #[tokio::test]
        async fn lost_replies_from_the_fast_tier() {
            super::lost_replies_from_the_fast_tier($durable).await;
        }
        #[tokio::test]
        async fn reads_fall_back_during_outage() {
            super::reads_fall_back_during_outage($durable).await;
        }
        #[tokio::test]
        async fn purge_repairs_slots_never_read_again() {
            super::purge_repairs_slots_never_read_again($durable).await;
        }
        #[tokio::test]
        async fn strict_writes_refuse_during_outage() {
            super::strict_writes_refuse_during_outage($durable).await;
        }
        #[tokio::test]
        async fn durable_failure_fails_the_write() {
            super::durable_failure_fails_the_write($durable).await;
        }
    };
}

mod over_memory {
    use super::*;
    scenarios!(Arc::new(MemoryStorage::new()));
}

#[cfg(feature = "sqlite")]
mod over_sqlite {
    use super::*;

    async fn sqlite() -> Arc<dyn KeyStorage> {
        let config = byok::ByokConfig::for_tests();
        let store = byok::SqliteStorage::connect("sqlite::memory:", &config)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        Arc::new(store)
    }

    scenarios!(sqlite().await);
}
