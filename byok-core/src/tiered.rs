//! [`TieredStorage`]: a fast store in front of a durable one.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as SyncMutex, MutexGuard as SyncGuard};

use async_trait::async_trait;
use tokio::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::key::ApiKey;
use crate::observe;
use crate::storage::{Cursor, KeyStorage, ScanPage, check_same_slot};
use crate::validate;

/// Number of lock stripes that order writes of one slot.
const STRIPES: usize = 64;

/// The provider under which a whole user is marked (no provider is empty).
const WHOLE_USER: &str = "";

/// A fast store (memory, Redis) in front of a durable one (SQL), as one
/// [`KeyStorage`] (the Python library's `HybridStorage`).
///
/// The durable store holds the truth; the fast store holds copies of some
/// of its keys.
///
/// * A write (`store`, `delete`, `compare_and_swap`, `clear_all`) first
///   evicts the slot (or the user) from the fast store, then writes the
///   durable store, then puts the new key into the fast store. A write
///   succeeds when the durable store took it, whatever the fast store did.
/// * A read tries the fast store and, on a miss, reads the durable store
///   and fills the fast store. When the fast store fails, the read is
///   answered by the durable store and fills nothing.
/// * `list_providers`, `user_keys` and `scan` read the durable store;
///   `purge_expired` purges both.
///
/// # What the fast store may serve
///
/// Within this process, once a write has returned (with success or an
/// error), no read through this `TieredStorage` returns a key that the
/// durable store no longer holds, even if the fast store failed during the
/// write: a slot whose copy could not be evicted is marked, and reads of a
/// marked slot go to the durable store, and evict the copy, until an
/// eviction succeeds. Writes and fills of one slot are ordered by a
/// striped lock, so a fill never puts back a value older than the durable
/// one.
///
/// The marks live in this process. If the fast store is shared with other
/// processes (a Redis in front of a database), they may read a stale copy
/// of a slot written here during a fast-store outage until this process
/// evicts it: on its next read or write of that slot, or at the latest on
/// its next [`purge_expired`](KeyStorage::purge_expired) (which the
/// manager's cleanup task runs every cleanup interval) or
/// [`repair`](TieredStorage::repair) after the fast store is back. Marks
/// are lost if the process stops while the fast store is down. Processes
/// that write the durable store without going through a `TieredStorage`
/// over the same fast store leave stale copies until the keys expire.
///
/// Where that window is not acceptable, [`with_strict_writes`](Self::with_strict_writes)
/// refuses a write whose eviction fails, before the durable store is
/// touched: then no process can read a stale copy, at the price of writes
/// failing while the fast store is down (reads still fall back).
#[derive(Debug)]
pub struct TieredStorage {
    fast: Arc<dyn KeyStorage>,
    durable: Arc<dyn KeyStorage>,
    stripes: Box<[Mutex<()>]>,
    marks: Marks,
    strict: bool,
}

/// Slots (or whole users) whose copy in the fast store could not be
/// evicted, each with the generation of its latest failed eviction.
#[derive(Debug, Default)]
struct Marks {
    by_user: SyncMutex<HashMap<String, HashMap<String, u64>>>,
    count: AtomicUsize,
    generation: AtomicU64,
}

impl Marks {
    fn lock(&self) -> SyncGuard<'_, HashMap<String, HashMap<String, u64>>> {
        // Every critical section leaves the map consistent; a panic in one
        // cannot leave it half-updated.
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a slot, or with [`WHOLE_USER`] every slot of a user.
    fn mark(&self, user_id: &str, provider: &str) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut marks = self.lock();
        let slots = marks.entry(user_id.to_owned()).or_default();
        if slots.insert(provider.to_owned(), generation).is_none() {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The generation of the mark that makes this slot unsafe to read from
    /// the fast store, if any: the slot's own, else its user's.
    fn get(&self, user_id: &str, provider: &str) -> Option<u64> {
        if self.count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let marks = self.lock();
        let slots = marks.get(user_id)?;
        slots
            .get(provider)
            .or_else(|| slots.get(WHOLE_USER))
            .copied()
    }

    /// Removes a mark if no eviction failed since `generation` was read.
    fn clear(&self, user_id: &str, provider: &str, generation: u64) {
        let mut marks = self.lock();
        let Some(slots) = marks.get_mut(user_id) else {
            return;
        };
        if slots.get(provider) == Some(&generation) {
            slots.remove(provider);
            self.count.fetch_sub(1, Ordering::SeqCst);
            if slots.is_empty() {
                marks.remove(user_id);
            }
        }
    }

    fn snapshot(&self) -> Vec<(String, String, u64)> {
        self.lock()
            .iter()
            .flat_map(|(user, slots)| {
                slots
                    .iter()
                    .map(move |(provider, g)| (user.clone(), provider.clone(), *g))
            })
            .collect()
    }
}

impl TieredStorage {
    /// `fast` in front of `durable`.
    pub fn new(fast: Arc<dyn KeyStorage>, durable: Arc<dyn KeyStorage>) -> Self {
        TieredStorage {
            fast,
            durable,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            marks: Marks::default(),
            strict: false,
        }
    }

    /// With `true`, a write (`store`, `delete`, `compare_and_swap`,
    /// `clear_all`) whose eviction from the fast store fails returns that
    /// error, retryable if the fast store's was, and leaves the durable
    /// store untouched. Use it when other processes share the fast store
    /// and must never read a copy older than the durable store. Default:
    /// `false`, writes succeed on the durable store alone.
    pub fn with_strict_writes(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// The fast store.
    pub fn fast(&self) -> &Arc<dyn KeyStorage> {
        &self.fast
    }

    /// The durable store.
    pub fn durable(&self) -> &Arc<dyn KeyStorage> {
        &self.durable
    }

    /// How many slots (or whole users) are marked because their copy in
    /// the fast store could not be evicted; their reads go to the durable
    /// store until [`repair`](Self::repair) or a later read evicts them.
    /// Each mark holds its ids, so the marks of a long outage take memory
    /// in proportion to the slots written during it.
    pub fn pending_evictions(&self) -> usize {
        self.marks.count.load(Ordering::SeqCst)
    }

    /// Evicts from the fast store every slot that an earlier failure left
    /// marked; returns how many marks remain (those whose eviction failed
    /// again). [`purge_expired`](KeyStorage::purge_expired) runs this first.
    pub async fn repair(&self) -> usize {
        for (user_id, provider, generation) in self.marks.snapshot() {
            let evicted = if provider == WHOLE_USER {
                self.fast.clear_all(&user_id).await.map(|_| ())
            } else {
                self.fast.delete(&user_id, &provider).await.map(|_| ())
            };
            match evicted {
                Ok(()) => self.marks.clear(&user_id, &provider, generation),
                Err(e) => {
                    tracing::debug!(error = %e, "fast store still failing; eviction stays pending");
                }
            }
        }
        self.pending_evictions()
    }

    async fn lock_slot(&self, user_id: &str, provider: &str) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        (user_id, provider).hash(&mut h);
        self.stripes[(h.finish() as usize) % STRIPES].lock().await
    }

    /// Removes the slot from the fast store; when that fails, returns the
    /// error with strict writes, else marks the slot. Returns whether the
    /// fast store is known to hold nothing stale.
    async fn evict(&self, user_id: &str, provider: &str) -> Result<bool> {
        match self.fast.delete(user_id, provider).await {
            Ok(_) => Ok(true),
            Err(e) if self.strict => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "fast store eviction failed; reads of the slot go to the durable store");
                self.marks.mark(user_id, provider);
                Ok(false)
            }
        }
    }

    /// Puts the durable store's new key into an evicted slot of the fast
    /// store; marks the slot when that fails, since a write that failed on
    /// the way may still land.
    async fn refill(&self, key: &ApiKey) {
        if let Err(e) = self.fast.store(key).await {
            tracing::warn!(error = %e, "fast store write failed; reads of the slot go to the durable store");
            self.marks.mark(key.user_id(), key.provider());
        }
    }

    /// Reads a marked slot from the durable store and makes the fast store
    /// agree with it; clears the mark when it does.
    async fn read_marked(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        let found = self.durable.retrieve(user_id, provider).await?;
        let Some(generation) = self.marks.get(user_id, provider) else {
            return Ok(found);
        };
        let whole_user = self
            .marks
            .lock()
            .get(user_id)
            .is_some_and(|s| s.get(provider).is_none());
        let synced = if whole_user {
            self.fast.clear_all(user_id).await.map(|_| ())
        } else {
            self.fast.delete(user_id, provider).await.map(|_| ())
        };
        if synced.is_ok() {
            let marked = if whole_user { WHOLE_USER } else { provider };
            self.marks.clear(user_id, marked, generation);
        }
        Ok(found)
    }
}

#[async_trait]
impl KeyStorage for TieredStorage {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        let _slot = self.lock_slot(key.user_id(), key.provider()).await;
        let evicted = self.evict(key.user_id(), key.provider()).await?;
        self.durable.store(key).await?;
        if evicted {
            self.refill(key).await;
        }
        Ok(())
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        validate::slot(user_id, provider)?;
        if self.marks.get(user_id, provider).is_none() {
            match self.fast.retrieve(user_id, provider).await {
                Ok(Some(hit)) => {
                    observe::tiered_lookup(true);
                    return Ok(Some(hit));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "fast store read failed; reading the durable store");
                    observe::tiered_lookup(false);
                    return self.durable.retrieve(user_id, provider).await;
                }
            }
        }
        let _slot = self.lock_slot(user_id, provider).await;
        if self.marks.get(user_id, provider).is_some() {
            observe::tiered_lookup(false);
            return self.read_marked(user_id, provider).await;
        }
        // Another reader may have filled the slot while this one waited.
        match self.fast.retrieve(user_id, provider).await {
            Ok(Some(hit)) => {
                observe::tiered_lookup(true);
                return Ok(Some(hit));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "fast store read failed; reading the durable store");
                observe::tiered_lookup(false);
                return self.durable.retrieve(user_id, provider).await;
            }
        }
        observe::tiered_lookup(false);
        let found = self.durable.retrieve(user_id, provider).await?;
        if let Some(key) = &found {
            self.refill(key).await;
        }
        Ok(found)
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        validate::slot(user_id, provider)?;
        let _slot = self.lock_slot(user_id, provider).await;
        self.evict(user_id, provider).await?;
        self.durable.delete(user_id, provider).await
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
        if let Err(e) = self.fast.clear_all(user_id).await {
            if self.strict {
                return Err(e);
            }
            tracing::warn!(error = %e, "fast store eviction failed; reads of the user go to the durable store");
            self.marks.mark(user_id, WHOLE_USER);
        }
        self.durable.clear_all(user_id).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.repair().await;
        let removed = self.durable.purge_expired().await?;
        // Expired copies are invisible in the fast store; purging them only
        // frees memory, so a failure here is not the caller's problem.
        if let Err(e) = self.fast.purge_expired().await {
            tracing::warn!(error = %e, "fast store purge failed");
        }
        Ok(removed)
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        check_same_slot(current, new)?;
        let _slot = self.lock_slot(current.user_id(), current.provider()).await;
        // Evicted first whatever the outcome: the fast store may hold what
        // the caller believed current.
        let evicted = self.evict(current.user_id(), current.provider()).await?;
        let swapped = self.durable.compare_and_swap(current, new).await?;
        if swapped && evicted {
            self.refill(new).await;
        }
        Ok(swapped)
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.durable.scan(cursor, limit).await
    }

    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.durable.user_keys(user_id).await
    }
}
