//! Losing Redis and getting it back, against a throwaway `redis-server` on a
//! free loopback port that this test starts, kills and starts again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::time::Duration;

use byok_core::{ApiKey, KeyStorage, StorageErrorKind};
use byok_redis::{RedisOptions, RedisStorage};
use common::server::{Server, redis_server_installed, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_fail_retryably_then_recover_after_a_restart() {
    if !redis_server_installed() {
        return;
    }
    let mut server = Server::start(temp_dir(), &[]).await;

    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_millis(500));
    let url = server.url();
    let store = RedisStorage::builder(&url)
        .config(&common::config("byok_"))
        .options(options)
        .open()
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
    server.restart().await;
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
    let server = Server::start(temp_dir(), &[]).await;
    let url = server.url();
    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(300))
        .with_response_timeout(Duration::from_millis(300));
    let store = RedisStorage::builder(&url)
        .config(&common::config("byok_"))
        .options(options)
        .open()
        .await
        .unwrap();
    let key = ApiKey::new("bob", "openai", vec![1]).unwrap();
    store.store(&key).await.unwrap();

    // Writes (scripts included) wait far longer than our deadline, so ours
    // must give up first however slowly this machine runs; the pause is
    // then ended from another connection. `WRITE` rather than `ALL`, since
    // under `ALL` the server holds back `CLIENT UNPAUSE` itself.
    let mut raw = byok_redis::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = byok_redis::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("WRITE")
        .query_async(&mut raw)
        .await
        .unwrap();
    let newer = ApiKey::new("bob", "openai", vec![2]).unwrap();
    let err = store.store(&newer).await.unwrap_err();
    assert!(err.is_retryable(), "{err} ({err:?})");
    assert_eq!(
        err.as_storage().map(|e| e.kind),
        Some(StorageErrorKind::Timeout),
        "{err:?}"
    );
    let () = byok_redis::redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut raw)
        .await
        .unwrap();

    // The held-back write may run once the pause ends; it writes the same.
    let mut recovered = false;
    for _ in 0..100 {
        match store.store(&newer).await {
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
    assert!(recovered, "the store did not recover");
    assert_eq!(store.retrieve("bob", "openai").await.unwrap(), Some(newer));
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
    // The store gives up after its own deadline (0.4 s); the outer bound
    // only turns a regression into a failure instead of a hang.
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        RedisStorage::builder(format!("redis://127.0.0.1:{port}"))
            .config(&common::config("byok_"))
            .options(options)
            .open(),
    )
    .await
    .expect("connecting to a silent port did not give up")
    .unwrap_err();
    assert!(err.is_retryable(), "{err} ({err:?})");
    accept.abort();
}

/// Waits (bounded) until a one-node cluster reports `cluster_state:ok`.
#[cfg(feature = "cluster")]
async fn wait_cluster_ok(url: &str) {
    async fn cluster_info(url: &str) -> Option<String> {
        let client = byok_redis::redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        byok_redis::redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .ok()
    }
    for _ in 0..200 {
        let info = tokio::time::timeout(Duration::from_secs(1), cluster_info(url)).await;
        if info.is_ok_and(|i| i.is_some_and(|i| i.contains("cluster_state:ok"))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the one-node cluster at {url} did not become ready");
}

/// A one-node cluster that holds every slot, with `extra` arguments.
#[cfg(feature = "cluster")]
async fn one_node_cluster(extra: &[&str]) -> Server {
    let dir = temp_dir();
    let nodes_file = dir.join("nodes.conf");
    let nodes_file = nodes_file.to_str().unwrap().to_owned();
    let mut args = vec![
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        nodes_file.as_str(),
    ];
    args.extend_from_slice(extra);
    let server = Server::start(dir, &args).await;
    let url = server.url();
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
    server
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_connection_fails_retryably_then_recovers() {
    if !redis_server_installed() {
        return;
    }
    let mut server = one_node_cluster(&[]).await;
    let url = server.url();

    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_millis(500));
    let store = RedisStorage::builder(common::cluster_url(&[url.as_str()]))
        .config(&common::config("byok_"))
        .options(options)
        .open()
        .await
        .unwrap();
    let key = ApiKey::new("carol", "openai", vec![3]).unwrap();
    store.store(&key).await.unwrap();

    server.kill();
    let err = store.retrieve("carol", "openai").await.unwrap_err();
    assert!(err.is_retryable(), "{err} ({err:?})");

    // The node comes back with its slots (its nodes.conf is kept).
    server.restart().await;
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

/// Warnings logged on this thread while it is alive.
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn connecting_warns_unless_the_server_never_evicts() {
    if !redis_server_installed() {
        return;
    }
    let warnings = Warnings::default();
    let _logging = tracing::dispatcher::set_default(&tracing::Dispatch::new(warnings.clone()));
    let config = common::config("byok_");

    // Redis's default policy: no warning.
    let server = Server::start(temp_dir(), &[]).await;
    RedisStorage::builder(server.url())
        .config(&config)
        .open()
        .await
        .unwrap();
    assert_eq!(warnings.take(), Vec::<String>::new());
    drop(server);

    let server = Server::start(temp_dir(), &["--maxmemory-policy", "allkeys-lru"]).await;
    let store = RedisStorage::builder(server.url())
        .config(&config)
        .open()
        .await
        .unwrap();
    let logged = warnings.take();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].contains("allkeys-lru") && logged[0].contains("noeviction"),
        "{logged:?}"
    );
    // The store works all the same.
    store
        .store(&ApiKey::new("dave", "p", vec![4]).unwrap())
        .await
        .unwrap();
    drop(server);

    // A server without CONFIG, as some managed services run: not checked,
    // and connecting still succeeds.
    let server = Server::start(
        temp_dir(),
        &[
            "--maxmemory-policy",
            "allkeys-lru",
            "--rename-command",
            "CONFIG",
            "",
        ],
    )
    .await;
    RedisStorage::builder(server.url())
        .config(&config)
        .open()
        .await
        .unwrap();
    assert_eq!(warnings.take(), Vec::<String>::new());
    drop(server);
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "current_thread")]
async fn connecting_to_a_cluster_warns_unless_its_masters_never_evict() {
    if !redis_server_installed() {
        return;
    }
    let warnings = Warnings::default();
    let _logging = tracing::dispatcher::set_default(&tracing::Dispatch::new(warnings.clone()));
    let config = common::config("byok_");

    let server = one_node_cluster(&[]).await;
    RedisStorage::builder(common::cluster_url(&[server.url()]))
        .config(&config)
        .open()
        .await
        .unwrap();
    assert_eq!(warnings.take(), Vec::<String>::new());
    drop(server);

    let server = one_node_cluster(&["--maxmemory-policy", "volatile-ttl"]).await;
    RedisStorage::builder(common::cluster_url(&[server.url()]))
        .config(&config)
        .open()
        .await
        .unwrap();
    let logged = warnings.take();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("volatile-ttl"), "{logged:?}");
    drop(server);
}

#[tokio::test(flavor = "current_thread")]
async fn open_accepts_a_unix_socket_url() {
    if !redis_server_installed() {
        return;
    }
    let dir = temp_dir();
    let socket = dir.join("redis.sock");
    let socket = socket.to_str().unwrap().to_owned();
    let server = Server::start(dir, &["--unixsocket", &socket, "--unixsocketperm", "700"]).await;
    let store = RedisStorage::builder(format!("redis+unix://{socket}"))
        .config(&common::config("byok_"))
        .open()
        .await
        .unwrap();
    assert!(!store.is_cluster());
    let key = ApiKey::new("erin", "openai", vec![5]).unwrap();
    store.store(&key).await.unwrap();
    assert_eq!(store.retrieve("erin", "openai").await.unwrap(), Some(key));
    drop(server);
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_server_that_never_evicts_refuses_writes_but_deletes() {
    if !redis_server_installed() {
        return;
    }
    let server = Server::start(temp_dir(), &[]).await;
    let store = RedisStorage::builder(server.url())
        .config(&common::config("byok_"))
        .open()
        .await
        .unwrap();
    let key = ApiKey::new("frank", "openai", vec![6]).unwrap();
    store.store(&key).await.unwrap();

    // One byte of memory: every write is over the limit.
    let mut raw = byok_redis::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = byok_redis::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut raw)
        .await
        .unwrap();
    let newer = key.clone().with_encrypted_value(vec![7]);
    let refused = [
        store.store(&newer).await.unwrap_err(),
        store.compare_and_swap(&key, &newer).await.unwrap_err(),
        store
            .store(&ApiKey::new("frank", "anthropic", vec![8]).unwrap())
            .await
            .unwrap_err(),
    ];
    for err in refused {
        assert_eq!(
            err.as_storage().map(|e| e.kind),
            Some(StorageErrorKind::Rejected),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }
    // Nothing was half written, and removing keys still works.
    assert_eq!(store.retrieve("frank", "openai").await.unwrap(), Some(key));
    assert_eq!(store.list_providers("frank").await.unwrap(), ["openai"]);
    assert!(store.delete("frank", "openai").await.unwrap());
    assert_eq!(
        store.list_providers("frank").await.unwrap(),
        Vec::<String>::new()
    );
    drop(server);
}
