//! The cases of a store's admin side ([`StoreAdmin`]): one `pub async fn`
//! per case, each taking the store under test as `&dyn StoreAdmin`.
//!
//! Unlike the cases of [`cases`](crate::cases), these count the whole
//! store, so each needs a store of its own: a fresh table, database, key
//! prefix or memory store per case. [`admin_conformance_tests!`] makes one
//! test per case, each with its own setup.
//!
//! [`admin_conformance_tests!`]: crate::admin_conformance_tests

use std::collections::BTreeMap;

use byok_core::store::SchemaStatus;
use byok_core::{ApiKey, Keyring, MasterKey, StoreAdmin};
use chrono::Utc;

use crate::{Failure, Namespace};

/// What [`fill`] wrote.
struct Filled {
    live: u64,
    expired: u64,
    by_key_id: BTreeMap<Option<u32>, u64>,
    by_provider: BTreeMap<String, u64>,
}

/// Writes to `store`, under users of `ns`: 5 live keys over the providers
/// `openai` (3) and `anthropic` (2), sealed under master key ids 1 (3) and
/// 2 (2), and 3 keys that expired a minute ago but are still stored.
async fn fill(store: &dyn StoreAdmin, ns: &Namespace) -> Result<Filled, Failure> {
    let one = Keyring::new(1, MasterKey::generate());
    let two = Keyring::new(2, MasterKey::generate());
    let live = [
        ("a", "openai", &one),
        ("b", "openai", &one),
        ("c", "openai", &two),
        ("a", "anthropic", &one),
        ("b", "anthropic", &two),
    ];
    let mut filled = Filled {
        live: 0,
        expired: 0,
        by_key_id: BTreeMap::new(),
        by_provider: BTreeMap::new(),
    };
    for (user, provider, ring) in live {
        let user = ns.user(user);
        let value = ring
            .encrypt(&user, provider, b"sk-test")
            .map_err(|e| Failure::new(format!("encrypt: {e}")))?;
        store.store(&ApiKey::new(&user, provider, value)?).await?;
        filled.live += 1;
        *filled.by_key_id.entry(Some(ring.primary_id())).or_default() += 1;
        *filled.by_provider.entry(provider.to_owned()).or_default() += 1;
    }
    let past = Some(Utc::now() - chrono::Duration::minutes(1));
    for user in ["x", "y", "z"] {
        let user = ns.user(user);
        let value = one
            .encrypt(&user, "mistral", b"sk-old")
            .map_err(|e| Failure::new(format!("encrypt: {e}")))?;
        let key = ApiKey::new(&user, "mistral", value)?.with_expires_at(past);
        store.store(&key).await?;
        filled.expired += 1;
    }
    Ok(filled)
}

case! {
    /// The backend has a name for messages, spans and metrics.
    backend_is_named(store: dyn StoreAdmin, _ns) {
        let name = store.backend();
        ensure!(!name.is_empty() && name.trim() == name, "backend name {name:?}");
        Ok(())
    }
}

case! {
    /// After `migrate` (run twice: it is idempotent), the schema is up to
    /// date, or the store has none.
    schema_is_up_to_date_after_migrate(store: dyn StoreAdmin, _ns) {
        store.migrate().await?;
        store.migrate().await?;
        let status = store.schema_status().await?;
        ensure!(
            matches!(status, SchemaStatus::UpToDate | SchemaStatus::NotApplicable),
            "schema status after migrate: {status:?}"
        );
        Ok(())
    }
}

case! {
    /// `stats` counts exactly: live keys by master key id and by provider,
    /// and the expired keys still stored apart.
    stats_are_exact(store: dyn StoreAdmin, ns) {
        let filled = fill(store, &ns).await?;
        let stats = store.stats().await?;
        ensure_eq!(stats.keys, filled.live, "stats.keys");
        ensure_eq!(stats.expired, Some(filled.expired), "stats.expired");
        ensure_eq!(stats.by_key_id, filled.by_key_id, "stats.by_key_id");
        ensure_eq!(stats.by_provider, filled.by_provider, "stats.by_provider");
        Ok(())
    }
}

case! {
    /// `count` is the number of live keys, as `stats` has it.
    count_is_the_live_keys_of_stats(store: dyn StoreAdmin, ns) {
        let filled = fill(store, &ns).await?;
        ensure_eq!(store.count().await?, filled.live, "count");
        ensure_eq!(store.count().await?, store.stats().await?.keys, "count against stats.keys");
        Ok(())
    }
}

case! {
    /// `count_expired` counts the expired keys still stored, and drops to
    /// zero once they are purged; live keys stay.
    count_expired_drops_to_zero_after_a_purge(store: dyn StoreAdmin, ns) {
        let filled = fill(store, &ns).await?;
        ensure_eq!(store.count_expired().await?, Some(filled.expired), "count_expired");
        let purged = store.purge_expired().await?;
        ensure_eq!(purged, filled.expired, "purged");
        ensure_eq!(store.count_expired().await?, Some(0), "count_expired after the purge");
        ensure_eq!(store.count().await?, filled.live, "count after the purge");
        Ok(())
    }
}

case! {
    /// `destroy` leaves no key: the schema is gone (`Missing`) or the
    /// store is empty; `migrate` then makes an empty store again.
    destroy_leaves_an_empty_store(store: dyn StoreAdmin, ns) {
        fill(store, &ns).await?;
        store.destroy().await?;
        match store.schema_status().await? {
            SchemaStatus::Missing => {}
            _ => ensure_eq!(store.count().await?, 0, "count after destroy"),
        }
        store.migrate().await?;
        ensure_eq!(store.count().await?, 0, "count after destroy and migrate");
        ensure_eq!(store.count_expired().await?.unwrap_or(0), 0, "expired after destroy");
        ensure!(
            store.retrieve(&ns.user("a"), "openai").await?.is_none(),
            "a key survived destroy"
        );
        Ok(())
    }
}

case_tests_macro!($;
    /// Expands to a module `admin_conformance` with one
    /// `#[tokio::test]` per case of [`admin`](crate::admin), each
    /// named after its case.
    ///
    /// The argument is an expression, evaluated inside each async test,
    /// that makes a **fresh** store implementing
    /// [`StoreAdmin`](byok_core::StoreAdmin) (the cases count the whole
    /// store), migrated. With `maybe:` before it, the expression gives
    /// an `Option`, and a test whose setup gives `None` returns at once.
    ///
    /// ```
    /// mod memory {
    ///     use byok_memory::MemoryStorage;
    ///     byok_testkit::admin_conformance_tests!(MemoryStorage::new());
    /// }
    /// # fn main() {}
    /// ```
    admin_conformance_tests, admin_conformance, admin;
    backend_is_named,
    schema_is_up_to_date_after_migrate,
    stats_are_exact,
    count_is_the_live_keys_of_stats,
    count_expired_drops_to_zero_after_a_purge,
    destroy_leaves_an_empty_store,
);
