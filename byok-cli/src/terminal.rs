//! The terminal's settings around the key prompt, which turns echo off:
//! whatever ends the command (an error, Ctrl-C), they are put back.

use std::sync::Mutex;

#[cfg(unix)]
type Saved = rustix::termios::Termios;
#[cfg(not(unix))]
type Saved = ();

/// The settings of standard input before the prompt, while it runs.
static SAVED: Mutex<Option<Saved>> = Mutex::new(None);

/// Saves the settings of the terminal on standard input.
pub(crate) fn save() {
    #[cfg(unix)]
    let saved = rustix::termios::tcgetattr(std::io::stdin()).ok();
    #[cfg(not(unix))]
    let saved = Some(());
    if let Ok(mut slot) = SAVED.lock() {
        *slot = saved;
    }
}

/// Puts back the saved settings, if any; returns whether there were any
/// (a prompt was under way).
pub(crate) fn restore() -> bool {
    let saved = SAVED.lock().ok().and_then(|mut slot| slot.take());
    let Some(saved) = saved else {
        return false;
    };
    #[cfg(unix)]
    {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &saved,
        );
    }
    #[cfg(not(unix))]
    let () = saved;
    true
}
