//! The model-checked soak of `byok_testkit::soak` on `TieredStorage`:
//! memory in front of SQLite, and (with a test Redis) Redis in front of
//! SQLite. The fast tier must never make an answer disagree with the
//! model, counter races included. Each test prints its figures on a
//! `soak tiered …:` line.

#![cfg(feature = "sqlite")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test by panicking"
)]

use std::io::Write as _;
use std::sync::Arc;

use byok::{ByokConfig, KeyStorage, MemoryStorage, SqliteStorage, TieredStorage};
use byok_testkit::soak::{SoakConfig, soak};

fn config() -> ByokConfig {
    ByokConfig::for_tests()
}

async fn check(name: &str, fast: Arc<dyn KeyStorage>) {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let durable = SqliteStorage::connect(&url, &config()).await.unwrap();
    durable.migrate().await.unwrap();
    let store = TieredStorage::new(fast, Arc::new(durable));
    let report = soak(Arc::new(store), &SoakConfig::from_env()).await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = writeln!(std::io::stderr(), "soak tiered {name}: {report}");
    assert!(report.is_clean(), "soak tiered {name}: {report}");
    assert!(report.increments > 0, "no counter increment succeeded");
}

/// A fresh directory for the database file, named by a random namespace.
fn tempfile_dir() -> std::path::PathBuf {
    let ns = byok_testkit::Namespace::new();
    let dir = std::env::temp_dir().join(ns.prefix().trim_end_matches('-'));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_sqlite() {
    check("memory over sqlite", Arc::new(MemoryStorage::new())).await;
}

#[cfg(feature = "redis")]
#[path = "support/redis.rs"]
mod redis_support;

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_sqlite() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let ns = byok_testkit::Namespace::new();
    let random = ns
        .prefix()
        .trim_start_matches("byok-test-")
        .trim_end_matches('-');
    let prefix = format!("byok_test_{random}_");
    let _cleanup = redis_support::destroyed_on_drop(&url, &prefix);
    let redis_config = config().with_session_key_prefix(prefix);
    let fast = byok::RedisStorage::builder(&url)
        .config(&redis_config)
        .open()
        .await
        .unwrap();
    check("redis over sqlite", Arc::new(fast)).await;
}
