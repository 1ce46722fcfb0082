//! The everyday commands: `migrate`, `set`, `get`, `list`, `rm`, `clear`,
//! `purge`.

use std::io::{IsTerminal as _, Read as _};

use byok::chrono::{DateTime, Utc};
use byok::display::{format_expiration, format_key_age};
use byok::secrecy::ExposeSecret;
use byok::{ApiKey, CheckRecord, KeyStorage as _, Ttl};
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
    let row = rows_with_checks(&store, std::slice::from_ref(&stored))
        .await?
        .pop()
        .unwrap_or_else(|| Row::of(&stored));
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
            "{} {}: {} (created {}, expires: {}, last check: {})",
            row.user,
            row.provider,
            row.hint,
            row.created,
            row.expires,
            row.checked(Utc::now())
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
    /// Its last check, if one was kept for this very key (`null` when it
    /// was never checked, was replaced since, or the listing does not read
    /// checks).
    pub(crate) last_check: Option<CheckRecord>,
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
            last_check: None,
        }
    }

    /// The row of a stored key with its last check, among the `checks`
    /// (provider, record) of its user.
    pub(crate) fn with_checks(key: &ApiKey, checks: &[(String, String)]) -> Row {
        let last_check = checks
            .iter()
            .filter(|(provider, _)| provider == key.provider())
            .find_map(|(_, text)| CheckRecord::decode_for(text, key));
        Row {
            last_check,
            ..Row::of(key)
        }
    }

    /// The last check for people: `invalid (3 minutes ago)`, or
    /// `not checked`.
    pub(crate) fn checked(&self, now: DateTime<Utc>) -> String {
        match &self.last_check {
            None => "not checked".to_owned(),
            Some(c) => {
                let age = format_key_age(c.checked_at(), now);
                let age = match age.as_str() {
                    "Just now" => "just now".to_owned(),
                    _ => age,
                };
                format!("{} ({age})", c.outcome())
            }
        }
    }
}

/// The rows of `keys`, each with its last check: the checks of each user
/// are read once.
async fn rows_with_checks(store: &Store, keys: &[ApiKey]) -> CliResult<Vec<Row>> {
    let mut checks: std::collections::HashMap<&str, Vec<(String, String)>> =
        std::collections::HashMap::new();
    let mut rows = Vec::with_capacity(keys.len());
    for key in keys {
        let user = key.user_id();
        if !checks.contains_key(user) {
            let kept = store
                .storage
                .checks(user)
                .await
                .map_err(store.fail("reading the keys' last checks failed"))?;
            checks.insert(user, kept);
        }
        rows.push(Row::with_checks(key, &checks[user]));
    }
    Ok(rows)
}

/// A table of rows, for people.
pub(crate) fn table(rows: &[Row]) -> Table {
    let mut table = context::new_table();
    let now = Utc::now();
    table.set_header([
        "user",
        "provider",
        "key",
        "key id",
        "created",
        "expires",
        "last check",
    ]);
    for r in rows {
        table.add_row([
            byok::validate::shown_id(&r.user).into_owned(),
            byok::validate::shown_id(&r.provider).into_owned(),
            r.hint.clone(),
            r.key_id.map_or("?".to_owned(), |id| id.to_string()),
            r.created.clone(),
            r.expires.clone(),
            r.checked(now),
        ]);
    }
    table
}

/// `byok list`.
pub(crate) async fn list(opts: &ListOpts, store: &StoreOpts, json: bool) -> CliResult {
    let page_size = context::page_size(opts.page_size)?;
    let store = Store::open(store, Schema::AsItIs).await?;
    let what = "listing the keys failed";
    let keys = match &opts.user {
        Some(user) => store
            .storage
            .user_keys(user)
            .await
            .map_err(store.fail(what))?,
        None => store.map_keys(page_size, what, ApiKey::clone).await?,
    };
    let rows = rows_with_checks(&store, &keys).await?;
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

#[cfg(test)]
mod tests {
    use byok::CheckRecord;
    use byok::chrono::Duration;

    use super::*;

    #[tokio::test]
    async fn rows_carry_the_check_of_their_own_key_only() {
        let store = Store::open_url("memory:", "t", "p", Schema::AsItIs)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let keyring = byok::Keyring::new(1, byok::MasterKey::generate());
        let byok = context::manager(&store, keyring).unwrap_or_else(|e| panic!("{e}"));
        for (user, provider) in [
            ("alice", "openai"),
            ("alice", "anthropic"),
            ("bob", "openai"),
        ] {
            byok.set_key(user, provider, "sk-proj-0123456789abcdef", Ttl::Never)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let at = Utc::now() - Duration::minutes(3);
        let record = CheckRecord::at("invalid", "The provider does not accept this key.", at)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            byok.record_check("alice", "openai", &record).await.ok(),
            Some(true)
        );
        let mut keys = Vec::new();
        for user in ["alice", "bob"] {
            keys.extend(
                store
                    .storage
                    .user_keys(user)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let rows = rows_with_checks(&store, &keys)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let checked: Vec<_> = rows
            .iter()
            .map(|r| (r.user.as_str(), r.provider.as_str(), r.checked(Utc::now())))
            .collect();
        assert!(
            checked.contains(&("alice", "openai", "invalid (3 minutes ago)".to_owned())),
            "{checked:?}"
        );
        assert!(checked.contains(&("alice", "anthropic", "not checked".to_owned())));
        assert!(checked.contains(&("bob", "openai", "not checked".to_owned())));
        let table = table(&rows).to_string();
        assert!(table.contains("last check"), "{table}");
        assert!(table.contains("invalid (3 minutes ago)"), "{table}");
        let json = serde_json::to_value(&rows).unwrap_or_default();
        let alice = json
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["user"] == "alice" && r["provider"] == "openai")
            })
            .cloned()
            .unwrap_or_default();
        assert_eq!(alice["last_check"]["outcome"], "invalid", "{json}");
        assert_eq!(
            alice["last_check"]["summary"],
            "The provider does not accept this key."
        );

        // A new key starts unchecked.
        byok.set_key("alice", "openai", "sk-proj-fedcba9876543210", Ttl::Never)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let keys = store
            .storage
            .user_keys("alice")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = rows_with_checks(&store, &keys)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rows.iter().all(|r| r.last_check.is_none()));
    }

    #[test]
    fn a_check_just_made_says_so() {
        let key = ApiKey::new("alice", "openai", vec![1, 2, 3]).unwrap_or_else(|e| panic!("{e}"));
        let record = CheckRecord::new("valid", "ok").unwrap_or_else(|e| panic!("{e}"));
        let checks = [("openai".to_owned(), record.encode(&key))];
        let row = Row::with_checks(&key, &checks);
        assert_eq!(row.checked(Utc::now()), "valid (just now)");
        let other = [("anthropic".to_owned(), record.encode(&key))];
        assert_eq!(
            Row::with_checks(&key, &other).checked(Utc::now()),
            "not checked"
        );
    }
}
