//! Drives the built `byok` binary in a temporary directory of its own.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub,
    reason = "test helpers fail the test; each test file uses some of them"
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use byok::{Byok, ByokConfig, Keyring, Ttl};

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn of(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns standard output.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success:\n{self:?}");
        &self.stdout
    }

    /// Asserts the exit code and returns standard error.
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit code {code}:\n{self:?}");
        &self.stderr
    }

    /// Standard output as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{self:?}"))
    }
}

/// A temporary working directory with a keyring file in it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub keyring: PathBuf,
}

impl Env {
    /// A fresh directory and a keyring `keyring.txt` with master key id 1.
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring.txt");
        let env = Env { dir, keyring };
        let path = env.keyring.display().to_string();
        env.run(&["keygen", "--out", &path], "").ok();
        env
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A SQLite URL of a file in the directory.
    pub fn sqlite(&self, name: &str) -> String {
        format!("sqlite://{}", self.path().join(name).display())
    }

    /// The command, in the directory, with no byok variable inherited.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_byok"));
        cmd.args(args).current_dir(self.path());
        for var in [
            "BYOK_STORE",
            "BYOK_KEYRING",
            "BYOK_KEYRING_FILE",
            "BYOK_TABLE",
            "BYOK_PREFIX",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs the binary with `stdin` as standard input.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], stdin: &str) -> Run {
        self.run_cmd(self.command(args), stdin)
    }

    /// Runs the binary with the keyring file.
    pub fn run_k<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], stdin: &str) -> Run {
        let mut cmd = self.command(args);
        cmd.env("BYOK_KEYRING_FILE", &self.keyring);
        self.run_cmd(cmd, stdin)
    }

    pub fn run_cmd(&self, mut cmd: Command, stdin: &str) -> Run {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        Run::of(child.wait_with_output().unwrap())
    }

    /// The keyring, as the library reads it.
    pub fn ring(&self) -> Keyring {
        Keyring::from_file(&self.keyring).unwrap()
    }
}

/// A name of its own for a table or key prefix.
pub fn namespace(what: &str) -> String {
    format!(
        "byok_cli_{what}_{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

/// A multi-threaded runtime for library calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A config without background tasks, on this table and prefix.
pub fn config(namespace: &str) -> ByokConfig {
    ByokConfig::for_tests()
        .with_db_table_name(namespace)
        .with_session_key_prefix(format!("{namespace}:"))
}

/// The plaintext key that `seed` stores for user `i`.
pub fn plaintext(i: usize) -> String {
    format!("sk-test-{i:04}-0123456789abcdef")
}

/// Stores `n` keys (users `<prefix>-<i>`, provider openai) through the
/// library, with the schema created; returns the user ids.
pub async fn seed(
    url: &str,
    namespace: &str,
    ring: Keyring,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let store = byok::connect_with(url, &config(namespace)).await.unwrap();
    let byok = Byok::builder(store, ring)
        .config(config(namespace))
        .build()
        .unwrap();
    let mut users = Vec::new();
    for i in 0..n {
        let user = format!("{prefix}-{i:04}");
        byok.set_key(&user, "openai", &plaintext(i), Ttl::Never)
            .await
            .unwrap();
        users.push(user);
    }
    users
}

/// Decrypts every key of `users` in the store and checks it is `plaintext(i)`.
pub async fn assert_all_keys(url: &str, namespace: &str, ring: Keyring, users: &[String]) {
    use byok::secrecy::ExposeSecret as _;
    let store = byok::open_with(url, &config(namespace)).await.unwrap();
    let byok = Byok::builder(store, ring)
        .config(config(namespace))
        .build()
        .unwrap();
    for (i, user) in users.iter().enumerate() {
        let key = byok
            .require_key(user, "openai")
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(key.expose_secret(), plaintext(i), "{user}");
    }
}
