//! Checks against the real providers, only when a developer sets a real
//! key in the environment: `BYOK_LIVE_OPENAI_KEY`, `BYOK_LIVE_ANTHROPIC_KEY`,
//! `BYOK_LIVE_GOOGLE_KEY`, `BYOK_LIVE_MISTRAL_KEY`, `BYOK_LIVE_GROQ_KEY`,
//! `BYOK_LIVE_OPENROUTER_KEY`, `BYOK_LIVE_DEEPSEEK_KEY`, `BYOK_LIVE_XAI_KEY`,
//! `BYOK_LIVE_COHERE_KEY`. Without one, the test says what it skipped.
//! A set key must be one the provider accepts (or, at least, knows: an
//! account out of credit or rate-limited passes, with its result printed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure must fail the test"
)]

use std::io::Write;

use byok_check::{CheckClient, CheckPolicy, Checker, KeyCheck};
use byok_core::secrecy::SecretString;

#[tokio::test]
async fn real_providers_accept_the_developers_keys() {
    let checker = Checker::builtin(&CheckClient::new(CheckPolicy::default()).unwrap());
    let mut stderr = std::io::stderr();
    let mut skipped = Vec::new();
    for provider in checker.providers().filter(|p| *p != "gemini") {
        let var = format!("BYOK_LIVE_{}_KEY", provider.to_ascii_uppercase());
        let Ok(key) = std::env::var(&var) else {
            skipped.push(var);
            continue;
        };
        let check = checker
            .check(provider, &SecretString::from(key))
            .await
            .unwrap();
        let _ = writeln!(stderr, "{provider}: {} ({check})", check.outcome());
        assert!(
            matches!(
                check,
                KeyCheck::Valid(_) | KeyCheck::OutOfCredit(_) | KeyCheck::RateLimited { .. }
            ),
            "{provider}: {check:?}"
        );
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            stderr,
            "skipped: no real key in {} (set one to check that provider for real)",
            skipped.join(", ")
        );
    }
}
