//! Keyrings whose entries are wrapped by a key management service: read
//! by the one parser, unwrapped once per load, and a reload that cannot
//! reach the service keeps the keyring in use. A stand-in KMS counts the
//! calls; `byok-kms` tests AWS KMS itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

use std::time::Duration;

use async_trait::async_trait;
use byok_core::secrecy::ExposeSecret as _;
use byok_core::unwrap_text;
use byok_core::{
    Byok, ByokConfig, ConfigError, KeyUnwrapper, Keyring, KeyringFile, MasterKey, Ttl, Unwrapping,
    WrappedKey,
};
use zeroize::Zeroizing;
/// A KMS stand-in: "wraps" by XOR with a byte, counts its calls and
/// can be taken down.
#[derive(Debug, Default)]
struct XorKms {
    calls: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

impl XorKms {
    fn wrap(key: &MasterKey) -> WrappedKey {
        let blob = key.expose_secret().iter().map(|b| b ^ 0x5a).collect();
        WrappedKey::new("test", "arn:test:key/1", blob).unwrap()
    }
}

#[async_trait]
impl KeyUnwrapper for XorKms {
    fn kms(&self) -> &str {
        "test"
    }

    async fn unwrap_key(
        &self,
        key_id: u32,
        wrapped: &WrappedKey,
    ) -> Result<MasterKey, ConfigError> {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(ConfigError::new(format!(
                "the test KMS is down (master key id {key_id}, key {})",
                wrapped.key()
            )));
        }
        let raw: Zeroizing<Vec<u8>> =
            Zeroizing::new(wrapped.blob().iter().map(|b| b ^ 0x5a).collect());
        MasterKey::from_bytes(&raw)
    }
}

/// A wrapped keyring unwraps to the same keys: what one encrypts, the
/// other decrypts. One KMS call per wrapped id, none for clear ones.
#[tokio::test]
async fn wrapped_entries_unwrap_once_each_to_the_same_keys() {
    use byok_core::keyring_text::KeyringText;
    use std::sync::atomic::Ordering;
    let (k1, k2, k3) = (
        MasterKey::generate(),
        MasterKey::generate(),
        MasterKey::generate(),
    );
    let mut plain = KeyringText::new("# plain\n").unwrap();
    plain.add(Some(1), &k1, false).unwrap();
    plain.add(Some(2), &k2, false).unwrap();
    plain.add(Some(3), &k3, true).unwrap();
    let mut wrapped = KeyringText::new("# wrapped\n").unwrap();
    wrapped.add(Some(1), &k1, false).unwrap();
    wrapped
        .add_wrapped(Some(2), &XorKms::wrap(&k2), false)
        .unwrap();
    wrapped
        .add_wrapped(Some(3), &XorKms::wrap(&k3), true)
        .unwrap();
    assert!(wrapped.has_wrapped().unwrap() && !plain.has_wrapped().unwrap());
    assert!(
        !wrapped
            .expose_text()
            .contains(k2.to_base64().expose_secret())
    );

    let kms = XorKms::default();
    let from_kms = unwrap_text(wrapped.expose_text(), &[&kms]).await.unwrap();
    assert_eq!(kms.calls.load(Ordering::SeqCst), 2);
    let from_clear = plain.keyring().unwrap();
    assert_eq!(from_kms.primary_id(), 3);
    assert!(from_kms.key_ids().eq(from_clear.key_ids()));
    for ring in [&from_kms, &from_clear] {
        let sealed = ring.encrypt("alice", "openai", b"sk-test").unwrap();
        for other in [&from_kms, &from_clear] {
            let opened = other.decrypt("alice", "openai", &sealed).unwrap();
            assert_eq!(&opened[..], b"sk-test");
        }
    }

    // Without an unwrapper the entry is refused, naming its KMS key.
    let e = Keyring::from_text(wrapped.expose_text()).unwrap_err();
    assert!(e.to_string().contains("arn:test:key/1"), "{e}");
    let e = unwrap_text(wrapped.expose_text(), &[]).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("master key id 2 is wrapped by the test KMS"),
        "{e}"
    );

    // A KMS that is down fails the load; the error names the id.
    kms.down.store(true, Ordering::SeqCst);
    let e = unwrap_text(wrapped.expose_text(), &[&kms])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("master key id"), "{e}");
}

/// A manager whose KMS goes down keeps the keyring it has.
#[tokio::test]
async fn a_reload_that_cannot_reach_the_kms_keeps_the_keyring() {
    use std::sync::atomic::Ordering;
    let dir = std::env::temp_dir().join(format!(
        "byok-unwrap-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keyring");
    let key = MasterKey::generate();
    let mut text = byok_core::keyring_text::KeyringText::new("").unwrap();
    text.add_wrapped(Some(4), &XorKms::wrap(&key), false)
        .unwrap();
    std::fs::write(&path, text.expose_text()).unwrap();
    let kms = std::sync::Arc::new(XorKms::default());
    let source = Unwrapping::new(KeyringFile::new(&path), kms.clone());
    let byok = Byok::builder_with_source(
        std::sync::Arc::new(byok_memory::MemoryStorage::new()),
        source,
    )
    .await
    .unwrap()
    .config(ByokConfig::for_tests())
    .reload_interval(Duration::ZERO)
    .build()
    .unwrap();
    assert_eq!(kms.calls.load(Ordering::SeqCst), 1);
    byok.set_key("alice", "openai", "sk-wrapped-1", Ttl::Never)
        .await
        .unwrap();

    kms.down.store(true, Ordering::SeqCst);
    let e = byok.reload_keyring().await.unwrap_err();
    assert!(e.to_string().contains("test KMS is down"), "{e}");
    assert_eq!(byok.keyring().primary_id(), 4);
    let got = byok.get_key("alice", "openai").await.unwrap().unwrap();
    assert_eq!(got.expose_secret(), "sk-wrapped-1");

    kms.down.store(false, Ordering::SeqCst);
    byok.reload_keyring().await.unwrap();
    assert_eq!(kms.calls.load(Ordering::SeqCst), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}
