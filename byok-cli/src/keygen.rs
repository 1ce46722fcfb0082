//! `byok keygen`: new master keys, as keyring entries.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use byok::MasterKey;
use byok::keyring_text::{self, KeyringText};
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult, Exit};
use crate::opt::KeygenOpts;

/// Runs `byok keygen`.
pub(crate) async fn run(opts: &KeygenOpts, json: bool) -> CliResult {
    // With --kms, KMS makes the key and this process sees it wrapped only;
    // the wrapped key is bound to its id, which is chosen first.
    let wrapped = match &opts.kms {
        None => None,
        Some(spec) => {
            let (kms, key) = crate::kms::aws(spec).await?;
            let id = match (opts.id, &opts.add_to) {
                (Some(id), _) => id,
                (None, Some(path)) => next_id(path)?,
                (None, None) => 1,
            };
            let wrapped = kms
                .generate(id, &key)
                .await
                .map_err(|e| crate::kms::fail(&e))?;
            Some((id, wrapped))
        }
    };
    let kms_key = wrapped.as_ref().map(|(_, w)| w.key().to_owned());
    let wrapped_by = kms_key
        .as_deref()
        .map(|k| format!(", wrapped by AWS KMS key {k}"))
        .unwrap_or_default();
    if let Some(path) = &opts.add_to {
        let (id, primary) = crate::keyring::edit(path, |text| {
            let id = match &wrapped {
                Some((id, w)) => text.add_wrapped(Some(*id), w, opts.primary)?,
                None => text.add(opts.id, &MasterKey::generate(), opts.primary)?,
            };
            Ok((id, text.primary_id()?.unwrap_or(id)))
        })?;
        if json {
            crate::context::print_json(&serde_json::json!({
                "file": path.display().to_string(), "key_id": id, "primary": primary == id,
                "primary_key_id": primary, "kms_key": kms_key,
            }))?;
        } else if primary == id {
            crate::output::out!(
                "added master key id {id} (primary{wrapped_by}) to {}",
                path.display()
            )?;
        } else {
            crate::output::out!(
                "added master key id {id} to {} (decrypt-only{wrapped_by}; master key id \
                 {primary} stays primary).\nNext: wait until every running instance has loaded \
                 it, then `byok --keyring {} keyring promote {id}`.",
                path.display(),
                path.display()
            )?;
        }
        return Ok(());
    }
    let (id, entry) = match &wrapped {
        Some((id, w)) => (*id, Zeroizing::new(w.entry(*id))),
        None => {
            let id = opts.id.unwrap_or(1);
            (id, keyring_text::entry(id, &MasterKey::generate()))
        }
    };
    match &opts.out {
        Some(path) => {
            let mut line = Zeroizing::new(String::with_capacity(entry.len() + 1));
            line.push_str(&entry);
            line.push('\n');
            write_new(path, line.as_bytes())?;
            if json {
                crate::context::print_json(&serde_json::json!({
                    "file": path.display().to_string(), "key_id": id, "kms_key": kms_key,
                }))?;
            } else {
                println!(
                    "wrote master key id {id}{wrapped_by} to {} (mode 0600); use it with \
                     --keyring {}",
                    path.display(),
                    path.display()
                );
            }
        }
        None if json => {
            crate::context::print_json(&serde_json::json!({
                "key_id": id, "entry": *entry, "kms_key": kms_key,
            }))?;
        }
        None => println!("{}", *entry),
    }
    Ok(())
}

/// The id `--add-to` gives a new key: one more than the largest of the
/// file, or 1 for a file that is missing or empty.
fn next_id(path: &Path) -> CliResult<u32> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Zeroizing::new(String::new()),
        Err(e) => return Err(io_error("cannot read", path, &e)),
    };
    KeyringText::new(text.as_str())
        .and_then(|t| t.next_id())
        .map_err(|e| CliError::usage(format!("{} ({})", e.message(), path.display())))
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
