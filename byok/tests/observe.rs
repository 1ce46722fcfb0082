//! The spans (and, with the `metrics` feature, the metrics) that the
//! manager and the stores of `connect` emit, captured by a subscriber and a
//! recorder local to each test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure must fail the test"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use byok::{Byok, ByokConfig, Keyring, MasterKey, Ttl};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A closed span: its name, its parent's name and its fields.
#[derive(Debug, Clone, Default)]
struct Captured {
    name: &'static str,
    parent: Option<&'static str>,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Keeps every span of byok, as it is when it closes.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Captured>>>);

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut captured = Captured {
            name: span.name(),
            parent: span.parent().map(|p| p.name()),
            ..Captured::default()
        };
        attrs.record(&mut Fields(&mut captured.fields));
        span.extensions_mut().insert(captured);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        if let Some(captured) = span.extensions_mut().get_mut::<Captured>() {
            values.record(&mut Fields(&mut captured.fields));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        if let Some(captured) = span.extensions().get::<Captured>()
            && captured.name.starts_with("byok.")
        {
            self.0.lock().unwrap().push(captured.clone());
        }
    }
}

/// Runs `f` on a runtime of its own under a subscriber that captures
/// spans; returns what `f` returned and the spans.
fn capture<T>(f: impl AsyncFnOnce() -> T) -> (T, Vec<Captured>) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let out = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    });
    let captured = spans.0.lock().unwrap().clone();
    (out, captured)
}

async fn manager(master: MasterKey) -> Byok {
    let storage = byok::connect("memory:").await.unwrap();
    Byok::new(storage, Keyring::new(1, master), ByokConfig::for_tests()).unwrap()
}

fn find<'a>(spans: &'a [Captured], name: &str, operation: &str) -> Vec<&'a Captured> {
    spans
        .iter()
        .filter(|s| s.name == name && s.field("operation") == Some(operation))
        .collect()
}

#[test]
fn get_key_has_a_manager_span_around_a_storage_span() {
    let (_, spans) = capture(async || {
        let byok = manager(MasterKey::generate()).await;
        byok.set_key("alice", "openai", "sk-observe-0123456789", Ttl::Never)
            .await
            .unwrap();
        byok.get_key("alice", "openai").await.unwrap().unwrap();
    });

    let [get] = find(&spans, "byok.manager", "get_key")[..] else {
        panic!("one get_key span: {spans:#?}")
    };
    assert_eq!(get.field("outcome"), Some("ok"));
    assert_eq!(get.field("error_kind"), None);
    let ms: f64 = get.field("duration_ms").unwrap().parse().unwrap();
    assert!(ms >= 0.0);

    let retrieves = find(&spans, "byok.storage", "retrieve_value");
    let [retrieve] = retrieves[..] else {
        panic!("one retrieve_value span: {spans:#?}")
    };
    assert_eq!(retrieve.parent, Some("byok.manager"));
    assert_eq!(retrieve.field("backend"), Some("memory"));
    assert_eq!(retrieve.field("outcome"), Some("ok"));
    assert!(retrieve.field("duration_ms").is_some());

    let [store] = find(&spans, "byok.storage", "store")[..] else {
        panic!("one store span: {spans:#?}")
    };
    assert_eq!(store.parent, Some("byok.manager"));

    // No id, key or hint in any span.
    for span in &spans {
        for value in span.fields.values() {
            for secret in ["alice", "openai", "sk-observe", "6789"] {
                assert!(!value.contains(secret), "{secret} in {span:?}");
            }
        }
    }
}

#[test]
fn a_failure_records_its_kind() {
    let (_, spans) = capture(async || {
        let byok = manager(MasterKey::generate()).await;
        byok.set_key("alice", "openai", "sk-observe-0123456789", Ttl::Never)
            .await
            .unwrap();
        let wrong = Byok::new(
            byok.storage().clone(),
            Keyring::new(1, MasterKey::generate()),
            ByokConfig::for_tests(),
        )
        .unwrap();
        wrong.get_key("alice", "openai").await.unwrap_err();
        byok.set_key("alice", "openai", "", Ttl::Never)
            .await
            .unwrap_err();
    });
    let [get] = find(&spans, "byok.manager", "get_key")[..] else {
        panic!("one get_key span: {spans:#?}")
    };
    assert_eq!(get.field("outcome"), Some("error"));
    assert_eq!(get.field("error_kind"), Some("decryption"));
    let sets = find(&spans, "byok.manager", "set_key");
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[1].field("error_kind"), Some("invalid_input"));
}

#[test]
fn the_admin_side_of_a_connected_store_is_observed_under_its_name() {
    let ((), spans) = capture(async || {
        let store = byok::connect("memory:").await.unwrap();
        assert_eq!(store.backend(), "memory");
        store.schema_status().await.unwrap();
        store.count().await.unwrap();
        store.count_expired().await.unwrap();
        store.stats().await.unwrap();
        store.destroy().await.unwrap();
    });
    for operation in [
        "migrate",
        "schema_status",
        "count",
        "count_expired",
        "stats",
        "destroy",
    ] {
        let found = find(&spans, "byok.storage", operation);
        assert_eq!(found.len(), 1, "{operation}: {spans:#?}");
        assert_eq!(found[0].field("backend"), Some("memory"), "{operation}");
        assert_eq!(found[0].field("outcome"), Some("ok"), "{operation}");
    }
}

#[test]
fn every_manager_operation_has_a_span() {
    let (_, spans) = capture(async || {
        let byok = manager(MasterKey::generate()).await;
        byok.set_key("u", "openai", "sk-observe-0123456789", Ttl::Never)
            .await
            .unwrap();
        byok.get_key("u", "openai").await.unwrap();
        byok.has_key("u", "openai").await.unwrap();
        byok.list_providers("u").await.unwrap();
        byok.key_summary("u").await.unwrap();
        byok.rotate().await.unwrap();
        byok.delete_key("u", "openai").await.unwrap();
        byok.clear_keys("u").await.unwrap();
        byok.purge_expired().await.unwrap();
    });
    for operation in [
        "set_key",
        "get_key",
        "has_key",
        "list_providers",
        "key_summary",
        "rotate",
        "rotate_page",
        "delete_key",
        "clear_keys",
        "purge_expired",
    ] {
        assert!(
            !find(&spans, "byok.manager", operation).is_empty(),
            "no span for {operation}: {spans:#?}"
        );
    }
    for operation in [
        "store",
        "retrieve",
        "list_providers",
        "scan",
        "delete",
        "clear_all",
        "purge_expired",
    ] {
        assert!(
            !find(&spans, "byok.storage", operation).is_empty(),
            "no storage span for {operation}: {spans:#?}"
        );
    }
}

#[cfg(feature = "metrics")]
#[path = "support/metrics.rs"]
mod recorder;

#[cfg(feature = "metrics")]
mod metrics {
    use super::*;
    use crate::recorder::{Capture, Value};
    use byok::{KeyStorage, MemoryStorage, ObservedStorage, TieredStorage};

    /// The metrics `f` recorded, as `name{label=value,…}` and their values.
    fn recorded(f: impl AsyncFnOnce()) -> BTreeMap<String, Value> {
        let recorder = Capture::default();
        ::metrics::with_local_recorder(&recorder, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        });
        recorder.snapshot()
    }

    fn counter(metrics: &BTreeMap<String, Value>, key: &str) -> u64 {
        match metrics.get(key) {
            Some(Value::Counter(n)) => *n,
            other => panic!("{key}: {other:?} in {metrics:#?}"),
        }
    }

    fn samples(metrics: &BTreeMap<String, Value>, key: &str) -> usize {
        match metrics.get(key) {
            Some(Value::Histogram(v)) => v.len(),
            other => panic!("{key}: {other:?} in {metrics:#?}"),
        }
    }

    #[test]
    fn operations_are_counted_and_timed() {
        let metrics = recorded(async || {
            let byok = manager(MasterKey::generate()).await;
            byok.set_key("alice", "openai", "sk-observe-0123456789", Ttl::Never)
                .await
                .unwrap();
            byok.get_key("alice", "openai").await.unwrap();
            byok.get_key("alice", "openai").await.unwrap();
            byok.set_key("alice", "openai", "", Ttl::Never)
                .await
                .unwrap_err();
        });
        assert_eq!(
            counter(
                &metrics,
                "byok_manager_operations_total{operation=get_key,outcome=ok}"
            ),
            2
        );
        assert_eq!(
            counter(
                &metrics,
                "byok_manager_operations_total{error_kind=invalid_input,operation=set_key,outcome=error}"
            ),
            1
        );
        assert_eq!(
            samples(
                &metrics,
                "byok_manager_operation_duration_seconds{operation=get_key}"
            ),
            2
        );
        assert_eq!(
            counter(
                &metrics,
                "byok_storage_operations_total{backend=memory,operation=retrieve_value,outcome=ok}"
            ),
            2
        );
        assert_eq!(
            samples(
                &metrics,
                "byok_storage_operation_duration_seconds{backend=memory,operation=retrieve_value}"
            ),
            2
        );
        for key in metrics.keys() {
            for secret in ["alice", "openai", "sk-observe"] {
                assert!(!key.contains(secret), "{secret} in {key}");
            }
        }
    }

    #[test]
    fn decryption_failures_purges_and_tiered_lookups_are_counted() {
        let metrics = recorded(async || {
            let byok = manager(MasterKey::generate()).await;
            byok.set_key("alice", "openai", "sk-observe-0123456789", Ttl::Never)
                .await
                .unwrap();
            let wrong = Byok::new(
                byok.storage().clone(),
                Keyring::new(1, MasterKey::generate()),
                ByokConfig::for_tests(),
            )
            .unwrap();
            wrong.get_key("alice", "openai").await.unwrap_err();

            let ring = Keyring::new(1, MasterKey::generate());
            let ciphertext = ring.encrypt("bob", "openai", b"sk-old").unwrap();
            let expired = byok::ApiKey::new("bob", "openai", ciphertext)
                .unwrap()
                .with_expires_at(Some(
                    byok::chrono::Utc::now() - byok::chrono::Duration::hours(1),
                ));
            byok.storage().store(&expired).await.unwrap();
            assert_eq!(byok.purge_expired().await.unwrap(), 1);

            let durable = ObservedStorage::new(MemoryStorage::new(), "memory");
            let tiered = TieredStorage::new(Arc::new(MemoryStorage::new()), Arc::new(durable));
            let key = byok::ApiKey::new("carol", "openai", b"ciphertext".to_vec()).unwrap();
            tiered.durable().store(&key).await.unwrap();
            tiered.retrieve("carol", "openai").await.unwrap().unwrap();
            tiered.retrieve("carol", "openai").await.unwrap().unwrap();
        });
        assert_eq!(counter(&metrics, "byok_decryption_failures_total{}"), 1);
        assert_eq!(
            counter(
                &metrics,
                "byok_manager_operations_total{error_kind=decryption,operation=get_key,outcome=error}"
            ),
            1
        );
        assert_eq!(
            counter(&metrics, "byok_purged_keys_total{backend=memory}"),
            1
        );
        assert_eq!(
            counter(&metrics, "byok_tiered_lookups_total{result=miss}"),
            1
        );
        assert_eq!(
            counter(&metrics, "byok_tiered_lookups_total{result=hit}"),
            1
        );
    }
}

/// A storage error that reaches the application names the operation that
/// failed: the store's, when an `ObservedStorage` saw it, else the
/// manager's; and its kind has the name that spans and metrics carry.
#[tokio::test]
async fn storage_errors_name_the_operation_that_failed() {
    use byok::{ObservedStorage, StorageErrorKind};
    use byok_testkit::layers::FaultyStorage;

    let faulty = FaultyStorage::new(byok::MemoryStorage::new());
    faulty.fail_all();
    let ring = || Keyring::new(1, MasterKey::generate());
    let config = ByokConfig::for_tests();

    let observed = Byok::new(
        Arc::new(ObservedStorage::new(faulty.clone(), "faulty")),
        ring(),
        config.clone(),
    )
    .unwrap();
    let err = observed.get_key("alice", "openai").await.unwrap_err();
    let storage = err.as_storage().unwrap();
    assert_eq!(storage.operation(), Some("retrieve_value"));
    assert!(err.to_string().contains(" in retrieve_value: "), "{err}");
    assert_eq!(
        byok::observe::error_kind(&err),
        StorageErrorKind::Unavailable.as_str()
    );
    let err = observed
        .set_key("alice", "openai", "sk-0123456789abcdef", Ttl::Never)
        .await
        .unwrap_err();
    assert_eq!(err.as_storage().unwrap().operation(), Some("store"));

    let bare = Byok::new(Arc::new(faulty), ring(), config).unwrap();
    let err = bare.get_key("alice", "openai").await.unwrap_err();
    assert_eq!(err.as_storage().unwrap().operation(), Some("get_key"));
    assert!(err.to_string().contains(" in get_key: "), "{err}");
}
