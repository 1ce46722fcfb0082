//! Moving keys stored in format 1 to the current format.
//!
//! See the [crate docs](crate#upgrading-from-format-1).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use byok_core::Result;
use byok_core::error::{ConfigError, StorageError, StorageErrorKind};

use crate::connection::RedisStorage;
use crate::error::{BACKEND, corrupt};
use crate::layout::bucket_of;
use crate::record::{decode_v1, encode};
use crate::scripts;

/// The format this version writes, as the format key holds it.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// How many buckets `migrate` works on at once.
const MIGRATE_CONCURRENCY: usize = 32;
/// How often a user's migration reads the format-1 index again when it
/// changed under it.
const MIGRATE_ATTEMPTS: usize = 16;

/// The error for a marker this version cannot work with.
pub(crate) fn newer_format(found: Option<u32>) -> byok_core::ByokError {
    let found = found.map_or_else(|| "an unknown format".to_owned(), |f| format!("format {f}"));
    ConfigError::new(format!(
        "the Redis data under this key prefix is of {found}, which this version of byok-redis \
         (format {FORMAT_VERSION}) does not know: written by a newer version?"
    ))
    .into()
}

impl RedisStorage {
    /// Moves every key stored under this prefix in format 1 (the hash per
    /// key of earlier byok-redis versions) to the current format, then marks
    /// the prefix as current (`Pformat`); returns how many keys it moved.
    /// [`StoreAdmin::migrate`](byok_core::StoreAdmin::migrate) runs this and
    /// drops the count.
    ///
    /// Once a prefix is marked, it costs one `GET`. Safe to run from
    /// several processes at once, and to run again after a failure; a key
    /// written in the current format is never replaced by an older one.
    ///
    /// Fails, changing nothing more, on a format-1 key that is not of the
    /// byok format ([`StorageErrorKind::Corrupt`]), and on a prefix marked
    /// with a format this version does not know (a config error).
    pub async fn migrate_and_count(&self) -> Result<u64> {
        if self.read_format().await?.is_some() {
            return Ok(0);
        }
        let moved = self
            .sum_over_buckets(MIGRATE_CONCURRENCY, |bucket| self.migrate_bucket(bucket))
            .await?;
        self.write_format().await?;
        if moved > 0 {
            tracing::info!(moved, "moved byok keys in Redis from format 1 to format 2");
        }
        Ok(moved)
    }

    /// Before this store's first write (once per store and its clones):
    /// marks an empty prefix as a store of the current format, and refuses
    /// to write over data of format 1, which [`migrate_and_count`](Self::migrate_and_count)
    /// must move first (a key written beside them would be hidden by the
    /// migration's older copy's removal, or hide it).
    pub(crate) async fn mark_before_write(&self) -> Result<()> {
        if self.marked.load(Ordering::Acquire) {
            return Ok(());
        }
        let _marking = self.marking.lock().await;
        if self.marked.load(Ordering::Acquire) || self.read_format().await?.is_some() {
            return Ok(());
        }
        if self.holds_users().await? {
            return Err(ConfigError::new(
                "the Redis data under this key prefix is of an older format (1) and must be \
                 moved before this version writes to it: run `byok migrate` or \
                 StoreAdmin::migrate",
            )
            .into());
        }
        self.write_format().await
    }

    /// [`read_format`](Self::read_format) until the prefix is known to be
    /// of the current format: fails on a format this version does not know.
    pub(crate) async fn read_format_unless_marked(&self) -> Result<()> {
        if !self.marked.load(Ordering::Acquire) {
            self.read_format().await?;
        }
        Ok(())
    }

    /// The format marker's value, checked: `Some(FORMAT_VERSION)` when the
    /// prefix is marked as current, `None` when it is not marked, and a
    /// config error for a format this version does not know.
    pub(crate) async fn read_format(&self) -> Result<Option<u32>> {
        let Some(format) = self.stored_format().await? else {
            return Ok(None);
        };
        match format.parse::<u32>() {
            Ok(FORMAT_VERSION) => {
                self.marked.store(true, Ordering::Release);
                Ok(Some(FORMAT_VERSION))
            }
            Ok(newer) if newer > FORMAT_VERSION => Err(newer_format(Some(newer))),
            _ => Err(newer_format(None)),
        }
    }

    /// The format marker as stored, unchecked.
    pub(crate) async fn stored_format(&self) -> Result<Option<String>> {
        let mut read = redis::cmd("GET");
        read.arg(self.layout.format_key());
        self.query("reading the data format failed", &read).await
    }

    /// Marks the prefix as current.
    async fn write_format(&self) -> Result<()> {
        let mut mark = redis::cmd("SET");
        mark.arg(self.layout.format_key()).arg(FORMAT_VERSION);
        self.query::<()>("marking the data format failed", &mark)
            .await?;
        self.marked.store(true, Ordering::Release);
        Ok(())
    }

    async fn migrate_bucket(&self, bucket: u16) -> Result<u64> {
        let mut moved = 0;
        let mut after: Option<String> = None;
        loop {
            let users = self.users_after(bucket, after.as_deref()).await?;
            let Some(last) = users.back().cloned() else {
                return Ok(moved);
            };
            for user in &users {
                moved += self.migrate_user(user).await?;
            }
            after = Some(last);
        }
    }

    /// Moves one user's format-1 keys, if there are any.
    async fn migrate_user(&self, user: &str) -> Result<u64> {
        let index = self.layout.v1_user_index(user);
        for _ in 0..MIGRATE_ATTEMPTS {
            let mut read = redis::cmd("ZRANGEBYLEX");
            read.arg(&index).arg("-").arg("+");
            let providers: Vec<Vec<u8>> =
                self.query("reading a user's index failed", &read).await?;
            if providers.is_empty() {
                return Ok(0);
            }
            let providers = providers
                .into_iter()
                .map(|p| {
                    String::from_utf8(p).map_err(|_| corrupt("a provider index holds non-UTF-8"))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut pipe = redis::pipe();
            for p in &providers {
                pipe.cmd("HGETALL").arg(self.layout.v1_key(user, p));
            }
            let mut conn = self.conn.clone();
            let hashes: Vec<HashMap<Vec<u8>, Vec<u8>>> = self
                .run("reading format-1 keys failed", pipe.query_async(&mut conn))
                .await?;
            let mut inv = scripts::MIGRATE_USER.prepare_invoke();
            inv.key(&index)
                .key(self.layout.user_hash(user))
                .key(self.layout.bucket_users(bucket_of(user)))
                .arg(user)
                .arg(providers.len());
            for (p, fields) in providers.iter().zip(hashes) {
                let record = decode_v1(user, p, fields)?
                    .map(|key| encode(&key))
                    .unwrap_or_default();
                inv.key(self.layout.v1_key(user, p)).arg(p).arg(record);
            }
            let written: i64 = self
                .run(
                    "migrating a user's keys failed",
                    inv.invoke_async(&mut conn),
                )
                .await?;
            if let Ok(n) = u64::try_from(written) {
                return Ok(n);
            }
        }
        Err(StorageError::new(
            BACKEND,
            StorageErrorKind::Timeout,
            "the user's keys kept changing while they were being migrated",
        )
        .into())
    }
}
