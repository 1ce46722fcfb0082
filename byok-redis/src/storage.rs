//! The `KeyStorage` implementation.

use std::collections::HashMap;

use async_trait::async_trait;
use byok_core::error::{StorageError, StorageErrorKind};
use byok_core::storage::check_same_slot;
use byok_core::{ApiKey, Cursor, KeyStorage, Result, ScanPage, validate};
use chrono::Utc;

use crate::connection::RedisStorage;
use crate::error::{BACKEND, corrupt};
use crate::layout::{bucket_of, expiry_member, expiry_member_prefix};
use crate::record::{decode, now_millis};
use crate::scripts;

/// How often `clear_all` reads the index again when it changed under it.
const CLEAR_ATTEMPTS: usize = 16;

impl RedisStorage {
    fn write_invocation<'a>(
        &self,
        script: &'a redis::Script,
        key: &ApiKey,
        now: i64,
    ) -> redis::ScriptInvocation<'a> {
        let (user, provider) = (key.user_id(), key.provider());
        let keys = self.layout.slot_keys(user, provider);
        let mut inv = script.prepare_invoke();
        inv.key(keys.key)
            .key(keys.user_index)
            .key(keys.bucket_users)
            .key(keys.bucket_expiries)
            .arg(now)
            .arg(user)
            .arg(provider)
            .arg(expiry_member(user, provider))
            .arg(key.encrypted_value())
            .arg(key.created_at().timestamp_millis())
            .arg(key.hint().unwrap_or(""))
            .arg(
                key.expires_at_millis()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            );
        inv
    }

    /// Reads the hashes of `providers` of `user` in one pipeline.
    pub(crate) async fn read_keys(
        &self,
        user: &str,
        providers: &[String],
    ) -> Result<Vec<Option<ApiKey>>> {
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for p in providers {
            pipe.cmd("HGETALL").arg(self.layout.key(user, p));
        }
        let mut conn = self.conn.clone();
        let rows: Vec<HashMap<Vec<u8>, Vec<u8>>> = self
            .run("reading keys failed", pipe.query_async(&mut conn))
            .await?;
        rows.into_iter()
            .zip(providers)
            .map(|(fields, p)| decode(user, p, fields))
            .collect()
    }
}

#[async_trait]
impl KeyStorage for RedisStorage {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        // An `ApiKey` always holds a valid slot: no validation here.
        let mut conn = self.conn.clone();
        let inv = self.write_invocation(&scripts::STORE, key, now_millis());
        self.run::<i64, _>("storing a key failed", inv.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        validate::slot(user_id, provider)?;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.layout.key(user_id, provider));
        let fields: HashMap<Vec<u8>, Vec<u8>> = self.query("reading a key failed", &cmd).await?;
        let now = Utc::now();
        Ok(decode(user_id, provider, fields)?.filter(|k| !k.is_expired_at(now)))
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        validate::slot(user_id, provider)?;
        let keys = self.layout.slot_keys(user_id, provider);
        let mut inv = scripts::DELETE.prepare_invoke();
        inv.key(keys.key)
            .key(keys.user_index)
            .key(keys.bucket_users)
            .key(keys.bucket_expiries)
            .arg(user_id)
            .arg(provider)
            .arg(expiry_member(user_id, provider));
        let mut conn = self.conn.clone();
        let removed: i64 = self
            .run("deleting a key failed", inv.invoke_async(&mut conn))
            .await?;
        Ok(removed > 0)
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        validate::user_id(user_id)?;
        let mut inv = scripts::LIST.prepare_invoke();
        inv.key(self.layout.user_index(user_id))
            .key(self.layout.bucket_expiries(bucket_of(user_id)))
            .arg(now_millis())
            .arg(expiry_member_prefix(user_id));
        let mut conn = self.conn.clone();
        let providers: Vec<Vec<u8>> = self
            .run("listing providers failed", inv.invoke_async(&mut conn))
            .await?;
        providers
            .into_iter()
            .map(|p| String::from_utf8(p).map_err(|_| corrupt("a provider index holds non-UTF-8")))
            .collect()
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        validate::user_id(user_id)?;
        let bucket = bucket_of(user_id);
        let index = self.layout.user_index(user_id);
        for _ in 0..CLEAR_ATTEMPTS {
            let mut read = redis::cmd("ZRANGEBYLEX");
            read.arg(&index).arg("-").arg("+");
            let providers: Vec<Vec<u8>> =
                self.query("reading a user's index failed", &read).await?;
            let mut inv = scripts::CLEAR.prepare_invoke();
            inv.key(&index)
                .key(self.layout.bucket_users(bucket))
                .key(self.layout.bucket_expiries(bucket))
                .arg(user_id)
                .arg(expiry_member_prefix(user_id));
            for p in &providers {
                let p = std::str::from_utf8(p)
                    .map_err(|_| corrupt("a provider index holds non-UTF-8"))?;
                inv.key(self.layout.key(user_id, p)).arg(p);
            }
            let mut conn = self.conn.clone();
            let cleared: i64 = self
                .run("clearing a user's keys failed", inv.invoke_async(&mut conn))
                .await?;
            if let Ok(n) = u64::try_from(cleared) {
                return Ok(n);
            }
        }
        Err(StorageError::new(
            BACKEND,
            StorageErrorKind::Timeout,
            "the user's keys kept changing while they were being cleared",
        )
        .into())
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.purge_all().await
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        check_same_slot(current, new)?;
        let mut inv = self.write_invocation(&scripts::COMPARE_AND_SWAP, new, now_millis());
        inv.arg(current.encrypted_value());
        let mut conn = self.conn.clone();
        let swapped: i64 = self
            .run("compare-and-swap failed", inv.invoke_async(&mut conn))
            .await?;
        Ok(swapped == 1)
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.scan_page(cursor, limit).await
    }
}
