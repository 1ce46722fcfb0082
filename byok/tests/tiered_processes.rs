//! `TieredStorage` shared by two OS processes: a Redis fast store in front
//! of a SQLite file, and in front of PostgreSQL.
//!
//! The test binary runs itself a second time as a reader (the
//! `reader_process` test, which does nothing unless [`READER`] is set):
//! four tasks read the slots in a tight loop, filling the shared Redis on
//! every miss. Meanwhile this process deletes, replaces and rotates keys
//! through a `TieredStorage` of its own, and after each write has returned
//! asks a third `TieredStorage` (no state shared with the writer but the
//! servers, as in any other process) what the slot holds. A round is stale
//! when that answer differs from the durable store's. Each test prints its
//! figures on a `cross-process …` line.
//!
//! The last test measures the one window that remains without strict
//! writes: a key deleted while the writer could not reach Redis, read by
//! others from Redis until the copy's lifetime ends.

#![cfg(all(feature = "redis", feature = "sqlite"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use byok::byok_redis::RedisOptions;
use byok::{
    ApiKey, Byok, ByokConfig, ByokError, EncryptionError, KeyStorage, Keyring, MasterKey,
    RedisStorage, TieredStorage,
};
use byok_testkit::Namespace;
use byok_testkit::proxy::FaultProxy;

/// Set in the environment of the reader process: the fast store's URL,
/// then the durable store's, then the key prefix, the table and the user,
/// separated by spaces.
const READER: &str = "BYOK_TEST_TIERED_READER";

/// The slots the writer changes and the reader reads.
const DELETED: &str = "deleted";
const REPLACED: &str = "replaced";
const ROTATED: &str = "rotated";

/// Rounds of each kind; rotations re-encrypt the whole table, so fewer.
const ROUNDS: usize = 60;
const ROTATIONS: usize = 10;

/// The reader runs at most this long, even if nobody stops it.
const READER_LIMIT: Duration = Duration::from_secs(120);

/// The reader's loop, in the second process.
#[test]
fn reader_process() {
    let Ok(spec) = std::env::var(READER) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [fast_url, durable_url, prefix, table, user] = parts[..] else {
        panic!("{READER} must hold five fields");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = config(prefix, table);
        let store = Arc::new(tiered(fast_url, durable_url, &config).await);
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (store, stop, reads) = (store.clone(), stop.clone(), reads.clone());
            let user = user.to_owned();
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for provider in [DELETED, REPLACED, ROTATED] {
                        // Errors are the writer's business; the reader only
                        // has to keep filling.
                        let _ = store.retrieve(&user, provider).await;
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let _ = writeln!(std::io::stdout(), "byok-reader-ready");
        std::io::stdout().flush().unwrap();
        // The writer closes our standard input when it is done.
        let eof = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        });
        let _ = tokio::time::timeout(READER_LIMIT, eof).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let _ = writeln!(
            std::io::stdout(),
            "byok-reader-reads {}",
            reads.load(Ordering::Relaxed)
        );
    });
}

fn config(prefix: &str, table: &str) -> ByokConfig {
    ByokConfig::default()
        .with_session_key_prefix(prefix)
        .with_db_table_name(table)
        .with_auto_cleanup(false)
}

/// A `TieredStorage` as an application builds it: both stores opened by
/// `connect_with`.
async fn tiered(fast_url: &str, durable_url: &str, config: &ByokConfig) -> TieredStorage {
    let fast = byok::connect_with(fast_url, config).await.unwrap();
    let durable = byok::connect_with(durable_url, config).await.unwrap();
    TieredStorage::new(fast, durable)
}

/// The reader process; killed when dropped.
struct ReaderProcess(Child);

impl ReaderProcess {
    fn start(spec: &str) -> ReaderProcess {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "reader_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(READER, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = ReaderProcess(child);
        let mut lines = BufReader::new(stdout).lines();
        // Bounded: the line comes, or the process ends and the lines do.
        loop {
            match lines.next() {
                // libtest may print the test's name on the same line.
                Some(Ok(line)) if line.ends_with("byok-reader-ready") => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = reader.0.kill();
                    panic!("the reader process ended before it was ready");
                }
            }
        }
        reader.0.stdout = None;
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("byok-reader-reads") {
                    let _ = writeln!(std::io::stdout(), "{line}");
                }
            }
        });
        reader
    }

    /// Closes the reader's input, which stops it, and waits for it.
    fn stop(mut self) {
        drop(self.0.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                assert!(status.success(), "the reader process failed: {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the reader process did not stop");
    }
}

impl Drop for ReaderProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// How many rounds of each kind ended stale.
#[derive(Debug, Default)]
struct Stale {
    deleted: usize,
    replaced: usize,
    rotated: usize,
}

/// Whether a process that shares nothing with the writer but the servers
/// reads what the durable store holds, several times over 30 ms (a late
/// fill lands within that).
async fn agrees(observer: &TieredStorage, user: &str, provider: &str) -> bool {
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let seen = observer.retrieve(user, provider).await.unwrap();
        let truth = observer.durable().retrieve(user, provider).await.unwrap();
        if seen.as_ref().map(ApiKey::encrypted_value) != truth.as_ref().map(ApiKey::encrypted_value)
        {
            return false;
        }
    }
    true
}

/// A time for the reader to see (and fill) the key the writer just stored.
async fn let_the_reader_fill() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn run_rounds(durable_url: &str, label: &str, strict: bool) {
    let Some(redis_url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let ns = Namespace::new();
    let random = ns
        .prefix()
        .trim_start_matches("byok-test-")
        .trim_end_matches('-')
        .to_owned();
    let (prefix, table) = (
        format!("byok_test_{random}_"),
        format!("byok_test_{random}"),
    );
    let user = ns.user("writer");
    let config = config(&prefix, &table);
    let writer = tiered(&redis_url, durable_url, &config)
        .await
        .with_strict_writes(strict);
    let observer = tiered(&redis_url, durable_url, &config).await;
    let reader = ReaderProcess::start(&format!(
        "{redis_url} {durable_url} {prefix} {table} {user}"
    ));

    let mut stale = Stale::default();
    for round in 0..ROUNDS {
        let key = |v: u8| ApiKey::new(&user, DELETED, vec![v, round as u8]).unwrap();
        writer.store(&key(1)).await.unwrap();
        let_the_reader_fill().await;
        writer.delete(&user, DELETED).await.unwrap();
        if !agrees(&observer, &user, DELETED).await {
            stale.deleted += 1;
        }

        let key = |v: u8| ApiKey::new(&user, REPLACED, vec![v, round as u8]).unwrap();
        writer.store(&key(1)).await.unwrap();
        let_the_reader_fill().await;
        writer.store(&key(2)).await.unwrap();
        if !agrees(&observer, &user, REPLACED).await {
            stale.replaced += 1;
        }
    }

    // Each rotation: a key under an old master key, rotated to a new one;
    // then a manager that holds only the new key must read it. The raw
    // values above are no ciphertexts: removed first.
    writer.delete(&user, REPLACED).await.unwrap();
    let writer: Arc<dyn KeyStorage> = Arc::new(writer);
    let observer: Arc<dyn KeyStorage> = Arc::new(observer);
    for round in 0..ROTATIONS {
        let (old_id, new_id) = (2 * round as u32 + 1, 2 * round as u32 + 2);
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let mut both = Keyring::new(old_id, old.clone());
        both.add(new_id, new.clone()).unwrap();
        both.set_primary(new_id).unwrap();
        let before = Byok::new(writer.clone(), Keyring::new(old_id, old), config.clone()).unwrap();
        let during = Byok::new(writer.clone(), both, config.clone()).unwrap();
        let after = Byok::new(observer.clone(), Keyring::new(new_id, new), config.clone()).unwrap();
        before
            .set_key(&user, ROTATED, "sk-rotated-key", byok::Ttl::Never)
            .await
            .unwrap();
        let_the_reader_fill().await;
        let report = during.rotate().await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
        match after.get_key(&user, ROTATED).await {
            Ok(Some(_)) => {}
            Err(ByokError::Encryption(EncryptionError::UnknownKeyId { .. })) => stale.rotated += 1,
            other => panic!("reading a rotated key: {other:?}"),
        }
    }
    reader.stop();
    let _ = writeln!(
        std::io::stdout(),
        "cross-process {label}: stale rounds: deleted {}/{ROUNDS}, replaced {}/{ROUNDS}, \
         rotated {}/{ROTATIONS}",
        stale.deleted,
        stale.replaced,
        stale.rotated
    );

    ns.cleanup(observer.as_ref()).await;
    remove_prefix(&redis_url, &prefix).await;
    #[cfg(feature = "postgres")]
    if durable_url.starts_with("postgres") {
        use byok::byok_sql::sqlx;
        let pool = sqlx::PgPool::connect(durable_url).await.unwrap();
        // The table's name was made here from hex digits.
        let drop = sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}"));
        sqlx::query(drop).execute(&pool).await.unwrap();
    }
    assert_eq!(
        (stale.deleted, stale.replaced, stale.rotated),
        (0, 0, 0),
        "{label}: a process read a key that the durable store no longer held, \
         after the write had returned"
    );
}

/// Removes every Redis key under the prefix (copies, leases, holds).
async fn remove_prefix(redis_url: &str, prefix: &str) {
    use byok::byok_redis::redis;
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor = 0u64;
    for _ in 0..10_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
}

/// A SQLite file in a fresh directory, removed when dropped.
struct SqliteFile(std::path::PathBuf);

impl SqliteFile {
    fn new() -> SqliteFile {
        let random: u64 = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        );
        let dir = std::env::temp_dir().join(format!("byok-tiered-{random:x}"));
        std::fs::create_dir_all(&dir).unwrap();
        SqliteFile(dir)
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.join("keys.db").display())
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_over_a_sqlite_file_never_read_a_deleted_or_replaced_key() {
    let file = SqliteFile::new();
    run_rounds(&file.url(), "redis over sqlite", false).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_over_postgres_never_read_a_deleted_or_replaced_key() {
    let Some(url) = byok_testkit::services::postgres_url().await else {
        return;
    };
    run_rounds(&url, "redis over postgres", false).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_strict_writes_never_read_a_deleted_or_replaced_key() {
    let Some(url) = byok_testkit::services::postgres_url().await else {
        return;
    };
    run_rounds(&url, "redis over postgres, strict writes", true).await;
}

/// The copy lifetime of the outage test: short, so that the test waits it
/// out.
const OUTAGE_COPY_TTL: Duration = Duration::from_secs(2);

/// A delete made while the writer cannot reach Redis (a proxy refuses its
/// connections; the others reach Redis directly): without strict writes it
/// succeeds on the durable store, and the others read the deleted key from
/// Redis until the copy's lifetime ends, never longer. With strict writes
/// the delete is refused and nothing is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_while_the_writer_cannot_reach_redis_is_served_for_at_most_the_copy_ttl() {
    let Some(redis_url) = byok_testkit::services::redis_url().await else {
        return;
    };
    let ns = Namespace::new();
    let random = ns
        .prefix()
        .trim_start_matches("byok-test-")
        .trim_end_matches('-')
        .to_owned();
    let prefix = format!("byok_test_{random}_");
    let config = config(&prefix, "unused");
    let user = ns.user("outage");
    let file = SqliteFile::new();
    let durable = byok::connect_with(&file.url(), &config).await.unwrap();
    let (proxy, through) = FaultProxy::in_front_of(&redis_url, 6379).await.unwrap();
    let options = RedisOptions::default()
        .with_connection_timeout(Duration::from_millis(300))
        .with_response_timeout(Duration::from_millis(300));
    let cut_off = Arc::new(
        RedisStorage::builder(&through)
            .config(&config)
            .options(options)
            .open()
            .await
            .unwrap(),
    );
    let others = byok::connect_with(&redis_url, &config).await.unwrap();
    let writer =
        TieredStorage::new(cut_off.clone(), durable.clone()).with_copy_ttl(OUTAGE_COPY_TTL);
    let strict_writer = TieredStorage::new(cut_off, durable.clone())
        .with_copy_ttl(OUTAGE_COPY_TTL)
        .with_strict_writes(true);
    let observer = TieredStorage::new(others, durable.clone()).with_copy_ttl(OUTAGE_COPY_TTL);

    // Without strict writes.
    let key = ApiKey::new(&user, DELETED, vec![1]).unwrap();
    writer.store(&key).await.unwrap();
    assert!(observer.retrieve(&user, DELETED).await.unwrap().is_some());
    proxy.refuse();
    proxy.cut();
    assert!(writer.delete(&user, DELETED).await.unwrap());
    let deleted = Instant::now();
    proxy.resume();
    assert!(writer.retrieve(&user, DELETED).await.unwrap().is_none());
    // The window is measured up to the start of the last read that was
    // served the key, so a slow test machine cannot stretch it.
    let (mut served, mut window) = (0u32, Duration::ZERO);
    loop {
        let started = deleted.elapsed();
        if observer.retrieve(&user, DELETED).await.unwrap().is_none() {
            break;
        }
        (served, window) = (served + 1, started);
        assert!(
            started < Duration::from_secs(30),
            "the deleted key is still served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // With strict writes.
    let key = ApiKey::new(&user, REPLACED, vec![1]).unwrap();
    strict_writer.store(&key).await.unwrap();
    assert!(observer.retrieve(&user, REPLACED).await.unwrap().is_some());
    proxy.refuse();
    proxy.cut();
    let refused = strict_writer.delete(&user, REPLACED).await.unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    proxy.resume();
    let seen = observer.retrieve(&user, REPLACED).await.unwrap();
    let truth = durable.retrieve(&user, REPLACED).await.unwrap();
    assert_eq!(
        seen.map(|k| k.encrypted_value().to_vec()),
        truth.map(|k| k.encrypted_value().to_vec()),
        "a refused delete left the tiers disagreeing"
    );

    let _ = writeln!(
        std::io::stdout(),
        "cross-process outage: a key deleted while the writer could not reach Redis was \
         served to others for {window:?} ({served} reads; copy TTL {OUTAGE_COPY_TTL:?}); \
         with strict writes the delete was refused ({refused})"
    );
    remove_prefix(&redis_url, &prefix).await;
    assert!(
        window <= OUTAGE_COPY_TTL,
        "served {window:?}, longer than the copy's lifetime"
    );
}
