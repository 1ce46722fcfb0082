//! `byok-bench`: byok against the code a user would write by hand.
//!
//! ```text
//! cargo run --release -p byok-bench -- [--quick] [--backends memory,sqlite,…] [--rows …]
//! ```
//!
//! Each row measures byok (A) and its hand-written equivalent (B) in the
//! same process, interleaved (A B, then B A, …), and prints the median time
//! per operation of each, their ratio with its range over the rounds, and
//! latency percentiles. See BENCHMARKS.md for a full run.
#![allow(
    clippy::print_stdout,
    reason = "a command-line program: the table goes to standard output"
)]

mod backends;
mod cipher_row;
mod footprint;
mod hand;
mod harness;
mod opt;
mod redis;
mod rows;
mod sql;
mod web_row;

use clap::Parser as _;

use crate::harness::Row;

/// Prints a finished row at once (the table is printed again at the end).
pub(crate) fn emit(out: &mut Vec<Row>, row: Row) {
    println!("{}", row.markdown());
    out.push(row);
}

fn main() -> std::process::ExitCode {
    let opt = opt::Opt::parse();
    if let Some(spec) = &opt.footprint {
        return match footprint::measure_here(spec) {
            Ok(bytes) => {
                println!("{bytes}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("byok-bench: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("byok-bench: cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(backends::run(opt)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("byok-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
