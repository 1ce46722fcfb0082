//! The conformance suite on a SQLite file database, plus the file-only
//! checks: WAL mode, keys surviving a reopen, and concurrent migrations
//! from two pools.
//!
//! Every test makes its own database file in its own temporary directory,
//! removed when the test's store is dropped, so tests run in parallel and
//! leave nothing behind.
#![cfg(feature = "sqlite")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "setup helpers are test code: a failure must fail the test"
)]

mod common;

use byok_core::{ApiKey, ByokConfig, KeyStorage};
use byok_sql::SqliteStorage;
use common::Scratch;
use tempfile::TempDir;

fn url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("keys.db").display())
}

/// A migrated store on a file in a temporary directory, which is removed
/// when the store is dropped.
async fn setup() -> Option<Scratch<SqliteStorage>> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStorage::connect(&url(&dir), &ByokConfig::default())
        .await
        .expect("the database file opens");
    store.migrate().await.expect("migrate");
    Some(Scratch::new(store, move || drop(dir)))
}

byok_testkit::conformance_tests!(maybe: setup().await);

#[tokio::test]
async fn file_is_created_in_wal_mode_and_keys_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = ByokConfig::default();
    let key = ApiKey::new("alice", "openai", vec![0, 1, 2, 255])
        .unwrap()
        .with_hint(Some("sk-...xyz".into()))
        .unwrap();
    {
        let store = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
        store.migrate().await.unwrap();
        let mode: String = byok_sql::sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        store.store(&key).await.unwrap();
        store.pool().close().await;
    }
    assert!(dir.path().join("keys.db").exists());
    let store = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.retrieve("alice", "openai").await.unwrap(), Some(key));
}

#[tokio::test]
async fn concurrent_migrations_from_two_pools_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let config = ByokConfig::default();
    let a = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
    let b = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
    let (ra, rb, rc) = tokio::join!(a.migrate(), b.migrate(), a.migrate());
    ra.unwrap();
    rb.unwrap();
    rc.unwrap();
    a.store(&ApiKey::new("u", "p", vec![7]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        b.retrieve("u", "p")
            .await
            .unwrap()
            .unwrap()
            .encrypted_value(),
        [7]
    );
}

#[tokio::test]
async fn a_url_without_a_file_is_a_config_error() {
    let err = SqliteStorage::connect("sqlite://", &ByokConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, byok_core::ByokError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn times_after_the_year_9999_round_trip() {
    let Some(s) = setup().await else { return };
    common::far_future_times_round_trip(&s).await;
}
