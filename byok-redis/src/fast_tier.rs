//! [`FastTier`] for [`RedisStorage`]: leased fills, so that a Redis shared
//! by several processes can be the fast store of a
//! [`TieredStorage`](byok_core::TieredStorage).
//!
//! Copies, leases and holds live in keys of their own, beside the user's
//! hash and under the same hash tag (see [`Layout::fast_tier_keys`]), every
//! one with a Redis expiry: copies `P{B}:c:<user>:<provider>` (a string:
//! the generation, `:`, the [record](crate#records)), leases
//! `P{B}:l:<user>:<provider>` (the generation, `:`, the token), and per
//! user its generation `P{B}:g:<user>` (a counter) and hold
//! `P{B}:h:<user>` (a token). Each step is one script.
//!
//! [`Layout::fast_tier_keys`]: crate::layout::Layout::fast_tier_keys

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use byok_core::{ApiKey, Result, validate};
use byok_core::{FastTier, LeaseToken, Lookup};
use redis::{Script, Value};

use crate::connection::RedisStorage;
use crate::error::corrupt;
use crate::record;

/// Extends a key's expiry to at least `ms`, never shortens it; leaves a
/// missing key missing.
const EXTEND: &str = r"
local function extend(key, ms)
  local t = redis.call('PTTL', key)
  if t == -1 or (t >= 0 and t < tonumber(ms)) then redis.call('PEXPIRE', key, ms) end
end
";

/// KEYS: 1 copy, 2 lease, 3 generation, 4 user hold. ARGV: 1 token, 2
/// lease (ms). Returns the record of a copy of the current generation;
/// else 2 after taking the lease; else 0 (busy).
static LOOKUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local g = redis.call('GET', KEYS[3]) or '0'
local c = redis.call('GET', KEYS[1])
if c then
  local i = string.find(c, ':', 1, true)
  if i and string.sub(c, 1, i - 1) == g then return string.sub(c, i + 1) end
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local l = redis.call('GET', KEYS[2])
if l and string.sub(l, 1, #g + 1) == g .. ':' then return 0 end
redis.call('SET', KEYS[2], g .. ':' .. ARGV[1], 'PX', ARGV[2])
return 2
",
    )
});

/// KEYS as [`LOOKUP`]. ARGV: 1 token (`''`: none), 2 record (`''`: none),
/// 3 copy lifetime (ms), 4 `1` to settle a write, `0` to fill a read.
///
/// When the lease is the token's, of the current generation, and the user
/// has no hold: ends the lease, writes the record (if any) as the copy,
/// returns 1 if it did. Otherwise returns 0, after removing the copy and
/// the lease when settling.
static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{EXTEND}
local g = redis.call('GET', KEYS[3]) or '0'
local mine = ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == g .. ':' .. ARGV[1]
  and redis.call('EXISTS', KEYS[4]) == 0
if not mine then
  if ARGV[4] == '1' then redis.call('DEL', KEYS[1], KEYS[2]) end
  return 0
end
redis.call('DEL', KEYS[2])
if ARGV[2] == '' then return 0 end
redis.call('SET', KEYS[1], g .. ':' .. ARGV[2], 'PX', ARGV[3])
extend(KEYS[3], ARGV[3])
return 1
"
    ))
});

/// KEYS: 1 copy, 2 lease, 3 generation. ARGV: 1 token, 2 hold (ms).
static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[1])
local g = redis.call('GET', KEYS[3]) or '0'
redis.call('SET', KEYS[2], g .. ':' .. ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// KEYS: 1 generation, 2 user hold. ARGV: 1 token (`''`: none), 2 hold
/// (ms; `''`: end the hold if it is the token's, instead of taking it), 3
/// how long to remember the generation (ms).
static USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{EXTEND}
redis.call('INCR', KEYS[1])
extend(KEYS[1], ARGV[3])
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
elseif ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
"
    ))
});

/// Milliseconds of a duration, at least 1 (Redis refuses an expiry of 0).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStorage {
    /// `fill` (`settle` false) or `settle` of one slot; checks the slot.
    async fn fill_or_settle(
        &self,
        (user_id, provider): (&str, &str),
        token: Option<&LeaseToken>,
        key: Option<&ApiKey>,
        ttl: Duration,
        settle: bool,
    ) -> Result<bool> {
        validate::stored_slot(user_id, provider)?;
        let mut inv = FILL.prepare_invoke();
        for k in self.layout.fast_tier_keys(user_id, provider) {
            inv.key(k);
        }
        inv.arg(token.map_or("", LeaseToken::as_str))
            .arg(key.map(record::encode).unwrap_or_default())
            .arg(millis(ttl))
            .arg(if settle { "1" } else { "0" });
        let mut conn = self.conn.clone();
        let filled: i64 = self
            .run("filling the fast tier failed", inv.invoke_async(&mut conn))
            .await?;
        Ok(filled == 1)
    }

    async fn user_step(
        &self,
        user_id: &str,
        token: Option<&LeaseToken>,
        hold: Option<Duration>,
        ttl: Duration,
    ) -> Result<()> {
        validate::stored_user_id(user_id)?;
        let mut inv = USER.prepare_invoke();
        for k in self.layout.fast_tier_user_keys(user_id) {
            inv.key(k);
        }
        inv.arg(token.map_or("", LeaseToken::as_str))
            .arg(hold.map(millis).map(|m| m.to_string()).unwrap_or_default())
            .arg(millis(ttl));
        let mut conn = self.conn.clone();
        self.run::<i64, _>("holding a user failed", inv.invoke_async(&mut conn))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl FastTier for RedisStorage {
    async fn lookup(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> Result<Lookup> {
        validate::stored_slot(user_id, provider)?;
        let mut inv = LOOKUP.prepare_invoke();
        for k in self.layout.fast_tier_keys(user_id, provider) {
            inv.key(k);
        }
        inv.arg(token.as_str()).arg(millis(lease));
        let mut conn = self.conn.clone();
        let found: Value = self
            .run("reading the fast tier failed", inv.invoke_async(&mut conn))
            .await?;
        match found {
            Value::BulkString(stored) => {
                record::decode(user_id, provider, &stored).map(Lookup::Hit)
            }
            Value::Int(2) => Ok(Lookup::Leased),
            Value::Int(0) => Ok(Lookup::Busy),
            _ => Err(corrupt(
                "the fast-tier lookup script answered something unexpected",
            )),
        }
    }

    async fn fill(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        key: Option<&ApiKey>,
        ttl: Duration,
    ) -> Result<bool> {
        self.fill_or_settle((user_id, provider), Some(token), key, ttl, false)
            .await
    }

    async fn hold(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        hold: Duration,
    ) -> Result<()> {
        validate::stored_slot(user_id, provider)?;
        let [copy, lease, generation, _] = self.layout.fast_tier_keys(user_id, provider);
        let mut inv = HOLD.prepare_invoke();
        inv.key(copy)
            .key(lease)
            .key(generation)
            .arg(token.as_str())
            .arg(millis(hold));
        let mut conn = self.conn.clone();
        self.run::<i64, _>("holding a slot failed", inv.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    async fn settle(
        &self,
        user_id: &str,
        provider: &str,
        token: Option<&LeaseToken>,
        key: Option<&ApiKey>,
        ttl: Duration,
    ) -> Result<()> {
        self.fill_or_settle((user_id, provider), token, key, ttl, true)
            .await
            .map(|_| ())
    }

    async fn hold_user(
        &self,
        user_id: &str,
        token: &LeaseToken,
        hold: Duration,
        ttl: Duration,
    ) -> Result<()> {
        self.user_step(user_id, Some(token), Some(hold), ttl).await
    }

    async fn settle_user(
        &self,
        user_id: &str,
        token: Option<&LeaseToken>,
        ttl: Duration,
    ) -> Result<()> {
        self.user_step(user_id, token, None, ttl).await
    }
}
