//! Every subcommand of the built binary against SQLite files, including
//! bad input.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use common::{Env, rt};

const KEY: &str = "sk-proj-canary-7d1e0c9b8a7f6e5d";

/// Every output of a run, to check that no key material leaked into it.
fn assert_no_key(run: &common::Run) {
    assert!(
        !run.stdout.contains(KEY) && !run.stderr.contains(KEY),
        "key material in output: {run:?}"
    );
}

#[test]
fn help_lists_commands_examples_and_exit_codes() {
    let env = Env::new();
    let out = env.run(&["--help"], "");
    let text = out.ok();
    for word in [
        "keygen",
        "rotate",
        "copy",
        "check",
        "Examples:",
        "Exit codes:",
    ] {
        assert!(text.contains(word), "{word} missing from --help:\n{text}");
    }
    env.run(&["frobnicate"], "").fails(2);
}

#[test]
fn keygen_prints_an_entry_the_keyring_reads() {
    let env = Env::new();
    let out = env.run(&["keygen", "--id", "7"], "");
    let entry = out.ok().trim_end();
    let (id, key) = entry.split_once(':').unwrap();
    assert_eq!(id, "7");
    assert_eq!(key.len(), 44, "{entry}");
    assert_eq!(byok::Keyring::from_text(entry).unwrap().primary_id(), 7);
    // Two runs make two different keys.
    assert_ne!(env.run(&["keygen", "--id", "7"], "").ok().trim_end(), entry);
}

#[test]
fn keygen_out_writes_mode_0600_and_refuses_to_overwrite() {
    let env = Env::new();
    let path = env.path().join("new.txt");
    let p = path.display().to_string();
    env.run(&["keygen", "--out", &p], "").ok();
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(byok::Keyring::from_text(&first).unwrap().primary_id(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let err = env.run(&["keygen", "--out", &p], "");
    assert!(err.fails(2).contains("already exists"), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
}

#[test]
fn keygen_add_to_keeps_the_primary_unless_asked() {
    let env = Env::new();
    let p = env.keyring.display().to_string();
    env.run(&["keygen", "--add-to", &p], "").ok();
    let ring = env.ring();
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(ring.primary_id(), 1, "a larger id must not become primary");
    let out = env.run(&["--json", "keygen", "--add-to", &p, "--primary"], "");
    assert_eq!(out.json()["key_id"], 3);
    let ring = env.ring();
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(ring.primary_id(), 3);
    let taken = env.run(&["keygen", "--add-to", &p, "--id", "2"], "");
    assert!(taken.fails(2).contains("already in"), "{taken:?}");
}

#[test]
fn set_get_list_rm_clear_purge_round_trip() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let with = |args: &[&'static str]| -> Vec<String> {
        ["--store", store.as_str()]
            .iter()
            .chain(args)
            .map(|a| (*a).to_owned())
            .collect()
    };

    let out = env.run(&with(&["migrate"]), "");
    assert!(out.ok().contains("up to date"));
    let set = env.run_k(
        &with(&["set", "openai", "--user", "alice"]),
        &format!("{KEY}\n"),
    );
    assert!(set.ok().contains("sk-p...6e5d"), "{set:?}");
    assert_no_key(&set);
    env.run_k(
        &with(&["set", "anthropic", "--user", "alice", "--ttl", "30d"]),
        "sk-ant-other-key-0000111122223333",
    )
    .ok();
    env.run_k(
        &with(&["set", "openai", "--user", "bob", "--no-expiry"]),
        "sk-bob-key-44445555666677778888\r\n",
    )
    .ok();

    let get = env.run_k(&with(&["get", "openai", "--user", "alice"]), "");
    assert!(get.ok().contains("sk-p...6e5d"), "{get:?}");
    assert_no_key(&get);
    let reveal = env.run_k(&with(&["get", "openai", "--user", "alice", "--reveal"]), "");
    assert_eq!(
        reveal.ok(),
        format!("{KEY}\n"),
        "the trailing newline is not part of the key"
    );
    let bob = env.run_k(
        &with(&["--json", "get", "openai", "--user", "bob", "--reveal"]),
        "",
    );
    assert_eq!(bob.json()["key"], "sk-bob-key-44445555666677778888");
    let missing = env.run_k(&with(&["get", "groq", "--user", "alice"]), "");
    assert!(missing.fails(6).contains("groq"), "{missing:?}");

    let list = env.run(&with(&["list"]), "");
    assert_no_key(&list);
    let text = list.ok();
    assert!(
        text.contains("alice") && text.contains("bob") && text.contains("3 key(s)"),
        "{text}"
    );
    let rows = env
        .run(&with(&["--json", "list", "--page-size", "1"]), "")
        .json();
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        3,
        "paging must not lose or repeat keys: {rows:?}"
    );
    assert!(rows.iter().all(|r| r["key_id"] == 1));
    let alice = env
        .run(&with(&["--json", "list", "--user", "alice"]), "")
        .json();
    let providers: Vec<&str> = alice
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["anthropic", "openai"]);
    let never = &rows.iter().find(|r| r["user"] == "bob").unwrap()["expires_at"];
    assert!(never.is_null(), "{never}");

    let stats = env.run(&with(&["--json", "stats"]), "").json();
    assert_eq!(stats["keys"], 3);
    assert_eq!(stats["schema"]["status"], "up_to_date", "{stats}");
    assert_eq!(stats["expired_not_purged"], 0, "{stats}");
    assert_eq!(stats["by_key_id"]["1"], 3);
    assert_eq!(stats["by_provider"]["openai"], 2);

    let rm = env.run(&with(&["rm", "openai", "--user", "alice"]), "");
    assert!(rm.ok().contains("removed"));
    env.run(&with(&["rm", "openai", "--user", "alice"]), "")
        .fails(6);
    let clear = env
        .run(&with(&["--json", "clear", "--user", "alice", "--yes"]), "")
        .json();
    assert_eq!(clear["removed"], 1);
    let purge = env.run(&with(&["--json", "purge"]), "").json();
    assert_eq!(purge["purged"], 0);
    assert!(
        env.run(&with(&["purge"]), "")
            .ok()
            .contains("purged 0 expired")
    );
    let left = env.run(&with(&["--json", "list"]), "").json();
    assert_eq!(left.as_array().unwrap().len(), 1);
}

#[test]
fn migrate_check_says_where_the_schema_stands_and_writes_nothing() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let before = env.run(&["--store", &store, "migrate", "--check"], "");
    assert!(before.fails(1).contains("run `byok migrate`"), "{before:?}");
    assert!(
        !env.path().join("keys.db").exists(),
        "--check creates nothing"
    );
    let list = env.run(&["--store", &store, "list"], "");
    assert!(list.fails(4).contains("byok migrate"), "{list:?}");
    env.run(&["--store", &store, "migrate"], "").ok();
    let after = env
        .run(&["--store", &store, "--json", "migrate", "--check"], "")
        .json();
    assert_eq!(after["schema"]["status"], "up_to_date", "{after}");
    // Another table of the same database has no schema yet.
    let other = env.run(&["--store", &store, "--table", "other_keys", "list"], "");
    let err = other.fails(4);
    assert!(
        err.contains("in the table other_keys") && err.contains("byok migrate"),
        "{err}"
    );
}

#[test]
fn purge_counts_expired_keys() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    env.run_k(
        &[
            "--store", &store, "set", "openai", "--user", "u", "--ttl", "1ms",
        ],
        KEY,
    )
    .ok();
    env.run_k(&["--store", &store, "set", "groq", "--user", "u"], KEY)
        .ok();
    // Wait for the expiry without asserting on time: poll until it shows.
    let mut stats = serde_json::Value::Null;
    for _ in 0..500 {
        stats = env.run(&["--store", &store, "--json", "stats"], "").json();
        if stats["expired_not_purged"] == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(stats["expired_not_purged"], 1, "{stats}");
    assert_eq!(stats["keys"], 1);
    let purge = env.run(&["--store", &store, "--json", "purge"], "").json();
    assert_eq!(purge["purged"], 1);
}

#[test]
fn an_empty_key_on_stdin_is_refused() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    for stdin in ["", "\n", "\r\n"] {
        let out = env.run_k(&["--store", &store, "set", "openai", "--user", "u"], stdin);
        assert!(out.fails(2).contains("no key on standard input"), "{out:?}");
    }
    env.run(&["--store", &store, "migrate"], "").ok();
    let rows = env.run(&["--store", &store, "--json", "list"], "").json();
    assert!(rows.as_array().unwrap().is_empty());
}

#[test]
fn no_keyring_is_a_configuration_error() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    for args in [
        &["--store", store.as_str(), "set", "openai", "--user", "u"][..],
        &["--store", store.as_str(), "verify"][..],
        &["--store", store.as_str(), "rotate"][..],
    ] {
        let out = env.run(args, KEY);
        let err = out.fails(3);
        assert!(
            err.contains("BYOK_KEYRING") && err.contains("byok keygen"),
            "{out:?}"
        );
        assert_no_key(&out);
    }
    let bad = env.path().join("bad.txt");
    std::fs::write(&bad, "1:not-a-key\n").unwrap();
    let out = env.run(
        &[
            "--store",
            &store,
            "--keyring",
            &bad.display().to_string(),
            "verify",
        ],
        "",
    );
    assert!(out.fails(3).contains("keyring"), "{out:?}");
    let mut cmd = env.command(&["--store", &store, "verify"]);
    cmd.env("BYOK_KEYRING", "garbage");
    let out = env.run_cmd(cmd, "");
    assert!(out.fails(3).contains("BYOK_KEYRING"), "{out:?}");
}

#[test]
fn a_wrong_master_key_fails_and_changes_nothing() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    env.run_k(&["--store", &store, "set", "openai", "--user", "u"], KEY)
        .ok();
    let wrong = env.run(&["keygen"], "").ok().trim_end().to_owned();
    let with_wrong = |args: &[&str]| {
        let mut cmd = env.command(&[&["--store", store.as_str()][..], args].concat());
        cmd.env("BYOK_KEYRING", &wrong);
        env.run_cmd(cmd, "")
    };
    let get = with_wrong(&["get", "openai", "--user", "u", "--reveal"]);
    assert!(get.fails(5).contains("master key id 1"), "{get:?}");
    assert_no_key(&get);
    let verify = with_wrong(&["verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(
        verify.stdout.contains("FAILED  u openai (master key id 1)"),
        "{verify:?}"
    );
    // A new primary key without the old one: rotation cannot read the key.
    let new_only = env
        .run(&["keygen", "--id", "2"], "")
        .ok()
        .trim_end()
        .to_owned();
    let mut cmd = env.command(&["--store", store.as_str(), "rotate"]);
    cmd.env("BYOK_KEYRING", &new_only);
    let rotate = env.run_cmd(cmd, "");
    assert_eq!(rotate.code, 1, "{rotate:?}");
    assert!(
        rotate
            .stdout
            .contains("master key id 1: 1 key(s) could not be decrypted"),
        "{rotate:?}"
    );
    // The right keyring still reads the key: nothing was changed.
    let right = env.run_k(
        &[
            "--store", &store, "get", "openai", "--user", "u", "--reveal",
        ],
        "",
    );
    assert_eq!(right.ok().trim_end(), KEY);
    env.run_k(&["--store", &store, "verify"], "").ok();
}

#[test]
fn an_unreachable_store_fails_with_its_password_redacted() {
    let env = Env::new();
    for url in [
        "postgres://app:hunter2@127.0.0.1:1/keys",
        "mysql://app:hunter2@127.0.0.1:1/keys",
        "redis://:hunter2@127.0.0.1:1",
    ] {
        let out = env.run(&["--store", url, "purge"], "");
        let err = out.fails(4);
        assert!(
            err.contains("check that the store is running"),
            "{url}: {out:?}"
        );
        assert!(err.contains("***"), "{url}: {out:?}");
        assert!(!err.contains("hunter2"), "{url}: {out:?}");
    }
    let missing = env.run(&["--store", &env.sqlite("missing.db"), "list"], "");
    assert!(missing.fails(4).contains("byok migrate"), "{missing:?}");
    assert!(
        !env.path().join("missing.db").exists(),
        "reading must not create a database"
    );
}

#[test]
fn a_malformed_url_is_bad_input() {
    let env = Env::new();
    for url in [
        "ftp://app:hunter2@host/x",
        "postgres://app:hunter2@[::1/x",
        "nonsense",
    ] {
        let out = env.run(&["--store", url, "list"], "");
        let err = out.fails(2);
        assert!(err.contains("cannot open the store"), "{url}: {out:?}");
        assert!(!err.contains("hunter2"), "{url}: {out:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let env2 = Env::new();
    let bad_ttl = env2.run_k(
        &[
            "--store",
            &env2.sqlite("k.db"),
            "set",
            "p",
            "--user",
            "u",
            "--ttl",
            "soon",
        ],
        KEY,
    );
    assert!(bad_ttl.fails(2).contains("--ttl"), "{bad_ttl:?}");
}

#[test]
fn rotate_moves_every_key_to_the_new_primary() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let users = rt().block_on(common::seed(&store, "user_api_keys", env.ring(), "r", 25));
    let p = env.keyring.display().to_string();
    env.run(&["keygen", "--add-to", &p, "--primary"], "").ok();
    let out = env.run_k(&["--store", &store, "rotate", "--page-size", "7"], "");
    let text = out.ok();
    assert!(
        text.contains("rotated 25 of 25 key(s) to master key id 2"),
        "{text}"
    );
    assert!(
        text.contains("master key id 1: can be removed from the keyring now"),
        "{text}"
    );
    let stats = env.run(&["--store", &store, "--json", "stats"], "").json();
    assert_eq!(stats["by_key_id"], serde_json::json!({ "2": 25 }));
    // Again: nothing left to do.
    let again = env
        .run_k(&["--store", &store, "--json", "rotate"], "")
        .json();
    assert_eq!(again["already_current"], 25);
    assert_eq!(again["complete"], true);
    // Key id 1 is no longer needed.
    let mut ring = env.ring();
    ring.remove(1).unwrap();
    rt().block_on(common::assert_all_keys(
        &store,
        "user_api_keys",
        ring,
        &users,
    ));
}

#[test]
fn verify_reports_by_key_id() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    rt().block_on(common::seed(&store, "user_api_keys", env.ring(), "v", 4));
    let out = env
        .run_k(&["--store", &store, "--json", "verify"], "")
        .json();
    assert_eq!(out["checked"], 4);
    assert_eq!(out["ok_by_key_id"]["1"], 4);
    assert!(out["failed"].as_array().unwrap().is_empty());
    let text = env.run_k(&["--store", &store, "verify"], "");
    assert!(text.ok().contains("verified 4 key(s): 0 failed"));
}

#[test]
fn copy_is_safe_to_rerun_and_verifies() {
    let env = Env::new();
    let from = env.sqlite("from.db");
    let to = env.sqlite("to.db");
    let users = rt().block_on(common::seed(&from, "user_api_keys", env.ring(), "c", 30));
    for _ in 0..2 {
        let out = env.run(
            &[
                "--store",
                &from,
                "--json",
                "copy",
                "--to",
                &to,
                "--page-size",
                "8",
                "--sample",
                "5",
            ],
            "",
        );
        let report = out.json();
        assert_eq!(
            report["copied"].as_u64().unwrap() + report["identical"].as_u64().unwrap(),
            30
        );
        assert_eq!(report["target_keys"], 30);
        assert_eq!(report["verified"], true);
    }
    rt().block_on(common::assert_all_keys(
        &to,
        "user_api_keys",
        env.ring(),
        &users,
    ));
    let text = env.run(&["--store", &from, "copy", "--to", &to], "");
    assert!(text.ok().contains("copied 0 key(s)"), "{text:?}");
    assert!(text.ok().contains("30 already identical"), "{text:?}");
}

#[test]
fn check_passes_on_sqlite_and_leaves_nothing_behind() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    env.run(&["--store", &store, "migrate"], "").ok();
    let out = env.run(&["check", &store], "");
    let text = out.ok();
    assert!(
        text.contains("ok      round_trip_preserves_every_field"),
        "{text}"
    );
    assert!(
        text.contains(" passed, 0 failed; scratch table byok_scratch_"),
        "{text}"
    );
    let tables = rt().block_on(async {
        use byok::byok_sql::sqlx;
        let pool = sqlx::SqlitePool::connect(&store).await.unwrap();
        let names: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&pool)
                .await
                .unwrap();
        names.into_iter().map(|(n,)| n).collect::<Vec<_>>()
    });
    assert_eq!(tables, ["user_api_keys"], "the scratch table must be gone");
}

#[test]
fn bench_reports_three_operations() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let out = env
        .run(&["--store", &store, "--json", "bench", "-n", "20"], "")
        .json();
    let ops: Vec<&str> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["set", "get", "list"]);
    assert!(
        out["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ops"] == 20 && r["p99_us"].as_u64() >= r["p50_us"].as_u64())
    );
    env.run(&["--store", &store, "bench", "-n", "0"], "")
        .fails(2);
}

#[test]
fn demo_runs_every_step() {
    let env = Env::new();
    let out = env.run(&["demo"], "");
    let text = out.ok();
    for step in [
        "[1]",
        "[3]",
        "[6]",
        "[9] clean up",
        "3 of 3 keys still decrypt",
        "0 key(s) in the store",
    ] {
        assert!(text.contains(step), "{step} missing:\n{text}");
    }
    assert!(
        !text.contains("sk-proj-demo-4f3a9c1e7b2d8a60"),
        "the demo must not print keys"
    );
}
