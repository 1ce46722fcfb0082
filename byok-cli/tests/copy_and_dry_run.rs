//! `copy` never reverts a target key, checks keys against the keyring
//! before it writes; `--dry-run` writes nothing; `--yes` guards `clear` and
//! `copy --on-conflict overwrite`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use byok::secrecy::ExposeSecret as _;
use byok::{Byok, Keyring, MasterKey};
use common::{Env, rt};

const NEW: &str = "sk-new-key-set-in-the-target-0042";

/// The plaintext of (user, openai) in the SQLite store at `url`.
fn key_in(url: &str, ring: Keyring, user: &str) -> Option<String> {
    rt().block_on(async {
        let config = common::config("user_api_keys");
        let store = byok::open_with(url, &config).await.unwrap();
        let byok = Byok::builder(store, ring).config(config).build().unwrap();
        byok.get_key(user, "openai")
            .await
            .unwrap()
            .map(|k| k.expose_secret().to_owned())
    })
}

fn live_keys(env: &Env, url: &str) -> u64 {
    let stats = env.run(&["--store", url, "--json", "stats"], "").json();
    stats["keys"].as_u64().unwrap()
}

/// A source of three keys copied into a target, where user c-0001 then
/// set a new key.
fn copied_then_changed(env: &Env) -> (String, String) {
    let from = env.sqlite("from.db");
    let to = env.sqlite("to.db");
    rt().block_on(common::seed(&from, "user_api_keys", env.ring(), "c", 3));
    env.run(&["--store", &from, "copy", "--to", &to], "").ok();
    env.run_k(
        &[
            "--store",
            &to,
            "set",
            "openai",
            "--user",
            "c-0001",
            "--no-expiry",
        ],
        &format!("{NEW}\n"),
    )
    .ok();
    (from, to)
}

#[test]
fn a_rerun_keeps_a_key_the_user_changed_in_the_target() {
    let env = Env::new();
    let (from, to) = copied_then_changed(&env);
    let out = env.run(&["--store", &from, "--json", "copy", "--to", &to], "");
    assert_eq!(out.code, 1, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["identical"], 2, "{report}");
    assert_eq!(report["copied"], 0);
    assert_eq!(report["kept"], 1);
    assert_eq!(report["verified"], false);
    let conflict = &report["conflicts"][0];
    assert_eq!(conflict["user_id"], "c-0001");
    assert_eq!(conflict["source_key_id"], 1);
    assert_eq!(conflict["target_key_id"], 1);
    assert_eq!(conflict["resolution"], "kept-target");
    assert!(out.stderr.contains("were kept"), "{out:?}");
    assert_eq!(key_in(&to, env.ring(), "c-0001").as_deref(), Some(NEW));
    // In text too: the conflict is listed, with no key material.
    let text = env.run(&["--store", &from, "copy", "--to", &to], "");
    assert_eq!(text.code, 1);
    assert!(text.stdout.contains("conflict c-0001 openai"), "{text:?}");
    assert!(!text.stdout.contains(NEW) && !text.stderr.contains(NEW));
}

#[test]
fn newer_keeps_the_later_key_and_overwrite_needs_yes() {
    let env = Env::new();
    let (from, to) = copied_then_changed(&env);
    let newer = env.run(
        &[
            "--store",
            &from,
            "--json",
            "copy",
            "--to",
            &to,
            "--on-conflict",
            "newer",
        ],
        "",
    );
    assert_eq!(newer.json()["kept"], 1);
    assert_eq!(key_in(&to, env.ring(), "c-0001").as_deref(), Some(NEW));

    let overwrite = [
        "--store",
        &from,
        "copy",
        "--to",
        &to,
        "--on-conflict",
        "overwrite",
    ];
    // Standard input is a pipe: no one to ask, so no --yes means no.
    let refused = env.run(&overwrite, "yes\n");
    assert!(refused.fails(2).contains("--yes"), "{refused:?}");
    assert_eq!(key_in(&to, env.ring(), "c-0001").as_deref(), Some(NEW));

    let mut yes = overwrite.to_vec();
    yes.push("--yes");
    env.run(&yes, "").ok();
    assert_eq!(
        key_in(&to, env.ring(), "c-0001"),
        Some(common::plaintext(1))
    );
}

#[test]
fn a_dry_run_copy_writes_nothing() {
    let env = Env::new();
    let (from, to) = copied_then_changed(&env);
    rt().block_on(common::seed(&from, "user_api_keys", env.ring(), "d", 2));
    let out = env.run(
        &[
            "--store",
            &from,
            "--json",
            "copy",
            "--to",
            &to,
            "--dry-run",
            "--on-conflict",
            "overwrite",
        ],
        "",
    );
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["copied"], 2, "{report}");
    assert_eq!(report["replaced"], 1);
    assert_eq!(key_in(&to, env.ring(), "c-0001").as_deref(), Some(NEW));
    assert_eq!(live_keys(&env, &to), 3);
    // A target that does not exist yet is not created.
    let fresh = env.path().join("fresh.db");
    let fresh_url = env.sqlite("fresh.db");
    let dry = env.run(
        &[
            "--store",
            &from,
            "--json",
            "copy",
            "--to",
            &fresh_url,
            "--dry-run",
        ],
        "",
    );
    assert_eq!(dry.json()["copied"], 5);
    assert!(!fresh.exists());
}

#[test]
fn a_source_that_cannot_be_read_leaves_no_target() {
    let env = Env::new();
    // A file that is not a byok store: opening works, reading does not.
    std::fs::write(env.path().join("empty.db"), b"").unwrap();
    let to = env.path().join("to.db");
    let out = env.run(
        &[
            "--store",
            &env.sqlite("empty.db"),
            "copy",
            "--to",
            &env.sqlite("to.db"),
        ],
        "",
    );
    assert_eq!(out.code, 4, "{out:?}");
    assert!(!to.exists(), "an empty target was created");
}

#[test]
fn a_target_under_an_unknown_master_key_stops_the_copy_before_any_write() {
    let env = Env::new();
    let from = env.sqlite("from.db");
    let to = env.sqlite("to.db");
    rt().block_on(common::seed(&from, "user_api_keys", env.ring(), "c", 3));
    let other = Keyring::new(7, MasterKey::generate());
    rt().block_on(common::seed(&to, "user_api_keys", other, "t", 1));
    let out = env.run_k(&["--store", &from, "copy", "--to", &to], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("master key id 7 (not in the keyring): 1"),
        "{out:?}"
    );
    assert!(out.stderr.contains("nothing was written"), "{out:?}");
    assert_eq!(live_keys(&env, &to), 1);
    // Without the unknown key, the same copy checks every key and succeeds.
    let to2 = env.sqlite("to2.db");
    let ok = env.run_k(&["--store", &from, "--json", "copy", "--to", &to2], "");
    assert_eq!(ok.json()["verified"], true);
}

#[test]
fn a_dry_run_rotation_writes_neither_keys_nor_state() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    rt().block_on(common::seed(&store, "user_api_keys", env.ring(), "r", 5));
    let p = env.keyring.display().to_string();
    env.run(&["keygen", "--add-to", &p, "--primary"], "").ok();
    let plan = env
        .run_k(
            &[
                "--store",
                &store,
                "--json",
                "rotate",
                "--dry-run",
                "--page-size",
                "2",
            ],
            "",
        )
        .json();
    assert_eq!(
        plan["would_rotate"],
        serde_json::json!({ "1": 5 }),
        "{plan}"
    );
    assert_eq!(plan["primary_key_id"], 2);
    let stats = env.run(&["--store", &store, "--json", "stats"], "").json();
    assert_eq!(stats["by_key_id"], serde_json::json!({ "1": 5 }));
    let state_files = std::fs::read_dir(env.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().contains("rotate")
        })
        .count();
    assert_eq!(state_files, 0);
}

#[test]
fn a_dry_run_purge_deletes_nothing() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    env.run_k(
        &[
            "--store", &store, "set", "openai", "--user", "u", "--ttl", "1ms",
        ],
        "sk-expiring-0123456789",
    )
    .ok();
    let mut plan = serde_json::Value::Null;
    for _ in 0..500 {
        plan = env
            .run(&["--store", &store, "--json", "purge", "--dry-run"], "")
            .json();
        if plan["would_purge"] == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(plan["would_purge"], 1, "{plan}");
    let stats = env.run(&["--store", &store, "--json", "stats"], "").json();
    assert_eq!(stats["expired_not_purged"], 1);
    assert_eq!(
        env.run(&["--store", &store, "--json", "purge"], "").json()["purged"],
        1
    );
}

#[test]
fn clear_without_a_terminal_needs_yes() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    rt().block_on(common::seed(&store, "user_api_keys", env.ring(), "u", 1));
    let refused = env.run(&["--store", &store, "clear", "--user", "u-0000"], "yes\n");
    assert!(refused.fails(2).contains("--yes"), "{refused:?}");
    assert_eq!(live_keys(&env, &store), 1);
    let done = env
        .run(
            &[
                "--store", &store, "--json", "clear", "--user", "u-0000", "-y",
            ],
            "",
        )
        .json();
    assert_eq!(done["removed"], 1);
}

#[test]
fn clear_on_a_terminal_asks_and_only_yes_goes_on() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    rt().block_on(common::seed(&store, "user_api_keys", env.ring(), "u", 1));
    // util-linux `script` runs the command on a pseudo-terminal.
    let on_a_terminal = |answer: &str| {
        let line = format!(
            "'{}' --store '{store}' clear --user u-0000",
            env!("CARGO_BIN_EXE_byok")
        );
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .current_dir(env.path());
        for var in [
            "BYOK_TABLE",
            "BYOK_PREFIX",
            "BYOK_KEYRING",
            "BYOK_KEYRING_FILE",
        ] {
            cmd.env_remove(var);
        }
        env.run_cmd(cmd, answer)
    };
    let no = on_a_terminal("no\n");
    assert_eq!(no.code, 1, "{no:?}");
    assert!(no.stdout.contains("Type `yes` to go on"), "{no:?}");
    assert_eq!(live_keys(&env, &store), 1);
    let yes = on_a_terminal("yes\n");
    assert_eq!(yes.code, 0, "{yes:?}");
    assert!(yes.stdout.contains("removed 1 key(s)"), "{yes:?}");
    assert_eq!(live_keys(&env, &store), 0);
}
