//! What `set_key` does with the whitespace and the blanks users paste.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;

use byok::error::{Field, Problem};
use byok::secrecy::ExposeSecret;
use byok::{Byok, ByokConfig, ByokError, Keyring, MasterKey, MemoryStorage, Ttl};

fn manager() -> Byok {
    let config = ByokConfig::for_tests();
    Byok::new(
        Arc::new(MemoryStorage::new()),
        Keyring::new(1, MasterKey::generate()),
        config,
    )
    .unwrap()
}

fn problem(result: byok::Result<()>) -> Problem {
    match result {
        Err(ByokError::InvalidInput(e)) => {
            assert_eq!(e.field, Field::ApiKey, "{e}");
            e.problem
        }
        other => panic!("expected an InvalidInput error for the API key, got {other:?}"),
    }
}

#[tokio::test]
async fn blank_keys_are_rejected_and_nothing_is_stored() {
    let byok = manager();
    for blank in [
        " ",
        "   ",
        "\n",
        "\t \r\n",
        "\u{a0}",
        "\u{3000}\u{2003}\u{2028}",
    ] {
        let result = byok.set_key("u", "openai", blank, Ttl::Default).await;
        assert_eq!(problem(result), Problem::Blank, "{blank:?}");
        assert!(!byok.has_key("u", "openai").await.unwrap(), "{blank:?}");
    }
    assert_eq!(
        problem(byok.set_key("u", "openai", "", Ttl::Default).await),
        Problem::Empty
    );
    assert!(byok.list_providers("u").await.unwrap().is_empty());
}

#[tokio::test]
async fn surrounding_whitespace_is_trimmed() {
    let byok = manager();
    let pasted = "  sk-proj-0123456789abcdef\r\n";
    byok.set_key("u", "openai", pasted, Ttl::Default)
        .await
        .unwrap();
    let got = byok.require_key("u", "openai").await.unwrap();
    assert_eq!(got.expose_secret(), "sk-proj-0123456789abcdef");
    let summary = byok.key_summary("u").await.unwrap();
    assert_eq!(
        summary[0].hint, "sk-p...cdef",
        "the hint masks the trimmed key"
    );

    byok.set_key(
        "u",
        "groq",
        "\u{3000}gsk_ inner space kept\u{a0}",
        Ttl::Default,
    )
    .await
    .unwrap();
    let got = byok.require_key("u", "groq").await.unwrap();
    assert_eq!(got.expose_secret(), "gsk_ inner space kept");
}

#[tokio::test]
async fn interior_control_characters_are_rejected_without_echo() {
    let byok = manager();
    for (bad, at) in [
        ("sk-canary\u{0}tail", 9),
        ("  sk-canary\nline-two", 11),
        ("sk-canary\u{1b}[31m", 9),
        ("sk-canary\u{7f}", 9),
    ] {
        let err = byok
            .set_key("u", "openai", bad, Ttl::Default)
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert_eq!(
            problem(Err(err)),
            Problem::ControlCharacter { at },
            "{bad:?}"
        );
    }
    assert!(!byok.has_key("u", "openai").await.unwrap());
}
