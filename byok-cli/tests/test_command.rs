//! `byok test` against the stub provider: what it prints, with and without
//! --json, and its exit code for each result.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use byok_testkit::provider_stub::{ProviderStub, Scenario, StubAnswer, StubProvider, answer};
use common::{Env, rt};

const KEY: &str = "sk-proj-canary-0a1b2c3d4e5f6a7b";

/// A SQLite store holding alice's OpenAI key, and a stub to ask.
fn setup(env: &Env) -> (String, tokio::runtime::Runtime, ProviderStub) {
    let url = env.sqlite("keys.db");
    env.run_k(
        &[
            "--store",
            &url,
            "set",
            "openai",
            "--user",
            "alice",
            "--no-expiry",
        ],
        KEY,
    )
    .ok();
    let runtime = rt();
    let stub = runtime.block_on(ProviderStub::start()).unwrap();
    (url, runtime, stub)
}

fn test_args<'a>(url: &'a str, base: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--store",
        url,
        "test",
        "openai",
        "--user",
        "alice",
        "--base-url",
        base,
        "--allow-http",
        "--allow-private-addresses",
        "--timeout",
        "1s",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn exit_codes_follow_the_result() {
    let env = Env::new();
    let (url, _runtime, stub) = setup(&env);
    let base = format!("{}/v1", stub.url());
    for (scenario, code, outcome) in [
        (Scenario::Valid, 0, "valid"),
        (Scenario::InvalidKey, 10, "invalid"),
        (Scenario::NoCredit, 11, "out_of_credit"),
        (Scenario::RateLimited, 12, "rate_limited"),
        (Scenario::RegionBlocked, 13, "region_blocked"),
        (Scenario::ServerError, 15, "unavailable"),
        (Scenario::Slow, 15, "unavailable"),
    ] {
        stub.set_answer(answer(StubProvider::OpenAi, scenario));
        let run = env.run_k(&test_args(&url, &base, &[]), "");
        assert_eq!(run.code, code, "{scenario:?}: {run:?}");
        assert!(
            run.stdout
                .starts_with(&format!("alice openai: {outcome} (")),
            "{scenario:?}: {run:?}"
        );
        assert!(
            !run.stdout.contains(KEY) && !run.stderr.contains(KEY),
            "{run:?}"
        );
    }
    // Answers no scenario makes: a bare 403, a 404.
    for (status, code, outcome) in [(403, 14, "forbidden"), (404, 16, "unknown")] {
        stub.set_answer(StubAnswer::json(status, "{}"));
        let run = env.run_k(&test_args(&url, &base, &[]), "");
        assert_eq!(run.code, code, "{status}: {run:?}");
        assert!(
            run.stdout
                .starts_with(&format!("alice openai: {outcome} (")),
            "{status}: {run:?}"
        );
        assert!(
            !run.stdout.contains(KEY) && !run.stderr.contains(KEY),
            "{run:?}"
        );
    }
    // Every request carried alice's key in the Authorization header only.
    for request in stub.requests() {
        assert_eq!(request.path, "/v1/models");
        assert_eq!(request.places_of(KEY), ["authorization"]);
    }
}

#[test]
fn json_reports_what_the_provider_told() {
    let env = Env::new();
    let (url, _runtime, stub) = setup(&env);
    let base = format!("{}/v1", stub.url());
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
    let run = env.run_k(
        &[&["--json"][..], &test_args(&url, &base, &[])].concat(),
        "",
    );
    let json = run.json();
    assert_eq!(json["outcome"], "valid");
    assert_eq!(json["user"], "alice");
    assert_eq!(json["check"]["models"][0], "gpt-4o-mini");

    stub.set_answer(answer(StubProvider::OpenAi, Scenario::RateLimited));
    let run = env.run_k(
        &[&["--json"][..], &test_args(&url, &base, &[])].concat(),
        "",
    );
    assert_eq!(run.code, 12, "{run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["check"]["retry_after"], 20.0);
}

#[test]
fn all_checks_every_key_and_skips_unknown_providers() {
    let env = Env::new();
    let (url, _runtime, stub) = setup(&env);
    env.run_k(
        &[
            "--store",
            &url,
            "set",
            "in-house",
            "--user",
            "bob",
            "--no-expiry",
        ],
        "x-123",
    )
    .ok();
    // Only bob's keys: a provider byok has no check of, so nothing is
    // asked of any network and the run succeeds, saying it skipped it.
    let run = env.run_k(
        &["--store", &url, "--json", "test", "--all", "--user", "bob"],
        "",
    );
    let json = run.json();
    assert_eq!(json[0]["provider"], "in-house");
    assert_eq!(json[0]["outcome"], "skipped");
    assert!(stub.requests().is_empty());
}

#[test]
fn bad_input_is_refused_before_asking() {
    let env = Env::new();
    let (url, _runtime, stub) = setup(&env);
    let base = format!("{}/v1", stub.url());
    // Plain http without --allow-http.
    let run = env.run_k(
        &[
            "--store",
            &url,
            "test",
            "openai",
            "--user",
            "alice",
            "--base-url",
            &base,
        ],
        "",
    );
    assert!(run.fails(2).contains("plain http"), "{run:?}");
    // No such key.
    let carol: Vec<&str> = test_args(&url, &base, &[])
        .into_iter()
        .map(|a| if a == "alice" { "carol" } else { a })
        .collect();
    env.run_k(&carol, "").fails(6);
    // Neither a provider nor --all.
    env.run_k(&["--store", &url, "test", "--user", "alice"], "")
        .fails(2);
    assert!(stub.requests().is_empty());
}

#[test]
fn help_documents_the_exit_codes() {
    let env = Env::new();
    let text = env.run(&["--help"], "").ok().to_owned();
    for word in ["test", "10 invalid key", "15 provider unreachable"] {
        assert!(text.contains(word), "{word} missing from --help:\n{text}");
    }
}

#[test]
fn list_has_a_last_check_column_and_json_field() {
    let env = Env::new();
    let (url, _runtime, stub) = setup(&env);
    let run = env.run(&["--store", &url, "list"], "");
    let text = run.ok();
    assert!(text.contains("last check"), "{text}");
    assert!(text.contains("not checked"), "{text}");
    let run = env.run(&["--store", &url, "--json", "list"], "");
    let json = run.json();
    let row = &json[0];
    assert_eq!(row["provider"], "openai", "{json}");
    assert!(
        row.as_object()
            .is_some_and(|o| o.contains_key("last_check")),
        "{json}"
    );
    assert!(row["last_check"].is_null(), "never checked: {json}");
    // A test of the saved key keeps its result with the key.
    let base = format!("{}/v1", stub.url());
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
    let run = env.run_k(&test_args(&url, &base, &[]), "");
    assert_eq!(run.code, 10, "{run:?}");
    assert!(!run.stderr.contains("not kept"), "{run:?}");
    let run = env.run(&["--store", &url, "--json", "list"], "");
    let json = run.json();
    let kept = &json[0]["last_check"];
    assert_eq!(kept["outcome"], "invalid", "the kept check: {json}");
    assert!(!run.stdout.contains(KEY), "{run:?}");
    let run = env.run(&["--store", &url, "list"], "");
    let text = run.ok();
    assert!(text.contains("invalid ("), "{text}");
}
