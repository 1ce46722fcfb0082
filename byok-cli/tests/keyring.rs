//! `byok keygen --add-to` and `byok keyring`: keyring files edited in
//! stages, safely, in every form the keyring parser reads.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use common::{Env, rt};

const A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// A mounted secret: a link to a file of mode 0640 holding `1:A,2:B` on
/// one line. The new key is added decrypt-only, through the link.
#[cfg(unix)]
#[test]
fn add_to_edits_a_one_line_keyring_through_its_link() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    let data = env.path().join("..data");
    std::fs::create_dir(&data).unwrap();
    let real = data.join("keyring");
    std::fs::write(&real, format!("1:{A},2:{B}\n")).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = env.path().join("mounted-keyring");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let l = link.display().to_string();

    let out = env.run(&["keygen", "--add-to", &l], "");
    assert!(out.ok().contains("decrypt-only"), "{out:?}");
    assert!(out.stderr.contains("open to group or others"), "{out:?}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link must stay a link"
    );
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    let ring = byok::Keyring::from_file(&link).unwrap();
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(ring.primary_id(), 2, "added decrypt-only");
    assert!(!out.stdout.contains(A) && !out.stderr.contains(A));

    let out = env.run(&["--keyring", &l, "--json", "keyring", "promote", "3"], "");
    assert_eq!(out.json()["previous_primary"], 2);
    let out = env.run(&["--keyring", &l, "--json", "keyring", "show"], "");
    let shown = out.json();
    assert_eq!(
        (&shown["key_ids"], &shown["primary"]),
        (&serde_json::json!([1, 2, 3]), &serde_json::json!(3))
    );
    assert_eq!(
        shown["entries"][2],
        serde_json::json!({"id": 3, "primary": true, "kms": null, "kms_key": null})
    );
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(text.starts_with(&format!("1:{A},2:{B}\n*3:")), "{text}");
}

#[test]
fn remove_is_refused_while_keys_are_under_the_id() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let users = rt().block_on(common::seed(&store, "user_api_keys", env.ring(), "u", 5));
    let p = env.keyring.display().to_string();
    let k = |args: &[&str]| {
        let mut all = vec!["--store", store.as_str(), "--keyring", p.as_str()];
        all.extend_from_slice(args);
        env.run(&all, "")
    };
    k(&["keygen", "--add-to", &p]).ok();
    assert_eq!(env.ring().primary_id(), 1);
    let primary = k(&["keyring", "remove", "1"]);
    assert!(primary.fails(2).contains("is primary"), "{primary:?}");
    k(&["keyring", "promote", "2"]).ok();
    let before = std::fs::read(&env.keyring).unwrap();
    let refused = k(&["keyring", "remove", "1"]);
    assert!(
        refused.fails(1).contains("5 key(s)") && refused.stderr.contains("byok rotate"),
        "{refused:?}"
    );
    assert_eq!(
        std::fs::read(&env.keyring).unwrap(),
        before,
        "nothing written"
    );
    assert!(k(&["keyring", "remove", "9"]).fails(2).contains("not in"));

    k(&["rotate"]).ok();
    let removed = k(&["keyring", "remove", "1"]);
    assert!(
        removed.ok().contains("removed master key id 1"),
        "{removed:?}"
    );
    assert_eq!(env.ring().key_ids().collect::<Vec<_>>(), [2]);
    rt().block_on(common::assert_all_keys(
        &store,
        "user_api_keys",
        env.ring(),
        &users,
    ));

    // --force removes without a store; the keys under it no longer decrypt.
    k(&["keygen", "--add-to", &p, "--primary"]).ok();
    let forced = env.run(
        &[
            "--store",
            "sqlite://./absent.db",
            "--keyring",
            &p,
            "keyring",
            "remove",
            "2",
            "--force",
        ],
        "",
    );
    assert!(forced.ok().contains("--force"), "{forced:?}");
    assert_eq!(env.ring().key_ids().collect::<Vec<_>>(), [3]);
}
