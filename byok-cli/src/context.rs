//! What every command needs: the store, the keyring, redaction, output.

use std::time::Duration;

use byok::{Byok, ByokConfig, Keyring, SchemaStatus};
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
    /// The store, with its admin side.
    pub(crate) storage: byok::Store,
    /// Its URL, redacted.
    pub(crate) name: String,
}

/// Whether opening a store may create its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Run the backend's idempotent migration.
    Create,
    /// Leave the schema as it is, and refuse a store that has none.
    AsItIs,
}

impl Store {
    /// Opens the store of `opts`.
    pub(crate) async fn open(opts: &StoreOpts, schema: Schema) -> CliResult<Store> {
        Self::open_url(&opts.url, &opts.table, &opts.prefix, schema).await
    }

    /// Opens the store at `url` with this table and prefix. Opening
    /// writes nothing; with [`Schema::Create`] the store is migrated, and
    /// with [`Schema::AsItIs`] a store without its schema (a mistyped
    /// table or prefix) is refused.
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
        let fail = |e: byok::ByokError| {
            CliError::from_byok(&format!("cannot open the store {name}"), &e, None)
        };
        let storage = byok::open_with(url, &config(table, prefix))
            .await
            .map_err(fail)?;
        match schema {
            Schema::Create => storage.migrate().await.map_err(fail)?,
            Schema::AsItIs => {
                if storage.schema_status().await.map_err(fail)? == SchemaStatus::Missing {
                    let (place, option) = if storage.backend() == "redis" {
                        (
                            format!("under the key prefix {prefix:?}"),
                            "--prefix (or BYOK_PREFIX)",
                        )
                    } else {
                        (format!("in the table {table}"), "--table (or BYOK_TABLE)")
                    };
                    return Err(CliError::new(
                        Exit::Store,
                        format!(
                            "there is no byok store {place} at {name}; check {option}, or \
                             create one with `byok migrate`"
                        ),
                    ));
                }
            }
        }
        Ok(Store { storage, name })
    }

    /// How many live keys the store holds, counted by the store (in one
    /// request where the backend can).
    pub(crate) async fn count(&self) -> CliResult<u64> {
        self.storage
            .count()
            .await
            .map_err(self.fail("counting the keys failed"))
    }

    /// What `each` makes of every live key of the store, walked page by
    /// page; `what` names the walk in errors.
    pub(crate) async fn map_keys<T>(
        &self,
        page_size: usize,
        what: &str,
        mut each: impl FnMut(&byok::ApiKey) -> T,
    ) -> CliResult<Vec<T>> {
        use futures_util::StreamExt as _;
        let mut keys = byok::store::keys(&self.storage, page_size);
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            out.push(each(&key.map_err(self.fail(what))?));
        }
        Ok(out)
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
