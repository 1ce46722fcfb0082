//! `-y/--yes`: confirmation before a command removes or replaces keys.
//!
//! On a terminal the command asks; elsewhere (a script, a pipe, cron) there
//! is no one to ask, so it refuses unless `--yes` says the answer up front.
//! Refusing is the safe default: a script that clears or overwrites keys
//! says so in its own text.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use crate::error::{CliError, CliResult};

/// Asks before doing `what`, unless `yes`.
pub(crate) fn ask(yes: bool, what: &str) -> CliResult {
    let stdin = std::io::stdin();
    decide(yes, stdin.is_terminal(), what, || {
        let mut err = std::io::stderr();
        let _ = write!(err, "byok will {what}. Type `yes` to go on: ");
        let _ = err.flush();
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map(|_| line)
    })
}

fn decide(
    yes: bool,
    terminal: bool,
    what: &str,
    answer: impl FnOnce() -> std::io::Result<String>,
) -> CliResult {
    if yes {
        return Ok(());
    }
    if !terminal {
        return Err(CliError::usage(format!(
            "this would {what}: pass --yes to confirm (standard input is not a terminal, \
             so there is no one to ask)"
        )));
    }
    match answer() {
        Ok(a) if matches!(a.trim(), "yes" | "y") => Ok(()),
        _ => Err(CliError::problem(
            "not confirmed; nothing was changed".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    #[test]
    fn yes_skips_the_question_and_only_yes_confirms() {
        let never = || -> std::io::Result<String> { unreachable!("asked despite --yes") };
        assert!(decide(true, true, "x", never).is_ok());
        assert!(decide(true, false, "x", never).is_ok());
        assert!(decide(false, true, "x", || Ok("yes\n".into())).is_ok());
        for no in ["", "no\n", "YES please\n"] {
            let e = decide(false, true, "x", || Ok(no.into())).unwrap_err();
            assert_eq!(e.exit, Exit::Problem, "{no:?}");
        }
        let closed = decide(false, true, "x", || {
            Err(std::io::ErrorKind::BrokenPipe.into())
        });
        assert!(closed.is_err());
    }

    #[test]
    fn without_a_terminal_it_refuses_and_names_yes() {
        let e = decide(false, false, "remove every key of user \"u\"", || {
            Ok("yes".into())
        })
        .unwrap_err();
        assert_eq!(e.exit, Exit::Usage);
        assert!(e.to_string().contains("--yes"), "{e}");
    }
}
