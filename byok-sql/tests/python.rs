//! Importing from the Python library cjm-fasthtml-byok: a database written
//! by the library itself (0.0.3, `tests/data`, made by
//! `scripts/python-fixture.py`), and the same rows in PostgreSQL and
//! MariaDB tables of the layout the library creates.
#![cfg(all(feature = "python", feature = "sqlite"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure must fail the test"
)]

mod common;

use std::path::{Path, PathBuf};

use byok_core::chrono::{FixedOffset, NaiveDateTime, TimeZone as _};
use byok_core::{KeyStorage, Keyring, MasterKey};
use byok_memory::MemoryStorage;
use byok_sql::python::{self, ImportOptions, Outcome, PythonRow, PythonSecret};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(data("python-0.0.3.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn secret() -> PythonSecret {
    PythonSecret::from_app_secret(expected()["secret"].as_str().unwrap())
}

fn options() -> ImportOptions {
    // The fixture's naive times were written in UTC.
    ImportOptions::default().naive_offset(FixedOffset::east_opt(0).unwrap())
}

/// A copy of the fixture in a directory of its own.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("python.sqlite3");
    std::fs::copy(data("python-0.0.3.sqlite3"), &path).unwrap();
    (dir, path)
}

/// Every row reported as the generator says, every converted key stored
/// with its plaintext and dates, nothing else stored.
async fn check_import(url: &str, table: &str) {
    let expected = expected();
    let rows = expected["rows"].as_array().unwrap();
    let ring = Keyring::new(3, MasterKey::generate());
    let target = MemoryStorage::new();
    let report = python::import_table(url, table, &secret(), &ring, &target, &options())
        .await
        .unwrap();
    assert_eq!(report.rows.len(), rows.len(), "{report:?}");
    for (got, want) in report.rows.iter().zip(rows) {
        let what = format!("{got:?} / {want}");
        assert_eq!(got.id, want["id"].as_i64().unwrap(), "{what}");
        assert_eq!(got.user_id, want["user_id"].as_str().unwrap(), "{what}");
        assert_eq!(got.provider, want["provider"].as_str().unwrap(), "{what}");
        let outcome = match want["outcome"].as_str().unwrap() {
            "converted" => Outcome::Converted,
            "failed" => Outcome::Failed,
            _ => Outcome::Skipped,
        };
        assert_eq!(got.outcome, outcome, "{what}");
        let reason = got.reason.as_deref().unwrap_or_default();
        match want["reason"].as_str() {
            Some("expired") => assert!(reason.starts_with("expired at"), "{what}"),
            Some("decrypt") => assert!(reason.contains("does not decrypt"), "{what}"),
            Some("provider") => assert!(reason.contains("provider"), "{what}"),
            Some("empty") => assert!(reason.contains("empty"), "{what}"),
            Some(other) => panic!("unknown reason {other}"),
            None => assert!(got.reason.is_none(), "{what}"),
        }
        // A provider byok refuses cannot even be looked up: Err is fine.
        let stored = target.retrieve(&got.user_id, &got.provider).await;
        let stored = if outcome == Outcome::Converted {
            stored.unwrap()
        } else {
            stored.ok().flatten()
        };
        if outcome != Outcome::Converted {
            assert!(stored.is_none(), "{what}");
            continue;
        }
        let stored = stored.unwrap();
        let plain = ring
            .decrypt(&got.user_id, &got.provider, stored.encrypted_value())
            .unwrap();
        assert_eq!(
            &plain[..],
            want["key"].as_str().unwrap().as_bytes(),
            "{what}"
        );
        assert_eq!(got.key_id, Some(3));
        let utc = |v: &Value| {
            let naive =
                NaiveDateTime::parse_from_str(v.as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f").unwrap();
            byok_core::key::to_millis(byok_core::chrono::Utc.from_utc_datetime(&naive))
        };
        assert_eq!(stored.created_at(), utc(&want["created_at"]), "{what}");
        match want["expires_at"].as_str() {
            None => assert_eq!(stored.expires_at(), None, "{what}"),
            Some(_) => assert_eq!(
                stored.expires_at(),
                Some(utc(&want["expires_at"])),
                "{what}"
            ),
        }
        assert!(stored.hint().is_some_and(|h| h.contains("...")), "{what}");
    }
    assert_eq!(target.len(), report.count(Outcome::Converted));
    assert_eq!(
        (
            report.count(Outcome::Converted),
            report.count(Outcome::Failed),
            report.count(Outcome::Skipped)
        ),
        (7, 3, 1)
    );
    // Again into the same target: every converted row is skipped.
    let again = python::import_table(url, table, &secret(), &ring, &target, &options())
        .await
        .unwrap();
    assert_eq!(again.count(Outcome::Converted), 0);
    assert_eq!(again.count(Outcome::Skipped), 8);
}

#[tokio::test]
async fn a_database_written_by_the_python_library_converts_row_by_row() {
    let (dir, path) = fixture();
    let before = std::fs::read(&path).unwrap();
    check_import(&format!("sqlite://{}", path.display()), "user_api_keys").await;
    assert_eq!(std::fs::read(&path).unwrap(), before, "the source changed");
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        files.len(),
        1,
        "files appeared beside the source: {files:?}"
    );
}

#[tokio::test]
async fn a_wrong_secret_converts_and_writes_nothing() {
    let (_dir, path) = fixture();
    let url = format!("sqlite://{}", path.display());
    let ring = Keyring::new(1, MasterKey::generate());
    let target = MemoryStorage::new();
    let wrong = PythonSecret::from_app_secret("not the secret");
    let report = python::import_table(&url, "user_api_keys", &wrong, &ring, &target, &options())
        .await
        .unwrap();
    assert_eq!(report.count(Outcome::Converted), 0);
    assert_eq!(report.count(Outcome::Failed), 10);
    assert_eq!(report.count(Outcome::Skipped), 1);
    assert!(target.is_empty());
}

#[tokio::test]
async fn a_missing_database_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.sqlite3");
    let url = format!("sqlite://{}", path.display());
    assert!(python::read_table(&url, "user_api_keys").await.is_err());
    assert!(!path.exists());
    assert!(
        python::read_table("sqlite::memory:", "no; table")
            .await
            .is_err()
    );
}

/// The fixture's rows, as the library stores them.
async fn fixture_rows() -> Vec<PythonRow> {
    let (_dir, path) = fixture();
    python::read_table(&format!("sqlite://{}", path.display()), "user_api_keys")
        .await
        .unwrap()
}

/// A table named as `common` names them, so that a killed run's table is
/// removed by a later run.
fn table_name() -> String {
    common::table_name()
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_table_of_the_python_layout_converts_row_by_row() {
    use byok_sql::sqlx::{self, AssertSqlSafe, Connection as _};
    let Some(url) = byok_testkit::services::postgres_url().await else {
        return;
    };
    let table = table_name();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    // What SQLAlchemy's create_all makes of the library's Table.
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id SERIAL NOT NULL, user_id VARCHAR NOT NULL, \
         provider VARCHAR NOT NULL, encrypted_value VARCHAR NOT NULL, \
         created_at VARCHAR NOT NULL, expires_at VARCHAR, PRIMARY KEY (id))"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    for r in fixture_rows().await {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (id, user_id, provider, encrypted_value, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        )))
        .bind(i32::try_from(r.id).unwrap())
        .bind(r.user_id)
        .bind(r.provider)
        .bind(r.encrypted_value)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    check_import(&url, &table).await;
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn a_mariadb_table_of_the_python_layout_converts_row_by_row() {
    use byok_sql::sqlx::{self, AssertSqlSafe, Connection as _};
    let Some(url) = byok_testkit::services::mysql_url().await else {
        return;
    };
    let table = table_name();
    let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
    // SQLAlchemy needs a length for VARCHAR on MySQL: the library's own
    // create_all fails there, so such a table was made by hand.
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id INTEGER NOT NULL AUTO_INCREMENT, \
         user_id VARCHAR(255) NOT NULL, provider VARCHAR(255) NOT NULL, \
         encrypted_value TEXT NOT NULL, created_at VARCHAR(64) NOT NULL, \
         expires_at VARCHAR(64), PRIMARY KEY (id)) CHARACTER SET utf8mb4"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    for r in fixture_rows().await {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (id, user_id, provider, encrypted_value, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)"
        )))
        .bind(r.id)
        .bind(r.user_id)
        .bind(r.provider)
        .bind(r.encrypted_value)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    check_import(&url, &table).await;
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut conn)
        .await
        .unwrap();
}
