//! The everyday commands: `migrate`, `set`, `get`, `list`, `rm`, `clear`,
//! `purge`.

use std::io::{IsTerminal as _, Read as _};

use byok::chrono::{DateTime, Utc};
use byok::display::{format_expiration, format_key_age};
use byok::secrecy::ExposeSecret;
use byok::{ApiKey, KeyStorage as _, Ttl};
use comfy_table::Table;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::context::{self, Schema, Store};
use crate::error::{CliError, CliResult};
use crate::opt::{GetOpts, KeyringOpts, ListOpts, MigrateOpts, SetOpts, StoreOpts};
use crate::output::out;
use crate::{secrets, terminal};

/// `byok migrate`.
pub(crate) async fn migrate(migrate: &MigrateOpts, opts: &StoreOpts, json: bool) -> CliResult {
    if migrate.print_sql {
        return print_sql(opts, json);
    }
    if migrate.check {
        return check_schema(opts, json).await;
    }
    let store = Store::open(opts, Schema::Create).await?;
    if json {
        context::print_json(&serde_json::json!({ "store": store.name, "migrated": true }))
    } else {
        out!("the schema of {} is up to date", store.name)?;
        Ok(())
    }
}

/// `byok migrate --check`: where the schema stands, read without writing.
async fn check_schema(opts: &StoreOpts, json: bool) -> CliResult {
    let name = context::redact(&opts.url);
    let fail =
        |e: byok::ByokError| CliError::from_byok("reading the schema failed", &e, Some(&name));
    // A SQLite file that is not there is not created to be looked at.
    let status = if context::sqlite_file(&opts.url).is_some_and(|path| !path.exists()) {
        byok::SchemaStatus::Missing
    } else {
        let store = byok::open_with(&opts.url, &context::config(&opts.table, &opts.prefix))
            .await
            .map_err(fail)?;
        store.schema_status().await.map_err(fail)?
    };
    if json {
        context::print_json(&serde_json::json!({ "store": name, "schema": status }))?;
    } else {
        out!("the schema of {name} is {status}")?;
    }
    match status {
        byok::SchemaStatus::Missing | byok::SchemaStatus::Older { .. } => Err(CliError::problem(
            format!("the schema of {name} is {status}; run `byok migrate`"),
        )),
        _ => Ok(()),
    }
}

/// `byok migrate --print-sql`: the schema statements of the store's engine
/// and table, without connecting.
fn print_sql(opts: &StoreOpts, json: bool) -> CliResult {
    let fail = |e: byok::ByokError| CliError::from_byok("cannot print the schema", &e, None);
    let backend = byok::StorageBackend::from_url(&opts.url).map_err(|e| fail(e.into()))?;
    let statements = match backend {
        byok::StorageBackend::Sqlite => byok::SqliteStorage::schema_sql(&opts.table),
        byok::StorageBackend::Postgres => byok::PostgresStorage::schema_sql(&opts.table),
        byok::StorageBackend::MySql => byok::MySqlStorage::schema_sql(&opts.table),
        other => {
            return Err(CliError::usage(format!(
                "--print-sql is for SQL stores (sqlite:, postgres:, mysql:), not {other}"
            )));
        }
    }
    .map_err(fail)?;
    if json {
        return context::print_json(&statements);
    }
    for statement in &statements {
        out!("{statement};")?;
    }
    Ok(())
}

/// Reads an API key from standard input: a prompt without echo on a
/// terminal, else everything up to the end, less the trailing newline.
///
/// The prompt runs on a thread of its own, so that Ctrl-C ends the command
/// at once; the terminal's settings (echo) are put back on every way out.
pub(crate) async fn read_key() -> CliResult<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let mut key = if stdin.is_terminal() {
        terminal::save();
        let read = tokio::task::spawn_blocking(|| {
            rpassword::prompt_password("API key (not shown): ").map(Zeroizing::new)
        })
        .await;
        terminal::restore();
        match read {
            Ok(Ok(key)) => key,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                return Err(CliError::new(
                    crate::error::Exit::Interrupted,
                    "interrupted; nothing was stored",
                ));
            }
            Ok(Err(e)) => return Err(CliError::usage(format!("cannot read the key: {e}"))),
            Err(_) => return Err(CliError::usage("cannot read the key")),
        }
    } else {
        let mut text = Zeroizing::new(String::new());
        stdin.lock().read_to_string(&mut text).map_err(|_| {
            CliError::usage("cannot read the key from standard input: it is not UTF-8 text")
        })?;
        text
    };
    while key.ends_with('\n') || key.ends_with('\r') {
        key.pop();
    }
    if key.is_empty() {
        return Err(CliError::usage(
            "no key on standard input; pipe it in (`byok set PROVIDER --user U < key.txt`) \
             or type it at the prompt",
        ));
    }
    Ok(key)
}

fn ttl(opts: &SetOpts) -> CliResult<Ttl> {
    if opts.no_expiry {
        return Ok(Ttl::Never);
    }
    match &opts.ttl {
        None => Ok(Ttl::Default),
        Some(text) => humantime::parse_duration(text)
            .map(Ttl::After)
            .map_err(|e| {
                CliError::usage(format!(
                    "--ttl {text:?} is not a duration ({e}); try 30d or 12h"
                ))
            }),
    }
}

/// A duration as `--ttl` takes it: `24h`, `30d`, `90min`.
fn short_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => humantime::format_duration(d).to_string(),
        s if s % 86_400 == 0 && s >= 7 * 86_400 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}min", s / 60),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// Refuses a provider that looks like an API key (`byok set sk-proj-…
/// --user u`): it would be stored in clear as a provider name. The message
/// does not repeat it.
fn check_provider(provider: &str) -> CliResult {
    if secrets::looks_like_key(provider) {
        return Err(CliError::usage(
            "the provider looks like an API key, so it was not stored; the provider is a name \
             such as `openai`, and the key is read from standard input: \
             `byok set openai --user U < key.txt`",
        ));
    }
    Ok(())
}

/// `byok set`.
pub(crate) async fn set(
    opts: &SetOpts,
    store: &StoreOpts,
    ring: &KeyringOpts,
    json: bool,
) -> CliResult {
    check_provider(&opts.provider)?;
    let ttl = ttl(opts)?;
    let default_ttl = context::default_ttl()?;
    let keyring = context::keyring(ring)?;
    let key = read_key().await?;
    let store = Store::open(store, Schema::Create).await?;
    let byok = context::manager(&store, keyring)?;
    byok.set_key(&opts.user, &opts.provider, &key, ttl)
        .await
        .map_err(store.fail("storing the key failed"))?;
    let stored = store
        .storage
        .retrieve(&opts.user, &opts.provider)
        .await
        .map_err(store.fail("reading the key back failed"))?;
    let row = stored.as_ref().map(Row::of);
    if json {
        context::print_json(&row)
    } else {
        match row {
            Some(r) if ttl == Ttl::Default => {
                let when = match (r.expires_at, default_ttl) {
                    (Some(at), Some(d)) => format!(
                        "it expires at {} (in {}, the default time to live)",
                        at.format("%Y-%m-%d %H:%M UTC"),
                        short_duration(d)
                    ),
                    _ => "it never expires (the default time to live)".to_owned(),
                };
                out!(
                    "stored {}'s {} key {}; {when}; choose another with --ttl, --no-expiry \
                     or BYOK_DEFAULT_TTL",
                    r.user,
                    r.provider,
                    r.hint
                )
            }
            Some(r) => out!(
                "stored {}'s {} key {} (expires: {})",
                r.user,
                r.provider,
                r.hint,
                r.expires
            ),
            None => out!("stored {}'s {} key", opts.user, opts.provider),
        }
    }
}

/// `byok get`.
pub(crate) async fn get(
    opts: &GetOpts,
    store: &StoreOpts,
    ring: &KeyringOpts,
    json: bool,
) -> CliResult {
    let keyring = context::keyring(ring)?;
    let store = Store::open(store, Schema::AsItIs).await?;
    let byok = context::manager(&store, keyring)?;
    let what = "reading the key failed";
    let stored = store
        .storage
        .retrieve(&opts.user, &opts.provider)
        .await
        .map_err(store.fail(what))?;
    let Some(stored) = stored else {
        return Err(CliError::from_byok(
            what,
            &byok::ByokError::KeyNotFound {
                user_id: opts.user.clone(),
                provider: opts.provider.clone(),
            },
            None,
        ));
    };
    // Decrypting proves the key is usable, even when it is not revealed.
    let secret = byok
        .require_key(&opts.user, &opts.provider)
        .await
        .map_err(store.fail(what))?;
    let row = Row::of(&stored);
    if opts.reveal {
        if json {
            context::print_json(&serde_json::json!({
                "user": row.user, "provider": row.provider, "key": secret.expose_secret(),
            }))
        } else {
            out!("{}", secret.expose_secret())?;
            Ok(())
        }
    } else if json {
        context::print_json(&row)
    } else {
        out!(
            "{} {}: {} (created {}, expires: {})",
            row.user,
            row.provider,
            row.hint,
            row.created,
            row.expires
        )?;
        Ok(())
    }
}

/// One key as listings show it: nothing secret.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    /// The user id.
    pub(crate) user: String,
    /// The provider.
    pub(crate) provider: String,
    /// The masked hint.
    pub(crate) hint: String,
    /// The key id of the master key it is encrypted under, if readable.
    pub(crate) key_id: Option<u32>,
    /// When it was stored.
    pub(crate) created_at: DateTime<Utc>,
    /// When it expires.
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// Whether it has expired (but is still stored).
    pub(crate) expired: bool,
    /// Its age, for people.
    #[serde(skip)]
    pub(crate) created: String,
    /// Its expiry, for people.
    #[serde(skip)]
    pub(crate) expires: String,
}

impl Row {
    /// The row of a stored key.
    pub(crate) fn of(key: &ApiKey) -> Row {
        let now = Utc::now();
        Row {
            user: key.user_id().to_owned(),
            provider: key.provider().to_owned(),
            hint: key.hint().unwrap_or("N/A").to_owned(),
            key_id: byok::crypto::key_id_of(key.encrypted_value()).ok(),
            created_at: key.created_at(),
            expires_at: key.expires_at(),
            expired: key.is_expired_at(now),
            created: format_key_age(key.created_at(), now),
            expires: format_expiration(key.expires_at(), now),
        }
    }
}

/// A table of rows, for people.
pub(crate) fn table(rows: &[Row]) -> Table {
    let mut table = context::new_table();
    table.set_header(["user", "provider", "key", "key id", "created", "expires"]);
    for r in rows {
        table.add_row([
            byok::validate::shown_id(&r.user).into_owned(),
            byok::validate::shown_id(&r.provider).into_owned(),
            r.hint.clone(),
            r.key_id.map_or("?".to_owned(), |id| id.to_string()),
            r.created.clone(),
            r.expires.clone(),
        ]);
    }
    table
}

/// `byok list`.
pub(crate) async fn list(opts: &ListOpts, store: &StoreOpts, json: bool) -> CliResult {
    let page_size = context::page_size(opts.page_size)?;
    let store = Store::open(store, Schema::AsItIs).await?;
    let what = "listing the keys failed";
    let mut rows = Vec::new();
    match &opts.user {
        Some(user) => {
            let keys = store
                .storage
                .user_keys(user)
                .await
                .map_err(store.fail(what))?;
            rows.extend(keys.iter().map(Row::of));
        }
        None => rows = store.map_keys(page_size, what, Row::of).await?,
    }
    if json {
        return context::print_json(&rows);
    }
    if rows.is_empty() {
        out!("no keys")?;
    } else {
        out!("{}", table(&rows))?;
        out!("{} key(s)", rows.len())?;
    }
    Ok(())
}

/// `byok rm`.
pub(crate) async fn rm(opts: &StoreOpts, user: &str, provider: &str, json: bool) -> CliResult {
    let store = Store::open(opts, Schema::AsItIs).await?;
    let removed = store
        .storage
        .delete(user, provider)
        .await
        .map_err(store.fail("removing the key failed"))?;
    if removed && json {
        return context::print_json(&serde_json::json!({ "removed": removed }));
    }
    if removed {
        out!("removed {user}'s {provider} key")?;
        Ok(())
    } else {
        Err(CliError::new(
            crate::error::Exit::NotFound,
            format!("{user} has no {provider} key; nothing was removed"),
        ))
    }
}

/// `byok clear`.
pub(crate) async fn clear(opts: &StoreOpts, user: &str, json: bool) -> CliResult {
    let store = Store::open(opts, Schema::AsItIs).await?;
    let removed = store
        .storage
        .clear_all(user)
        .await
        .map_err(store.fail("clearing the user's keys failed"))?;
    if json {
        context::print_json(&serde_json::json!({ "removed": removed }))
    } else {
        out!("removed {removed} key(s) of {user}")?;
        Ok(())
    }
}

/// `byok purge`.
pub(crate) async fn purge(opts: &StoreOpts, json: bool) -> CliResult {
    let store = Store::open(opts, Schema::AsItIs).await?;
    let purged = store
        .storage
        .purge_expired()
        .await
        .map_err(store.fail("purging expired keys failed"))?;
    if json {
        context::print_json(&serde_json::json!({ "purged": purged }))
    } else {
        out!("purged {purged} expired key(s)")?;
        Ok(())
    }
}
