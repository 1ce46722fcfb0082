//! The model-checked soak of `byok_testkit::soak` (16 tasks, about 5,000
//! operations unless `BYOK_TEST_SOAK_OPS` asks for more, compare-and-swap
//! races on shared counters) on each engine:
//! a SQLite file, and a table of its own on the shared PostgreSQL and
//! MariaDB. Each test prints its figures on a `soak <engine>: …` line and
//! fails on any mismatch with the model or any error that is not
//! retryable; retryable errors (MariaDB's deadlocks among them) are
//! counted and printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::io::Write as _;
use std::sync::Arc;

use byok_core::KeyStorage;
use byok_testkit::soak::{SoakConfig, soak};

async fn check(engine: &str, store: Arc<dyn KeyStorage>) {
    let report = soak(store, &SoakConfig::from_env()).await;
    let _ = writeln!(std::io::stderr(), "soak {engine}: {report}");
    assert!(report.is_clean(), "soak {engine}: {report}");
    assert!(report.increments > 0, "no counter increment succeeded");
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file() {
    use byok_core::ByokConfig;
    use byok_sql::SqliteStorage;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let config = ByokConfig::default();
    let store = SqliteStorage::connect(&url, &config).await.unwrap();
    store.migrate().await.unwrap();
    check("sqlite", Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    use byok_sql::PostgresStorage;
    use byok_sql::sqlx::postgres::PgConnection;

    let Some(url) = byok_testkit::services::postgres_url().await else {
        return;
    };
    let scratch = common::scratch::<PgConnection, _>(
        url,
        "SELECT tablename::text FROM pg_tables \
         WHERE schemaname = current_schema() AND tablename LIKE 'byok\\_test\\_%'",
        PostgresStorage::connect,
        PostgresStorage::migrate,
    )
    .await;
    check("postgres", Arc::new(scratch)).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql() {
    use byok_sql::MySqlStorage;
    use byok_sql::sqlx::mysql::MySqlConnection;

    let Some(url) = byok_testkit::services::mysql_url().await else {
        return;
    };
    let scratch = common::scratch::<MySqlConnection, _>(
        url,
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE 'byok\\_test\\_%'",
        MySqlStorage::connect,
        MySqlStorage::migrate,
    )
    .await;
    check("mysql", Arc::new(scratch)).await;
}
