//! Outage checks: what a store must do while a [`FaultProxy`] between it
//! and its server injects a fault, and after the fault ends.
//!
//! [`outage`] writes keys, injects a [`Fault`], calls every operation of
//! [`KeyStorage`] during the fault, ends it, and then checks, on the same
//! store value:
//!
//! * during an outage ([`Fault::Crash`], [`Fault::Stall`]) every call fails
//!   with a retryable [`ByokError::Storage`] within `bound` (the store's
//!   own deadline must end it; `bound` only turns a hang into a failure);
//! * during a [`Fault::Cut`] every call succeeds with the right answer or
//!   fails retryably; during [`Fault::Latency`] every call succeeds;
//! * afterwards the store works again, after at most a few retryable
//!   errors, and every write acknowledged before the fault reads back
//!   exactly.
//!
//! Writes made during the fault go to a user of their own: their outcome is
//! unknown (a stalled write may still land when the stall ends), so they
//! never touch the keys whose survival is checked.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use byok_testkit::faults::{outage, Fault};
//! use byok_testkit::proxy::FaultProxy;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A memory store does not go through the proxy, so latency changes
//! // nothing, and a crash is not noticed at all: `outage` says so.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let proxy = FaultProxy::start(listener.local_addr().unwrap()).await.unwrap();
//! let store = byok_memory::MemoryStorage::new();
//! let bound = Duration::from_secs(30);
//! let report = outage(&store, &proxy, Fault::Latency(Duration::from_millis(5)), bound)
//!     .await
//!     .unwrap();
//! assert_eq!(report.errors_during, 0);
//! assert!(outage(&store, &proxy, Fault::Crash, bound).await.is_err());
//! # }
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use byok_core::{ApiKey, ByokError, KeyStorage};
use chrono::Utc;

use crate::proxy::FaultProxy;
use crate::{Failure, Namespace};

/// A fault that [`outage`] injects through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server goes away: open connections are reset and new ones
    /// refused ([`FaultProxy::cut`] and [`FaultProxy::refuse`]).
    Crash,
    /// The server freezes: nothing passes and nothing closes
    /// ([`FaultProxy::stall`]).
    Stall,
    /// Open connections are reset once; new ones go through
    /// ([`FaultProxy::cut`]).
    Cut,
    /// Every chunk is delayed by this much, which must stay well inside the
    /// store's deadline ([`FaultProxy::set_latency`]).
    Latency(Duration),
}

impl Fault {
    /// Whether every call must fail during the fault.
    fn is_outage(self) -> bool {
        matches!(self, Fault::Crash | Fault::Stall)
    }

    fn inject(self, proxy: &FaultProxy) -> u32 {
        match self {
            Fault::Crash => {
                proxy.cut();
                proxy.refuse();
                2
            }
            Fault::Stall => {
                proxy.stall();
                1
            }
            Fault::Cut => {
                proxy.cut();
                1
            }
            Fault::Latency(latency) => {
                proxy.set_latency(latency);
                1
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash => f.write_str("crash (cut + refuse)"),
            Fault::Stall => f.write_str("stall"),
            Fault::Cut => f.write_str("cut"),
            Fault::Latency(d) => write!(f, "latency {d:?}"),
        }
    }
}

/// What [`outage`] did and saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutageReport {
    /// The fault injected.
    pub fault: Fault,
    /// Fault actions taken on the proxy (a crash is two: cut and refuse).
    pub faults_injected: u32,
    /// Connections the proxy reset, cuts and refusals together.
    pub connections_reset: u64,
    /// Calls made during the fault, each checked.
    pub calls_checked: u32,
    /// How many of them failed (retryably: anything else is a failure).
    pub errors_during: u32,
    /// The longest any of them took: a figure for reports, never checked
    /// against anything but the hang bound.
    pub longest_call: Duration,
    /// Retryable errors after the fault ended, before the store answered.
    pub errors_after: u32,
    /// Keys acknowledged before the fault and read back after it.
    pub keys_read_back: usize,
}

impl fmt::Display for OutageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} fault actions, {} connections reset, {} calls checked during the fault \
             ({} retryable errors, longest {:.2?}), {} retryable errors after it, {} acknowledged \
             keys read back",
            self.fault,
            self.faults_injected,
            self.connections_reset,
            self.calls_checked,
            self.errors_during,
            self.longest_call,
            self.errors_after,
            self.keys_read_back,
        )
    }
}

/// How many keys are written before the fault.
const KEPT_KEYS: usize = 6;
/// How many retryable errors in a row a call may meet after the fault.
const RECOVERY_ATTEMPTS: u32 = 100;
/// The pause between two attempts after the fault.
const RECOVERY_PAUSE: Duration = Duration::from_millis(100);

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Failure::new(format!($($msg)+)));
        }
    };
}

/// Runs one fault against `store`, which must reach its server through
/// `proxy`; see the [module docs](self). Each call is bounded by `bound`,
/// a hang detector well above the store's own deadline. The proxy is
/// resumed before this returns, and the keys it wrote are removed.
pub async fn outage(
    store: &dyn KeyStorage,
    proxy: &FaultProxy,
    fault: Fault,
    bound: Duration,
) -> Result<OutageReport, Failure> {
    let ns = Namespace::new();
    let result = run_outage(store, proxy, fault, bound, &ns).await;
    proxy.resume();
    if result.is_ok() {
        ns.cleanup(store).await;
    } else {
        // The store may still be down; give cleanup a bounded try.
        let _ = tokio::time::timeout(bound, ns.cleanup(store)).await;
    }
    result
}

async fn run_outage(
    store: &dyn KeyStorage,
    proxy: &FaultProxy,
    fault: Fault,
    bound: Duration,
    ns: &Namespace,
) -> Result<OutageReport, Failure> {
    let kept_user = ns.user("kept");
    let other_user = ns.user("during");
    let mut kept = Vec::new();
    for i in 0..KEPT_KEYS {
        let key = ApiKey::new(kept_user.as_str(), format!("p{i}"), vec![i as u8; 40])?
            .with_hint(Some(format!("...{i}")))?;
        call(bound, "store before the fault", store.store(&key)).await??;
        kept.push(key);
    }
    let providers: Vec<String> = kept.iter().map(|k| k.provider().to_owned()).collect();
    // Read back once, so that the connections are open and idle when the
    // fault hits them.
    let listed = call(
        bound,
        "list before the fault",
        store.list_providers(&kept_user),
    )
    .await??;
    ensure!(listed == providers, "before the fault, listed {listed:?}");

    let before = proxy.stats();
    let faults_injected = fault.inject(proxy);

    // Writes whose outcome is unknown expire on their own, should one
    // land after cleanup.
    let soon = Some(Utc::now() + chrono::Duration::minutes(10));
    let during = ApiKey::new(other_user.as_str(), "p", vec![1])?.with_expires_at(soon);
    let swapped = during.clone().with_encrypted_value(vec![2]);
    let mut calls_checked = 0;
    let mut errors_during = 0;
    let mut check = |name: &'static str, outcome: Result<Result<bool, ByokError>, Failure>| {
        calls_checked += 1;
        match outcome? {
            Ok(right) => {
                ensure!(
                    !fault.is_outage(),
                    "{name} succeeded during a {fault}, which it cannot have reached"
                );
                ensure!(right, "{name} gave a wrong answer during a {fault}");
            }
            Err(e) => {
                ensure!(
                    e.is_retryable() && matches!(e, ByokError::Storage(_)),
                    "{name} failed during a {fault} with an error that is not a retryable \
                     storage error: {e} ({e:?})"
                );
                ensure!(
                    !matches!(fault, Fault::Latency(_)),
                    "{name} failed under latency well inside its deadline: {e}"
                );
                errors_during += 1;
            }
        }
        Ok::<(), Failure>(())
    };
    let mut longest = Duration::ZERO;
    // Calls one operation under the hang bound, times it, and checks its
    // outcome, mapped to whether its answer was right.
    macro_rules! during {
        ($name:literal, $work:expr, $right:expr) => {{
            let start = Instant::now();
            let outcome = call(bound, $name, $work).await;
            longest = longest.max(start.elapsed());
            check($name, outcome.map(|r| r.map($right)))?;
        }};
    }
    let is_first = |k: Option<ApiKey>| k.as_ref() == Some(&kept[0]);
    let is_all = |l: Vec<String>| l == providers;
    during!("retrieve", store.retrieve(&kept_user, "p0"), is_first);
    during!("list_providers", store.list_providers(&kept_user), is_all);
    during!("user_keys", store.user_keys(&kept_user), |k| k == kept);
    during!("scan", store.scan(None, 10), |_| true);
    during!("store", store.store(&during), |()| true);
    during!("store_if_absent", store.store_if_absent(&during), |_| true);
    // Right either way: after a cut, the store before it may not have landed.
    during!(
        "compare_and_swap",
        store.compare_and_swap(&during, &swapped),
        |_| true
    );
    during!("delete", store.delete(&other_user, "p"), |_| true);
    during!("clear_all", store.clear_all(&other_user), |_| true);
    during!("purge_expired", store.purge_expired(), |_| true);

    proxy.resume();
    let after = proxy.stats();
    let mut errors_after = 0;

    // The same store value answers again; every acknowledged key is there.
    for key in &kept {
        let back = recover(bound, &mut errors_after, "retrieve after the fault", || {
            store.retrieve(&kept_user, key.provider())
        })
        .await?;
        ensure!(
            back.as_ref() == Some(key),
            "the acknowledged key {} is lost or changed after a {fault}",
            key.provider()
        );
    }
    let listed = recover(bound, &mut errors_after, "list after the fault", || {
        store.list_providers(&kept_user)
    })
    .await?;
    ensure!(
        listed == providers,
        "after a {fault}, listed {listed:?}, not {providers:?}"
    );
    let fresh = ApiKey::new(kept_user.as_str(), "fresh", vec![7; 40])?;
    recover(bound, &mut errors_after, "store after the fault", || {
        store.store(&fresh)
    })
    .await?;
    let back = recover(bound, &mut errors_after, "retrieve after the fault", || {
        store.retrieve(&kept_user, "fresh")
    })
    .await?;
    ensure!(
        back == Some(fresh),
        "a write after the {fault} did not read back"
    );

    Ok(OutageReport {
        fault,
        faults_injected,
        connections_reset: (after.cut + after.refused) - (before.cut + before.refused),
        calls_checked,
        errors_during,
        longest_call: longest,
        errors_after,
        keys_read_back: kept.len(),
    })
}

/// `work` under the hang detector.
async fn call<T>(
    bound: Duration,
    name: &str,
    work: impl Future<Output = Result<T, ByokError>>,
) -> Result<Result<T, ByokError>, Failure> {
    tokio::time::timeout(bound, work)
        .await
        .map_err(|_| Failure::new(format!("{name} hung for {bound:?}")))
}

/// Runs `work` until it succeeds; every failure on the way must be
/// retryable, and there may be at most [`RECOVERY_ATTEMPTS`] of them.
async fn recover<T, F: Future<Output = Result<T, ByokError>>>(
    bound: Duration,
    errors: &mut u32,
    name: &str,
    mut work: impl FnMut() -> F,
) -> Result<T, Failure> {
    for _ in 0..RECOVERY_ATTEMPTS {
        match call(bound, name, work()).await? {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => {
                *errors += 1;
                tokio::time::sleep(RECOVERY_PAUSE).await;
            }
            Err(e) => {
                return Err(Failure::new(format!(
                    "{name} failed with an error that is not retryable: {e} ({e:?})"
                )));
            }
        }
    }
    Err(Failure::new(format!(
        "{name}: the store did not recover after {RECOVERY_ATTEMPTS} attempts"
    )))
}
