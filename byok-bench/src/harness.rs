//! Interleaved measurement of byok (side A) against hand-written code
//! (side B), and the table the results go into.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Any error of a benchmark; the run stops at the first.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The result of a benchmark step.
pub(crate) type BResult<T> = Result<T, BoxError>;

/// How much work one comparison does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Rounds of A then B (B then A in odd rounds).
    pub(crate) rounds: usize,
    /// Operations per side and round.
    pub(crate) ops: usize,
    /// Operations timed together as one latency sample. Timing each call
    /// of a sub-microsecond operation would measure the clock instead.
    pub(crate) batch: usize,
    /// Concurrent tasks.
    pub(crate) tasks: usize,
}

/// Both sides of one row.
#[derive(Debug, Clone)]
pub(crate) struct Comparison {
    pub(crate) byok: Side,
    pub(crate) hand: Option<Side>,
    /// byok / hand-written per round.
    pub(crate) ratios: Vec<f64>,
}

/// What one side measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Side {
    /// Nanoseconds per operation in each round: the median sample on one
    /// task, wall time / operations on several.
    pub(crate) round_ns: Vec<f64>,
    /// Nanoseconds per operation of each latency sample.
    pub(crate) samples: Vec<f64>,
}

impl Side {
    pub(crate) fn median_ns(&self) -> f64 {
        median(&self.round_ns)
    }

    pub(crate) fn percentile(&self, p: f64) -> f64 {
        percentile(&self.samples, p)
    }
}

pub(crate) fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The nearest-rank percentile; 0 for no values.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `ops` operations of `f` on `tasks` tasks; returns the wall time
/// per operation and the latency samples. Operation numbers start at
/// `first`, so that successive rounds touch different keys.
pub(crate) async fn run_side<F, Fut>(
    f: &Arc<F>,
    plan: &Plan,
    first: u64,
) -> BResult<(f64, Vec<f64>)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BResult<()>> + Send + 'static,
{
    let batch = plan.batch.max(1);
    let tasks = plan.tasks.max(1);
    let per_task = (plan.ops / tasks).max(batch) / batch * batch;
    let start = Instant::now();
    let samples = if tasks == 1 {
        run_task(Arc::clone(f), first, per_task, batch).await?
    } else {
        let mut handles = Vec::with_capacity(tasks);
        for t in 0..tasks {
            let f = Arc::clone(f);
            let from = first + (t * per_task) as u64;
            handles.push(tokio::spawn(run_task(f, from, per_task, batch)));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await??);
        }
        all
    };
    let wall = start.elapsed();
    // On one task, the median sample: a round's mean would count the time
    // this process spent preempted by others on a shared machine. On many
    // tasks, wall time per operation, as latency then includes queueing.
    let per_op = if tasks == 1 {
        median(&samples)
    } else {
        wall.as_nanos() as f64 / (per_task * tasks) as f64
    };
    Ok((per_op, samples))
}

async fn run_task<F, Fut>(f: Arc<F>, first: u64, n: usize, batch: usize) -> BResult<Vec<f64>>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BResult<()>> + Send + 'static,
{
    let mut samples = Vec::with_capacity(n / batch);
    let mut i = first;
    for _ in 0..n / batch {
        let start = Instant::now();
        for _ in 0..batch {
            f(i).await?;
            i += 1;
        }
        samples.push(start.elapsed().as_nanos() as f64 / batch as f64);
    }
    Ok(samples)
}

/// Measures `byok` against `hand`, interleaved: one warm-up round each,
/// then `plan.rounds` rounds of A B (B A in odd rounds, so that neither
/// side always runs on the warmer cache).
pub(crate) async fn compare<A, FA, B, FB>(plan: Plan, byok: A, hand: B) -> BResult<Comparison>
where
    A: Fn(u64) -> FA + Send + Sync + 'static,
    FA: Future<Output = BResult<()>> + Send + 'static,
    B: Fn(u64) -> FB + Send + Sync + 'static,
    FB: Future<Output = BResult<()>> + Send + 'static,
{
    let (a, b) = (Arc::new(byok), Arc::new(hand));
    let warm = Plan {
        ops: (plan.ops / 4).max(plan.batch * plan.tasks),
        ..plan
    };
    let mut next = 0u64;
    run_side(&a, &warm, next).await?;
    run_side(&b, &warm, next).await?;
    next += warm.ops as u64;
    let mut out = Comparison {
        byok: Side::default(),
        hand: Some(Side::default()),
        ratios: Vec::new(),
    };
    for round in 0..plan.rounds {
        let (ra, rb) = if round.is_multiple_of(2) {
            let ra = run_side(&a, &plan, next).await?;
            let rb = run_side(&b, &plan, next).await?;
            (ra, rb)
        } else {
            let rb = run_side(&b, &plan, next).await?;
            let ra = run_side(&a, &plan, next).await?;
            (ra, rb)
        };
        next += plan.ops as u64;
        out.ratios.push(ra.0 / rb.0);
        out.byok.round_ns.push(ra.0);
        out.byok.samples.extend(ra.1);
        if let Some(h) = out.hand.as_mut() {
            h.round_ns.push(rb.0);
            h.samples.extend(rb.1);
        }
    }
    Ok(out)
}

/// One timed run of each side per round, for operations that are too
/// large to repeat many times (a purge, a rotation). `setup` runs before
/// each round, untimed; which side goes first alternates between rounds.
pub(crate) async fn compare_once<S, FS, A, FA, B, FB>(
    rounds: usize,
    setup: S,
    byok: A,
    hand: Option<B>,
) -> BResult<Comparison>
where
    S: Fn(usize) -> FS,
    FS: Future<Output = BResult<()>>,
    A: Fn(usize) -> FA,
    FA: Future<Output = BResult<()>>,
    B: Fn(usize) -> FB,
    FB: Future<Output = BResult<()>>,
{
    let mut out = Comparison {
        byok: Side::default(),
        hand: hand.as_ref().map(|_| Side::default()),
        ratios: Vec::new(),
    };
    for round in 0..rounds {
        setup(round).await?;
        let hand_first = round % 2 == 1;
        let mut tb = None;
        if hand_first && let Some(hand) = hand.as_ref() {
            tb = Some(timed(hand(round)).await?);
        }
        let ta = timed(byok(round)).await?;
        if !hand_first && let Some(hand) = hand.as_ref() {
            tb = Some(timed(hand(round)).await?);
        }
        out.byok.round_ns.push(ta);
        out.byok.samples.push(ta);
        if let (Some(tb), Some(side)) = (tb, out.hand.as_mut()) {
            side.round_ns.push(tb);
            side.samples.push(tb);
            out.ratios.push(ta / tb);
        }
    }
    Ok(out)
}

/// How long `work` took, in nanoseconds.
async fn timed(work: impl Future<Output = BResult<()>>) -> BResult<f64> {
    let start = Instant::now();
    work.await?;
    Ok(start.elapsed().as_nanos() as f64)
}

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) backend: String,
    pub(crate) operation: String,
    pub(crate) tasks: usize,
    pub(crate) result: RowResult,
}

/// What a row shows.
#[derive(Debug, Clone)]
pub(crate) enum RowResult {
    Timing(Comparison),
    /// Bytes per key: byok, the hand-written map.
    Bytes(f64, f64),
    /// The comparison failed with this error.
    Failed(String),
}

pub(crate) fn fmt_ns(ns: f64) -> String {
    if ns <= 0.0 {
        "—".to_owned()
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

impl Row {
    /// The row as a line of a Markdown table.
    pub(crate) fn markdown(&self) -> String {
        let (byok, hand, ratio, byok_pct, hand_pct) = match &self.result {
            RowResult::Timing(c) => {
                let hand = c.hand.as_ref();
                let ratio = if c.ratios.is_empty() {
                    "—".to_owned()
                } else {
                    let min = c.ratios.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = c.ratios.iter().copied().fold(0.0, f64::max);
                    format!("{:.2}× ({min:.2}–{max:.2})", median(&c.ratios))
                };
                let pct = |s: &Side| {
                    format!(
                        "{} / {}",
                        fmt_ns(s.percentile(50.0)),
                        fmt_ns(s.percentile(99.0))
                    )
                };
                (
                    fmt_ns(c.byok.median_ns()),
                    hand.map_or("—".to_owned(), |h| fmt_ns(h.median_ns())),
                    ratio,
                    pct(&c.byok),
                    hand.map_or("—".to_owned(), pct),
                )
            }
            RowResult::Failed(e) => (
                format!("failed: {e}"),
                "—".to_owned(),
                "—".to_owned(),
                "—".to_owned(),
                "—".to_owned(),
            ),
            RowResult::Bytes(b, h) => (
                format!("{b:.0} B/key"),
                format!("{h:.0} B/key"),
                format!("{:.2}× ({:+.0} B/key)", b / h, b - h),
                "—".to_owned(),
                "—".to_owned(),
            ),
        };
        format!(
            "| {} | {} | {} | {byok} | {hand} | {ratio} | {byok_pct} | {hand_pct} |",
            self.backend, self.operation, self.tasks
        )
    }
}

pub(crate) const TABLE_HEADER: &str = "| backend | operation | tasks | byok | hand-written | ratio (min–max) | byok p50 / p99 | hand-written p50 / p99 |\n|---|---|---|---|---|---|---|---|";

/// A duration in a form a reader takes in at once.
pub(crate) fn fmt_duration(d: Duration) -> String {
    fmt_ns(d.as_nanos() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[tokio::test]
    async fn compare_runs_both_sides_every_round() {
        let a = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let b = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let plan = Plan {
            rounds: 3,
            ops: 64,
            batch: 4,
            tasks: 2,
        };
        let (ca, cb) = (Arc::clone(&a), Arc::clone(&b));
        let c = compare(
            plan,
            move |_| {
                let a = Arc::clone(&ca);
                async move {
                    a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
            },
            move |_| {
                let b = Arc::clone(&cb);
                async move {
                    b.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(c.ratios.len(), 3);
        assert_eq!(c.byok.round_ns.len(), 3);
        // A warm-up of 16 and three rounds of 64 on each side.
        assert_eq!(a.load(std::sync::atomic::Ordering::Relaxed), 16 + 3 * 64);
        assert_eq!(b.load(std::sync::atomic::Ordering::Relaxed), 16 + 3 * 64);
        let row = Row {
            backend: "memory".into(),
            operation: "retrieve".into(),
            tasks: 2,
            result: RowResult::Timing(c),
        };
        assert!(row.markdown().starts_with("| memory | retrieve | 2 | "));
    }
}
