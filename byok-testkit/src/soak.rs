//! A model-checked soak: many tasks run random operations on one store at
//! once, and every answer is checked against a reference model.
//!
//! [`soak`] starts [`SoakConfig::tasks`] tasks on one store. Each task owns
//! a few users of a random namespace and keeps a model of their slots, so
//! every answer about them can be checked exactly: `store`, `retrieve`,
//! `delete`, `list_providers`, `user_keys`, `clear_all` and
//! `compare_and_swap` (and, now and then, `purge_expired`), with keys that never expire, expire far in the
//! future, or have already expired (which must then be invisible).
//!
//! All tasks also race on a few shared counter slots: read the counter,
//! compare-and-swap it to its value plus one. The swaps must be atomic: no
//! two swaps from the same value may both succeed, a task never reads a
//! counter going backwards, and at the end each counter equals the number
//! of swaps that succeeded on it (a linearizability check).
//!
//! A call that fails with a retryable error makes its slots unknown to the
//! model until the store answers for them again; errors are counted, not
//! hidden. The [`SoakReport`] gives operations run, errors of each kind and
//! mismatches.
//!
//! ```
//! use std::sync::Arc;
//! use byok_testkit::soak::{soak, SoakConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = Arc::new(byok_memory::MemoryStorage::new());
//! let report = soak(store, &SoakConfig { ops_per_task: 50, ..SoakConfig::default() }).await;
//! assert_eq!(report.ops, 16 * 50);
//! assert!(report.is_clean(), "{report}");
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_core::{ApiKey, ByokError, KeyStorage};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::Namespace;

/// The size and shape of a [`soak`].
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Tasks running at once. Default: 16.
    pub tasks: usize,
    /// Operations each task runs. Default: 320 (5,120 in all).
    pub ops_per_task: usize,
    /// Users each task owns. Default: 2.
    pub users_per_task: usize,
    /// Providers per user: the key space of each user. Default: 4.
    pub providers: usize,
    /// Counter slots shared by all tasks. Default: 2.
    pub counters: usize,
    /// The bound on each call, a hang detector: a call that takes longer
    /// counts as an error that is not retryable. Default: 60 s.
    pub op_timeout: Duration,
    /// The seed of the random choices; `None` for a random one (printed in
    /// the report, so a run can be repeated).
    pub seed: Option<u64>,
}

impl Default for SoakConfig {
    fn default() -> Self {
        SoakConfig {
            tasks: 16,
            ops_per_task: 320,
            users_per_task: 2,
            providers: 4,
            counters: 2,
            op_timeout: Duration::from_secs(60),
            seed: None,
        }
    }
}

/// The variable that sizes the soaks of the test suites: the total number
/// of operations, split evenly among the tasks (see
/// [`SoakConfig::from_env`]).
pub const OPS_VAR: &str = "BYOK_TEST_SOAK_OPS";

impl SoakConfig {
    /// The default, sized for CI, unless [`OPS_VAR`] gives a total number
    /// of operations (for a longer run by hand: `BYOK_TEST_SOAK_OPS=110000`).
    pub fn from_env() -> Self {
        let mut config = SoakConfig::default();
        if let Some(total) = std::env::var(OPS_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            config.ops_per_task = total.div_ceil(config.tasks).max(1);
        }
        config
    }
}

/// What a [`soak`] ran and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SoakReport {
    /// The seed of the run.
    pub seed: u64,
    /// Tasks that ran.
    pub tasks: usize,
    /// Operations run (a counter increment is one, of two calls).
    pub ops: u64,
    /// Calls that failed with a retryable error.
    pub retryable_errors: u64,
    /// Calls that failed with any other error, or hung.
    pub other_errors: u64,
    /// Answers that contradict the model.
    pub mismatches: u64,
    /// Successful compare-and-swap increments of the shared counters.
    pub increments: u64,
    /// Compare-and-swap increments that lost a race (and said so).
    pub lost_races: u64,
    /// Answers checked about slots holding an expired key.
    pub expired_checks: u64,
    /// The first few mismatches and errors, described (no key material).
    pub samples: Vec<String>,
}

impl SoakReport {
    /// No mismatch and no error other than retryable ones.
    pub fn is_clean(&self) -> bool {
        self.mismatches == 0 && self.other_errors == 0
    }

    fn merge(&mut self, other: SoakReport) {
        self.ops += other.ops;
        self.retryable_errors += other.retryable_errors;
        self.other_errors += other.other_errors;
        self.mismatches += other.mismatches;
        self.increments += other.increments;
        self.lost_races += other.lost_races;
        self.expired_checks += other.expired_checks;
        for s in other.samples {
            self.sample(s);
        }
    }

    fn sample(&mut self, what: String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(what);
        }
    }

    fn mismatch(&mut self, what: String) {
        self.mismatches += 1;
        self.sample(format!("mismatch: {what}"));
    }

    fn error(&mut self, op: &str, e: &ByokError) {
        if e.is_retryable() {
            self.retryable_errors += 1;
        } else {
            self.other_errors += 1;
            self.sample(format!("{op} failed: {e}"));
        }
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops by {} tasks (seed {}): {} retryable errors, {} other errors, {} mismatches; \
             {} counter increments ({} lost races), {} expired-key checks",
            self.ops,
            self.tasks,
            self.seed,
            self.retryable_errors,
            self.other_errors,
            self.mismatches,
            self.increments,
            self.lost_races,
            self.expired_checks,
        )?;
        for s in &self.samples {
            write!(f, "\n  {s}")?;
        }
        Ok(())
    }
}

const MAX_SAMPLES: usize = 10;

/// How many times setup and the final checks retry a retryable error.
const SETTLE_ATTEMPTS: u32 = 50;

/// Runs the soak on `store` and reports; see the [module docs](self).
/// Everything it writes is in a random namespace and removed at the end.
pub async fn soak(store: Arc<dyn KeyStorage>, config: &SoakConfig) -> SoakReport {
    let seed = config.seed.unwrap_or_else(rand::random);
    let ns = Arc::new(Namespace::new());
    let counter_user = ns.user("counters");
    let mut report = SoakReport {
        seed,
        tasks: config.tasks,
        ..SoakReport::default()
    };

    // Counters start at zero.
    let mut counters = Vec::new();
    for c in 0..config.counters {
        let key = match ApiKey::new(counter_user.as_str(), format!("c{c}"), encode(0)) {
            Ok(key) => key,
            Err(e) => {
                report.other_errors += 1;
                report.sample(format!("counter key: {e}"));
                return report;
            }
        };
        if let Err(e) = settle(config, || store.store(&key)).await {
            report.error("store of a counter", &e);
            return report;
        }
        counters.push(key.provider().to_owned());
    }

    let shared = Arc::new(Shared {
        counter_user,
        counters,
        claimed: Mutex::new(HashSet::new()),
    });
    let mut handles = Vec::new();
    for task in 0..config.tasks {
        let users = (0..config.users_per_task)
            .map(|u| ns.user(&format!("t{task}-u{u}")))
            .collect();
        let mut worker = Worker {
            store: Arc::clone(&store),
            config: config.clone(),
            shared: Arc::clone(&shared),
            rng: StdRng::seed_from_u64(seed ^ (task as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            users,
            slots: HashMap::new(),
            last_seen: vec![0; shared.counters.len()],
            increments: vec![0; shared.counters.len()],
            uncertain: vec![0; shared.counters.len()],
            seq: 0,
            task,
            report: SoakReport::default(),
        };
        handles.push(tokio::spawn(async move {
            worker.run().await;
            worker
        }));
    }
    let mut increments = vec![0u64; shared.counters.len()];
    let mut uncertain = vec![0u64; shared.counters.len()];
    for handle in handles {
        match handle.await {
            Ok(worker) => {
                for (c, n) in worker.increments.iter().enumerate() {
                    increments[c] += n;
                    uncertain[c] += worker.uncertain[c];
                }
                report.merge(worker.report);
            }
            Err(e) => {
                report.other_errors += 1;
                report.sample(format!("a task panicked: {e}"));
            }
        }
    }

    // Each counter went up exactly once per successful swap.
    for (c, provider) in shared.counters.iter().enumerate() {
        match settle(config, || store.retrieve(&shared.counter_user, provider)).await {
            Ok(Some(key)) => {
                let value = decode(&key);
                let (low, high) = (increments[c], increments[c] + uncertain[c]);
                if value.is_none_or(|v| v < low || v > high) {
                    report.mismatch(format!(
                        "counter {provider} holds {value:?} after {low} successful swaps \
                         and {} that failed retryably",
                        uncertain[c]
                    ));
                }
            }
            Ok(None) => report.mismatch(format!("counter {provider} is gone")),
            Err(e) => report.error("final read of a counter", &e),
        }
    }
    let _ = tokio::time::timeout(config.op_timeout, ns.cleanup(&*store)).await;
    report
}

/// What all tasks share: the counters and the values swapped from.
#[derive(Debug)]
struct Shared {
    counter_user: String,
    counters: Vec<String>,
    /// (counter, value) pairs that a successful swap started from.
    claimed: Mutex<HashSet<(usize, u64)>>,
}

/// What the model knows of one slot.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    /// Nothing is stored.
    Empty,
    /// This key is stored and unexpired.
    Live(ApiKey),
    /// No unexpired key; an expired one may still be stored.
    Expired,
    /// A call failed: anything may be stored.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Store,
    Retrieve,
    RetrieveValue,
    Delete,
    List,
    UserKeys,
    ClearAll,
    Swap,
    Increment,
    Purge,
}

/// Operations and their weights.
const OPS: &[(Op, u32)] = &[
    (Op::Store, 22),
    (Op::Retrieve, 14),
    (Op::RetrieveValue, 6),
    (Op::Delete, 10),
    (Op::List, 10),
    (Op::UserKeys, 6),
    (Op::ClearAll, 2),
    (Op::Swap, 12),
    (Op::Increment, 18),
    (Op::Purge, 1),
];

struct Worker {
    store: Arc<dyn KeyStorage>,
    config: SoakConfig,
    shared: Arc<Shared>,
    rng: StdRng,
    users: Vec<String>,
    /// By (user index, provider index); absent means `Empty`.
    slots: HashMap<(usize, usize), Slot>,
    last_seen: Vec<u64>,
    increments: Vec<u64>,
    uncertain: Vec<u64>,
    seq: u64,
    task: usize,
    report: SoakReport,
}

fn provider(p: usize) -> String {
    format!("p{p}")
}

fn encode(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn decode(key: &ApiKey) -> Option<u64> {
    Some(u64::from_be_bytes(key.encrypted_value().try_into().ok()?))
}

/// Runs `work` until it succeeds or fails otherwise than retryably, a
/// bounded number of times.
async fn settle<T, F: Future<Output = Result<T, ByokError>>>(
    config: &SoakConfig,
    mut work: impl FnMut() -> F,
) -> Result<T, ByokError> {
    let mut last = None;
    for _ in 0..SETTLE_ATTEMPTS {
        match tokio::time::timeout(config.op_timeout, work()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if e.is_retryable() => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                last = Some(hung());
            }
        }
    }
    Err(last.unwrap_or_else(hung))
}

fn hung() -> ByokError {
    byok_core::StorageError::new(
        "soak",
        byok_core::StorageErrorKind::Other,
        "the call hung past the soak's bound",
    )
    .into()
}

impl Worker {
    async fn run(&mut self) {
        let total: u32 = OPS.iter().map(|(_, w)| w).sum();
        for _ in 0..self.config.ops_per_task {
            let mut pick = self.rng.random_range(0..total);
            let mut op = Op::Store;
            for &(candidate, weight) in OPS {
                if pick < weight {
                    op = candidate;
                    break;
                }
                pick -= weight;
            }
            self.report.ops += 1;
            if let Err(e) = self.step(op).await {
                self.report.error(&format!("{op:?}"), &e);
            }
        }
    }

    /// One call under the hang bound.
    async fn call<T>(
        &self,
        work: impl Future<Output = Result<T, ByokError>>,
    ) -> Result<T, ByokError> {
        tokio::time::timeout(self.config.op_timeout, work)
            .await
            .unwrap_or_else(|_| Err(hung()))
    }

    fn slot(&self, u: usize, p: usize) -> Slot {
        self.slots.get(&(u, p)).cloned().unwrap_or(Slot::Empty)
    }

    fn set(&mut self, u: usize, p: usize, slot: Slot) {
        self.slots.insert((u, p), slot);
    }

    /// A new key of this task for (u, p): never expiring, expiring in a
    /// day, or expired an hour ago.
    fn new_key(&mut self, u: usize, p: usize) -> Result<ApiKey, ByokError> {
        self.seq += 1;
        let mut value = format!("{}:{}:", self.task, self.seq).into_bytes();
        value.extend((0..self.rng.random_range(0..24)).map(|_| self.rng.random::<u8>()));
        let expires_at: Option<DateTime<Utc>> = match self.rng.random_range(0..20) {
            0..=13 => None,
            14..=16 => Some(Utc::now() + chrono::Duration::days(1)),
            _ => Some(Utc::now() - chrono::Duration::hours(1)),
        };
        let hint = self
            .rng
            .random_bool(0.5)
            .then(|| format!("...{}", self.seq));
        Ok(ApiKey::new(self.users[u].as_str(), provider(p), value)?
            .with_expires_at(expires_at)
            .with_hint(hint)?)
    }

    fn model_of(key: &ApiKey) -> Slot {
        if key.is_expired() {
            Slot::Expired
        } else {
            Slot::Live(key.clone())
        }
    }

    async fn step(&mut self, op: Op) -> Result<(), ByokError> {
        let u = self.rng.random_range(0..self.users.len());
        let p = self.rng.random_range(0..self.config.providers);
        let user = self.users[u].clone();
        let slot = self.slot(u, p);
        match op {
            Op::Store => {
                let key = self.new_key(u, p)?;
                self.set(u, p, Slot::Unknown);
                self.call(self.store.store(&key)).await?;
                self.set(u, p, Self::model_of(&key));
            }
            Op::Retrieve => {
                let got = self.call(self.store.retrieve(&user, &provider(p))).await?;
                match (&slot, &got) {
                    (Slot::Unknown, Some(k)) => self.set(u, p, Self::model_of(k)),
                    (Slot::Unknown, None) => self.set(u, p, Slot::Expired),
                    (Slot::Live(k), Some(g)) if k == g => {}
                    (Slot::Empty, None) => {}
                    (Slot::Expired, None) => self.report.expired_checks += 1,
                    _ => self.report.mismatch(format!(
                        "retrieve of {user}/p{p} gave {got:?}, the model holds {slot:?}"
                    )),
                }
            }
            Op::RetrieveValue => {
                let got = self
                    .call(self.store.retrieve_value(&user, &provider(p)))
                    .await?;
                match (&slot, &got) {
                    // The value alone cannot tell the model which key it is.
                    (Slot::Unknown, _) => {}
                    (Slot::Live(k), Some(v)) if k.encrypted_value() == &v[..] => {}
                    (Slot::Empty, None) => {}
                    (Slot::Expired, None) => self.report.expired_checks += 1,
                    _ => self.report.mismatch(format!(
                        "retrieve_value of {user}/p{p} gave {got:?}, the model holds {slot:?}"
                    )),
                }
            }
            Op::Delete => {
                let before = slot.clone();
                self.set(u, p, Slot::Unknown);
                let removed = self.call(self.store.delete(&user, &provider(p))).await?;
                self.set(u, p, Slot::Empty);
                let right = match before {
                    Slot::Empty => !removed,
                    Slot::Live(_) => removed,
                    Slot::Expired | Slot::Unknown => true,
                };
                if !right {
                    self.report.mismatch(format!(
                        "delete of {user}/p{p} said {removed}, the model held {before:?}"
                    ));
                }
            }
            Op::List => {
                let listed = self.call(self.store.list_providers(&user)).await?;
                self.check_list(u, &user, listed);
            }
            Op::UserKeys => {
                let keys = self.call(self.store.user_keys(&user)).await?;
                self.check_user_keys(u, &user, &keys);
            }
            Op::ClearAll => {
                let before: Vec<Slot> = (0..self.config.providers)
                    .map(|p| self.slot(u, p))
                    .collect();
                for p in 0..self.config.providers {
                    self.set(u, p, Slot::Unknown);
                }
                let removed = self.call(self.store.clear_all(&user)).await?;
                for p in 0..self.config.providers {
                    self.set(u, p, Slot::Empty);
                }
                let live = before.iter().filter(|s| matches!(s, Slot::Live(_))).count() as u64;
                let maybe = before
                    .iter()
                    .filter(|s| matches!(s, Slot::Expired | Slot::Unknown))
                    .count() as u64;
                if removed < live || removed > live + maybe {
                    self.report.mismatch(format!(
                        "clear_all of {user} removed {removed}; the model held {live} live \
                         keys and {maybe} maybe stored"
                    ));
                }
            }
            Op::Swap => self.swap(u, p, &user, slot).await?,
            Op::Increment => self.increment().await?,
            Op::Purge => {
                // Removes expired keys of every task: slots the models
                // hold as `Expired` may or may not be stored, either way.
                self.call(self.store.purge_expired()).await?;
            }
        }
        Ok(())
    }

    fn check_list(&mut self, u: usize, user: &str, listed: Vec<String>) {
        let unknown: Vec<String> = (0..self.config.providers)
            .filter(|&p| self.slot(u, p) == Slot::Unknown)
            .map(provider)
            .collect();
        let mut expected: Vec<String> = (0..self.config.providers)
            .filter(|&p| matches!(self.slot(u, p), Slot::Live(_)))
            .map(provider)
            .collect();
        expected.sort();
        let sorted = listed.windows(2).all(|w| w[0] < w[1]);
        let known: Vec<String> = listed
            .iter()
            .filter(|p| !unknown.contains(p))
            .cloned()
            .collect();
        if !sorted || known != expected {
            self.report.mismatch(format!(
                "list_providers of {user} gave {listed:?}, the model expects {expected:?} \
                 (unknown: {unknown:?})"
            ));
        }
        if (0..self.config.providers).any(|p| self.slot(u, p) == Slot::Expired) {
            self.report.expired_checks += 1;
        }
    }

    fn check_user_keys(&mut self, u: usize, user: &str, keys: &[ApiKey]) {
        let sorted = keys.windows(2).all(|w| w[0].provider() < w[1].provider());
        if !sorted {
            self.report
                .mismatch(format!("user_keys of {user} is not sorted by provider"));
        }
        for p in 0..self.config.providers {
            let name = provider(p);
            let got = keys.iter().find(|k| k.provider() == name);
            let slot = self.slot(u, p);
            let right = match (&slot, got) {
                (Slot::Unknown, _) => true,
                (Slot::Live(k), Some(g)) => k == g,
                (Slot::Empty, None) | (Slot::Expired, None) => true,
                // Expired keys may be listed, as expired.
                (Slot::Expired, Some(g)) => g.is_expired(),
                _ => false,
            };
            if slot == Slot::Expired {
                self.report.expired_checks += 1;
            }
            if !right {
                self.report.mismatch(format!(
                    "user_keys of {user} gave {got:?} for {name}, the model holds {slot:?}"
                ));
            }
        }
        if keys.iter().any(|k| k.user_id() != user) {
            self.report
                .mismatch(format!("user_keys of {user} gave another user's key"));
        }
    }

    async fn swap(&mut self, u: usize, p: usize, user: &str, slot: Slot) -> Result<(), ByokError> {
        // Mostly the stored key; sometimes a stale one, which must lose.
        let (current, expect) = match &slot {
            Slot::Live(k) if self.rng.random_bool(0.8) => (k.clone(), Some(true)),
            Slot::Unknown => (self.new_key(u, p)?, None),
            _ => (self.new_key(u, p)?, Some(false)),
        };
        let new = self.new_key(u, p)?;
        self.set(u, p, Slot::Unknown);
        let swapped = self
            .call(self.store.compare_and_swap(&current, &new))
            .await?;
        let after = match (swapped, &slot) {
            (true, _) => Self::model_of(&new),
            (false, Slot::Unknown) => Slot::Unknown,
            (false, before) => before.clone(),
        };
        self.set(u, p, after);
        if expect.is_some_and(|e| e != swapped) {
            self.report.mismatch(format!(
                "compare_and_swap of {user}/p{p} said {swapped}, the model held {slot:?}"
            ));
        }
        Ok(())
    }

    async fn increment(&mut self) -> Result<(), ByokError> {
        let c = self.rng.random_range(0..self.shared.counters.len());
        let shared = Arc::clone(&self.shared);
        let name = &shared.counters[c];
        let Some(current) = self
            .call(self.store.retrieve(&shared.counter_user, name))
            .await?
        else {
            self.report.mismatch(format!("counter {name} is gone"));
            return Ok(());
        };
        let Some(n) = decode(&current) else {
            self.report
                .mismatch(format!("counter {name} holds something else"));
            return Ok(());
        };
        if n < self.last_seen[c] {
            self.report.mismatch(format!(
                "counter {name} went back from {} to {n}",
                self.last_seen[c]
            ));
        }
        self.last_seen[c] = self.last_seen[c].max(n);
        let next = current.clone().with_encrypted_value(encode(n + 1));
        match self
            .call(self.store.compare_and_swap(&current, &next))
            .await
        {
            Ok(true) => {
                self.increments[c] += 1;
                self.report.increments += 1;
                self.last_seen[c] = self.last_seen[c].max(n + 1);
                let fresh = shared
                    .claimed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((c, n));
                if !fresh {
                    self.report.mismatch(format!(
                        "two swaps of counter {name} from {n} both succeeded"
                    ));
                }
            }
            Ok(false) => self.report.lost_races += 1,
            Err(e) => {
                self.uncertain[c] += 1;
                return Err(e);
            }
        }
        Ok(())
    }
}
