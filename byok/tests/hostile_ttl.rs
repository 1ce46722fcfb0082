//! Absurd times to live at the manager: each is refused with a typed error
//! for the TTL, storing nothing, or stored with the expiry it asks for.
//! Never a panic. The expiries a manager can produce reach every backend
//! in the conformance case `absurd_times_are_stored_exactly_or_refused`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;
use std::time::Duration;

use byok::error::Field;
use byok::{Byok, ByokConfig, ByokError, KeyStorage, Keyring, MasterKey, MemoryStorage, Ttl};

const YEAR: u64 = 365 * 24 * 3600;

fn absurd_ttls() -> Vec<Ttl> {
    vec![
        Ttl::After(Duration::MAX),
        Ttl::After(Duration::from_secs(u64::MAX)),
        Ttl::After(Duration::from_secs(i64::MAX as u64)),
        Ttl::After(Duration::from_millis(i64::MAX as u64)),
        Ttl::After(Duration::from_secs(1_000_000 * YEAR)),
        Ttl::After(Duration::from_secs(300_000 * YEAR)),
        Ttl::After(Duration::from_secs(200_000 * YEAR)),
        Ttl::After(Duration::from_secs(10_000 * YEAR)),
        Ttl::After(Duration::from_secs(8_000 * YEAR)),
        Ttl::After(Duration::ZERO),
        Ttl::After(Duration::from_nanos(1)),
        Ttl::After(Duration::from_micros(999)),
        Ttl::Never,
    ]
}

/// Sets a key with each TTL (and each as the configured default) and
/// returns (inputs, typed errors, stored).
async fn run(storage: Arc<dyn KeyStorage>) -> (u64, u64, u64) {
    let (mut inputs, mut errors, mut stored) = (0, 0, 0);
    let ring = Keyring::new(1, MasterKey::generate());
    let plain = Byok::new(storage.clone(), ring.clone(), ByokConfig::for_tests()).unwrap();
    let mut attempts: Vec<(Byok, Ttl, Option<Duration>)> = Vec::new();
    for ttl in absurd_ttls() {
        let asked = match ttl {
            Ttl::After(d) => Some(d),
            _ => None,
        };
        attempts.push((plain.clone(), ttl, asked));
        if let Some(d) = asked {
            let by_default = Byok::new(
                storage.clone(),
                ring.clone(),
                ByokConfig::for_tests().with_default_ttl(Some(d)),
            )
            .unwrap();
            attempts.push((by_default, Ttl::Default, asked));
        }
    }
    for (i, (byok, ttl, asked)) in attempts.into_iter().enumerate() {
        inputs += 1;
        let user = format!("ttl-{i}");
        let before = byok::key::now();
        match byok
            .set_key(&user, "openai", "sk-0123456789abcdefghij", ttl)
            .await
        {
            Ok(()) => {
                stored += 1;
                let summary = byok.key_summary(&user).await.unwrap();
                assert_eq!(summary.len(), 1, "{ttl:?}");
                let expires_at = summary[0].expires_at;
                match asked {
                    None => assert_eq!(expires_at, None, "{ttl:?}"),
                    Some(d) => {
                        let at = expires_at.unwrap();
                        let asked_at = before + byok::chrono::Duration::from_std(d).unwrap();
                        let slack = byok::chrono::Duration::seconds(60);
                        assert!(
                            at >= asked_at - slack && at <= asked_at + slack,
                            "{ttl:?}: {at}"
                        );
                    }
                }
                byok.delete_key(&user, "openai").await.unwrap();
            }
            Err(ByokError::InvalidInput(e)) if e.field == Field::Ttl => {
                errors += 1;
                assert!(!byok.has_key(&user, "openai").await.unwrap(), "{ttl:?}");
            }
            Err(e) => panic!("{ttl:?} ({asked:?}): not a typed TTL error: {e:?}"),
        }
    }
    (inputs, errors, stored)
}

#[tokio::test]
async fn absurd_ttls_over_memory() {
    let (inputs, errors, stored) = run(Arc::new(MemoryStorage::new())).await;
    eprintln!(
        "absurd TTLs (memory): {inputs} inputs tried: {errors} typed errors, {stored} stored"
    );
    assert_eq!(inputs, errors + stored);
    assert!(
        errors >= 8 && stored >= 6,
        "{errors} errors, {stored} stored"
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn absurd_ttls_over_sqlite() {
    let config = ByokConfig::for_tests();
    let store = byok::SqliteStorage::connect("sqlite::memory:", &config)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (inputs, errors, stored) = run(Arc::new(store)).await;
    eprintln!(
        "absurd TTLs (sqlite): {inputs} inputs tried: {errors} typed errors, {stored} stored"
    );
    assert_eq!(inputs, errors + stored);
}
