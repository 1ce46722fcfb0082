//! The `byok` command: run and operate a byok key store from the shell.
//!
//! This crate is the command-line tool beside the `byok` library: the
//! library does the work, this crate parses arguments ([`opt`]), reports
//! and sets exit codes. Each family of subcommands has its own module.
//!
//! ```
//! use clap::Parser as _;
//! use byok_cli::opt::{Command, Opt};
//!
//! let opt = Opt::try_parse_from(["byok", "--json", "purge", "--store", "memory:"])?;
//! assert!(opt.global.json);
//! assert!(matches!(opt.command, Command::Purge { .. }));
//! # Ok::<(), clap::Error>(())
//! ```
//!
//! Run `byok --help` for the commands, examples and exit codes.

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool's output is its standard output"
)]

mod admin;
mod check;
mod confirm;
mod context;
mod demo;
mod dry_run;
pub mod error;
mod import;
mod interrupt;
mod key_test;
mod keygen;
mod keyring;
mod keys;
mod kms;
pub mod opt;
mod output;
mod secrets;
mod terminal;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser as _;

use crate::error::{CliError, Exit};
use crate::opt::{Command, Opt};
use crate::secrets::Scrubber;

/// Runs a parsed command.
pub async fn run(opt: Opt) -> Result<(), CliError> {
    let global = &opt.global;
    let (json, store, ring) = (global.json, &global.store, &global.keyring);
    match &opt.command {
        Command::Keygen(o) => keygen::run(o, json).await,
        Command::Keyring(c) => keyring::run(c, ring, store, json).await,
        Command::Migrate(o) => keys::migrate(o, store, json).await,
        Command::Set(o) => keys::set(o, store, ring, json).await,
        Command::Get(o) => keys::get(o, store, ring, json).await,
        Command::List(o) => keys::list(o, store, json).await,
        Command::Rm { provider, user } => keys::rm(store, user, provider, json).await,
        Command::Clear { user, yes } => {
            confirm::ask(*yes, &format!("remove every key of user {user:?}"))?;
            keys::clear(store, user, json).await
        }
        Command::Purge { dry_run: true } => dry_run::purge(store, json).await,
        Command::Purge { dry_run: false } => keys::purge(store, json).await,
        Command::Stats => admin::stats(store, json).await,
        Command::Verify => admin::verify(store, ring, json).await,
        Command::Rotate(o) => admin::rotate(o, store, ring, json).await,
        Command::Copy(o) => admin::copy(o, store, ring, json).await,
        Command::ImportPython(o) => import::import_python(o, store, ring, json).await,
        Command::Check(o) => check::check(o, store, json).await,
        Command::Bench(o) => check::bench(o, store, json).await,
        Command::Test(o) => key_test::run(o, store, ring, json).await,
        Command::Demo => demo::run().await,
        Command::Completions { shell } => {
            let mut cmd = <Opt as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "byok", &mut buf);
            output::out!("{}", String::from_utf8_lossy(&buf).trim_end())
        }
    }
}

/// Whether `--json` is among the arguments (before a `--`), for errors
/// that come before the arguments are parsed.
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// Prints an error as one line on standard error (one JSON object with
/// `--json`, whose `storage_kind` names a store's failure as spans and
/// metrics do), without any password or key, and returns its exit code.
fn report(message: &str, exit: Exit, json: bool, scrub: &Scrubber) -> ExitCode {
    report_kind(message, exit, None, json, scrub)
}

fn report_kind(
    message: &str,
    exit: Exit,
    storage_kind: Option<&'static str>,
    json: bool,
    scrub: &Scrubber,
) -> ExitCode {
    let message = scrub.scrub(message).replace('\n', " ");
    if json {
        let mut value = serde_json::json!({
            "error": { "message": message, "exit_code": exit as u8, "kind": exit.name() }
        });
        if let Some(kind) = storage_kind {
            value["error"]["storage_kind"] = kind.into();
        }
        output::note!("{value}");
    } else {
        output::note!("byok: {message}");
    }
    exit.into()
}

/// A clap error as one line: its first line, without clap's `error: `,
/// and where to look for the usage.
fn usage_error(e: &clap::Error, json: bool, scrub: &Scrubber) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let text = e.render().to_string();
            return match output::out!("{}", text.trim_end()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.quiet => ExitCode::SUCCESS,
                Err(e) => report(e.message(), e.exit, json, scrub),
            };
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand if !json => {
            output::note!("{}", e.render().to_string().trim_end());
            return Exit::Usage.into();
        }
        _ => {}
    }
    let text = e.render().to_string();
    // The error's own lines (up to the usage), as one: "the following
    // required arguments were not provided: <PROVIDER> --user <USER>".
    let body: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage: "))
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("tip: ") && !l.starts_with("For more information")
        })
        .collect();
    let body = body.join(" ");
    let first = body.strip_prefix("error: ").unwrap_or(&body);
    let first = if first.is_empty() {
        "bad arguments"
    } else {
        first
    };
    let usage = text
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .map(|u| {
            // The command's words, up to its first option or value.
            let words: Vec<&str> = u
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '[', '<']))
                .collect();
            format!("; see `{} --help`", words.join(" "))
        })
        .unwrap_or_else(|| "; see `byok --help`".to_owned());
    // clap's suggestions ("a similar subcommand exists: 'list'").
    let tips: String = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tip: "))
        .map(|tip| format!("; {tip}"))
        .collect();
    report(&format!("{first}{tips}{usage}"), Exit::Usage, json, scrub)
}

/// Logging on standard error: `RUST_LOG` when set, else warnings and up
/// with `-v`, information with `-vv`, debugging with `-vvv`.
fn start_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(match verbose {
            0 => return,
            1 => "warn,byok=info,byok_core=info,byok_sql=info,byok_redis=info,byok_cli=info",
            2 => "info,byok=debug,byok_core=debug,byok_sql=debug,byok_redis=debug,byok_cli=debug",
            _ => "debug,byok=trace,byok_core=trace,byok_sql=trace,byok_redis=trace,byok_cli=trace",
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Ends the process as [`CliError::output`] would when `println!` fails
/// (std panics then): commands print with [`output::out`], which returns
/// the error instead, but a `println!` left anywhere must not end in a
/// panic message and exit code 101 either.
fn exit_quietly_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if let Some(cause) = text.strip_prefix("failed printing to stdout: ") {
            terminal::restore();
            if cause.starts_with("Broken pipe") {
                std::process::exit(0);
            }
            output::note!("byok: cannot write the output: {cause}");
            std::process::exit(Exit::Problem as i32);
        }
        default(info);
    }));
}

/// The whole program: parses the arguments, runs the command on a Tokio
/// runtime, prints an error as one line on standard error.
pub fn main() -> ExitCode {
    exit_quietly_on_closed_output();
    let args: Vec<OsString> = std::env::args_os().collect();
    let json = wants_json(&args);
    let scrub = Scrubber::new(&args);
    let opt = match Opt::try_parse_from(&args) {
        Ok(opt) => opt,
        Err(e) => return usage_error(&e, json, &scrub),
    };
    start_logging(opt.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let message = format!("cannot start the async runtime: {e}");
            return report(&message, Exit::Problem, json, &scrub);
        }
    };
    let outcome = runtime.block_on(async {
        interrupt::listen();
        tokio::select! {
            outcome = run(opt) => outcome,
            () = interrupt::unhandled() => Err(CliError::new(Exit::Interrupted, "interrupted")),
        }
    });
    // Whatever happened, the terminal is left as it was found (a key
    // prompt turns echo off).
    let interrupted_prompt = terminal::restore();
    // A key prompt still waiting on its thread must not hold the exit.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.quiet => ExitCode::SUCCESS,
        Err(e) => {
            if interrupted_prompt {
                output::note!("");
            }
            report_kind(e.message(), e.exit, e.storage_kind, json, &scrub)
        }
    }
}
