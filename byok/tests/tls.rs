//! `byok::connect` with TLS URLs, against the throwaway servers of
//! `scripts/tls-servers.sh`:
//!
//! ```sh
//! bash scripts/tls-servers.sh cargo test -p byok --all-features --test tls
//! ```
//!
//! Without the script's variables the tests print a skip line and pass,
//! unless `BYOK_TEST_REQUIRE_SERVICES=1`.
#![cfg(all(
    feature = "postgres",
    feature = "mysql",
    any(feature = "tls-rustls", feature = "tls-native-tls")
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure must fail the test"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use byok::secrecy::ExposeSecret;
use byok::{Byok, ByokConfig, Keyring, MasterKey, StorageErrorKind, Ttl};
use byok_testkit::services::from_env;

/// A user id no other run uses, so parallel runs share the server.
fn user() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("tls-{}-{nanos}", std::process::id())
}

/// Sets, reads and clears one key through `connect(url)`.
async fn round_trip(url: &str) {
    let storage = byok::connect(url).await.unwrap();
    let byok = Byok::new(
        storage,
        Keyring::new(1, MasterKey::generate()),
        ByokConfig::default(),
    )
    .unwrap();
    let user = user();
    byok.set_key(
        &user,
        "openai",
        "sk-tls-0123456789abcdef",
        Ttl::After(std::time::Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let key = byok.require_key(&user, "openai").await.unwrap();
    assert_eq!(key.expose_secret(), "sk-tls-0123456789abcdef");
    byok.clear_keys(&user).await.unwrap();
}

async fn refused(url: &str) {
    let err = byok::connect(url)
        .await
        .expect_err("a certificate of another CA");
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Other);
    assert_eq!(storage.message(), "connect: TLS with the database failed");
}

#[tokio::test]
async fn postgres_verify_full() {
    let (Some(url), Some(ca), Some(other)) = (
        from_env("PostgreSQL with TLS", "BYOK_TEST_POSTGRES_TLS_URL"),
        from_env("TLS CA", "BYOK_TEST_TLS_CA"),
        from_env("TLS CA", "BYOK_TEST_TLS_OTHER_CA"),
    ) else {
        return;
    };
    round_trip(&format!("{url}?sslmode=verify-full&sslrootcert={ca}")).await;
    refused(&format!("{url}?sslmode=verify-full&sslrootcert={other}")).await;
}

#[tokio::test]
async fn mysql_verify_identity() {
    let (Some(url), Some(ca), Some(other)) = (
        from_env("MariaDB with TLS", "BYOK_TEST_MYSQL_TLS_URL"),
        from_env("TLS CA", "BYOK_TEST_TLS_CA"),
        from_env("TLS CA", "BYOK_TEST_TLS_OTHER_CA"),
    ) else {
        return;
    };
    round_trip(&format!("{url}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}")).await;
    refused(&format!("{url}?ssl-mode=VERIFY_IDENTITY&ssl-ca={other}")).await;
}
