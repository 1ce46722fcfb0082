//! AWS KMS against a real server of its API: moto, started on loopback by
//! `scripts/kms-server.sh`, which exports `BYOK_TEST_KMS_ENDPOINT`. Without
//! it these tests skip, or fail with `BYOK_TEST_REQUIRE_SERVICES=1`. No AWS
//! account is used: dummy credentials, region us-east-1.
//!
//! New wrapped keys, a manager that loads and reloads them (one `Decrypt`
//! per wrapped id, counted), a rewrap to a second KMS key that no stored
//! key notices, tampered and moved blobs refused, and a KMS that is down at
//! start or during a reload.

#![cfg(feature = "aws")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::config::{Credentials, Region};
use base64::Engine as _;
use byok_core::keyring_text::{self, KeyringText};
use byok_core::secrecy::ExposeSecret as _;
use byok_core::{
    Byok, ByokConfig, ConfigError, KeyStorage, KeyUnwrapper, KeyringFile, MasterKey, Ttl,
    Unwrapping, WrappedKey,
};
use byok_kms::AwsKms;
use byok_testkit::proxy::FaultProxy;

fn endpoint() -> Option<String> {
    byok_testkit::services::from_env("AWS KMS (moto)", "BYOK_TEST_KMS_ENDPOINT")
}

async fn kms_at(endpoint: &str) -> (AwsKms, aws_sdk_kms::Client) {
    let config = AwsKms::loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    (AwsKms::new(&config), aws_sdk_kms::Client::new(&config))
}

/// A new symmetric KMS key; its ARN.
async fn new_kms_key(client: &aws_sdk_kms::Client) -> String {
    let out = client
        .create_key()
        .description("byok test")
        .send()
        .await
        .unwrap();
    out.key_metadata.unwrap().arn.unwrap()
}

/// Counts the unwraps made through it.
#[derive(Debug, Clone)]
struct Counted {
    kms: AwsKms,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl KeyUnwrapper for Counted {
    fn kms(&self) -> &str {
        self.kms.kms()
    }

    async fn unwrap_key(&self, key_id: u32, w: &WrappedKey) -> Result<MasterKey, ConfigError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.kms.unwrap_key(key_id, w).await
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "byok-kms-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn keyring(&self) -> PathBuf {
        self.0.join("keyring")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Adds a new wrapped key to the keyring file; its id.
async fn add_wrapped(kms: &AwsKms, path: &Path, kms_key: &str, primary: bool) -> u32 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let id = KeyringText::new(text).unwrap().next_id().unwrap();
    let wrapped = kms.generate(id, kms_key).await.unwrap();
    keyring_text::edit_file(path, |t| t.add_wrapped(Some(id), &wrapped, primary))
        .unwrap()
        .0
}

fn storage() -> Arc<byok_memory::MemoryStorage> {
    Arc::new(byok_memory::MemoryStorage::new())
}

/// A manager over `store` whose keyring file `path` `kms` unwraps; reloads
/// only when asked.
async fn manager(store: Arc<dyn KeyStorage>, path: &Path, kms: impl KeyUnwrapper) -> Byok {
    Byok::builder_with_source(store, Unwrapping::new(KeyringFile::new(path), kms))
        .await
        .unwrap()
        .config(ByokConfig::for_tests())
        .reload_interval(Duration::ZERO)
        .build()
        .unwrap()
}

/// The keys the test set read back.
async fn assert_keys(byok: &Byok) {
    for i in 0..20 {
        let got = byok
            .get_key(&format!("user{i}"), "openai")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.expose_secret(), format!("sk-kms-{i}"));
    }
}

/// Every file under `dir`, as text.
fn files_text(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    all
}

/// Keygen, load, reload and rewrap, with the KMS calls counted; the master
/// keys never reach the disk in the clear.
#[tokio::test]
async fn load_reload_and_rewrap_with_one_call_per_key_id() {
    let Some(endpoint) = endpoint() else { return };
    let (kms, client) = kms_at(&endpoint).await;
    let (key_a, key_b) = (new_kms_key(&client).await, new_kms_key(&client).await);
    let dir = Dir::new();
    let path = dir.keyring();
    assert_eq!(add_wrapped(&kms, &path, &key_a, false).await, 1);
    assert_eq!(add_wrapped(&kms, &path, &key_a, true).await, 2);

    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Counted {
        kms: kms.clone(),
        calls: Arc::clone(&calls),
    };
    let store = storage();
    let byok = manager(store.clone(), &path, counted).await;
    // One Decrypt per wrapped key id at load, none per stored key.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(byok.keyring().primary_id(), 2);
    for i in 0..20 {
        byok.set_key(
            &format!("user{i}"),
            "openai",
            &format!("sk-kms-{i}"),
            Ttl::Never,
        )
        .await
        .unwrap();
    }
    assert_keys(&byok).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "reads made KMS calls");

    // A third key, under the second KMS key: one reload, three calls.
    assert_eq!(add_wrapped(&kms, &path, &key_b, true).await, 3);
    byok.reload_keyring().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(byok.keyring().primary_id(), 3);

    // Rewrap every entry under the second KMS key: the stored rows stay
    // byte for byte what they were, and still decrypt.
    let before: Vec<_> = store.scan(None, 100).await.unwrap().keys;
    let text = KeyringText::new(std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut rewrapped = Vec::new();
    for entry in text.entries().unwrap() {
        let wrapped = entry.wrapped.unwrap();
        rewrapped.push((
            entry.id,
            kms.rewrap(entry.id, &wrapped, &key_b).await.unwrap(),
        ));
    }
    keyring_text::edit_file(&path, |t| {
        for (id, w) in &rewrapped {
            t.rewrap(*id, w)?;
        }
        Ok(())
    })
    .unwrap();
    let after = KeyringText::new(std::fs::read_to_string(&path).unwrap()).unwrap();
    for entry in after.entries().unwrap() {
        assert_eq!(entry.wrapped.unwrap().key(), key_b, "entry {}", entry.id);
    }
    byok.reload_keyring().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    assert_keys(&byok).await;
    assert_eq!(store.scan(None, 100).await.unwrap().keys, before);

    // The clear master keys are nowhere on disk: not in the keyring file
    // (base64 or hex), not in anything beside it.
    let on_disk = files_text(&dir.0);
    for entry in after.entries().unwrap() {
        let key = kms
            .unwrap_key(entry.id, entry.wrapped.as_ref().unwrap())
            .await
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(key.expose_secret());
        assert!(!on_disk.contains(&b64), "master key {} on disk", entry.id);
        assert!(!on_disk.contains(&hex::encode(key.expose_secret())));
    }
}

/// A changed blob, a blob moved under another id, or a blob named with
/// another KMS key is refused by KMS; the error names the id and the KMS
/// key, never the blob; nothing is loaded.
#[tokio::test]
async fn tampered_or_moved_blobs_are_refused() {
    let Some(endpoint) = endpoint() else { return };
    let (kms, client) = kms_at(&endpoint).await;
    let (key_a, key_b) = (new_kms_key(&client).await, new_kms_key(&client).await);
    // It names a source in reload warnings: short, and nothing secret.
    let shown = format!("{kms:?}");
    assert!(shown.contains("us-east-1") && shown.len() < 100, "{shown}");
    assert!(!shown.contains("testing"), "{shown}");
    let good = kms.generate(1, &key_a).await.unwrap();
    assert_eq!(good.key(), key_a);
    assert!(kms.unwrap_key(1, &good).await.is_ok());

    let mut bytes = good.blob().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = WrappedKey::new("aws", good.key(), bytes).unwrap();
    let other_key = WrappedKey::new("aws", key_b.as_str(), good.blob().to_vec()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(good.blob());
    for (id, w, what) in [
        (1, &tampered, "tampered"),
        (2, &good, "moved"),
        (1, &other_key, "renamed"),
    ] {
        let e = kms.unwrap_key(id, w).await.unwrap_err();
        let shown = e.to_string();
        eprintln!("{what}: {shown}");
        assert!(
            shown.contains(&format!(
                "AWS KMS refused to unwrap master key id {id} (KMS key {}): ",
                w.key()
            )),
            "{what}: {shown}"
        );
        assert!(!shown.contains(&b64), "{shown}");
    }

    // In a keyring: the load fails whole.
    let mut text = KeyringText::new("").unwrap();
    text.add_wrapped(Some(1), &tampered, true).unwrap();
    let e = byok_core::unwrap_text(text.expose_text(), &[&kms])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("InvalidCiphertextException"), "{e}");
}

/// A KMS that cannot be reached: at start the manager is not built, and
/// the error says so after the retries, naming the KMS key and the id;
/// during a reload the keyring in use is kept, and reads go on.
#[tokio::test]
async fn kms_down_at_start_and_during_a_reload() {
    let Some(endpoint) = endpoint() else { return };
    let (kms, client) = kms_at(&endpoint).await;
    let key = new_kms_key(&client).await;
    let dir = Dir::new();
    let path = dir.keyring();
    add_wrapped(&kms, &path, &key, true).await;

    let (proxy, through) = FaultProxy::in_front_of(&endpoint, 80).await.unwrap();
    let (via_proxy, _) = kms_at(&through).await;
    proxy.refuse();
    let e = Byok::builder_with_source(
        storage(),
        Unwrapping::new(KeyringFile::new(&path), via_proxy.clone()),
    )
    .await
    .unwrap_err();
    let shown = e.to_string();
    eprintln!("down at start: {shown}");
    assert!(
        shown.contains(&format!(
            "cannot reach AWS KMS to unwrap master key id 1 (KMS key {key}) after 3 attempts"
        )),
        "{shown}"
    );
    let blob = KeyringText::new(std::fs::read_to_string(&path).unwrap())
        .unwrap()
        .entries()
        .unwrap()[0]
        .wrapped
        .clone()
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob.blob());
    assert!(!shown.contains(&b64));

    proxy.resume();
    let byok = manager(storage(), &path, via_proxy).await;
    byok.set_key("alice", "openai", "sk-before-outage", Ttl::Never)
        .await
        .unwrap();
    // A new key was added meanwhile; the KMS goes down before the reload.
    add_wrapped(&kms, &path, &key, true).await;
    proxy.cut();
    proxy.refuse();
    let e = byok.reload_keyring().await.unwrap_err();
    eprintln!("down during a reload: {e}");
    assert!(
        e.to_string()
            .contains("cannot reach AWS KMS to unwrap master key id"),
        "{e}"
    );
    assert_eq!(byok.keyring().key_ids().collect::<Vec<_>>(), [1]);
    let got = byok.get_key("alice", "openai").await.unwrap().unwrap();
    assert_eq!(got.expose_secret(), "sk-before-outage");

    // Back up: the next reload takes the new key.
    proxy.resume();
    byok.reload_keyring().await.unwrap();
    assert_eq!(byok.keyring().primary_id(), 2);
}
