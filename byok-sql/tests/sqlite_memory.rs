//! The conformance suite on an in-memory SQLite database, plus the checks
//! that need no server: table-name validation, decoding of bad rows, and
//! expiry against Rust's clock.
//!
//! Each test makes its own in-memory database (every `sqlite::memory:`
//! pool is a new one), so tests run in parallel and leave nothing behind.
#![cfg(feature = "sqlite")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "setup helpers are test code: a failure must fail the test"
)]

mod common;

use std::error::Error as _;
use std::time::Duration;

use byok_core::{ApiKey, ByokConfig, ByokError, KeyStorage, StorageErrorKind};
use byok_sql::SqliteStorage;
use byok_sql::sqlx;

async fn setup() -> Option<SqliteStorage> {
    let store = SqliteStorage::connect("sqlite::memory:", &ByokConfig::default())
        .await
        .expect("an in-memory database opens");
    store.migrate().await.expect("migrate");
    Some(store)
}

byok_testkit::conformance_tests!(maybe: setup().await);
byok_testkit::admin_conformance_tests!(maybe: setup().await);

#[tokio::test]
async fn user_keys_is_one_read_that_includes_expired_keys() {
    let store = setup().await.unwrap();
    if let Err(failure) = byok_testkit::sql::user_keys_include_expired_keys(&store).await {
        panic!("{failure}");
    }
}

fn config_with_table(name: &str) -> ByokConfig {
    ByokConfig::default().with_db_table_name(name)
}

#[tokio::test]
async fn bad_table_names_are_refused_before_any_sql() {
    let too_long = "t".repeat(64);
    let bad = [
        "keys'; DROP TABLE user_api_keys; --",
        "a'b",
        "a;b",
        "a b",
        "",
        too_long.as_str(),
        "1keys",
        "main.keys",
        "\"keys\"",
    ];
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    for name in bad {
        match SqliteStorage::from_pool(pool.clone(), &config_with_table(name)) {
            Err(ByokError::Config(_)) => {}
            other => panic!("{name:?}: expected a ConfigError, got {other:?}"),
        }
        match SqliteStorage::connect("sqlite::memory:", &config_with_table(name)).await {
            Err(ByokError::Config(_)) => {}
            other => panic!("{name:?}: expected a ConfigError, got {other:?}"),
        }
        let good = SqliteStorage::from_pool(pool.clone(), &ByokConfig::default()).unwrap();
        assert!(matches!(
            good.with_table_name(name),
            Err(ByokError::Config(_))
        ));
    }
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        tables.is_empty(),
        "no SQL ran, yet there are tables: {tables:?}"
    );
}

#[tokio::test]
async fn debug_shows_backend_and_table_only() {
    let store = setup().await.unwrap().with_table_name("my_keys").unwrap();
    assert_eq!(
        format!("{store:?}"),
        "SqliteStorage { backend: \"sqlite\", table: \"my_keys\", .. }"
    );
}

#[tokio::test]
async fn table_name_comes_from_config_or_builder() {
    let store = SqliteStorage::connect("sqlite::memory:", &config_with_table("custom_keys"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store
        .store(&ApiKey::new("u", "p", vec![1]).unwrap())
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM custom_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(tables, ["custom_keys"], "migrate made only its table");
    let other = store.clone().with_table_name("other_keys").unwrap();
    assert_eq!(other.table_name(), "other_keys");
    other.migrate().await.unwrap();
    assert!(other.retrieve("u", "p").await.unwrap().is_none());
    assert!(store.retrieve("u", "p").await.unwrap().is_some());
}

#[tokio::test]
async fn concurrent_migrations_both_succeed() {
    let store = SqliteStorage::connect("sqlite::memory:", &ByokConfig::default())
        .await
        .unwrap();
    let (a, b) = tokio::join!(store.migrate(), store.migrate());
    a.unwrap();
    b.unwrap();
    store
        .store(&ApiKey::new("u", "p", vec![1]).unwrap())
        .await
        .unwrap();
    assert!(store.retrieve("u", "p").await.unwrap().is_some());
}

#[tokio::test]
async fn invalid_rows_read_back_as_corrupt() {
    let store = setup().await.unwrap();
    // A hint with a control character breaks the input rules.
    sqlx::query(
        "INSERT INTO user_api_keys (user_id, provider, encrypted_value, hint, created_at) \
         VALUES ('u', 'bad-hint', x'00', 'a' || char(1), 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = store.retrieve("u", "bad-hint").await.unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Corrupt, "{err}");
    assert!(!err.is_retryable());

    // A timestamp out of chrono's range cannot be decoded either.
    sqlx::query(
        "INSERT INTO user_api_keys (user_id, provider, encrypted_value, created_at) \
         VALUES ('u', 'bad-time', x'00', 9223372036854775807)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = store.retrieve("u", "bad-time").await.unwrap_err();
    assert_eq!(err.as_storage().unwrap().kind, StorageErrorKind::Corrupt);
    let err = store.scan(None, 10).await.unwrap_err();
    assert_eq!(err.as_storage().unwrap().kind, StorageErrorKind::Corrupt);
}

#[tokio::test]
async fn a_table_of_the_wrong_shape_is_corrupt_with_the_sqlx_source() {
    let store = SqliteStorage::connect("sqlite::memory:", &ByokConfig::default())
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE user_api_keys (id INTEGER PRIMARY KEY, user_id TEXT, provider TEXT, \
         encrypted_value BLOB, hint TEXT, created_at TEXT, expires_at INTEGER)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO user_api_keys (user_id, provider, encrypted_value, created_at) \
         VALUES ('u', 'p', x'00', 'yesterday')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = store.retrieve("u", "p").await.unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Corrupt, "{err}");
    let source = storage.source().expect("the driver error is kept");
    assert!(
        source.downcast_ref::<sqlx::Error>().is_some(),
        "source is {source:?}"
    );
}

#[tokio::test]
async fn expiry_is_compared_with_rusts_clock() {
    let store = setup().await.unwrap();
    let now = byok_core::key::now().timestamp_millis();
    let half_hour = 30 * 60 * 1000;
    for (provider, expires) in [("past", now - half_hour), ("future", now + half_hour)] {
        sqlx::query(
            "INSERT INTO user_api_keys (user_id, provider, encrypted_value, created_at, expires_at) \
             VALUES ('clock', ?, x'01', ?, ?)",
        )
        .bind(provider)
        .bind(now)
        .bind(expires)
        .execute(store.pool())
        .await
        .unwrap();
    }
    assert!(store.retrieve("clock", "past").await.unwrap().is_none());
    let future = store.retrieve("clock", "future").await.unwrap().unwrap();
    assert_eq!(
        future.expires_at().unwrap().timestamp_millis(),
        now + half_hour
    );
    assert_eq!(store.list_providers("clock").await.unwrap(), ["future"]);
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert!(!store.delete("clock", "past").await.unwrap());
}

#[tokio::test]
async fn a_malformed_url_is_a_config_error() {
    let err = SqliteStorage::connect("sqlite://keys.db?bogus=1", &ByokConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ByokError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn an_operation_past_its_deadline_fails_with_a_retryable_timeout() {
    // The only connection is held here, and the pool would wait far longer
    // for it than the operation may.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(60))
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let config = ByokConfig::default();
    let store = SqliteStorage::from_pool(pool.clone(), &config)
        .unwrap()
        .with_operation_timeout(Duration::from_millis(100))
        .unwrap();
    let held = pool.acquire().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), store.list_providers("u"))
        .await
        .expect("the operation gave up by itself")
        .unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    let source = storage.source().expect("the timer is kept as the source");
    assert!(source.is::<tokio::time::error::Elapsed>(), "{source:?}");
    drop(held);
    store.migrate().await.unwrap();
    assert!(store.list_providers("u").await.unwrap().is_empty());
    assert!(matches!(
        store.with_operation_timeout(Duration::ZERO),
        Err(ByokError::Config(_))
    ));
}

#[tokio::test]
async fn schema_status_reads_the_columns_and_writes_nothing() {
    use byok_core::{SchemaStatus, StoreAdmin};
    let store = SqliteStorage::connect("sqlite::memory:", &ByokConfig::default())
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Missing);
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(
        tables.is_empty(),
        "opening or reading the status wrote {tables:?}"
    );

    // A table that is not byok's: the status names the missing column.
    sqlx::query("CREATE TABLE user_api_keys (user_id TEXT, provider TEXT, value BLOB)")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.schema_status().await.unwrap_err();
    assert_eq!(
        err.as_storage().map(|s| s.kind),
        Some(StorageErrorKind::Corrupt),
        "{err}"
    );
    assert!(err.to_string().contains("`encrypted_value`"), "{err}");

    store.destroy().await.unwrap();
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Missing);
    store.migrate().await.unwrap();
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);
}

#[tokio::test]
async fn a_check_longer_than_a_record_is_refused_and_nothing_is_kept() {
    let store = setup().await.unwrap();
    let key = ApiKey::new("u", "openai", vec![1]).unwrap();
    store.store(&key).await.unwrap();
    let longest = "x".repeat(byok_core::check_record::MAX_ENCODED_LEN);
    assert!(store.store_check("u", "openai", &longest).await.unwrap());
    let err = store
        .store_check("u", "openai", &format!("{longest}y"))
        .await
        .unwrap_err();
    let kind = match &err {
        ByokError::Storage(e) => Some(e.kind),
        _ => None,
    };
    assert_eq!(kind, Some(StorageErrorKind::Rejected), "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(
        store.checks("u").await.unwrap(),
        [("openai".to_owned(), longest)]
    );
    // Bad ids are refused as by the other operations.
    assert!(store.store_check("", "openai", "x").await.is_err());
    assert!(store.checks("").await.is_err());
}
