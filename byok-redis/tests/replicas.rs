//! Waiting for replicas (`RedisOptions::with_replica_wait`), against servers
//! this test starts on free loopback ports: a master with one replica, and
//! (with the `cluster` feature) a cluster of three masters, each with one
//! replica, under a forced failover of a paused master, a kill -9 of a
//! master and a slot migration. Each test prints its figures on a
//! `replicas …` line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use byok_core::{ApiKey, ByokError, KeyStorage, StorageErrorKind};
use byok_redis::redis;
use byok_redis::{RedisOptions, RedisStorage};
use common::server::{Server, redis_server_installed, temp_dir};

/// How long a write waits for its replica.
const WAIT: Duration = Duration::from_millis(300);

fn options() -> RedisOptions {
    RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_secs(1))
        .with_replica_wait(1, WAIT)
}

async fn command(url: &str, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

async fn info(url: &str, section: &str) -> String {
    let mut cmd = redis::cmd("INFO");
    cmd.arg(section);
    match command(url, &cmd).await {
        Ok(v) => redis::from_redis_value(v).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (bounded: 30 s) until the master at `url` has `n` replicas online.
async fn wait_for_replicas(url: &str, n: usize) {
    for _ in 0..1200 {
        let text = info(url, "replication").await;
        if text.lines().filter(|l| l.contains("state=online")).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the replicas of {url} did not come online");
}

fn kind(e: &ByokError) -> Option<StorageErrorKind> {
    e.as_storage().map(|s| s.kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_no_replica_acknowledged_is_reported_as_not_replicated() {
    if !redis_server_installed() {
        return;
    }
    let master = Server::start(temp_dir(), &[]).await;
    let port = master.port().to_string();
    let replica = Server::start(temp_dir(), &["--replicaof", "127.0.0.1", &port]).await;
    wait_for_replicas(&master.url(), 1).await;
    let config = common::config(&common::fresh_prefix());
    let store = RedisStorage::builder(master.url())
        .config(&config)
        .options(options())
        .open()
        .await
        .unwrap();
    let key = |p: &str, v: u8| ApiKey::new("alice", p, vec![v]).unwrap();

    store.store(&key("a", 1)).await.unwrap();

    replica.pause();
    let started = Instant::now();
    let err = store.store(&key("b", 1)).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(kind(&err), Some(StorageErrorKind::NotReplicated), "{err}");
    assert!(err.is_retryable());
    // The master applied it: its outcome is unknown, not a failure.
    assert!(store.retrieve("alice", "b").await.unwrap().is_some());
    let err = store.delete("alice", "a").await.unwrap_err();
    assert_eq!(kind(&err), Some(StorageErrorKind::NotReplicated), "{err}");
    replica.resume();

    // Once the replica is back, writes are confirmed again.
    let mut confirmed = false;
    for _ in 0..100 {
        if store.store(&key("c", 1)).await.is_ok() {
            confirmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        confirmed,
        "writes were not confirmed after the replica resumed"
    );

    // A master without any replica confirms nothing.
    let alone = Server::start(temp_dir(), &[]).await;
    let store = RedisStorage::builder(alone.url())
        .config(&config)
        .options(options())
        .open()
        .await
        .unwrap();
    let err = store.store(&key("a", 1)).await.unwrap_err();
    assert_eq!(kind(&err), Some(StorageErrorKind::NotReplicated), "{err}");
    let _ = writeln!(
        std::io::stderr(),
        "replicas standalone: a write with its replica paused failed as not replicated \
         after {waited:?} (wait {WAIT:?}): {err}"
    );
}

#[cfg(feature = "cluster")]
mod cluster {
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Three masters, each with one replica.
    struct Cluster {
        nodes: Vec<Server>,
    }

    /// One node as `CLUSTER NODES` shows it.
    #[derive(Debug, Clone)]
    struct Node {
        id: String,
        port: u16,
        master: bool,
        /// The id of the master it replicates, for a replica.
        of: Option<String>,
    }

    impl Cluster {
        async fn start() -> Cluster {
            let mut nodes = Vec::new();
            for _ in 0..6 {
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "3000",
                ];
                nodes.push(Server::start(temp_dir(), &args).await);
            }
            let addrs: Vec<String> = nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port()))
                .collect();
            let created = Command::new("timeout")
                .arg("60")
                .args(["redis-cli", "--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("running redis-cli");
            assert!(created.success(), "redis-cli --cluster create failed");
            let cluster = Cluster { nodes };
            cluster.wait_until_settled().await;
            cluster
        }

        fn url_of(port: u16) -> String {
            format!("redis://127.0.0.1:{port}")
        }

        fn urls(&self) -> String {
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port()))
                .collect();
            format!("redis+cluster://{}", nodes.join(","))
        }

        fn server(&mut self, port: u16) -> &mut Server {
            self.nodes.iter_mut().find(|n| n.port() == port).unwrap()
        }

        /// The cluster as the node on `port` sees it.
        async fn view(port: u16) -> Vec<Node> {
            let text: String = match command(
                &Cluster::url_of(port),
                &redis::cmd("CLUSTER").arg("NODES").clone(),
            )
            .await
            {
                Ok(v) => redis::from_redis_value(v).unwrap_or_default(),
                Err(_) => return Vec::new(),
            };
            text.lines()
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let port = f
                        .get(1)?
                        .split('@')
                        .next()?
                        .rsplit(':')
                        .next()?
                        .parse()
                        .ok()?;
                    let flags = f.get(2)?;
                    if flags.contains("fail") && !flags.contains("pfail") {
                        return None;
                    }
                    Some(Node {
                        id: f[0].to_owned(),
                        port,
                        master: flags.contains("master"),
                        of: f.get(3).filter(|m| **m != "-").map(|m| (*m).to_owned()),
                    })
                })
                .collect()
        }

        /// Waits (bounded) until every node says the cluster is ok, and
        /// three masters each have a replica online.
        async fn wait_until_settled(&self) {
            for _ in 0..600 {
                let mut ok = true;
                for node in &self.nodes {
                    let text: String =
                        command(&node.url(), &redis::cmd("CLUSTER").arg("INFO").clone())
                            .await
                            .ok()
                            .and_then(|v| redis::from_redis_value(v).ok())
                            .unwrap_or_default();
                    ok &= text.contains("cluster_state:ok");
                }
                if ok {
                    let view = Cluster::view(self.nodes[0].port()).await;
                    let masters: Vec<&Node> = view.iter().filter(|n| n.master).collect();
                    let mut replicated = masters.len() == 3;
                    for m in masters {
                        replicated &= info(&Cluster::url_of(m.port), "replication")
                            .await
                            .contains("state=online");
                    }
                    if replicated {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the cluster did not settle");
        }

        /// A master and its replica, as the node on `port` sees them.
        async fn pair(port: u16) -> (Node, Node) {
            let view = Cluster::view(port).await;
            for m in view.iter().filter(|n| n.master) {
                if let Some(r) = view.iter().find(|n| n.of.as_ref() == Some(&m.id)) {
                    return (m.clone(), r.clone());
                }
            }
            panic!("no master with a replica in {view:?}");
        }
    }

    /// What a writer saw.
    #[derive(Debug, Default)]
    struct Writes {
        acknowledged: Vec<u32>,
        retryable: std::collections::BTreeMap<String, u32>,
        other: Vec<String>,
    }

    fn key(i: u32) -> ApiKey {
        ApiKey::new(format!("user-{i}"), "openai", i.to_le_bytes().to_vec()).unwrap()
    }

    /// Writes write-once keys, one new user each, until told to stop.
    fn start_writer(store: RedisStorage, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Writes> {
        tokio::spawn(async move {
            let mut writes = Writes::default();
            for i in 0..1_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match store.store(&key(i)).await {
                    Ok(()) => writes.acknowledged.push(i),
                    Err(e) if e.is_retryable() => {
                        let kind = kind(&e).map_or("other".to_owned(), |k| format!("{k:?}"));
                        *writes.retryable.entry(kind).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => writes.other.push(format!("{e:?}")),
                }
            }
            writes
        })
    }

    /// Reads back every acknowledged key through the same storage object
    /// (retrying reads that fail retryably, bounded); returns how many are
    /// missing or wrong.
    async fn lost(store: &RedisStorage, writes: &Writes) -> usize {
        let mut lost = 0;
        for &i in &writes.acknowledged {
            let expected = key(i);
            let mut found = None;
            for _ in 0..100 {
                match store.retrieve(expected.user_id(), "openai").await {
                    Ok(k) => {
                        found = Some(k);
                        break;
                    }
                    Err(e) if e.is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("reading back user-{i}: {e}"),
                }
            }
            let found = found.expect("reads kept failing");
            if found.map(|k| k.encrypted_value().to_vec()) != Some(i.to_le_bytes().to_vec()) {
                lost += 1;
            }
        }
        lost
    }

    /// The same storage object takes writes again (bounded).
    async fn recovers(store: &RedisStorage) -> Duration {
        let started = Instant::now();
        for attempt in 0..400u32 {
            if store.store(&key(2_000_000 + attempt)).await.is_ok() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the storage object did not recover");
    }

    async fn connect(cluster: &Cluster) -> RedisStorage {
        let config = common::config(&common::fresh_prefix());
        RedisStorage::builder(cluster.urls())
            .config(&config)
            .options(options())
            .open()
            .await
            .unwrap()
    }

    fn report(name: &str, writes: &Writes, lost: usize, recovered: Duration) {
        let _ = writeln!(
            std::io::stderr(),
            "replicas cluster {name}: {} writes acknowledged, {lost} lost; retryable errors {:?}; \
             other errors {}; the same object took a new write {recovered:?} after the writer stopped",
            writes.acknowledged.len(),
            writes.retryable,
            writes.other.len()
        );
    }

    fn check(name: &str, writes: &Writes, lost: usize) {
        assert!(writes.other.is_empty(), "{name}: {:?}", writes.other);
        assert!(
            !writes.acknowledged.is_empty(),
            "{name}: no write acknowledged"
        );
        assert_eq!(lost, 0, "{name}: acknowledged writes lost");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_acknowledged_with_replica_wait_survive_a_forced_failover_of_a_paused_master() {
        if !redis_server_installed() {
            return;
        }
        let mut cluster = Cluster::start().await;
        let store = connect(&cluster).await;
        let (master, replica) = Cluster::pair(cluster.nodes[0].port()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = start_writer(store.clone(), stop.clone());

        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.server(master.port).pause();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut takeover = redis::cmd("CLUSTER");
        takeover.arg("FAILOVER").arg("TAKEOVER");
        command(&Cluster::url_of(replica.port), &takeover)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.server(master.port).resume();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        let writes = writer.await.unwrap();

        let recovered = recovers(&store).await;
        let lost = lost(&store, &writes).await;
        report(
            "forced failover of a paused master",
            &writes,
            lost,
            recovered,
        );
        check("forced failover", &writes, lost);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_acknowledged_with_replica_wait_survive_a_kill_9_of_a_master() {
        if !redis_server_installed() {
            return;
        }
        let mut cluster = Cluster::start().await;
        let store = connect(&cluster).await;
        let (master, replica) = Cluster::pair(cluster.nodes[0].port()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = start_writer(store.clone(), stop.clone());

        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.server(master.port).kill();
        let killed = Instant::now();
        // The replica is promoted once the others agree the master failed.
        let mut promoted = None;
        for _ in 0..400 {
            let view = Cluster::view(replica.port).await;
            if view.iter().any(|n| n.port == replica.port && n.master) {
                promoted = Some(killed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let promoted = promoted.expect("the replica was not promoted");
        // The killed node comes back (empty) as the new master's replica,
        // and writes to its slots are confirmed again.
        cluster.server(master.port).restart().await;
        wait_for_replicas(&Cluster::url_of(replica.port), 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let writes = writer.await.unwrap();

        let recovered = recovers(&store).await;
        let lost = lost(&store, &writes).await;
        report(
            &format!("kill -9 of a master (replica promoted after {promoted:?})"),
            &writes,
            lost,
            recovered,
        );
        check("kill -9", &writes, lost);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_during_a_slot_migration_succeed_or_fail_retryably_and_are_all_kept() {
        if !redis_server_installed() {
            return;
        }
        let cluster = Cluster::start().await;
        let store = connect(&cluster).await;
        let view = Cluster::view(cluster.nodes[0].port()).await;
        let masters: Vec<&Node> = view.iter().filter(|n| n.master).collect();
        let (from, to) = (masters[0].clone(), masters[1].clone());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = start_writer(store.clone(), stop.clone());

        tokio::time::sleep(Duration::from_millis(300)).await;
        let entry = format!("127.0.0.1:{}", from.port);
        let moved = tokio::task::spawn_blocking(move || {
            Command::new("timeout")
                .arg("120")
                .args(["redis-cli", "--cluster", "reshard", &entry])
                .args(["--cluster-from", &from.id, "--cluster-to", &to.id])
                .args(["--cluster-slots", "1000", "--cluster-yes"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("running redis-cli")
        })
        .await
        .unwrap();
        assert!(moved.success(), "redis-cli --cluster reshard failed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let writes = writer.await.unwrap();

        let recovered = recovers(&store).await;
        let lost = lost(&store, &writes).await;
        report(
            "migration of 1000 slots under writes",
            &writes,
            lost,
            recovered,
        );
        check("slot migration", &writes, lost);
    }
}
