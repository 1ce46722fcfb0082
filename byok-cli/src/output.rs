//! Writing to standard output and standard error without panicking: a
//! closed pipe (`byok list | head -1`) or a full disk is an error the
//! command reports, never a panic.

use std::fmt;
use std::io::Write as _;

use crate::error::{CliError, CliResult};

/// Prints a line on standard output; `?` it, as a closed pipe or a full
/// disk is an error.
macro_rules! out {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// Writes one line on standard output.
pub(crate) fn line(args: fmt::Arguments<'_>) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(|e| CliError::output(&e))
}

/// Writes one line on standard error, ignoring failure: there is nowhere
/// left to report it.
pub(crate) fn note_line(args: fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_fmt(args)
        .and_then(|()| stderr.write_all(b"\n"));
}

/// Prints a line on standard error; never fails, never panics.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::output::note_line(format_args!($($arg)*))
    };
}
pub(crate) use note;
