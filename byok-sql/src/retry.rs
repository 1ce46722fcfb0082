//! Running a statement again when the database failed it to resolve a lock
//! conflict (a deadlock victim, a lock wait that timed out).

use std::time::Duration;

use crate::error::{self, Engine};

/// How many times one statement runs at most.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// The pause before the second attempt; it doubles for each later one, so
/// the pauses of all attempts add up to about a quarter of a second.
const FIRST_BACKOFF: Duration = Duration::from_millis(2);

/// Runs `statement` (which builds, binds and executes one statement each
/// time it is called) until it succeeds, fails with anything but a lock
/// conflict, or has run [`MAX_ATTEMPTS`] times.
///
/// Every statement of this crate runs alone in its own implicit
/// transaction, which the database rolls back entirely when it fails one
/// for a lock conflict, so running it again cannot apply anything twice.
/// The pauses are jittered, so that two statements that deadlocked each
/// other do not meet again at the same instant. The caller's operation
/// deadline still bounds the whole.
pub(crate) async fn retry<T, F, Fut>(engine: Engine, mut statement: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match statement().await {
            Err(e) if attempt < MAX_ATTEMPTS && error::is_lock_conflict(engine, &e) => {
                tracing::debug!(
                    backend = engine.name(),
                    attempt,
                    "a statement lost a lock conflict; running it again"
                );
                tokio::time::sleep(backoff.mul_f64(rand::random_range(0.5..1.5))).await;
                backoff = backoff.saturating_mul(2);
                attempt += 1;
            }
            done => return done,
        }
    }
}
