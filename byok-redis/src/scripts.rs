//! The Lua scripts: one per multi-key change, each naming every key it
//! touches in `KEYS`, all of them in one hash slot.

use std::sync::LazyLock;

use redis::Script;

/// Writes the key and its index entries. Shared by `store` and
/// compare-and-swap.
///
/// KEYS: 1 key, 2 user index, 3 bucket users, 4 bucket expiries.
/// ARGV: 1 now (ms), 2 user, 3 provider, 4 expiry member, 5 ciphertext,
/// 6 created (ms), 7 hint (`''`: none), 8 expires (ms, `''`: never).
///
/// A key that has already expired gets no hash, only its index entries, so
/// that it reads as absent and `purge_expired` finds and counts it.
///
/// The first write is a `ZADD`, which Redis refuses (`OOM`) when it is over
/// `maxmemory`: once a script has written, Redis lets every later command
/// of it through, so a script that began with `DEL` would write past the
/// limit.
const WRITE: &str = r"
local function write_key()
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
  redis.call('DEL', KEYS[1])
  local exp = ARGV[8]
  if exp == '' or tonumber(exp) > tonumber(ARGV[1]) then
    if ARGV[7] == '' then
      redis.call('HSET', KEYS[1], 'v', ARGV[5], 'c', ARGV[6])
    else
      redis.call('HSET', KEYS[1], 'v', ARGV[5], 'c', ARGV[6], 'h', ARGV[7])
    end
    if exp ~= '' then
      redis.call('HSET', KEYS[1], 'e', exp)
      redis.call('PEXPIREAT', KEYS[1], exp)
    end
  end
  if exp == '' then
    redis.call('ZREM', KEYS[4], ARGV[4])
  else
    redis.call('ZADD', KEYS[4], exp, ARGV[4])
  end
end
";

/// `store`: see [`WRITE`].
pub(crate) static STORE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{WRITE}\nwrite_key()\nreturn 1\n")));

/// Compare-and-swap: [`WRITE`]'s arguments, then ARGV 9: the ciphertext
/// that must be stored now. Returns 1 when it swapped, 0 when not.
pub(crate) static COMPARE_AND_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{WRITE}
local stored = redis.call('HMGET', KEYS[1], 'v', 'e')
if not stored[1] or stored[1] ~= ARGV[9] then return 0 end
if stored[2] and tonumber(stored[2]) <= tonumber(ARGV[1]) then return 0 end
write_key()
return 1
"
    ))
});

/// `delete`. KEYS as in [`WRITE`]; ARGV: 1 user, 2 provider, 3 expiry
/// member. Returns 1 when the key or its index entry was there.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('DEL', KEYS[1]) + redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('ZREM', KEYS[3], ARGV[1]) end
if n > 0 then return 1 end
return 0
",
    )
});

/// `list_providers`, read only. KEYS: 1 user index, 2 bucket expiries.
/// ARGV: 1 now (ms), 2 the user's expiry member prefix. Returns the
/// unexpired providers in byte order.
pub(crate) static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local out = {}
for _, p in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], '-', '+')) do
  local e = redis.call('ZSCORE', KEYS[2], ARGV[2] .. p)
  if not e or tonumber(e) > now then out[#out + 1] = p end
end
return out
",
    )
});

/// `clear_all`. KEYS: 1 user index, 2 bucket users, 3 bucket expiries,
/// 4.. the keys of the providers in ARGV 3... ARGV: 1 user, 2 the user's
/// expiry member prefix, 3.. the providers read from the index just before.
///
/// Returns -1, changing nothing, when the index no longer holds exactly
/// those providers (the caller reads again and retries); otherwise removes
/// them all and returns how many.
pub(crate) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = #ARGV - 2
if redis.call('ZCARD', KEYS[1]) ~= n then return -1 end
for i = 1, n do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i + 2]) then return -1 end
end
for i = 1, n do
  redis.call('DEL', KEYS[i + 3])
  redis.call('ZREM', KEYS[3], ARGV[2] .. ARGV[i + 2])
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
",
    )
});

/// One batch of `purge_expired` in one bucket. KEYS: 1 bucket expiries,
/// 2 bucket users, then per slot i: user index (2i+1), key (2i+2). ARGV:
/// 1 now (ms), 2 the number `s` of stray members, 3..s+2 the stray members
/// (members of the expiry set that name no valid slot of this bucket), then
/// per slot i: expiry member (s+3i), user (s+3i+1), provider (s+3i+2).
///
/// Removes every stray member, and each slot whose expiry is still at or
/// before now; returns how many slots it removed (strays are not counted).
pub(crate) static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local s = tonumber(ARGV[2])
for i = 1, s do
  redis.call('ZREM', KEYS[1], ARGV[i + 2])
end
local removed = 0
local n = (#KEYS - 2) / 2
for i = 1, n do
  local m, u, p = ARGV[s + 3 * i], ARGV[s + 3 * i + 1], ARGV[s + 3 * i + 2]
  local e = redis.call('ZSCORE', KEYS[1], m)
  if e and tonumber(e) <= now then
    local idx = KEYS[2 * i + 1]
    redis.call('DEL', KEYS[2 * i + 2])
    redis.call('ZREM', idx, p)
    redis.call('ZREM', KEYS[1], m)
    if redis.call('EXISTS', idx) == 0 then redis.call('ZREM', KEYS[2], u) end
    removed = removed + 1
  end
end
return removed
",
    )
});
