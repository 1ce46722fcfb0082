//! `byok keyring`: the stages of a rotation on a keyring file (`show`,
//! `promote`, `remove`), and the safe edit that `keygen --add-to` shares.

use std::cell::Cell;
use std::path::Path;

use byok::ConfigError;
use byok::keyring_text::{self, KeyringText};

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
        KeyringCommand::Promote { id } => promote(ring, *id, json),
        KeyringCommand::Remove { id, force } => remove(ring, store, *id, *force, json).await,
    }
}

fn show(opts: &KeyringOpts, json: bool) -> CliResult {
    let ring = context::keyring(opts)?;
    let ids: Vec<u32> = ring.key_ids().collect();
    if json {
        return context::print_json(&serde_json::json!({
            "key_ids": ids, "primary": ring.primary_id(),
        }));
    }
    for id in ids {
        let role = if id == ring.primary_id() {
            "primary: new keys are written under it"
        } else {
            "decrypt-only"
        };
        out!("master key id {id}: {role}")?;
    }
    Ok(())
}

fn promote(opts: &KeyringOpts, id: u32, json: bool) -> CliResult {
    let path = file(opts)?;
    let (changed, previous) = edit(path, |text| {
        let previous = text.keyring()?.primary_id();
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
