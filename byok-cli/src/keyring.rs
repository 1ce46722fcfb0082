//! `byok keyring`: the stages of a rotation on a keyring file (`show`,
//! `promote`, `remove`), and the safe edit that `keygen --add-to` shares.

use std::cell::Cell;
use std::path::Path;

use byok::keyring_text::{self, KeyringText};
use byok::{ConfigError, KeyUnwrapper as _};
use zeroize::Zeroizing;

use crate::context::{self, Schema, Store};
use crate::error::{CliError, CliResult, Exit};
use crate::opt::{KeyringCommand, KeyringOpts, StoreOpts};
use crate::output::{note, out};

/// Applies `edit` to the keyring file at `path` (see
/// [`keyring_text::edit_file`]) and prints its warnings on standard error.
/// A refused edit is bad input; a file that cannot be read or written is a
/// configuration error.
pub(crate) fn edit<T>(
    path: &Path,
    edit: impl FnOnce(&mut KeyringText) -> Result<T, ConfigError>,
) -> CliResult<T> {
    let refused = Cell::new(false);
    let result =
        keyring_text::edit_file(path, |text| edit(text).inspect_err(|_| refused.set(true)));
    match result {
        Ok((value, done)) => {
            for warning in &done.warnings {
                note!("warning: {warning}");
            }
            Ok(value)
        }
        Err(e) => {
            let exit = if refused.get() {
                Exit::Usage
            } else {
                Exit::Config
            };
            let source = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            Err(CliError::new(
                exit,
                format!("{} ({}){source}", e.message(), path.display()),
            ))
        }
    }
}

/// The keyring file of `--keyring`, which editing needs.
fn file(opts: &KeyringOpts) -> CliResult<&Path> {
    opts.keyring.as_deref().ok_or_else(|| {
        CliError::usage(
            "pass the keyring file with --keyring FILE (or BYOK_KEYRING_FILE); a keyring in \
             BYOK_KEYRING cannot be edited",
        )
    })
}

/// Runs `byok keyring …`.
pub(crate) async fn run(
    command: &KeyringCommand,
    ring: &KeyringOpts,
    store: &StoreOpts,
    json: bool,
) -> CliResult {
    match command {
        KeyringCommand::Show => show(ring, json),
        KeyringCommand::Rewrap { kms } => rewrap(ring, kms, json).await,
        KeyringCommand::Promote { id } => promote(ring, *id, json),
        KeyringCommand::Remove { id, force } => remove(ring, store, *id, *force, json).await,
    }
}

/// The keyring text of `--keyring` or `BYOK_KEYRING`, as
/// [`context::keyring`] reads it but not unwrapped: what it says of each
/// entry needs no KMS.
fn text(opts: &KeyringOpts) -> CliResult<KeyringText> {
    let (text, what) = match &opts.keyring {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    Exit::Config,
                    format!("cannot use the keyring file {}: {e}", path.display()),
                )
            })?,
            format!("the keyring file {}", path.display()),
        ),
        None => match std::env::var(context::KEYRING_VAR) {
            Ok(text) => (text, format!("the keyring in {}", context::KEYRING_VAR)),
            // Unset or not UTF-8: the error every command gives.
            Err(_) => {
                context::keyring(opts)?;
                return Err(CliError::new(Exit::Config, "no keyring"));
            }
        },
    };
    let text = Zeroizing::new(text);
    KeyringText::new(text.as_str())
        .map_err(|e| CliError::new(Exit::Config, format!("cannot use {what}: {}", e.message())))
}

fn show(opts: &KeyringOpts, json: bool) -> CliResult {
    let entries = text(opts)?.entries().map_err(|e| crate::kms::fail(&e))?;
    let mut ids: Vec<u32> = entries.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    let primary = entries.iter().find(|e| e.primary).map(|e| e.id);
    if json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id, "primary": e.primary,
                    "kms": e.wrapped.as_ref().map(|w| w.kms()),
                    "kms_key": e.wrapped.as_ref().map(|w| w.key()),
                })
            })
            .collect();
        return context::print_json(&serde_json::json!({
            "key_ids": ids, "primary": primary, "entries": list,
        }));
    }
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_by_key(|e| e.id);
    for e in sorted {
        let role = if e.primary {
            "primary: new keys are written under it"
        } else {
            "decrypt-only"
        };
        let custody = match &e.wrapped {
            Some(w) if w.kms() == "aws" => format!("wrapped by AWS KMS key {}", w.key()),
            Some(w) => format!("wrapped by {} KMS key {}", w.kms(), w.key()),
            None => "in the clear".to_owned(),
        };
        out!("master key id {}: {role}; {custody}", e.id)?;
    }
    Ok(())
}

/// `byok keyring rewrap --kms aws:KEY`: every entry wrapped under `KEY`,
/// checked, then the file rewritten at once.
async fn rewrap(opts: &KeyringOpts, spec: &str, json: bool) -> CliResult {
    let path = file(opts)?;
    let before = text(opts)?;
    let (kms, to) = crate::kms::aws(spec).await?;
    let fail = |e: ConfigError| crate::kms::fail(&e);
    let mut done = Vec::new();
    for entry in before.entries().map_err(fail)? {
        let (new, from) = match &entry.wrapped {
            Some(w) if w.kms() != "aws" => {
                return Err(CliError::usage(format!(
                    "master key id {} is wrapped by the {} KMS; byok rewraps AWS KMS entries \
                     only; nothing was changed",
                    entry.id,
                    w.kms()
                )));
            }
            Some(w) => {
                let new = kms.rewrap(entry.id, w, &to).await.map_err(fail)?;
                // The same master key under the new wrap, or nothing changes.
                let (old_key, new_key) = (
                    kms.unwrap_key(entry.id, w).await.map_err(fail)?,
                    kms.unwrap_key(entry.id, &new).await.map_err(fail)?,
                );
                same_key(entry.id, &old_key, &new_key)?;
                (new, Some(w.key().to_owned()))
            }
            None => {
                let Some(clear) = before.clear_key(entry.id).map_err(fail)? else {
                    return Err(CliError::problem("the keyring changed while read"));
                };
                let new = kms.wrap(entry.id, &clear, &to).await.map_err(fail)?;
                let new_key = kms.unwrap_key(entry.id, &new).await.map_err(fail)?;
                same_key(entry.id, &clear, &new_key)?;
                (new, None)
            }
        };
        done.push((entry, new, from));
    }
    edit(path, |text| {
        // Another edit meanwhile: start again rather than lose it.
        if text.entries()? != before.entries()? {
            return Err(ConfigError::new(
                "the keyring file changed while it was rewrapped; nothing was changed, run \
                 the command again",
            ));
        }
        for (entry, new, _) in &done {
            text.rewrap(entry.id, new)?;
        }
        Ok(())
    })?;
    if json {
        let list: Vec<_> = done
            .iter()
            .map(|(e, new, from)| {
                serde_json::json!({"id": e.id, "from": from, "kms_key": new.key()})
            })
            .collect();
        return context::print_json(&serde_json::json!({
            "file": path.display().to_string(), "rewrapped": list,
        }));
    }
    for (e, new, from) in &done {
        match from {
            Some(from) => out!(
                "master key id {}: rewrapped from AWS KMS key {from} to {}",
                e.id,
                new.key()
            )?,
            None => out!(
                "master key id {}: was in the clear, now wrapped by AWS KMS key {}",
                e.id,
                new.key()
            )?,
        }
    }
    out!(
        "{} rewritten; no stored key changed. Running instances take it at their next reload.",
        path.display()
    )?;
    Ok(())
}

/// Refuses a rewrap that would not give back the same master key.
fn same_key(id: u32, old: &byok::MasterKey, new: &byok::MasterKey) -> CliResult {
    if old == new {
        Ok(())
    } else {
        Err(CliError::problem(format!(
            "the new wrap of master key id {id} does not unwrap to the same key; nothing was \
             changed"
        )))
    }
}

fn promote(opts: &KeyringOpts, id: u32, json: bool) -> CliResult {
    let path = file(opts)?;
    let (changed, previous) = edit(path, |text| {
        let previous = text.primary_id()?.unwrap_or(id);
        Ok((text.promote(id)?, previous))
    })?;
    if json {
        return context::print_json(&serde_json::json!({
            "file": path.display().to_string(), "primary": id, "previous_primary": previous,
            "changed": changed,
        }));
    }
    if !changed {
        out!(
            "master key id {id} is already primary in {}",
            path.display()
        )?;
        return Ok(());
    }
    out!(
        "master key id {id} is now primary in {} (was {previous}).\nNext: wait until every \
         running instance has loaded it (each logs `keyring replaced` with primary={id} when it \
         reloads), then run `byok rotate`.",
        path.display()
    )?;
    Ok(())
}

async fn remove(
    opts: &KeyringOpts,
    store_opts: &StoreOpts,
    id: u32,
    force: bool,
    json: bool,
) -> CliResult {
    let path = file(opts)?;
    // The edit is checked before the store is read: a primary or missing
    // id is refused without a store.
    let ring = context::keyring(opts)?;
    if !ring.contains(id) {
        return Err(CliError::usage(format!(
            "master key id {id} is not in {}",
            path.display()
        )));
    }
    if ring.primary_id() == id {
        return Err(CliError::usage(format!(
            "master key id {id} is primary in {}; promote another key first",
            path.display()
        )));
    }
    let under = if force {
        None
    } else {
        let store = Store::open(store_opts, Schema::AsItIs).await?;
        let n = keys_under(&store, id).await?;
        if n > 0 {
            return Err(CliError::problem(format!(
                "{n} key(s) in {} are still under master key id {id}; nothing was changed. \
                 Run `byok rotate` and `byok verify` first, or pass --force to remove it \
                 anyway (those keys would no longer decrypt)",
                store.name
            )));
        }
        Some(n)
    };
    edit(path, |text| text.remove(id))?;
    if json {
        return context::print_json(&serde_json::json!({
            "file": path.display().to_string(), "removed": id, "keys_under_it": under,
        }));
    }
    match under {
        Some(_) => out!(
            "removed master key id {id} from {}; no stored key was under it",
            path.display()
        )?,
        None => out!(
            "removed master key id {id} from {} (--force: the store was not checked)",
            path.display()
        )?,
    }
    Ok(())
}

/// How many live keys are under master key id `id`, as the store counts
/// them.
async fn keys_under(store: &Store, id: u32) -> CliResult<u64> {
    let stats = store
        .storage
        .stats()
        .await
        .map_err(store.fail("counting the keys failed"))?;
    Ok(stats.by_key_id.get(&Some(id)).copied().unwrap_or(0))
}
