//! In-memory storage for byok: [`MemoryStorage`].
//!
//! The backend for tests, single-process applications and session-scoped
//! keys. It is concurrent without a global lock (keys are sharded by user),
//! cheap to clone (clones share the same keys), and enforces expiry on every
//! read. `list_providers` and `clear_all` cost time proportional to that
//! user's keys, never to all keys.
//!
//! ```
//! use byok_core::{ApiKey, KeyStorage};
//! use byok_memory::MemoryStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> byok_core::Result<()> {
//! let store = MemoryStorage::new();
//! store.store(&ApiKey::new("alice", "openai", b"ciphertext".to_vec())?).await?;
//! assert_eq!(store.list_providers("alice").await?, ["openai"]);
//! assert!(store.retrieve("bob", "openai").await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! As the fast store of a `TieredStorage`, it keeps copies, fill leases
//! and holds apart from its keys, each with a lifetime (it implements
//! [`FastTier`](byok_core::FastTier)); `purge_expired` also drops those
//! that have ended.
//!
//! Nothing survives a restart of the process; keys are lost with it by
//! design. Use a SQL or Redis backend for keys that must last.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use byok_core::storage::check_same_slot;
use byok_core::{ApiKey, Cursor, KeyStorage, Result, ScanPage, key, validate};
use dashmap::DashMap;
use dashmap::mapref::entry::{Entry, VacantEntry};

mod fast_tier;

/// Keys of one user, sorted by provider.
///
/// A vector rather than a map: users hold a handful of keys (often one, a
/// session's), a binary search over a few entries is as fast as a map, and
/// it costs one allocation of exactly the keys held. Each `ApiKey` shares
/// its buffers, so reading one copies no bytes.
///
/// The second vector holds the kept checks (see
/// [`KeyStorage::store_check`]), by provider, sorted; a check leaves with
/// its key, under the same lock.
#[derive(Default)]
struct UserKeys(Vec<ApiKey>, Vec<(Arc<str>, Arc<str>)>);

impl UserKeys {
    fn find(&self, provider: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|k| k.provider().cmp(provider))
    }

    fn get(&self, provider: &str) -> Option<&ApiKey> {
        self.find(provider).ok().map(|i| &self.0[i])
    }

    fn put(&mut self, key: &ApiKey) {
        match self.find(key.provider()) {
            Ok(i) => self.0[i] = key.clone(),
            Err(i) => {
                // Grow by one: most users keep one to four keys.
                self.0.reserve_exact(1);
                self.0.insert(i, key.clone());
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Drops the checks whose key is gone.
    fn drop_orphan_checks(&mut self) {
        let keys = &self.0;
        self.1
            .retain(|(p, _)| keys.binary_search_by(|k| k.provider().cmp(p)).is_ok());
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `key` is live at `now`, reading the clock only for keys that
/// expire at all.
fn is_live(key: &ApiKey, now: &mut Option<chrono::DateTime<chrono::Utc>>) -> bool {
    match key.expires_at() {
        None => true,
        Some(at) => at > *now.get_or_insert_with(chrono::Utc::now),
    }
}

/// In-memory [`KeyStorage`].
///
/// Clones share the same keys. See the [crate docs](crate).
#[derive(Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The map's key shares its buffer with the `user_id` of the user's
    /// first key, so each id is held once.
    users: DashMap<Arc<str>, UserKeys>,
    /// Every user id of `users`, in order, so that a `scan` page starts
    /// where the last one ended instead of visiting every user.
    ///
    /// Changed only when a user comes or goes, and then while that user's
    /// shard of `users` is locked for writing, so that a user in `users`
    /// is in `order` for as long as it holds keys. Lock order: a shard of
    /// `users`, then `order`; `scan` never holds `order` while it locks a
    /// shard.
    order: RwLock<BTreeSet<Arc<str>>>,
    /// Copies, leases and holds of a `TieredStorage` that uses this store
    /// as its fast store (see [`FastTier`](byok_core::FastTier)).
    fills: fast_tier::Fills,
}

impl MemoryStorage {
    /// An empty store.
    ///
    /// It purges nothing by itself: a [`Byok`](byok_core::Byok) manager over
    /// it runs the purge (see `ByokConfig::auto_cleanup`), and without one
    /// [`byok_core::store::purge_every`] does.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys are stored, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.inner.users.iter().map(|u| u.len()).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.inner.users.is_empty()
    }
}

/// The operator's side: no schema, exact counts without a walk, and
/// `destroy` empties the store (fast-store copies, leases and holds
/// included).
#[async_trait]
impl byok_core::StoreAdmin for MemoryStorage {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn count_expired(&self) -> Result<Option<u64>> {
        Ok(Some(self.inner.tally(true)))
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.inner.tally(false))
    }

    async fn destroy(&self) -> Result<()> {
        self.inner.users.retain(|user_id, _| {
            self.inner.forget(user_id);
            false
        });
        self.inner.fills.clear();
        Ok(())
    }
}

/// How many user ids `scan` copies out of the order at a time.
const SCAN_CHUNK: usize = 256;

impl Inner {
    /// How many stored keys have expired (`expired`) or not.
    fn tally(&self, expired: bool) -> u64 {
        let now = key::now();
        self.users
            .iter()
            .map(|u| {
                u.0.iter()
                    .filter(|k| k.is_expired_at(now) == expired)
                    .count() as u64
            })
            .sum()
    }

    /// What `each` makes of every live key of `user_id`, in provider order.
    fn live_keys<T>(&self, user_id: &str, each: impl Fn(&ApiKey) -> T) -> Result<Vec<T>> {
        validate::stored_user_id(user_id)?;
        let Some(keys) = self.users.get(user_id) else {
            return Ok(Vec::new());
        };
        let mut now = None;
        Ok(keys
            .0
            .iter()
            .filter(|k| is_live(k, &mut now))
            .map(each)
            .collect())
    }

    fn purge(&self, now: chrono::DateTime<chrono::Utc>) -> u64 {
        let mut purged = 0u64;
        self.users.retain(|user_id, keys| {
            let before = keys.len();
            keys.0.retain(|k| !k.is_expired_at(now));
            purged += (before - keys.len()) as u64;
            keys.drop_orphan_checks();
            let keep = !keys.is_empty();
            if !keep {
                self.forget(user_id);
            }
            keep
        });
        purged
    }

    /// Makes a user's entry with its first key, `k`. The vacant entry
    /// keeps the user's shard locked for writing until the entry is made,
    /// so the user is in the order before anyone can see its key.
    fn first_key(&self, user: VacantEntry<'_, Arc<str>, UserKeys>, k: &ApiKey) {
        self.order
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(k.user_id_shared());
        user.insert(UserKeys::default()).put(k);
    }

    /// Removes `user_id` from the order; called with its shard locked.
    fn forget(&self, user_id: &str) {
        self.order
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(user_id);
    }

    /// Up to [`SCAN_CHUNK`] user ids from `from` on, in order.
    fn users_from(&self, from: Bound<&str>) -> Vec<Arc<str>> {
        self.order
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .range::<str, _>((from, Bound::Unbounded))
            .take(SCAN_CHUNK)
            .cloned()
            .collect()
    }
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("users", &self.inner.users.len())
            .finish()
    }
}

#[async_trait]
impl KeyStorage for MemoryStorage {
    async fn store(&self, k: &ApiKey) -> Result<()> {
        // The user usually exists: look it up by reference first, and make
        // a map key only for a new user.
        if let Some(mut keys) = self.inner.users.get_mut(k.user_id()) {
            keys.put(k);
            return Ok(());
        }
        match self.inner.users.entry(k.user_id_shared()) {
            Entry::Occupied(mut user) => user.get_mut().put(k),
            Entry::Vacant(user) => self.inner.first_key(user, k),
        }
        Ok(())
    }

    /// The check and the write under the user's shard lock, held for
    /// writing: atomic for the slot.
    async fn store_if_absent(&self, k: &ApiKey) -> Result<bool> {
        let live = |keys: &UserKeys| {
            keys.get(k.provider())
                .is_some_and(|s| is_live(s, &mut None))
        };
        if let Some(mut keys) = self.inner.users.get_mut(k.user_id()) {
            if live(&keys) {
                return Ok(false);
            }
            keys.put(k);
            return Ok(true);
        }
        match self.inner.users.entry(k.user_id_shared()) {
            Entry::Occupied(mut user) => {
                if live(user.get()) {
                    return Ok(false);
                }
                user.get_mut().put(k);
            }
            Entry::Vacant(user) => self.inner.first_key(user, k),
        }
        Ok(true)
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        if let Some(keys) = self.inner.users.get(user_id)
            && let Some(k) = keys.get(provider)
        {
            // Found, so both ids equal stored, valid ones: no validation.
            return Ok(is_live(k, &mut None).then(|| k.clone()));
        }
        // Not found: invalid input is still an error, not a miss.
        validate::stored_slot(user_id, provider)?;
        Ok(None)
    }

    async fn retrieve_value(&self, user_id: &str, provider: &str) -> Result<Option<Arc<[u8]>>> {
        if let Some(keys) = self.inner.users.get(user_id)
            && let Some(k) = keys.get(provider)
        {
            return Ok(is_live(k, &mut None).then(|| k.encrypted_value_shared()));
        }
        validate::stored_slot(user_id, provider)?;
        Ok(None)
    }

    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        // Sorted by provider already. Only live keys, as `retrieve` and
        // `list_providers` of this store see them.
        self.inner.live_keys(user_id, ApiKey::clone)
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        validate::stored_slot(user_id, provider)?;
        let removed = match self.inner.users.get_mut(user_id) {
            Some(mut keys) => match keys.find(provider) {
                Ok(i) => {
                    keys.0.remove(i);
                    keys.drop_orphan_checks();
                    true
                }
                Err(_) => false,
            },
            None => return Ok(false),
        };
        self.inner.users.remove_if(user_id, |_, keys| {
            let empty = keys.is_empty();
            if empty {
                self.inner.forget(user_id);
            }
            empty
        });
        Ok(removed)
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        self.inner.live_keys(user_id, |k| k.provider().to_owned())
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        validate::stored_user_id(user_id)?;
        Ok(self
            .inner
            .users
            .remove_if(user_id, |_, _| {
                self.inner.forget(user_id);
                true
            })
            .map_or(0, |(_, keys)| keys.len() as u64))
    }

    async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
        validate::stored_slot(user_id, provider)?;
        let Some(mut keys) = self.inner.users.get_mut(user_id) else {
            return Ok(false);
        };
        if keys.find(provider).is_err() {
            return Ok(false);
        }
        let checks = &mut keys.1;
        match checks.binary_search_by(|(p, _)| (**p).cmp(provider)) {
            Ok(i) => checks[i].1 = Arc::from(check),
            Err(i) => checks.insert(i, (Arc::from(provider), Arc::from(check))),
        }
        Ok(true)
    }

    async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        validate::stored_user_id(user_id)?;
        Ok(self.inner.users.get(user_id).map_or_else(Vec::new, |keys| {
            keys.1
                .iter()
                .map(|(p, c)| ((**p).to_owned(), (**c).to_owned()))
                .collect()
        }))
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.inner.fills.sweep();
        Ok(self.inner.purge(chrono::Utc::now()))
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        check_same_slot(current, new)?;
        let Some(mut keys) = self.inner.users.get_mut(current.user_id()) else {
            return Ok(false);
        };
        let now = chrono::Utc::now();
        match keys
            .find(current.provider())
            .ok()
            .and_then(|i| keys.0.get_mut(i))
        {
            Some(stored)
                if !stored.is_expired_at(now)
                    && stored.encrypted_value() == current.encrypted_value() =>
            {
                *stored = new.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        validate::page_size(limit)?;
        let after = cursor.map(Cursor::slot).transpose()?;
        // A slot no key can have is refused as the other backends refuse it.
        if let Some((user_id, provider)) = after {
            validate::stored_slot(user_id, provider).map_err(|_| {
                byok_core::InvalidInput::new(
                    byok_core::error::Field::Cursor,
                    byok_core::error::Problem::Other("does not name a valid (user, provider) slot"),
                )
            })?;
        }
        let now = chrono::Utc::now();
        // Users in order from the cursor's user on, a chunk of ids at a
        // time, each user's keys in provider order: a page costs what it
        // returns, however many users the store holds.
        let mut keys = Vec::with_capacity(limit.min(64));
        let mut last_seen: Option<Arc<str>> = None;
        loop {
            let from = match &last_seen {
                Some(u) => Bound::Excluded(&**u),
                None => after.map_or(Bound::Unbounded, |(u, _)| Bound::Included(u)),
            };
            let chunk = self.inner.users_from(from);
            for user_id in &chunk {
                let Some(user) = self.inner.users.get(&**user_id) else {
                    continue; // removed since the chunk was read
                };
                for k in &user.0 {
                    let slot = (&**user_id, k.provider());
                    if after.is_some_and(|a| slot <= a) || k.is_expired_at(now) {
                        continue;
                    }
                    keys.push(k.clone());
                    if keys.len() == limit {
                        let next = Some(Cursor::after_slot(user_id, k.provider()));
                        return Ok(ScanPage { keys, next });
                    }
                }
            }
            match chunk.last() {
                Some(last) if chunk.len() == SCAN_CHUNK => last_seen = Some(Arc::clone(last)),
                _ => return Ok(ScanPage { keys, next: None }),
            }
        }
    }

    fn as_fast_tier(&self) -> Option<&dyn byok_core::FastTier> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    byok_testkit::conformance_tests!(MemoryStorage::new());
    byok_testkit::admin_conformance_tests!(MemoryStorage::new());

    #[tokio::test]
    async fn purge_counts_exactly_and_frees_users() {
        let store = MemoryStorage::new();
        let past = Some(Utc::now() - chrono::Duration::seconds(5));
        for p in ["a", "b", "c"] {
            store
                .store(&ApiKey::new("u1", p, vec![1]).unwrap().with_expires_at(past))
                .await
                .unwrap();
        }
        store
            .store(&ApiKey::new("u2", "a", vec![1]).unwrap())
            .await
            .unwrap();
        assert_eq!(store.len(), 4);
        assert_eq!(store.purge_expired().await.unwrap(), 3);
        assert_eq!(store.len(), 1);
        assert_eq!(store.inner.users.len(), 1, "empty users are dropped");
    }

    #[tokio::test]
    async fn reads_copy_nothing_and_ids_are_held_once() {
        let store = MemoryStorage::new();
        let k = ApiKey::new("u", "p", vec![1; 64]).unwrap();
        store.store(&k).await.unwrap();
        let got = store.retrieve("u", "p").await.unwrap().unwrap();
        assert_eq!(got, k);
        assert_eq!(got.encrypted_value().as_ptr(), k.encrypted_value().as_ptr());
        let entry = store.inner.users.iter().next().unwrap();
        assert!(Arc::ptr_eq(entry.key(), &k.user_id_shared()));
        drop(entry);
        // A miss still rejects bad input with a typed error.
        assert!(store.retrieve("", "p").await.is_err());
        assert!(store.retrieve("u", "bad\u{7}").await.is_err());
        assert!(store.retrieve("u", "other").await.unwrap().is_none());
    }

    /// Stores a key for (user, provider) that expired a second ago.
    async fn store_expired(store: &MemoryStorage, user: &str, provider: &str) {
        let past = Some(Utc::now() - chrono::Duration::seconds(1));
        let key = ApiKey::new(user, provider, vec![1])
            .unwrap()
            .with_expires_at(past);
        store.store(&key).await.unwrap();
    }

    #[tokio::test]
    async fn user_keys_is_one_lookup_sorted_by_provider() {
        let store = MemoryStorage::new();
        for p in ["openai", "anthropic", "mistral"] {
            store
                .store(&ApiKey::new("u", p, vec![1]).unwrap())
                .await
                .unwrap();
        }
        store_expired(&store, "u", "groq").await;
        let keys = store.user_keys("u").await.unwrap();
        let providers: Vec<&str> = keys.iter().map(ApiKey::provider).collect();
        assert_eq!(
            providers,
            ["anthropic", "mistral", "openai"],
            "live keys only"
        );
        assert!(store.user_keys("").await.is_err());
    }

    /// Every slot a full walk with pages of `limit` returns, in order.
    async fn walk(store: &MemoryStorage, limit: usize) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.scan(cursor.as_ref(), limit).await.unwrap();
            assert!(page.keys.len() <= limit);
            seen.extend(
                page.keys
                    .iter()
                    .map(|k| (k.user_id().to_owned(), k.provider().to_owned())),
            );
            match page.next {
                Some(next) => cursor = Some(next),
                None => return seen,
            }
        }
    }

    #[tokio::test]
    async fn scan_walks_many_users_in_order_across_chunks() {
        let store = MemoryStorage::new();
        let past = Some(Utc::now() - chrono::Duration::seconds(5));
        let mut live = Vec::new();
        // More users than one chunk of the order holds, some with several
        // keys, some with only expired ones.
        for u in 0..(3 * SCAN_CHUNK + 17) {
            let user = format!("user-{u:05}");
            for p in 0..(u % 4) {
                let provider = format!("p{p}");
                let expired = (u + p) % 5 == 0;
                let key = ApiKey::new(user.as_str(), provider.as_str(), vec![1]).unwrap();
                let key = if expired {
                    key.with_expires_at(past)
                } else {
                    key
                };
                store.store(&key).await.unwrap();
                if !expired {
                    live.push((user.clone(), provider));
                }
            }
        }
        live.sort();
        for limit in [1, 3, 64, SCAN_CHUNK, 10_000] {
            assert_eq!(walk(&store, limit).await, live, "pages of {limit}");
        }
    }

    #[tokio::test]
    async fn the_order_follows_every_way_users_come_and_go() {
        let store = MemoryStorage::new();
        let past = Some(Utc::now() - chrono::Duration::seconds(5));
        for u in ["a", "b", "c", "d"] {
            store
                .store(&ApiKey::new(u, "p", vec![1]).unwrap())
                .await
                .unwrap();
        }
        store
            .store(
                &ApiKey::new("e", "p", vec![1])
                    .unwrap()
                    .with_expires_at(past),
            )
            .await
            .unwrap();
        let order = |s: &MemoryStorage| -> Vec<String> {
            s.inner
                .order
                .read()
                .unwrap()
                .iter()
                .map(|u| u.to_string())
                .collect()
        };
        assert_eq!(order(&store), ["a", "b", "c", "d", "e"]);
        assert!(store.delete("a", "p").await.unwrap());
        assert_eq!(store.clear_all("b").await.unwrap(), 1);
        assert_eq!(store.purge_expired().await.unwrap(), 1);
        assert_eq!(order(&store), ["c", "d"]);
        // A user that comes back is walked again.
        store
            .store(&ApiKey::new("a", "q", vec![1]).unwrap())
            .await
            .unwrap();
        assert_eq!(order(&store), ["a", "c", "d"]);
        let all = walk(&store, 2).await;
        assert_eq!(all.len(), 3);
        assert_eq!(store.inner.users.len(), order(&store).len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_walk_sees_every_lasting_key_once_while_users_come_and_go() {
        let store = MemoryStorage::new();
        let mut lasting = Vec::new();
        for u in 0..2_000 {
            let user = format!("stay-{u:05}");
            store
                .store(&ApiKey::new(user.as_str(), "p", vec![1]).unwrap())
                .await
                .unwrap();
            lasting.push((user, "p".to_owned()));
        }
        let churn = {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..20 {
                    for u in 0..500 {
                        // Users sorting between, before and after the
                        // lasting ones.
                        for prefix in ["a", "stay-0", "z"] {
                            let user = format!("{prefix}-{round}-{u}");
                            store
                                .store(&ApiKey::new(user.as_str(), "p", vec![2]).unwrap())
                                .await
                                .unwrap();
                            if u % 2 == 0 {
                                store.delete(&user, "p").await.unwrap();
                            } else {
                                store.clear_all(&user).await.unwrap();
                            }
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        for _ in 0..5 {
            let seen: Vec<_> = walk(&store, 37)
                .await
                .into_iter()
                .filter(|(u, _)| u.starts_with("stay-") && !u.starts_with("stay-0-"))
                .collect();
            assert_eq!(seen, lasting);
        }
        churn.await.unwrap();
        assert_eq!(store.len(), 2_000);
        assert_eq!(store.inner.order.read().unwrap().len(), 2_000);
    }

    #[tokio::test]
    async fn clones_share_keys_and_delete_frees_users() {
        let a = MemoryStorage::new();
        let b = a.clone();
        a.store(&ApiKey::new("u", "p", vec![1]).unwrap())
            .await
            .unwrap();
        assert!(b.retrieve("u", "p").await.unwrap().is_some());
        assert!(b.delete("u", "p").await.unwrap());
        assert!(a.is_empty());
    }

    /// What the store's own sweeper did, the one purge loop does now.
    #[tokio::test(start_paused = true)]
    async fn purge_every_purges_the_store() {
        let store = MemoryStorage::new();
        let purge = tokio::spawn(byok_core::store::purge_every(
            Arc::new(store.clone()),
            std::time::Duration::from_secs(10),
        ));
        store_expired(&store, "u", "p").await;
        store
            .store(&ApiKey::new("v", "p", vec![1]).unwrap())
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        tokio::task::yield_now().await;
        assert_eq!(store.len(), 1, "the loop purged the expired key alone");
        purge.abort();
    }

    #[tokio::test]
    async fn admin_counts_exactly_and_destroy_empties_the_store() {
        use byok_core::store::{SchemaStatus, StoreAdmin};
        let store = MemoryStorage::new();
        let past = Some(Utc::now() - chrono::Duration::seconds(5));
        for (u, p, expired) in [
            ("a", "x", false),
            ("a", "y", true),
            ("b", "x", false),
            ("c", "z", true),
        ] {
            let key = ApiKey::new(u, p, vec![1]).unwrap();
            let key = if expired {
                key.with_expires_at(past)
            } else {
                key
            };
            store.store(&key).await.unwrap();
        }
        assert_eq!(store.backend(), "memory");
        assert_eq!(
            store.schema_status().await.unwrap(),
            SchemaStatus::NotApplicable
        );
        assert_eq!(store.count().await.unwrap(), 2);
        assert_eq!(store.count_expired().await.unwrap(), Some(2));
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.keys, 2);
        assert_eq!(stats.expired, Some(2));
        assert_eq!(stats.by_provider.get("x"), Some(&2));
        store.migrate().await.unwrap();
        assert_eq!(store.len(), 4, "migrate changes nothing");
        store.destroy().await.unwrap();
        assert!(store.is_empty());
        assert!(store.inner.order.read().unwrap().is_empty());
        assert_eq!(store.count_expired().await.unwrap(), Some(0));
        // Still usable afterwards.
        store
            .store(&ApiKey::new("a", "x", vec![1]).unwrap())
            .await
            .unwrap();
        assert_eq!(store.count().await.unwrap(), 1);
    }
}
