//! The conformance suite and the MySQL/MariaDB-only checks, against the
//! server of `BYOK_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).
//!
//! Without a server the tests print a skip line and pass, unless
//! `BYOK_TEST_REQUIRE_SERVICES=1`. Each test works on its own table, made
//! in its setup and dropped when its store is dropped; see `common` for the
//! naming and the removal of leftovers of killed runs.
#![cfg(feature = "mysql")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "setup helpers are test code: a failure must fail the test"
)]

mod common;

use std::error::Error as _;
use std::str::FromStr;
use std::time::Duration;

use byok_core::{ApiKey, ByokConfig, ByokError, KeyStorage, StorageErrorKind};
use byok_sql::MySqlStorage;
use byok_sql::sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPoolOptions};
use byok_sql::sqlx::{self, AssertSqlSafe, Connection};
use common::Scratch;

/// The tables of the tests, for the removal of leftovers.
const LIST_TABLES: &str = "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
     WHERE table_schema = DATABASE() AND table_name LIKE 'byok\\_test\\_%'";

/// A migrated store on a fresh table, or `None` without a server.
async fn setup() -> Option<Scratch<MySqlStorage>> {
    let url = byok_testkit::services::mysql_url().await?;
    Some(
        common::scratch::<MySqlConnection, _>(
            url,
            LIST_TABLES,
            MySqlStorage::connect,
            MySqlStorage::migrate,
        )
        .await,
    )
}

byok_testkit::conformance_tests!(maybe: setup().await);

#[tokio::test]
async fn ids_are_binary_and_times_are_unix_milliseconds() {
    let Some(s) = setup().await else { return };
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR) \
         FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
    )
    .bind(s.store.table_name())
    .fetch_all(s.store.pool())
    .await
    .unwrap();
    let find = |name: &str| {
        columns
            .iter()
            .find(|c| c.0 == name)
            .map(|c| c.1.to_ascii_lowercase())
            .unwrap()
    };
    assert_eq!(find("user_id"), "varbinary(255)");
    assert_eq!(find("provider"), "varbinary(64)");
    assert_eq!(find("encrypted_value"), "mediumblob");
    // MySQL 8 shows `bigint`, MariaDB `bigint(20)`.
    assert!(find("created_at").starts_with("bigint"), "{columns:?}");
    assert!(find("expires_at").starts_with("bigint"), "{columns:?}");
}

#[tokio::test]
async fn swapping_for_an_identical_key_succeeds() {
    // MySQL counts changed rows unless the client asks for found rows.
    let Some(s) = setup().await else { return };
    let key = ApiKey::new("u", "p", b"same".to_vec()).unwrap();
    s.store.store(&key).await.unwrap();
    assert!(s.store.compare_and_swap(&key, &key).await.unwrap());
    assert!(s.store.compare_and_swap(&key, &key).await.unwrap());
    assert_eq!(s.store.retrieve("u", "p").await.unwrap(), Some(key));
}

#[tokio::test]
async fn concurrent_migrations_from_two_pools_both_succeed() {
    let Some(url) = byok_testkit::services::mysql_url().await else {
        return;
    };
    let table = common::table_name();
    let config = ByokConfig {
        db_table_name: table.clone(),
        auto_cleanup: false,
        ..ByokConfig::default()
    };
    let a = MySqlStorage::connect(&url, &config).await.unwrap();
    let b = MySqlStorage::connect(&url, &config).await.unwrap();
    let guard = Scratch::new((), common::drop_table::<MySqlConnection>(url, table));
    let (ra, rb, rc, rd) = tokio::join!(a.migrate(), b.migrate(), a.migrate(), b.migrate());
    for r in [ra, rb, rc, rd] {
        r.unwrap();
    }
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
    drop(guard);
}

#[tokio::test]
async fn a_non_utf8_id_reads_back_as_corrupt() {
    let Some(s) = setup().await else { return };
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (user_id, provider, encrypted_value, created_at) \
         VALUES (X'FF00FE', 'p', X'00', 1767225600000)",
        s.store.table_name()
    )))
    .execute(s.store.pool())
    .await
    .unwrap();
    let err = s.store.scan(None, 10).await.unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Corrupt, "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_refused_statement_is_rejected_with_the_sqlx_source() {
    let Some(url) = byok_testkit::services::mysql_url().await else {
        return;
    };
    // A table that was never migrated: the database refuses every statement.
    let config = ByokConfig {
        db_table_name: common::table_name(),
        auto_cleanup: false,
        ..ByokConfig::default()
    };
    let store = MySqlStorage::connect(&url, &config).await.unwrap();
    let err = store.retrieve("u", "p").await.unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Rejected, "{err}");
    let source = storage.source().expect("the driver error is kept");
    let sqlx_err = source.downcast_ref::<sqlx::Error>().expect("a sqlx error");
    assert!(matches!(sqlx_err, sqlx::Error::Database(_)), "{sqlx_err:?}");
}

#[tokio::test]
async fn expiry_is_compared_with_rusts_clock_whatever_the_session_time_zone() {
    let Some(s) = setup().await else { return };
    let url = byok_testkit::services::mysql_url().await.unwrap();
    // A session five hours east of UTC: comparing with NOW() or
    // UNIX_TIMESTAMP() of local time would be five hours off.
    let options = MySqlConnectOptions::from_str(&url)
        .unwrap()
        .timezone(Some("+05:00".to_owned()));
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let config = ByokConfig {
        db_table_name: s.store.table_name().to_owned(),
        auto_cleanup: false,
        ..ByokConfig::default()
    };
    let store = MySqlStorage::from_pool(pool, &config).unwrap();
    let zone: String = sqlx::query_scalar("SELECT CAST(@@session.time_zone AS CHAR)")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(zone, "+05:00");

    let now = byok_core::key::now();
    let half_hour = chrono::Duration::minutes(30);
    for (provider, expires) in [("past", now - half_hour), ("future", now + half_hour)] {
        // Written by hand as Unix milliseconds, as another client would.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (user_id, provider, encrypted_value, created_at, expires_at) \
             VALUES ('clock', ?, X'01', ?, ?)",
            store.table_name()
        )))
        .bind(provider)
        .bind(now.timestamp_millis())
        .bind(expires.timestamp_millis())
        .execute(store.pool())
        .await
        .unwrap();
    }
    assert!(store.retrieve("clock", "past").await.unwrap().is_none());
    let future = store.retrieve("clock", "future").await.unwrap().unwrap();
    assert_eq!(future.expires_at(), Some(now + half_hour));
    assert_eq!(store.list_providers("clock").await.unwrap(), ["future"]);
    assert_eq!(store.purge_expired().await.unwrap(), 1);

    let key = ApiKey::new("clock", "ms", vec![1])
        .unwrap()
        .with_expires_at(Some(now + chrono::Duration::milliseconds(86_400_123)));
    store.store(&key).await.unwrap();
    assert_eq!(store.retrieve("clock", "ms").await.unwrap(), Some(key));
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_error_with_the_sqlx_source() {
    // Needs no server: nothing listens on the port.
    let url = format!("mysql://root@127.0.0.1:{}/test", common::closed_port());
    let config = ByokConfig {
        auto_cleanup: false,
        ..ByokConfig::default()
    };
    let err = MySqlStorage::connect(&url, &config).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Unavailable);
    let source = storage.source().expect("the driver error is kept");
    let sqlx_err = source.downcast_ref::<sqlx::Error>().expect("a sqlx error");
    assert!(matches!(sqlx_err, sqlx::Error::Io(_)), "{sqlx_err:?}");

    // A pool that cannot connect times out waiting for a connection.
    let pool = MySqlPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&url)
        .unwrap();
    let store = MySqlStorage::from_pool(pool, &config).unwrap();
    let err = store.list_providers("u").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.backend, "mysql");
    assert!(
        storage
            .source()
            .and_then(|s| s.downcast_ref::<sqlx::Error>())
            .is_some()
    );
}

#[tokio::test]
async fn neither_debug_nor_errors_show_the_connection_string() {
    // Needs no server: nothing listens on port 1, and the other URLs are
    // refused before any connection.
    let config = ByokConfig {
        auto_cleanup: false,
        ..ByokConfig::default()
    };
    let url = format!(
        "mysql://app:hunter2@127.0.0.1:{}/test",
        common::closed_port()
    );
    let pool = MySqlPoolOptions::new().connect_lazy(&url).unwrap();
    let store = MySqlStorage::from_pool(pool, &config).unwrap();
    assert_eq!(
        format!("{store:?}"),
        "MySqlStorage { backend: \"mysql\", table: \"user_api_keys\", .. }"
    );
    let err = MySqlStorage::connect(&url, &config).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    common::assert_hidden(&err, "hunter2");

    for malformed in [
        // A port out of range.
        "mysql://app:hunter2@127.0.0.1:99999/test",
        // A `#` in the password ends the authority: the password becomes
        // the "port" of host `app`.
        "mysql://app:hunter2#x@127.0.0.1:5432/test",
        // An SSL mode that does not exist.
        "mysql://app:hunter2@127.0.0.1:5432/test?sslmode=sometimes",
    ] {
        let err = MySqlStorage::connect(malformed, &config).await.unwrap_err();
        assert!(matches!(err, ByokError::Config(_)), "{malformed}: {err:?}");
        assert!(
            err.source().is_some(),
            "{malformed}: the sqlx error is kept"
        );
        common::assert_hidden(&err, "hunter2");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_on_connect() {
    // Needs no server: the listener accepts and then stays silent.
    let (port, server) = common::silent_server().await;
    let url = format!("mysql://root@127.0.0.1:{port}/test");
    let config = ByokConfig {
        auto_cleanup: false,
        ..ByokConfig::default()
    };
    let err = tokio::time::timeout(common::NO_HANG, MySqlStorage::connect(&url, &config))
        .await
        .expect("connect gave up by itself")
        .unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    server.abort();
}

#[tokio::test]
async fn an_operation_past_its_deadline_fails_with_a_retryable_timeout() {
    // Needs no server: the listener accepts and then stays silent, and the
    // pool would wait far longer than the operation may.
    let (port, server) = common::silent_server().await;
    let url = format!("mysql://root@127.0.0.1:{port}/test");
    let pool = MySqlPoolOptions::new()
        .acquire_timeout(common::NO_HANG)
        .connect_lazy(&url)
        .unwrap();
    let config = ByokConfig {
        auto_cleanup: false,
        ..ByokConfig::default()
    };
    let store = MySqlStorage::from_pool(pool, &config)
        .unwrap()
        .with_operation_timeout(Duration::from_millis(200))
        .unwrap();
    let err = tokio::time::timeout(common::NO_HANG, store.retrieve("u", "p"))
        .await
        .expect("the operation gave up by itself")
        .unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    let source = storage.source().expect("the timer is kept as the source");
    assert!(source.is::<tokio::time::error::Elapsed>(), "{source:?}");
    assert!(matches!(
        store.with_operation_timeout(Duration::ZERO),
        Err(byok_core::ByokError::Config(_))
    ));
    server.abort();
}

#[tokio::test]
async fn a_cancelled_migration_does_not_leave_its_lock_behind() {
    let Some(s) = setup().await else { return };
    let url = byok_testkit::services::mysql_url().await.unwrap();
    let lock = format!("{}_byok_migrate", s.store.table_name());
    let mut holder = MySqlConnection::connect(&url).await.unwrap();
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
        .bind(&lock)
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(got, Some(1));

    // The migration waits for the lock and is dropped while waiting; its
    // GET_LOCK still runs on the server and takes the lock once it is free.
    let cancelled = tokio::time::timeout(Duration::from_millis(500), s.store.migrate()).await;
    assert!(
        cancelled.is_err(),
        "the migration did not wait for the lock"
    );
    sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut holder)
        .await
        .unwrap();

    // Its connection is closed rather than pooled, so the lock comes free.
    let start = std::time::Instant::now();
    loop {
        let free: Option<i64> = sqlx::query_scalar("SELECT IS_FREE_LOCK(?)")
            .bind(&lock)
            .fetch_one(&mut holder)
            .await
            .unwrap();
        if free == Some(1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the cancelled migration's connection still holds the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(common::NO_HANG, s.store.migrate())
        .await
        .expect("a later migration gets the lock")
        .unwrap();
    let _ = holder.close().await;
}

#[tokio::test]
async fn times_after_the_year_9999_round_trip() {
    let Some(s) = setup().await else { return };
    common::far_future_times_round_trip(&s).await;
}

#[tokio::test]
async fn a_server_that_goes_silent_fails_the_operation_with_a_retryable_timeout() {
    let Some(s) = setup().await else { return };
    let url = byok_testkit::services::mysql_url().await.unwrap();
    let proxy = common::SilentProxy::start(common::upstream(&url, 3306)).await;
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(common::NO_HANG)
        // As in `connect`'s pool: the statement itself meets the silence.
        .test_before_acquire(false)
        .connect(&common::on_loopback_port(&url, proxy.port))
        .await
        .unwrap();
    let config = ByokConfig {
        db_table_name: s.store.table_name().to_owned(),
        auto_cleanup: false,
        ..ByokConfig::default()
    };
    let store = MySqlStorage::from_pool(pool, &config).unwrap();
    let key = ApiKey::new("u", "p", vec![1]).unwrap();
    store.store(&key).await.unwrap();
    assert_eq!(store.retrieve("u", "p").await.unwrap(), Some(key));

    // Once the connection is back in the pool (sqlx pings it on the way),
    // the server neither answers nor closes it any more.
    let start = std::time::Instant::now();
    while store.pool().num_idle() < 1 {
        assert!(
            start.elapsed() < common::NO_HANG,
            "the connection never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.freeze();
    let store = store
        .with_operation_timeout(Duration::from_millis(500))
        .unwrap();
    let err = tokio::time::timeout(common::NO_HANG, store.retrieve("u", "p"))
        .await
        .expect("the operation gave up by itself")
        .unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    let source = storage.source().expect("the timer is kept as the source");
    assert!(source.is::<tokio::time::error::Elapsed>(), "{source:?}");
}
