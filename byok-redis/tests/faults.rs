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

use byok_redis::{RedisOptions, RedisStorage};
use byok_testkit::faults::{Fault, outage};
use byok_testkit::proxy::FaultProxy;

/// The hang detector: far above the store's deadline of 0.6 s.
const BOUND: Duration = Duration::from_secs(30);

async fn check(fault: Fault) {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let (proxy, through) = FaultProxy::in_front_of(&url, 6379).await.unwrap();
    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(300))
        .with_response_timeout(Duration::from_millis(300));
    let store =
        RedisStorage::connect_with(&through, &common::config(&common::fresh_prefix()), options)
            .await
            .unwrap();
    match outage(&store, &proxy, fault, BOUND).await {
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
