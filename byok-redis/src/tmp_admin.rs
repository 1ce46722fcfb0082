//! A stand-in [`StoreAdmin`] for Redis.

use async_trait::async_trait;
use byok_core::{KeyStorage, Result, SchemaStatus, StoreAdmin};
use futures::StreamExt;

use crate::RedisStorage;

#[async_trait]
impl StoreAdmin for RedisStorage {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn migrate(&self) -> Result<()> {
        RedisStorage::migrate(self).await.map(|_| ())
    }

    async fn schema_status(&self) -> Result<SchemaStatus> {
        Ok(if self.is_marked().await? {
            SchemaStatus::UpToDate
        } else {
            SchemaStatus::Missing
        })
    }

    async fn count_expired(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    async fn destroy(&self) -> Result<()> {
        self.purge_expired().await?;
        loop {
            let mut users = Vec::new();
            let mut keys = byok_core::store::keys(self, 500);
            while let Some(key) = keys.next().await {
                users.push(key?.user_id().to_owned());
            }
            drop(keys);
            if users.is_empty() {
                break;
            }
            for user in users {
                self.clear_all(&user).await?;
            }
        }
        self.unmark().await
    }
}
