//! The hand-written side: what a competent user writes instead of byok.
//!
//! A cached AES-256-GCM-SIV cipher with nonces from `rand`'s `ThreadRng`
//! and the slot as associated data; a `RwLock<HashMap>` in memory; a sqlx
//! pool without a ping before each query and one statement per call; one
//! Redis command per call (`GET`, `SET PX`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::RwLock;

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use rand::Rng as _;

use crate::harness::{BResult, BoxError};

/// A stored record of the hand-written stores.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) value: Vec<u8>,
    pub(crate) hint: Option<String>,
    pub(crate) created_at_ms: i64,
    pub(crate) expires_at_ms: Option<i64>,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A cached cipher: nonce | ciphertext | tag, the slot as associated data.
#[derive(Clone)]
pub(crate) struct HandCipher {
    cipher: Aes256GcmSiv,
}

impl std::fmt::Debug for HandCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandCipher")
    }
}

fn slot_aad(user: &str, provider: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(user.len() + provider.len() + 1);
    aad.extend_from_slice(user.as_bytes());
    aad.push(0);
    aad.extend_from_slice(provider.as_bytes());
    aad
}

impl HandCipher {
    pub(crate) fn new(key: &[u8; 32]) -> BResult<Self> {
        Ok(HandCipher {
            cipher: Aes256GcmSiv::new_from_slice(key).map_err(|_| "bad key length")?,
        })
    }

    pub(crate) fn seal(&self, user: &str, provider: &str, plaintext: &[u8]) -> BResult<Vec<u8>> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(12 + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                &Nonce::from(nonce),
                &slot_aad(user, provider),
                &mut out[12..],
            )
            .map_err(|_| "encryption failed")?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub(crate) fn open(&self, user: &str, provider: &str, sealed: &[u8]) -> BResult<String> {
        if sealed.len() < 28 {
            return Err("ciphertext too short".into());
        }
        let nonce = <[u8; 12]>::try_from(&sealed[..12]).map_err(|_| "bad nonce")?;
        let tag = <[u8; 16]>::try_from(&sealed[sealed.len() - 16..]).map_err(|_| "bad tag")?;
        let mut body = sealed[12..sealed.len() - 16].to_vec();
        self.cipher
            .decrypt_in_place_detached(
                &Nonce::from(nonce),
                &slot_aad(user, provider),
                &mut body,
                &Tag::from(tag),
            )
            .map_err(|_| "decryption failed")?;
        Ok(String::from_utf8(body)?)
    }
}

/// Every (user, provider, ciphertext) of a store.
pub(crate) type Slots = Vec<(String, String, Vec<u8>)>;

/// The operations of a hand-written store. Those it has no counterpart for
/// return `Ok(None)`, and the row shows a dash.
pub(crate) trait HandStore: Send + Sync + 'static {
    /// Whether it keeps an index of each user's keys, and so has
    /// counterparts of `list_providers`, `clear_all`, `purge_expired` and a
    /// rotation walk.
    fn has_index(&self) -> bool {
        true
    }
    fn read(
        &self,
        user: &str,
        provider: &str,
    ) -> impl Future<Output = BResult<Option<Vec<u8>>>> + Send;
    fn write(
        &self,
        user: &str,
        provider: &str,
        record: Record,
    ) -> impl Future<Output = BResult<()>> + Send;
    fn list(&self, user: &str) -> impl Future<Output = BResult<Option<Vec<String>>>> + Send;
    fn clear(&self, user: &str) -> impl Future<Output = BResult<Option<u64>>> + Send;
    fn purge(&self) -> impl Future<Output = BResult<Option<u64>>> + Send;
    /// Every (user, provider, value), for a rotation by hand.
    fn all(&self) -> impl Future<Output = BResult<Option<Slots>>> + Send;
    /// Replaces `old` by `new` if the slot still holds `old`.
    fn swap(
        &self,
        user: &str,
        provider: &str,
        old: &[u8],
        new: &[u8],
    ) -> impl Future<Output = BResult<bool>> + Send;
    /// Removes everything this store wrote.
    fn cleanup(&self) -> impl Future<Output = BResult<()>> + Send;
}

/// `RwLock<HashMap>` of users, each a `HashMap` of providers.
#[derive(Debug, Default)]
pub(crate) struct MemoryHand {
    pub(crate) users: RwLock<HashMap<String, HashMap<String, Record>>>,
}

fn poisoned<T>(_: T) -> BoxError {
    "a lock was poisoned".into()
}

impl HandStore for MemoryHand {
    async fn read(&self, user: &str, provider: &str) -> BResult<Option<Vec<u8>>> {
        let users = self.users.read().map_err(poisoned)?;
        let now = now_ms();
        Ok(users
            .get(user)
            .and_then(|keys| keys.get(provider))
            .filter(|r| r.expires_at_ms.is_none_or(|e| e > now))
            .map(|r| r.value.clone()))
    }

    async fn write(&self, user: &str, provider: &str, record: Record) -> BResult<()> {
        let mut users = self.users.write().map_err(poisoned)?;
        match users.get_mut(user) {
            Some(keys) => {
                keys.insert(provider.to_owned(), record);
            }
            None => {
                users.insert(
                    user.to_owned(),
                    HashMap::from([(provider.to_owned(), record)]),
                );
            }
        }
        Ok(())
    }

    async fn list(&self, user: &str) -> BResult<Option<Vec<String>>> {
        let users = self.users.read().map_err(poisoned)?;
        let now = now_ms();
        let mut out: Vec<String> = users
            .get(user)
            .into_iter()
            .flatten()
            .filter(|(_, r)| r.expires_at_ms.is_none_or(|e| e > now))
            .map(|(p, _)| p.clone())
            .collect();
        out.sort();
        Ok(Some(out))
    }

    async fn clear(&self, user: &str) -> BResult<Option<u64>> {
        let mut users = self.users.write().map_err(poisoned)?;
        Ok(Some(users.remove(user).map_or(0, |k| k.len() as u64)))
    }

    async fn purge(&self) -> BResult<Option<u64>> {
        let mut users = self.users.write().map_err(poisoned)?;
        let now = now_ms();
        let mut purged = 0;
        users.retain(|_, keys| {
            let before = keys.len();
            keys.retain(|_, r| r.expires_at_ms.is_none_or(|e| e > now));
            purged += (before - keys.len()) as u64;
            !keys.is_empty()
        });
        Ok(Some(purged))
    }

    async fn all(&self) -> BResult<Option<Slots>> {
        let users = self.users.read().map_err(poisoned)?;
        Ok(Some(
            users
                .iter()
                .flat_map(|(u, keys)| {
                    keys.iter()
                        .map(move |(p, r)| (u.clone(), p.clone(), r.value.clone()))
                })
                .collect(),
        ))
    }

    async fn swap(&self, user: &str, provider: &str, old: &[u8], new: &[u8]) -> BResult<bool> {
        let mut users = self.users.write().map_err(poisoned)?;
        match users.get_mut(user).and_then(|k| k.get_mut(provider)) {
            Some(r) if r.value == old => {
                r.value = new.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn cleanup(&self) -> BResult<()> {
        self.users.write().map_err(poisoned)?.clear();
        Ok(())
    }
}
