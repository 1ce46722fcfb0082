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
mod context;
mod demo;
pub mod error;
mod keygen;
mod keyring;
mod keys;
pub mod opt;

use std::process::ExitCode;

use clap::Parser as _;

use crate::error::CliError;
use crate::opt::{Command, Opt};

/// Runs a parsed command.
pub async fn run(opt: Opt) -> Result<(), CliError> {
    let global = &opt.global;
    let (json, store, ring) = (global.json, &global.store, &global.keyring);
    match &opt.command {
        Command::Keygen(o) => keygen::run(o, json),
        Command::Keyring(c) => keyring::run(c, ring, store, json).await,
        Command::Migrate => keys::migrate(store, json).await,
        Command::Set(o) => keys::set(o, store, ring, json).await,
        Command::Get(o) => keys::get(o, store, ring, json).await,
        Command::List(o) => keys::list(o, store, json).await,
        Command::Rm { provider, user } => keys::rm(store, user, provider, json).await,
        Command::Clear { user } => keys::clear(store, user, json).await,
        Command::Purge => keys::purge(store, json).await,
        Command::Stats => admin::stats(store, json).await,
        Command::Verify => admin::verify(store, ring, json).await,
        Command::Rotate(o) => admin::rotate(o, store, ring, json).await,
        Command::Copy(o) => admin::copy(o, store, json).await,
        Command::Check(o) => check::check(o, store, json).await,
        Command::Bench(o) => check::bench(o, store, json).await,
        Command::Demo => demo::run().await,
    }
}

/// The URLs an invocation names, whose passwords must never be printed.
fn urls(opt: &Opt) -> Vec<&str> {
    let mut out = vec![opt.global.store.url.as_str()];
    match &opt.command {
        Command::Copy(o) => out.push(&o.to),
        Command::Check(o) => out.extend(o.url.as_deref()),
        Command::Bench(o) => out.extend(o.target.url.as_deref()),
        _ => {}
    }
    out
}

/// The whole program: parses the arguments, runs the command on a Tokio
/// runtime, prints an error as one line on standard error.
pub fn main() -> ExitCode {
    let opt = match Opt::try_parse() {
        Ok(opt) => opt,
        Err(e) => {
            // Help and version go to stdout with 0, usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let secrets: Vec<String> = urls(&opt)
        .into_iter()
        .flat_map(context::passwords)
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("byok: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opt)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            for s in &secrets {
                message = message.replace(s.as_str(), "***");
            }
            eprintln!("byok: {message}");
            e.exit.into()
        }
    }
}
