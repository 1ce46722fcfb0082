//! The background purge of expired keys that `ByokConfig::auto_cleanup` asks for.

use std::time::Duration;

use byok_core::{ConfigError, KeyStorage, Result};
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// A task that calls `purge_expired` every `interval`; it stops when this
/// value is dropped (each storage holds it in an `Arc`, so when the last
/// clone of the storage that started it goes).
#[derive(Debug)]
pub(crate) struct Sweeper {
    runtime: Handle,
    interval: Duration,
    task: AbortHandle,
}

impl Sweeper {
    /// Starts the task on the current Tokio runtime. `store` must not hold
    /// this sweeper itself, or the task would keep itself alive.
    pub(crate) fn start<S: KeyStorage + Clone>(store: S, interval: Duration) -> Result<Self> {
        if interval.is_zero() {
            return Err(ConfigError::new("the sweep interval must be longer than zero").into());
        }
        let runtime = Handle::try_current().map_err(|e| {
            ConfigError::new("purging expired keys in the background needs a running Tokio runtime")
                .with_source(e)
        })?;
        Ok(Self::spawn(runtime, store, interval))
    }

    /// The same sweep for another store (the same pool under another table).
    pub(crate) fn restart<S: KeyStorage + Clone>(&self, store: S) -> Self {
        Self::spawn(self.runtime.clone(), store, self.interval)
    }

    fn spawn<S: KeyStorage + Clone>(runtime: Handle, store: S, interval: Duration) -> Self {
        let task = runtime.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match store.purge_expired().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "purged expired keys"),
                    // The next tick tries again; a database that is down
                    // for a while must not end the sweep.
                    Err(error) => tracing::warn!(%error, "purging expired keys failed"),
                }
            }
        });
        Sweeper {
            runtime,
            interval,
            task: task.abort_handle(),
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::time::Instant;

    use byok_core::{ApiKey, ByokConfig, chrono};

    use super::*;
    use crate::SqliteStorage;

    /// Polls `done` until it holds; fails after a generous bound so that a
    /// broken sweeper fails the test instead of hanging it.
    async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let start = Instant::now();
        while !done().await {
            assert!(start.elapsed() < Duration::from_secs(20), "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purges_in_the_background_and_stops_when_dropped() {
        let config = ByokConfig::for_tests();
        let store = SqliteStorage::connect("sqlite::memory:", &config)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
        let expired = ApiKey::new("u", "p", vec![1])
            .unwrap()
            .with_expires_at(past);
        store.store(&expired).await.unwrap();

        let sweeper = Sweeper::start(store.clone(), Duration::from_millis(10)).unwrap();
        eventually("the sweeper did not purge the expired key", async || {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM user_api_keys")
                .fetch_one(store.pool())
                .await
                .unwrap();
            rows == 0
        })
        .await;

        let task = sweeper.task.clone();
        drop(sweeper);
        eventually("the sweep task outlived its sweeper", async || {
            task.is_finished()
        })
        .await;
        assert!(Sweeper::start(store, Duration::ZERO).is_err());
    }
}
