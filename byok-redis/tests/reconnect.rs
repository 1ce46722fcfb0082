//! Losing Redis and getting it back, against a throwaway `redis-server` on a
//! free loopback port that this test starts, kills and starts again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use byok_core::{ApiKey, KeyStorage, StorageErrorKind};
use byok_redis::{RedisOptions, RedisStorage};

/// A `redis-server` child; killed (and its directory removed) on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(port: u16, dir: PathBuf) -> Server {
        Server::start_with(port, dir, &[])
    }

    fn start_with(port: u16, dir: PathBuf, extra: &[&str]) -> Server {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        Server {
            child: Some(child),
            port,
            dir,
        }
    }

    /// Waits (bounded) until the server accepts connections.
    async fn wait_ready(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_server_installed() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if byok_testkit::services::services_required() {
            panic!("BYOK_TEST_REQUIRE_SERVICES is set, but redis-server is not installed");
        }
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
            "skipped: redis-server is not installed (set BYOK_TEST_REQUIRE_SERVICES=1 to fail instead)"
        );
        });
    }
    found
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_fail_retryably_then_recover_after_a_restart() {
    if !redis_server_installed() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("byok-redis-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut server = Server::start(port, dir.clone());
    server.wait_ready().await;

    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_millis(500));
    let url = format!("redis://127.0.0.1:{port}");
    let store = RedisStorage::connect_with(&url, &common::config("byok_"), options)
        .await
        .unwrap();
    let key = ApiKey::new("alice", "openai", b"ciphertext".to_vec()).unwrap();
    store.store(&key).await.unwrap();
    assert_eq!(
        store.retrieve("alice", "openai").await.unwrap(),
        Some(key.clone())
    );

    server.kill();
    for _ in 0..3 {
        let err = store.retrieve("alice", "openai").await.unwrap_err();
        assert!(err.is_retryable(), "{err} ({err:?})");
        let err = store.store(&key).await.unwrap_err();
        assert!(err.is_retryable(), "{err} ({err:?})");
    }

    // The same port again: the same store must find it without being rebuilt.
    let server = Server::start(port, dir);
    server.wait_ready().await;
    let mut recovered = false;
    for _ in 0..100 {
        match store.store(&key).await {
            Ok(()) => {
                recovered = true;
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e} ({e:?})");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(recovered, "the store did not reconnect");
    assert_eq!(store.retrieve("alice", "openai").await.unwrap(), Some(key));
    assert_eq!(store.clear_all("alice").await.unwrap(), 1);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_times_out() {
    if !redis_server_installed() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("byok-redis-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let server = Server::start(port, dir);
    server.wait_ready().await;
    let url = format!("redis://127.0.0.1:{port}");
    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(300))
        .with_response_timeout(Duration::from_millis(300));
    let store = RedisStorage::connect_with(&url, &common::config("byok_"), options)
        .await
        .unwrap();
    let key = ApiKey::new("bob", "openai", vec![1]).unwrap();
    store.store(&key).await.unwrap();

    // Every client's commands wait for 1.5 s: ours must give up first,
    // and succeed again once the pause is over.
    let mut raw = byok_redis::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = byok_redis::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut raw)
        .await
        .unwrap();
    let err = store.retrieve("bob", "openai").await.unwrap_err();
    assert!(err.is_retryable(), "{err} ({err:?})");
    assert_eq!(
        err.as_storage().map(|e| e.kind),
        Some(StorageErrorKind::Timeout),
        "{err:?}"
    );
    let mut back = None;
    for _ in 0..100 {
        match store.retrieve("bob", "openai").await {
            Ok(k) => {
                back = Some(k);
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e} ({e:?})");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(back, Some(Some(key)), "the store did not recover");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_silent_port_fails_in_bounded_time() {
    // A listener that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(200))
        .with_response_timeout(Duration::from_millis(200));
    let err = RedisStorage::connect_with(
        &format!("redis://127.0.0.1:{port}"),
        &common::config("byok_"),
        options,
    )
    .await
    .unwrap_err();
    assert!(err.is_retryable(), "{err} ({err:?})");
    accept.abort();
}

/// Waits (bounded) until a one-node cluster reports `cluster_state:ok`.
#[cfg(feature = "cluster")]
async fn wait_cluster_ok(url: &str) {
    for _ in 0..200 {
        if let Ok(client) = byok_redis::redis::Client::open(url)
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let info: Result<String, _> = byok_redis::redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await;
            if info.is_ok_and(|i| i.contains("cluster_state:ok")) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the one-node cluster at {url} did not become ready");
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_connection_fails_retryably_then_recovers() {
    if !redis_server_installed() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("byok-redis-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let nodes_file = dir.join("nodes.conf");
    let nodes_file = nodes_file.to_str().unwrap().to_owned();
    let cluster_args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        nodes_file.as_str(),
    ];
    let mut server = Server::start_with(port, dir.clone(), &cluster_args);
    server.wait_ready().await;
    let url = format!("redis://127.0.0.1:{port}");
    let mut raw = byok_redis::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = byok_redis::redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut raw)
        .await
        .unwrap();
    drop(raw);
    wait_cluster_ok(&url).await;

    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_millis(500));
    let store =
        RedisStorage::connect_cluster_with(&[url.as_str()], &common::config("byok_"), options)
            .await
            .unwrap();
    let key = ApiKey::new("carol", "openai", vec![3]).unwrap();
    store.store(&key).await.unwrap();

    server.kill();
    let err = store.retrieve("carol", "openai").await.unwrap_err();
    assert!(err.is_retryable(), "{err} ({err:?})");

    // The node comes back with its slots (its nodes.conf is kept).
    let server = Server::start_with(port, dir, &cluster_args);
    server.wait_ready().await;
    wait_cluster_ok(&url).await;
    let mut recovered = false;
    for _ in 0..100 {
        match store.store(&key).await {
            Ok(()) => {
                recovered = true;
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e} ({e:?})");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(recovered, "the cluster connection did not recover");
    assert_eq!(store.retrieve("carol", "openai").await.unwrap(), Some(key));
    drop(server);
}
