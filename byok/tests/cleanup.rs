//! One purge loop per store: the manager's. `connect` starts none of its
//! own, and `ByokConfig::storage_backend` pins the scheme `connect_with`
//! accepts.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;
use std::time::Duration;

use byok::DEFAULT_CLEANUP_INTERVAL;
use byok::{ApiKey, Byok, ByokConfig, ByokError, KeyStorage, Keyring, MasterKey, StorageBackend};
use byok_testkit::layers::{CountingStorage, Op};

fn expired(provider: &str) -> ApiKey {
    let past = byok::key::now() - chrono_seconds(5);
    ApiKey::new("u", provider, vec![1])
        .unwrap()
        .with_expires_at(Some(past))
}

fn chrono_seconds(s: i64) -> byok::chrono::Duration {
    byok::chrono::Duration::seconds(s)
}

/// Lets every task that is due run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn connect_starts_no_purge_of_its_own() {
    let store = byok::connect_with("memory:", &ByokConfig::default())
        .await
        .unwrap();
    store.store(&expired("p")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    settle().await;
    assert!(
        store.delete("u", "p").await.unwrap(),
        "the expired key was purged without a manager: the store runs a sweeper of its own"
    );
}

#[tokio::test(start_paused = true)]
async fn the_managers_task_is_the_only_purge() {
    let connected = byok::connect_with("memory:", &ByokConfig::default())
        .await
        .unwrap();
    let counted = CountingStorage::new(connected);
    let byok = Byok::new(
        Arc::new(counted.clone()),
        Keyring::new(1, MasterKey::generate()),
        ByokConfig::default(),
    )
    .unwrap();
    counted.store(&expired("p")).await.unwrap();
    tokio::time::sleep(DEFAULT_CLEANUP_INTERVAL - Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(counted.calls(Op::PurgeExpired), 0);
    assert!(
        counted.inner().delete("u", "p").await.unwrap(),
        "purged before the manager's first round"
    );

    counted.store(&expired("q")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        counted.calls(Op::PurgeExpired),
        1,
        "one round of the manager"
    );
    assert!(
        !counted.inner().delete("u", "q").await.unwrap(),
        "the manager's round purged the expired key"
    );
    drop(byok);
}

#[tokio::test]
async fn storage_backend_must_match_the_url() {
    let pinned = |backend| {
        ByokConfig::default()
            .with_storage_backend(Some(backend))
            .with_auto_cleanup(false)
    };
    let store = byok::connect_with("memory:", &pinned(StorageBackend::Memory))
        .await
        .unwrap();
    store
        .store(&ApiKey::new("u", "p", vec![1]).unwrap())
        .await
        .unwrap();

    for url in [
        "memory:",
        "postgres://app:hunter2@db/keys",
        "redis://:hunter2@cache:6379",
    ] {
        let err = byok::connect_with(url, &pinned(StorageBackend::Sqlite))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ByokError::Config(_)), "{url}: {err:?}");
        assert!(text.contains("storage_backend"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("db/keys"),
            "{text}"
        );
    }

    // Unset, the default, any compiled-in scheme is accepted.
    assert_eq!(ByokConfig::default().storage_backend, None);
    byok::connect_with("memory:", &ByokConfig::default())
        .await
        .unwrap();
}
