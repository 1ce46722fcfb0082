//! `rediss://` against a TLS-only `redis-server` that each test starts for
//! itself on a free loopback port, with a certificate authority and a
//! server certificate made for the test, and stops when it ends.

#![cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use byok_core::{ApiKey, KeyStorage, StorageErrorKind};
use byok_redis::{RedisOptions, RedisStorage};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority: its certificate in PEM, and the issuer that
/// signs with it.
struct Authority {
    pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn authority(name: &str) -> Authority {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    Authority {
        pem: issuer.pem(),
        issuer,
    }
}

/// A TLS-only Redis on 127.0.0.1, stopped (and its directory removed) on
/// drop.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsRedis {
    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

/// Starts a TLS-only Redis whose certificate, for the host `names`, `ca`
/// signed; `None` (after a `skipped:` line) when there is
/// no `redis-server`, unless the services are required.
fn start_tls_redis(ca: &Authority, names: &[&str]) -> Option<TlsRedis> {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !byok_testkit::services::services_required(),
            "redis-server is needed for the TLS tests"
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no redis-server for the TLS tests \
             (set BYOK_TEST_REQUIRE_SERVICES=1 to fail instead)"
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let params = CertificateParams::new(names).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cert_file = write("server.pem", &cert.pem());
    let key_file = write("server.key", &key.serialize_pem());
    let ca_file = write("ca.pem", &ca.pem);
    // A free port: bind one, then hand it to the server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-port")
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(&cert_file)
        .arg("--tls-key-file")
        .arg(&key_file)
        .arg("--tls-ca-cert-file")
        .arg(&ca_file)
        .args(["--tls-auth-clients", "no", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = TlsRedis {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the TLS redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

fn options() -> RedisOptions {
    RedisOptions::default()
        .with_connection_timeout(Duration::from_secs(2))
        .with_response_timeout(Duration::from_secs(2))
}

async fn round_trip(store: &RedisStorage) {
    let key = ApiKey::new("alice", "openai", b"ciphertext".to_vec()).unwrap();
    store.store(&key).await.unwrap();
    assert_eq!(store.retrieve("alice", "openai").await.unwrap(), Some(key));
    assert_eq!(store.user_keys("alice").await.unwrap().len(), 1);
    assert_eq!(store.clear_all("alice").await.unwrap(), 1);
}

#[tokio::test]
async fn a_trusted_authority_lets_the_store_connect() {
    let ca = authority("byok test CA");
    let Some(server) = start_tls_redis(&ca, &["127.0.0.1", "localhost"]) else {
        return;
    };
    let config = common::config(&common::fresh_prefix());
    let trusted = options().with_root_certificates(ca.pem.as_bytes());
    let store = RedisStorage::builder(server.url())
        .config(&config)
        .options(trusted.clone())
        .open()
        .await
        .unwrap();
    round_trip(&store).await;
    // The same through `open`, and with the host name the certificate names.
    let url = format!("rediss://localhost:{}/0", server.port);
    let opened = RedisStorage::builder(&url)
        .config(&config)
        .options(trusted)
        .open()
        .await
        .unwrap();
    round_trip(&opened).await;
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_refused() {
    let ca = authority("byok test CA");
    let Some(server) = start_tls_redis(&ca, &["127.0.0.1", "localhost"]) else {
        return;
    };
    let config = common::config(&common::fresh_prefix());
    let other = authority("another CA");
    for (what, options) in [
        ("the system's authorities", options()),
        (
            "another authority",
            options().with_root_certificates(other.pem.as_bytes()),
        ),
    ] {
        let err = RedisStorage::builder(server.url())
            .config(&config)
            .options(options)
            .open()
            .await
            .expect_err(what);
        let storage = err.as_storage().expect("a storage error");
        assert_eq!(storage.kind, StorageErrorKind::Rejected, "{what}: {err}");
        assert!(!err.is_retryable(), "{what}: {err}");
        assert!(err.to_string().contains("certificate"), "{what}: {err}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused() {
    let ca = authority("byok test CA");
    let Some(server) = start_tls_redis(&ca, &["localhost"]) else {
        return;
    };
    let config = common::config(&common::fresh_prefix());
    let trusted = options().with_root_certificates(ca.pem.as_bytes());
    let local = format!("rediss://localhost:{}", server.port);
    round_trip(
        &RedisStorage::builder(&local)
            .config(&config)
            .options(trusted.clone())
            .open()
            .await
            .unwrap(),
    )
    .await;
    // The same server, reached by an address its certificate does not name.
    let err = RedisStorage::builder(server.url())
        .config(&config)
        .options(trusted)
        .open()
        .await
        .unwrap_err();
    let storage = err.as_storage().expect("a storage error");
    assert_eq!(storage.kind, StorageErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[cfg(any(feature = "tls-rustls-insecure", feature = "tls-native-tls"))]
#[tokio::test]
async fn the_insecure_fragment_skips_verification() {
    let ca = authority("byok test CA");
    let Some(server) = start_tls_redis(&ca, &["127.0.0.1", "localhost"]) else {
        return;
    };
    let config = common::config(&common::fresh_prefix());
    let url = format!("{}/#insecure", server.url());
    let store = RedisStorage::builder(&url)
        .config(&config)
        .options(options())
        .open()
        .await
        .unwrap();
    round_trip(&store).await;
}
