//! The README's rotation procedure, run with the `byok` command while two
//! application instances serve requests: one in this process, one in a
//! child process, both reloading the same keyring file. No request may
//! fail; at the end every key is under the new master key id and the old
//! id is gone from the keyring.
//!
//! The instances are small HTTP servers on loopback over a `Byok` built
//! with a `KeyringFile` source, as an application would build it:
//! `GET /key/USER` answers the user's key, `PUT /key/USER/VALUE` sets it,
//! `GET /keyring` the key ids and the primary id, nothing secret.
//!
//! With the `kms-aws` feature and moto's AWS KMS (`scripts/kms-server.sh`)
//! the procedure runs again on a keyring whose master keys are wrapped by
//! KMS: the instances unwrap it at each reload, `keygen --kms` adds the new
//! key, and no master key is ever written in the clear.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok::secrecy::ExposeSecret as _;
use byok::{Byok, KeyringFile, Ttl};
use byok_testkit::services;
use common::{Env, config, namespace, rt};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Set in the child process: the store URL, table and keyring file, and
/// the KMS endpoint when the keyring is wrapped by KMS.
const CHILD_VAR: &str = "BYOK_TEST_ROTATION_CHILD";

/// Where the master keys are kept: in the keyring file, or wrapped by the
/// AWS KMS at `endpoint` under `key`.
#[derive(Clone, Debug)]
enum Custody {
    Clear,
    #[cfg_attr(not(feature = "kms-aws"), allow(dead_code))]
    Kms {
        endpoint: String,
        key: String,
    },
}

impl Custody {
    fn endpoint(&self) -> &str {
        match self {
            Custody::Clear => "",
            Custody::Kms { endpoint, .. } => endpoint,
        }
    }

    /// The AWS settings the `byok` command needs: moto, dummy credentials.
    fn vars(&self) -> Vec<(&'static str, String)> {
        match self {
            Custody::Clear => Vec::new(),
            Custody::Kms { endpoint, .. } => vec![
                ("AWS_ENDPOINT_URL_KMS", endpoint.clone()),
                ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
                ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
                ("AWS_REGION", "us-east-1".to_owned()),
                ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ],
        }
    }

    /// The keyring of the file at `path`, unwrapped by KMS when it must be.
    fn ring(&self, path: &Path) -> byok::Keyring {
        let text = std::fs::read_to_string(path).unwrap();
        match self {
            Custody::Clear => byok::Keyring::from_text(&text).unwrap(),
            #[cfg(feature = "kms-aws")]
            Custody::Kms { endpoint, .. } => rt().block_on(async {
                let kms = aws_kms(endpoint).await;
                byok::unwrap_text(&text, &[&kms]).await.unwrap()
            }),
            #[cfg(not(feature = "kms-aws"))]
            Custody::Kms { .. } => unreachable!("KMS custody needs the kms-aws feature"),
        }
    }
}

/// AWS KMS at `endpoint` (moto), with dummy credentials.
#[cfg(feature = "kms-aws")]
async fn aws_kms(endpoint: &str) -> byok_kms::AwsKms {
    use byok_kms::aws_sdk_kms::config::{Credentials, Region};
    let config = byok_kms::AwsKms::loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    byok_kms::AwsKms::new(&config)
}

/// How often the instances reload their keyring file.
const RELOAD: Duration = Duration::from_millis(100);

/// An application instance serving on loopback until dropped.
struct App {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl App {
    fn start(url: &str, table: &str, keyring: &Path, kms_endpoint: &str) -> App {
        let runtime = rt();
        let (addr, byok) = runtime.block_on(async {
            let store = byok::open_with(url, &config(table)).await.unwrap();
            let builder = if kms_endpoint.is_empty() {
                Byok::builder_with_source(store, KeyringFile::new(keyring)).await
            } else {
                kms_builder(store, keyring, kms_endpoint).await
            };
            let byok = builder
                .unwrap()
                .config(config(table))
                .reload_interval(RELOAD)
                .build()
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            (addr, (byok, listener))
        });
        let (byok, listener) = byok;
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(byok.clone(), stream));
            }
        });
        App {
            addr,
            _runtime: runtime,
        }
    }
}

/// A manager whose keyring file is unwrapped by the KMS at `endpoint`.
#[cfg(feature = "kms-aws")]
async fn kms_builder(
    store: byok::Store,
    keyring: &Path,
    endpoint: &str,
) -> byok::Result<byok::ByokBuilder> {
    let source = byok::Unwrapping::new(KeyringFile::new(keyring), aws_kms(endpoint).await);
    Byok::builder_with_source(store, source).await
}

#[cfg(not(feature = "kms-aws"))]
async fn kms_builder(_: byok::Store, _: &Path, _: &str) -> byok::Result<byok::ByokBuilder> {
    unreachable!("KMS custody needs the kms-aws feature")
}

async fn serve(byok: Byok, mut stream: tokio::net::TcpStream) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, body) = match (method, &parts[..]) {
        ("GET", ["key", user]) => match byok.get_key(user, "openai").await {
            Ok(Some(key)) => (200, key.expose_secret().to_owned()),
            Ok(None) => (404, String::new()),
            Err(e) => (500, e.to_string()),
        },
        ("PUT", ["key", user, value]) => {
            match byok.set_key(user, "openai", value, Ttl::Never).await {
                Ok(()) => (200, String::new()),
                Err(e) => (500, e.to_string()),
            }
        }
        ("GET", ["keyring"]) => {
            let ring = byok.keyring();
            let ids: Vec<String> = ring.key_ids().map(|i| i.to_string()).collect();
            (200, format!("{} {}", ids.join(","), ring.primary_id()))
        }
        _ => (404, String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One request; the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The key ids and primary id an instance uses now.
fn keyring_of(addr: SocketAddr) -> (Vec<u32>, u32) {
    let (status, body) = request(addr, "GET", "/keyring").unwrap();
    assert_eq!(status, 200, "{body}");
    let (ids, primary) = body.split_once(' ').unwrap();
    (
        ids.split(',').map(|i| i.parse().unwrap()).collect(),
        primary.parse().unwrap(),
    )
}

/// Waits (bounded) until every instance's keyring satisfies `ready`: the
/// "wait for every instance" step of the procedure.
fn wait_for_instances(addrs: &[SocketAddr], what: &str, ready: impl Fn(&[u32], u32) -> bool) {
    for _ in 0..600 {
        if addrs.iter().all(|a| {
            let (ids, primary) = keyring_of(*a);
            ready(&ids, primary)
        }) {
            eprintln!("# every instance: {what}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("an instance never reached: {what}");
}

/// What the request loop counted.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    requests: AtomicU64,
    failures: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < 10 {
            samples.push(what);
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Readers of the seeded users' keys, one thread per instance, and a
/// writer that sets and reads back keys of its own users.
fn drive(
    load: &Arc<Load>,
    addrs: &[SocketAddr],
    users: &[String],
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for (n, addr) in addrs.iter().copied().enumerate() {
        let (load, users) = (Arc::clone(load), users.to_vec());
        threads.push(std::thread::spawn(move || {
            // Bounded: a stuck procedure ends the loop too.
            for i in 0..2_000_000usize {
                if load.stop.load(Ordering::Relaxed) {
                    return;
                }
                let k = (i + n * 7) % users.len();
                load.requests.fetch_add(1, Ordering::Relaxed);
                match request(addr, "GET", &format!("/key/{}", users[k])) {
                    Ok((200, body)) if body == common::plaintext(k) => {}
                    other => load.fail(format!("GET {} at {addr}: {other:?}", users[k])),
                }
            }
        }));
    }
    let (load, addrs) = (Arc::clone(load), addrs.to_vec());
    threads.push(std::thread::spawn(move || {
        for i in 0..2_000_000usize {
            if load.stop.load(Ordering::Relaxed) {
                return;
            }
            let user = format!("writer-{}", i % 3);
            let value = format!("sk-writer-{i:07}-0123456789");
            let (to, from) = (addrs[i % addrs.len()], addrs[(i + 1) % addrs.len()]);
            load.requests.fetch_add(2, Ordering::Relaxed);
            match request(to, "PUT", &format!("/key/{user}/{value}")) {
                Ok((200, _)) => {}
                other => load.fail(format!("PUT {user} at {to}: {other:?}")),
            }
            match request(from, "GET", &format!("/key/{user}")) {
                Ok((200, body)) if body == value => {}
                other => load.fail(format!("GET {user} at {from}: {other:?}")),
            }
        }
    }));
    threads
}

/// The second instance, in a child process running [`child_instance`].
struct ChildApp {
    child: Child,
    addr: SocketAddr,
}

impl ChildApp {
    fn start(url: &str, table: &str, keyring: &Path, kms_endpoint: &str) -> ChildApp {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_instance",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_VAR,
                format!("{url}\n{table}\n{kms_endpoint}\n{}", keyring.display()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the child instance ended before it listened")
                .unwrap();
            // The harness may have printed the test's name on the line.
            if let Some((_, addr)) = line.split_once("listening ") {
                break addr.trim().parse().unwrap();
            }
        };
        // Whatever the child prints later must not meet a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ChildApp { child, addr }
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        // Closing its standard input ends the child; kill it if it lingers.
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The instance of the child process: serves until its standard input is
/// closed. Outside [`ChildApp`] (without its variable) it does nothing.
#[test]
fn child_instance() {
    let Ok(setup) = std::env::var(CHILD_VAR) else {
        return;
    };
    let mut parts = setup.splitn(4, '\n');
    let (url, table, kms_endpoint, keyring) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let app = App::start(url, table, Path::new(keyring), kms_endpoint);
    let mut out = std::io::stdout();
    // Not print!, which the test harness captures; the parent reads this.
    out.write_all(format!("\nlistening {}\n", app.addr).as_bytes())
        .unwrap();
    out.flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// Runs `byok ARGS` as the procedure's operator, with the store and the
/// keyring from the environment, and echoes command and output.
fn byok(env: &Env, vars: &[(&str, String)], args: &[&str]) -> common::Run {
    let mut cmd = env.command(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let run = env.run_cmd(cmd, "");
    eprintln!("$ byok {}", args.join(" "));
    for line in run.stdout.lines().chain(run.stderr.lines()) {
        eprintln!("{line}");
    }
    run
}

/// The procedure of the README, in its order, against the store at `url`.
fn rotation_under_load(url: &str, table: &str, custody: &Custody) {
    let env = Env::new();
    let mut vars = vec![
        ("BYOK_STORE", url.to_owned()),
        ("BYOK_TABLE", table.to_owned()),
        ("BYOK_KEYRING_FILE", "keyring.txt".to_owned()),
    ];
    vars.extend(custody.vars());
    // Wrapped by KMS: the first key is made by KMS, in place of the one
    // in the clear.
    let kms_arg = match custody {
        Custody::Clear => None,
        Custody::Kms { key, .. } => {
            std::fs::remove_file(&env.keyring).unwrap();
            let kms_arg = format!("aws:{key}");
            byok(
                &env,
                &vars,
                &["keygen", "--kms", &kms_arg, "--out", "keyring.txt"],
            )
            .ok();
            Some(kms_arg)
        }
    };
    let users = rt().block_on(common::seed(
        url,
        table,
        custody.ring(&env.keyring),
        "load",
        20,
    ));
    let app = App::start(url, table, &env.keyring, custody.endpoint());
    let child = ChildApp::start(url, table, &env.keyring, custody.endpoint());
    let addrs = [app.addr, child.addr];
    let load = Arc::new(Load::default());
    let threads = drive(&load, &addrs, &users);
    while load.requests() < 100 {
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "# BYOK_STORE={} BYOK_TABLE={table} BYOK_KEYRING_FILE=keyring.txt",
        services::redact(url)
    );
    let before = load.requests();

    let mut add = vec!["keygen", "--add-to", "keyring.txt"];
    if let Some(kms_arg) = &kms_arg {
        add.extend(["--kms", kms_arg.as_str()]);
    }
    let add = byok(&env, &vars, &add);
    assert!(add.ok().contains("decrypt-only"), "{add:?}");
    wait_for_instances(&addrs, "key ids 1,2, primary 1", |ids, primary| {
        ids == [1, 2] && primary == 1
    });
    byok(&env, &vars, &["keyring", "promote", "2"]).ok();
    wait_for_instances(&addrs, "primary 2", |_, primary| primary == 2);
    let rotate = byok(&env, &vars, &["rotate"]);
    assert!(rotate.ok().contains("to master key id 2"), "{rotate:?}");
    assert!(
        rotate
            .stdout
            .contains("Every running instance must have master key id 2 as primary"),
        "rotate says how to confirm the instances first: {rotate:?}"
    );
    let verify = byok(&env, &vars, &["verify"]);
    assert!(verify.ok().contains(": 0 failed"), "{verify:?}");
    byok(&env, &vars, &["keyring", "remove", "1"]).ok();
    wait_for_instances(&addrs, "key ids 2, primary 2", |ids, primary| {
        ids == [2] && primary == 2
    });

    let during = load.requests() - before;
    // A while longer on the final keyring.
    let last = load.requests();
    while load.requests() < last + 100 {
        std::thread::sleep(Duration::from_millis(10));
    }
    load.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    drop(child);
    let (requests, failures) = (load.requests(), load.failures.load(Ordering::Relaxed));
    eprintln!(
        "# request loop: {requests} requests ({during} during the procedure), {failures} failed"
    );
    assert_eq!(
        failures,
        0,
        "failed requests: {:?}",
        load.samples.lock().unwrap()
    );
    assert!(during > 0);

    let stats = byok(&env, &vars, &["--json", "stats"]).json();
    assert_eq!(
        stats["by_key_id"],
        serde_json::json!({ "2": users.len() + 3 }),
        "every key under the new id"
    );
    let ring = custody.ring(&env.keyring);
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), [2]);
    rt().block_on(common::assert_all_keys(url, table, ring, &users));
    if kms_arg.is_some() {
        let text = std::fs::read_to_string(&env.keyring).unwrap();
        assert!(
            text.starts_with("*2:kms:aws:") || text.starts_with("2:kms:aws:"),
            "{text}"
        );
    }
    drop(app);
}

#[test]
fn rotation_under_load_on_sqlite() {
    let env = Env::new();
    let url = env.sqlite("keys.db");
    rotation_under_load(&url, "user_api_keys", &Custody::Clear);
}

/// The same procedure on a keyring wrapped by AWS KMS (moto).
#[cfg(feature = "kms-aws")]
#[test]
fn rotation_under_load_with_a_kms_keyring() {
    let Some(endpoint) = services::from_env("AWS KMS (moto)", "BYOK_TEST_KMS_ENDPOINT") else {
        return;
    };
    let key = rt().block_on(async {
        let kms = aws_kms(&endpoint).await;
        let made = kms.client().create_key().send().await.unwrap();
        made.key_metadata.unwrap().arn.unwrap()
    });
    let env = Env::new();
    let url = env.sqlite("keys.db");
    rotation_under_load(&url, "user_api_keys", &Custody::Kms { endpoint, key });
}

/// Drops the test's PostgreSQL table, whatever the test did.
struct DropTable {
    url: String,
    table: String,
}

impl Drop for DropTable {
    fn drop(&mut self) {
        use byok::byok_sql::sqlx;
        rt().block_on(async {
            if let Ok(pool) = sqlx::PgPool::connect(&self.url).await {
                let drop = sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", self.table));
                let _ = sqlx::query(drop).execute(&pool).await;
            }
        });
    }
}

#[test]
fn rotation_under_load_on_postgres() {
    let Some(url) = rt().block_on(services::postgres_url()) else {
        return;
    };
    let guard = DropTable {
        url: url.clone(),
        table: namespace("load"),
    };
    rotation_under_load(&url, &guard.table, &Custody::Clear);
}
