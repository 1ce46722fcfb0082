//! Custody by command, with a real tool: a keyring encrypted with `age`
//! (Debian's package, which scripts/services.sh installs) and decrypted by
//! `age -d` at each load. Without `age` this test skips, or fails with
//! `BYOK_TEST_REQUIRE_SERVICES=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use byok_core::keyring_text::KeyringText;
use byok_core::secrecy::ExposeSecret as _;
use byok_core::{Byok, ByokConfig, KeyringCommand, KeyringSource as _, MasterKey, Ttl};

fn age_present() -> bool {
    let found = ["age", "age-keygen"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        if std::env::var("BYOK_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("BYOK_TEST_REQUIRE_SERVICES is set, but age is not installed");
        }
        eprintln!("skipped: no age (apt-get install age)");
    }
    found
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Encrypts `text` to `recipient` into `to`; the clear text touches no disk.
fn age_encrypt(text: &str, recipient: &str, to: &Path) {
    use std::io::Write as _;
    let mut child = Command::new("age")
        .args(["-r", recipient, "-o"])
        .arg(to)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn an_age_encrypted_keyring_is_decrypted_at_each_load() {
    if !age_present() {
        return;
    }
    let dir = Dir(std::env::temp_dir().join(format!(
        "byok-age-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let identity = dir.0.join("identity.txt");
    run(Command::new("age-keygen").arg("-o").arg(&identity));
    let recipient = run(Command::new("age-keygen").arg("-y").arg(&identity));
    let recipient = recipient.trim();
    let sealed = dir.0.join("keyring.age");

    let mut text = KeyringText::new("# byok\n").unwrap();
    text.add(Some(1), &MasterKey::generate(), true).unwrap();
    age_encrypt(text.expose_text(), recipient, &sealed);

    let source = KeyringCommand::new(
        "age",
        [
            "-d".into(),
            "-i".into(),
            identity.clone().into_os_string(),
            sealed.clone().into_os_string(),
        ],
    )
    .timeout(Duration::from_secs(20));
    let byok =
        Byok::builder_with_source(Arc::new(byok_memory::MemoryStorage::new()), source.clone())
            .await
            .unwrap()
            .config(ByokConfig::for_tests())
            .reload_interval(Duration::ZERO)
            .build()
            .unwrap();
    byok.set_key("alice", "openai", "sk-age-1", Ttl::Never)
        .await
        .unwrap();

    // A new primary key, sealed again: the next load takes it.
    text.add(Some(2), &MasterKey::generate(), true).unwrap();
    let next = dir.0.join("keyring.age.next");
    age_encrypt(text.expose_text(), recipient, &next);
    std::fs::rename(&next, &sealed).unwrap();
    byok.reload_keyring().await.unwrap();
    assert_eq!(byok.keyring().primary_id(), 2);
    let got = byok.get_key("alice", "openai").await.unwrap().unwrap();
    assert_eq!(got.expose_secret(), "sk-age-1");

    // The wrong identity: age fails, its complaint stays out of the error,
    // and a manager keeps its keyring.
    let other = dir.0.join("other.txt");
    run(Command::new("age-keygen").arg("-o").arg(&other));
    let wrong = KeyringCommand::new(
        "age",
        [
            "-d".into(),
            "-i".into(),
            other.into_os_string(),
            sealed.into_os_string(),
        ],
    );
    let e = wrong.load().await.unwrap_err();
    let shown = format!("{e} {:?}", std::error::Error::source(&e));
    assert!(
        shown.contains("the keyring command age ended with exit status"),
        "{shown}"
    );
    assert!(!shown.contains("no identity matched"), "{shown}");
}
