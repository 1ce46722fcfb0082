//! `purge_expired`: walking the expiry sets of the buckets.

use byok_core::Result;

use crate::connection::RedisStorage;
use crate::layout::{bucket_of, parse_expiry_member};
use crate::record::now_millis;
use crate::scripts;

/// How many expired slots one purge script removes at most.
const PURGE_BATCH: usize = 256;
/// How many buckets `purge_expired` works on at once.
const PURGE_CONCURRENCY: usize = 8;

impl RedisStorage {
    /// Purges every bucket, [`PURGE_CONCURRENCY`] at a time; returns how
    /// many slots it removed.
    pub(crate) async fn purge_all(&self) -> Result<u64> {
        self.sum_over_buckets(PURGE_CONCURRENCY, |bucket| self.purge_bucket(bucket))
            .await
    }

    /// Purges the expired slots of one bucket; returns how many.
    async fn purge_bucket(&self, bucket: u16) -> Result<u64> {
        let mut purged = 0u64;
        let expiries = self.layout.bucket_expiries(bucket);
        loop {
            let now = now_millis();
            let mut read = redis::cmd("ZRANGEBYSCORE");
            read.arg(&expiries)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(PURGE_BATCH);
            let members: Vec<Vec<u8>> = self.query("reading expired keys failed", &read).await?;
            if members.is_empty() {
                break;
            }
            let batch_full = members.len() == PURGE_BATCH;
            // Members that name no slot of this bucket (written by hand, or
            // by something else under our prefix) are removed, not skipped:
            // left in place they would come first in every later batch, and
            // a user of another bucket would name keys of another slot.
            let mut slots = Vec::new();
            let mut strays = Vec::new();
            for member in &members {
                match parse_expiry_member(member) {
                    Some((user, provider)) if bucket_of(&user) == bucket => {
                        slots.push((member, user, provider));
                    }
                    _ => strays.push(member),
                }
            }
            let mut inv = scripts::PURGE.prepare_invoke();
            inv.key(&expiries)
                .key(self.layout.bucket_users(bucket))
                .arg(now)
                .arg(strays.len());
            for member in &strays {
                inv.arg(member.as_slice());
            }
            for (member, user, provider) in &slots {
                let keys = self.layout.user_keys(user);
                inv.key(keys.user_hash)
                    .key(keys.check_hash)
                    .arg(member.as_slice())
                    .arg(user)
                    .arg(provider);
            }
            if !strays.is_empty() {
                tracing::warn!(
                    bucket,
                    count = strays.len(),
                    "removing malformed entries from a byok expiry set"
                );
            }
            let mut conn = self.conn.clone();
            let removed: i64 = self
                .run("purging expired keys failed", inv.invoke_async(&mut conn))
                .await?;
            purged += u64::try_from(removed).unwrap_or(0);
            if !batch_full || (removed == 0 && strays.is_empty()) {
                break;
            }
        }
        Ok(purged)
    }
}
