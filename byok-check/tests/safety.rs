//! What the client refuses, where the key goes and does not go, and the
//! checks of saved and unsaved keys through the manager.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure must fail the test"
)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_check::{
    ByokCheckExt, CheckClient, CheckError, CheckPolicy, Checker, HttpProber, KeyCheck, Prober,
};
use byok_core::secrecy::SecretString;
use byok_core::{Byok, ByokConfig, ByokError, Keyring, MasterKey, Ttl};
use byok_testkit::provider_stub::{ProviderStub, Scenario, StubAnswer, StubProvider, answer};

const KEY: &str = "sk-test-0123456789abcdef";

fn key() -> SecretString {
    SecretString::from(KEY)
}

fn loopback_policy() -> CheckPolicy {
    CheckPolicy::default()
        .allow_http(true)
        .allow_private_addresses(true)
        .timeout(Duration::from_secs(5))
}

fn openai_at(client: &CheckClient, stub: &ProviderStub) -> HttpProber {
    HttpProber::openai(client)
        .with_base_url(&format!("{}/v1", stub.url()))
        .unwrap()
}

#[tokio::test]
async fn the_default_policy_refuses_plain_http_and_sends_nothing() {
    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(CheckPolicy::default().allow_private_addresses(true)).unwrap();
    let err = openai_at(&client, &stub).check(&key()).await.unwrap_err();
    assert!(matches!(err, CheckError::Refused { .. }), "{err:?}");
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn loopback_literals_are_refused_by_default() {
    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(CheckPolicy::default().allow_http(true)).unwrap();
    let err = openai_at(&client, &stub).check(&key()).await.unwrap_err();
    assert!(
        matches!(&err, CheckError::Refused { reason, .. } if reason.contains("private")),
        "{err:?}"
    );
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_after_resolution() {
    // https://localhost:PORT: a host name, so only the resolver can see
    // that it is 127.0.0.1 (or ::1).
    let stub = ProviderStub::start_tls().await.unwrap();
    let root = stub.root_certificate().unwrap().to_vec();
    let client = CheckClient::new(CheckPolicy::default().add_root_certificate(root)).unwrap();
    let probe = HttpProber::openai(&client)
        .with_base_url(&format!("{}/v1", stub.url()))
        .unwrap();
    assert!(stub.url().starts_with("https://localhost:"));
    let err = probe.check(&key()).await.unwrap_err();
    assert!(
        matches!(&err, CheckError::Refused { reason, .. } if reason.contains("private")),
        "{err:?}"
    );
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn checks_work_over_tls_with_a_trusted_root() {
    let stub = ProviderStub::start_tls().await.unwrap();
    stub.set_answer(answer(StubProvider::Anthropic, Scenario::Valid));
    let root = stub.root_certificate().unwrap().to_vec();
    let client = CheckClient::new(
        CheckPolicy::default()
            .allow_private_addresses(true)
            .add_root_certificate(root),
    )
    .unwrap();
    let probe = HttpProber::anthropic(&client)
        .with_base_url(&format!("{}/v1", stub.url()))
        .unwrap();
    let check = probe.check(&key()).await.unwrap();
    assert!(check.is_valid(), "{check:?}");
    assert_eq!(stub.requests()[0].header("x-api-key"), Some(KEY));

    // Without the root, the certificate is not trusted: no answer, and
    // so nothing known about the key.
    let untrusting =
        CheckClient::new(CheckPolicy::default().allow_private_addresses(true)).unwrap();
    let probe = HttpProber::anthropic(&untrusting)
        .with_base_url(&format!("{}/v1", stub.url()))
        .unwrap();
    let check = probe.check(&key()).await.unwrap();
    assert!(matches!(check, KeyCheck::Unavailable { .. }), "{check:?}");
}

#[tokio::test]
async fn a_redirect_to_another_host_is_refused() {
    let stub = ProviderStub::start().await.unwrap();
    let elsewhere = format!("http://localhost:{}/v1/models", stub.addr().port());
    stub.set_answer(StubAnswer::json(302, "{}").with_header("location", &elsewhere));
    let client = CheckClient::new(loopback_policy()).unwrap();
    let err = openai_at(&client, &stub).check(&key()).await.unwrap_err();
    assert!(
        matches!(&err, CheckError::Refused { reason, .. } if reason.contains("redirect")),
        "{err:?}"
    );
    assert_eq!(stub.requests().len(), 1, "the redirect was followed");
}

#[tokio::test]
async fn a_key_echoed_by_the_provider_does_not_come_back() {
    let stub = ProviderStub::start().await.unwrap();
    stub.set_answer(StubAnswer::json(
        401,
        &format!(r#"{{"error":{{"message":"bad key {KEY}","code":"invalid_api_key"}}}}"#),
    ));
    let client = CheckClient::new(loopback_policy()).unwrap();
    let probe = openai_at(&client, &stub);
    let check = probe.check(&key()).await.unwrap();
    assert!(check.is_invalid());
    let text = format!(
        "{check:?} {check} {}",
        serde_json::to_string(&check).unwrap()
    );
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("bad key [key]"), "{text}");
    assert!(!format!("{probe:?} {client:?}").contains(KEY));
}

#[tokio::test]
async fn keys_that_cannot_be_sent_are_refused_before_sending() {
    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(loopback_policy()).unwrap();
    let probe = openai_at(&client, &stub);
    for bad in ["", "  ", "sk-\u{0}abc", "sk-é-abc", "sk- abc"] {
        let err = probe.check(&SecretString::from(bad)).await.unwrap_err();
        assert!(
            matches!(err, CheckError::Byok(ByokError::InvalidInput(_))),
            "{err:?}"
        );
    }
    assert!(stub.requests().is_empty());
}

/// A `log`-free sink for every tracing event and span field, at every
/// level, of this crate and of reqwest and hyper.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_key_is_in_no_log_line_or_span() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(loopback_policy()).unwrap();
    let checker = Checker::new().register(openai_at(&client, &stub));
    for scenario in [Scenario::Valid, Scenario::InvalidKey, Scenario::RateLimited] {
        stub.set_answer(answer(StubProvider::OpenAi, scenario));
        checker.check("openai", &key()).await.unwrap();
    }
    let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("byok.check"),
        "the check was not traced: {logged}"
    );
    assert!(logged.contains("outcome"), "{logged}");
    assert!(!logged.contains(KEY));
    assert!(!logged.contains(&KEY[8..]));
}

async fn manager() -> Byok {
    Byok::new(
        Arc::new(byok_memory::MemoryStorage::new()),
        Keyring::new(1, MasterKey::generate()),
        ByokConfig::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_saved_key_is_checked_with_the_key_of_that_user() {
    let stub = ProviderStub::start().await.unwrap();
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
    let client = CheckClient::new(loopback_policy()).unwrap();
    let checker = Checker::new().register(openai_at(&client, &stub));
    let byok = manager().await;
    byok.set_key("alice", "openai", KEY, Ttl::Never)
        .await
        .unwrap();
    byok.set_key("bob", "openai", "sk-bob-key-000000", Ttl::Never)
        .await
        .unwrap();

    let check = byok.check_key(&checker, "alice", "openai").await.unwrap();
    assert!(check.is_valid(), "{check:?}");
    assert_eq!(
        stub.requests()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    let err = byok
        .check_key(&checker, "carol", "openai")
        .await
        .unwrap_err();
    assert!(
        matches!(err, CheckError::Byok(ByokError::KeyNotFound { .. })),
        "{err:?}"
    );
    let err = byok
        .check_key(&checker, "alice", "nowhere")
        .await
        .unwrap_err();
    assert!(matches!(err, CheckError::UnknownProvider { .. }), "{err:?}");
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn checking_an_unsaved_key_stores_nothing() {
    let stub = ProviderStub::start().await.unwrap();
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
    let client = CheckClient::new(loopback_policy()).unwrap();
    let checker = Checker::new().register(openai_at(&client, &stub));
    let byok = manager().await;
    let check = checker.check("openai", &key()).await.unwrap();
    assert!(check.is_valid());
    assert!(byok.list_providers("alice").await.unwrap().is_empty());
    assert!(byok.storage().scan(None, 10).await.unwrap().keys.is_empty());
}

#[tokio::test]
async fn completion_checks_ask_for_one_token() {
    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(loopback_policy()).unwrap();
    let at = |p: HttpProber| {
        let path = p.base_url().path().to_owned();
        p.with_base_url(&format!("{}{path}", stub.url())).unwrap()
    };
    let cases = [
        (
            at(HttpProber::openai(&client)),
            "gpt-4o-mini",
            "/v1/chat/completions",
            "max_completion_tokens",
        ),
        (
            at(HttpProber::anthropic(&client)),
            "claude-sonnet-4-20250514",
            "/v1/messages",
            "max_tokens",
        ),
        (
            at(HttpProber::gemini(&client)),
            "gemini-2.0-flash",
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "maxOutputTokens",
        ),
        (
            at(HttpProber::deepseek(&client)),
            "deepseek-chat",
            "/chat/completions",
            "max_tokens",
        ),
    ];
    for (probe, model, path, limit) in cases {
        stub.clear_requests();
        stub.set_answer(StubAnswer::json(200, r#"{"id":"x"}"#));
        let check = probe.check_with_completion(&key(), model).await.unwrap();
        assert!(check.is_valid(), "{}: {check:?}", probe.provider());
        let request = &stub.requests()[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", path)
        );
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let text = body.to_string();
        assert!(text.contains(&format!("\"{limit}\":1")), "{text}");
        assert_eq!(request.places_of(KEY).len(), 1, "{}", probe.provider());

        // The same call with no credit left.
        let provider = match probe.provider() {
            "openai" => StubProvider::OpenAi,
            "anthropic" => StubProvider::Anthropic,
            "google" => StubProvider::Gemini,
            _ => continue,
        };
        stub.set_answer(answer(provider, Scenario::NoCredit));
        let check = probe.check_with_completion(&key(), model).await.unwrap();
        assert_eq!(check.outcome(), "out_of_credit", "{}", probe.provider());
    }
}

#[tokio::test]
async fn completion_checks_refuse_odd_model_names_and_cohere() {
    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(loopback_policy()).unwrap();
    let gemini = HttpProber::gemini(&client)
        .with_base_url(&format!("{}/v1beta", stub.url()))
        .unwrap();
    for model in ["", "../secrets", "a/b", "m:x?key=1", "gemini flash"] {
        let err = gemini
            .check_with_completion(&key(), model)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CheckError::Unsupported { .. }),
            "{model}: {err:?}"
        );
    }
    let cohere = HttpProber::cohere(&client);
    let err = cohere
        .check_with_completion(&key(), "command-r")
        .await
        .unwrap_err();
    assert!(matches!(err, CheckError::Unsupported { .. }));
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn builtin_checker_knows_every_builtin_provider() {
    let client = CheckClient::new(CheckPolicy::default()).unwrap();
    let checker = Checker::builtin(&client);
    let providers: Vec<_> = checker.providers().collect();
    for id in [
        "openai",
        "anthropic",
        "google",
        "gemini",
        "mistral",
        "groq",
        "openrouter",
        "deepseek",
        "xai",
        "cohere",
    ] {
        assert!(providers.contains(&id), "{id} missing from {providers:?}");
    }
    for id in providers {
        let prober = checker.prober(id).unwrap();
        assert!(
            prober.provider() == id || (id == "gemini" && prober.provider() == "google"),
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_is_unavailable_not_invalid() {
    let client = CheckClient::new(loopback_policy()).unwrap();
    // A port that was free a moment ago: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let probe = HttpProber::openai(&client)
        .with_base_url(&format!("http://127.0.0.1:{port}/v1"))
        .unwrap();
    let check = probe.check(&key()).await.unwrap();
    assert_eq!(
        check,
        KeyCheck::Unavailable {
            reason: byok_check::Unavailable::Connect,
            detail: byok_check::Detail::default(),
        }
    );
    // A name that cannot resolve (RFC 2606 reserves `.invalid`).
    let probe = HttpProber::openai(&client)
        .with_base_url("https://no-such-provider.invalid/v1")
        .unwrap();
    let check = probe.check(&key()).await.unwrap();
    assert!(
        matches!(
            check,
            KeyCheck::Unavailable {
                reason: byok_check::Unavailable::Dns | byok_check::Unavailable::Timeout,
                ..
            }
        ),
        "{check:?}"
    );
}

#[tokio::test]
async fn bodies_over_the_cap_are_not_read_whether_their_length_is_announced_or_not() {
    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(loopback_policy().max_body_bytes(1024)).unwrap();
    let probe = openai_at(&client, &stub);
    let mut big = answer(StubProvider::OpenAi, Scenario::Oversized);
    for announced in [false, true] {
        big.content_length = announced;
        stub.set_answer(big.clone());
        let check = probe.check(&key()).await.unwrap();
        // A 200 of a models list proves the key; the list is not read.
        match &check {
            KeyCheck::Valid(info) => assert!(info.models.is_empty(), "{check:?}"),
            other => panic!("announced {announced}: {other:?}"),
        }
    }
    // Under the cap, the list is read.
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
    let client = CheckClient::new(loopback_policy().max_body_bytes(4096)).unwrap();
    let check = openai_at(&client, &stub).check(&key()).await.unwrap();
    assert!(matches!(check, KeyCheck::Valid(info) if info.models.len() == 2));
}
