//! The `KeyStorage` implementation.

use std::collections::BTreeMap;

use async_trait::async_trait;
use byok_core::check_record::MAX_ENCODED_LEN;
use byok_core::error::{Field, InvalidInput, Problem};
use byok_core::storage::check_same_slot;
use byok_core::{ApiKey, Cursor, KeyStorage, Result, ScanPage, validate};

use crate::connection::RedisStorage;
use crate::error::corrupt;
use crate::layout::{expiry_member, expiry_member_prefix};
use crate::record::{self, now_millis};
use crate::scripts;

impl RedisStorage {
    /// The invocation of [`scripts::STORE`], [`scripts::STORE_IF_ABSENT`]
    /// or [`scripts::COMPARE_AND_SWAP`] that writes `key`.
    fn write_invocation<'a>(
        &self,
        script: &'a redis::Script,
        key: &ApiKey,
    ) -> redis::ScriptInvocation<'a> {
        let (user, provider) = (key.user_id(), key.provider());
        let keys = self.layout.user_keys(user);
        let mut inv = script.prepare_invoke();
        inv.key(keys.user_hash)
            .key(keys.bucket_users)
            .key(keys.bucket_expiries)
            .arg(user)
            .arg(provider)
            .arg(expiry_member(user, provider))
            .arg(record::encode(key));
        match key.expires_at_millis() {
            Some(e) => inv.arg(e),
            None => inv.arg(""),
        };
        inv
    }

    /// Runs a write that may be refused ([`scripts::STORE_IF_ABSENT`],
    /// [`scripts::COMPARE_AND_SWAP`]: 1 written, 0 refused, -1 a record not
    /// of the byok format) and confirms it as every write is.
    async fn write_if(
        &self,
        inv: redis::ScriptInvocation<'_>,
        user_id: &str,
        what: &'static str,
    ) -> Result<bool> {
        let mut conn = self.conn.clone();
        let written: i64 = self.run(what, inv.invoke_async(&mut conn)).await?;
        match written {
            1 => self.confirm_write(user_id).await.map(|()| true),
            -1 => Err(corrupt("a byok record is not of the byok format")),
            _ => Ok(false),
        }
    }

    /// Every record of a user, by provider in byte order: one `HGETALL`.
    pub(crate) async fn user_records(&self, user: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.layout.user_hash(user));
        self.query("reading a user's keys failed", &cmd).await
    }
}

/// The provider named by a field of a user's hash.
pub(crate) fn provider_of(field: Vec<u8>) -> Result<String> {
    String::from_utf8(field)
        .ok()
        .filter(|p| validate::stored_provider(p).is_ok())
        .ok_or_else(|| corrupt("a user's hash holds an invalid provider"))
}

/// Refuses a check text longer than a store is asked to keep.
fn check_text(check: &str) -> Result<()> {
    if check.len() > MAX_ENCODED_LEN {
        return Err(InvalidInput::new(
            Field::Json,
            Problem::TooLong {
                len: check.len(),
                max: MAX_ENCODED_LEN,
            },
        )
        .into());
    }
    Ok(())
}

#[async_trait]
impl KeyStorage for RedisStorage {
    async fn store(&self, key: &ApiKey) -> Result<()> {
        // An `ApiKey` always holds a valid slot: no validation here.
        self.mark_before_write().await?;
        let mut conn = self.conn.clone();
        let inv = self.write_invocation(&scripts::STORE, key);
        self.run::<i64, _>("storing a key failed", inv.invoke_async(&mut conn))
            .await?;
        self.confirm_write(key.user_id()).await
    }

    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        self.mark_before_write().await?;
        let mut inv = self.write_invocation(&scripts::STORE_IF_ABSENT, key);
        inv.arg(now_millis());
        self.write_if(inv, key.user_id(), "storing a key failed")
            .await
    }

    async fn retrieve(&self, user_id: &str, provider: &str) -> Result<Option<ApiKey>> {
        validate::stored_slot(user_id, provider)?;
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.layout.user_hash(user_id)).arg(provider);
        let stored: Option<Vec<u8>> = self.query("reading a key failed", &cmd).await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        if record::is_expired_at(&stored, now_millis())? {
            return Ok(None);
        }
        record::decode(user_id, provider, &stored).map(Some)
    }

    async fn delete(&self, user_id: &str, provider: &str) -> Result<bool> {
        validate::stored_slot(user_id, provider)?;
        let keys = self.layout.user_keys(user_id);
        let mut inv = scripts::DELETE.prepare_invoke();
        inv.key(keys.user_hash)
            .key(keys.bucket_users)
            .key(keys.bucket_expiries)
            .key(keys.check_hash)
            .arg(user_id)
            .arg(provider)
            .arg(expiry_member(user_id, provider));
        let mut conn = self.conn.clone();
        let removed: i64 = self
            .run("deleting a key failed", inv.invoke_async(&mut conn))
            .await?;
        if removed > 0 {
            self.confirm_write(user_id).await?;
        }
        Ok(removed > 0)
    }

    async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        validate::stored_user_id(user_id)?;
        let records = self.user_records(user_id).await?;
        let now = now_millis();
        let mut providers = Vec::with_capacity(records.len());
        for (field, stored) in records {
            if !record::is_expired_at(&stored, now)? {
                providers.push(provider_of(field)?);
            }
        }
        Ok(providers)
    }

    async fn user_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        validate::stored_user_id(user_id)?;
        self.user_records(user_id)
            .await?
            .into_iter()
            .map(|(field, stored)| record::decode(user_id, &provider_of(field)?, &stored))
            .collect()
    }

    async fn clear_all(&self, user_id: &str) -> Result<u64> {
        validate::stored_user_id(user_id)?;
        let keys = self.layout.user_keys(user_id);
        let mut inv = scripts::CLEAR.prepare_invoke();
        inv.key(keys.user_hash)
            .key(keys.bucket_users)
            .key(keys.bucket_expiries)
            .key(keys.check_hash)
            .arg(user_id)
            .arg(expiry_member_prefix(user_id));
        let mut conn = self.conn.clone();
        let cleared: i64 = self
            .run("clearing a user's keys failed", inv.invoke_async(&mut conn))
            .await?;
        if cleared > 0 {
            self.confirm_write(user_id).await?;
        }
        Ok(u64::try_from(cleared).unwrap_or(0))
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.purge_all().await
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        check_same_slot(current, new)?;
        self.mark_before_write().await?;
        let mut inv = self.write_invocation(&scripts::COMPARE_AND_SWAP, new);
        inv.arg(now_millis()).arg(current.encrypted_value());
        self.write_if(inv, new.user_id(), "compare-and-swap failed")
            .await
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.scan_page(cursor, limit).await
    }

    async fn store_check(&self, user_id: &str, provider: &str, check: &str) -> Result<bool> {
        validate::stored_slot(user_id, provider)?;
        check_text(check)?;
        // A prefix of a format this version does not know is not written
        // to (once the prefix is known as current, this reads nothing).
        self.read_format_unless_marked().await?;
        let keys = self.layout.user_keys(user_id);
        let mut inv = scripts::STORE_CHECK.prepare_invoke();
        inv.key(keys.user_hash)
            .key(keys.check_hash)
            .arg(provider)
            .arg(check);
        let mut conn = self.conn.clone();
        let kept: i64 = self
            .run("keeping a key's check failed", inv.invoke_async(&mut conn))
            .await?;
        if kept == 1 {
            self.confirm_write(user_id).await?;
        }
        Ok(kept == 1)
    }

    async fn checks(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        validate::stored_user_id(user_id)?;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.layout.check_hash(user_id));
        let stored: BTreeMap<Vec<u8>, Vec<u8>> =
            self.query("reading a user's checks failed", &cmd).await?;
        let mut checks = Vec::with_capacity(stored.len());
        for (field, text) in stored {
            // A check is a hint, not data: an entry this version cannot
            // read (not written by byok) is skipped, never an error.
            let (Ok(provider), Ok(text)) = (provider_of(field), String::from_utf8(text)) else {
                tracing::warn!("skipping a malformed entry of a byok check hash");
                continue;
            };
            checks.push((provider, text));
        }
        Ok(checks)
    }

    fn as_fast_tier(&self) -> Option<&dyn byok_core::FastTier> {
        Some(self)
    }
}
