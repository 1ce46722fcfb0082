//! Sets up each backend with its hand-written counterpart, runs its rows
//! and removes what the run wrote.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use byok::SqliteStorage;
use byok::byok_redis::redis;
use byok::byok_sql::sqlx::{self, AssertSqlSafe};
use byok::{ByokConfig, KeyStorage, MemoryStorage, MySqlStorage, PostgresStorage, RedisStorage};

use crate::hand::{HandStore, MemoryHand};
use crate::harness::{self, BResult, Row};
use crate::opt::{Opt, Sizes};
use crate::redis::RedisHand;
use crate::rows::Backend;
use crate::sql::{BulkLoad, MySqlHand, PostgresHand, SqliteHand};

/// Sets up byok's store on a database server (URL from `$var`, else
/// `$default`) and its hand-written counterpart, runs the rows, and drops
/// byok's table (the hand-written store drops its own).
macro_rules! server_sql {
    (
        ($name:expr, $config:expr, $hand_table:expr, $users:expr, $sizes:expr, $rows:expr),
        $var:literal, $default:literal, $storage:ty, $hand:ty, $opts:ty
    ) => {{
        let (config, hand_table): (&ByokConfig, &str) = ($config, $hand_table);
        let url = env_or($var, $default);
        let store = <$storage>::connect(&url, config).await?;
        store.migrate().await?;
        let pool = store.pool().clone();
        let hand = <$hand>::create(<$opts>::from_str(&url)?, hand_table).await?;
        let bulk = hand.bulk(pool.clone(), &config.db_table_name);
        let storage: Arc<dyn KeyStorage> = Arc::new(store);
        let result = sql_backend($name, storage, hand, bulk, $users, $sizes, $rows).await;
        drop_table(&pool, &config.db_table_name).await;
        result
    }};
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores available, load average {load} at the start")
}

/// Runs the whole table.
pub(crate) async fn run(opt: Opt) -> BResult<()> {
    for b in &opt.backends {
        if !crate::opt::BACKENDS.contains(&b.as_str()) {
            return Err(format!("unknown backend {b:?}").into());
        }
    }
    for r in &opt.rows {
        if !crate::opt::ROWS.contains(&r.as_str()) {
            return Err(format!("unknown row kind {r:?}").into());
        }
    }
    let sizes = Sizes::of(&opt);
    let started = Instant::now();
    println!(
        "byok-bench{}: {}",
        if opt.quick { " --quick" } else { "" },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("machine: {}", machine());
    println!(
        "sizes: {} rounds, {} ops per round in process, {} per round on servers (x4 at 64 tasks), \
         {} users, {} other keys, {} keys rotated\n",
        sizes.rounds,
        sizes.in_process_ops,
        sizes.server_ops,
        sizes.users,
        sizes.others,
        sizes.rotate_keys
    );
    println!("{}", harness::TABLE_HEADER);
    let mut rows: Vec<Row> = Vec::new();
    if sizes.wants("crypto") {
        let row = crate::cipher_row::row(&sizes).await?;
        crate::emit(&mut rows, row);
    }
    let wants = |b: &str| opt.backends.iter().any(|x| x == b);
    if wants("memory") && sizes.wants("bytes") {
        let keys = sizes.footprint_keys;
        let found = tokio::task::spawn_blocking(move || crate::footprint::rows(keys))
            .await?
            .map_err(|e| e.to_string())?;
        for row in found {
            crate::emit(&mut rows, row);
        }
    }
    let users: Arc<Vec<String>> = Arc::new(
        (0..sizes.users)
            .map(|i| format!("{}user-{i:08}", sizes.namespace))
            .collect(),
    );
    let tag = sizes.namespace.trim_end_matches('-').replace('-', "_");
    let config = ByokConfig::for_tests()
        .with_db_table_name(format!("{tag}_byok"))
        .with_session_key_prefix(format!("{tag}_byok:"));
    let hand_table = format!("{tag}_hand");
    for name in crate::opt::BACKENDS {
        if !wants(name) {
            continue;
        }
        let t = Instant::now();
        eprintln!("{name}: running");
        let result = match name {
            "memory" => {
                let b = Backend {
                    name: name.to_owned(),
                    storage: Arc::new(MemoryStorage::new()),
                    hand: Arc::new(MemoryHand::default()),
                    in_process: true,
                    users: Arc::clone(&users),
                    self_expiring: false,
                    bulk: None,
                };
                b.run(&sizes, &mut rows).await
            }
            "sqlite" => sqlite(&sizes, &config, &hand_table, &users, &mut rows).await,
            "postgres" => {
                server_sql!(
                    (name, &config, &hand_table, &users, &sizes, &mut rows),
                    "BYOK_TEST_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1:5432/test",
                    PostgresStorage,
                    PostgresHand,
                    sqlx::postgres::PgConnectOptions
                )
            }
            "mysql" => {
                server_sql!(
                    (name, &config, &hand_table, &users, &sizes, &mut rows),
                    "BYOK_TEST_MYSQL_URL",
                    "mysql://root@127.0.0.1:3306/test",
                    MySqlStorage,
                    MySqlHand,
                    sqlx::mysql::MySqlConnectOptions
                )
            }
            "redis" => {
                let url = env_or("BYOK_TEST_REDIS_URL", "redis://127.0.0.1:6379");
                let store = RedisStorage::builder(&url).config(&config).open().await?;
                let conn =
                    redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?;
                redis_backend(name, store, conn, &tag, &users, &sizes, &mut rows).await
            }
            "redis-cluster" => {
                let Ok(list) = std::env::var("BYOK_TEST_REDIS_CLUSTER_URLS") else {
                    eprintln!(
                        "redis-cluster: skipped: BYOK_TEST_REDIS_CLUSTER_URLS is not set \
                         (run under scripts/redis-cluster.sh)"
                    );
                    continue;
                };
                let urls: Vec<String> = list.split(',').map(|u| u.trim().to_owned()).collect();
                let store = RedisStorage::builder(urls.join(","))
                    .config(&config)
                    .open()
                    .await?;
                let conn = redis::cluster::ClusterClient::new(urls)?
                    .get_async_connection()
                    .await?;
                redis_backend(name, store, conn, &tag, &users, &sizes, &mut rows).await
            }
            _ => continue,
        };
        match result {
            Ok(()) => eprintln!("{name}: done in {}", harness::fmt_duration(t.elapsed())),
            // Go on with the other backends; the failure is a row of its own.
            Err(e) => crate::emit(
                &mut rows,
                Row {
                    backend: name.to_owned(),
                    operation: "setup or cleanup".to_owned(),
                    tasks: 1,
                    result: harness::RowResult::Failed(e.to_string()),
                },
            ),
        }
    }
    if sizes.wants("web") && (wants("memory") || wants("sqlite")) {
        let t = Instant::now();
        eprintln!("web: running");
        match crate::web_row::rows(&sizes, &config, wants("memory"), wants("sqlite"), &mut rows)
            .await
        {
            Ok(()) => eprintln!("web: done in {}", harness::fmt_duration(t.elapsed())),
            Err(e) => eprintln!("web: {e}"),
        }
    }
    println!(
        "\nThe whole table ({} in all):\n\n{}",
        harness::fmt_duration(started.elapsed()),
        harness::TABLE_HEADER
    );
    for row in &rows {
        println!("{}", row.markdown());
    }
    let failed = rows
        .iter()
        .filter(|r| matches!(r.result, harness::RowResult::Failed(_)))
        .count();
    if failed > 0 {
        return Err(format!("{failed} rows failed (see the table)").into());
    }
    Ok(())
}

async fn sqlite(
    sizes: &Sizes,
    config: &ByokConfig,
    hand_table: &str,
    users: &Arc<Vec<String>>,
    rows: &mut Vec<Row>,
) -> BResult<()> {
    let dir = std::env::temp_dir().join(format!("byok-bench-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        let path = dir.join("byok.db");
        let store = SqliteStorage::connect(&format!("sqlite://{}", path.display()), config).await?;
        store.migrate().await?;
        // WAL and a 5 s busy timeout, as byok; SQLite's default page cache.
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("hand.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let hand = SqliteHand::create(options, hand_table).await?;
        let bulk = hand.bulk(store.pool().clone(), &config.db_table_name);
        sql_backend("sqlite", Arc::new(store), hand, bulk, users, sizes, rows).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn sql_backend<H: HandStore>(
    name: &str,
    storage: Arc<dyn KeyStorage>,
    hand: H,
    bulk: Arc<dyn BulkLoad>,
    users: &Arc<Vec<String>>,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
) -> BResult<()> {
    let hand = Arc::new(hand);
    let b = Backend {
        name: name.to_owned(),
        storage,
        hand: Arc::clone(&hand),
        in_process: false,
        users: Arc::clone(users),
        self_expiring: false,
        bulk: Some(bulk),
    };
    let result = b.run(sizes, rows).await;
    let cleaned = hand.cleanup().await;
    result.and(cleaned)
}

async fn drop_table<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, table: &str)
where
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    // The table name was checked by byok when the store was made.
    let statement = format!("DROP TABLE IF EXISTS {table}");
    if let Err(e) = sqlx::query(AssertSqlSafe(statement)).execute(pool).await {
        eprintln!("could not drop the benchmark table {table}: {e}");
    }
}

async fn redis_backend<C>(
    name: &str,
    store: RedisStorage,
    conn: C,
    tag: &str,
    users: &Arc<Vec<String>>,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
) -> BResult<()>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let slots: Arc<Vec<(String, String)>> = Arc::new(
        users
            .iter()
            .map(|u| (u.clone(), "openai".to_owned()))
            .collect(),
    );
    let hand = Arc::new(RedisHand::new(conn, format!("{tag}_hand:"), slots));
    let admin = store.clone();
    let storage: Arc<dyn KeyStorage> = Arc::new(store);
    let b = Backend {
        name: name.to_owned(),
        storage: Arc::clone(&storage),
        hand: Arc::clone(&hand),
        in_process: false,
        users: Arc::clone(users),
        self_expiring: true,
        bulk: None,
    };
    let result = b.run(sizes, rows).await;
    let cleaned = hand.cleanup().await;
    // byok's keys, the prefix's format marker included.
    let cleared = byok::StoreAdmin::destroy(&admin)
        .await
        .map_err(harness::BoxError::from);
    result.and(cleaned).and(cleared)
}
