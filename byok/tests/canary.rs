//! A canary API key and the master key never appear in any `Debug`,
//! `Display`, error or `tracing` output (events and the fields of the
//! spans of every storage and manager operation), nor in any metric name or
//! label, across every operation and failure path of the manager.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use byok::secrecy::ExposeSecret;
use byok::{
    ApiKey, Byok, ByokConfig, KeyStorage, Keyring, MasterKey, MemoryStorage, ObservedStorage, Ttl,
};

#[cfg(feature = "metrics")]
#[path = "support/metrics.rs"]
mod recorder;

const CANARY: &str = "sk-CANARY-7f3a9c1e5b2d4f60-do-not-print";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn canary_never_appears_in_any_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        // Every span's fields, as recorded when it closes.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    // Global, so that logs from the drivers' own threads are captured too.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    #[cfg(feature = "metrics")]
    let metrics = {
        let recorder = recorder::Capture::default();
        metrics::set_global_recorder(recorder.clone()).unwrap();
        recorder
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let master_bytes = random_bytes();
    let master = MasterKey::from_bytes(&master_bytes).unwrap();
    let master_b64 = master.to_base64().expose_secret().to_owned();
    let master_hex = hex_of(&master_bytes);
    let mut out: Vec<String> = Vec::new();
    let mut note = |label: &str, text: String| out.push(format!("{label}: {text}"));

    runtime.block_on(async {
        for store in stores().await {
            let config = ByokConfig::default().with_encryption_key(Some(master.clone()));
            note("config", format!("{config:?}"));
            note("master", format!("{master:?}"));
            let byok = Byok::from_config(store.clone(), config.clone()).unwrap();
            note("manager", format!("{byok:?}"));

            let r = byok.set_key("alice", "openai", CANARY, Ttl::Default).await;
            note("set", format!("{r:?}"));
            let got = byok.get_key("alice", "openai").await.unwrap().unwrap();
            assert_eq!(got.expose_secret(), CANARY, "the canary round-trips");
            note("get", format!("{got:?}"));
            let stored = store.retrieve("alice", "openai").await.unwrap().unwrap();
            note("stored", format!("{stored:?}"));
            note("store", format!("{store:?}"));
            note("list", format!("{:?}", byok.list_providers("alice").await));
            note("summary", format!("{:?}", byok.key_summary("alice").await));
            note(
                "has",
                format!("{:?}", byok.has_key("alice", "openai").await),
            );
            note("fingerprint", byok.keyed_fingerprint(CANARY));

            // Failure paths: bad keys, wrong master keys, missing ids.
            for bad in [
                format!("{CANARY}\nsecond line"),
                format!("{CANARY}\u{0}"),
                CANARY.repeat(400),
            ] {
                let e = byok
                    .set_key("alice", "groq", &bad, Ttl::Default)
                    .await
                    .unwrap_err();
                note("bad key", format!("{e} / {e:?}"));
            }
            let wrong = Byok::new(
                store.clone(),
                Keyring::new(0, MasterKey::generate()),
                config.clone().with_auto_cleanup(false),
            )
            .unwrap();
            let e = wrong.get_key("alice", "openai").await.unwrap_err();
            note("wrong key", format!("{e} / {e:?}"));
            let unknown = Byok::new(
                store.clone(),
                Keyring::new(5, MasterKey::generate()),
                config.clone().with_auto_cleanup(false),
            )
            .unwrap();
            let e = unknown.get_key("alice", "openai").await.unwrap_err();
            note("unknown id", format!("{e} / {e:?}"));
            let e = byok.require_key("alice", "missing").await.unwrap_err();
            note("missing", format!("{e} / {e:?}"));

            // Rotation, with one undecryptable key on the way.
            let foreign = Keyring::new(9, MasterKey::generate())
                .encrypt("bob", "openai", CANARY.as_bytes())
                .unwrap();
            store
                .store(&ApiKey::new("bob", "openai", foreign).unwrap())
                .await
                .unwrap();
            let mut ring = Keyring::new(0, master.clone());
            ring.add(1, MasterKey::generate())
                .unwrap()
                .set_primary(1)
                .unwrap();
            note("ring", format!("{ring:?}"));
            let rotated =
                Byok::new(store.clone(), ring, config.clone().with_auto_cleanup(false)).unwrap();
            note("rotate", format!("{:?}", rotated.rotate().await));
            note(
                "after rotate",
                format!("{:?}", rotated.get_key("alice", "openai").await),
            );
            note(
                "delete",
                format!("{:?}", rotated.delete_key("alice", "openai").await),
            );
            note("clear", format!("{:?}", rotated.clear_keys("bob").await));
            note("purge", format!("{:?}", rotated.purge_expired().await));
        }
    });
    drop(runtime);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("could not be decrypted") && logs.contains("key not rotated"),
        "the failure paths were logged (so the capture works): {logs}"
    );
    assert!(
        logs.contains("byok.manager")
            && logs.contains("byok.storage")
            && logs.contains("decryption"),
        "the spans of the operations were captured, failures included: {logs}"
    );
    #[cfg(feature = "metrics")]
    {
        let metrics = format!("{:?}", metrics.snapshot());
        assert!(
            metrics.contains("byok_decryption_failures_total")
                && metrics.contains("byok_storage_operations_total"),
            "the metrics were captured: {metrics}"
        );
        out.push(metrics);
    }
    #[cfg(feature = "sqlite")]
    assert!(
        logs.contains("sqlx::query"),
        "the SQLite driver's statement logs were captured"
    );
    let everything = format!("{}\n{logs}", out.join("\n"));
    for secret in [CANARY, "CANARY", master_b64.as_str(), master_hex.as_str()] {
        assert!(
            !everything.contains(secret),
            "a secret leaked into the output:\n{everything}"
        );
    }
}

/// Every store the canary goes through: memory, and SQLite when built in
/// (whose driver logs every statement), each observed as `connect` does.
async fn stores() -> Vec<Arc<dyn KeyStorage>> {
    #[allow(unused_mut, reason = "only pushed to with the sqlite feature")]
    let mut stores: Vec<Arc<dyn KeyStorage>> = vec![Arc::new(ObservedStorage::new(
        MemoryStorage::new(),
        "memory",
    ))];
    #[cfg(feature = "sqlite")]
    {
        let config = ByokConfig::for_tests();
        let sqlite = byok::SqliteStorage::connect("sqlite::memory:", &config)
            .await
            .unwrap();
        sqlite.migrate().await.unwrap();
        stores.push(Arc::new(ObservedStorage::new(sqlite, "sqlite")));
    }
    stores
}

/// 32 random bytes for a master key whose bytes the test knows (a
/// `MasterKey` never gives its bytes back).
fn random_bytes() -> [u8; 32] {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&state.hash_one(i).to_le_bytes());
    }
    bytes
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
