//! Key checks through the facade (`checks` feature), with the metrics they
//! report (`metrics` feature), against the stub provider.

#![cfg(feature = "checks")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure must fail the test"
)]

use std::sync::Arc;

use byok::check::{ByokCheckExt, CheckClient, CheckPolicy, Checker, HttpProber, KeyCheck};
use byok::{Byok, ByokConfig, Keyring, MasterKey, Ttl};
use byok_testkit::provider_stub::{ProviderStub, Scenario, StubProvider, answer};

const KEY: &str = "sk-facade-0123456789abcdef";

fn checker(stub: &ProviderStub) -> Checker {
    let client = CheckClient::new(
        CheckPolicy::default()
            .allow_http(true)
            .allow_private_addresses(true),
    )
    .unwrap();
    let openai = HttpProber::openai(&client)
        .with_base_url(&format!("{}/v1", stub.url()))
        .unwrap();
    Checker::new().register(openai)
}

/// Saves a key, then checks it as the stub answers valid, invalid and
/// rate-limited, and once for a provider that has no prober.
async fn three_checks() -> Vec<KeyCheck> {
    let stub = ProviderStub::start().await.unwrap();
    let checker = checker(&stub);
    let byok = Byok::new(
        Arc::new(byok::MemoryStorage::new()),
        Keyring::new(1, MasterKey::generate()),
        ByokConfig::default(),
    )
    .unwrap();
    byok.set_key("alice", "openai", KEY, Ttl::Never)
        .await
        .unwrap();
    let mut checks = Vec::new();
    for scenario in [Scenario::Valid, Scenario::InvalidKey, Scenario::RateLimited] {
        stub.set_answer(answer(StubProvider::OpenAi, scenario));
        checks.push(byok.check_key(&checker, "alice", "openai").await.unwrap());
    }
    // The key was not in storage: an error, not a check.
    let missing = byok.check_key(&checker, "bob", "openai").await;
    assert!(missing.is_err());
    checks
}

#[tokio::test]
async fn a_saved_key_is_checked_through_the_facade() {
    let outcomes: Vec<_> = three_checks().await.iter().map(KeyCheck::outcome).collect();
    assert_eq!(outcomes, ["valid", "invalid", "rate_limited"]);
}

#[cfg(feature = "metrics")]
#[path = "support/metrics.rs"]
mod recorder;

#[cfg(feature = "metrics")]
#[test]
fn checks_are_counted_by_provider_and_result() {
    use recorder::{Capture, Value};

    let capture = Capture::default();
    ::metrics::with_local_recorder(&capture, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(three_checks())
    });
    let metrics = capture.snapshot();
    for result in ["valid", "invalid", "rate_limited"] {
        let key = format!("byok_key_checks_total{{provider=openai,result={result}}}");
        assert_eq!(
            metrics.get(&key),
            Some(&Value::Counter(1)),
            "{key} in {metrics:#?}"
        );
    }
    match metrics.get("byok_key_check_duration_seconds{provider=openai}") {
        Some(Value::Histogram(samples)) => assert_eq!(samples.len(), 3),
        other => panic!("{other:?} in {metrics:#?}"),
    }
    // A user without a key is not a check of the provider.
    assert!(
        !metrics.keys().any(|k| k.contains("result=error")),
        "{metrics:#?}"
    );
    let text = format!("{metrics:?}");
    assert!(!text.contains(KEY) && !text.contains("alice"));
}
