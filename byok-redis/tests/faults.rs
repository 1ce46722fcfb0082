//! Network faults between a store and the shared test Redis, injected by a
//! loopback proxy (`byok_testkit::proxy`), never on the server itself:
//! during an outage every call fails retryably within the store's deadline,
//! and afterwards the same store works again with every acknowledged write
//! intact. Each test prints its figures on a `fault redis …` line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::io::Write as _;
use std::time::Duration;

use byok_core::KeyStorage as _;
use byok_redis::{RedisOptions, RedisStorage};
use byok_testkit::faults::{Fault, outage};
use byok_testkit::proxy::FaultProxy;

/// The hang detector: far above the store's deadline of 0.6 s.
const BOUND: Duration = Duration::from_secs(30);

/// Deadlines of 0.3 s to connect and to answer.
fn options() -> RedisOptions {
    RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(300))
        .with_response_timeout(Duration::from_millis(300))
}

/// A proxy in front of the Redis at `url`, its address, and a store on a
/// prefix of its own that reaches Redis through it.
async fn behind_a_proxy(url: &str) -> (FaultProxy, String, common::Scratch) {
    let (proxy, through) = FaultProxy::in_front_of(url, 6379).await.unwrap();
    let store = RedisStorage::builder(&through)
        .config(&common::config(&common::fresh_prefix()))
        .options(options())
        .open()
        .await
        .unwrap();
    (proxy, through, common::scratch(store, url))
}

async fn check(fault: Fault) {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let (proxy, _through, store) = behind_a_proxy(&url).await;
    match outage(&*store, &proxy, fault, BOUND).await {
        Ok(report) => {
            let _ = writeln!(std::io::stderr(), "fault redis {report}");
        }
        Err(failure) => panic!("redis, {fault}: {failure}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_fails_every_call_retryably_then_recovers() {
    check(Fault::Crash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_times_every_call_out_then_recovers() {
    check(Fault::Stall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_replaced() {
    check(Fault::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_inside_the_deadline_changes_nothing() {
    // Small: `purge_expired` makes hundreds of round trips (one per batch
    // of buckets), and each pays the latency twice.
    check(Fault::Latency(Duration::from_millis(5))).await;
}

/// The errors of `err`'s `source()` chain, outermost first.
fn sources(err: &byok_core::ByokError) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut chain = Vec::new();
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        chain.push(e);
        next = e.source();
    }
    chain
}

/// Whether the chain holds the driver's error or the deadline's timer.
fn holds_the_cause(err: &byok_core::ByokError) -> bool {
    sources(err).iter().any(|e| {
        e.downcast_ref::<byok_redis::redis::RedisError>().is_some()
            || e.downcast_ref::<tokio::time::error::Elapsed>().is_some()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_keep_the_underlying_error_as_their_source() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let (proxy, through, store) = behind_a_proxy(&url).await;

    // A command to a server that stops answering.
    proxy.stall();
    let err = tokio::time::timeout(BOUND, store.retrieve("alice", "openai"))
        .await
        .expect("the deadline bounds a command")
        .unwrap_err();
    let kind = err.as_storage().map(|s| s.kind);
    assert_eq!(kind, Some(byok_core::StorageErrorKind::Timeout), "{err:?}");
    assert!(holds_the_cause(&err), "{err:?}");

    // Connecting to a server that does not answer.
    let err = tokio::time::timeout(
        BOUND,
        RedisStorage::builder(&through)
            .config(&common::config(&common::fresh_prefix()))
            .options(options())
            .open(),
    )
    .await
    .expect("the deadline bounds connecting")
    .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(holds_the_cause(&err), "{err:?}");
    proxy.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_own_deadline_keeps_its_timer_as_the_source() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let (proxy, through) = FaultProxy::in_front_of(&url, 6379).await.unwrap();
    // A connection of the application's own, without a response timeout:
    // only the store's deadline bounds a command.
    let client = byok_redis::redis::Client::open(through.as_str()).unwrap();
    let config = byok_redis::redis::aio::ConnectionManagerConfig::new().set_response_timeout(None);
    let manager = byok_redis::redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .unwrap();
    let store =
        RedisStorage::from_connection_manager(manager, &common::config(&common::fresh_prefix()))
            .unwrap();
    proxy.stall();
    let err = tokio::time::timeout(BOUND, store.retrieve("alice", "openai"))
        .await
        .expect("the deadline bounds a command")
        .unwrap_err();
    let kind = err.as_storage().map(|s| s.kind);
    assert_eq!(kind, Some(byok_core::StorageErrorKind::Timeout), "{err:?}");
    assert!(
        sources(&err)
            .iter()
            .any(|e| e.downcast_ref::<tokio::time::error::Elapsed>().is_some()),
        "{err:?}"
    );
    proxy.resume();
}
