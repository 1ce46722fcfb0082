//! Wrappers around any [`KeyStorage`] for tests: [`FaultyStorage`] fails
//! calls on demand, [`CountingStorage`] counts them.
//!
//! Both forward every call, `user_keys` and `as_fast_tier` included, to
//! the store they wrap,
//! and are cheap to clone: clones share the switch or the counters, so a
//! test keeps one clone to steer or read while the other sits inside an
//! `Arc<dyn KeyStorage>`.
//!
//! ```
//! use std::sync::Arc;
//! use byok_core::{ApiKey, KeyStorage};
//! use byok_memory::MemoryStorage;
//! use byok_testkit::layers::{CountingStorage, FaultyStorage, Op};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> byok_core::Result<()> {
//! let faulty = FaultyStorage::new(MemoryStorage::new());
//! let counted = CountingStorage::new(faulty.clone());
//! let store: Arc<dyn KeyStorage> = Arc::new(counted.clone());
//!
//! faulty.fail_all();
//! let err = store.retrieve("alice", "openai").await.unwrap_err();
//! assert!(err.is_retryable());
//! faulty.recover();
//! store.store(&ApiKey::new("alice", "openai", vec![1])?).await?;
//! assert_eq!(counted.calls(Op::Store), 1);
//! assert_eq!(counted.total(), 2);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

use std::time::Duration;

use byok_core::{
    ApiKey, Cursor, FastTier, KeyStorage, LeaseToken, Lookup, Result, ScanPage, StorageError,
    StorageErrorKind, async_trait,
};

/// A method of [`KeyStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`KeyStorage::store`].
    Store,
    /// [`KeyStorage::store_if_absent`].
    StoreIfAbsent,
    /// [`KeyStorage::retrieve`].
    Retrieve,
    /// [`KeyStorage::retrieve_value`].
    RetrieveValue,
    /// [`KeyStorage::delete`].
    Delete,
    /// [`KeyStorage::list_providers`].
    ListProviders,
    /// [`KeyStorage::clear_all`].
    ClearAll,
    /// [`KeyStorage::purge_expired`].
    PurgeExpired,
    /// [`KeyStorage::compare_and_swap`].
    CompareAndSwap,
    /// [`KeyStorage::scan`].
    Scan,
    /// [`KeyStorage::user_keys`].
    UserKeys,
    /// [`KeyStorage::store_check`].
    StoreCheck,
    /// [`KeyStorage::checks`].
    Checks,
}

impl Op {
    /// Every method, in the order of the trait.
    pub const ALL: [Op; 13] = [
        Op::Store,
        Op::StoreIfAbsent,
        Op::Retrieve,
        Op::RetrieveValue,
        Op::Delete,
        Op::ListProviders,
        Op::ClearAll,
        Op::PurgeExpired,
        Op::CompareAndSwap,
        Op::Scan,
        Op::UserKeys,
        Op::StoreCheck,
        Op::Checks,
    ];

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

#[derive(Debug, Default)]
struct Switch {
    failing: AtomicU16,
    apply_first: AtomicBool,
    injected: AtomicU64,
    plain: AtomicBool,
}

/// A store whose calls fail on demand with a retryable
/// [`StorageErrorKind::Unavailable`] error, as a server that went away
/// would.
///
/// By default a failing call does nothing. With
/// [`apply_then_fail`](Self::apply_then_fail) a failing call is made on the
/// inner store first and its answer replaced by the error, as when a
/// connection drops after the server acted but before it replied.
#[derive(Clone)]
pub struct FaultyStorage<S> {
    inner: S,
    switch: Arc<Switch>,
}

impl<S: KeyStorage> FaultyStorage<S> {
    /// `inner`, with no call failing yet.
    pub fn new(inner: S) -> Self {
        FaultyStorage {
            inner,
            switch: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Makes every call fail from now on.
    pub fn fail_all(&self) {
        self.fail(&Op::ALL);
    }

    /// Makes the calls of these methods fail from now on, in addition to
    /// those already failing.
    pub fn fail(&self, ops: &[Op]) {
        let bits = ops.iter().fold(0, |acc, op| acc | op.bit());
        self.switch.failing.fetch_or(bits, Ordering::SeqCst);
    }

    /// Makes every call succeed again.
    pub fn recover(&self) {
        self.switch.failing.store(0, Ordering::SeqCst);
    }

    /// Whether the store offers the inner store's [`FastTier`] capability
    /// (on by default; its steps fail with the methods named in
    /// [`FastTier` for `FaultyStorage`](#impl-FastTier-for-FaultyStorage<S>)).
    /// Off, a `TieredStorage` over it takes the path of fast stores
    /// without the capability.
    pub fn with_fast_tier(self, yes: bool) -> Self {
        self.switch.plain.store(!yes, Ordering::SeqCst);
        self
    }

    /// Whether a failing call reaches the inner store before failing.
    pub fn apply_then_fail(&self, yes: bool) {
        self.switch.apply_first.store(yes, Ordering::SeqCst);
    }

    /// How many calls have failed on purpose so far.
    pub fn injected(&self) -> u64 {
        self.switch.injected.load(Ordering::SeqCst)
    }

    async fn call<T>(
        &self,
        op: Op,
        run: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.switch.failing.load(Ordering::SeqCst) & op.bit() == 0 {
            return run.await;
        }
        if self.switch.apply_first.load(Ordering::SeqCst) {
            let _ = run.await;
        }
        self.switch.injected.fetch_add(1, Ordering::SeqCst);
        Err(StorageError::new("faulty", StorageErrorKind::Unavailable, "injected fault").into())
    }
}

impl<S: fmt::Debug> fmt::Debug for FaultyStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("inner", &self.inner)
            .field("failing", &self.switch.failing.load(Ordering::SeqCst))
            .finish()
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: KeyStorage> KeyStorage for FaultyStorage<S> {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        self.call(Op::Store, self.inner.store(key)).await
    }
    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        self.call(Op::StoreIfAbsent, self.inner.store_if_absent(key))
            .await
    }
    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        self.call(Op::Retrieve, self.inner.retrieve(user_id, provider))
            .await
    }
    async fn retrieve_value(&self, user_id: &str, provider: &str) -> Result<Option<Arc<[u8]>>> {
        self.call(
            Op::RetrieveValue,
            self.inner.retrieve_value(user_id, provider),
        )
        .await
    }
    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        self.call(Op::Delete, self.inner.delete(user_id, provider))
            .await
    }
    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.call(Op::ListProviders, self.inner.list_providers(user_id))
            .await
    }
    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        self.call(Op::ClearAll, self.inner.clear_all(user_id)).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.call(Op::PurgeExpired, self.inner.purge_expired())
            .await
    }
    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        self.call(
            Op::CompareAndSwap,
            self.inner.compare_and_swap(current, new),
        )
        .await
    }
    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.call(Op::Scan, self.inner.scan(cursor, limit)).await
    }
    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.call(Op::UserKeys, self.inner.user_keys(user_id)).await
    }
    async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
        self.call(
            Op::StoreCheck,
            self.inner.store_check(user_id, provider, check),
        )
        .await
    }
    async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.call(Op::Checks, self.inner.checks(user_id)).await
    }
    /// The inner store's capability, with its steps failing as the calls
    /// do, so that a wrapped Redis or memory store stays usable as the fast
    /// store of a `TieredStorage` (unless [`with_fast_tier`](Self::with_fast_tier)
    /// turned it off).
    fn as_fast_tier(&self) -> Option<&dyn FastTier> {
        if self.switch.plain.load(Ordering::SeqCst) {
            return None;
        }
        self.inner.as_fast_tier().map(|_| self as &dyn FastTier)
    }
}

impl<S: KeyStorage> FaultyStorage<S> {
    fn tier(&self) -> Result<&dyn FastTier> {
        self.inner.as_fast_tier().ok_or_else(|| {
            StorageError::new(
                "faulty",
                StorageErrorKind::Other,
                "the inner store has no fast-tier capability",
            )
            .into()
        })
    }
}

/// The steps of the inner store's capability; `lookup` fails with
/// [`Op::Retrieve`], `fill`, `hold` and `settle` with [`Op::Store`],
/// `hold_user` and `settle_user` with [`Op::ClearAll`].
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: KeyStorage> FastTier for FaultyStorage<S> {
    async fn lookup(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> Result<Lookup> {
        let tier = self.tier()?;
        self.call(Op::Retrieve, tier.lookup(user_id, provider, token, lease))
            .await
    }
    async fn fill(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        key: Option<&ApiKey>,
        ttl: Duration,
    ) -> Result<bool> {
        let tier = self.tier()?;
        self.call(Op::Store, tier.fill(user_id, provider, token, key, ttl))
            .await
    }
    async fn hold(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        hold: Duration,
    ) -> Result<()> {
        let tier = self.tier()?;
        self.call(Op::Store, tier.hold(user_id, provider, token, hold))
            .await
    }
    async fn settle(
        &self,
        user_id: &str,
        provider: &str,
        token: Option<&LeaseToken>,
        key: Option<&ApiKey>,
        ttl: Duration,
    ) -> Result<()> {
        let tier = self.tier()?;
        self.call(Op::Store, tier.settle(user_id, provider, token, key, ttl))
            .await
    }
    async fn hold_user(
        &self,
        user_id: &str,
        token: &LeaseToken,
        hold: Duration,
        ttl: Duration,
    ) -> Result<()> {
        let tier = self.tier()?;
        self.call(Op::ClearAll, tier.hold_user(user_id, token, hold, ttl))
            .await
    }
    async fn settle_user(
        &self,
        user_id: &str,
        token: Option<&LeaseToken>,
        ttl: Duration,
    ) -> Result<()> {
        let tier = self.tier()?;
        self.call(Op::ClearAll, tier.settle_user(user_id, token, ttl))
            .await
    }
}

/// A store that counts the calls made to it, per method.
#[derive(Clone)]
pub struct CountingStorage<S> {
    inner: S,
    counts: Arc<[AtomicU64; Op::ALL.len()]>,
}

impl<S: KeyStorage> CountingStorage<S> {
    /// `inner`, with every count at zero.
    pub fn new(inner: S) -> Self {
        CountingStorage {
            inner,
            counts: Arc::new(Default::default()),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How many calls of `op` were made.
    pub fn calls(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::SeqCst)
    }

    /// How many calls were made, of every method.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        for c in self.counts.iter() {
            c.store(0, Ordering::SeqCst);
        }
    }

    fn count(&self, op: Op) {
        self.counts[op as usize].fetch_add(1, Ordering::SeqCst);
    }
}

impl<S: fmt::Debug> fmt::Debug for CountingStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect();
        f.debug_struct("CountingStorage")
            .field("inner", &self.inner)
            .field("counts", &counts)
            .finish()
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: KeyStorage> KeyStorage for CountingStorage<S> {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        self.count(Op::Store);
        self.inner.store(key).await
    }
    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        self.count(Op::StoreIfAbsent);
        self.inner.store_if_absent(key).await
    }
    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        self.count(Op::Retrieve);
        self.inner.retrieve(user_id, provider).await
    }
    async fn retrieve_value(&self, user_id: &str, provider: &str) -> Result<Option<Arc<[u8]>>> {
        self.count(Op::RetrieveValue);
        self.inner.retrieve_value(user_id, provider).await
    }
    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        self.count(Op::Delete);
        self.inner.delete(user_id, provider).await
    }
    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.count(Op::ListProviders);
        self.inner.list_providers(user_id).await
    }
    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        self.count(Op::ClearAll);
        self.inner.clear_all(user_id).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.count(Op::PurgeExpired);
        self.inner.purge_expired().await
    }
    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        self.count(Op::CompareAndSwap);
        self.inner.compare_and_swap(current, new).await
    }
    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.count(Op::Scan);
        self.inner.scan(cursor, limit).await
    }
    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.count(Op::UserKeys);
        self.inner.user_keys(user_id).await
    }
    async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
        self.count(Op::StoreCheck);
        self.inner.store_check(user_id, provider, check).await
    }
    async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.count(Op::Checks);
        self.inner.checks(user_id).await
    }
    /// The inner store's; the leased fills are not counted.
    fn as_fast_tier(&self) -> Option<&dyn FastTier> {
        self.inner.as_fast_tier()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byok_memory::MemoryStorage;

    /// A wrapped store keeps the fast-tier capability of the store inside,
    /// and adds none to a store without it.
    #[tokio::test]
    async fn wrappers_keep_the_fast_tier_capability() {
        let memory = MemoryStorage::new();
        assert!(memory.as_fast_tier().is_some());
        let faulty = FaultyStorage::new(memory);
        assert!(faulty.as_fast_tier().is_some());
        let token = LeaseToken::generate();
        let lease = Duration::from_secs(30);
        let tier = faulty.as_fast_tier().unwrap();
        assert!(matches!(
            tier.lookup("u", "p", &token, lease).await,
            Ok(Lookup::Leased)
        ));
        faulty.fail(&[Op::Retrieve]);
        let tier = faulty.as_fast_tier().unwrap();
        let err = tier.lookup("u", "p", &token, lease).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(faulty.injected(), 1);
        faulty.recover();
        let plain = FaultyStorage::new(MemoryStorage::new()).with_fast_tier(false);
        assert!(plain.as_fast_tier().is_none());
        let counted = CountingStorage::new(faulty);
        assert!(counted.as_fast_tier().is_some());
        let both: Arc<dyn KeyStorage> = Arc::new(counted);
        assert!(both.as_fast_tier().is_some());

        let durable = byok_core::TieredStorage::new(
            Arc::new(MemoryStorage::new()),
            Arc::new(MemoryStorage::new()),
        );
        assert!(durable.as_fast_tier().is_none());
        assert!(FaultyStorage::new(durable).as_fast_tier().is_none());
    }
}
