//! `byok import-python`: keys of the Python library cjm-fasthtml-byok,
//! re-encrypted into this store.

use std::io::Read as _;
use std::path::Path;

use byok::chrono::FixedOffset;
use byok_sql::python::{self, ImportOptions, Outcome, PythonSecret};
use zeroize::Zeroizing;

use crate::context::{self, Schema, Store};
use crate::error::{CliError, CliResult, Exit};
use crate::opt::{ImportPythonOpts, KeyringOpts, StoreOpts};

/// The variable that holds the Python application's secret.
const SECRET_VAR: &str = "BYOK_PYTHON_SECRET";

/// The secret from `--secret-file` (`-`: standard input) or the variable,
/// less one trailing newline.
fn read_secret(file: Option<&Path>) -> CliResult<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(p) if p.as_os_str() == "-" => {
            std::io::stdin()
                .lock()
                .read_to_string(&mut text)
                .map_err(|_| CliError::usage("cannot read the secret from standard input"))?;
        }
        Some(p) => {
            std::fs::File::open(p)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map_err(|e| {
                    CliError::new(
                        Exit::Config,
                        format!("cannot read the secret file {}: {}", p.display(), e.kind()),
                    )
                })?;
        }
        None => match std::env::var(SECRET_VAR) {
            Ok(v) => text.push_str(&Zeroizing::new(v)),
            Err(_) => {
                return Err(CliError::new(
                    Exit::Config,
                    format!(
                        "no secret: pass --secret-file FILE (`-` for standard input) or set \
                         {SECRET_VAR} to the Python application's secret key"
                    ),
                ));
            }
        },
    }
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(CliError::usage("the secret is empty"));
    }
    Ok(text)
}

fn utc_offset(text: &str) -> CliResult<FixedOffset> {
    if matches!(text, "Z" | "z" | "UTC" | "utc") {
        return FixedOffset::east_opt(0).ok_or_else(|| CliError::usage("bad offset"));
    }
    text.parse().map_err(|_| {
        CliError::usage(format!(
            "--utc-offset {text:?} is not an offset; try +00:00 or -05:00"
        ))
    })
}

/// A failure to read the source, with advice for the source (the store's
/// own advice, `byok migrate`, would be wrong here).
fn source_error(e: &byok::ByokError, opts: &ImportPythonOpts, source: &str) -> CliError {
    let mut cause = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        let more = s.to_string();
        if !cause.contains(&more) {
            cause = format!("{cause}: {more}");
        }
        next = s.source();
    }
    // SQLAlchemy's sqlite:///FILE is relative; sqlx's is absolute.
    let hint = if opts.from.starts_with("sqlite:///") {
        "; SQLAlchemy's sqlite:///FILE is sqlite://FILE here"
    } else {
        ""
    };
    let exit = match e {
        byok::ByokError::Config(_) | byok::ByokError::InvalidInput(_) => Exit::Usage,
        _ => Exit::Store,
    };
    CliError::new(
        exit,
        format!(
            "reading the Python library's table {} at {source} failed: {}; check --from and \
             --from-table{hint} (nothing was written)",
            opts.from_table,
            cause.replace('\n', " ")
        ),
    )
}

/// `byok import-python`.
pub(crate) async fn import_python(
    opts: &ImportPythonOpts,
    store_opts: &StoreOpts,
    keyring: &KeyringOpts,
    json: bool,
) -> CliResult {
    let mut options = ImportOptions::default().dry_run(opts.dry_run);
    if let Some(o) = &opts.utc_offset {
        options = options.naive_offset(utc_offset(o)?);
    }
    let ring = context::keyring(keyring)?;
    let secret = {
        let text = read_secret(opts.secret_file.as_deref())?;
        if opts.fernet_key {
            PythonSecret::from_fernet_key(&text).map_err(|e| {
                CliError::usage(format!("the secret is not a Fernet key: {}", e.message()))
            })?
        } else {
            PythonSecret::from_app_secret(&text)
        }
    };
    let source = context::redact(&opts.from);
    // Read the whole source before the target is opened: a source that
    // cannot be read leaves no target behind.
    let rows = python::read_table(&opts.from, &opts.from_table)
        .await
        .map_err(|e| source_error(&e, opts, &source))?;
    let target = if opts.dry_run {
        crate::admin::dry_run_target(&store_opts.url, &store_opts.table, &store_opts.prefix).await?
    } else {
        Store::open(store_opts, Schema::Create).await?
    };
    let report = python::import_rows(&rows, &secret, &ring, &target.storage, &options)
        .await
        .map_err(target.fail("writing to the store failed (re-running skips what is done)"))?;
    let (converted, failed, skipped) = (
        report.count(Outcome::Converted),
        report.count(Outcome::Failed),
        report.count(Outcome::Skipped),
    );
    if json {
        context::print_json(&serde_json::json!({
            "from": source, "to": target.name, "dry_run": report.dry_run,
            "rows": report.rows, "read": rows.len(),
            "converted": converted, "failed": failed, "skipped": skipped,
        }))?;
    } else {
        let mut t = context::new_table();
        t.set_header(["row", "user", "provider", "outcome", "reason"]);
        for r in &report.rows {
            let outcome = match r.outcome {
                Outcome::Converted if report.dry_run => "would convert",
                Outcome::Converted => "converted",
                Outcome::Failed => "FAILED",
                Outcome::Skipped => "skipped",
            };
            t.add_row([
                r.id.to_string(),
                r.user_id.escape_debug().to_string(),
                r.provider.escape_debug().to_string(),
                outcome.to_owned(),
                r.reason.clone().unwrap_or_default(),
            ]);
        }
        println!("{t}");
        println!(
            "{} row(s) of {} {}: {converted} converted, {failed} failed, {skipped} skipped; \
             {}the source was only read",
            rows.len(),
            source,
            opts.from_table,
            if report.dry_run {
                "dry run, nothing was written; "
            } else {
                ""
            }
        );
    }
    if failed > 0 {
        return Err(CliError::problem(format!(
            "{failed} row(s) could not be converted (see above); nothing was written for them"
        )));
    }
    Ok(())
}
