//! The conformance suite and the PostgreSQL-only checks, against the server
//! of `BYOK_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Without a server the tests print a skip line and pass, unless
//! `BYOK_TEST_REQUIRE_SERVICES=1`. Each test works on its own table, made
//! in its setup and dropped when its store is dropped; see `common` for the
//! naming and the removal of leftovers of killed runs.
#![cfg(feature = "postgres")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "setup helpers are test code: a failure must fail the test"
)]

mod common;

use std::time::Duration;

use byok_core::{ApiKey, ByokConfig, ByokError, KeyStorage, StorageErrorKind};
use byok_sql::PostgresStorage;
use byok_sql::sqlx::postgres::{PgConnection, PgPoolOptions};
use byok_sql::sqlx::{self, AssertSqlSafe, Connection};
use common::Scratch;

/// The tables of the tests, for the removal of leftovers.
const LIST_TABLES: &str = "SELECT tablename::text FROM pg_tables \
     WHERE schemaname = current_schema() AND tablename LIKE 'byok\\_test\\_%'";

common::server_suites!(
    PostgresStorage,
    PgConnection,
    PgPoolOptions,
    "postgres",
    5432,
    byok_testkit::services::postgres_url,
    LIST_TABLES
);

#[tokio::test]
async fn schema_uses_byte_order_and_native_types() {
    let Some(s) = setup().await else { return };
    let table = s.store.table_name().to_owned();
    let columns: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, collation_name::text \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(&table)
    .fetch_all(s.store.pool())
    .await
    .unwrap();
    let find = |name: &str| columns.iter().find(|c| c.0 == name).cloned().unwrap();
    assert_eq!(find("user_id").2.as_deref(), Some("C"));
    assert_eq!(find("provider").2.as_deref(), Some("C"));
    assert_eq!(find("encrypted_value").1, "bytea");
    assert_eq!(find("expires_at").1, "timestamp with time zone");
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE tablename = $1")
            .bind(&table)
            .fetch_all(s.store.pool())
            .await
            .unwrap();
    assert!(
        indexes.iter().any(|d| d.contains("(expires_at)")),
        "{indexes:?}"
    );
}

#[tokio::test]
async fn an_invalid_row_reads_back_as_corrupt() {
    let Some(s) = setup().await else { return };
    let table = s.store.table_name();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (user_id, provider, encrypted_value, hint, created_at) \
         VALUES ('u', 'p', '\\x00', E'bad\\x01hint', now())"
    )))
    .execute(s.store.pool())
    .await
    .unwrap();
    let err = s.store.retrieve("u", "p").await.unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Corrupt, "{err}");
    assert!(!err.is_retryable());
    let err = s.store.scan(None, 10).await.unwrap_err();
    assert_eq!(err.as_storage().unwrap().kind, StorageErrorKind::Corrupt);
}

#[tokio::test]
async fn expiry_is_compared_with_rusts_clock_whatever_the_session_time_zone() {
    let Some(s) = setup().await else { return };
    let url = byok_testkit::services::postgres_url().await.unwrap();
    // A session five hours east of UTC: a comparison against local time, or
    // a timestamp read as local time, would be five hours off.
    // (sqlx sends `TimeZone=UTC` at startup, so set it after connecting.)
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql("SET TIME ZONE 'Asia/Karachi'")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect(&url)
        .await
        .unwrap();
    let config = ByokConfig::default().with_db_table_name(s.store.table_name());
    let store = PostgresStorage::from_pool(pool, &config).unwrap();
    let zone: String = sqlx::query_scalar("SHOW TimeZone")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(zone, "Asia/Karachi");

    let now = byok_core::key::now();
    let half_hour = chrono::Duration::minutes(30);
    for (provider, expires) in [("past", now - half_hour), ("future", now + half_hour)] {
        // Written by hand as UTC text, as another client would.
        let text = expires.format("%Y-%m-%d %H:%M:%S%.3f+00").to_string();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (user_id, provider, encrypted_value, created_at, expires_at) \
             VALUES ('clock', $1, '\\x01', now(), $2::text::timestamptz)",
            store.table_name()
        )))
        .bind(provider)
        .bind(text)
        .execute(store.pool())
        .await
        .unwrap();
    }
    assert!(store.retrieve("clock", "past").await.unwrap().is_none());
    let future = store.retrieve("clock", "future").await.unwrap().unwrap();
    assert_eq!(future.expires_at(), Some(now + half_hour));
    assert_eq!(store.list_providers("clock").await.unwrap(), ["future"]);
    assert_eq!(store.purge_expired().await.unwrap(), 1);

    // Keys written through the store read back to the millisecond too.
    let key = ApiKey::new("clock", "ms", vec![1])
        .unwrap()
        .with_expires_at(Some(now + chrono::Duration::milliseconds(86_400_123)));
    store.store(&key).await.unwrap();
    assert_eq!(store.retrieve("clock", "ms").await.unwrap(), Some(key));
}

#[tokio::test]
async fn times_beyond_the_range_of_either_side_are_errors_not_panics() {
    let Some(s) = setup().await else { return };
    // Before 4713 BC: chrono holds it, PostgreSQL does not.
    let ancient = ApiKey::new("range", "ancient", vec![1])
        .unwrap()
        .with_expires_at(Some(chrono::DateTime::<chrono::Utc>::MIN_UTC));
    let err = s.store.store(&ancient).await.unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Rejected, "{err}");
    assert!(!err.is_retryable());

    // 'infinity' and the year 270000: PostgreSQL holds them, chrono does not.
    for (provider, time) in [
        ("infinite", "infinity"),
        ("late", "270000-01-01 00:00:00+00"),
    ] {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (user_id, provider, encrypted_value, created_at, expires_at) \
             VALUES ('range', $1, '\\x01', now(), $2::text::timestamptz)",
            s.store.table_name()
        )))
        .bind(provider)
        .bind(time)
        .execute(s.store.pool())
        .await
        .unwrap();
        let err = s.store.retrieve("range", provider).await.unwrap_err();
        let storage = err.as_storage().expect("a storage error");
        assert_eq!(storage.kind, StorageErrorKind::Corrupt, "{provider}: {err}");
    }
    let err = s.store.scan(None, 10).await.unwrap_err();
    assert_eq!(err.as_storage().unwrap().kind, StorageErrorKind::Corrupt);
}

#[tokio::test]
async fn url_parameters_sqlx_would_log_are_refused_without_their_value() {
    // Needs no server: the URL is refused before any connection.
    let config = ByokConfig::default();
    let url = "postgres://app:hunter2@127.0.0.1:1/test?sslmode=disable&sslpassword=s3cret";
    let err = PostgresStorage::connect(url, &config).await.unwrap_err();
    assert!(matches!(err, ByokError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("`sslpassword`"), "{err}");
    byok_testkit::sql::ensure_hidden(&err, "s3cret").unwrap();
    byok_testkit::sql::ensure_hidden(&err, "hunter2").unwrap();

    // Parameters that sqlx knows pass, and the connection is tried.
    let url = "postgres://app:hunter2@127.0.0.1:1/test?sslmode=disable&application_name=keys";
    let err = PostgresStorage::connect(url, &config).await.unwrap_err();
    assert_eq!(
        err.as_storage().map(|s| s.kind),
        Some(StorageErrorKind::Unavailable),
        "{err}"
    );
}

/// The definitions of the indexes of `table`, sorted.
async fn index_definitions(pool: &sqlx::PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index \
         WHERE indrelid = to_regclass($1) ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Fails unless `table` has the current layout: the slot as its primary
/// key, a partial index on `expires_at`, nothing else, and no `id`.
async fn assert_current_layout(pool: &sqlx::PgPool, table: &str) {
    let indexes = index_definitions(pool, table).await;
    assert_eq!(indexes.len(), 2, "{indexes:?}");
    assert!(
        indexes
            .iter()
            .any(|d| d.starts_with("CREATE UNIQUE INDEX") && d.ends_with("(user_id, provider)")),
        "{indexes:?}"
    );
    assert!(
        indexes
            .iter()
            .any(|d| d.ends_with("(expires_at) WHERE (expires_at IS NOT NULL)")),
        "{indexes:?}"
    );
    let primary: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
         WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY a.attnum",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(primary, ["user_id", "provider"]);
    let id: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute \
         WHERE attrelid = to_regclass($1) AND attname = 'id' AND NOT attisdropped)",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(!id);
}

#[tokio::test]
async fn the_slot_is_the_primary_key_and_the_expiry_index_is_partial() {
    let Some(s) = setup().await else { return };
    assert_current_layout(s.store.pool(), s.store.table_name()).await;
}

#[tokio::test]
async fn migrate_upgrades_a_table_of_the_first_layout_once() {
    let Some(url) = byok_testkit::services::postgres_url().await else {
        return;
    };
    let table = common::table_name();
    let config = ByokConfig::default().with_db_table_name(table.clone());
    let a = PostgresStorage::connect(&url, &config).await.unwrap();
    let b = PostgresStorage::connect(&url, &config).await.unwrap();
    let guard = Scratch::new((), common::drop_table::<PgConnection>(url, table.clone()));
    // The table and index as byok-sql 0.1 made them.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {table} (\
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
         user_id TEXT COLLATE \"C\" NOT NULL, \
         provider TEXT COLLATE \"C\" NOT NULL, \
         encrypted_value BYTEA NOT NULL, \
         hint TEXT, \
         created_at TIMESTAMPTZ NOT NULL, \
         expires_at TIMESTAMPTZ, \
         UNIQUE (user_id, provider)); \
         CREATE INDEX {table}_expires_at_idx ON {table} (expires_at);"
    )))
    .execute(a.pool())
    .await
    .unwrap();
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (user_id, provider, encrypted_value, hint, created_at, expires_at) \
         VALUES ('alice', 'openai', '\\x0102', 'sk-...abcd', $1, NULL), \
         ('alice', 'anthropic', '\\x03', NULL, $1, $2), ('bob', 'openai', '\\x04', NULL, $1, $3)"
    )))
    .bind(at(common::OLD_CREATED_MS))
    .bind(at(common::OLD_EXPIRES_MS))
    .bind(at(1000))
    .execute(a.pool())
    .await
    .unwrap();

    common::upgrade_from_the_first_layout(&a, &b).await;
    assert_current_layout(a.pool(), &table).await;
    common::old_layout_rows_read_back(&b).await;
    drop(guard);
}

/// A statement that the server fails as a deadlock victim is run again,
/// and the caller sees only its success: `clear_all` locks one key of its
/// user and waits for the other, which another transaction holds and which
/// then asks for the first. The waiter that checks first (after
/// `deadlock_timeout`) is the store's, which has waited longer, so it is
/// the one PostgreSQL fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_statement_is_run_again() {
    let Some(s) = setup().await else { return };
    let url = byok_testkit::services::postgres_url().await.unwrap();
    let table = s.store.table_name().to_owned();
    for p in ["p1", "p2"] {
        s.store
            .store(&ApiKey::new("victim", p, vec![1]).unwrap())
            .await
            .unwrap();
    }
    let mut other = PgConnection::connect(&url).await.unwrap();
    // The store's wait starts first, but on a loaded machine its backend
    // may run its deadlock check late; where the server allows it (a
    // superuser), this session checks far later, so the store's backend
    // is always the one that finds the cycle.
    let _ = sqlx::query("SET deadlock_timeout = '20s'")
        .execute(&mut other)
        .await;
    let update =
        format!("UPDATE {table} SET hint = 'x' WHERE user_id = 'victim' AND provider = $1");
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query(AssertSqlSafe(update.clone()))
        .bind("p2")
        .execute(&mut other)
        .await
        .unwrap();

    let store = s.store.clone();
    let clear = tokio::spawn(async move { store.clear_all("victim").await });
    let start = std::time::Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE $1",
        )
        .bind(format!("DELETE FROM {table} %"))
        .fetch_one(s.store.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            start.elapsed() < byok_testkit::sql::NO_HANG,
            "clear_all never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Closes the cycle.
    sqlx::query(AssertSqlSafe(update))
        .bind("p1")
        .execute(&mut other)
        .await
        .expect("the other transaction survives the deadlock");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let cleared = clear
        .await
        .unwrap()
        .expect("clear_all ran again and succeeded");
    assert_eq!(cleared, 2);
    assert!(s.store.list_providers("victim").await.unwrap().is_empty());
    let _ = other.close().await;
}

/// The table, its index and the upsert and read of a key exactly as the
/// version before kept checks made and ran them, for the table `{t}`.
const SECOND_LAYOUT: &str = "CREATE TABLE IF NOT EXISTS {t} (\
     user_id TEXT COLLATE \"C\" NOT NULL, \
     provider TEXT COLLATE \"C\" NOT NULL, \
     encrypted_value BYTEA NOT NULL, \
     hint TEXT, \
     created_at TIMESTAMPTZ NOT NULL, \
     expires_at TIMESTAMPTZ, \
     PRIMARY KEY (user_id, provider)); \
     CREATE INDEX IF NOT EXISTS {t}_expiring_idx ON {t} (expires_at) \
     WHERE expires_at IS NOT NULL;";
const SECOND_STORE: &str = "INSERT INTO {t} (user_id, provider, encrypted_value, hint, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (user_id, provider) DO UPDATE SET \
     encrypted_value = excluded.encrypted_value, hint = excluded.hint, \
     created_at = excluded.created_at, expires_at = excluded.expires_at";
const SECOND_RETRIEVE: &str = "SELECT encrypted_value, hint, created_at, expires_at FROM {t} \
     WHERE user_id = $1 AND provider = $2 AND (expires_at IS NULL OR expires_at > $3)";

fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

/// Stores a key with the upsert of the version before kept checks.
async fn store_as_before(
    pool: &sqlx::PgPool,
    table: &str,
    slot: (&str, &str),
    value: &[u8],
    hint: Option<&str>,
    expires: Option<i64>,
) {
    sqlx::query(AssertSqlSafe(SECOND_STORE.replace("{t}", table)))
        .bind(slot.0)
        .bind(slot.1)
        .bind(value)
        .bind(hint)
        .bind(at(common::OLD_CREATED_MS))
        .bind(expires.map(at))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_table_of_the_second_layout_serves_before_migrate_and_keeps_checks_after() {
    let Some(url) = byok_testkit::services::postgres_url().await else {
        return;
    };
    let table = common::table_name();
    let config = ByokConfig::default().with_db_table_name(table.clone());
    let a = PostgresStorage::connect(&url, &config).await.unwrap();
    let b = PostgresStorage::connect(&url, &config).await.unwrap();
    let late = PostgresStorage::connect(&url, &config)
        .await
        .unwrap()
        .with_schema_recheck(Duration::ZERO);
    let slow = PostgresStorage::connect(&url, &config)
        .await
        .unwrap()
        .with_schema_recheck(Duration::from_secs(3600));
    let guard = Scratch::new((), common::drop_table::<PgConnection>(url, table.clone()));
    sqlx::raw_sql(AssertSqlSafe(SECOND_LAYOUT.replace("{t}", &table)))
        .execute(a.pool())
        .await
        .unwrap();
    let pool = a.pool();
    let t = table.as_str();
    store_as_before(
        pool,
        t,
        ("alice", "openai"),
        &[1, 2],
        Some("sk-...abcd"),
        None,
    )
    .await;
    let expires = Some(common::OLD_EXPIRES_MS);
    store_as_before(pool, t, ("alice", "anthropic"), &[3], None, expires).await;
    store_as_before(pool, t, ("bob", "openai"), &[4], None, Some(1000)).await;

    common::upgrade_from_the_second_layout(&a, &b, &late, &slow).await;
    assert_current_layout(a.pool(), &table).await;

    // The statements of the version before still work on the new layout.
    store_as_before(pool, t, ("carol", "openai"), &[7], None, None).await;
    type Row = (
        Vec<u8>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let row: Row = sqlx::query_as(AssertSqlSafe(SECOND_RETRIEVE.replace("{t}", t)))
        .bind("alice")
        .bind("openai")
        .bind(byok_core::key::now())
        .fetch_one(pool)
        .await
        .unwrap();
    let expected = (
        vec![1, 2],
        Some("sk-...abcd".to_owned()),
        at(common::OLD_CREATED_MS),
        None,
    );
    assert_eq!(row, expected);
    let carol = b.retrieve("carol", "openai").await.unwrap().unwrap();
    assert_eq!(carol.encrypted_value(), [7]);
    assert!(b.delete("carol", "openai").await.unwrap());
    common::old_layout_rows_read_back(&b).await;
    drop(guard);
}
