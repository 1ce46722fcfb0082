//! Every built-in probe against every stubbed answer of its provider: the
//! request it sends (method, path, headers, where the key goes) and the
//! [`KeyCheck`] it makes of each answer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure must fail the test"
)]

use std::time::Duration;

use byok_check::{CheckClient, CheckPolicy, HttpProber, KeyCheck, Prober, Unavailable};
use byok_core::secrecy::SecretString;
use byok_testkit::provider_stub::{
    ProviderStub, RETRY_AFTER_SECS, RecordedRequest, Scenario, StubProvider, answer,
};

const KEY: &str = "sk-test-0123456789abcdef";

/// A client that may reach the loopback stub over plain HTTP, with a
/// timeout far below the stub's slow answer (and far above a loopback
/// round trip): the slow case costs each test this long.
fn client() -> CheckClient {
    CheckClient::new(
        CheckPolicy::default()
            .allow_http(true)
            .allow_private_addresses(true)
            .timeout(Duration::from_secs(1)),
    )
    .unwrap()
}

/// What a probe must send.
struct Expect {
    method: &'static str,
    path: &'static str,
    /// The one header that carries the key, and what comes before it.
    key_header: &'static str,
    key_prefix: &'static str,
    /// Other headers that must be there.
    headers: &'static [(&'static str, &'static str)],
    /// Whether a 200 says only "valid" when its body can be read (the
    /// body of OpenRouter, DeepSeek, xAI and Cohere decides).
    body_decides: bool,
}

fn probe_for(provider: StubProvider, client: &CheckClient, stub: &ProviderStub) -> HttpProber {
    // Same path as the provider's default base URL, on the stub.
    let at = |p: HttpProber| {
        let path = p.base_url().path().to_owned();
        p.with_base_url(&format!("{}{path}", stub.url())).unwrap()
    };
    match provider {
        StubProvider::OpenAi => at(HttpProber::openai(client)),
        StubProvider::Anthropic => at(HttpProber::anthropic(client)),
        StubProvider::Gemini => at(HttpProber::gemini(client)),
        StubProvider::Mistral => at(HttpProber::mistral(client)),
        StubProvider::Groq => at(HttpProber::groq(client)),
        StubProvider::OpenRouter => at(HttpProber::openrouter(client)),
        StubProvider::DeepSeek => at(HttpProber::deepseek(client)),
        StubProvider::Xai => at(HttpProber::xai(client)),
        StubProvider::Cohere => at(HttpProber::cohere(client)),
        StubProvider::AzureOpenAi => HttpProber::azure_openai(client, &stub.url()).unwrap(),
        StubProvider::OpenAiCompatible => {
            HttpProber::openai_compatible(client, "local", &format!("{}/v1", stub.url())).unwrap()
        }
        other => panic!("no probe for {other:?}"),
    }
}

fn expect(provider: StubProvider) -> Expect {
    let bearer = |method, path, body_decides| Expect {
        method,
        path,
        key_header: "authorization",
        key_prefix: "Bearer ",
        headers: &[],
        body_decides,
    };
    match provider {
        StubProvider::OpenAi | StubProvider::Mistral | StubProvider::OpenAiCompatible => {
            bearer("GET", "/v1/models", false)
        }
        StubProvider::Groq => bearer("GET", "/openai/v1/models", false),
        StubProvider::OpenRouter => bearer("GET", "/api/v1/key", true),
        StubProvider::DeepSeek => bearer("GET", "/user/balance", true),
        StubProvider::Xai => bearer("GET", "/v1/api-key", true),
        StubProvider::Cohere => Expect {
            headers: &[("content-type", "application/json")],
            ..bearer("POST", "/v1/check-api-key", true)
        },
        StubProvider::Anthropic => Expect {
            method: "GET",
            path: "/v1/models",
            key_header: "x-api-key",
            key_prefix: "",
            headers: &[("anthropic-version", "2023-06-01")],
            body_decides: false,
        },
        StubProvider::Gemini => Expect {
            method: "GET",
            path: "/v1beta/models",
            key_header: "x-goog-api-key",
            key_prefix: "",
            headers: &[],
            body_decides: false,
        },
        StubProvider::AzureOpenAi => Expect {
            method: "GET",
            path: "/openai/v1/models",
            key_header: "api-key",
            key_prefix: "",
            headers: &[],
            body_decides: false,
        },
        other => panic!("no expectations for {other:?}"),
    }
}

/// What a check must make of `scenario`; `None` when it did.
fn verdict(
    provider: StubProvider,
    scenario: Scenario,
    check: &KeyCheck,
    e: &Expect,
) -> Option<String> {
    let retry = if provider == StubProvider::Gemini {
        27
    } else {
        RETRY_AFTER_SECS
    };
    let ok = match (scenario, check) {
        (Scenario::Valid, KeyCheck::Valid(info)) => match provider {
            StubProvider::OpenRouter => {
                info.limit_remaining == Some(7.5) && info.limit == Some(10.0)
            }
            StubProvider::DeepSeek => info.balances.len() == 1 && info.balances[0].amount == "4.20",
            StubProvider::Xai | StubProvider::Cohere => true,
            _ => !info.models.is_empty(),
        },
        (Scenario::InvalidKey, KeyCheck::Invalid(_)) => true,
        (Scenario::NoCredit, KeyCheck::OutOfCredit(_)) => true,
        (Scenario::RateLimited, KeyCheck::RateLimited { retry_after, .. }) => {
            *retry_after == Some(Duration::from_secs(retry))
        }
        (Scenario::RegionBlocked, KeyCheck::RegionBlocked(_)) => true,
        (
            Scenario::ServerError,
            KeyCheck::Unavailable {
                reason: Unavailable::ServerError,
                ..
            },
        ) => true,
        (
            Scenario::Slow,
            KeyCheck::Unavailable {
                reason: Unavailable::Timeout,
                ..
            },
        ) => true,
        (Scenario::Oversized, KeyCheck::Valid(info)) => !e.body_decides && info.models.is_empty(),
        (Scenario::Oversized, KeyCheck::Unknown(d)) => e.body_decides && d.status == Some(200),
        _ => false,
    };
    (!ok).then(|| format!("{provider:?} × {scenario:?}: got {check:?}"))
}

/// What is wrong with the request the probe sent; `None` when nothing.
fn request_problems(
    provider: StubProvider,
    seen: &[RecordedRequest],
    e: &Expect,
) -> Option<String> {
    let [request] = seen else {
        return Some(format!(
            "{provider:?}: {} requests instead of one",
            seen.len()
        ));
    };
    let mut problems = Vec::new();
    if request.method != e.method || request.path != e.path {
        problems.push(format!("sent {} {}", request.method, request.path));
    }
    let auth = format!("{}{KEY}", e.key_prefix);
    if request.header(e.key_header) != Some(auth.as_str()) {
        problems.push(format!("no {} header with the key", e.key_header));
    }
    let places = request.places_of(KEY);
    if places != [e.key_header] {
        problems.push(format!("the key went to {places:?}"));
    }
    for (name, value) in e.headers {
        if request.header(name) != Some(value) {
            problems.push(format!("header {name} is {:?}", request.header(name)));
        }
    }
    (!problems.is_empty()).then(|| format!("{provider:?}: {}", problems.join("; ")))
}

/// Runs every scenario against one provider's probe and fails with the
/// names of every case that went wrong.
async fn every_answer(provider: StubProvider) {
    let stub = ProviderStub::start().await.unwrap();
    let client = client();
    let probe = probe_for(provider, &client, &stub);
    let e = expect(provider);
    let key = SecretString::from(KEY);
    let mut failures = Vec::new();
    for scenario in Scenario::ALL {
        stub.clear_requests();
        stub.set_answer(answer(provider, scenario));
        match probe.check(&key).await {
            Ok(check) => {
                failures.extend(verdict(provider, scenario, &check, &e));
                if format!("{check:?}").contains(KEY) {
                    failures.push(format!(
                        "{provider:?} × {scenario:?}: the key is in the result"
                    ));
                }
            }
            Err(err) => failures.push(format!("{provider:?} × {scenario:?}: error {err}")),
        }
        failures.extend(request_problems(provider, &stub.requests(), &e));
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

#[tokio::test]
async fn openai() {
    every_answer(StubProvider::OpenAi).await;
}

#[tokio::test]
async fn anthropic() {
    every_answer(StubProvider::Anthropic).await;
}

#[tokio::test]
async fn gemini() {
    every_answer(StubProvider::Gemini).await;
}

#[tokio::test]
async fn mistral() {
    every_answer(StubProvider::Mistral).await;
}

#[tokio::test]
async fn groq() {
    every_answer(StubProvider::Groq).await;
}

#[tokio::test]
async fn openrouter() {
    every_answer(StubProvider::OpenRouter).await;
}

#[tokio::test]
async fn deepseek() {
    every_answer(StubProvider::DeepSeek).await;
}

#[tokio::test]
async fn xai() {
    every_answer(StubProvider::Xai).await;
}

#[tokio::test]
async fn cohere() {
    every_answer(StubProvider::Cohere).await;
}

#[tokio::test]
async fn azure_openai() {
    every_answer(StubProvider::AzureOpenAi).await;
}

#[tokio::test]
async fn openai_compatible() {
    every_answer(StubProvider::OpenAiCompatible).await;
}

#[test]
fn every_stub_provider_has_a_test() {
    // The list above must grow with the stub's providers.
    assert_eq!(StubProvider::ALL.len(), 11);
}
