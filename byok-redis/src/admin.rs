//! The operator's side: [`StoreAdmin`] for [`RedisStorage`].

use std::future::Future;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use byok_core::store::SchemaStatus;
use byok_core::{Result, StoreAdmin};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::connection::{Connection, RedisStorage};
use crate::error::BACKEND;
use crate::layout::BUCKETS;
use crate::migrate::{FORMAT_VERSION, newer_format};
use crate::record::now_millis;

/// How many buckets a count works on at once.
const COUNT_CONCURRENCY: usize = 32;
/// How many keys one `SCAN` of [`destroy`](StoreAdmin::destroy) asks for.
const DESTROY_SCAN_COUNT: usize = 1000;
/// How many keys `destroy` deletes at once on a cluster.
#[cfg(feature = "cluster")]
const DESTROY_CONCURRENCY: usize = 32;

impl RedisStorage {
    /// Runs `per_bucket` on every bucket, `concurrency` at a time, and adds
    /// up what they return: the one walk over the buckets of the purge, the
    /// migration and the counts.
    pub(crate) async fn sum_over_buckets<'a, F, Fut>(
        &'a self,
        concurrency: usize,
        per_bucket: F,
    ) -> Result<u64>
    where
        F: Fn(u16) -> Fut + 'a,
        Fut: Future<Output = Result<u64>> + 'a,
    {
        stream::iter(0..BUCKETS)
            .map(per_bucket)
            .buffer_unordered(concurrency)
            .try_fold(0u64, |total, n| async move { Ok(total + n) })
            .await
    }

    /// One bucket's answer to a command that counts (`ZCARD`, `ZCOUNT`).
    async fn count_in_bucket(&self, cmd: redis::Cmd) -> Result<u64> {
        self.query("counting keys failed", &cmd).await
    }

    /// Whether any bucket lists a user: the prefix holds keys (of either
    /// format; the buckets' user sets are the same in both).
    pub(crate) async fn holds_users(&self) -> Result<bool> {
        let users = self
            .sum_over_buckets(COUNT_CONCURRENCY, |bucket| {
                let mut cmd = redis::cmd("ZCARD");
                cmd.arg(self.layout.bucket_users(bucket));
                self.count_in_bucket(cmd)
            })
            .await?;
        Ok(users > 0)
    }

    /// How many records one bucket holds, expired ones included: the sum
    /// of the `HLEN`s of its users' hashes, a pipeline per batch of users.
    async fn records_in_bucket(&self, bucket: u16) -> Result<u64> {
        let mut total = 0u64;
        let mut after: Option<String> = None;
        loop {
            let users = self.users_after(bucket, after.as_deref()).await?;
            let Some(last) = users.back().cloned() else {
                return Ok(total);
            };
            let mut pipe = redis::pipe();
            for user in &users {
                pipe.cmd("HLEN").arg(self.layout.user_hash(user));
            }
            let mut conn = self.conn.clone();
            let lens: Vec<u64> = self
                .run("counting keys failed", pipe.query_async(&mut conn))
                .await?;
            total += lens.iter().sum::<u64>();
            after = Some(last);
        }
    }

    /// The expired records of every bucket at `now` (Unix ms), from the
    /// buckets' expiry sets: a record is expired when its expiry is at or
    /// before `now`, as reads judge it.
    async fn expired_at(&self, now: i64) -> Result<u64> {
        self.sum_over_buckets(COUNT_CONCURRENCY, |bucket| {
            let mut cmd = redis::cmd("ZCOUNT");
            cmd.arg(self.layout.bucket_expiries(bucket))
                .arg("-inf")
                .arg(now);
            self.count_in_bucket(cmd)
        })
        .await
    }

    /// Deletes the keys whose names start with the prefix, on the server
    /// or on each master of a cluster, a `SCAN` page at a time.
    async fn delete_under_prefix(&self) -> Result<()> {
        let pattern = format!("{}*", glob_escape(self.layout.prefix()));
        match &self.conn {
            Connection::Single(_) => {
                let mut cursor = 0u64;
                loop {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(DESTROY_SCAN_COUNT);
                    let (next, keys): (u64, Vec<Vec<u8>>) =
                        self.query("listing the store's keys failed", &scan).await?;
                    if !keys.is_empty() {
                        let mut del = redis::cmd("DEL");
                        del.arg(keys);
                        self.query::<()>("deleting the store's keys failed", &del)
                            .await?;
                    }
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            }
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => self.delete_under_prefix_on_cluster(c, &pattern).await,
        }
    }

    /// [`delete_under_prefix`](Self::delete_under_prefix) on each master of
    /// a cluster; keys are deleted one by one, since those of one master
    /// lie in many slots.
    #[cfg(feature = "cluster")]
    async fn delete_under_prefix_on_cluster(
        &self,
        conn: &redis::cluster_async::ClusterConnection,
        pattern: &str,
    ) -> Result<()> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
        let mut c = conn.clone();
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let masters = match self
            .run(
                "listing the cluster's masters failed",
                c.route_command(redis::cmd("PING"), routing),
            )
            .await?
        {
            redis::Value::Map(per_node) => per_node
                .into_iter()
                .filter_map(|(node, _)| redis::from_redis_value_ref::<String>(&node).ok())
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        if masters.is_empty() {
            return Err(byok_core::error::StorageError::new(
                BACKEND,
                byok_core::error::StorageErrorKind::Other,
                "the cluster named none of its masters, so the store could not be destroyed",
            )
            .into());
        }
        for master in masters {
            let Some((host, port)) = master
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            else {
                continue;
            };
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(DESTROY_SCAN_COUNT);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port,
                });
                let reply = self
                    .run(
                        "listing the store's keys failed",
                        c.route_command(scan, routing),
                    )
                    .await?;
                let (next, keys): (u64, Vec<Vec<u8>>) =
                    redis::from_redis_value(reply).map_err(|e| {
                        crate::error::storage_error(
                            redis::RedisError::from(e),
                            "listing the store's keys failed",
                        )
                    })?;
                stream::iter(keys)
                    .map(|key| async move {
                        let mut del = redis::cmd("DEL");
                        del.arg(key);
                        self.query::<()>("deleting the store's keys failed", &del)
                            .await
                    })
                    .buffer_unordered(DESTROY_CONCURRENCY)
                    .try_collect::<Vec<()>>()
                    .await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
}

/// `text` with the characters of Redis's glob patterns escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// See the [crate docs](crate#running-the-store).
#[async_trait]
impl StoreAdmin for RedisStorage {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// Moves keys of format 1, if any, and marks the prefix as a store of
    /// the current format (see [upgrading](crate#upgrading-from-format-1)).
    async fn migrate(&self) -> Result<()> {
        self.migrate_and_count().await.map(drop)
    }

    /// Reads the format marker, and when there is none whether any bucket
    /// lists a user: [`Missing`](SchemaStatus::Missing) for an empty
    /// prefix, [`Older`](SchemaStatus::Older) (format 1) otherwise.
    async fn schema_status(&self) -> Result<SchemaStatus> {
        let current = FORMAT_VERSION;
        match self.stored_format().await? {
            None if self.holds_users().await? => Ok(SchemaStatus::Older { found: 1, current }),
            None => Ok(SchemaStatus::Missing),
            Some(found) => match found.parse::<u32>() {
                Ok(found) if found == current => Ok(SchemaStatus::UpToDate),
                Ok(found) if found > current => Ok(SchemaStatus::Newer { found, current }),
                _ => Err(newer_format(None)),
            },
        }
    }

    /// Exact: the members of the buckets' expiry sets whose expiry has
    /// passed (one `ZCOUNT` per bucket).
    async fn count_expired(&self) -> Result<Option<u64>> {
        self.expired_at(now_millis()).await.map(Some)
    }

    /// Exact: the records of every user's hash (`HLEN`, pipelined by
    /// bucket), less the expired ones.
    async fn count(&self) -> Result<u64> {
        let now = now_millis();
        let records = self
            .sum_over_buckets(COUNT_CONCURRENCY, |bucket| self.records_in_bucket(bucket))
            .await?;
        let expired = self.expired_at(now).await?;
        Ok(records.saturating_sub(expired))
    }

    /// Deletes every key whose name starts with the prefix, the format
    /// marker and a [`TieredStorage`](byok_core::TieredStorage)'s copies
    /// included: `SCAN` on the server, or on every master of a cluster.
    async fn destroy(&self) -> Result<()> {
        self.delete_under_prefix().await?;
        self.marked.store(false, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("byok_"), "byok_");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
