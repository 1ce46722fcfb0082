//! A `metrics` recorder that keeps what it receives, for tests and the
//! observability example: counters and histograms by `name{label=value,…}`
//! (labels sorted). Written here rather than taken from `metrics-util`,
//! whose registry would bring a second `rand` into the workspace.
#![allow(dead_code, reason = "each user reads a part of what is recorded")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// What a metric received so far.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A counter's total.
    Counter(u64),
    /// A histogram's samples.
    Histogram(Vec<f64>),
}

#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }
}

#[derive(Default)]
struct Metrics {
    counters: BTreeMap<String, Arc<Count>>,
    histograms: BTreeMap<String, Arc<Samples>>,
}

/// The recorder; clones share what was recorded.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Metrics>>);

impl Capture {
    /// Every metric recorded so far.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Value> {
        let metrics = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let counters = metrics
            .counters
            .iter()
            .map(|(k, c)| (k.clone(), Value::Counter(c.0.load(Ordering::Relaxed))));
        let histograms = metrics.histograms.iter().map(|(k, h)| {
            let samples = h.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
            (k.clone(), Value::Histogram(samples))
        });
        counters.chain(histograms).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `name{label=value,…}`, labels sorted.
fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let count = self.lock().counters.entry(name(key)).or_default().clone();
        Counter::from_arc(count)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let samples = self.lock().histograms.entry(name(key)).or_default().clone();
        Histogram::from_arc(samples)
    }
}
