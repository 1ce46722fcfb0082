//! The hand-written Redis store: one string per slot under a hash tag of
//! the user, read with one `GET` and written with one `SET … PX`.
//!
//! It keeps no per-user index, so it has no counterpart of
//! `list_providers`, `clear_all`, `purge_expired` (the server expires keys
//! itself) or a rotation walk; those rows show byok alone.

use std::sync::Arc;

use byok::byok_redis::redis;

use crate::hand::{HandStore, Record, now_ms};
use crate::harness::BResult;

/// A hand-written store over a connection `C` (one server or a cluster).
pub(crate) struct RedisHand<C> {
    conn: C,
    prefix: String,
    /// Every (user, provider) it may have written, for the cleanup.
    slots: Arc<Vec<(String, String)>>,
}

impl<C> std::fmt::Debug for RedisHand<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHand")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl<C> RedisHand<C> {
    pub(crate) fn new(conn: C, prefix: String, slots: Arc<Vec<(String, String)>>) -> Self {
        RedisHand {
            conn,
            prefix,
            slots,
        }
    }

    fn key(&self, user: &str, provider: &str) -> String {
        format!("{}{{{user}}}:{provider}", self.prefix)
    }
}

impl<C> HandStore for RedisHand<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    fn has_index(&self) -> bool {
        false
    }

    async fn read(&self, user: &str, provider: &str) -> BResult<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(self.key(user, provider))
            .query_async(&mut conn)
            .await?)
    }

    async fn write(&self, user: &str, provider: &str, record: Record) -> BResult<()> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(user, provider)).arg(record.value);
        if let Some(at) = record.expires_at_ms {
            cmd.arg("PX").arg((at - now_ms()).max(1));
        }
        cmd.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn list(&self, _user: &str) -> BResult<Option<Vec<String>>> {
        Ok(None)
    }

    async fn clear(&self, _user: &str) -> BResult<Option<u64>> {
        Ok(None)
    }

    async fn purge(&self) -> BResult<Option<u64>> {
        Ok(None)
    }

    async fn all(&self) -> BResult<Option<crate::hand::Slots>> {
        Ok(None)
    }

    async fn swap(&self, _: &str, _: &str, _: &[u8], _: &[u8]) -> BResult<bool> {
        Ok(false)
    }

    async fn cleanup(&self) -> BResult<()> {
        let mut conn = self.conn.clone();
        // One user per command: in a cluster, each user's keys share a slot.
        for (user, provider) in self.slots.iter() {
            redis::cmd("DEL")
                .arg(self.key(user, provider))
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }
}
