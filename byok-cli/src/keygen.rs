//! `byok keygen`: new master keys, as keyring entries.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use byok::MasterKey;
use byok::secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult, Exit};
use crate::opt::KeygenOpts;

/// Runs `byok keygen`.
pub(crate) fn run(opts: &KeygenOpts, json: bool) -> CliResult {
    if let Some(path) = &opts.add_to {
        let (id, primary) = add_to(path, opts.id, opts.primary)?;
        if json {
            crate::context::print_json(&serde_json::json!({
                "file": path.display().to_string(), "key_id": id, "primary": primary == id,
                "primary_key_id": primary,
            }))?;
        } else if primary == id {
            crate::output::out!("added master key id {id} (primary) to {}", path.display())?;
        } else {
            crate::output::out!(
                "added master key id {id} to {} (decrypt-only; master key id {primary} stays \
                 primary).\nNext: wait until every running instance has loaded it, then `byok \
                 --keyring {} keyring promote {id}`.",
                path.display(),
                path.display()
            )?;
        }
        return Ok(());
    }
    let id = opts.id.unwrap_or(1);
    let entry = entry(id);
    match &opts.out {
        Some(path) => {
            write_new(path, entry.as_bytes())?;
            if json {
                crate::context::print_json(&serde_json::json!({
                    "file": path.display().to_string(), "key_id": id,
                }))?;
            } else {
                println!(
                    "wrote master key id {id} to {} (mode 0600); use it with --keyring {}",
                    path.display(),
                    path.display()
                );
            }
        }
        None if json => {
            crate::context::print_json(&serde_json::json!({
                "key_id": id, "entry": entry.trim_end(),
            }))?;
        }
        None => print!("{}", *entry),
    }
    Ok(())
}

/// A keyring entry `ID:KEY` and a newline, for a fresh key.
fn entry(id: u32) -> Zeroizing<String> {
    let key = MasterKey::generate();
    Zeroizing::new(format!("{id}:{}\n", key.to_base64().expose_secret()))
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> CliError {
    CliError::new(Exit::Config, format!("{what} {}: {e}", path.display()))
}

/// Writes a new file with mode 0600; an existing file is an error.
fn write_new(path: &Path, bytes: &[u8]) -> CliResult {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::usage(format!(
                "{} already exists and is not overwritten; choose another file, or add a key \
                 to it with --add-to",
                path.display()
            ))
        } else {
            io_error("cannot create", path, &e)
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("cannot write", path, &e))
}

/// Adds a fresh key to the keyring file at `path`; returns its id and the
/// primary id afterwards.
fn add_to(path: &Path, id: Option<u32>, primary: bool) -> CliResult<(u32, u32)> {
    crate::keyring::edit(path, |text| {
        let id = text.add(id, &MasterKey::generate(), primary)?;
        Ok((id, text.keyring()?.primary_id()))
    })
}
