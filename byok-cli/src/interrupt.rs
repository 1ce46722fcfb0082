//! Ctrl-C: one listener for the whole command. A command with work to
//! undo or to report (a scratch namespace, a rotation's saved state) takes
//! it on itself with [`Interruptible`]; otherwise the command ends at once
//! with exit code 130.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

/// How many Ctrl-Cs arrived so far.
static PRESSES: OnceLock<watch::Sender<u64>> = OnceLock::new();
/// How many [`Interruptible`]s are alive.
static HANDLED: AtomicUsize = AtomicUsize::new(0);

fn presses() -> &'static watch::Sender<u64> {
    PRESSES.get_or_init(|| watch::channel(0).0)
}

/// Starts listening for Ctrl-C; call once, on the runtime.
pub(crate) fn listen() {
    let sender = presses();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            sender.send_modify(|n| *n += 1);
        }
    });
}

/// Waits for a Ctrl-C that no [`Interruptible`] takes.
pub(crate) async fn unhandled() {
    let mut rx = presses().subscribe();
    while rx.changed().await.is_ok() {
        if HANDLED.load(Ordering::SeqCst) == 0 {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// While alive, Ctrl-C is the holder's to handle: the command is not cut
/// off, and [`interrupted`](Self::interrupted) completes instead.
#[derive(Debug)]
pub(crate) struct Interruptible {
    rx: watch::Receiver<u64>,
    /// The presses before this was made.
    before: u64,
}

impl Interruptible {
    /// Takes Ctrl-C on from now on.
    pub(crate) fn new() -> Interruptible {
        HANDLED.fetch_add(1, Ordering::SeqCst);
        let rx = presses().subscribe();
        let before = *rx.borrow();
        Interruptible { rx, before }
    }

    /// Completes once Ctrl-C has been pressed since [`new`](Self::new):
    /// at once on every call after that, so that no caller misses it.
    pub(crate) async fn interrupted(&mut self) {
        let before = self.before;
        if self.rx.wait_for(|n| *n > before).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Interruptible {
    fn drop(&mut self) {
        HANDLED.fetch_sub(1, Ordering::SeqCst);
    }
}
