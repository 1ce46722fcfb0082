//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;

use byok_core::ByokConfig;

/// A key prefix of this test process, so that parallel runs against one
/// server never meet.
pub fn process_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(fresh_prefix)
}

/// A prefix of its own, for a test that counts what it finds.
pub fn fresh_prefix() -> String {
    format!("byok_test_{:016x}_", rand::random::<u64>())
}

/// A config with `prefix`.
pub fn config(prefix: &str) -> ByokConfig {
    ByokConfig {
        session_key_prefix: prefix.to_owned(),
        auto_cleanup: false,
        ..ByokConfig::default()
    }
}
