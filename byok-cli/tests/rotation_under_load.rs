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

/// Set in the child process: the store URL, table and keyring file.
const CHILD_VAR: &str = "BYOK_TEST_ROTATION_CHILD";

/// How often the instances reload their keyring file.
const RELOAD: Duration = Duration::from_millis(100);

/// An application instance serving on loopback until dropped.
struct App {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl App {
    fn start(url: &str, table: &str, keyring: &Path) -> App {
        let runtime = rt();
        let (addr, byok) = runtime.block_on(async {
            let store = byok::open_with(url, &config(table)).await.unwrap();
            let byok = Byok::builder_with_source(store, KeyringFile::new(keyring))
                .await
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
    fn start(url: &str, table: &str, keyring: &Path) -> ChildApp {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_instance",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_VAR, format!("{url}\n{table}\n{}", keyring.display()))
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
    let mut parts = setup.splitn(3, '\n');
    let (url, table, keyring) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let app = App::start(url, table, Path::new(keyring));
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
fn byok(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> common::Run {
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
fn rotation_under_load(url: &str, table: &str) {
    let env = Env::new();
    let users = rt().block_on(common::seed(url, table, env.ring(), "load", 20));
    let app = App::start(url, table, &env.keyring);
    let child = ChildApp::start(url, table, &env.keyring);
    let addrs = [app.addr, child.addr];
    let load = Arc::new(Load::default());
    let threads = drive(&load, &addrs, &users);
    while load.requests() < 100 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let vars = [
        ("BYOK_STORE", url),
        ("BYOK_TABLE", table),
        ("BYOK_KEYRING_FILE", "keyring.txt"),
    ];
    eprintln!(
        "# BYOK_STORE={} BYOK_TABLE={table} BYOK_KEYRING_FILE=keyring.txt",
        services::redact(url)
    );
    let before = load.requests();

    let add = byok(&env, &vars, &["keygen", "--add-to", "keyring.txt"]);
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
    assert_eq!(env.ring().key_ids().collect::<Vec<_>>(), [2]);
    rt().block_on(common::assert_all_keys(url, table, env.ring(), &users));
    drop(app);
}

#[test]
fn rotation_under_load_on_sqlite() {
    let env = Env::new();
    let url = env.sqlite("keys.db");
    rotation_under_load(&url, "user_api_keys");
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
    rotation_under_load(&url, &guard.table);
}
