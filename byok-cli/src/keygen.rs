//! `byok keygen`: new master keys, as keyring entries.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use byok::secrecy::ExposeSecret;
use byok::{Keyring, MasterKey};
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult, Exit};
use crate::opt::KeygenOpts;

/// Runs `byok keygen`.
pub(crate) fn run(opts: &KeygenOpts, json: bool) -> CliResult {
    if let Some(path) = &opts.add_to {
        let id = add_to(path, opts.id, opts.primary)?;
        let role = if opts.primary {
            "primary"
        } else {
            "not primary"
        };
        if json {
            crate::context::print_json(&serde_json::json!({
                "file": path.display().to_string(), "key_id": id, "primary": opts.primary,
            }))?;
        } else {
            println!("added master key id {id} ({role}) to {}", path.display());
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

/// Adds a fresh key to the keyring file at `path`; returns its id.
fn add_to(path: &Path, id: Option<u32>, primary: bool) -> CliResult<u32> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Zeroizing::new(String::new()),
        Err(e) => return Err(io_error("cannot read", path, &e)),
    };
    let ring = if old.trim().is_empty() {
        None
    } else {
        Some(Keyring::from_text(&old).map_err(|e| {
            CliError::new(
                Exit::Config,
                format!(
                    "cannot use the keyring file {}: {}",
                    path.display(),
                    e.message()
                ),
            )
        })?)
    };
    let id = match (id, &ring) {
        (Some(id), _) => id,
        (None, None) => 1,
        (None, Some(ring)) => ring
            .key_ids()
            .max()
            .and_then(|m| m.checked_add(1))
            .ok_or_else(|| CliError::usage("no key id is left above the largest; pass --id"))?,
    };
    if ring.as_ref().is_some_and(|r| r.contains(id)) {
        return Err(CliError::usage(format!(
            "master key id {id} is already in {}",
            path.display()
        )));
    }
    // Rewrite the entries with the primary marked explicitly: without a
    // `*`, the largest id is primary, so a new larger id would silently
    // become primary.
    let current_primary = ring.as_ref().map(Keyring::primary_id);
    let mut text = Zeroizing::new(String::new());
    for line in old.lines() {
        let bare = line.trim().trim_start_matches('*');
        let Some((entry_id, _)) = bare.split_once(':') else {
            text.push_str(line);
            text.push('\n');
            continue;
        };
        let is_primary = !primary && entry_id.trim().parse().ok() == current_primary;
        if bare.starts_with('#') {
            text.push_str(line);
        } else {
            if is_primary {
                text.push('*');
            }
            text.push_str(bare);
        }
        text.push('\n');
    }
    let new_entry = entry(id);
    if primary || ring.is_none() {
        text.push('*');
    }
    text.push_str(&new_entry);
    // The result must read back as intended before it replaces the file.
    let check = Keyring::from_text(&text)
        .map_err(|e| CliError::new(Exit::Config, format!("the new keyring: {}", e.message())))?;
    let expected_primary = if primary || ring.is_none() {
        Some(id)
    } else {
        current_primary
    };
    if Some(check.primary_id()) != expected_primary {
        return Err(CliError::new(
            Exit::Config,
            "the new keyring would change the primary key unexpectedly; nothing was written",
        ));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".byok-keyring-")
        .tempfile_in(dir)
        .map_err(|e| io_error("cannot write beside", path, &e))?;
    // tempfile creates the file with mode 0600.
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io_error("cannot write", path, &e))?;
    tmp.persist(path)
        .map_err(|e| io_error("cannot replace", path, &e.error))?;
    Ok(id)
}
