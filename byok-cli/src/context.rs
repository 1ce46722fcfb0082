//! What every command needs: the store, the keyring, redaction, output.

use std::sync::Arc;
use std::time::Duration;

use byok::byok_sql::sqlx;
use byok::{Byok, ByokConfig, KeyStorage, Keyring};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::{CliError, CliResult, Exit};
use crate::opt::{KeyringOpts, StoreOpts};
use crate::output::out;

/// The variable that holds the keyring text.
pub(crate) const KEYRING_VAR: &str = "BYOK_KEYRING";

pub(crate) use crate::secrets::redact;

/// The file of a `sqlite:` URL, unless it names an in-memory database.
pub(crate) fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || params.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// The configuration the command opens stores with: no background purge
/// (a command is short-lived), the table and prefix of `store`.
pub(crate) fn config(table: &str, prefix: &str) -> ByokConfig {
    ByokConfig::for_tests()
        .with_db_table_name(table)
        .with_session_key_prefix(prefix)
}

/// An open store and how to name it in messages.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    /// The store.
    pub(crate) storage: Arc<dyn KeyStorage>,
    /// Its URL, redacted.
    pub(crate) name: String,
}

/// Whether opening a store may create its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Run the backend's idempotent migration.
    Create,
    /// Leave the schema as it is.
    AsItIs,
}

impl Store {
    /// Opens the store of `opts`.
    pub(crate) async fn open(opts: &StoreOpts, schema: Schema) -> CliResult<Store> {
        Self::open_url(&opts.url, &opts.table, &opts.prefix, schema).await
    }

    /// Opens the store at `url` with this table and prefix.
    pub(crate) async fn open_url(
        url: &str,
        table: &str,
        prefix: &str,
        schema: Schema,
    ) -> CliResult<Store> {
        let name = redact(url);
        if schema == Schema::AsItIs
            && let Some(path) = sqlite_file(url)
            && !path.exists()
        {
            return Err(CliError::new(
                Exit::Store,
                format!(
                    "there is no SQLite database at {}; create it with `byok migrate`, or \
                     name another with --store",
                    path.display()
                ),
            ));
        }
        let config = config(table, prefix);
        let fail = |e: byok::ByokError| {
            CliError::from_byok(&format!("cannot open the store {name}"), &e, None)
        };
        if let Ok(byok::StorageBackend::Redis) = byok::StorageBackend::from_url(url) {
            let redis = byok::RedisStorage::open(url, &config).await.map_err(fail)?;
            // Opening writes nothing; `migrate` and `set` mark the prefix as
            // a store, other commands refuse a prefix that is none.
            match schema {
                Schema::Create => {
                    redis.migrate().await.map_err(fail)?;
                }
                Schema::AsItIs => {
                    if !redis.is_marked().await.map_err(fail)? {
                        return Err(CliError::new(
                            Exit::Store,
                            format!(
                                "there is no byok store under the key prefix {prefix:?} at \
                                 {name}; check --prefix (or BYOK_PREFIX), or create one with \
                                 `byok migrate`"
                            ),
                        ));
                    }
                }
            }
            return Ok(Store {
                storage: Arc::new(redis),
                name,
            });
        }
        let opened = match schema {
            Schema::Create => byok::connect_with(url, &config).await,
            Schema::AsItIs => byok::open_with(url, &config).await,
        };
        let storage = opened.map_err(fail)?;
        Ok(Store { storage, name })
    }

    /// `what` failed on this store.
    pub(crate) fn fail(&self, what: &str) -> impl Fn(byok::ByokError) -> CliError + '_ {
        let what = what.to_owned();
        move |e| CliError::from_byok(&what, &e, Some(&self.name))
    }
}

/// Reads the keyring of `opts`, or of `BYOK_KEYRING`.
pub(crate) fn keyring(opts: &KeyringOpts) -> CliResult<Keyring> {
    if let Some(path) = &opts.keyring {
        return crate::kms::from_file(path).map_err(|e| {
            CliError::new(
                Exit::Config,
                format!(
                    "cannot use the keyring file {}: {}{}",
                    path.display(),
                    e.message(),
                    std::error::Error::source(&e)
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default()
                ),
            )
        });
    }
    match std::env::var_os(KEYRING_VAR) {
        None => Err(CliError::new(
            Exit::Config,
            format!(
                "no keyring: set {KEYRING_VAR} to a keyring or pass --keyring FILE \
                 (make one with `byok keygen --out keyring.txt`)"
            ),
        )),
        Some(_) => crate::kms::from_env(KEYRING_VAR).map_err(|e| {
            CliError::new(
                Exit::Config,
                format!("cannot use the keyring in {KEYRING_VAR}: {}", e.message()),
            )
        }),
    }
}

/// The variable that sets how long keys set without `--ttl` live.
pub(crate) const DEFAULT_TTL_VAR: &str = "BYOK_DEFAULT_TTL";

/// How long keys set without `--ttl` live: `BYOK_DEFAULT_TTL` (a duration
/// such as `30d`, or `never`), else the library's default, 24 hours.
pub(crate) fn default_ttl() -> CliResult<Option<Duration>> {
    match std::env::var(DEFAULT_TTL_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(ByokConfig::default().default_ttl),
        Ok(text) if text.trim().eq_ignore_ascii_case("never") => Ok(None),
        Ok(text) => match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            _ => Err(CliError::usage(format!(
                "{DEFAULT_TTL_VAR} must be a duration such as 30d or 12h, or `never`"
            ))),
        },
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::usage(format!(
            "{DEFAULT_TTL_VAR} must be a duration such as 30d or 12h, or `never`"
        ))),
    }
}

/// A manager over `store` with `keyring`, without background tasks.
pub(crate) fn manager(store: &Store, keyring: Keyring) -> CliResult<Byok> {
    Byok::builder(store.storage.clone(), keyring)
        .config(config("user_api_keys", "byok_").with_default_ttl(default_ttl()?))
        .build()
        .map_err(|e| CliError::from_byok("cannot start", &e, None))
}

/// Prints `value` as pretty JSON on standard output.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(Exit::Problem, format!("cannot print JSON: {e}")))?;
    out!("{text}")?;
    Ok(())
}

/// A progress bar on standard error; invisible when that is not a terminal.
pub(crate) fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} keys ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A progress bar over `len` keys of which `done` are done already (a
/// resumed walk). It counts the keys left, so that its rate and time left
/// are those of this run, not skewed by the keys done before it started.
pub(crate) fn progress_from(len: u64, done: u64, what: &str) -> ProgressBar {
    if done == 0 {
        return progress(Some(len), what);
    }
    progress(
        Some(len.saturating_sub(done)),
        &format!("{what} (resumed; {done} done before)"),
    )
}

/// Counts the unexpired keys of a store, page by page, decrypting nothing.
pub(crate) async fn count_keys(store: &Store, page_size: usize) -> CliResult<u64> {
    let mut cursor = None;
    let mut n = 0;
    loop {
        let page = store
            .storage
            .scan(cursor.as_ref(), page_size)
            .await
            .map_err(store.fail("counting the keys failed"))?;
        n += page.keys.len() as u64;
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(n),
        }
    }
}

/// A page size within what every backend accepts.
pub(crate) fn page_size(n: usize) -> CliResult<usize> {
    if (1..=byok::validate::MAX_PAGE_SIZE).contains(&n) {
        Ok(n)
    } else {
        Err(CliError::usage(format!(
            "the page size must be from 1 to {}",
            byok::validate::MAX_PAGE_SIZE
        )))
    }
}

/// An empty table in the house style.
pub(crate) fn new_table() -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table
}

/// A store by its concrete type, for what the [`KeyStorage`] trait does
/// not offer: SQL statements on its pool (dropping a scratch table,
/// counting expired rows).
#[derive(Debug)]
pub(crate) enum Concrete {
    Sqlite(byok::SqliteStorage),
    Postgres(byok::PostgresStorage),
    MySql(byok::MySqlStorage),
    Redis(byok::RedisStorage),
    /// Memory.
    Other,
}

impl Concrete {
    /// Opens the store at `url` without running DDL.
    pub(crate) async fn open(
        url: &str,
        config: &ByokConfig,
    ) -> byok::Result<(Arc<dyn KeyStorage>, Concrete)> {
        Ok(match byok::StorageBackend::from_url(url)? {
            byok::StorageBackend::Sqlite => {
                let s = byok::SqliteStorage::connect(url, config).await?;
                (Arc::new(s.clone()), Concrete::Sqlite(s))
            }
            byok::StorageBackend::Postgres => {
                let s = byok::PostgresStorage::connect(url, config).await?;
                (Arc::new(s.clone()), Concrete::Postgres(s))
            }
            byok::StorageBackend::MySql => {
                let s = byok::MySqlStorage::connect(url, config).await?;
                (Arc::new(s.clone()), Concrete::MySql(s))
            }
            byok::StorageBackend::Redis => {
                let s = byok::RedisStorage::open(url, config).await?;
                (Arc::new(s.clone()), Concrete::Redis(s))
            }
            _ => (byok::open_with(url, config).await?, Concrete::Other),
        })
    }

    /// Whether this is a SQL store.
    pub(crate) fn is_sql(&self) -> bool {
        !matches!(self, Concrete::Redis(_) | Concrete::Other)
    }

    /// Creates the schema of a SQL store.
    pub(crate) async fn migrate(&self) -> byok::Result<()> {
        match self {
            Concrete::Sqlite(s) => s.migrate().await,
            Concrete::Postgres(s) => s.migrate().await,
            Concrete::MySql(s) => s.migrate().await,
            Concrete::Redis(_) | Concrete::Other => Ok(()),
        }
    }

    /// Drops the table of a SQL store.
    pub(crate) async fn drop_table(&self) -> Result<(), sqlx::Error> {
        let drop = |table: &str| format!("DROP TABLE IF EXISTS {table}");
        // Table names are checked as plain identifiers when the store opens.
        match self {
            Concrete::Sqlite(s) => {
                sqlx::query(sqlx::AssertSqlSafe(drop(s.table_name())))
                    .execute(s.pool())
                    .await?;
            }
            Concrete::Postgres(s) => {
                sqlx::query(sqlx::AssertSqlSafe(drop(s.table_name())))
                    .execute(s.pool())
                    .await?;
            }
            Concrete::MySql(s) => {
                sqlx::query(sqlx::AssertSqlSafe(drop(s.table_name())))
                    .execute(s.pool())
                    .await?;
            }
            Concrete::Redis(_) | Concrete::Other => {}
        }
        Ok(())
    }

    /// How many expired keys a SQL store still holds; `None` for other
    /// stores (Redis drops expired keys by itself).
    pub(crate) async fn count_expired(&self) -> Option<Result<u64, sqlx::Error>> {
        let now_ms = byok::chrono::Utc::now().timestamp_millis();
        let count = |table: &str, bound: &str| {
            format!(
                "SELECT COUNT(*) FROM {table} WHERE expires_at IS NOT NULL AND expires_at <= {bound}"
            )
        };
        let n: Result<i64, sqlx::Error> = match self {
            Concrete::Sqlite(s) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(count(s.table_name(), "?")))
                    .bind(now_ms)
                    .fetch_one(s.pool())
                    .await
            }
            Concrete::Postgres(s) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(count(
                    s.table_name(),
                    "to_timestamp($1::bigint / 1000.0)",
                )))
                .bind(now_ms)
                .fetch_one(s.pool())
                .await
            }
            Concrete::MySql(s) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(count(s.table_name(), "?")))
                    .bind(now_ms)
                    .fetch_one(s.pool())
                    .await
            }
            Concrete::Redis(_) | Concrete::Other => return None,
        };
        Some(n.map(|n| u64::try_from(n).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_bar_counts_only_this_run() {
        let bar = progress_from(1_000_000, 500_000, "rotating");
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        assert_eq!(bar.length(), Some(500_000));
        assert_eq!(bar.position(), 0);
        std::thread::sleep(Duration::from_millis(200));
        bar.inc(100);
        bar.tick();
        // About 500 keys a second; counting the resumed half would make
        // it millions.
        assert!(bar.per_sec() < 5_000.0, "{}", bar.per_sec());
        bar.finish_and_clear();
    }

    #[test]
    fn sqlite_files_are_told_from_memory_databases() {
        assert_eq!(sqlite_file("sqlite://./a.db"), Some("./a.db".into()));
        assert_eq!(sqlite_file("sqlite:a.db?mode=rwc"), Some("a.db".into()));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
