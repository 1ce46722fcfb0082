//! [`TieredStorage`]: a fast store in front of a durable one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::key::ApiKey;
use crate::observe;
use crate::storage::{Cursor, KeyStorage, ScanPage, check_same_slot};
use crate::validate;

/// Number of lock stripes that order writes of one slot.
const STRIPES: usize = 64;

/// A fast store (memory, Redis) in front of a durable one (SQL), as one
/// [`KeyStorage`] (the Python library's `HybridStorage`).
///
/// * Writes go to the durable store first, then to the fast one.
/// * Reads try the fast store and, on a miss, read the durable one and fill
///   the fast one.
/// * `delete`, `clear_all` and `purge_expired` reach both; `list_providers`
///   and `scan` read the durable store, which holds every key.
///
/// Writes and fills of one slot are ordered by a striped lock, so within
/// this process the fast store never keeps a value older than the durable
/// one. The fast store must therefore be private to this `TieredStorage`
/// (a [`MemoryStorage`](https://docs.rs/byok-memory) is), or shared only by
/// processes that all write through a `TieredStorage` over the same durable
/// store; another writer of the durable store alone would leave stale
/// entries in the fast store until they expire.
///
/// If the fast store fails after the durable write succeeded, the slot is
/// removed from the fast store so it cannot serve the old value; only if
/// that fails too is the error returned.
#[derive(Debug)]
pub struct TieredStorage {
    fast: Arc<dyn KeyStorage>,
    durable: Arc<dyn KeyStorage>,
    stripes: Box<[Mutex<()>]>,
}

impl TieredStorage {
    /// `fast` in front of `durable`.
    pub fn new(fast: Arc<dyn KeyStorage>, durable: Arc<dyn KeyStorage>) -> Self {
        TieredStorage {
            fast,
            durable,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The fast store.
    pub fn fast(&self) -> &Arc<dyn KeyStorage> {
        &self.fast
    }

    /// The durable store.
    pub fn durable(&self) -> &Arc<dyn KeyStorage> {
        &self.durable
    }

    async fn lock_slot(&self, user_id: &str, provider: &str) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        (user_id, provider).hash(&mut h);
        self.stripes[(h.finish() as usize) % STRIPES].lock().await
    }

    /// Puts `key` into the fast store; if that fails, makes sure the fast
    /// store holds nothing for the slot.
    async fn refresh_fast(&self, key: &ApiKey) -> Result<()> {
        match self.fast.store(key).await {
            Ok(()) => Ok(()),
            Err(store_err) => {
                tracing::warn!(error = %store_err, "fast store write failed; evicting the slot");
                self.fast
                    .delete(key.user_id(), key.provider())
                    .await
                    .map(|_| ())
                    .map_err(|_| store_err)
            }
        }
    }
}

#[async_trait]
impl KeyStorage for TieredStorage {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        let _slot = self.lock_slot(key.user_id(), key.provider()).await;
        self.durable.store(key).await?;
        self.refresh_fast(key).await
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        validate::slot(user_id, provider)?;
        if let Some(hit) = self.fast.retrieve(user_id, provider).await? {
            observe::tiered_lookup(true);
            return Ok(Some(hit));
        }
        let _slot = self.lock_slot(user_id, provider).await;
        // Another reader may have filled the slot while this one waited.
        if let Some(hit) = self.fast.retrieve(user_id, provider).await? {
            observe::tiered_lookup(true);
            return Ok(Some(hit));
        }
        observe::tiered_lookup(false);
        let found = self.durable.retrieve(user_id, provider).await?;
        if let Some(key) = &found
            && let Err(e) = self.fast.store(key).await
        {
            tracing::warn!(error = %e, "fast store fill failed; serving from the durable store");
        }
        Ok(found)
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        validate::slot(user_id, provider)?;
        let _slot = self.lock_slot(user_id, provider).await;
        let durable = self.durable.delete(user_id, provider).await?;
        let fast = self.fast.delete(user_id, provider).await?;
        Ok(durable || fast)
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.durable.list_providers(user_id).await
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        validate::user_id(user_id)?;
        // Every stripe, in order, so no write of this user interleaves.
        let mut guards = Vec::with_capacity(STRIPES);
        for stripe in self.stripes.iter() {
            guards.push(stripe.lock().await);
        }
        let removed = self.durable.clear_all(user_id).await?;
        self.fast.clear_all(user_id).await?;
        Ok(removed)
    }

    async fn purge_expired(&self) -> Result<u64> {
        let removed = self.durable.purge_expired().await?;
        self.fast.purge_expired().await?;
        Ok(removed)
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        check_same_slot(current, new)?;
        let _slot = self.lock_slot(current.user_id(), current.provider()).await;
        if self.durable.compare_and_swap(current, new).await? {
            self.refresh_fast(new).await?;
            Ok(true)
        } else {
            // The fast store may hold what the caller believed current;
            // drop it so the next read sees the durable value.
            self.fast
                .delete(current.user_id(), current.provider())
                .await?;
            Ok(false)
        }
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.durable.scan(cursor, limit).await
    }
}
