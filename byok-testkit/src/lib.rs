//! The conformance suite of byok storage backends.
//!
//! Every backend of byok runs this suite, and yours can too. It checks the
//! contract of [`KeyStorage`]: round-trips of every field, one slot per
//! (user, provider), expiry, isolation of users and providers under
//! hostile-but-legal ids, typed refusal of invalid ones (NUL, control
//! characters, 1 MiB ids), absurd timestamps, atomic writes under
//! concurrency, compare-and-swap and the paged walk.
//!
//! * [`cases`] holds one `pub async fn` per case, taking `&dyn KeyStorage`.
//! * [`conformance_tests!`] expands to one named `#[tokio::test]` per case,
//!   so a failure reads `conformance::expired_key_is_invisible`.
//! * [`run_all`] runs every case against a live store and returns a
//!   [`Report`], for tools and health checks.
//! * [`layers`] wraps a store to fail calls on demand or count them.
//! * [`services`] finds the test servers (Redis, PostgreSQL, MySQL) and
//!   skips, or fails, when they are not there.
//! * [`proxy`] is a loopback TCP proxy that cuts, refuses, stalls or slows
//!   the connections between a store and its server, and [`faults`] checks
//!   what a store does during such an outage and after it.
//! * `provider_stub` (feature `provider-stub`) is a stub LLM provider on
//!   loopback, plain or TLS, that answers key checks as each provider
//!   documents and records what it receives.
//! * [`soak`] runs many tasks of random operations on one store and checks
//!   every answer against a model, compare-and-swap races included.
//!
//! Each case works in its own random namespace of user ids and removes
//! what it wrote, so cases run in parallel against one shared server.
//!
//! # Implementing a custom backend
//!
//! A backend is a type that implements [`KeyStorage`]. Here is one written
//! from scratch: a `Mutex<BTreeMap>`, small enough to read in a minute, and
//! complete enough to pass the whole suite. A real backend would keep the
//! same rules on its own storage:
//!
//! * validate ids with [`byok_core::validate`] before using them;
//! * treat a key as absent from its `expires_at` on;
//! * make `store`, `store_if_absent` and `compare_and_swap` atomic for
//!   their slot;
//! * walk in a stable order and put the position in the [`Cursor`](byok_core::Cursor),
//!   and refuse a cursor that is not one of yours, or names a slot no key
//!   can have, as invalid input for the cursor.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Mutex;
//!
//! use byok_core::storage::check_same_slot;
//! use byok_core::error::{Field, Problem};
//! use byok_core::{async_trait, validate, ApiKey, Cursor, InvalidInput, KeyStorage, Result, ScanPage};
//! use chrono::Utc;
//!
//! /// Keys by (user id, provider), each with the check kept for it: the
//! /// map's order is the walk's order.
//! #[derive(Debug, Default)]
//! struct MapStorage {
//!     keys: Mutex<Map>,
//! }
//!
//! type Map = BTreeMap<(String, String), (ApiKey, Option<String>)>;
//!
//! impl MapStorage {
//!     fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
//!         // A panic while holding the lock leaves the map consistent.
//!         self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
//!     }
//! }
//!
//! fn slot(user_id: &str, provider: &str) -> (String, String) {
//!     (user_id.to_owned(), provider.to_owned())
//! }
//!
//! #[async_trait]
//! impl KeyStorage for MapStorage {
//!     async fn store(&self, key: &ApiKey) -> Result<()> {
//!         // An `ApiKey` always holds valid ids: no check needed here.
//!         // A new key starts without a kept check.
//!         self.lock().insert(slot(key.user_id(), key.provider()), (key.clone(), None));
//!         Ok(())
//!     }
//!
//!     async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
//!         validate::stored_slot(user_id, provider)?;
//!         let now = Utc::now();
//!         Ok(self.lock().get(&slot(user_id, provider)).map(|(k, _)| k).filter(|k| !k.is_expired_at(now)).cloned())
//!     }
//!
//!     async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
//!         validate::stored_slot(user_id, provider)?;
//!         Ok(self.lock().remove(&slot(user_id, provider)).is_some())
//!     }
//!
//!     async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
//!         validate::stored_user_id(user_id)?;
//!         let now = Utc::now();
//!         Ok(self.lock().values()
//!             .map(|(k, _)| k)
//!             .filter(|k| k.user_id() == user_id && !k.is_expired_at(now))
//!             .map(|k| k.provider().to_owned())
//!             .collect())
//!     }
//!
//!     async fn clear_all(&self, user_id: &str) -> Result<u64> {
//!         validate::stored_user_id(user_id)?;
//!         let mut keys = self.lock();
//!         let before = keys.len();
//!         keys.retain(|(user, _), _| user != user_id);
//!         Ok((before - keys.len()) as u64)
//!     }
//!
//!     async fn purge_expired(&self) -> Result<u64> {
//!         let now = Utc::now();
//!         let mut keys = self.lock();
//!         let before = keys.len();
//!         keys.retain(|_, (k, _)| !k.is_expired_at(now));
//!         Ok((before - keys.len()) as u64)
//!     }
//!
//!     async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
//!         // The check and the write under one lock: atomic for the slot.
//!         let now = Utc::now();
//!         let mut keys = self.lock();
//!         let slot = slot(key.user_id(), key.provider());
//!         if keys.get(&slot).is_some_and(|(k, _)| !k.is_expired_at(now)) {
//!             return Ok(false);
//!         }
//!         keys.insert(slot, (key.clone(), None));
//!         Ok(true)
//!     }
//!
//!     async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
//!         check_same_slot(current, new)?;
//!         let now = Utc::now();
//!         let mut keys = self.lock();
//!         match keys.get_mut(&slot(current.user_id(), current.provider())) {
//!             Some((stored, _)) if !stored.is_expired_at(now)
//!                 && stored.encrypted_value() == current.encrypted_value() =>
//!             {
//!                 // The check stays: a rotation swaps in the same key.
//!                 *stored = new.clone();
//!                 Ok(true)
//!             }
//!             _ => Ok(false),
//!         }
//!     }
//!
//!     async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
//!         validate::page_size(limit)?;
//!         let start = match cursor {
//!             Some(c) => {
//!                 let (user, provider) = c.slot()?;
//!                 // A cursor is input too: one naming a slot that no key
//!                 // can have is refused.
//!                 validate::stored_slot(user, provider).map_err(|_| {
//!                     InvalidInput::new(Field::Cursor, Problem::Other("names no valid slot"))
//!                 })?;
//!                 std::ops::Bound::Excluded(slot(user, provider))
//!             }
//!             None => std::ops::Bound::Unbounded,
//!         };
//!         let now = Utc::now();
//!         let keys = self.lock();
//!         let mut live = keys
//!             .range((start, std::ops::Bound::Unbounded))
//!             .map(|(_, (k, _))| k)
//!             .filter(|k| !k.is_expired_at(now));
//!         let page: Vec<ApiKey> = live.by_ref().take(limit).cloned().collect();
//!         let next = match (page.last(), live.next()) {
//!             (Some(last), Some(_)) => Some(Cursor::after_slot(last.user_id(), last.provider())),
//!             _ => None,
//!         };
//!         Ok(ScanPage { keys: page, next })
//!     }
//!
//!     async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
//!         validate::stored_slot(user_id, provider)?;
//!         match self.lock().get_mut(&slot(user_id, provider)) {
//!             Some((_, kept)) => {
//!                 *kept = Some(check.to_owned());
//!                 Ok(true)
//!             }
//!             None => Ok(false),
//!         }
//!     }
//!
//!     async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
//!         validate::stored_user_id(user_id)?;
//!         Ok(self.lock().iter()
//!             .filter(|((user, _), _)| user == user_id)
//!             .filter_map(|((_, provider), (_, check))| Some((provider.clone(), check.clone()?)))
//!             .collect())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a test module, `byok_testkit::conformance_tests!(MapStorage::default());`
//! // makes one #[tokio::test] per case. Here, run them all at once:
//! let report = byok_testkit::run_all(&MapStorage::default()).await;
//! assert!(report.all_passed(), "{report}");
//! assert!(report.results().len() >= 20);
//! # }
//! ```

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use byok_core::{ByokError, KeyStorage};
use futures::future::BoxFuture;

/// Fails the case with the message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::Failure::new(format!($($msg)+)));
        }
    };
}

/// Fails the case unless both sides are equal, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::Failure::new(format!(
                        "{}: expected {:?}, got {:?}",
                        format!($($msg)+),
                        r,
                        l
                    )));
                }
            }
        }
    };
}

/// A case: `pub async fn $name($store: &$ty) -> CaseResult` (`$ty` is
/// `dyn KeyStorage` unless given) that runs `$body` with a fresh
/// [`Namespace`] `$ns`, cleared after.
macro_rules! case {
    ($(#[$doc:meta])* $name:ident($store:ident, $ns:ident) $body:block) => {
        case!($(#[$doc])* $name($store: dyn byok_core::KeyStorage, $ns) $body);
    };
    ($(#[$doc:meta])* $name:ident($store:ident: $ty:ty, $ns:ident) $body:block) => {
        $(#[$doc])*
        pub async fn $name($store: &$ty) -> $crate::CaseResult {
            let $ns = $crate::Namespace::new();
            let result: $crate::CaseResult = async { $body }.await;
            $ns.cleanup($store).await;
            result
        }
    };
}

/// Defines the exported macro `$name`: its argument is the setup of each
/// test (an `Option` after `maybe:`), and it expands to
/// [`__case_tests!`] over the cases given, in a module `$module`.
macro_rules! case_tests_macro {
    ($d:tt; $(#[$doc:meta])* $name:ident, $module:ident, $cases:ident; $($case:ident),* $(,)?) => {
        $(#[$doc])*
        #[macro_export]
        macro_rules! $name {
            (maybe: $d setup:expr) => {
                $d crate::__case_tests!($module, $cases, $d setup; $($case),*);
            };
            ($d setup:expr) => {
                $d crate::$name!(maybe: Some($d setup));
            };
        }
    };
}

pub mod admin;
pub mod cases;
pub mod layers;
pub mod services;

pub mod faults;
#[cfg(feature = "provider-stub")]
pub mod provider_stub;
pub mod proxy;
pub mod soak;
pub mod sql;

#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Why a case failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    message: String,
}

impl Failure {
    /// A failure with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<ByokError> for Failure {
    fn from(e: ByokError) -> Self {
        Failure::new(format!("the store failed: {e} ({e:?})"))
    }
}

impl From<byok_core::InvalidInput> for Failure {
    fn from(e: byok_core::InvalidInput) -> Self {
        Failure::new(format!("invalid input: {e}"))
    }
}

/// The outcome of one case.
pub type CaseResult = Result<(), Failure>;

/// A random namespace of user ids for one case.
///
/// Every user id a case makes starts with the namespace's prefix
/// (`byok-test-<random>-`), and [`Namespace::cleanup`] clears each of them.
#[derive(Debug)]
pub struct Namespace {
    prefix: String,
    users: Mutex<Vec<String>>,
}

impl Namespace {
    /// A fresh namespace with a random prefix.
    pub fn new() -> Self {
        Namespace {
            prefix: format!("byok-test-{:016x}-", rand::random::<u64>()),
            users: Mutex::new(Vec::new()),
        }
    }

    /// The prefix of every user id of this namespace.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The user id `<prefix><suffix>`, remembered for cleanup.
    pub fn user(&self, suffix: &str) -> String {
        let user = format!("{}{suffix}", self.prefix);
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if !users.contains(&user) {
            users.push(user.clone());
        }
        user
    }

    /// Clears every user id this namespace made; errors are ignored, since
    /// cleanup also runs after a failure.
    pub async fn cleanup(&self, store: &dyn KeyStorage) {
        let users = std::mem::take(&mut *self.users.lock().unwrap_or_else(|p| p.into_inner()));
        for user in users {
            let _ = store.clear_all(&user).await;
        }
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

/// A case of the suite: its name and its function.
pub type CaseFn = for<'a> fn(&'a dyn KeyStorage) -> BoxFuture<'a, CaseResult>;

/// The result of one case in a [`Report`].
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name, as in [`cases`].
    pub name: &'static str,
    /// Its outcome.
    pub outcome: CaseResult,
    /// How long it ran.
    pub elapsed: Duration,
}

/// The results of [`run_all`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    results: Vec<CaseReport>,
}

impl Report {
    /// Every case's result, in the order they ran.
    pub fn results(&self) -> &[CaseReport] {
        &self.results
    }

    /// Whether every case passed.
    pub fn all_passed(&self) -> bool {
        self.results.iter().all(|r| r.outcome.is_ok())
    }

    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_ok()).count()
    }

    /// The cases that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CaseReport> {
        self.results.iter().filter(|r| r.outcome.is_err())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            match &r.outcome {
                Ok(()) => writeln!(f, "ok      {} ({:.0?})", r.name, r.elapsed)?,
                Err(e) => writeln!(f, "FAILED  {} ({:.0?}): {e}", r.name, r.elapsed)?,
            }
        }
        write!(
            f,
            "conformance: {} passed, {} failed",
            self.passed(),
            self.results.len() - self.passed()
        )
    }
}

/// Runs every case, one after another, against `store` and reports each.
pub async fn run_all(store: &dyn KeyStorage) -> Report {
    let mut report = Report::default();
    for (name, case) in CASES {
        let start = Instant::now();
        let outcome = case(store).await;
        report.results.push(CaseReport {
            name,
            outcome,
            elapsed: start.elapsed(),
        });
    }
    report
}

/// A module `$module` of one `#[tokio::test]` per case, each named after
/// its case and calling `$crate::$cases::$case` with what `$setup` (an
/// `Option`) gives, or returning at once when it gives `None`.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_tests {
    ($module:ident, $cases:ident, $setup:expr; $($case:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(store) = $setup else { return };
                    if let Err(failure) = $crate::$cases::$case(&store).await {
                        panic!("{}: {}", stringify!($case), failure);
                    }
                }
            )*
        }
    };
}

macro_rules! suite {
    ($d:tt; $($case:ident),* $(,)?) => {
        /// Every case of the suite, by name.
        pub const CASES: &[(&str, CaseFn)] = &[
            $((stringify!($case), |store| Box::pin(cases::$case(store)))),*
        ];

        case_tests_macro!($d;
            /// Expands to a module `conformance` with one `#[tokio::test]` per
            /// case of the suite, each named after its case.
            ///
            /// The argument is an expression, evaluated inside each async test,
            /// that makes the store under test. With `maybe:` before it, the
            /// expression gives an `Option` of a store, and a test whose setup
            /// gives `None` returns at once (see [`services`] for the skip
            /// lines). The calling crate needs `tokio` with the `macros` and
            /// `rt-multi-thread` features among its dev-dependencies.
            ///
            /// ```
            /// mod memory {
            ///     use byok_memory::MemoryStorage;
            ///     byok_testkit::conformance_tests!(MemoryStorage::new());
            /// }
            ///
            /// mod server {
            ///     # use byok_memory::MemoryStorage;
            ///     /// `None`, with a skip line, when the server is not there.
            ///     async fn setup() -> Option<MemoryStorage> {
            ///         byok_testkit::services::redis_url().await?;
            ///         Some(MemoryStorage::new())
            ///     }
            ///     byok_testkit::conformance_tests!(maybe: setup().await);
            /// }
            /// # fn main() {}
            /// ```
            conformance_tests, conformance, cases; $($case),*
        );
    };
}

suite!($;
    round_trip_preserves_every_field,
    binary_ciphertext_round_trips,
    large_value_round_trips,
    timestamps_keep_millisecond_precision,
    key_without_hint_or_expiry_round_trips,
    replace_keeps_one_slot,
    replacing_clears_expiry,
    missing_key_is_none,
    delete_returns_true_then_false,
    list_is_sorted_unique_and_scoped,
    clear_removes_only_that_users_keys,
    clear_is_exact_for_prefix_and_pattern_ids,
    users_are_isolated_under_hostile_ids,
    ids_with_format_characters_stored_earlier_stay_usable,
    providers_are_isolated_under_hostile_ids,
    joined_ids_do_not_collide,
    ids_compare_byte_for_byte,
    longest_legal_ids_round_trip,
    invalid_ids_are_rejected,
    expired_key_is_invisible,
    retrieve_value_is_the_value_retrieve_returns,
    user_keys_returns_the_users_keys_sorted,
    purge_removes_only_expired_keys,
    short_ttl_elapses_in_real_time,
    concurrent_writers_of_one_slot,
    concurrent_writers_of_distinct_slots,
    compare_and_swap_requires_current_value,
    compare_and_swap_is_atomic,
    store_if_absent_stores_only_into_an_empty_slot,
    store_if_absent_is_atomic,
    scan_visits_every_key_once,
    user_with_500_providers,
    hostile_ids_are_refused_or_isolated,
    absurd_times_are_stored_exactly_or_refused,
    times_after_the_year_9999_round_trip,
    bad_scan_cursors_are_invalid_input,
    swapping_for_an_identical_key_succeeds,
    checks_are_kept_per_slot,
    checks_go_with_their_key,
    checks_round_trip_under_hostile_ids,
);
