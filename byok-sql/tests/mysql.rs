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

common::server_suites!(
    MySqlStorage,
    MySqlConnection,
    MySqlPoolOptions,
    "mysql",
    3306,
    byok_testkit::services::mysql_url,
    LIST_TABLES
);

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
    let config = ByokConfig::default().with_db_table_name(s.store.table_name());
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
    tokio::time::timeout(byok_testkit::sql::NO_HANG, s.store.migrate())
        .await
        .expect("a later migration gets the lock")
        .unwrap();
    let _ = holder.close().await;
}

/// Sixteen tasks writing the keys of sixteen different users with every
/// write operation, while a purge runs in a loop: once, MariaDB failed a
/// few of these statements as deadlocks (error 1213), through the gap
/// locks of `REPEATABLE READ` and a purge that locked rows in expiry order.
/// Not a single error may reach the caller now.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_on_different_users_and_the_purge_never_fail() {
    const TASKS: usize = 16;
    const ROUNDS: usize = 600;
    let Some(s) = setup().await else { return };
    let store = s.store.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
    let later = Some(byok_core::key::now() + chrono::Duration::hours(1));

    let purger = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut runs, mut errors) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = store.purge_expired().await {
                    errors.push(format!("purge_expired: {e}"));
                }
                runs += 1;
            }
            (runs, errors)
        })
    };
    let writers: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let user = format!("user{task:02}");
                let mut errors = Vec::new();
                let mut note = |op: &str, r: Result<(), ByokError>| {
                    if let Err(e) = r {
                        errors.push(format!("{op}: {e}"));
                    }
                };
                for round in 0..ROUNDS {
                    let provider = format!("p{}", round % 5);
                    let expiry = if round % 3 == 0 { past } else { later };
                    let key = ApiKey::new(&user, &provider, vec![round as u8; 64])
                        .unwrap()
                        .with_expires_at(expiry);
                    note("store", store.store(&key).await);
                    let next = key.clone().with_encrypted_value(vec![1; 64]);
                    note(
                        "compare_and_swap",
                        store.compare_and_swap(&key, &next).await.map(drop),
                    );
                    let other = format!("p{}", (round + 2) % 5);
                    note("delete", store.delete(&user, &other).await.map(drop));
                    if round % 10 == 9 {
                        note("clear_all", store.clear_all(&user).await.map(drop));
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = Vec::new();
    for writer in writers {
        errors.extend(writer.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (runs, purge_errors) = purger.await.unwrap();
    errors.extend(purge_errors);
    assert!(runs > 0);
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
}

/// A statement that the server fails as a deadlock victim is run again,
/// and the caller sees only its success: here `clear_all` locks one key
/// of its user and waits for the other, which a heavier transaction holds
/// and which then asks for the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_statement_is_run_again() {
    let Some(s) = setup().await else { return };
    let url = byok_testkit::services::mysql_url().await.unwrap();
    let table = s.store.table_name().to_owned();
    for p in ["p1", "p2"] {
        s.store
            .store(&ApiKey::new("victim", p, vec![1]).unwrap())
            .await
            .unwrap();
    }
    let mut other = MySqlConnection::connect(&url).await.unwrap();
    let update = format!("UPDATE {table} SET hint = 'x' WHERE user_id = 'victim' AND provider = ?");
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    // Rows written make a transaction heavy: the server rolls back the
    // lighter one, the store's statement.
    for i in 0..50 {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (user_id, provider, encrypted_value, created_at) \
             VALUES ('heavy', ?, X'00', 0)"
        )))
        .bind(format!("p{i}"))
        .execute(&mut other)
        .await
        .unwrap();
    }
    sqlx::query(AssertSqlSafe(update.clone()))
        .bind("p2")
        .execute(&mut other)
        .await
        .unwrap();

    let store = s.store.clone();
    let clear = tokio::spawn(async move { store.clear_all("victim").await });
    // Wait until the store's statement waits for the lock on p2, having
    // locked p1: a delete of two rows still running after 50 ms is waiting.
    // (InnoDB's own views of lock waits do not always show a prepared
    // statement's wait on MariaDB.)
    // MariaDB has `time_ms`; MySQL counts whole seconds only.
    let start = std::time::Instant::now();
    loop {
        let mut waiting = 0;
        for condition in ["time_ms > 50", "time >= 1"] {
            let count = sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM information_schema.processlist \
                 WHERE info LIKE ? AND {condition}"
            )))
            .bind(format!("DELETE FROM {table} %"))
            .fetch_one(s.store.pool())
            .await;
            if let Ok(count) = count {
                waiting = count;
                break;
            }
        }
        if waiting > 0 {
            break;
        }
        assert!(
            start.elapsed() < byok_testkit::sql::NO_HANG,
            "clear_all never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // MariaDB counts deadlocks in a status variable, MySQL in a metric.
    let deadlocks = async |conn: &mut MySqlConnection| -> i64 {
        let status: Option<(String, String)> =
            sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
                .fetch_optional(&mut *conn)
                .await
                .unwrap();
        match status {
            Some((_, count)) => count.parse().unwrap(),
            None => sqlx::query_scalar(
                "SELECT CAST(count AS SIGNED) FROM information_schema.innodb_metrics \
                 WHERE name = 'lock_deadlocks'",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap(),
        }
    };
    let mut observer = MySqlConnection::connect(&url).await.unwrap();
    let before = deadlocks(&mut observer).await;
    // Closes the cycle: the server picks a victim at once.
    sqlx::query(AssertSqlSafe(update))
        .bind("p1")
        .execute(&mut other)
        .await
        .expect("the heavier transaction survives the deadlock");
    assert!(
        deadlocks(&mut observer).await > before,
        "the server saw no deadlock"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let cleared = clear
        .await
        .unwrap()
        .expect("clear_all ran again and succeeded");
    assert_eq!(cleared, 2);
    assert!(s.store.list_providers("victim").await.unwrap().is_empty());
    let _ = other.close().await;
    let _ = observer.close().await;
}

#[tokio::test]
async fn a_purge_of_more_keys_than_one_batch_removes_them_all() {
    let Some(s) = setup().await else { return };
    let now = byok_core::key::now().timestamp_millis();
    // 1 234 expired keys and 766 live ones, written by the server itself.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (user_id, provider, encrypted_value, created_at, expires_at) \
         WITH RECURSIVE d (i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM d WHERE i < 49), \
         n (i) AS (SELECT a.i * 50 + b.i + 1 FROM d a, d b) \
         SELECT CONCAT('u', i), 'p', X'01', ?, IF(i <= 1234, ? - 1000, ? + 3600000) \
         FROM n WHERE i <= 2000",
        s.store.table_name()
    )))
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(s.store.pool())
    .await
    .unwrap();
    assert_eq!(s.store.purge_expired().await.unwrap(), 1234);
    assert_eq!(s.store.purge_expired().await.unwrap(), 0);
    let left: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        s.store.table_name()
    )))
    .fetch_one(s.store.pool())
    .await
    .unwrap();
    assert_eq!(left, 766);
    assert!(s.store.retrieve("u2000", "p").await.unwrap().is_some());
}

/// The largest value of a `MEDIUMBLOB`.
const MEDIUMBLOB_MAX: usize = (1 << 24) - 1;

/// A store of `s`'s table on a pool whose sessions are not strict, as a
/// pool given to `from_pool` may be: the server would cut a long value
/// short with a warning instead of refusing it.
async fn non_strict(s: &Scratch<MySqlStorage>) -> MySqlStorage {
    let url = byok_testkit::services::mysql_url().await.unwrap();
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .after_connect(|conn: &mut MySqlConnection, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, "SET SESSION sql_mode = ''").await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("SELECT CAST(@@session.sql_mode AS CHAR)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "", "the session is not strict");
    let config = ByokConfig::default().with_db_table_name(s.store.table_name());
    MySqlStorage::from_pool(pool, &config).unwrap()
}

/// Fails unless `result` is a non-retryable `Rejected` error.
fn assert_too_large<T: std::fmt::Debug>(result: byok_core::Result<T>) {
    let err = result.unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Rejected, "{err}");
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test]
async fn connections_of_connect_are_strict_and_read_committed() {
    let Some(s) = setup().await else { return };
    let mut conn = s.store.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SELECT CAST(@@session.sql_mode AS CHAR)")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(mode.split(',').any(|m| m == "STRICT_ALL_TABLES"), "{mode}");
    // MariaDB and MySQL 5.7 call it tx_isolation, MySQL 8 only
    // transaction_isolation.
    let isolation: String = match sqlx::query_scalar("SELECT CAST(@@session.tx_isolation AS CHAR)")
        .fetch_one(&mut *conn)
        .await
    {
        Ok(level) => level,
        Err(_) => sqlx::query_scalar("SELECT CAST(@@session.transaction_isolation AS CHAR)")
            .fetch_one(&mut *conn)
            .await
            .unwrap(),
    };
    assert_eq!(isolation, "READ-COMMITTED");
}

#[tokio::test]
async fn a_value_longer_than_the_column_is_refused_and_nothing_is_written() {
    let Some(s) = setup().await else { return };
    let store = non_strict(&s).await;
    let old = ApiKey::new("big", "p", vec![1; 16]).unwrap();
    store.store(&old).await.unwrap();
    let huge = ApiKey::new("big", "p", vec![2; MEDIUMBLOB_MAX + 1]).unwrap();
    assert_too_large(store.store(&huge).await);
    assert_too_large(s.store.store(&huge).await);
    assert_too_large(store.compare_and_swap(&old, &huge).await);
    let fresh = ApiKey::new("big", "q", vec![2; 20_000_000]).unwrap();
    assert_too_large(store.store(&fresh).await);
    assert_eq!(store.retrieve("big", "p").await.unwrap(), Some(old));
    assert_eq!(store.list_providers("big").await.unwrap(), ["p"]);
}

#[tokio::test]
async fn a_value_over_max_allowed_packet_is_refused_and_not_retryable() {
    let Some(s) = setup().await else { return };
    let max_packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
        .fetch_one(s.store.pool())
        .await
        .unwrap();
    let max_packet = usize::try_from(max_packet).unwrap();
    // Every value the column holds fits in a statement of this size.
    if max_packet >= MEDIUMBLOB_MAX + 1024 {
        eprintln!("skipped: max_allowed_packet {max_packet} takes any MEDIUMBLOB");
        return;
    }
    // Fits the column, but not in one statement.
    let len = max_packet.min(MEDIUMBLOB_MAX);
    let store = non_strict(&s).await;
    let old = ApiKey::new("big", "p", vec![1; 16]).unwrap();
    store.store(&old).await.unwrap();
    let huge = ApiKey::new("big", "p", vec![2; len]).unwrap();
    assert_too_large(store.store(&huge).await);
    assert_too_large(s.store.store(&huge).await);
    assert_too_large(s.store.compare_and_swap(&old, &huge).await);
    assert_eq!(store.retrieve("big", "p").await.unwrap(), Some(old));
    // The pools still work: nothing was sent that made a server hang up.
    assert_eq!(s.store.list_providers("big").await.unwrap(), ["p"]);
}

/// The columns of the primary key of `table`, in order, and the names of
/// its other indexes.
async fn indexes(pool: &sqlx::MySqlPool, table: &str) -> (Vec<String>, Vec<String>) {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR) \
         FROM information_schema.statistics \
         WHERE table_schema = DATABASE() AND table_name = ? ORDER BY index_name, seq_in_index",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap();
    let primary = rows
        .iter()
        .filter(|r| r.0 == "PRIMARY")
        .map(|r| r.1.clone())
        .collect();
    let mut others: Vec<String> = rows
        .into_iter()
        .filter(|r| r.0 != "PRIMARY")
        .map(|r| r.0)
        .collect();
    others.dedup();
    (primary, others)
}

#[tokio::test]
async fn the_slot_is_the_primary_key_and_there_is_no_id() {
    let Some(s) = setup().await else { return };
    let (primary, others) = indexes(s.store.pool(), s.store.table_name()).await;
    assert_eq!(primary, ["user_id", "provider"]);
    assert_eq!(others, ["expires_at_idx"]);
}

/// The table as byok-sql 0.1 made it.
const FIRST_LAYOUT: &str = "CREATE TABLE {t} (\
     id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
     user_id VARBINARY(255) NOT NULL, \
     provider VARBINARY(64) NOT NULL, \
     encrypted_value MEDIUMBLOB NOT NULL, \
     hint VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, \
     created_at BIGINT NOT NULL, \
     expires_at BIGINT NULL, \
     UNIQUE KEY user_provider (user_id, provider), \
     KEY expires_at_idx (expires_at)\
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

#[tokio::test]
async fn migrate_upgrades_a_table_of_the_first_layout_once() {
    let Some(url) = byok_testkit::services::mysql_url().await else {
        return;
    };
    let table = common::table_name();
    let config = ByokConfig::default().with_db_table_name(table.clone());
    let a = MySqlStorage::connect(&url, &config).await.unwrap();
    let b = MySqlStorage::connect(&url, &config).await.unwrap();
    let guard = Scratch::new(
        (),
        common::drop_table::<MySqlConnection>(url, table.clone()),
    );
    sqlx::raw_sql(AssertSqlSafe(FIRST_LAYOUT.replace("{t}", &table)))
        .execute(a.pool())
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (user_id, provider, encrypted_value, hint, created_at, expires_at) \
         VALUES ('alice', 'openai', X'0102', 'sk-...abcd', ?, NULL), \
         ('alice', 'anthropic', X'03', NULL, ?, ?), ('bob', 'openai', X'04', NULL, ?, 1000)"
    )))
    .bind(common::OLD_CREATED_MS)
    .bind(common::OLD_CREATED_MS)
    .bind(common::OLD_EXPIRES_MS)
    .bind(common::OLD_CREATED_MS)
    .execute(a.pool())
    .await
    .unwrap();

    common::upgrade_from_the_first_layout(&a, &b).await;
    let (primary, others) = indexes(a.pool(), &table).await;
    assert_eq!(primary, ["user_id", "provider"]);
    assert_eq!(others, ["expires_at_idx"]);
    let id: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'id'",
    )
    .bind(&table)
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(id, 0);
    common::old_layout_rows_read_back(&b).await;
    drop(guard);
}

/// The table and the upsert and read of a key exactly as the version
/// before kept checks made and ran them, for the table `{t}`.
const SECOND_LAYOUT: &str = "CREATE TABLE IF NOT EXISTS {t} (\
     user_id VARBINARY(255) NOT NULL, \
     provider VARBINARY(64) NOT NULL, \
     encrypted_value MEDIUMBLOB NOT NULL, \
     hint VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, \
     created_at BIGINT NOT NULL, \
     expires_at BIGINT NULL, \
     PRIMARY KEY (user_id, provider), \
     KEY expires_at_idx (expires_at)\
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";
const SECOND_STORE: &str = "INSERT INTO {t} (user_id, provider, encrypted_value, hint, created_at, expires_at) \
     VALUES (?, ?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE \
     encrypted_value = VALUES(encrypted_value), hint = VALUES(hint), \
     created_at = VALUES(created_at), expires_at = VALUES(expires_at)";
const SECOND_RETRIEVE: &str = "SELECT encrypted_value, hint, created_at, expires_at FROM {t} \
     WHERE user_id = ? AND provider = ? AND (expires_at IS NULL OR expires_at > ?)";

/// Stores a key with the upsert of the version before kept checks.
async fn store_as_before(
    pool: &sqlx::MySqlPool,
    table: &str,
    slot: (&str, &str),
    value: &[u8],
    hint: Option<&str>,
    expires: Option<i64>,
) {
    sqlx::query(AssertSqlSafe(SECOND_STORE.replace("{t}", table)))
        .bind(slot.0.as_bytes())
        .bind(slot.1.as_bytes())
        .bind(value)
        .bind(hint)
        .bind(common::OLD_CREATED_MS)
        .bind(expires)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_table_of_the_second_layout_serves_before_migrate_and_keeps_checks_after() {
    let Some(url) = byok_testkit::services::mysql_url().await else {
        return;
    };
    let table = common::table_name();
    let config = ByokConfig::default().with_db_table_name(table.clone());
    let a = MySqlStorage::connect(&url, &config).await.unwrap();
    let b = MySqlStorage::connect(&url, &config).await.unwrap();
    let late = MySqlStorage::connect(&url, &config)
        .await
        .unwrap()
        .with_schema_recheck(Duration::ZERO);
    let slow = MySqlStorage::connect(&url, &config)
        .await
        .unwrap()
        .with_schema_recheck(Duration::from_secs(3600));
    let guard = Scratch::new(
        (),
        common::drop_table::<MySqlConnection>(url, table.clone()),
    );
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
    let (primary, others) = indexes(a.pool(), &table).await;
    assert_eq!(primary, ["user_id", "provider"]);
    assert_eq!(others, ["expires_at_idx"]);

    // The statements of the version before still work on the new layout.
    store_as_before(pool, t, ("carol", "openai"), &[7], None, None).await;
    let row: (Vec<u8>, Option<String>, i64, Option<i64>) =
        sqlx::query_as(AssertSqlSafe(SECOND_RETRIEVE.replace("{t}", t)))
            .bind("alice".as_bytes())
            .bind("openai".as_bytes())
            .bind(byok_core::key::now().timestamp_millis())
            .fetch_one(pool)
            .await
            .unwrap();
    let expected = (
        vec![1, 2],
        Some("sk-...abcd".to_owned()),
        common::OLD_CREATED_MS,
        None,
    );
    assert_eq!(row, expected);
    let carol = b.retrieve("carol", "openai").await.unwrap().unwrap();
    assert_eq!(carol.encrypted_value(), [7]);
    assert!(b.delete("carol", "openai").await.unwrap());
    common::old_layout_rows_read_back(&b).await;
    drop(guard);
}
