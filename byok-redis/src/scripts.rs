//! The Lua scripts: one per multi-key change, each naming every key it
//! touches in `KEYS`, all of them in one hash slot.

use std::sync::LazyLock;

use redis::Script;

/// Writes a record and its index entries. Shared by `store` and
/// compare-and-swap.
///
/// KEYS: 1 user hash, 2 bucket users, 3 bucket expiries.
/// ARGV: 1 user, 2 provider, 3 expiry member, 4 record, 5 expires (ms,
/// `''`: never).
///
/// Two commands when a key is replaced: the user is in the bucket's user
/// set exactly when the user's hash has a field, so only a new field adds
/// the user. A key that has already expired is written like any other:
/// reads skip it, and `purge_expired` finds it through the expiry set.
///
/// The first write is the `HSET`, which Redis refuses (`OOM`) when it is
/// over `maxmemory`: once a script has written, Redis lets every later
/// command of it through, so nothing is half written.
const WRITE: &str = r"
local function write_key()
  if redis.call('HSET', KEYS[1], ARGV[2], ARGV[4]) == 1 then
    redis.call('ZADD', KEYS[2], 0, ARGV[1])
  end
  if ARGV[5] == '' then
    redis.call('ZREM', KEYS[3], ARGV[3])
  else
    redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
  end
end
";

/// `store`: see [`WRITE`].
pub(crate) static STORE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{WRITE}\nwrite_key()\nreturn 1\n")));

/// Compare-and-swap: [`WRITE`]'s arguments, then ARGV 6: now (ms), 7: the
/// ciphertext that must be stored now. Returns 1 when it swapped, 0 when
/// not, -1 when the stored record is not of the byok format.
///
/// Reads the record at the fixed offsets of the [record format]
/// (crate::record): the expiry at bytes 10..18, the hint's length at 18.
pub(crate) static COMPARE_AND_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{WRITE}
local stored = redis.call('HGET', KEYS[1], ARGV[2])
if not stored then return 0 end
if #stored < 19 or string.byte(stored, 1) ~= 1 then return -1 end
local hint_len = string.byte(stored, 19)
if #stored < 19 + hint_len then return -1 end
if string.sub(stored, 20 + hint_len) ~= ARGV[7] then return 0 end
if string.byte(stored, 2) % 2 == 1 then
  local b = {{string.byte(stored, 11, 18)}}
  -- A negative expiry (before 1970) has long passed.
  if b[1] >= 128 then return 0 end
  local e = 0
  for i = 1, 8 do e = e * 256 + b[i] end
  if e <= tonumber(ARGV[6]) then return 0 end
end
write_key()
return 1
"
    ))
});

/// `store_if_absent`: [`WRITE`]'s arguments, then ARGV 6: now (ms).
/// Writes the key when the slot holds none, or one whose expiry is at or
/// before now; returns 1 when it wrote, 0 when a live key is there, -1
/// when the stored record is not of the byok format.
///
/// Reads the expiry as [`COMPARE_AND_SWAP`] does.
pub(crate) static STORE_IF_ABSENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{WRITE}
local stored = redis.call('HGET', KEYS[1], ARGV[2])
if stored then
  if #stored < 19 or string.byte(stored, 1) ~= 1 then return -1 end
  if string.byte(stored, 2) % 2 == 0 then return 0 end
  local b = {{string.byte(stored, 11, 18)}}
  -- A negative expiry (before 1970) has long passed.
  if b[1] < 128 then
    local e = 0
    for i = 1, 8 do e = e * 256 + b[i] end
    if e > tonumber(ARGV[6]) then return 0 end
  end
end
write_key()
return 1
"
    ))
});

/// `delete`. KEYS as in [`WRITE`], then 4 the user's check hash; ARGV: 1
/// user, 2 provider, 3 expiry member. Removes the key and its check;
/// returns 1 when the key was there (expired or not).
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return n
",
    )
});

/// `clear_all`. KEYS as in [`WRITE`], then 4 the user's check hash; ARGV:
/// 1 user, 2 the user's expiry member prefix. Removes every key of the user
/// and every check; returns how many keys.
pub(crate) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local providers = redis.call('HKEYS', KEYS[1])
for _, p in ipairs(providers) do
  redis.call('ZREM', KEYS[3], ARGV[2] .. p)
end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
return #providers
",
    )
});

/// One batch of `purge_expired` in one bucket. KEYS: 1 bucket expiries,
/// 2 bucket users, then per slot i: the user's hash (2i+1) and the user's
/// check hash (2i+2). ARGV: 1 now (ms), 2 the number `s` of stray members,
/// 3..s+2 the stray members (members of the expiry set that name no valid
/// slot of this bucket), then per slot i: expiry member (s+3i), user
/// (s+3i+1), provider (s+3i+2).
///
/// Removes every stray member, and each slot whose expiry is still at or
/// before now, with its check; returns how many slots it removed (strays
/// are not counted).
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
    local h = KEYS[2 * i + 1]
    redis.call('HDEL', h, p)
    redis.call('HDEL', KEYS[2 * i + 2], p)
    redis.call('ZREM', KEYS[1], m)
    if redis.call('EXISTS', h) == 0 then redis.call('ZREM', KEYS[2], u) end
    removed = removed + 1
  end
end
return removed
",
    )
});

/// `store_check`. KEYS: 1 the user's hash, 2 the user's check hash. ARGV:
/// 1 provider, 2 the check's text.
///
/// Keeps the check only when the user's hash holds the provider (a key,
/// expired or not); returns 1 when it kept it, 0 when there was no key.
/// Then drops the checks of providers that have no key any more (left by
/// an older version's `delete`, which knows nothing of checks), so that
/// none outlives its slot for long. The first write is the `HSET`, which
/// a full Redis refuses before anything changed.
pub(crate) static STORE_CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, p in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('HEXISTS', KEYS[1], p) == 0 then redis.call('HDEL', KEYS[2], p) end
end
return 1
",
    )
});

/// Moves one user's keys from format 1 to format 2. KEYS: 1 the user's
/// format-1 index, 2 the user's hash, 3 bucket users, then per provider i:
/// its format-1 hash (i+3). ARGV: 1 user, 2 how many providers the index
/// held when it was read, then per provider i: provider (2i+1), record
/// (2i+2; `''` when its format-1 hash had gone).
///
/// Returns -1, changing nothing, when the index no longer holds that many
/// providers (the caller reads again); otherwise writes each record unless
/// the user's hash already holds that provider (a newer write), deletes the
/// format-1 keys, and returns how many records it wrote. The bucket's user
/// and expiry sets are the same in both formats and stay as they are, but
/// for a user left without keys, who leaves the user set.
pub(crate) static MIGRATE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('ZCARD', KEYS[1]) ~= tonumber(ARGV[2]) then return -1 end
local written = 0
for i = 1, #KEYS - 3 do
  local p, record = ARGV[2 * i + 1], ARGV[2 * i + 2]
  if record ~= '' then
    written = written + redis.call('HSETNX', KEYS[2], p, record)
  end
  redis.call('DEL', KEYS[i + 3])
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('ZREM', KEYS[3], ARGV[1]) end
return written
",
    )
});
