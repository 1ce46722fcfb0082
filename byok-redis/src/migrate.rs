//! Moving keys stored in format 1 to the current format.
//!
//! See the [crate docs](crate#upgrading-from-format-1).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

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
    /// the prefix as current (`Pformat`); returns how many keys it moved.
    ///
    /// [`connect`](Self::connect) and the other connecting functions move
    /// keys of format 1 but mark nothing when there are none, so that
    /// opening a store only to read it writes nothing; the first write
    /// through a store (`store`, `compare_and_swap`) runs this once. Call
    /// it by hand to mark an empty prefix as a store (`byok migrate`), or
    /// for a store made by
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
        self.migrate_and_mark(true).await
    }

    /// What connecting runs: moves keys of format 1, if any, and marks the
    /// prefix only then.
    pub(crate) async fn upgrade(&self) -> Result<u64> {
        self.migrate_and_mark(false).await
    }

    /// Marks the prefix before this store's first write (once per store and
    /// its clones).
    pub(crate) async fn mark_before_write(&self) -> Result<()> {
        if self.marked.load(Ordering::Acquire) {
            return Ok(());
        }
        let _marking = self.marking.lock().await;
        if !self.marked.load(Ordering::Acquire) {
            self.migrate().await?;
        }
        Ok(())
    }

    /// Whether the prefix holds the format marker: it has been written to,
    /// or marked by [`migrate`](Self::migrate). Reads only; a mistyped
    /// prefix is told from a store this way.
    pub async fn is_marked(&self) -> Result<bool> {
        Ok(self.read_format().await?.is_some())
    }

    /// Deletes the format marker, so that a prefix whose keys are all gone
    /// (a scratch prefix after its test) leaves nothing behind. Keys still
    /// under the prefix stay readable; the next write marks it again.
    pub async fn unmark(&self) -> Result<()> {
        let mut del = redis::cmd("DEL");
        del.arg(self.layout.format_key());
        self.query::<()>("removing the data format marker failed", &del)
            .await?;
        self.marked.store(false, Ordering::Release);
        Ok(())
    }

    async fn read_format(&self) -> Result<Option<String>> {
        let mut read = redis::cmd("GET");
        read.arg(self.layout.format_key());
        self.query("reading the data format failed", &read).await
    }

    async fn migrate_and_mark(&self, always: bool) -> Result<u64> {
        let format_key = self.layout.format_key();
        let format = self.read_format().await?;
        match format.as_deref() {
            Some(FORMAT) => {
                self.marked.store(true, Ordering::Release);
                return Ok(0);
            }
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
        if !always && moved == 0 {
            return Ok(0);
        }
        let mut mark = redis::cmd("SET");
        mark.arg(&format_key).arg(FORMAT);
        self.query::<()>("marking the data format failed", &mark)
            .await?;
        self.marked.store(true, Ordering::Release);
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
