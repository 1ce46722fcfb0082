//! [`TieredStorage`]: a fast store in front of a durable one.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as SyncMutex, MutexGuard as SyncGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Mutex, MutexGuard};

use crate::error::{ByokError, Result};
use crate::key::ApiKey;
use crate::observe;
use crate::storage::{Cursor, KeyStorage, ScanPage, check_same_slot};
use crate::store::IntoStorage;
use crate::validate;

/// Number of lock stripes that order writes of one slot.
const STRIPES: usize = 64;

/// The provider under which a whole user is marked (no provider is empty).
const WHOLE_USER: &str = "";

/// How long a copy lives in a [`FastTier`] by default.
pub const DEFAULT_COPY_TTL: Duration = Duration::from_secs(300);

/// How long a lease or hold lives in a [`FastTier`] by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A fast store (memory, Redis) in front of a durable one (SQL), as one
/// [`KeyStorage`] (the Python library's `HybridStorage`).
///
/// The durable store holds the truth; the fast store holds copies of some
/// of its keys. A write succeeds when the durable store took it, whatever
/// the fast store did; a read that the fast store cannot answer is
/// answered by the durable store. `list_providers`, `user_keys` and `scan`
/// read the durable store; `purge_expired` purges both.
///
/// How the two stay in step depends on whether the fast store offers the
/// [`FastTier`] capability ([`KeyStorage::as_fast_tier`]); `RedisStorage`
/// and `MemoryStorage` do (the latter keeps its copies apart from its
/// keys, so two `TieredStorage`s of one process can share it).
///
/// # With a [`FastTier`]: leased fills, safe across processes
///
/// The technique of memcache's leases ("Scaling Memcache at Facebook",
/// NSDI 2013, section 3.2.1), with every step one atomic operation of the
/// fast store:
///
/// * A read that misses takes a lease on the slot, reads the durable store
///   and fills the fast store only if its lease is still valid. While
///   another lease or a write's hold is out, a miss reads the durable store
///   and fills nothing.
/// * A write (`store`, `store_if_absent`, `delete`, `compare_and_swap`,
///   `clear_all`) first
///   removes the copy and puts a hold on the slot (on every slot of the
///   user for `clear_all`), which invalidates every lease taken before it
///   and blocks fills; then writes the durable store; then settles: puts
///   the new key in if its hold is still the newest, else removes the copy.
/// * Every copy lives at most [`with_copy_ttl`](Self::with_copy_ttl)
///   (default 5 minutes), every lease and hold at most
///   [`with_lease`](Self::with_lease) (default 30 seconds).
///
/// So no read, in any process sharing the fast store, puts back a key that
/// a write replaced or deleted. Once a write has returned `Ok`, every
/// process reads what it wrote (or something newer) if the hold was taken;
/// the hold is taken unless the fast store failed at the start of the
/// write, and outlives the write as long as the durable store answers
/// within the lease (if neither settling nor the hold covers the end of a
/// slower write, a copy read before it can live until its TTL).
///
/// A write that fails on the durable store leaves its hold to end by
/// itself, so that the write, if it lands after all, is not hidden by a
/// copy read before it.
///
/// Measured (`byok/tests/tiered_processes.rs`): one process reading a slot
/// in a tight loop from four tasks, another deleting, replacing and
/// rotating its key, over a shared Redis in front of a SQLite file and of
/// PostgreSQL: no stale round in 60 deletes, 60 replacements and 10
/// rotations each (the fills of the previous, unleased design left 16 to
/// 28 of the 60 deletes stale for good).
///
/// When the hold could not be taken (the fast store was down, or
/// unreachable from this process), the write still goes to the durable
/// store. This process then never serves the old copy (see below); other
/// processes may read it, once the fast store is reachable again, until
/// this process evicts it or the copy's TTL ends: at most
/// [`with_copy_ttl`](Self::with_copy_ttl) after the write (measured with
/// a 2-second TTL: served for 2 seconds after the delete returned, never
/// longer). [`with_strict_writes(true)`](Self::with_strict_writes) refuses such a
/// write instead, before the durable store is touched, so that bound is
/// never needed.
///
/// # Without it: an ordering lock in this process
///
/// A fast store without the capability (a custom backend that does not
/// implement [`FastTier`], or a wrapper that does not forward
/// [`KeyStorage::as_fast_tier`]) is used through
/// [`KeyStorage`]: a write evicts the slot, writes the durable store, then
/// puts the new key into the fast store; a miss reads the durable store and
/// fills the fast store; writes and fills of one slot are ordered by a lock
/// in this process. That is exact within this process, and only there:
/// with the fast store shared by several processes, a miss in one can put
/// back a key that another has just deleted, for as long as the copy
/// lives (copies have no lifetime of their own there). Share such a fast
/// store between processes only if it implements [`FastTier`].
///
/// # Failures of the fast store, in this process
///
/// Whatever the fast store does, once a write has returned (with success
/// or an error), no read through this `TieredStorage` returns a key that
/// the durable store no longer holds: a slot whose copy could not be
/// evicted or settled is marked, and reads of a marked slot go to the
/// durable store, and evict the copy, until an eviction succeeds
/// ([`repair`](Self::repair), which [`purge_expired`](KeyStorage::purge_expired)
/// runs, evicts them all). Marks are lost if the process stops while the
/// fast store is down.
///
/// Processes that write the durable store without going through a
/// `TieredStorage` over the same fast store leave stale copies until their
/// TTL ends (or, without the capability, until the keys expire).
#[derive(Debug)]
pub struct TieredStorage {
    fast: Arc<dyn KeyStorage>,
    durable: Arc<dyn KeyStorage>,
    stripes: Box<[Mutex<()>]>,
    marks: Marks,
    strict: bool,
    copy_ttl: Duration,
    lease: Duration,
}

/// What a [`FastTier`] answered to [`lookup`](FastTier::lookup).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Lookup {
    /// The slot's copy.
    Hit(ApiKey),
    /// No copy; the caller now holds the slot's lease under its token and
    /// may [`fill`](FastTier::fill) it.
    Leased,
    /// No copy, and another lease or a write's hold is out: read the durable
    /// store and fill nothing.
    Busy,
}

/// The random token of one lease or hold: 128 bits, as 32 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        LeaseToken(hex::encode(bytes))
    }

    /// The token as text (hex digits only).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseToken(..)")
    }
}

/// Leased fills: what a fast store offers so that [`TieredStorage`] can
/// keep it consistent with the durable store across processes.
///
/// Each method is one atomic step of the fast store (a Lua script on
/// Redis). The store keeps, apart from its [`KeyStorage`] data:
///
/// * per slot, a copy with its own lifetime, and a lease: one token, or
///   none, that dies after the given lifetime;
/// * per user, a hold (one token or none, with a lifetime) and a
///   generation, which every copy and lease of the user records when it is
///   made: one made under another generation counts as absent.
///
/// Copies, leases and holds need not be visible through the store's
/// [`KeyStorage`] methods; `TieredStorage` reads and writes the fast store
/// through these methods alone.
#[async_trait]
pub trait FastTier: Send + Sync {
    /// The slot's unexpired copy; else, when the slot has no lease and its
    /// user no hold, takes the slot's lease for `token` for `lease` and
    /// answers [`Lookup::Leased`]; else [`Lookup::Busy`].
    async fn lookup(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> Result<Lookup>;

    /// If the slot's lease is `token`'s, taken under the user's current
    /// generation, and the user has no hold: ends the lease and, with
    /// `key`, makes `key` the slot's copy for `ttl`; returns whether it
    /// did. Otherwise changes nothing and returns `false`.
    async fn fill(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        key: Option<&ApiKey>,
        ttl: Duration,
    ) -> Result<bool>;

    /// Removes the slot's copy and makes `token` the slot's lease for
    /// `hold`, replacing any other.
    async fn hold(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        hold: Duration,
    ) -> Result<()>;

    /// Does what [`fill`](Self::fill) does when `token` (if any) still
    /// holds the slot; otherwise removes the slot's copy and lease.
    async fn settle(
        &self,
        user_id: &str,
        provider: &str,
        token: Option<&LeaseToken>,
        key: Option<&ApiKey>,
        ttl: Duration,
    ) -> Result<()>;

    /// Moves the user to a new generation (so that every copy and lease of
    /// the user is gone) and makes `token` the user's hold for `hold`.
    /// `ttl` is the longest a copy of the user may still live, for stores
    /// that need to know how long to remember a generation.
    async fn hold_user(
        &self,
        user_id: &str,
        token: &LeaseToken,
        hold: Duration,
        ttl: Duration,
    ) -> Result<()>;

    /// Moves the user to a new generation, and ends the user's hold if it
    /// is `token`'s. `ttl` as in [`hold_user`](Self::hold_user).
    async fn settle_user(
        &self,
        user_id: &str,
        token: Option<&LeaseToken>,
        ttl: Duration,
    ) -> Result<()>;
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
    /// `fast` in front of `durable`: each a [`Store`](crate::Store) (what
    /// `byok::connect` returns), an `Arc<dyn KeyStorage>` or an `Arc` of
    /// any store.
    pub fn new(fast: impl IntoStorage, durable: impl IntoStorage) -> Self {
        TieredStorage {
            fast: fast.into_storage(),
            durable: durable.into_storage(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            marks: Marks::default(),
            strict: false,
            copy_ttl: DEFAULT_COPY_TTL,
            lease: DEFAULT_LEASE,
        }
    }

    /// With `true`, a write (`store`, `delete`, `compare_and_swap`,
    /// `clear_all`) that cannot first evict the slot from the fast store
    /// (and, with a [`FastTier`], hold it) returns that error, retryable if
    /// the fast store's was, and leaves the durable store untouched. With a
    /// [`FastTier`] shared by other processes, no process then reads a copy
    /// older than a write that returned `Ok` (see the type's
    /// documentation for the one assumption: the durable store answers
    /// within the lease). Without the capability, it only makes sure the
    /// eviction happened; it cannot stop other processes' fills. Default:
    /// `false`, writes succeed on the durable store alone, and other
    /// processes may read an old copy for at most the copy TTL.
    pub fn with_strict_writes(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// How long a copy may live in a [`FastTier`] fast store, whatever
    /// happens (at least one millisecond). Default: [`DEFAULT_COPY_TTL`],
    /// 5 minutes. It bounds how long another process can read a key
    /// deleted while this one could not reach the fast store. Fast stores
    /// without the capability keep copies until they are evicted.
    pub fn with_copy_ttl(mut self, ttl: Duration) -> Self {
        self.copy_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// How long a read's lease and a write's hold live in a [`FastTier`]
    /// fast store (at least one millisecond). Default: [`DEFAULT_LEASE`],
    /// 30 seconds. A write's hold must outlive the durable write; a lease
    /// or hold left behind by a process that stopped makes reads of its
    /// slot go to the durable store until it ends.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
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
            match self.evict_now(&user_id, &provider).await {
                Ok(()) => self.marks.clear(&user_id, &provider, generation),
                Err(e) => {
                    tracing::debug!(error = %e, "fast store still failing; eviction stays pending");
                }
            }
        }
        self.pending_evictions()
    }

    /// Removes the slot's copy (or with [`WHOLE_USER`] every copy of the
    /// user), ending any lease, without a hold.
    async fn evict_now(&self, user_id: &str, provider: &str) -> Result<()> {
        match (self.fast.as_fast_tier(), provider == WHOLE_USER) {
            (Some(tier), true) => tier.settle_user(user_id, None, self.keep()).await,
            (Some(tier), false) => {
                tier.settle(user_id, provider, None, None, self.copy_ttl)
                    .await
            }
            (None, true) => self.fast.clear_all(user_id).await.map(|_| ()),
            (None, false) => self.fast.delete(user_id, provider).await.map(|_| ()),
        }
    }

    /// The longest a copy, or a lease, of a user may live.
    fn keep(&self) -> Duration {
        self.copy_ttl + self.lease
    }

    async fn lock_slot(&self, user_id: &str, provider: &str) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        (user_id, provider).hash(&mut h);
        self.stripes[(h.finish() as usize) % STRIPES].lock().await
    }

    /// Before a durable write: removes the slot from the fast store and,
    /// with a [`FastTier`], holds it. When that fails, returns the error
    /// with strict writes, else marks the slot. Returns what settling
    /// needs: `None` when the fast store is not known to be clean.
    async fn begin_write(&self, user_id: &str, provider: &str) -> Result<Option<Begun>> {
        let begun = match self.fast.as_fast_tier() {
            Some(tier) => {
                let token = LeaseToken::generate();
                let at = Instant::now();
                tier.hold(user_id, provider, &token, self.lease)
                    .await
                    .map(|()| Begun::Held(token, at))
            }
            None => self
                .fast
                .delete(user_id, provider)
                .await
                .map(|_| Begun::Evicted),
        };
        match begun {
            Ok(b) => Ok(Some(b)),
            Err(e) if self.strict => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "fast store eviction failed; reads of the slot go to the durable store");
                self.marks.mark(user_id, provider);
                Ok(None)
            }
        }
    }

    /// After a durable write that ended (`Ok`) with `key` in the slot
    /// (`None`: the slot is empty or was left as it was): puts `key` into
    /// the fast store if nothing raced, else leaves the slot empty there.
    /// Marks the slot when that fails, since a write that failed on the
    /// way may still land.
    async fn settle_write(
        &self,
        user_id: &str,
        provider: &str,
        begun: Begun,
        key: Option<&ApiKey>,
    ) {
        let settled = match (&begun, self.fast.as_fast_tier()) {
            (Begun::Held(token, at), Some(tier)) => {
                // A hold that may have ended during a slow durable write no
                // longer keeps other fills out: remove whatever they left.
                let token = (at.elapsed() < self.lease / 2).then_some(token);
                let key = key.filter(|_| token.is_some());
                tier.settle(user_id, provider, token, key, self.copy_ttl)
                    .await
            }
            _ => match key {
                Some(key) => self.fast.store(key).await,
                None => Ok(()),
            },
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "fast store write failed; reads of the slot go to the durable store");
            self.marks.mark(user_id, provider);
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
        let marked = if whole_user { WHOLE_USER } else { provider };
        if self.evict_now(user_id, marked).await.is_ok() {
            self.marks.clear(user_id, marked, generation);
        }
        Ok(found)
    }

    /// A read through a [`FastTier`]: the copy, or the durable store's key,
    /// filled in under a lease.
    async fn retrieve_leased(
        &self,
        tier: &dyn FastTier,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ApiKey>> {
        let token = LeaseToken::generate();
        match tier.lookup(user_id, provider, &token, self.lease).await {
            Ok(Lookup::Hit(hit)) => {
                observe::tiered_lookup(true);
                Ok(Some(hit).filter(|k| !k.is_expired()))
            }
            Ok(Lookup::Leased) => {
                observe::tiered_lookup(false);
                let found = self.durable.retrieve(user_id, provider).await;
                // On an error, the lease is handed back (a `None` fill) so
                // that the next read need not wait for it to end.
                let fill = found.as_ref().ok().and_then(Option::as_ref);
                if let Err(e) = tier
                    .fill(user_id, provider, &token, fill, self.copy_ttl)
                    .await
                {
                    tracing::debug!(error = %e, "fast store fill failed");
                }
                found
            }
            Ok(Lookup::Busy) => {
                observe::tiered_lookup(false);
                self.durable.retrieve(user_id, provider).await
            }
            Err(e) => self.read_durable_after(&e, user_id, provider).await,
        }
    }

    /// The fast store's copy of the slot: the answer on a hit, or the
    /// durable store's when the fast one failed; `None` on a miss.
    async fn read_fast(&self, user_id: &str, provider: &str) -> Option<Result<Option<ApiKey>>> {
        match self.fast.retrieve(user_id, provider).await {
            Ok(Some(hit)) => {
                observe::tiered_lookup(true);
                Some(Ok(Some(hit)))
            }
            Ok(None) => None,
            Err(e) => Some(self.read_durable_after(&e, user_id, provider).await),
        }
    }

    /// The durable store's key, read because the fast store failed.
    async fn read_durable_after(
        &self,
        error: &ByokError,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<ApiKey>> {
        tracing::warn!(%error, "fast store read failed; reading the durable store");
        observe::tiered_lookup(false);
        self.durable.retrieve(user_id, provider).await
    }

    /// A read through a fast store without the capability, ordered with
    /// this process's writes by the slot's lock.
    async fn retrieve_locked(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        if let Some(answer) = self.read_fast(user_id, provider).await {
            return answer;
        }
        let _slot = self.lock_slot(user_id, provider).await;
        if self.marks.get(user_id, provider).is_some() {
            observe::tiered_lookup(false);
            return self.read_marked(user_id, provider).await;
        }
        // Another reader may have filled the slot while this one waited.
        if let Some(answer) = self.read_fast(user_id, provider).await {
            return answer;
        }
        observe::tiered_lookup(false);
        let found = self.durable.retrieve(user_id, provider).await?;
        if let Some(key) = &found
            && let Err(e) = self.fast.store(key).await
        {
            tracing::warn!(error = %e, "fast store write failed; reads of the slot go to the durable store");
            self.marks.mark(user_id, provider);
        }
        Ok(found)
    }
}

/// What [`TieredStorage::begin_write`] did to the fast store.
enum Begun {
    /// Evicted the slot (a fast store without [`FastTier`]).
    Evicted,
    /// Held the slot under this token, from this instant.
    Held(LeaseToken, Instant),
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl KeyStorage for TieredStorage {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        let (user_id, provider) = (key.user_id(), key.provider());
        let _slot = self.lock_slot(user_id, provider).await;
        let begun = self.begin_write(user_id, provider).await?;
        self.durable.store(key).await?;
        if let Some(begun) = begun {
            self.settle_write(user_id, provider, begun, Some(key)).await;
        }
        Ok(())
    }

    /// The durable store decides; the fast store is settled as for
    /// [`store`](KeyStorage::store) when the key was stored, and left
    /// without a copy of the slot when it was not.
    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        let (user_id, provider) = (key.user_id(), key.provider());
        let _slot = self.lock_slot(user_id, provider).await;
        let begun = self.begin_write(user_id, provider).await?;
        let stored = self.durable.store_if_absent(key).await?;
        if let Some(begun) = begun {
            self.settle_write(user_id, provider, begun, stored.then_some(key))
                .await;
        }
        Ok(stored)
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        validate::stored_slot(user_id, provider)?;
        if self.marks.get(user_id, provider).is_some() {
            let _slot = self.lock_slot(user_id, provider).await;
            if self.marks.get(user_id, provider).is_some() {
                observe::tiered_lookup(false);
                return self.read_marked(user_id, provider).await;
            }
        }
        match self.fast.as_fast_tier() {
            Some(tier) => self.retrieve_leased(tier, user_id, provider).await,
            None => self.retrieve_locked(user_id, provider).await,
        }
    }

    /// The value of [`retrieve`](KeyStorage::retrieve): a copy in the fast
    /// store is a whole key, and a fill needs the whole key, so reading one
    /// column of the durable store would save nothing on a hit and cost a
    /// second read on a miss.
    async fn retrieve_value(&self, user_id: &str, provider: &str) -> Result<Option<Arc<[u8]>>> {
        Ok(self
            .retrieve(user_id, provider)
            .await?
            .map(|k| k.encrypted_value_shared()))
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        validate::stored_slot(user_id, provider)?;
        let _slot = self.lock_slot(user_id, provider).await;
        let begun = self.begin_write(user_id, provider).await?;
        let deleted = self.durable.delete(user_id, provider).await?;
        if let Some(begun) = begun {
            self.settle_write(user_id, provider, begun, None).await;
        }
        Ok(deleted)
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.durable.list_providers(user_id).await
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        validate::stored_user_id(user_id)?;
        // Every stripe, in order, so no write of this user interleaves.
        let mut guards = Vec::with_capacity(STRIPES);
        for stripe in self.stripes.iter() {
            guards.push(stripe.lock().await);
        }
        let token = LeaseToken::generate();
        let held = match self.fast.as_fast_tier() {
            Some(tier) => {
                tier.hold_user(user_id, &token, self.lease, self.keep())
                    .await
            }
            None => self.fast.clear_all(user_id).await.map(|_| ()),
        };
        if let Err(e) = &held {
            if self.strict {
                return held.map(|()| 0);
            }
            tracing::warn!(error = %e, "fast store eviction failed; reads of the user go to the durable store");
            self.marks.mark(user_id, WHOLE_USER);
        }
        let cleared = self.durable.clear_all(user_id).await?;
        if held.is_ok()
            && let Some(tier) = self.fast.as_fast_tier()
            && let Err(e) = tier.settle_user(user_id, Some(&token), self.keep()).await
        {
            tracing::warn!(error = %e, "fast store write failed; reads of the user go to the durable store");
            self.marks.mark(user_id, WHOLE_USER);
        }
        Ok(cleared)
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
        let (user_id, provider) = (current.user_id(), current.provider());
        let _slot = self.lock_slot(user_id, provider).await;
        // Evicted first whatever the outcome: the fast store may hold what
        // the caller believed current.
        let begun = self.begin_write(user_id, provider).await?;
        let swapped = self.durable.compare_and_swap(current, new).await?;
        if let Some(begun) = begun {
            self.settle_write(user_id, provider, begun, swapped.then_some(new))
                .await;
        }
        Ok(swapped)
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.durable.scan(cursor, limit).await
    }

    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.durable.user_keys(user_id).await
    }

    /// Checks live in the durable store only; copies never carry them.
    async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
        self.durable.store_check(user_id, provider, check).await
    }

    async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.durable.checks(user_id).await
    }

    /// None: a tiered store is not itself the fast store of another.
    fn as_fast_tier(&self) -> Option<&dyn FastTier> {
        None
    }
}
