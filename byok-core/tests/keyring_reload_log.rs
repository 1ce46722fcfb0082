//! A failed keyring reload is logged as a warning that names the source
//! and the problem, never a master key, and the keyring in use is kept.
//!
//! A test binary of its own: it installs the process's one `log` logger.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure must fail the test"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_core::{Byok, ByokConfig, KeyringFile};
use byok_memory::MemoryStorage;

/// Keeps every record's level and message.
struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(Mutex::new(Vec::new()));

const A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

#[tokio::test]
async fn a_failed_reload_warns_without_key_material() {
    log::set_logger(&LOGS).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let dir = std::env::temp_dir().join(format!(
        "byok-reload-log-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keyring");
    std::fs::write(&path, format!("1:{A}")).unwrap();
    let byok = Byok::builder_with_source(Arc::new(MemoryStorage::new()), KeyringFile::new(&path))
        .await
        .unwrap()
        .config(ByokConfig::for_tests())
        .reload_interval(Duration::ZERO)
        .build()
        .unwrap();
    // Malformed in ways whose naive error would quote a key.
    for bad in [
        format!("1:{A}\n1:{B}"),
        format!("1:{A}\n2:{}", &B[..43]),
        format!("1:{A}\nx:{B}"),
        format!("{A}{B}"),
    ] {
        std::fs::write(&path, bad).unwrap();
        assert!(byok.reload_keyring().await.is_err());
    }
    std::fs::write(&path, format!("1:{A}\n*2:{B}")).unwrap();
    byok.reload_keyring().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let logs = LOGS.0.lock().unwrap();
    let warnings: Vec<&String> = logs
        .iter()
        .filter(|(level, _)| *level == log::Level::Warn)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(warnings.len(), 4, "{logs:#?}");
    for w in &warnings {
        assert!(w.contains("keyring in use is kept"), "{w}");
        assert!(w.contains("KeyringFile"), "{w}");
    }
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("keyring replaced") && m.contains("primary=2")),
        "{logs:#?}"
    );
    for (_, m) in logs.iter() {
        for (key, half) in [(A, &A[..20]), (B, &B[..20])] {
            assert!(!m.contains(key) && !m.contains(half), "{m}");
        }
    }
}
