//! TieredStorage with memory in front of SQLite passes the conformance suite.

#![cfg(feature = "sqlite")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;

use byok::{ByokConfig, MemoryStorage, SqliteStorage, TieredStorage};

async fn memory_over_sqlite() -> TieredStorage {
    let config = ByokConfig::for_tests();
    let durable = SqliteStorage::connect("sqlite::memory:", &config)
        .await
        .unwrap();
    durable.migrate().await.unwrap();
    TieredStorage::new(Arc::new(MemoryStorage::new()), Arc::new(durable))
}

byok_testkit::conformance_tests!(memory_over_sqlite().await);
