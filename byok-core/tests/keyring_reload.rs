//! A running manager takes new keyrings: replaced by hand, reloaded from a
//! source on a timer or when a stored key names an id it lacks, and kept
//! when a reload fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use byok_core::secrecy::ExposeSecret as _;
use byok_core::{
    Byok, ByokConfig, ByokError, EncryptionError, KeyStorage, Keyring, KeyringFile, Ttl,
};

fn config() -> ByokConfig {
    ByokConfig::for_tests()
}

fn ring(text: &str) -> Keyring {
    Keyring::from_text(text).unwrap()
}

/// Key texts of master keys 1, 2 and 3.
fn keys() -> [String; 3] {
    [1u8, 2, 3].map(hex_key)
}

fn hex_key(b: u8) -> String {
    format!("{b:02x}").repeat(32)
}

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "byok-reload-{}-{:016x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self, text: &str) -> PathBuf {
        let path = self.0.join("keyring");
        write(&path, text);
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

/// Replaces the file by a rename, as an orchestrator or `byok` does.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn storage() -> Arc<dyn KeyStorage> {
    Arc::new(byok_memory::MemoryStorage::new())
}

#[tokio::test]
async fn a_replaced_keyring_is_used_by_every_clone() {
    let [a, b, _] = keys();
    let byok = Byok::new(storage(), ring(&format!("1:{a}")), config()).unwrap();
    let clone = byok.clone();
    byok.set_key("u1", "openai", "sk-old-0123456789", Ttl::Never)
        .await
        .unwrap();
    byok.replace_keyring(ring(&format!("1:{a}\n*2:{b}")));
    assert_eq!(clone.keyring().primary_id(), 2);
    clone
        .set_key("u2", "openai", "sk-new-0123456789", Ttl::Never)
        .await
        .unwrap();
    let stored = byok
        .storage()
        .retrieve("u2", "openai")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        byok_core::crypto::key_id_of(stored.encrypted_value()).unwrap(),
        2
    );
    for (user, key) in [("u1", "sk-old-0123456789"), ("u2", "sk-new-0123456789")] {
        let got = byok.get_key(user, "openai").await.unwrap().unwrap();
        assert_eq!(got.expose_secret(), key);
    }
}

/// Another instance promoted key id 2 and wrote under it before this one
/// reloaded: the first read of such a key reloads the file and succeeds.
#[tokio::test]
async fn an_unknown_key_id_reloads_the_source_once_and_retries() {
    let [a, b, c] = keys();
    let dir = Dir::new();
    let path = dir.file(&format!("1:{a}"));
    let store = storage();
    let behind = Byok::builder_with_source(store.clone(), KeyringFile::new(&path))
        .await
        .unwrap()
        .config(config())
        .reload_interval(Duration::ZERO)
        .unknown_key_reload_gap(Duration::from_secs(3600))
        .build()
        .unwrap();
    let ahead = Byok::new(store.clone(), ring(&format!("1:{a}\n*2:{b}")), config()).unwrap();
    ahead
        .set_key("alice", "openai", "sk-alice-0123456789", Ttl::Never)
        .await
        .unwrap();
    write(&path, &format!("1:{a}\n*2:{b}"));
    let got = behind.get_key("alice", "openai").await.unwrap().unwrap();
    assert_eq!(got.expose_secret(), "sk-alice-0123456789");
    assert_eq!(behind.keyring().primary_id(), 2);

    // Within the gap, another unknown id does not reload again: the error
    // is returned and the stored key left as it was.
    let further = Byok::new(store.clone(), ring(&format!("*3:{c}")), config()).unwrap();
    further
        .set_key("bob", "openai", "sk-bob-0123456789", Ttl::Never)
        .await
        .unwrap();
    write(&path, &format!("1:{a}\n2:{b}\n*3:{c}"));
    let e = behind.get_key("bob", "openai").await.unwrap_err();
    assert!(
        matches!(
            e,
            ByokError::Encryption(EncryptionError::UnknownKeyId { key_id: 3 })
        ),
        "{e}"
    );
    assert!(store.retrieve("bob", "openai").await.unwrap().is_some());
    assert_eq!(behind.keyring().primary_id(), 2);
}

#[tokio::test]
async fn a_failed_reload_keeps_the_keyring_in_use() {
    let [a, b, _] = keys();
    let dir = Dir::new();
    let path = dir.file(&format!("1:{a}"));
    let byok = Byok::builder_with_source(storage(), KeyringFile::new(&path))
        .await
        .unwrap()
        .config(config())
        .reload_interval(Duration::ZERO)
        .build()
        .unwrap();
    byok.set_key("u", "p", "sk-kept-0123456789", Ttl::Never)
        .await
        .unwrap();
    for bad in [
        String::new(),
        "# emptied by mistake\n".to_owned(),
        format!("1:{a}\n1:{b}"),
        format!("1:{}", &a[..60]),
    ] {
        write(&path, &bad);
        let e = byok.reload_keyring().await.unwrap_err();
        assert!(
            !e.to_string().contains(&a) && !e.to_string().contains(&b),
            "{e}"
        );
        assert_eq!(byok.keyring().key_ids().collect::<Vec<_>>(), [1]);
        let got = byok.get_key("u", "p").await.unwrap().unwrap();
        assert_eq!(got.expose_secret(), "sk-kept-0123456789");
    }
    std::fs::remove_file(&path).unwrap();
    assert!(byok.reload_keyring().await.is_err());
    assert_eq!(byok.keyring().key_ids().collect::<Vec<_>>(), [1]);

    let plain = Byok::new(storage(), ring(&format!("1:{a}")), config()).unwrap();
    assert!(plain.reload_keyring().await.is_err(), "no source");
    // A source that cannot be read at start is an error, not an empty ring.
    assert!(
        Byok::builder_with_source(storage(), KeyringFile::new(&path))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_timer_reloads_the_source() {
    let [a, b, _] = keys();
    let dir = Dir::new();
    let path = dir.file(&format!("1:{a}"));
    let byok = Byok::builder_with_source(storage(), KeyringFile::new(&path))
        .await
        .unwrap()
        .config(config())
        .reload_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    write(&path, &format!("1:{a}\n*2:{b}"));
    // Bounded wait: the timer fires every 20 ms.
    for _ in 0..500 {
        if byok.keyring().primary_id() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(byok.keyring().primary_id(), 2);
}

/// A source whose reads never finish (a stalled network file system, a
/// FIFO nobody writes).
#[derive(Debug)]
struct Stalls;

#[byok_core::async_trait]
impl byok_core::KeyringSource for Stalls {
    async fn read_text(&self) -> Result<zeroize::Zeroizing<String>, byok_core::ConfigError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_source_that_never_answers_fails_the_reload_and_keeps_the_keyring() {
    let byok = Byok::builder(storage(), ring(&format!("*1:{}", keys()[0])))
        .config(config())
        .keyring_source(Stalls)
        .reload_interval(Duration::ZERO)
        .build()
        .unwrap();
    byok.set_key("u", "openai", "sk-reload-timeout", Ttl::Never)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let reload = byok.reload_keyring().await;
    assert!(reload.is_err(), "a reload that never finishes must fail");
    assert!(started.elapsed() >= byok_core::RELOAD_TIMEOUT);
    let key = byok.get_key("u", "openai").await.unwrap().unwrap();
    assert_eq!(key.expose_secret(), "sk-reload-timeout");
}
