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
use byok_sql::sqlx;
use common::Scratch;
use tempfile::TempDir;

fn url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("keys.db").display())
}

/// A migrated store on a file in a temporary directory, which is removed
/// when the store is dropped.
async fn setup() -> Option<Scratch<SqliteStorage>> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir).await;
    Some(Scratch::new(store, move || drop(dir)))
}

/// A store with the default configuration on `keys.db` in `dir`.
async fn open_unmigrated(dir: &TempDir) -> SqliteStorage {
    SqliteStorage::connect(&url(dir), &ByokConfig::default())
        .await
        .expect("the database file opens")
}

/// A migrated store with the default configuration on `keys.db` in `dir`.
async fn open(dir: &TempDir) -> SqliteStorage {
    let store = open_unmigrated(dir).await;
    store.migrate().await.expect("migrate");
    store
}

byok_testkit::conformance_tests!(maybe: setup().await);
byok_testkit::admin_conformance_tests!(maybe: setup().await);

#[tokio::test]
async fn concurrent_migrations_from_two_pools_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open_unmigrated(&dir).await, open_unmigrated(&dir).await);
    if let Err(failure) = byok_testkit::sql::migrations_at_once_succeed(&a, &b).await {
        panic!("{failure}");
    }
}

#[tokio::test]
async fn file_is_created_in_wal_mode_with_a_larger_cache_and_keys_survive_a_reopen() {
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
        let cache: i64 = byok_sql::sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(cache, -i64::from(byok_sql::SQLITE_PAGE_CACHE_KIB));
        store.store(&key).await.unwrap();
        store.pool().close().await;
    }
    assert!(dir.path().join("keys.db").exists());
    let store = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.retrieve("alice", "openai").await.unwrap(), Some(key));
}

#[tokio::test]
async fn a_url_without_a_file_is_a_config_error() {
    let err = SqliteStorage::connect("sqlite://", &ByokConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, byok_core::ByokError::Config(_)), "{err:?}");
}

/// The `CREATE` statements of the table `user_api_keys` and its indexes,
/// sorted.
async fn schema(store: &SqliteStorage) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT sql FROM sqlite_schema \
         WHERE tbl_name = 'user_api_keys' AND sql IS NOT NULL ORDER BY sql",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// Fails unless the table has the current layout: no rowid, the slot as
/// primary key, a partial index on `expires_at`, nothing else.
async fn assert_current_layout(store: &SqliteStorage) {
    let schema = schema(store).await;
    assert_eq!(schema.len(), 2, "{schema:?}");
    assert!(
        schema[0].ends_with("(expires_at) WHERE expires_at IS NOT NULL"),
        "{schema:?}"
    );
    assert!(
        schema[1].ends_with("PRIMARY KEY (user_id, provider)) STRICT, WITHOUT ROWID"),
        "{schema:?}"
    );
    assert!(!schema[1].contains(" id "), "{schema:?}");
}

#[tokio::test]
async fn the_slot_is_the_primary_key_and_the_expiry_index_is_partial() {
    let Some(s) = setup().await else { return };
    assert_current_layout(&s.store).await;
}

#[tokio::test]
async fn migrate_upgrades_a_table_of_the_first_layout_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = ByokConfig::default();
    let a = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
    let b = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
    // The table and index as byok-sql 0.1 made them.
    sqlx::raw_sql(
        "CREATE TABLE user_api_keys (\
         id INTEGER PRIMARY KEY, \
         user_id TEXT NOT NULL, \
         provider TEXT NOT NULL, \
         encrypted_value BLOB NOT NULL, \
         hint TEXT, \
         created_at INTEGER NOT NULL, \
         expires_at INTEGER, \
         UNIQUE (user_id, provider)) STRICT; \
         CREATE INDEX user_api_keys_expires_at_idx ON user_api_keys (expires_at);",
    )
    .execute(a.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO user_api_keys \
         (user_id, provider, encrypted_value, hint, created_at, expires_at) \
         VALUES ('alice', 'openai', X'0102', 'sk-...abcd', ?1, NULL), \
         ('alice', 'anthropic', X'03', NULL, ?1, ?2), ('bob', 'openai', X'04', NULL, ?1, 1000)",
    )
    .bind(common::OLD_CREATED_MS)
    .bind(common::OLD_EXPIRES_MS)
    .execute(a.pool())
    .await
    .unwrap();

    common::upgrade_from_the_first_layout(&a, &b).await;
    assert_current_layout(&a).await;
    common::old_layout_rows_read_back(&b).await;
}

/// The table, its index and the upsert and read of a key exactly as the
/// version before kept checks made and ran them.
const SECOND_LAYOUT: &str = "CREATE TABLE IF NOT EXISTS user_api_keys (\
     user_id TEXT NOT NULL, \
     provider TEXT NOT NULL, \
     encrypted_value BLOB NOT NULL, \
     hint TEXT, \
     created_at INTEGER NOT NULL, \
     expires_at INTEGER, \
     PRIMARY KEY (user_id, provider)) STRICT, WITHOUT ROWID; \
     CREATE INDEX IF NOT EXISTS user_api_keys_expiring_idx ON user_api_keys (expires_at) \
     WHERE expires_at IS NOT NULL;";
const SECOND_STORE: &str = "INSERT INTO user_api_keys (user_id, provider, encrypted_value, hint, created_at, expires_at) \
     VALUES (?, ?, ?, ?, ?, ?) \
     ON CONFLICT (user_id, provider) DO UPDATE SET \
     encrypted_value = excluded.encrypted_value, hint = excluded.hint, \
     created_at = excluded.created_at, expires_at = excluded.expires_at";
const SECOND_RETRIEVE: &str = "SELECT encrypted_value, hint, created_at, expires_at \
     FROM user_api_keys WHERE user_id = ? AND provider = ? \
     AND (expires_at IS NULL OR expires_at > ?)";

/// Stores a key with the upsert of the version before kept checks.
async fn store_as_before(
    pool: &sqlx::SqlitePool,
    slot: (&str, &str),
    value: &[u8],
    hint: Option<&str>,
    expires: Option<i64>,
) {
    sqlx::query(SECOND_STORE)
        .bind(slot.0)
        .bind(slot.1)
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
    let dir = tempfile::tempdir().unwrap();
    let config = ByokConfig::default();
    let a = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
    let b = SqliteStorage::connect(&url(&dir), &config).await.unwrap();
    sqlx::raw_sql(SECOND_LAYOUT)
        .execute(a.pool())
        .await
        .unwrap();
    let pool = a.pool();
    store_as_before(pool, ("alice", "openai"), &[1, 2], Some("sk-...abcd"), None).await;
    let expires = Some(common::OLD_EXPIRES_MS);
    store_as_before(pool, ("alice", "anthropic"), &[3], None, expires).await;
    store_as_before(pool, ("bob", "openai"), &[4], None, Some(1000)).await;
    let late = open_unmigrated(&dir)
        .await
        .with_schema_recheck(std::time::Duration::ZERO);
    let slow = open_unmigrated(&dir)
        .await
        .with_schema_recheck(std::time::Duration::from_secs(3600));

    common::upgrade_from_the_second_layout(&a, &b, &late, &slow).await;
    assert_current_layout(&a).await;
    assert!(schema(&a).await[1].contains("last_check TEXT"));

    // The statements of the version before still work on the new layout.
    store_as_before(pool, ("carol", "openai"), &[7], None, None).await;
    let row: (Vec<u8>, Option<String>, i64, Option<i64>) = sqlx::query_as(SECOND_RETRIEVE)
        .bind("alice")
        .bind("openai")
        .bind(byok_core::key::now().timestamp_millis())
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        row,
        (
            vec![1, 2],
            Some("sk-...abcd".to_owned()),
            common::OLD_CREATED_MS,
            None
        )
    );
    let carol = b.retrieve("carol", "openai").await.unwrap().unwrap();
    assert_eq!(carol.encrypted_value(), [7]);
    assert!(b.delete("carol", "openai").await.unwrap());
    common::old_layout_rows_read_back(&b).await;
}

/// A writer that waits longer than SQLite's busy timeout (5 s) for another
/// connection's write lock is run again, within the operation deadline,
/// instead of failing with "database is busy".
#[tokio::test]
async fn a_write_lock_held_past_the_busy_timeout_is_waited_out() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut other = sqlx::SqliteConnection::connect(&url(&dir)).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let holder = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(6500)).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    });
    let key = ApiKey::new("waiter", "openai", vec![1, 2, 3]).unwrap();
    store
        .store(&key)
        .await
        .expect("the write waits for the lock");
    holder.await.unwrap();
    assert_eq!(store.retrieve("waiter", "openai").await.unwrap(), Some(key));
}

/// The read behind `get_key`, on the calling thread where byok opened the
/// file: it sees every committed write at once, answers as sqlx does when
/// turned off and on, fails as sqlx does once the pool is closed, and is
/// off for databases byok did not open. (The unit tests of `sqlite.rs`
/// check which path answered.)
#[tokio::test]
async fn inline_reads_answer_without_sqlx_and_see_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    assert!(store.inline_reads());
    let past = byok_core::chrono::Utc::now() - byok_core::chrono::Duration::seconds(1);
    let future = byok_core::chrono::Utc::now() + byok_core::chrono::Duration::hours(1);
    // Each step, then what both paths must read for (u, openai).
    let steps: Vec<(&str, Option<ApiKey>)> = vec![
        ("store", Some(ApiKey::new("u", "openai", vec![1]).unwrap())),
        (
            "replace",
            Some(ApiKey::new("u", "openai", vec![2, 2]).unwrap()),
        ),
        (
            "expiring later",
            Some(
                ApiKey::new("u", "openai", vec![3])
                    .unwrap()
                    .with_expires_at(Some(future)),
            ),
        ),
        (
            "expired",
            Some(
                ApiKey::new("u", "openai", vec![4])
                    .unwrap()
                    .with_expires_at(Some(past)),
            ),
        ),
        ("delete", None),
        (
            "store again",
            Some(ApiKey::new("u", "openai", vec![5]).unwrap()),
        ),
    ];
    for (step, key) in steps {
        match &key {
            Some(k) => store.store(k).await.unwrap(),
            None => assert!(store.delete("u", "openai").await.unwrap()),
        }
        let expected = store.retrieve("u", "openai").await.unwrap();
        let inline = store.retrieve_value("u", "openai").await.unwrap();
        assert_eq!(
            inline.as_deref(),
            expected.as_ref().map(ApiKey::encrypted_value),
            "{step}"
        );
        assert_eq!(
            expected.is_some(),
            step != "expired" && step != "delete",
            "{step}"
        );
    }
    assert_eq!(store.retrieve_value("u", "nobody").await.unwrap(), None);
    assert!(
        store.retrieve_value("", "openai").await.is_err(),
        "ids are checked first"
    );

    // Off, and on again, the same answers.
    let off = store.clone().with_inline_reads(false);
    assert!(!off.inline_reads());
    assert_eq!(
        off.retrieve_value("u", "openai").await.unwrap().as_deref(),
        Some(&[5u8][..])
    );
    assert!(off.clone().with_inline_reads(true).inline_reads());

    // A closed pool closes the inline path too: the same error as sqlx's.
    store.pool().close().await;
    let inline = store.retrieve_value("u", "openai").await.unwrap_err();
    let sqlx_only = off.retrieve_value("u", "openai").await.unwrap_err();
    assert_eq!(inline.to_string(), sqlx_only.to_string());

    // A pool byok did not open, and a database in memory: through sqlx.
    let pool = sqlx::SqlitePool::connect(&url(&dir)).await.unwrap();
    let given = SqliteStorage::from_pool(pool, &ByokConfig::default())
        .unwrap()
        .with_inline_reads(true);
    assert!(!given.inline_reads());
    assert_eq!(
        given
            .retrieve_value("u", "openai")
            .await
            .unwrap()
            .as_deref(),
        Some(&[5u8][..])
    );
    let memory = SqliteStorage::connect("sqlite::memory:", &ByokConfig::default())
        .await
        .unwrap();
    assert!(!memory.inline_reads());
}

/// What the inline path cannot answer goes to sqlx, which answers or fails
/// as it would without it; a table replaced under the inline reader's
/// prepared statement is read afresh.
#[tokio::test]
async fn what_an_inline_read_cannot_answer_is_left_to_sqlx() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStorage::connect(&url(&dir), &ByokConfig::default())
        .await
        .unwrap();
    let off = store.clone().with_inline_reads(false);
    // No table yet: the same error either way.
    let inline = store.retrieve_value("u", "openai").await.unwrap_err();
    let sqlx_only = off.retrieve_value("u", "openai").await.unwrap_err();
    assert_eq!(inline.to_string(), sqlx_only.to_string());
    assert_eq!(inline.is_retryable(), sqlx_only.is_retryable());

    store.migrate().await.unwrap();
    let first = ApiKey::new("u", "openai", vec![1; 16]).unwrap();
    store.store(&first).await.unwrap();
    assert_eq!(
        value_of(&store).await.as_deref(),
        Some(first.encrypted_value())
    );
    // The table is dropped and made again, as an upgrade of the layout does.
    sqlx::query("DROP TABLE user_api_keys")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.retrieve_value("u", "openai").await.is_err());
    store.migrate().await.unwrap();
    assert_eq!(value_of(&store).await, None);
    let second = ApiKey::new("u", "openai", vec![2; 16]).unwrap();
    store.store(&second).await.unwrap();
    assert_eq!(
        value_of(&store).await.as_deref(),
        Some(second.encrypted_value())
    );
}

/// What `retrieve_value` reads for (u, openai).
async fn value_of(store: &SqliteStorage) -> Option<Vec<u8>> {
    let value = store.retrieve_value("u", "openai").await.unwrap();
    value.map(|v| v.to_vec())
}
