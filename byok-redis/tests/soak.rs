//! The model-checked soak of `byok_testkit::soak` (16 tasks, about 5,000
//! operations unless `BYOK_TEST_SOAK_OPS` asks for more, compare-and-swap
//! races on shared counters) on the shared
//! test Redis and, when one is given, Redis Cluster, each under a key
//! prefix of its own. Each test prints its figures on a `soak …:` line and
//! fails on any mismatch with the model or any error that is not
//! retryable.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::io::Write as _;
use std::sync::Arc;

use byok_testkit::soak::{SoakConfig, soak};

async fn check(name: &str, store: common::Scratch) {
    let report = soak(Arc::new(store), &SoakConfig::from_env()).await;
    let _ = writeln!(std::io::stderr(), "soak {name}: {report}");
    assert!(report.is_clean(), "soak {name}: {report}");
    assert!(report.increments > 0, "no counter increment succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone() {
    let Some(url) = byok_testkit::services::redis_url().await else {
        return;
    };
    check("redis", common::open_scratch(&url).await).await;
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster() {
    let Some(urls) = byok_testkit::services::redis_cluster_urls().await else {
        return;
    };
    check(
        "redis-cluster",
        common::open_scratch(&common::cluster_url(&urls)).await,
    )
    .await;
}
