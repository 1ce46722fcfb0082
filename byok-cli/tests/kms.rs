//! `byok keygen --kms`, `byok keyring show` and `byok keyring rewrap`
//! against AWS KMS as moto serves it (`scripts/kms-server.sh` exports
//! `BYOK_TEST_KMS_ENDPOINT`; without it these tests skip, or fail with
//! `BYOK_TEST_REQUIRE_SERVICES=1`), and every command reading a keyring
//! whose master keys only KMS can unwrap.

#![cfg(feature = "kms-aws")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use byok_kms::AwsKms;
use byok_kms::aws_sdk_kms::config::{Credentials, Region};
use common::{Env, Run, rt};

const KEY: &str = "sk-proj-kms-0123456789abcdef";

struct Kms {
    endpoint: String,
    client: byok_kms::aws_sdk_kms::Client,
}

impl Kms {
    fn start() -> Option<Kms> {
        let endpoint =
            byok_testkit::services::from_env("AWS KMS (moto)", "BYOK_TEST_KMS_ENDPOINT")?;
        let client = rt().block_on(async {
            let config = AwsKms::loader()
                .endpoint_url(&endpoint)
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
                .load()
                .await;
            byok_kms::aws_sdk_kms::Client::new(&config)
        });
        Some(Kms { endpoint, client })
    }

    /// A new KMS key; its ARN.
    fn new_key(&self) -> String {
        rt().block_on(async {
            let out = self.client.create_key().send().await.unwrap();
            out.key_metadata.unwrap().arn.unwrap()
        })
    }

    /// Runs `byok ARGS` with AWS settings that reach only moto.
    fn run(&self, env: &Env, endpoint: &str, args: &[&str], stdin: &str) -> Run {
        let mut cmd = env.command(args);
        let none = env.path().join("no-aws-files");
        cmd.env("AWS_ENDPOINT_URL_KMS", endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", &none)
            .env("AWS_SHARED_CREDENTIALS_FILE", &none)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
        env.run_cmd(cmd, stdin)
    }
}

/// The README's KMS setup: a wrapped keyring made by keygen, used by the
/// commands, shown, grown, rewrapped under a second KMS key; no master key
/// in the clear on disk at any point.
#[test]
fn keygen_show_use_and_rewrap_a_kms_keyring() {
    let Some(kms) = Kms::start() else { return };
    let (key_a, key_b) = (kms.new_key(), kms.new_key());
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let ep = kms.endpoint.as_str();
    let run = |args: &[&str], stdin: &str| kms.run(&env, ep, args, stdin);
    let k = |args: &[&str], stdin: &str| {
        let mut all = vec!["--keyring", "kms-keyring.txt", "--store", store.as_str()];
        all.extend_from_slice(args);
        kms.run(&env, ep, &all, stdin)
    };

    let out = run(
        &[
            "keygen",
            "--kms",
            &format!("aws:{key_a}"),
            "--out",
            "kms-keyring.txt",
        ],
        "",
    );
    assert!(
        out.ok()
            .contains(&format!("wrapped by AWS KMS key {key_a}")),
        "{out:?}"
    );
    let text = std::fs::read_to_string(env.path().join("kms-keyring.txt")).unwrap();
    assert!(text.starts_with(&format!("1:kms:aws:{key_a}:")), "{text}");

    k(&["migrate"], "").ok();
    k(&["set", "openai", "--user", "alice"], KEY).ok();
    let got = k(&["get", "openai", "--user", "alice", "--reveal"], "");
    assert_eq!(got.ok().trim_end(), KEY);

    let add = run(
        &[
            "keygen",
            "--kms",
            &format!("aws:{key_a}"),
            "--add-to",
            "kms-keyring.txt",
        ],
        "",
    );
    assert!(add.ok().contains("added master key id 2"), "{add:?}");
    assert!(add.stdout.contains("decrypt-only"), "{add:?}");
    let show = k(&["keyring", "show"], "");
    assert!(
        show.ok().contains(&format!(
            "master key id 1: primary: new keys are written under it; wrapped by AWS KMS key {key_a}"
        )),
        "{show:?}"
    );
    k(&["keyring", "promote", "2"], "").ok();
    let rotate = k(&["rotate"], "");
    assert!(rotate.ok().contains("to master key id 2"), "{rotate:?}");

    // Rewrap under the second KMS key: the rows stay as they were.
    let rows_before = std::fs::read(env.path().join("keys.db")).unwrap();
    let out = k(
        &[
            "--json",
            "keyring",
            "rewrap",
            "--kms",
            &format!("aws:{key_b}"),
        ],
        "",
    );
    let report = out.json();
    assert_eq!(report["rewrapped"][0]["from"], key_a.as_str());
    assert_eq!(report["rewrapped"][1]["kms_key"], key_b.as_str());
    assert_eq!(
        std::fs::read(env.path().join("keys.db")).unwrap(),
        rows_before
    );
    let shown = k(&["--json", "keyring", "show"], "").json();
    for entry in shown["entries"].as_array().unwrap() {
        assert_eq!(entry["kms_key"], key_b.as_str(), "{shown}");
    }
    let got = k(&["get", "openai", "--user", "alice", "--reveal"], "");
    assert_eq!(got.ok().trim_end(), KEY);
    let verify = k(&["verify"], "");
    assert!(verify.ok().contains(": 0 failed"), "{verify:?}");
}

/// A keyring in the clear moves into KMS custody with `rewrap`: the same
/// master keys, wrapped, and the stored keys read as before.
#[test]
fn rewrap_moves_a_clear_keyring_into_kms() {
    let Some(kms) = Kms::start() else { return };
    let key = kms.new_key();
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let keyring = env.keyring.display().to_string();
    let k = |args: &[&str], stdin: &str| {
        let mut all = vec!["--keyring", keyring.as_str(), "--store", store.as_str()];
        all.extend_from_slice(args);
        kms.run(&env, &kms.endpoint, &all, stdin)
    };
    k(&["migrate"], "").ok();
    k(&["set", "openai", "--user", "bob"], KEY).ok();
    let clear = std::fs::read_to_string(&env.keyring).unwrap();
    let out = k(&["keyring", "rewrap", "--kms", &format!("aws:{key}")], "");
    assert!(
        out.ok()
            .contains("was in the clear, now wrapped by AWS KMS key"),
        "{out:?}"
    );
    let wrapped = std::fs::read_to_string(&env.keyring).unwrap();
    let clear_key = clear.trim().split_once(':').unwrap().1;
    assert!(!wrapped.contains(clear_key), "{wrapped}");
    let got = k(&["get", "openai", "--user", "bob", "--reveal"], "");
    assert_eq!(got.ok().trim_end(), KEY);
}

/// A tampered blob and an unreachable KMS: the commands stop with a
/// configuration error (exit 3) that names the master key id and the KMS
/// key, never the blob.
#[test]
fn tampered_blobs_and_an_unreachable_kms_are_configuration_errors() {
    let Some(kms) = Kms::start() else { return };
    let key = kms.new_key();
    let env = Env::new();
    let store = env.sqlite("keys.db");
    kms.run(
        &env,
        &kms.endpoint,
        &["keygen", "--kms", &format!("aws:{key}"), "--out", "k.txt"],
        "",
    )
    .ok();
    let text = std::fs::read_to_string(env.path().join("k.txt")).unwrap();
    let blob = text.trim().rsplit_once(':').unwrap().1.to_owned();
    // Another blob of the same length, still base64.
    let flipped: String = blob
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    std::fs::write(env.path().join("k.txt"), text.replace(&blob, &flipped)).unwrap();
    let args = ["--keyring", "k.txt", "--store", store.as_str(), "migrate"];
    let _ = kms.run(&env, &kms.endpoint, &args, "");
    let args = [
        "--keyring",
        "k.txt",
        "--store",
        store.as_str(),
        "get",
        "openai",
        "--user",
        "x",
    ];
    let out = kms.run(&env, &kms.endpoint, &args, "");
    let err = out.fails(3);
    assert!(
        err.contains("AWS KMS refused to unwrap master key id 1"),
        "{err}"
    );
    assert!(err.contains(&key) && !err.contains(&flipped), "{err}");

    // Nothing listens on the port of a listener just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    std::fs::write(env.path().join("k.txt"), &text).unwrap();
    let out = kms.run(&env, &down, &args, "");
    let err = out.fails(3);
    assert!(
        err.contains(&format!(
            "cannot reach AWS KMS to unwrap master key id 1 (KMS key {key}) after 3 attempts"
        )),
        "{err}"
    );
    assert!(!err.contains(&blob), "{err}");
}
