//! Copying keys between stores without ever losing a newer key: what
//! [`KeyStorageExt::copy_into`](crate::KeyStorageExt::copy_into) does.
//!
//! A copy writes a source key into the target only where the target has no
//! key for that slot. Where the target holds a *different* key (a user set
//! a new one there, say), the slot is a conflict, resolved by
//! [`OnConflict`] and listed in the [`CopyReport`]: by default the target's
//! key is kept. A replacement is a compare-and-swap, and a write into a
//! slot that was empty when read is a
//! [`store_if_absent`](crate::KeyStorage::store_if_absent), so a key that is
//! written or changed in the target while the copy runs is never
//! overwritten either (it is reported as
//! [`Resolution::ChangedDuringCopy`]), on every backend whose
//! `store_if_absent` is atomic (all of byok's).
//!
//! ```
//! use byok_core::copy::{CopyOptions, OnConflict};
//! use byok_core::{KeyStorage, KeyStorageExt, Keyring};
//!
//! async fn move_keys(
//!     source: &dyn KeyStorage,
//!     target: &dyn KeyStorage,
//!     ring: Keyring,
//! ) -> byok_core::Result<bool> {
//!     let options = CopyOptions::new()
//!         .on_conflict(OnConflict::Newer)
//!         .verify_with(ring);
//!     let report = source.copy_into(target, &options).await?;
//!     for c in &report.conflicts {
//!         // User, provider, master key ids, dates: never key material.
//!         eprintln!("{} {}: {:?}", c.user_id, c.provider, c.resolution);
//!     }
//!     Ok(report.is_complete())
//! }
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::crypto::{Keyring, key_id_of};
use crate::error::Result;
use crate::key::ApiKey;
use crate::storage::KeyStorage;
use crate::store;
use futures_util::StreamExt;

/// What a copy does with a slot where the target already holds a different
/// key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnConflict {
    /// Keep the target's key and report the conflict.
    #[default]
    Skip,
    /// The key with the later `created_at` wins; on a tie the target's key
    /// is kept.
    Newer,
    /// The source's key replaces the target's.
    Overwrite,
}

/// How to copy: see [`KeyStorageExt::copy_into`](crate::KeyStorageExt::copy_into).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Keys read from the source per page.
    pub page_size: usize,
    /// What to do where the target holds a different key.
    pub on_conflict: OnConflict,
    /// Report what would happen and write nothing.
    pub dry_run: bool,
    /// When set, every target key and every source key is decrypted with
    /// it first; see [`CopyOptions::verify_with`].
    pub keyring: Option<Keyring>,
    /// How many written keys to read back from the target at the end and
    /// compare byte for byte.
    pub sample: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            page_size: 500,
            on_conflict: OnConflict::Skip,
            dry_run: false,
            keyring: None,
            sample: 100,
        }
    }
}

impl CopyOptions {
    /// The defaults: pages of 500, conflicts skipped, no keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys read from the source per page.
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n;
        self
    }

    /// What to do where the target holds a different key.
    pub fn on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
    }

    /// Report what would happen and write nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// How many written keys to read back and compare at the end.
    pub fn sample(mut self, n: usize) -> Self {
        self.sample = n;
        self
    }

    /// Checks keys with `keyring` (the keyring the target will be read
    /// with): before anything is written, every key already in the target
    /// must decrypt under it, or the copy writes nothing
    /// ([`CopyReport::blocked`]); and a source key that does not decrypt
    /// under it is not copied ([`CopyReport::source_failed`]).
    pub fn verify_with(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }
}

/// How a conflict ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// The target's key was kept.
    KeptTarget,
    /// The source's key replaced the target's (or would, in a dry run).
    Replaced,
    /// The target's key changed, or was written into a slot that was empty
    /// when the copy read it, while the copy ran, so it was kept.
    ChangedDuringCopy,
}

/// A slot where source and target held different keys. Names no key
/// material: the master key ids and dates tell the keys apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyConflict {
    /// The user.
    pub user_id: String,
    /// The provider.
    pub provider: String,
    /// The master key id of the source's key (`None`: not a byok ciphertext).
    pub source_key_id: Option<u32>,
    /// The master key id of the target's key.
    pub target_key_id: Option<u32>,
    /// When the source's key was set.
    pub source_created_at: DateTime<Utc>,
    /// When the target's key was set.
    pub target_created_at: DateTime<Utc>,
    /// What the copy did.
    pub resolution: Resolution,
}

/// A key that does not decrypt under the keyring of
/// [`CopyOptions::verify_with`], named without anything secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyProblem {
    /// The user.
    pub user_id: String,
    /// The provider.
    pub provider: String,
    /// The master key id the ciphertext names (`None`: not a byok
    /// ciphertext).
    pub key_id: Option<u32>,
    /// Why it does not decrypt.
    pub reason: String,
}

/// What a copy did, or would do in a dry run.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct CopyReport {
    /// Nothing was written: this was a dry run.
    pub dry_run: bool,
    /// Source keys seen.
    pub scanned: u64,
    /// Keys written into slots where the target had none.
    pub copied: u64,
    /// Slots where the target already held the same key.
    pub identical: u64,
    /// Slots where the target held a different key, whatever was done.
    pub conflicts: Vec<CopyConflict>,
    /// Target keys under master key ids the keyring lacks, per id: when any,
    /// nothing was written.
    pub unknown_target_key_ids: BTreeMap<u32, u64>,
    /// Target keys that do not decrypt under the keyring: when any, nothing
    /// was written.
    pub target_failed: Vec<KeyProblem>,
    /// Source keys that do not decrypt under the keyring: not copied.
    pub source_failed: Vec<KeyProblem>,
    /// Written keys read back from the target and compared.
    pub sampled: u64,
    /// Of those, the slots that did not hold what was written (changed
    /// meanwhile); also the slots, rare, that were found empty but whose
    /// write was refused each time, as keys came and went there.
    pub sample_mismatches: Vec<(String, String)>,
}

impl CopyReport {
    /// Whether the copy refused to write anything because target keys do
    /// not decrypt under the keyring.
    pub fn blocked(&self) -> bool {
        !self.target_failed.is_empty()
    }

    /// Conflicts resolved by writing the source's key.
    pub fn replaced(&self) -> u64 {
        self.count(Resolution::Replaced)
    }

    /// Conflicts where the target's key was kept (or changed meanwhile).
    pub fn kept(&self) -> u64 {
        self.conflicts.len() as u64 - self.replaced()
    }

    fn count(&self, r: Resolution) -> u64 {
        self.conflicts.iter().filter(|c| c.resolution == r).count() as u64
    }

    /// Whether every source key is now in the target as it is in the
    /// source: nothing blocked, failed, kept or mismatched.
    pub fn is_complete(&self) -> bool {
        !self.blocked()
            && self.source_failed.is_empty()
            && self.kept() == 0
            && self.sample_mismatches.is_empty()
    }
}

fn same_key(a: &ApiKey, b: &ApiKey) -> bool {
    a.encrypted_value() == b.encrypted_value()
        && a.hint() == b.hint()
        && a.expires_at() == b.expires_at()
        && a.created_at() == b.created_at()
}

fn problem(key: &ApiKey, ring: &Keyring) -> Option<KeyProblem> {
    let key_id = key_id_of(key.encrypted_value()).ok();
    match ring.decrypt(key.user_id(), key.provider(), key.encrypted_value()) {
        Ok(_plain) => None,
        Err(e) => Some(KeyProblem {
            user_id: key.user_id().to_owned(),
            provider: key.provider().to_owned(),
            key_id,
            reason: e.to_string(),
        }),
    }
}

pub(crate) async fn copy_into<S: KeyStorage + ?Sized>(
    source: &S,
    target: &dyn KeyStorage,
    options: &CopyOptions,
) -> Result<CopyReport> {
    let mut report = CopyReport {
        dry_run: options.dry_run,
        ..CopyReport::default()
    };
    if let Some(ring) = &options.keyring {
        // Before anything is written: a target that holds keys this keyring
        // cannot read is one the copy would leave half unreadable.
        let mut keys = store::keys(target, options.page_size);
        while let Some(key) = keys.next().await {
            if let Some(p) = problem(&key?, ring) {
                if let Some(id) = p.key_id.filter(|id| !ring.contains(*id)) {
                    *report.unknown_target_key_ids.entry(id).or_default() += 1;
                }
                report.target_failed.push(p);
            }
        }
        if report.blocked() {
            return Ok(report);
        }
    }
    let mut written: Vec<ApiKey> = Vec::new();
    let mut keys = store::keys(source, options.page_size);
    while let Some(key) = keys.next().await {
        let key = &key?;
        report.scanned += 1;
        if let Some(ring) = &options.keyring
            && let Some(p) = problem(key, ring)
        {
            report.source_failed.push(p);
            continue;
        }
        let there = match target.retrieve(key.user_id(), key.provider()).await? {
            Some(there) => there,
            None if options.dry_run => {
                report.copied += 1;
                continue;
            }
            None => {
                match fill_empty(target, key).await? {
                    Filled::Stored => {
                        keep_sample(&mut written, key, report.copied, options.sample);
                        report.copied += 1;
                    }
                    // Written into the target since it was read: kept,
                    // whatever `on_conflict` says.
                    Filled::Taken(now) if same_key(&now, key) => report.identical += 1,
                    Filled::Taken(now) => {
                        report
                            .conflicts
                            .push(conflict(key, &now, Resolution::ChangedDuringCopy))
                    }
                    Filled::Unsettled => report
                        .sample_mismatches
                        .push((key.user_id().to_owned(), key.provider().to_owned())),
                }
                continue;
            }
        };
        if same_key(&there, key) {
            report.identical += 1;
            continue;
        }
        let replace = match options.on_conflict {
            OnConflict::Skip => false,
            OnConflict::Newer => key.created_at() > there.created_at(),
            OnConflict::Overwrite => true,
        };
        let resolution = if !replace {
            Resolution::KeptTarget
        } else if options.dry_run || target.compare_and_swap(&there, key).await? {
            Resolution::Replaced
        } else {
            Resolution::ChangedDuringCopy
        };
        report.conflicts.push(conflict(key, &there, resolution));
    }
    for key in &written {
        report.sampled += 1;
        let there = target.retrieve(key.user_id(), key.provider()).await?;
        if !there.is_some_and(|t| same_key(&t, key)) {
            report
                .sample_mismatches
                .push((key.user_id().to_owned(), key.provider().to_owned()));
        }
    }
    Ok(report)
}

/// The conflict of source key `key` with target key `there`.
fn conflict(key: &ApiKey, there: &ApiKey, resolution: Resolution) -> CopyConflict {
    CopyConflict {
        user_id: key.user_id().to_owned(),
        provider: key.provider().to_owned(),
        source_key_id: key_id_of(key.encrypted_value()).ok(),
        target_key_id: key_id_of(there.encrypted_value()).ok(),
        source_created_at: key.created_at(),
        target_created_at: there.created_at(),
        resolution,
    }
}

/// How many times a copy tries to fill a slot that was empty when read and
/// is empty again after a refused write (a key written and removed
/// meanwhile) before it gives up on the slot.
const FILL_ATTEMPTS: usize = 3;

/// What [`fill_empty`] did.
enum Filled {
    /// Wrote the key into the empty slot.
    Stored,
    /// Another key was written into the slot first; it is this one.
    Taken(ApiKey),
    /// Each write was refused and each read found the slot empty again.
    Unsettled,
}

/// Writes `key` into its target slot, read as empty, only if it still is
/// ([`KeyStorage::store_if_absent`]), so that a key written there meanwhile
/// is never overwritten.
async fn fill_empty(target: &dyn KeyStorage, key: &ApiKey) -> Result<Filled> {
    for _ in 0..FILL_ATTEMPTS {
        if target.store_if_absent(key).await? {
            return Ok(Filled::Stored);
        }
        if let Some(now) = target.retrieve(key.user_id(), key.provider()).await? {
            return Ok(Filled::Taken(now));
        }
    }
    Ok(Filled::Unsettled)
}

/// Keeps up to `max` of the written keys, spread over the whole walk
/// (reservoir sampling), for the read-back at the end.
fn keep_sample(sample: &mut Vec<ApiKey>, key: &ApiKey, seen: u64, max: usize) {
    if sample.len() < max {
        sample.push(key.clone());
    } else if max > 0 {
        let j = rand::random_range(0..=seen);
        if let Ok(j) = usize::try_from(j)
            && j < max
        {
            sample[j] = key.clone();
        }
    }
}
