//! Running a store: its schema, its counts, its name, and walking it.
//!
//! [`KeyStorage`] is what the application reads and writes keys through.
//! [`StoreAdmin`] is the small operator's side that every backend of byok
//! implements beside it: the backend's name, [`migrate`](StoreAdmin::migrate),
//! a read-only [`schema_status`](StoreAdmin::schema_status), exact
//! [`stats`](StoreAdmin::stats) and [`destroy`](StoreAdmin::destroy).
//! [`Store`] holds one of them behind an `Arc`; it is what `byok::connect`
//! returns, a [`KeyStorage`] itself, and what [`Byok::new`](crate::Byok::new)
//! takes.
//!
//! ```
//! use byok_core::store::{SchemaStatus, Store};
//! # use byok_memory::MemoryStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> byok_core::Result<()> {
//! let store = Store::new(MemoryStorage::new());
//! assert_eq!(store.backend(), "memory");
//! assert_eq!(store.schema_status().await?, SchemaStatus::NotApplicable);
//! assert_eq!(store.stats().await?.keys, 0);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::key::ApiKey;
use crate::storage::{Cursor, KeyStorage, ScanPage};

/// Where a store's schema stands, as [`StoreAdmin::schema_status`] reads it
/// without changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SchemaStatus {
    /// The schema is the one this version of byok writes.
    UpToDate,
    /// There is no schema yet: [`StoreAdmin::migrate`] creates it.
    Missing,
    /// An older schema that [`StoreAdmin::migrate`] brings up to date.
    Older {
        /// The version found.
        found: u32,
        /// The version this byok writes.
        current: u32,
    },
    /// A schema written by a newer byok. This version keeps working on it
    /// where the newer one said it may; `migrate` leaves it alone.
    Newer {
        /// The version found.
        found: u32,
        /// The version this byok writes.
        current: u32,
    },
    /// The store has no schema (memory) or cannot tell (a custom store
    /// without an admin side).
    NotApplicable,
}

impl fmt::Display for SchemaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaStatus::UpToDate => f.write_str("up to date"),
            SchemaStatus::Missing => f.write_str("missing"),
            SchemaStatus::Older { found, current } => {
                write!(f, "older (version {found}; this byok writes {current})")
            }
            SchemaStatus::Newer { found, current } => {
                write!(f, "newer (version {found}; this byok writes {current})")
            }
            SchemaStatus::NotApplicable => f.write_str("none needed"),
        }
    }
}

/// Counts over a whole store; nothing in it is secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreStats {
    /// Unexpired keys.
    pub keys: u64,
    /// Expired keys still stored (a purge removes them); `None` where the
    /// store cannot tell (a custom store without an admin side).
    pub expired: Option<u64>,
    /// Unexpired keys by the master key id that sealed them; keys whose
    /// ciphertext names no id (damaged) are under `None`.
    pub by_key_id: BTreeMap<Option<u32>, u64>,
    /// Unexpired keys by provider.
    pub by_provider: BTreeMap<String, u64>,
}

impl StoreStats {
    /// Adds one unexpired key.
    pub fn add(&mut self, key: &ApiKey) {
        self.keys += 1;
        let id = crate::crypto::key_id_of(key.encrypted_value()).ok();
        *self.by_key_id.entry(id).or_default() += 1;
        *self
            .by_provider
            .entry(key.provider().to_owned())
            .or_default() += 1;
    }
}

/// The operator's side of a store, which every backend of byok implements
/// beside [`KeyStorage`] (the way sqlx's `MigrateDatabase` and
/// tower-sessions' `ExpiredDeletion` sit beside the data trait).
///
/// Only [`backend`](StoreAdmin::backend) and
/// [`count_expired`](StoreAdmin::count_expired) have no default. A store
/// without a schema keeps the defaults of `migrate` and `schema_status`.
#[async_trait]
pub trait StoreAdmin: KeyStorage {
    /// The backend's name in spans, metrics and messages (`"postgres"`,
    /// `"redis"`, …).
    fn backend(&self) -> &'static str;

    /// Creates or updates the schema; idempotent, and safe to run from
    /// several processes at once. Opening a store never does this by itself.
    /// The default does nothing.
    async fn migrate(&self) -> Result<()> {
        Ok(())
    }

    /// Where the schema stands; reads only. The default is
    /// [`SchemaStatus::NotApplicable`].
    async fn schema_status(&self) -> Result<SchemaStatus> {
        Ok(SchemaStatus::NotApplicable)
    }

    /// How many expired keys are still stored (a purge would remove them);
    /// `None` where the store cannot tell.
    async fn count_expired(&self) -> Result<Option<u64>>;

    /// How many unexpired keys the store holds. The default walks the
    /// store; backends that can count in one request override it.
    async fn count(&self) -> Result<u64> {
        use futures_util::StreamExt;
        let mut n = 0;
        let mut walk = pages(self, None, PAGE);
        while let Some(page) = walk.next().await {
            n += page?.keys.len() as u64;
        }
        Ok(n)
    }

    /// Counts of the whole store: exact, from one walk and
    /// [`count_expired`](StoreAdmin::count_expired).
    async fn stats(&self) -> Result<StoreStats> {
        use futures_util::StreamExt;
        let mut stats = StoreStats::default();
        let mut walk = pages(self, None, PAGE);
        while let Some(page) = walk.next().await {
            page?.keys.iter().for_each(|k| stats.add(k));
        }
        drop(walk);
        stats.expired = self.count_expired().await?;
        Ok(stats)
    }

    /// Removes the store itself: a SQL table is dropped, every Redis key
    /// under the prefix removed, a memory store emptied. For scratch stores
    /// (`byok check`) and tests; there is no undo.
    async fn destroy(&self) -> Result<()>;
}

/// The page size of the walks of [`StoreAdmin`]'s defaults and of
/// [`keys`](crate::KeyStorageExt::keys).
pub const PAGE: usize = 500;

/// An open store: its [`KeyStorage`] and its [`StoreAdmin`] side, behind
/// one `Arc` (cloning is cheap). This is what `byok::connect` returns.
///
/// It is a [`KeyStorage`] itself, so it goes wherever a store does,
/// [`Byok::new`](crate::Byok::new) included.
#[derive(Clone)]
pub struct Store(Arc<dyn StoreAdmin>);

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Store {
    /// A store over `admin`.
    pub fn new(admin: impl StoreAdmin) -> Self {
        Store(Arc::new(admin))
    }

    /// A store over an admin side already behind an `Arc`.
    pub fn from_arc(admin: Arc<dyn StoreAdmin>) -> Self {
        Store(admin)
    }

    /// A store over a [`KeyStorage`] that has no admin side (a custom
    /// backend): `backend` is its name, `migrate` does nothing, the schema
    /// is [`SchemaStatus::NotApplicable`], expired keys are not counted and
    /// [`destroy`](StoreAdmin::destroy) clears nothing and fails.
    pub fn without_admin(storage: Arc<dyn KeyStorage>, backend: &'static str) -> Self {
        Store(Arc::new(WithoutAdmin { storage, backend }))
    }

    /// The store as a [`KeyStorage`].
    pub fn storage(&self) -> Arc<dyn KeyStorage> {
        self.0.clone()
    }

    /// The admin side.
    pub fn admin(&self) -> &dyn StoreAdmin {
        &*self.0
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.0.backend()
    }

    /// See [`StoreAdmin::migrate`].
    pub async fn migrate(&self) -> Result<()> {
        self.0.migrate().await
    }

    /// See [`StoreAdmin::schema_status`].
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        self.0.schema_status().await
    }

    /// See [`StoreAdmin::stats`].
    pub async fn stats(&self) -> Result<StoreStats> {
        self.0.stats().await
    }

    /// See [`StoreAdmin::count`].
    pub async fn count(&self) -> Result<u64> {
        self.0.count().await
    }

    /// See [`StoreAdmin::count_expired`].
    pub async fn count_expired(&self) -> Result<Option<u64>> {
        self.0.count_expired().await
    }

    /// See [`StoreAdmin::destroy`].
    pub async fn destroy(&self) -> Result<()> {
        self.0.destroy().await
    }
}

impl From<Store> for Arc<dyn KeyStorage> {
    fn from(store: Store) -> Self {
        store.0
    }
}

/// What a [`Byok`](crate::Byok) manager can be built over: a [`Store`], an
/// `Arc<dyn KeyStorage>`, or an `Arc` of any store.
pub trait IntoStorage {
    /// The store as a shared [`KeyStorage`].
    fn into_storage(self) -> Arc<dyn KeyStorage>;
}

impl IntoStorage for Store {
    fn into_storage(self) -> Arc<dyn KeyStorage> {
        self.0
    }
}

impl IntoStorage for Arc<dyn KeyStorage> {
    fn into_storage(self) -> Arc<dyn KeyStorage> {
        self
    }
}

impl IntoStorage for Arc<dyn StoreAdmin> {
    fn into_storage(self) -> Arc<dyn KeyStorage> {
        self
    }
}

impl<T: KeyStorage> IntoStorage for Arc<T> {
    fn into_storage(self) -> Arc<dyn KeyStorage> {
        self
    }
}

#[derive(Debug)]
struct WithoutAdmin {
    storage: Arc<dyn KeyStorage>,
    backend: &'static str,
}

crate::forward_key_storage!(WithoutAdmin, storage);

#[async_trait]
impl StoreAdmin for WithoutAdmin {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn count_expired(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    async fn destroy(&self) -> Result<()> {
        Err(crate::error::ConfigError::new(
            "this store has no admin side and cannot be destroyed as a whole",
        )
        .into())
    }
}

#[async_trait]
impl StoreAdmin for Store {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    async fn migrate(&self) -> Result<()> {
        self.0.migrate().await
    }
    async fn schema_status(&self) -> Result<SchemaStatus> {
        self.0.schema_status().await
    }
    async fn count_expired(&self) -> Result<Option<u64>> {
        self.0.count_expired().await
    }
    async fn count(&self) -> Result<u64> {
        self.0.count().await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.0.stats().await
    }
    async fn destroy(&self) -> Result<()> {
        self.0.destroy().await
    }
}

crate::forward_key_storage!(Store, 0);

/// A boxed stream of the keys or pages of a store.
pub type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// The pages of a walk from `from` (the start when `None`): each item is a
/// page and the cursor after it, so that a caller can save where it is and
/// resume after a restart. The stream ends after the last page; an error
/// ends it too.
pub fn pages<'a, S: KeyStorage + ?Sized>(
    store: &'a S,
    from: Option<Cursor>,
    page_size: usize,
) -> BoxStream<'a, Result<ScanPage>> {
    // The state: where the next page starts, or `None` when the walk is over.
    let state: Option<Option<Cursor>> = Some(from);
    Box::pin(futures_util::stream::unfold(
        state,
        move |state| async move {
            let cursor = state?;
            match store.scan(cursor.as_ref(), page_size).await {
                Ok(page) => {
                    let next = page.next.clone().map(Some);
                    Some((Ok(page), next))
                }
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

/// Every unexpired key of a store, page by page; see [`pages`].
pub fn keys<'a, S: KeyStorage + ?Sized>(
    store: &'a S,
    page_size: usize,
) -> BoxStream<'a, Result<ApiKey>> {
    use futures_util::StreamExt;
    Box::pin(pages(store, None, page_size).flat_map(|page| {
        let items: Vec<Result<ApiKey>> = match page {
            Ok(page) => page.keys.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(items)
    }))
}

/// Purges expired keys every `period`, forever: the one purge loop of byok.
///
/// The first purge runs one period after the call. A failed purge is
/// logged (`tracing`, at `WARN`) and the loop goes on. The manager runs it
/// when [`ByokConfig::auto_cleanup`](crate::ByokConfig::auto_cleanup) is on;
/// an application without a manager spawns it itself:
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use byok_core::KeyStorage;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let store: Arc<dyn KeyStorage> = Arc::new(byok_memory::MemoryStorage::new());
/// let purge = tokio::spawn(byok_core::store::purge_every(store.clone(), Duration::from_secs(3600)));
/// // … and `purge.abort()` at shutdown.
/// # purge.abort();
/// # }
/// ```
pub async fn purge_every(store: Arc<dyn KeyStorage>, period: Duration) {
    let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match store.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired keys"),
            Err(e) => tracing::warn!(error = %e, "purging expired keys failed"),
        }
    }
}
