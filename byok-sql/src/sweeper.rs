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
