//! An application that logs through the `log` crate, with no tracing
//! subscriber, sees the manager's spans with their real durations.
//!
//! A test binary of its own: it installs the process's one `log` logger.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure must fail the test"
)]

use std::sync::{Arc, Mutex};

use byok_core::{Byok, ByokConfig, Keyring, MasterKey, Ttl};
use byok_memory::MemoryStorage;

/// Keeps every record's message.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(Mutex::new(Vec::new()));

#[tokio::test]
async fn spans_reach_a_log_logger_with_their_durations() {
    log::set_logger(&LOGS).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let byok = Byok::new(
        Arc::new(MemoryStorage::new()),
        Keyring::new(1, MasterKey::generate()),
        ByokConfig::default(),
    )
    .unwrap();
    byok.set_key("alice", "openai", "sk-proj-0123456789abcdef", Ttl::Never)
        .await
        .unwrap();
    assert!(byok.get_key("alice", "openai").await.unwrap().is_some());

    let logs = LOGS.0.lock().unwrap();
    let durations: Vec<f64> = logs
        .iter()
        .filter_map(|line| line.split("duration_ms=").nth(1))
        .map(|rest| {
            let number: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '-'))
                .collect();
            number.parse().expect("a number")
        })
        .collect();
    assert!(durations.len() >= 2, "{logs:#?}");
    assert!(durations.iter().all(|d| *d > 0.0), "{durations:?}");
    assert!(
        logs.iter().all(|l| !l.contains("sk-proj-0123456789abcdef")),
        "the key is never logged"
    );
}
