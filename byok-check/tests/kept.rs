//! The check of a saved key is kept with it: against the OpenAI stub, every
//! result is read back from the manager, a new key starts unchecked, and a
//! key that is not saved keeps nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure must fail the test"
)]

use std::sync::Arc;
use std::time::Duration;

use byok_check::{ByokCheckExt, CheckClient, CheckPolicy, Checker, HttpProber, KeyCheck};
use byok_core::check_record;
use byok_core::secrecy::SecretString;
use byok_core::{Byok, ByokConfig, ByokError, CheckRecord, Keyring, MasterKey, Ttl};
use byok_testkit::provider_stub::{ProviderStub, Scenario, StubProvider, answer};

const KEY: &str = "sk-test-0123456789abcdef";

fn byok() -> Byok {
    Byok::new(
        Arc::new(byok_memory::MemoryStorage::new()),
        Keyring::new(1, MasterKey::generate()),
        ByokConfig::for_tests(),
    )
    .unwrap()
}

fn stub_checker(stub: &ProviderStub) -> Checker {
    let client = CheckClient::new(
        CheckPolicy::default()
            .allow_http(true)
            .allow_private_addresses(true)
            .timeout(Duration::from_secs(5)),
    )
    .unwrap();
    let probe = HttpProber::openai(&client);
    let path = probe.base_url().path().to_owned();
    Checker::new().register(
        probe
            .with_base_url(&format!("{}{path}", stub.url()))
            .unwrap(),
    )
}

#[tokio::test]
async fn every_result_of_a_saved_key_is_kept_with_it() {
    let stub = ProviderStub::start().await.unwrap();
    let checker = stub_checker(&stub);
    let byok = byok();
    byok.set_key("alice", "openai", KEY, Ttl::Never)
        .await
        .unwrap();
    assert_eq!(byok.last_check("alice", "openai").await.unwrap(), None);
    for scenario in [
        Scenario::Valid,
        Scenario::InvalidKey,
        Scenario::NoCredit,
        Scenario::RateLimited,
        Scenario::ServerError,
    ] {
        stub.set_answer(answer(StubProvider::OpenAi, scenario));
        let check = byok.check_key(&checker, "alice", "openai").await.unwrap();
        let kept = byok
            .last_check("alice", "openai")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{scenario:?}: nothing kept"));
        assert_eq!(kept.outcome(), check.outcome(), "{scenario:?}");
        assert_eq!(kept.summary(), check.summary(), "{scenario:?}");
        assert!(!kept.summary().contains(KEY), "{scenario:?}");
        let summary = byok.key_summary("alice").await.unwrap();
        assert_eq!(summary[0].last_check.as_ref(), Some(&kept), "{scenario:?}");
    }
    // The last one was a server error: kept too, as what it is.
    let kept = byok.last_check("alice", "openai").await.unwrap().unwrap();
    assert_eq!(kept.outcome(), "unavailable");
    assert!(!kept.is_valid());

    // A new key starts unchecked; checking it keeps its own result.
    byok.set_key("alice", "openai", "sk-test-fedcba9876543210", Ttl::Never)
        .await
        .unwrap();
    assert_eq!(byok.last_check("alice", "openai").await.unwrap(), None);
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
    let check = byok.check_key(&checker, "alice", "openai").await.unwrap();
    assert!(check.is_valid());
    let kept = byok.last_check("alice", "openai").await.unwrap().unwrap();
    assert!(kept.is_valid());
    assert_eq!(kept.summary(), "The provider accepted this key.");
}

#[tokio::test]
async fn a_key_that_is_not_saved_keeps_nothing() {
    let stub = ProviderStub::start().await.unwrap();
    let checker = stub_checker(&stub);
    let byok = byok();
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
    // A typed key is checked and nothing is stored, not even for a slot
    // that holds a key.
    byok.set_key("alice", "openai", KEY, Ttl::Never)
        .await
        .unwrap();
    let typed = SecretString::from("sk-test-typed-0123456789");
    assert!(checker.check("openai", &typed).await.unwrap().is_invalid());
    assert_eq!(byok.last_check("alice", "openai").await.unwrap(), None);
    // No saved key: an error, and nothing kept.
    let err = byok.check_key(&checker, "bob", "openai").await.unwrap_err();
    assert!(
        matches!(
            err,
            byok_check::CheckError::Byok(ByokError::KeyNotFound { .. })
        ),
        "{err:?}"
    );
    assert_eq!(byok.last_check("bob", "openai").await.unwrap(), None);
    assert!(byok.key_summary("bob").await.unwrap().is_empty());
}

#[test]
fn every_result_makes_a_record() {
    use byok_check::{Detail, KeyInfo, Unavailable};
    let long = Detail::new(Some(400), None, Some("\u{7ff}".repeat(400)));
    let all = [
        KeyCheck::Valid(KeyInfo::default()),
        KeyCheck::Invalid(long.clone()),
        KeyCheck::OutOfCredit(long.clone()),
        KeyCheck::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
            detail: long.clone(),
        },
        KeyCheck::RegionBlocked(long.clone()),
        KeyCheck::Forbidden(long.clone()),
        KeyCheck::Unavailable {
            reason: Unavailable::Dns,
            detail: long,
        },
        KeyCheck::Unknown(Detail::status(418)),
    ];
    for check in all {
        let record: CheckRecord = check.record().unwrap();
        assert_eq!(record.outcome(), check.outcome());
        assert!(record.summary().len() <= check_record::MAX_SUMMARY_LEN);
        assert!(record.summary().ends_with('.'), "{}", record.summary());
        assert!(
            record.summary().starts_with(char::is_uppercase),
            "{}",
            record.summary()
        );
    }
}
