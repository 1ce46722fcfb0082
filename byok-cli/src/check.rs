//! `byok check` and `byok bench`: work against a live store in a scratch
//! namespace that is removed afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use byok::{ApiKey, ByokConfig, KeyStorage};
use serde::Serialize;

use crate::context::{self, redact};
use crate::error::{CliError, CliResult, Exit};
use crate::interrupt::Interruptible;
use crate::opt::{BenchOpts, ScratchOpts, StoreOpts};
use crate::output::{note, out};

/// A store of its own table (SQL) or key prefix (Redis) on a live server.
#[derive(Debug)]
struct Scratch {
    store: byok::Store,
    name: String,
    namespace: String,
}

impl Scratch {
    /// Opens a scratch namespace at `url`; Ctrl-C meanwhile drops whatever
    /// part of it was made.
    async fn open_interruptibly(url: &str, interrupt: &mut Interruptible) -> CliResult<Scratch> {
        let namespace = format!("byok_scratch_{:016x}", rand::random::<u64>());
        tokio::select! {
            biased;
            () = interrupt.interrupted() => {
                // The table may have been made before the open was cut off.
                let name = format!("{} (table or key prefix {namespace})", redact(url));
                let what = match byok::open_with(url, &Self::config(&namespace)).await {
                    Ok(store) if store.destroy().await.is_ok() => {
                        "interrupted before the scratch namespace was ready; it was removed"
                            .to_owned()
                    }
                    _ => format!(
                        "interrupted before the scratch namespace was ready; check {name} \
                         for anything left"
                    ),
                };
                Err(CliError::new(Exit::Interrupted, what))
            }
            scratch = Self::open(url, namespace.clone()) => scratch,
        }
    }

    fn config(namespace: &str) -> ByokConfig {
        context::config("unused", "unused")
            .with_db_table_name(namespace)
            .with_session_key_prefix(format!("{namespace}:"))
    }

    async fn open(url: &str, namespace: String) -> CliResult<Scratch> {
        let name = redact(url);
        let fail = |e: byok::ByokError| {
            CliError::from_byok(&format!("cannot open the store {name}"), &e, None)
        };
        let store = byok::open_with(url, &Self::config(&namespace))
            .await
            .map_err(fail)?;
        let scratch = Scratch {
            store,
            name,
            namespace,
        };
        if let Err(e) = scratch.store.migrate().await {
            scratch.remove().await;
            return Err(CliError::from_byok(
                "cannot create the scratch table",
                &e,
                Some(&scratch.name),
            ));
        }
        Ok(scratch)
    }

    /// What the namespace is, for people.
    fn describe(&self) -> String {
        match self.store.backend() {
            "sqlite" | "postgres" | "mysql" => format!("table {}", self.namespace),
            _ => format!("key prefix {}:", self.namespace),
        }
    }

    /// The error of a command interrupted by Ctrl-C, after [`remove`]
    /// left `left` keys.
    ///
    /// [`remove`]: Self::remove
    fn interrupted(&self, left: u64) -> CliError {
        let what = if left > 0 {
            format!(
                "interrupted; the scratch {} could not be removed entirely: remove it by hand",
                self.describe()
            )
        } else {
            format!("interrupted; the scratch {} was removed", self.describe())
        };
        CliError::new(Exit::Interrupted, what)
    }

    /// Removes the namespace (a table dropped, every key under a prefix
    /// removed); returns how many keys are left behind.
    async fn remove(&self) -> u64 {
        match self.store.destroy().await {
            Ok(()) => 0,
            Err(e) => {
                note!(
                    "warning: could not remove the scratch {}: {e}",
                    self.describe()
                );
                // What is left, if the store can still say.
                self.store.count().await.unwrap_or(0).max(1)
            }
        }
    }
}

fn url_of<'a>(opts: &'a ScratchOpts, store: &'a StoreOpts) -> &'a str {
    opts.url.as_deref().unwrap_or(&store.url)
}

/// One case's outcome, as printed.
#[derive(Debug, Serialize)]
struct CaseLine {
    case: &'static str,
    passed: bool,
    millis: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

/// `byok check`.
pub(crate) async fn check(opts: &ScratchOpts, store: &StoreOpts, json: bool) -> CliResult {
    // Ctrl-C stops the cases, not the clean-up.
    let mut interrupt = Interruptible::new();
    let scratch = Scratch::open_interruptibly(url_of(opts, store), &mut interrupt).await?;
    let mut lines = Vec::with_capacity(byok_testkit::CASES.len());
    let ran = tokio::select! {
        biased;
        () = interrupt.interrupted() => None,
        ran = run_cases(&scratch, json, &mut lines) => Some(ran),
    };
    let left = scratch.remove().await;
    let Some(ran) = ran else {
        return Err(scratch.interrupted(left));
    };
    ran?;
    report(&scratch, &lines, left, json)
}

/// Runs the cases of `byok_testkit::run_all`, one by one, so that each
/// line shows as soon as its case ends.
async fn run_cases(scratch: &Scratch, json: bool, lines: &mut Vec<CaseLine>) -> CliResult {
    if !json {
        out!(
            "conformance suite against {} ({})",
            scratch.name,
            scratch.describe()
        )?;
    }
    for (name, case) in byok_testkit::CASES {
        let start = Instant::now();
        let outcome = case(&scratch.store).await;
        let line = CaseLine {
            case: name,
            passed: outcome.is_ok(),
            millis: start.elapsed().as_millis(),
            failure: outcome.err().map(|f| f.message().to_owned()),
        };
        if !json {
            match &line.failure {
                None => out!("ok      {} ({} ms)", line.case, line.millis)?,
                Some(f) => out!("FAILED  {} ({} ms): {f}", line.case, line.millis)?,
            }
        }
        lines.push(line);
    }
    Ok(())
}

/// What `byok check` found, and its exit.
fn report(scratch: &Scratch, lines: &[CaseLine], left: u64, json: bool) -> CliResult {
    let passed = lines.iter().filter(|l| l.passed).count();
    let failed = lines.len() - passed;
    if json {
        context::print_json(&serde_json::json!({
            "store": scratch.name, "cases": lines, "passed": passed,
            "failed": failed, "left_behind": left,
        }))?;
    } else {
        out!(
            "{passed} passed, {failed} failed; scratch {} removed{}",
            scratch.describe(),
            if left > 0 {
                format!(", but {left} key(s) were left behind")
            } else {
                String::new()
            }
        )?;
    }
    if failed > 0 {
        return Err(CliError::problem(format!(
            "{failed} conformance case(s) failed against {}",
            scratch.name
        )));
    }
    if left > 0 {
        return Err(CliError::problem("the check left keys behind"));
    }
    Ok(())
}

/// Latency figures of one operation.
#[derive(Debug, Serialize)]
struct Figures {
    operation: &'static str,
    ops: usize,
    ops_per_sec: f64,
    p50_us: u128,
    p99_us: u128,
}

fn figures(operation: &'static str, mut samples: Vec<Duration>, total: Duration) -> Figures {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0, Duration::as_micros)
    };
    Figures {
        operation,
        ops: samples.len(),
        ops_per_sec: samples.len() as f64 / total.as_secs_f64().max(1e-9),
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

/// `byok bench`.
pub(crate) async fn bench(opts: &BenchOpts, store: &StoreOpts, json: bool) -> CliResult {
    if opts.ops == 0 {
        return Err(CliError::usage("--ops must be at least 1"));
    }
    // As for `check`: Ctrl-C stops the measurements, not the clean-up.
    let mut interrupt = Interruptible::new();
    let written = AtomicUsize::new(0);
    let scratch = Scratch::open_interruptibly(url_of(&opts.target, store), &mut interrupt).await?;
    let result = tokio::select! {
        biased;
        () = interrupt.interrupted() => None,
        result = run_bench(&scratch, opts.ops, &written) => Some(result),
    };
    // The store removes its scratch namespace, keys and all.
    let left = scratch.remove().await;
    let Some(result) = result else {
        return Err(scratch.interrupted(left));
    };
    let results = result?;
    if json {
        return context::print_json(&serde_json::json!({
            "store": scratch.name, "results": results,
        }));
    }
    let mut t = context::new_table();
    t.set_header(["operation", "ops", "ops/s", "p50", "p99"]);
    for f in &results {
        t.add_row([
            f.operation.to_owned(),
            f.ops.to_string(),
            format!("{:.0}", f.ops_per_sec),
            format!("{} µs", f.p50_us),
            format!("{} µs", f.p99_us),
        ]);
    }
    out!(
        "against {} ({}), one operation at a time:",
        scratch.name,
        scratch.describe()
    )?;
    out!("{t}")?;
    Ok(())
}

const PROVIDERS: [&str; 4] = ["openai", "anthropic", "mistral", "groq"];

fn bench_user(scratch: &Scratch, u: usize) -> String {
    format!("{}-user-{u}", scratch.namespace)
}

/// Measures `ops` operations of each kind; `written` counts the keys set so
/// far, for the clean-up.
async fn run_bench(
    scratch: &Scratch,
    ops: usize,
    written: &AtomicUsize,
) -> CliResult<Vec<Figures>> {
    let store: &dyn KeyStorage = &scratch.store;
    let fail = |what: &'static str| {
        move |e: byok::ByokError| CliError::from_byok(what, &e, Some(&scratch.name))
    };
    let slot = |i: usize| {
        (
            bench_user(scratch, i / PROVIDERS.len()),
            PROVIDERS[i % PROVIDERS.len()],
        )
    };
    let mut results = Vec::new();
    let bar = context::progress(Some(3 * ops as u64), "benchmarking");
    // A ciphertext of a typical API key's size; the store never decrypts.
    let value = vec![0x5a_u8; 80];
    let mut samples = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops {
        let (user, provider) = slot(i);
        let key = ApiKey::new(&user, provider, value.clone())
            .map_err(|e| fail("making a key failed")(e.into()))?;
        let t = Instant::now();
        written.fetch_max(i + 1, Ordering::Relaxed);
        store.store(&key).await.map_err(fail("set failed"))?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    results.push(figures("set", samples, start.elapsed()));
    let mut samples = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops {
        let (user, provider) = slot(i);
        let t = Instant::now();
        store
            .retrieve(&user, provider)
            .await
            .map_err(fail("get failed"))?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    results.push(figures("get", samples, start.elapsed()));
    let mut samples = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops {
        let (user, _) = slot(i);
        let t = Instant::now();
        store
            .list_providers(&user)
            .await
            .map_err(fail("list failed"))?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    results.push(figures("list", samples, start.elapsed()));
    bar.finish_and_clear();
    Ok(results)
}
