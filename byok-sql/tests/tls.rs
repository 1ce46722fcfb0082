//! TLS to PostgreSQL and MariaDB, against the throwaway servers of
//! `scripts/tls-servers.sh`, which accept encrypted connections only and
//! present a certificate for `127.0.0.1` signed by a CA made for the run:
//!
//! ```sh
//! bash scripts/tls-servers.sh cargo test -p byok-sql --all-features --test tls
//! ```
//!
//! Without the script's variables the tests print a skip line and pass,
//! unless `BYOK_TEST_REQUIRE_SERVICES=1`. Each test that writes works on a
//! table of its own, dropped with its store.
#![cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure must fail the test"
)]

mod common;

use std::error::Error as _;

use byok_core::{ApiKey, ByokConfig, ByokError, KeyStorage, StorageErrorKind};
use byok_testkit::services::from_env;

/// The server's URL (without TLS parameters) and the two CA files.
struct Tls {
    url: String,
    ca: String,
    other_ca: String,
}

fn tls(service: &str, url_var: &str) -> Option<Tls> {
    Some(Tls {
        url: from_env(service, url_var)?,
        ca: from_env("TLS CA", "BYOK_TEST_TLS_CA")?,
        other_ca: from_env("TLS CA", "BYOK_TEST_TLS_OTHER_CA")?,
    })
}

/// Writes and reads back one key through `store`.
async fn round_trip(store: &dyn KeyStorage) {
    let key = ApiKey::new("tls-user", "openai", b"ciphertext".to_vec()).unwrap();
    store.store(&key).await.unwrap();
    let back = store.retrieve("tls-user", "openai").await.unwrap().unwrap();
    assert_eq!(back.encrypted_value(), b"ciphertext");
}

/// The whole text of an error and its sources.
fn chain(err: &ByokError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(" / ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A refused certificate reads as a TLS failure, not retryable, whose
/// sources say what was wrong with the certificate.
fn assert_certificate_refused(result: byok_core::Result<impl std::fmt::Debug>, why: &str) {
    let err = result.expect_err(why);
    let text = chain(&err);
    let storage = err.as_storage().unwrap_or_else(|| panic!("{why}: {text}"));
    assert_eq!(storage.kind, StorageErrorKind::Other, "{text}");
    assert!(!err.is_retryable(), "{text}");
    assert_eq!(storage.message(), "connect: TLS with the database failed");
    let lower = text.to_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("unknownissuer"),
        "{why}: the sources should name the certificate problem: {text}"
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use byok_sql::PostgresStorage;
    use byok_sql::sqlx::postgres::PgConnection;

    const LIST_TABLES: &str = "SELECT tablename::text FROM pg_tables \
         WHERE schemaname = current_schema() AND tablename LIKE 'byok\\_test\\_%'";

    fn server() -> Option<Tls> {
        tls("PostgreSQL with TLS", "BYOK_TEST_POSTGRES_TLS_URL")
    }

    /// Whether the store's connections are encrypted, as the server sees it.
    async fn encrypted(store: &PostgresStorage) -> bool {
        byok_sql::sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    async fn works(url: String) {
        let s = common::scratch::<PgConnection, _>(
            url,
            LIST_TABLES,
            PostgresStorage::connect,
            PostgresStorage::migrate,
        )
        .await;
        assert!(encrypted(&s.store).await);
        round_trip(&s).await;
    }

    #[tokio::test]
    async fn require_encrypts_without_checking_the_certificate() {
        let Some(t) = server() else { return };
        works(format!("{}?sslmode=require", t.url)).await;
    }

    #[tokio::test]
    async fn verify_full_accepts_the_servers_ca_and_name() {
        let Some(t) = server() else { return };
        works(format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            t.url, t.ca
        ))
        .await;
    }

    #[tokio::test]
    async fn verify_full_refuses_a_certificate_of_another_ca() {
        let Some(t) = server() else { return };
        let url = format!("{}?sslmode=verify-full&sslrootcert={}", t.url, t.other_ca);
        assert_certificate_refused(
            PostgresStorage::connect(&url, &ByokConfig::default()).await,
            "a certificate that another CA signed",
        );
    }

    #[tokio::test]
    async fn verify_full_refuses_a_certificate_for_another_name() {
        let Some(t) = server() else { return };
        // The certificate names 127.0.0.1 only; localhost is the same
        // server under a name the certificate does not carry.
        let url = format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            t.url.replace("127.0.0.1", "localhost"),
            t.ca
        );
        assert_certificate_refused(
            PostgresStorage::connect(&url, &ByokConfig::default()).await,
            "a certificate for another name",
        );
    }

    #[tokio::test]
    async fn verify_ca_accepts_the_servers_ca_under_another_name() {
        let Some(t) = server() else { return };
        let url = format!(
            "{}?sslmode=verify-ca&sslrootcert={}",
            t.url.replace("127.0.0.1", "localhost"),
            t.ca
        );
        works(url).await;
    }

    #[tokio::test]
    async fn the_test_server_refuses_plaintext() {
        // What makes the tests above prove that TLS is used.
        let Some(t) = server() else { return };
        let url = format!("{}?sslmode=disable", t.url);
        let err = PostgresStorage::connect(&url, &ByokConfig::default())
            .await
            .expect_err("a plaintext connection");
        assert!(chain(&err).contains("no encryption"), "{}", chain(&err));
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use byok_sql::MySqlStorage;
    use byok_sql::sqlx::mysql::MySqlConnection;

    const LIST_TABLES: &str = "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE 'byok\\_test\\_%'";

    fn server() -> Option<Tls> {
        tls("MariaDB with TLS", "BYOK_TEST_MYSQL_TLS_URL")
    }

    /// The cipher of the store's connection, as the server sees it; empty
    /// without TLS.
    async fn cipher(store: &MySqlStorage) -> String {
        let (_, value): (String, String) =
            byok_sql::sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        value
    }

    async fn works(url: String) {
        let s = common::scratch::<MySqlConnection, _>(
            url,
            LIST_TABLES,
            MySqlStorage::connect,
            MySqlStorage::migrate,
        )
        .await;
        assert!(!cipher(&s.store).await.is_empty());
        round_trip(&s).await;
    }

    #[tokio::test]
    async fn required_encrypts_without_checking_the_certificate() {
        let Some(t) = server() else { return };
        works(format!("{}?ssl-mode=REQUIRED", t.url)).await;
    }

    #[tokio::test]
    async fn verify_identity_accepts_the_servers_ca_and_name() {
        let Some(t) = server() else { return };
        works(format!(
            "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            t.url, t.ca
        ))
        .await;
    }

    #[tokio::test]
    async fn verify_identity_refuses_a_certificate_of_another_ca() {
        let Some(t) = server() else { return };
        let url = format!("{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}", t.url, t.other_ca);
        assert_certificate_refused(
            MySqlStorage::connect(&url, &ByokConfig::default()).await,
            "a certificate that another CA signed",
        );
    }

    #[tokio::test]
    async fn verify_identity_refuses_a_certificate_for_another_name() {
        let Some(t) = server() else { return };
        let url = format!(
            "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            t.url.replace("127.0.0.1", "localhost"),
            t.ca
        );
        assert_certificate_refused(
            MySqlStorage::connect(&url, &ByokConfig::default()).await,
            "a certificate for another name",
        );
    }

    #[tokio::test]
    async fn the_test_server_refuses_plaintext() {
        let Some(t) = server() else { return };
        let url = format!("{}?ssl-mode=DISABLED", t.url);
        let err = MySqlStorage::connect(&url, &ByokConfig::default())
            .await
            .expect_err("a plaintext connection");
        assert!(err.as_storage().is_some(), "{}", chain(&err));
    }
}
