//! `byok import-python` on a database written by the Python library
//! cjm-fasthtml-byok 0.0.3 (byok-sql's `tests/data`, made by
//! `scripts/python-fixture.py`).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use std::path::{Path, PathBuf};

use common::{Env, rt};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../byok-sql/tests/data")
        .join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data("python-0.0.3.expected.json")).unwrap())
        .unwrap()
}

/// The fixture copied into the directory, and the secret in a file there.
fn setup(env: &Env) -> (String, String) {
    let src = env.path().join("python.sqlite3");
    std::fs::copy(data("python-0.0.3.sqlite3"), &src).unwrap();
    let secret = env.path().join("secret.txt");
    let text = format!("{}\n", expected()["secret"].as_str().unwrap());
    std::fs::write(&secret, text).unwrap();
    (
        format!("sqlite://{}", src.display()),
        secret.display().to_string(),
    )
}

fn assert_no_key_material(run: &common::Run) {
    for row in expected()["rows"].as_array().unwrap() {
        if let Some(key) = row["key"].as_str() {
            assert!(
                !run.stdout.contains(key) && !run.stderr.contains(key),
                "key material in output: {run:?}"
            );
        }
    }
    let secret = expected()["secret"].as_str().unwrap().to_owned();
    assert!(!run.stdout.contains(&secret) && !run.stderr.contains(&secret));
}

#[test]
fn every_row_is_accounted_for_and_the_source_is_only_read() {
    let env = Env::new();
    let (from, secret) = setup(&env);
    let src = env.path().join("python.sqlite3");
    let before = std::fs::read(&src).unwrap();
    let store = env.sqlite("keys.db");
    let args = [
        "--store",
        &store,
        "--json",
        "import-python",
        "--from",
        &from,
        "--secret-file",
        &secret,
        "--utc-offset",
        "+00:00",
    ];
    let out = env.run_k(&args, "");
    assert_eq!(out.code, 1, "rows that fail make exit 1: {out:?}");
    assert!(
        out.stderr.contains("3 row(s) could not be converted"),
        "{out:?}"
    );
    assert_no_key_material(&out);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let want = expected();
    let want = want["rows"].as_array().unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(report["read"], want.len());
    assert_eq!(rows.len(), want.len());
    for (got, want) in rows.iter().zip(want) {
        assert_eq!(got["id"], want["id"], "{got}");
        assert_eq!(got["outcome"], want["outcome"], "{got}");
    }
    assert_eq!(
        (&report["converted"], &report["failed"], &report["skipped"]),
        (&7.into(), &3.into(), &1.into())
    );
    assert_eq!(std::fs::read(&src).unwrap(), before, "the source changed");

    // The converted keys decrypt under the keyring.
    rt().block_on(async {
        use byok::secrecy::ExposeSecret as _;
        let config = common::config("user_api_keys");
        let storage = byok::open_with(&store, &config).await.unwrap();
        let byok = byok::Byok::builder(storage, env.ring())
            .config(config)
            .build()
            .unwrap();
        for row in want.iter().filter(|r| r["outcome"] == "converted") {
            let (user, provider) = (
                row["user_id"].as_str().unwrap(),
                row["provider"].as_str().unwrap(),
            );
            let key = byok.require_key(user, provider).await.unwrap();
            assert_eq!(key.expose_secret(), row["key"].as_str().unwrap());
        }
    });

    // Again: nothing new, every converted row skipped, still no key shown.
    let again = env.run_k(&args, "");
    let again_report: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again_report["converted"], 0);
    assert_eq!(again_report["skipped"], 8);
    let text = env.run_k(&args[..2].iter().chain(&args[3..]).collect::<Vec<_>>(), "");
    assert!(text.stdout.contains("FAILED"), "{text:?}");
    assert!(
        text.stdout.contains("does not decrypt with this secret"),
        "{text:?}"
    );
    assert_no_key_material(&text);
}

#[test]
fn a_dry_run_reads_the_secret_from_stdin_and_writes_nothing() {
    let env = Env::new();
    let (from, _) = setup(&env);
    let store = env.path().join("keys.db");
    let store_url = env.sqlite("keys.db");
    let secret = format!("{}\n", expected()["secret"].as_str().unwrap());
    let out = env.run_k(
        &[
            "--store",
            &store_url,
            "--json",
            "import-python",
            "--from",
            &from,
            "--secret-file",
            "-",
            "--utc-offset",
            "Z",
            "--dry-run",
        ],
        &secret,
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["converted"], 7, "{out:?}");
    assert!(!store.exists(), "a dry run created the store");
}

#[test]
fn a_wrong_secret_fails_every_row_and_a_missing_source_creates_nothing() {
    let env = Env::new();
    let (from, _) = setup(&env);
    let store_url = env.sqlite("keys.db");
    let mut cmd = env.command(&[
        "--store",
        &store_url,
        "--json",
        "import-python",
        "--from",
        &from,
    ]);
    cmd.env("BYOK_KEYRING_FILE", &env.keyring)
        .env("BYOK_PYTHON_SECRET", "not the application's secret");
    let out = env.run_cmd(cmd, "");
    assert_eq!(out.code, 1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (&report["converted"], &report["failed"]),
        (&0.into(), &10.into())
    );
    let stats = env
        .run(&["--store", &store_url, "--json", "stats"], "")
        .json();
    assert_eq!(stats["keys"], 0);

    let missing = env.sqlite("missing.sqlite3");
    let out = env.run_k(
        &[
            "--store",
            &env.sqlite("other.db"),
            "import-python",
            "--from",
            &missing,
            "--secret-file",
            "-",
        ],
        "s\n",
    );
    assert_eq!(out.code, 4, "{out:?}");
    assert!(!env.path().join("missing.sqlite3").exists());
    assert!(!env.path().join("other.db").exists());
}
