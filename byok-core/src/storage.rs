//! The [`KeyStorage`] trait that every backend implements.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Field, InvalidInput, Problem, Result};
use crate::key::ApiKey;
use crate::tiered::FastTier;

/// Where a key store keeps [`ApiKey`]s: one key per (user, provider) slot.
///
/// The method names are those of the Python library's `KeyStorage`
/// protocol. Implementations hold only ciphertext; encryption happens in
/// [`Byok`](crate::Byok) before a key reaches the store.
///
/// # Contract
///
/// Every backend must, and the `byok-testkit` conformance suite checks that
/// it does:
///
/// * reject user ids and providers that break the rules of
///   [`validate`](crate::validate) with [`ByokError::InvalidInput`](crate::ByokError::InvalidInput);
/// * compare ids byte for byte, and keep any legal id apart from any other,
///   whatever characters they hold;
/// * treat a key as absent from its `expires_at` instant on, in `retrieve`,
///   `list_providers`, `compare_and_swap` and `scan`;
/// * keep timestamps to the millisecond and the ciphertext byte for byte;
/// * make `store`, `store_if_absent` and `compare_and_swap` atomic for
///   their slot.
///
/// # Implementing a backend
///
/// See the guide in the `byok-testkit` crate, which builds a small backend
/// from scratch and runs the conformance suite on it.
#[async_trait]
pub trait KeyStorage: fmt::Debug + Send + Sync + 'static {
    /// Inserts `key`, or replaces the key of the same (user, provider) slot,
    /// value, hint and expiry included.
    async fn store(&self, key: &ApiKey) -> Result<()>;

    /// Stores `key` only if its slot holds no key, or only an expired one;
    /// returns whether it stored. A live key is left exactly as it was.
    ///
    /// Backends make this atomic for the slot: of concurrent calls for one
    /// empty slot exactly one returns `true`, and no `store` that lands
    /// between the check and the write is overwritten. This is how a
    /// caller tells "created" from "replaced" across processes, and how
    /// [`copy_into`](KeyStorageExt::copy_into) fills empty slots without
    /// overwriting a key written meanwhile.
    ///
    /// The default is **not** atomic: a [`retrieve`](KeyStorage::retrieve)
    /// and, when it finds nothing, a [`store`](KeyStorage::store). Between
    /// the two another writer may store a key, which is then replaced, and
    /// two racing calls may both return `true` (the later write wins). It
    /// never replaces a key that was live when it looked. Every backend of
    /// byok overrides it; the conformance suite checks that a backend does
    /// (`store_if_absent_is_atomic`).
    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        if self
            .retrieve(key.user_id(), key.provider())
            .await?
            .is_some()
        {
            return Ok(false);
        }
        self.store(key).await?;
        Ok(true)
    }

    /// The key of the slot; `None` when there is none or it has expired.
    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>>;

    /// The encrypted value of the slot's key alone; `None` when there is
    /// none or it has expired. This is what
    /// [`Byok::get_key`](crate::Byok::get_key) reads.
    ///
    /// Same rules as [`retrieve`](KeyStorage::retrieve), same result as
    /// `retrieve(..).map(|k| k.encrypted_value())`. The default calls
    /// `retrieve`; backends override it where reading one column is
    /// cheaper than reading the whole key (the SQL backends do).
    async fn retrieve_value(&self, user_id: &str, provider: &str) -> Result<Option<Arc<[u8]>>> {
        Ok(self
            .retrieve(user_id, provider)
            .await?
            .map(|k| k.encrypted_value_shared()))
    }

    /// Removes the key of the slot; returns whether one was there (an
    /// expired key that was still stored counts). Deleting twice is fine.
    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool>;

    /// The providers this user has unexpired keys for, sorted (by bytes)
    /// and unique.
    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>>;

    /// Removes every key of this user (and no one else's); returns how many
    /// were removed.
    async fn clear_all(&self, user_id: &str) -> Result<u64>;

    /// Removes every expired key of every user; returns how many.
    async fn purge_expired(&self) -> Result<u64>;

    /// Replaces the stored key with `new` only if the stored key is
    /// unexpired and its ciphertext is still `current`'s, atomically;
    /// returns whether it did.
    ///
    /// `current` and `new` must name the same slot. Master-key rotation uses
    /// this so that it never overwrites a key that a user set a moment ago.
    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool>;

    /// One page of a walk over every unexpired key of every user.
    ///
    /// Start with `cursor: None` and pass each page's [`ScanPage::next`] to
    /// the next call until it is `None`. A page holds at most `limit` keys
    /// (1 to [`MAX_PAGE_SIZE`](crate::validate::MAX_PAGE_SIZE)); it may hold
    /// fewer, even none, before the walk ends. Every key present for the
    /// whole walk is returned exactly once; keys written or removed during
    /// the walk may or may not be. Cursors can be saved and used later, so
    /// a walk can resume after a restart.
    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage>;

    /// Every key of this user, sorted by provider (by bytes), in as few
    /// round trips as the backend allows.
    ///
    /// Keys that have expired but are not purged yet may be included, each
    /// with its `expires_at`, so that a summary can show them as expired;
    /// callers that want only live keys check [`ApiKey::is_expired`].
    ///
    /// The default makes one [`list_providers`](KeyStorage::list_providers)
    /// call and one [`retrieve`](KeyStorage::retrieve) per provider, and so
    /// returns only unexpired keys; backends override it with one read.
    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        let providers = self.list_providers(user_id).await?;
        let mut keys = Vec::with_capacity(providers.len());
        for provider in providers {
            if let Some(key) = self.retrieve(user_id, &provider).await? {
                keys.push(key);
            }
        }
        Ok(keys)
    }
    /// Keeps `check`, the text of a [`CheckRecord`](crate::CheckRecord)
    /// made by [`CheckRecord::encode`](crate::CheckRecord::encode), with the
    /// slot's key, replacing the check kept before; returns whether the
    /// slot holds a key (expired or not) to keep it with. Without a key,
    /// nothing is kept.
    ///
    /// The text is opaque to the store and at most
    /// [`MAX_ENCODED_LEN`](crate::check_record::MAX_ENCODED_LEN) bytes. A
    /// store need not clear it when the key is replaced (the record names
    /// its key, and a record for another key is never shown), but
    /// [`delete`](KeyStorage::delete), [`clear_all`](KeyStorage::clear_all)
    /// and [`purge_expired`](KeyStorage::purge_expired) remove it with its
    /// key, so that no check outlives its slot.
    ///
    /// The default keeps nothing and returns `false`; every backend of byok
    /// overrides it, and the conformance suite checks that a backend does.
    async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
        let _ = (user_id, provider, check);
        Ok(false)
    }

    /// The checks kept for this user's keys, as (provider, text) pairs
    /// sorted by provider (by bytes). The default is none.
    async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let _ = user_id;
        Ok(Vec::new())
    }

    /// This store's [`FastTier`] capability, if it has one: leased fills
    /// that let a [`TieredStorage`](crate::TieredStorage) use it as a fast
    /// store shared by several processes. The default is `None`; wrappers
    /// that forward every call to an inner store forward this too.
    fn as_fast_tier(&self) -> Option<&dyn FastTier> {
        None
    }
}

/// A position in a [`KeyStorage::scan`] walk: an opaque token of the backend
/// that made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// A cursor from its token, as a backend made it or as it was saved.
    pub fn new(token: impl Into<String>) -> Self {
        Cursor(token.into())
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor just after the slot (user, provider), for backends that walk
    /// in (user id, provider) order. The encoding is unambiguous for any
    /// ids.
    pub fn after_slot(user_id: &str, provider: &str) -> Self {
        Cursor(format!("{}:{user_id}{provider}", user_id.len()))
    }

    /// The slot of a cursor made by [`Cursor::after_slot`].
    pub fn slot(&self) -> Result<(&str, &str), InvalidInput> {
        let bad = || InvalidInput::new(Field::Cursor, Problem::Other("is not a slot cursor"));
        let (len, rest) = self.0.split_once(':').ok_or_else(bad)?;
        let len: usize = len.parse().map_err(|_| bad())?;
        if !rest.is_char_boundary(len) || len > rest.len() {
            return Err(bad());
        }
        Ok(rest.split_at(len))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One page of a [`KeyStorage::scan`] walk.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    /// The keys of this page.
    pub keys: Vec<ApiKey>,
    /// Where the next page starts; `None` when the walk is over.
    pub next: Option<Cursor>,
}

/// Implements [`KeyStorage`] for a wrapper by forwarding every method,
/// [`as_fast_tier`](KeyStorage::as_fast_tier) included, to one field.
///
/// A wrapper that changes some methods writes its impl by hand instead,
/// under `#[deny(clippy::missing_trait_methods)]` so that a method added
/// to the trait later cannot be left to its default by mistake.
///
/// ```
/// use byok_core::{forward_key_storage, KeyStorage};
/// # use byok_memory::MemoryStorage;
///
/// #[derive(Debug)]
/// struct Named {
///     inner: MemoryStorage,
///     name: &'static str,
/// }
/// forward_key_storage!(Named, inner);
/// ```
#[macro_export]
macro_rules! forward_key_storage {
    ($ty:ty, $field:tt) => {
        $crate::forward_key_storage!(@impl [] $ty, (self) => self.$field);
    };
    (@impl [$($gen:tt)*] $ty:ty, ($this:ident) => $inner:expr) => {
        #[deny(clippy::missing_trait_methods)]
        #[$crate::async_trait]
        impl<$($gen)*> $crate::KeyStorage for $ty {
            async fn store(&$this, key: &$crate::ApiKey) -> $crate::Result<()> {
                $inner.store(key).await
            }
            async fn store_if_absent(&$this, key: &$crate::ApiKey) -> $crate::Result<bool> {
                $inner.store_if_absent(key).await
            }
            async fn retrieve(&$this, user_id: &str, provider: &str) -> $crate::Result<Option<$crate::ApiKey>> {
                $inner.retrieve(user_id, provider).await
            }
            async fn retrieve_value(&$this, user_id: &str, provider: &str) -> $crate::Result<Option<::std::sync::Arc<[u8]>>> {
                $inner.retrieve_value(user_id, provider).await
            }
            async fn delete(&$this, user_id: &str, provider: &str) -> $crate::Result<bool> {
                $inner.delete(user_id, provider).await
            }
            async fn list_providers(&$this, user_id: &str) -> $crate::Result<Vec<String>> {
                $inner.list_providers(user_id).await
            }
            async fn clear_all(&$this, user_id: &str) -> $crate::Result<u64> {
                $inner.clear_all(user_id).await
            }
            async fn purge_expired(&$this) -> $crate::Result<u64> {
                $inner.purge_expired().await
            }
            async fn compare_and_swap(&$this, current: &$crate::ApiKey, new: &$crate::ApiKey) -> $crate::Result<bool> {
                $inner.compare_and_swap(current, new).await
            }
            async fn scan(&$this, cursor: Option<&$crate::Cursor>, limit: usize) -> $crate::Result<$crate::ScanPage> {
                $inner.scan(cursor, limit).await
            }
            async fn user_keys(&$this, user_id: &str) -> $crate::Result<Vec<$crate::ApiKey>> {
                $inner.user_keys(user_id).await
            }
            async fn store_check(&$this, user_id: &str, provider: &str, check: &str) -> $crate::Result<bool> {
                $inner.store_check(user_id, provider, check).await
            }
            async fn checks(&$this, user_id: &str) -> $crate::Result<Vec<(String, String)>> {
                $inner.checks(user_id).await
            }
            fn as_fast_tier(&$this) -> Option<&dyn $crate::FastTier> {
                $inner.as_fast_tier()
            }
        }
    };
}

forward_key_storage!(@impl [T: KeyStorage + ?Sized] Arc<T>, (self) => (**self));
forward_key_storage!(@impl [T: KeyStorage + ?Sized] Box<T>, (self) => (**self));

/// Conveniences over any [`KeyStorage`]; implemented for every store, never
/// by hand.
#[async_trait]
pub trait KeyStorageExt: KeyStorage {
    /// Copies every unexpired key into `target`, page by page. This is how
    /// keys move between backends: the ciphertexts are copied as they are.
    ///
    /// A target key is never replaced silently: where the target holds a
    /// different key for a slot, `options.on_conflict` decides and the
    /// [`CopyReport`](crate::copy::CopyReport) lists the conflict (user,
    /// provider, both master key ids, both dates). With
    /// [`CopyOptions::verify_with`](crate::copy::CopyOptions::verify_with),
    /// nothing is written unless every key already in the target decrypts
    /// under the keyring, and a source key that does not is not copied.
    /// A key written into the target while the copy runs is never
    /// replaced: a slot that was empty when the copy read it is filled
    /// with [`store_if_absent`](KeyStorage::store_if_absent), and a key
    /// found there then is kept and reported as
    /// [`Resolution::ChangedDuringCopy`](crate::copy::Resolution::ChangedDuringCopy).
    /// On a custom target that keeps the default, non-atomic
    /// `store_if_absent`, a key written in the instant between its check
    /// and its write may still be replaced.
    async fn copy_into(
        &self,
        target: &dyn KeyStorage,
        options: &crate::copy::CopyOptions,
    ) -> Result<crate::copy::CopyReport> {
        crate::copy::copy_into(self, target, options).await
    }

    /// Every unexpired key of the store, as a stream of pages of
    /// `page_size` keys; see [`store::keys`](crate::store::keys).
    ///
    /// ```
    /// use futures_util::TryStreamExt;
    /// use byok_core::KeyStorageExt;
    /// # use byok_memory::MemoryStorage;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> byok_core::Result<()> {
    /// let store = MemoryStorage::new();
    /// let keys: Vec<_> = store.keys(100).try_collect().await?;
    /// assert!(keys.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    fn keys(&self, page_size: usize) -> crate::store::BoxStream<'_, Result<ApiKey>>
    where
        Self: Sized,
    {
        crate::store::keys(self, page_size)
    }

    /// The pages of a walk that starts at `from`, each with the cursor
    /// after it, so that a long walk (a rotation, a copy) can save where
    /// it is and resume; see [`store::pages`](crate::store::pages).
    fn pages(
        &self,
        from: Option<Cursor>,
        page_size: usize,
    ) -> crate::store::BoxStream<'_, Result<ScanPage>>
    where
        Self: Sized,
    {
        crate::store::pages(self, from, page_size)
    }

    /// Whether an unexpired key is stored for the slot.
    async fn contains(&self, user_id: &str, provider: &str) -> Result<bool> {
        Ok(self.retrieve(user_id, provider).await?.is_some())
    }
}

impl<T: KeyStorage + ?Sized> KeyStorageExt for T {}

/// Checks the arguments of `compare_and_swap`: both keys name the same slot.
pub fn check_same_slot(current: &ApiKey, new: &ApiKey) -> Result<(), InvalidInput> {
    if current.user_id() != new.user_id() || current.provider() != new.provider() {
        return Err(InvalidInput::new(
            Field::KeyPair,
            Problem::Other("current and new keys of compare-and-swap name different slots"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_cursor_round_trips_any_ids() {
        for (u, p) in [
            ("a:b", "c"),
            ("a", "b:c"),
            ("3:x", "y"),
            ("日本", ":"),
            ("", ""),
        ] {
            let c = Cursor::after_slot(u, p);
            assert_eq!(c.slot().unwrap(), (u, p));
        }
        assert_ne!(
            Cursor::after_slot("a:b", "c"),
            Cursor::after_slot("a", "b:c")
        );
        for bad in ["", "x", "9:ab", "1:", "-1:a", "1:\u{e9}"] {
            assert!(Cursor::new(bad).slot().is_err(), "{bad:?}");
        }
    }
}
