//! Redis storage for byok: [`RedisStorage`], for a standalone Redis server
//! and (with the `cluster` feature) for Redis Cluster, through one type and
//! one code path.
//!
//! A user's keys are kept in one Redis hash, a small binary record per
//! provider, so reading a key is one `HGET` and listing a user's keys one
//! `HGETALL`; every multi-key change is one Lua script, so a store, a
//! delete, a clear or a compare-and-swap is atomic on a single server and
//! on a cluster alike.
//!
//! ```no_run
//! use byok_core::{ApiKey, ByokConfig, KeyStorage, StoreAdmin};
//! use byok_redis::RedisStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> byok_core::Result<()> {
//! let config = ByokConfig::default();
//! let store = RedisStorage::builder("redis://127.0.0.1:6379").config(&config).open().await?;
//! store.migrate().await?; // once, when the prefix is new or of an older format
//! store.store(&ApiKey::new("alice", "openai", b"ciphertext".to_vec())?).await?;
//! assert_eq!(store.list_providers("alice").await?, ["openai"]);
//!
//! // A cluster (with the `cluster` feature): one `redis+cluster://` URL
//! // listing seed nodes, or several comma-separated `redis://` URLs.
//! let cluster = RedisStorage::builder("redis+cluster://node-a:7000,node-b:7000")
//!     .config(&config)
//!     .open()
//!     .await?;
//! assert!(cluster.is_cluster());
//! # Ok(())
//! # }
//! ```
//!
//! Setting up needs no server; the options can be checked offline:
//!
//! ```
//! use byok_redis::RedisOptions;
//! use std::time::Duration;
//!
//! let options = RedisOptions::default().with_response_timeout(Duration::from_secs(1));
//! assert_eq!(options.response_timeout(), Duration::from_secs(1));
//! ```
//!
//! # Key layout
//!
//! Users are spread over 1024 buckets by FNV-1a (32 bit) of the user id's
//! bytes, modulo 1024. Every key of a bucket carries the bucket's hash tag, so
//! everything that one operation touches lives in one hash slot. With the
//! prefix `P` (default: [`ByokConfig::session_key_prefix`], `byok_`), bucket
//! `B` as three hex digits, and ids encoded as below:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P{B}:u:<user>` | hash | the user's keys: one field per provider (the provider's own bytes), holding the key's [record](#records) |
//! | `P{B}:users` | sorted set, scores 0 | the users of the bucket that have keys, in byte order |
//! | `P{B}:exp` | sorted set | the bucket's expiring slots, scored by expiry (Unix ms); members `<len>:<user><provider>`, the user's length in bytes first |
//! | `P{B}:chk:<user>` | hash | the last [check](#checks) of the user's keys: one field per provider, holding the check's text |
//! | `Pformat` | string | the format of the data under the prefix, `2` (see [upgrading](#upgrading-from-format-1)) |
//! | `P{B}:c:<user>:<provider>` | string, with a Redis expiry | a [`TieredStorage`](byok_core::TieredStorage) copy: the user's generation, `:`, the record |
//! | `P{B}:l:<user>:<provider>` | string, with a Redis expiry | a fill lease or a write's hold on the slot: the user's generation, `:`, a random token |
//! | `P{B}:g:<user>` | counter, with a Redis expiry | the user's generation (moved on by a tiered `clear_all`) |
//! | `P{B}:h:<user>` | string, with a Redis expiry | a tiered `clear_all`'s hold on every slot of the user |
//!
//! The last four exist only where the store is the fast store of a
//! `TieredStorage` (see [below](#as-the-fast-store-of-a-tieredstorage)); the
//! store's own methods neither read nor count them, and all of them expire
//! by themselves.
//!
//! The encoding of ids keeps letters, digits and `-._~@+` and percent-encodes
//! every other byte, so encoded ids never hold `{`, `}` or `:`, and no two
//! users share a hash, whatever characters their ids hold; a provider is a
//! field of its user's hash, so no two (user, provider) pairs share a
//! record. The prefix may not hold braces either (nor whitespace or
//! control characters, and it is 1 to [`MAX_PREFIX_LEN`] bytes long); the
//! hash tag is always `{B}`, and `Pformat`, which has none, can be the name
//! of no other key. Reading, listing and clearing touch the user's own hash,
//! never `KEYS` or `SCAN`, and never another user's keys.
//!
//! The layout — the bucket count, the hash, the encoding, the record — is
//! part of the stored format and will not change within a major version
//! without a migration. A cluster spreads the 1024 bucket slots over its
//! masters, which balances well up to a few dozen masters. Scripts run one
//! at a time on their server: a `clear_all` of a user with many keys is one
//! script over all of them.
//!
//! ## Checks
//!
//! [`KeyStorage::store_check`](byok_core::KeyStorage::store_check) keeps a
//! key's last check in the user's check hash `P{B}:chk:<user>`, not in the
//! user's hash: every field of that hash is a provider to a version of
//! byok that knows nothing of checks, so the user's hash keeps exactly the
//! fields and bytes it held, and older versions go on reading and writing
//! keys on the same prefix. The check hash carries the user's hash tag, so
//! one script sets the check only while the user's hash holds the
//! provider (`HEXISTS`, then `HSET`), in one round trip;
//! [`checks`](byok_core::KeyStorage::checks) is one `HGETALL`, by provider
//! in byte order (an entry that is not UTF-8 or names no valid provider is
//! skipped with a `tracing` warning). `delete`, `clear_all` and
//! `purge_expired` remove the check in the script that removes its key;
//! `count`, `stats` and `scan` walk the users' hashes and never see
//! checks; `destroy` removes them with everything under the prefix.
//!
//! A check names its key (see [`CheckRecord`](byok_core::CheckRecord)), so
//! one left behind when a key is replaced — by this version or an older
//! one — is never shown. An older version's `delete` or `clear_all` leaves
//! the check of the removed key in the check hash, unread; the next check
//! kept for the user drops every check whose provider has no key, and
//! `destroy` removes it. **No migration:** the format stays `2`, and
//! [`StoreAdmin::schema_status`] answers
//! [`UpToDate`](byok_core::SchemaStatus::UpToDate) on a prefix with checks
//! as without.
//!
//! ## Records
//!
//! A key's record is one binary value: a version byte (1), a flags byte
//! (bit 0: expires, bit 1: has a hint), created and expires as big-endian
//! Unix milliseconds (8 bytes each, expires 0 when it never expires), the
//! hint's length (1 byte) and the hint, then the ciphertext to the end. A
//! read decodes it without a second lookup; the fixed offsets let the
//! compare-and-swap script find the expiry and the ciphertext.
//!
//! ## Upgrading from format 1
//!
//! Before format 2, byok-redis kept a hash per key (`P{B}:k:<user>:<provider>`
//! with the fields `v`, `c`, `h`, `e`) and a sorted set of each user's
//! providers (`P{B}:i:<user>`); the bucket sets are the same in both
//! formats. Opening a store never writes: it reads nothing of the format
//! either. [`StoreAdmin::migrate`] reads `Pformat`; when it is not there,
//! it walks the buckets' user sets, moves each user's format-1 keys into
//! the user's hash in one script per user (a key already written in
//! format 2 wins), deletes the format-1 keys, and then writes `Pformat`.
//! On an empty prefix it only writes `Pformat`.
//!
//! Until then, [`StoreAdmin::schema_status`] answers
//! [`SchemaStatus::Older`](byok_core::SchemaStatus::Older) (format 1 found,
//! 2 current), reads see none of the format-1 keys, and a write
//! (`store`, `store_if_absent`, `compare_and_swap`) is refused with a
//! config error that says to run `migrate`, changing nothing: a key written
//! beside format-1 keys would make the later migration pick between two
//! copies. Deleting and clearing work. The first write to an empty,
//! unmarked prefix ([`SchemaStatus::Missing`](byok_core::SchemaStatus::Missing))
//! writes `Pformat` before the key.
//!
//! Stop processes of the older version before migrating: keys they write
//! in format 1 afterwards are not seen. A prefix marked with a format this
//! version does not know is refused with a config error on every write and
//! by `migrate`, and reported as
//! [`SchemaStatus::Newer`](byok_core::SchemaStatus::Newer).
//!
//! # Running the store
//!
//! `RedisStorage` implements [`StoreAdmin`]: its backend is `"redis"`;
//! [`count_expired`](byok_core::StoreAdmin::count_expired) is exact (expired records
//! stay in Redis until a purge; one `ZCOUNT` of each bucket's expiry set),
//! [`count`](byok_core::StoreAdmin::count) is exact too (the `HLEN` of every user's
//! hash, pipelined by bucket, less the expired records), and
//! [`destroy`](byok_core::StoreAdmin::destroy) deletes every key whose name starts
//! with the prefix, the marker included (`SCAN` and `DEL`, on every master
//! of a cluster; not atomic, for scratch prefixes and tests).
//!
//! # TLS
//!
//! `rediss://` needs one of the TLS features of this crate, which follow
//! the `redis` crate's own:
//!
//! | feature | TLS through | trusts |
//! |---|---|---|
//! | `tls` (= `tls-rustls`) | rustls, with the `ring` provider | the system's certificate authorities |
//! | `tls-rustls-webpki-roots` | rustls | the Mozilla roots of `webpki-roots` |
//! | `tls-rustls-insecure` | rustls | as `tls`, and accepts `#insecure` |
//! | `tls-native-tls` | the platform's library (OpenSSL on Linux) | the system's; accepts `#insecure` |
//!
//! [`RedisOptions::with_root_certificates`] trusts the certificate
//! authorities of a PEM file instead, as for a server with a certificate of
//! your own authority (on a Redis Cluster this needs `tls-rustls`). The
//! server's certificate must verify and name the host in the URL; when it
//! does not, connecting fails with [`StorageErrorKind::Rejected`] and a
//! message that says so. The URL forms:
//!
//! * `rediss://[[user]:password@]host[:port][/db]`: one server, verified.
//! * `rediss+cluster://[[user]:password@]h1:p1,h2:p2` or comma-separated
//!   `rediss://` URLs: a cluster, every node verified.
//! * `rediss://host:port/#insecure`: encrypted but **not verified** (any
//!   certificate is accepted, so anyone on the path can read the traffic);
//!   only with `tls-rustls-insecure` or `tls-native-tls`, for tests.
//!
//! With rustls, a crypto provider installed by the application
//! (`rustls::crypto::CryptoProvider::install_default`) is used; when there
//! is none, connecting over TLS installs `ring`'s.
//!
//! ```no_run
//! use byok_core::ByokConfig;
//! use byok_redis::{RedisOptions, RedisStorage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = std::fs::read("/etc/ssl/redis-ca.pem")?;
//! let options = RedisOptions::default().with_root_certificates(ca);
//! let store = RedisStorage::builder("rediss://:secret@redis.internal:6380")
//!     .config(&ByokConfig::default())
//!     .options(options)
//!     .open()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! * `store`, `store_if_absent`, `delete`, `clear_all`, `compare_and_swap`,
//!   `store_check` and each batch of `purge_expired` are single Lua scripts (through
//!   [`redis::Script::invoke_async`], which reloads a script the server lost),
//!   naming every key in `KEYS`: atomic on a server and on a cluster.
//!   Replacing a key costs Redis two commands (`HSET` and the expiry set's
//!   `ZADD` or `ZREM`); a user's first key of a provider adds one more.
//! * Expiry is checked at read time against this process's clock, so an
//!   expired key is never returned, whatever the server's clock says.
//!   Redis does not expire records by itself (a hash field has no expiry
//!   before Redis 7.4): an expired key stays in Redis, unreadable, until
//!   `purge_expired` removes it. `delete` reports it as stored until then,
//!   and the purge counts it. [`KeyStorage::user_keys`](byok_core::KeyStorage::user_keys)
//!   returns it, with its expiry, so a summary can show it as expired.
//! * Every command fails within a bounded time when Redis is unreachable
//!   (see [`RedisOptions`]) with a retryable error, and the store reconnects
//!   by itself when Redis is back. A server busy with another client's
//!   long script (`BUSY`) also gives a retryable
//!   [`StorageErrorKind::Timeout`].
//! * Durability is Redis's own. Redis replicates asynchronously, so a
//!   failover (automatic after a master fails, or forced while it is
//!   paused) can lose the last writes that the old master acknowledged;
//!   a test that paused a cluster master, forced its replica to take over
//!   and resumed it lost one acknowledged write in each of three runs.
//!   [`RedisOptions::with_replica_wait`] makes every write wait for the
//!   replicas (`WAIT`, on the connection that carried it; on a cluster,
//!   the written slot's master): a write that returned `Ok` has reached
//!   them, and one that did not fails with the retryable
//!   [`StorageErrorKind::NotReplicated`], its outcome unknown (the same
//!   test lost none of about a thousand writes so acknowledged, nor did a
//!   kill -9 of a master or a migration of 1000 slots under writes). It is
//!   not strong consistency: a reconnect between a write and its `WAIT`,
//!   or a failover to a replica that had not acknowledged (when fewer than
//!   all replicas are required), can still lose a write, and nothing is
//!   fsynced by it.
//!
//! # As the fast store of a `TieredStorage`
//!
//! `RedisStorage` implements [`FastTier`](byok_core::FastTier), so a
//! [`TieredStorage`](byok_core::TieredStorage) in front of a SQL store
//! fills it with leases and bounds every copy's lifetime: processes that
//! share the Redis never put back a key that one of them replaced or
//! deleted. Each step (look up or lease, fill, hold, settle, and the
//! user-wide hold and settle of `clear_all`) is one script over the keys
//! of the table above; every one of those keys carries a Redis expiry, set
//! by the server's clock (`PX`). Copies are not written with
//! [`with_replica_wait`](RedisOptions::with_replica_wait): a copy lost in
//! a failover is only a miss.
//!
//! ## `purge_expired`
//!
//! Walks the expiry set of each of the 1024 buckets and removes every slot
//! whose expiry has passed: the record from the user's hash, and the user
//! from the bucket when that was its last key. It returns how many slots it
//! removed. It is what frees the memory of expired keys, so run it
//! regularly. It costs at least one round trip per bucket.
//!
//! An expired member of an expiry set that names no slot of its bucket (not
//! of the `<len>:<user><provider>` form, an invalid id, or a user of another
//! bucket; byok never writes one) is removed as it is met, with a
//! `tracing` warning, and is not counted: left in place it would stall
//! every later purge of the bucket, or name keys of another hash slot.
//!
//! `list_providers` only reads: it leaves expired keys for the purge. This
//! store starts no background task and does not read
//! [`ByokConfig::auto_cleanup`]: the [`Byok`](byok_core::Byok) manager runs
//! [`purge_every`](byok_core::store::purge_every) when it is on, and an
//! application without a manager spawns that loop itself.
//!
//! ## `scan`
//!
//! Walks buckets 0 to 1023, in each the users in byte order, for each user
//! the providers in byte order; the cursor (`r1:<bucket>[:<slot>]`) holds
//! the last slot visited. Since the order is total and fixed, every key
//! present for the whole walk is returned exactly once, on a server and on
//! a cluster (also across a resharding, which moves whole slots), whatever
//! is written in parallel; keys written or removed during the walk may or
//! may not be returned. A page may be short, even empty, before the end:
//! one call stops after a bounded number of round trips. Each user's hash
//! is read whole, once per page that reaches the user. Runs of empty
//! buckets are read in growing concurrent batches, so walking an empty or
//! sparse store takes a few dozen round trips, not 1024. The walk does not
//! use `SCAN`, whose duplicates and hints would break exactly-once.
//!
//! # Server requirements
//!
//! **`maxmemory-policy noeviction`** (Redis's default). Under any other
//! policy a full Redis evicts keys to make room: a user's hash (the user's
//! keys are lost), or a bucket's set (`scan` and `purge_expired` then miss
//! keys that are still stored). With `noeviction`, a full Redis refuses `store`,
//! `store_if_absent` and `compare_and_swap` instead, before they change anything, with a
//! [`StorageErrorKind::Rejected`] error; deleting, clearing and purging
//! still work and free memory. Opening
//! reads the policy (`CONFIG GET`, on every master of
//! a cluster) and logs a `tracing` warning when it is not `noeviction`; when
//! `CONFIG` is disabled, as on some managed services, it skips the check.
//! It never fails because of it.
//!
//! ## Redis version
//!
//! **Minimum supported: Redis 7.0**, the version the tests run against,
//! standalone and as a cluster. The commands used are all older than
//! that: `HGET`, `HSET`, `HSETNX`, `HDEL`, `HEXISTS`, `HKEYS`, `HLEN`,
//! `HGETALL`, `GET`, `SET`, `DEL`, `EXISTS`, `SCAN`, `ZADD`, `ZREM`, `ZCARD`,
//! `ZCOUNT`, `ZSCORE`, `ZRANGEBYLEX`, `ZRANGEBYSCORE`, `EVALSHA` and `SCRIPT LOAD`,
//! `INCR`, `PTTL`, `PEXPIRE` and `WAIT` (for the two options above), plus
//! `CLUSTER SLOTS` for a cluster. The scripts are deterministic (the time
//! comes from the client), so they replicate the same way under any
//! replication mode. Versions before 7.0 are not tested.
//!
//! [`ByokConfig::session_key_prefix`]: byok_core::ByokConfig::session_key_prefix
//! [`ByokConfig::auto_cleanup`]: byok_core::ByokConfig::auto_cleanup
//! [`StoreAdmin`]: byok_core::StoreAdmin
//! [`StoreAdmin::migrate`]: byok_core::StoreAdmin::migrate
//! [`StoreAdmin::schema_status`]: byok_core::StoreAdmin::schema_status
//! [`StorageErrorKind::Timeout`]: byok_core::error::StorageErrorKind::Timeout
//! [`StorageErrorKind::Rejected`]: byok_core::error::StorageErrorKind::Rejected
//! [`StorageErrorKind::NotReplicated`]: byok_core::error::StorageErrorKind::NotReplicated

mod admin;
mod connection;
mod error;
mod fast_tier;
mod layout;
mod migrate;
mod options;
mod purge;
mod record;
mod scan;
mod scripts;
mod storage;
mod tls;
mod url;

pub use connection::{RedisStorage, RedisStorageBuilder};
pub use layout::MAX_PREFIX_LEN;
// The layout's rules, for this crate's integration tests, which lay keys
// out by hand; not part of the API.
#[doc(hidden)]
pub use layout::{bucket_of, encode_id};
pub use options::{RedisOptions, ReplicaWait};
pub use redis;
