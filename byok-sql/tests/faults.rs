//! Network faults between a store and the shared test PostgreSQL or
//! MariaDB, injected by a loopback proxy (`byok_testkit::proxy`), never on
//! the server itself: during an outage every call fails retryably within
//! the store's operation deadline, and afterwards the same store works
//! again with every acknowledged write intact. Each test works on a table
//! of its own and prints its figures on a `fault <engine> …` line.

#![cfg(any(feature = "postgres", feature = "mysql"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use std::io::Write as _;
use std::time::Duration;

use byok_core::{ByokConfig, KeyStorage};
use byok_testkit::faults::{Fault, outage};
use byok_testkit::proxy::FaultProxy;

/// The deadline of each operation of the stores under test.
const DEADLINE: Duration = Duration::from_secs(1);

/// The hang detector: far above the deadline.
const BOUND: Duration = Duration::from_secs(30);

/// The config of a store on `table`.
fn config(table: &str) -> ByokConfig {
    ByokConfig::default().with_db_table_name(table)
}

async fn report(engine: &str, store: &dyn KeyStorage, proxy: &FaultProxy, fault: Fault) {
    match outage(store, proxy, fault, BOUND).await {
        Ok(report) => {
            let _ = writeln!(std::io::stderr(), "fault {engine} {report}");
        }
        Err(failure) => panic!("{engine}, {fault}: {failure}"),
    }
}

/// The four faults, one test each, over the engine module's `check`.
macro_rules! fault_cases {
    () => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_crash_fails_every_call_retryably_then_recovers() {
            check(Fault::Crash).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_stall_times_every_call_out_then_recovers() {
            check(Fault::Stall).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cut_connections_are_replaced() {
            check(Fault::Cut).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn latency_inside_the_deadline_changes_nothing() {
            check(Fault::Latency(Duration::from_millis(20))).await;
        }
    };
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use byok_sql::PostgresStorage;
    use byok_sql::sqlx::postgres::PgConnection;

    const LIST_TABLES: &str = "SELECT tablename::text FROM pg_tables \
         WHERE schemaname = current_schema() AND tablename LIKE 'byok\\_test\\_%'";

    async fn check(fault: Fault) {
        let Some(url) = byok_testkit::services::postgres_url().await else {
            return;
        };
        // The table is made and dropped directly; only the store under
        // test goes through the proxy.
        let scratch = common::scratch::<PgConnection, _>(
            url.clone(),
            LIST_TABLES,
            PostgresStorage::connect,
            PostgresStorage::migrate,
        )
        .await;
        let (proxy, through) = FaultProxy::in_front_of(&url, 5432).await.unwrap();
        let store = PostgresStorage::connect(&through, &config(scratch.store.table_name()))
            .await
            .unwrap()
            .with_operation_timeout(DEADLINE)
            .unwrap();
        report("postgres", &store, &proxy, fault).await;
    }

    fault_cases!();
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use byok_sql::MySqlStorage;
    use byok_sql::sqlx::mysql::MySqlConnection;

    const LIST_TABLES: &str = "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE 'byok\\_test\\_%'";

    async fn check(fault: Fault) {
        let Some(url) = byok_testkit::services::mysql_url().await else {
            return;
        };
        let scratch = common::scratch::<MySqlConnection, _>(
            url.clone(),
            LIST_TABLES,
            MySqlStorage::connect,
            MySqlStorage::migrate,
        )
        .await;
        let (proxy, through) = FaultProxy::in_front_of(&url, 3306).await.unwrap();
        let store = MySqlStorage::connect(&through, &config(scratch.store.table_name()))
            .await
            .unwrap()
            .with_operation_timeout(DEADLINE)
            .unwrap();
        report("mysql", &store, &proxy, fault).await;
    }

    fault_cases!();
}
