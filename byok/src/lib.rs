//! byok keeps the API keys that your users bring (OpenAI, Anthropic, …)
//! encrypted at rest, gives each back only to its own user, expires it on
//! time, and survives a master-key rotation without losing a key.
//!
//! ```
//! use byok::secrecy::ExposeSecret;
//! use byok::{Byok, ByokConfig, Keyring, MasterKey, Ttl};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> byok::Result<()> {
//! let storage = byok::connect("memory:").await?;
//! // In production, load the keyring from your secret store:
//! // Keyring::from_env("BYOK_KEYRING")?
//! let keyring = Keyring::new(1, MasterKey::generate());
//! let byok = Byok::new(storage, keyring, ByokConfig::default())?;
//!
//! // Kept until the user removes it. Ttl::Default is ByokConfig::default_ttl,
//! // 24 hours unless configured: a key set with it is gone the next day.
//! byok.set_key("alice", "openai", "sk-proj-0123456789abcdef", Ttl::Never).await?;
//! let key = byok.require_key("alice", "openai").await?;
//! assert_eq!(key.expose_secret(), "sk-proj-0123456789abcdef");
//! assert!(byok.get_key("bob", "openai").await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! This facade re-exports [`byok_core`] (the types, [`Byok`], [`Keyring`],
//! [`TieredStorage`]) and the storage backends chosen by cargo feature:
//!
//! | feature | backend | URL for [`connect`] |
//! |---|---|---|
//! | `memory` (default) | `MemoryStorage` | `memory:` |
//! | `sqlite` | `SqliteStorage` | `sqlite://keys.db`, `sqlite::memory:` |
//! | `postgres` | `PostgresStorage` | `postgres://user@host/db` |
//! | `mysql` | `MySqlStorage` (MySQL, MariaDB) | `mysql://user@host/db`, `mariadb://…` |
//! | `redis` | `RedisStorage` | `redis://host:6379` |
//! | `redis-cluster` | `RedisStorage` over a cluster | `redis+cluster://h1:p1,h2:p2,h3:p3`, or node URLs joined by commas |
//!
//! PostgreSQL and MySQL/MariaDB speak TLS when the URL asks for it, in the
//! driver's words: `postgres://…?sslmode=verify-full` (add
//! `&sslrootcert=ca.pem` for a private CA), `mysql://…?ssl-mode=VERIFY_IDENTITY`
//! (`&ssl-ca=ca.pem`), and Redis with `rediss://`. The `tls-rustls`
//! feature (default) brings rustls to the backends that are on;
//! `tls-native-tls` the platform's
//! library instead (with the default features off, as the driver prefers
//! native-tls when both are on). A server whose certificate does not
//! verify is refused: `connect` fails with a [`StorageError`] that is not
//! retryable.
//!
//! The `axum` feature adds `byok::axum` (the `byok-axum`
//! crate): a settings page where users manage their keys, route guards
//! that hand handlers a user's key, and the HTTPS policy for keys in
//! transit.
//!
//! The `checks` feature adds `byok::check` (the `byok-check` crate): it
//! asks a provider whether a user's key works, saved or not, and tells a
//! wrong key from one that is out of credit, rate-limited or blocked in
//! the user's region.
//!
//! To write a backend of your own, implement [`KeyStorage`] and run the
//! conformance suite of the `byok-testkit` crate on it; its documentation
//! walks through a complete backend.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use byok_core::*;

#[cfg(feature = "checks")]
#[cfg_attr(docsrs, doc(cfg(feature = "checks")))]
pub use byok_check as check;

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use byok_memory::{self, MemoryStorage};

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
)]
pub use byok_sql;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use byok_sql::MySqlStorage;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use byok_sql::PostgresStorage;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use byok_sql::SqliteStorage;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use byok_redis::{self, RedisStorage};

/// The axum integration ([`byok_axum`]): the key settings page and its JSON
/// API, route guards, and the HTTPS policy.
#[cfg(feature = "axum")]
pub use byok_axum as axum;

/// Opens the store a URL names, with the default [`ByokConfig`], and
/// creates or updates its schema; see [`connect_with`].
pub async fn connect(url: &str) -> Result<Store> {
    connect_with(url, &ByokConfig::default()).await
}

/// Opens the store a URL names, among the backends compiled in, and
/// creates or updates its schema: [`open_with`], then
/// [`StoreAdmin::migrate`], which is idempotent and safe to run from
/// several processes at once.
///
/// The URL's scheme picks the backend (see the table on the [crate
/// docs](crate)). A backend whose cargo feature is off is a
/// [`ConfigError`] that names the feature, and so is a URL whose scheme
/// names another backend than [`ByokConfig::storage_backend`], when that
/// is set; errors never repeat the URL, which may hold a password.
///
/// The store starts no background purge of its own, whatever
/// [`ByokConfig::auto_cleanup`] says: that flag is for the manager, and a
/// [`Byok`] over this store runs the one purge task. Without a manager,
/// spawn [`store::purge_every`].
///
/// The [`Store`] is an [`ObservedStorage`] named after the backend
/// ([`StoreAdmin::backend`]: `postgres`, `redis`, …), so every operation
/// has a tracing span and, with the `metrics` feature, its metrics; see
/// [`observe`]. So is the store of [`open_with`].
pub async fn connect_with(url: &str, config: &ByokConfig) -> Result<Store> {
    let store = open_with(url, config).await?;
    store.migrate().await?;
    Ok(store)
}

/// Opens the store a URL names with the default [`ByokConfig`], without
/// writing anything; see [`open_with`].
pub async fn open(url: &str) -> Result<Store> {
    open_with(url, &ByokConfig::default()).await
}

/// Opens the store a URL names, like [`connect_with`], but writes nothing,
/// on any backend: a SQL store whose table is missing stays without it,
/// and its operations fail with a [`StorageError`] until the schema is
/// created.
///
/// Use it where schema changes are an explicit, separate step (a
/// deployment's migration job, an operator's `byok migrate`), or to read
/// from a store without writing to it. [`StoreAdmin::schema_status`]
/// says, reading only, whether the schema is there; [`connect_with`], or
/// [`StoreAdmin::migrate`] on the store, creates it.
///
/// ```
/// use byok::{KeyStorage, SchemaStatus};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> byok::Result<()> {
/// let store = byok::open("memory:").await?;
/// assert_eq!(store.backend(), "memory");
/// assert_eq!(store.schema_status().await?, SchemaStatus::NotApplicable);
/// assert!(store.list_providers("alice").await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[allow(
    unused_variables,
    reason = "`config` is unused without a SQL or Redis backend"
)]
pub async fn open_with(url: &str, config: &ByokConfig) -> Result<Store> {
    let backend = StorageBackend::from_url(url)?;
    if let Some(expected) = config.storage_backend
        && expected != backend
    {
        return Err(ConfigError::new(format!(
            "ByokConfig::storage_backend is {expected} but the URL's scheme names {backend}"
        ))
        .into());
    }
    // No backend starts a purge of its own: the manager's is the one.
    match backend {
        #[cfg(feature = "memory")]
        StorageBackend::Memory => Ok(observed(MemoryStorage::new())),
        #[cfg(feature = "redis")]
        StorageBackend::Redis => Ok(observed(
            byok_redis::RedisStorage::builder(url)
                .config(config)
                .open()
                .await?,
        )),
        #[cfg(feature = "sqlite")]
        StorageBackend::Sqlite => Ok(observed(
            byok_sql::SqliteStorage::connect(url, config).await?,
        )),
        #[cfg(feature = "postgres")]
        StorageBackend::Postgres => Ok(observed(
            byok_sql::PostgresStorage::connect(url, config).await?,
        )),
        #[cfg(feature = "mysql")]
        StorageBackend::MySql => Ok(observed(
            byok_sql::MySqlStorage::connect(url, config).await?,
        )),
        other => Err(missing_feature(other)),
    }
}

/// `store` as a [`Store`], observed under its own backend name.
#[allow(dead_code, reason = "unused without backends")]
fn observed(store: impl StoreAdmin) -> Store {
    Store::new(ObservedStorage::of(store))
}

#[allow(dead_code, reason = "unused when every backend is compiled in")]
fn missing_feature(backend: StorageBackend) -> ByokError {
    let feature = match backend {
        StorageBackend::Memory => "memory",
        StorageBackend::Redis => "redis",
        StorageBackend::Sqlite => "sqlite",
        StorageBackend::Postgres => "postgres",
        StorageBackend::MySql => "mysql",
        _ => "the matching",
    };
    ConfigError::new(format!(
        "{} URLs need the `{feature}` cargo feature of byok, which is not enabled",
        backend.scheme()
    ))
    .into()
}

/// The examples of README.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
