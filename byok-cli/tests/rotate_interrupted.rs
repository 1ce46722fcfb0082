//! A rotation killed halfway resumes from its saved cursor and ends with
//! every key under the new primary key.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Env, rt};

#[test]
fn a_killed_rotation_resumes_and_finishes() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let n = 300;
    let users = rt().block_on(common::seed(&store, "user_api_keys", env.ring(), "k", n));
    let p = env.keyring.display().to_string();
    env.run(&["keygen", "--add-to", &p, "--primary"], "").ok();
    let state = env.path().join("rotate-state.json");
    let state_arg = state.display().to_string();

    // Small pages with a pause between them, so that the process is
    // certainly mid-walk when it is killed.
    let mut cmd = env.command(&[
        "--store",
        &store,
        "rotate",
        "--state",
        &state_arg,
        "--page-size",
        "5",
        "--pause-ms",
        "50",
    ]);
    cmd.env("BYOK_KEYRING_FILE", &env.keyring)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut saved = serde_json::Value::Null;
    for _ in 0..3000 {
        if let Ok(bytes) = std::fs::read(&state) {
            // The file is replaced atomically, so it is always complete.
            saved = serde_json::from_slice(&bytes).unwrap();
            if saved["seen"].as_u64().unwrap() >= 50 {
                break;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "rotate ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let seen = saved["seen"].as_u64().unwrap();
    assert!(seen >= 50 && seen < n as u64, "{saved}");
    assert!(saved["report"]["resume_from"].is_string(), "{saved}");

    // Halfway: keys under both ids.
    let stats = env.run(&["--store", &store, "--json", "stats"], "").json();
    let under_new = stats["by_key_id"]["2"].as_u64().unwrap();
    let under_old = stats["by_key_id"]["1"].as_u64().unwrap();
    assert_eq!(under_new + under_old, n as u64);
    assert!(under_new >= seen && under_old > 0, "{stats}");

    let resumed = env.run_k(
        &["--store", &store, "--json", "rotate", "--state", &state_arg],
        "",
    );
    assert!(
        resumed.stderr.contains("resuming the rotation"),
        "{resumed:?}"
    );
    let report = resumed.json();
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(
        report["keys"], n,
        "every key counted once over both runs: {report}"
    );
    // Keys of the page in flight when the process died may have been
    // rotated without the cursor being saved: the re-run finds them current.
    assert_eq!(
        report["rotated"]["1"].as_u64().unwrap() + report["already_current"].as_u64().unwrap(),
        n as u64,
        "{report}"
    );
    assert!(!state.exists(), "a finished rotation removes its state");

    let stats = env.run(&["--store", &store, "--json", "stats"], "").json();
    assert_eq!(stats["by_key_id"], serde_json::json!({ "2": n }));
    let mut ring = env.ring();
    ring.remove(1).unwrap();
    rt().block_on(common::assert_all_keys(
        &store,
        "user_api_keys",
        ring,
        &users,
    ));
}
