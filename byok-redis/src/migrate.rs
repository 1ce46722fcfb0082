//! Moving keys stored in format 1 to the current format.
//!
//! See the [crate docs](crate#upgrading-from-format-1).

use std::collections::HashMap;

use byok_core::Result;
use byok_core::error::{ConfigError, StorageError, StorageErrorKind};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::connection::RedisStorage;
use crate::error::{BACKEND, corrupt};
use crate::layout::{BUCKETS, bucket_of};
use crate::record::{decode_v1, encode};
use crate::scripts;

/// The format this version writes, as the format key holds it.
const FORMAT: &str = "2";
/// How many buckets `migrate` works on at once.
const MIGRATE_CONCURRENCY: usize = 32;
/// How often a user's migration reads the format-1 index again when it
/// changed under it.
const MIGRATE_ATTEMPTS: usize = 16;

impl RedisStorage {
    /// Moves every key stored under this prefix in format 1 (the hash per
    /// key of earlier byok-redis versions) to the current format, then marks
    /// the prefix as current; returns how many keys it moved.
    ///
    /// [`connect`](Self::connect) and the other connecting functions call
    /// it, so it rarely needs calling by hand: only for a store made by
    /// [`from_connection_manager`](Self::from_connection_manager) or
    /// [`with_prefix`](Self::with_prefix) over data of format 1. Once a
    /// prefix is marked, it costs one `GET`. Safe to run from several
    /// processes at once, and to run again after a failure; a key written
    /// in the current format is never replaced by an older one. Stop
    /// processes running an older byok-redis first: keys they write in
    /// format 1 after the migration are not seen.
    ///
    /// Fails, changing nothing more, on a format-1 key that is not of the
    /// byok format ([`StorageErrorKind::Corrupt`]), and on a prefix marked
    /// with a format this version does not know (a config error).
    pub async fn migrate(&self) -> Result<u64> {
        let format_key = self.layout.format_key();
        let mut read = redis::cmd("GET");
        read.arg(&format_key);
        let format: Option<String> = self.query("reading the data format failed", &read).await?;
        match format.as_deref() {
            Some(FORMAT) => return Ok(0),
            Some(_) => {
                return Err(ConfigError::new(
                    "the Redis data under this key prefix is of a format this version of \
                     byok-redis does not know (written by a newer version?)",
                )
                .into());
            }
            None => {}
        }
        let moved = stream::iter(0..BUCKETS)
            .map(|bucket| self.migrate_bucket(bucket))
            .buffer_unordered(MIGRATE_CONCURRENCY)
            .try_fold(0u64, |total, n| async move { Ok(total + n) })
            .await?;
        let mut mark = redis::cmd("SET");
        mark.arg(&format_key).arg(FORMAT);
        self.query::<()>("marking the data format failed", &mark)
            .await?;
        if moved > 0 {
            tracing::info!(moved, "moved byok keys in Redis from format 1 to format 2");
        }
        Ok(moved)
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
