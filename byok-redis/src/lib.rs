//! Redis storage for byok: [`RedisStorage`], for a standalone Redis server
//! and (with the `cluster` feature) for Redis Cluster, through one type and
//! one code path.
//!
//! Keys are kept as Redis hashes with Redis's own expiry on them, and every
//! multi-key change is one Lua script, so a store, a delete, a clear or a
//! compare-and-swap is atomic on a single server and on a cluster alike.
//!
//! ```no_run
//! use byok_core::{ApiKey, ByokConfig, KeyStorage};
//! use byok_redis::RedisStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> byok_core::Result<()> {
//! let config = ByokConfig::default();
//! let store = RedisStorage::connect("redis://127.0.0.1:6379", &config).await?;
//! store.store(&ApiKey::new("alice", "openai", b"ciphertext".to_vec())?).await?;
//! assert_eq!(store.list_providers("alice").await?, ["openai"]);
//!
//! // A cluster (with the `cluster` feature): one `redis+cluster://` URL
//! // listing seed nodes, or several comma-separated `redis://` URLs.
//! let cluster = RedisStorage::open("redis+cluster://node-a:7000,node-b:7000", &config).await?;
//! assert!(cluster.is_cluster());
//! # Ok(())
//! # }
//! ```
//!
//! Setting up needs no server; the layout rules can be checked offline:
//!
//! ```
//! use byok_redis::{RedisOptions, bucket_of, check_prefix, encode_id, parse_urls};
//! use std::time::Duration;
//!
//! assert_eq!(encode_id("a:b"), "a%3Ab");
//! assert!(check_prefix("myapp:byok:").is_ok());
//! assert!(check_prefix("bad{prefix}").is_err());
//! assert!(bucket_of("alice") < byok_redis::BUCKETS);
//!
//! let options = RedisOptions::default().with_response_timeout(Duration::from_secs(1));
//! assert_eq!(options.response_timeout(), Duration::from_secs(1));
//!
//! let nodes = parse_urls("redis+cluster://:pw@h1:7000,h2:7001")?;
//! assert_eq!(nodes.urls(), ["redis://:pw@h1:7000", "redis://:pw@h2:7001"]);
//! assert!(nodes.is_cluster());
//! # Ok::<(), byok_core::ConfigError>(())
//! ```
//!
//! # Key layout
//!
//! Users are spread over [`BUCKETS`] (1024) buckets by [`bucket_of`] (FNV-1a
//! of the user id). Every key of a bucket carries the bucket's hash tag, so
//! everything that one operation touches lives in one hash slot. With the
//! prefix `P` (default: [`ByokConfig::session_key_prefix`], `byok_`), bucket
//! `B` as three hex digits, and ids encoded by [`encode_id`]:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P{B}:k:<user>:<provider>` | hash | one key: `v` ciphertext, `c` created (Unix ms), `h` hint (optional), `e` expires (Unix ms, optional); Redis expires the hash at `e` (`PEXPIREAT`) |
//! | `P{B}:i:<user>` | sorted set, scores 0 | the user's providers, in byte order |
//! | `P{B}:users` | sorted set, scores 0 | the users of the bucket that have keys, in byte order |
//! | `P{B}:exp` | sorted set | the bucket's expiring slots, scored by expiry (Unix ms) |
//!
//! [`encode_id`] keeps letters, digits and `-._~@+` and percent-encodes
//! every other byte, so encoded ids never hold `{`, `}` or `:`, and no two
//! (user, provider) pairs share a key, whatever characters they hold. The
//! prefix may not hold braces either ([`check_prefix`]); the hash tag is
//! always `{B}`. Listing and clearing read the user's own index, never
//! `KEYS` or `SCAN`, and never touch another user's keys.
//!
//! The layout — the bucket count, the hash, the encoding — is part of the
//! stored format and will not change within a major version. A cluster
//! spreads the 1024 bucket slots over its masters, which balances well up
//! to a few dozen masters. Scripts run one at a time on their server: a
//! `clear_all` of a user with many keys is one script over all of them.
//!
//! # Guarantees
//!
//! * `store`, `delete`, `clear_all`, `compare_and_swap` and each batch of
//!   `purge_expired` are single Lua scripts (through
//!   [`redis::Script::invoke_async`], which reloads a script the server lost),
//!   naming every key in `KEYS`: atomic on a server and on a cluster.
//!   `clear_all` first reads the user's index, then runs its script only if
//!   the index is unchanged (and reads again if not).
//! * Expiry is checked at read time against this process's clock, and Redis
//!   also expires the hash itself (against the server's clock), so an
//!   expired key is never returned; keep the clocks in sync, as a server
//!   whose clock runs ahead drops keys early.
//! * A key stored with an expiry already in the past is written as index
//!   entries only: it reads as absent at once, `delete` still reports it
//!   until it is purged, and `purge_expired` removes and counts it.
//! * Every command fails within a bounded time when Redis is unreachable
//!   (see [`RedisOptions`]) with a retryable error, and the store reconnects
//!   by itself when Redis is back. A server busy with another client's
//!   long script (`BUSY`) also gives a retryable
//!   [`StorageErrorKind::Timeout`].
//!
//! ## `purge_expired`
//!
//! Walks the expiry set of each of the 1024 buckets and removes every slot
//! whose expiry has passed: the hash (which Redis has usually dropped by
//! then), the provider from the user's index, and the user from the bucket
//! when that was its last key. It returns how many slots it removed. Redis
//! frees the memory of expired hashes by itself; purging keeps the indexes
//! small. It costs at least one round trip per bucket.
//!
//! An expired member of an expiry set that names no slot of its bucket (not
//! of the `<len>:<user><provider>` form, an invalid id, or a user of another
//! bucket; byok never writes one) is removed as it is met, with a
//! `tracing` warning, and is not counted: left in place it would stall
//! every later purge of the bucket, or name keys of another hash slot.
//!
//! `list_providers` only reads: it leaves expired entries for the purge,
//! so `delete` reports an expired key as stored, and the purge counts it,
//! until a purge removes it. This store starts no background task, whatever
//! [`ByokConfig::auto_cleanup`] says: call `purge_expired` from a periodic
//! job.
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
//! one call stops after a bounded number of round trips. Runs of empty
//! buckets are read in growing concurrent batches, so walking an empty or
//! sparse store takes a few dozen round trips, not 1024. The walk does not
//! use `SCAN`, whose duplicates and hints would break exactly-once.
//!
//! # Server requirements
//!
//! **`maxmemory-policy noeviction`** (Redis's default). Under any other
//! policy a full Redis evicts keys to make room: a key's hash before its
//! expiry (a stored key is lost), or an index (`list_providers`,
//! `clear_all`, `scan` and `purge_expired` then miss keys that are still
//! stored). With `noeviction`, a full Redis refuses `store` and
//! `compare_and_swap` instead, before they change anything, with a
//! [`StorageErrorKind::Rejected`] error; deleting, clearing and purging
//! still work and free memory. `connect`
//! and `connect_cluster` read the policy (`CONFIG GET`, on every master of
//! a cluster) and log a `tracing` warning when it is not `noeviction`; when
//! `CONFIG` is disabled, as on some managed services, they skip the check.
//! They never fail because of it.
//!
//! ## Redis version
//!
//! **Minimum supported: Redis 7.0**, the version the tests run against,
//! standalone and as a cluster. By the commands used the floor would be Redis 4.0
//! (multi-field `HSET` is the newest of them): `HSET`, `HGETALL`, `HMGET`,
//! `DEL`, `EXISTS`, `PEXPIREAT`, `ZADD`, `ZREM`, `ZCARD`, `ZSCORE`,
//! `ZRANGEBYLEX`, `ZRANGEBYSCORE`, `EVALSHA` and `SCRIPT LOAD`, plus
//! `CLUSTER SLOTS` for a cluster. The scripts are deterministic (the time
//! comes from the client), so they replicate the same way under any
//! replication mode. Versions before 7.0 are not tested.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use byok_core::error::{ConfigError, StorageError, StorageErrorKind};
use byok_core::storage::check_same_slot;
use byok_core::{ApiKey, ByokConfig, ByokError, Cursor, KeyStorage, Result, ScanPage, validate};
use chrono::{DateTime, TimeZone, Utc};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

mod layout;
mod scripts;

pub use layout::{BUCKETS, MAX_PREFIX_LEN, bucket_of, check_prefix, encode_id};
pub use redis;

use layout::{Layout, Position, expiry_member, expiry_member_prefix, parse_expiry_member};

const BACKEND: &str = "redis";

/// How many round trips one `scan` call makes at most before it returns a
/// (possibly short) page.
const SCAN_ROUND_TRIPS: usize = 256;
/// How many empty buckets `scan` probes at once at most.
const SCAN_PROBE_MAX: u16 = 32;
/// How many users one round trip of `scan` reads from a bucket.
const SCAN_USER_BATCH: usize = 64;
/// How many expired slots one purge script removes at most.
const PURGE_BATCH: usize = 256;
/// How many buckets `purge_expired` works on at once.
const PURGE_CONCURRENCY: usize = 8;
/// How often `clear_all` reads the index again when it changed under it.
const CLEAR_ATTEMPTS: usize = 16;

/// Connection settings of a [`RedisStorage`].
///
/// Every command sent to Redis, including waiting for a reconnect, fails
/// with a retryable [`StorageErrorKind::Timeout`] once
/// `connection_timeout + response_timeout` has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    connection_timeout: Duration,
    response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connection_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(3),
        }
    }
}

impl RedisOptions {
    /// How long one attempt to connect may take. Default: 2 seconds.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long Redis may take to answer a command. Default: 3 seconds.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long one attempt to connect may take.
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// How long Redis may take to answer a command.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The longest one command may take, reconnecting included.
    pub fn command_deadline(&self) -> Duration {
        self.connection_timeout + self.response_timeout
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.connection_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(ConfigError::new("Redis timeouts must be longer than zero"));
        }
        Ok(())
    }
}

/// Where a storage URL points: one server, or the nodes of a cluster. Made
/// by [`parse_urls`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrls {
    urls: Vec<String>,
    cluster: bool,
}

impl RedisUrls {
    /// The URL of each node: `redis://`, `rediss://`, or for one server on
    /// a Unix socket `redis+unix://` or `unix://`.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Whether these are the nodes of a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }
}

impl fmt::Debug for RedisUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrls")
            .field("nodes", &describe_nodes(&self.urls))
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Parses a storage URL for Redis.
///
/// * `redis://…` or `rediss://…`: one server.
/// * `redis+unix:///path/to/socket` (also `unix://`): one server on a Unix
///   socket.
/// * `redis+cluster://[user:password@]host1:port1,host2:port2[/]` (also
///   `rediss+cluster://`, `redis-cluster://`): the seed nodes of a cluster,
///   sharing the credentials.
/// * Several `redis://` or `rediss://` URLs separated by commas: the seed
///   nodes of a cluster. Commas separate nodes only when every part starts
///   with `redis://` or `rediss://`; otherwise the whole string is one URL,
///   so a password may hold a comma (percent-encoding it as `%2C` is
///   never ambiguous).
///
/// Errors never repeat the URL, which may hold a password.
///
/// ```
/// use byok_redis::parse_urls;
///
/// let one = parse_urls("redis://:pa,ss@db:6379")?;
/// assert!(!one.is_cluster());
/// assert_eq!(one.urls(), ["redis://:pa,ss@db:6379"]);
///
/// let list = parse_urls("redis://h1:7000,rediss://h2:7001")?;
/// assert!(list.is_cluster());
///
/// let socket = parse_urls("redis+unix:///run/redis.sock")?;
/// assert!(!socket.is_cluster());
/// # Ok::<(), byok_core::ConfigError>(())
/// ```
pub fn parse_urls(url: &str) -> Result<RedisUrls, ConfigError> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        ConfigError::new(
            "a Redis URL must start with redis://, rediss://, redis+unix:// or redis+cluster://",
        )
    })?;
    let scheme = scheme.to_ascii_lowercase();
    let cluster_scheme = match scheme.as_str() {
        "redis+cluster" | "redis-cluster" => Some("redis"),
        "rediss+cluster" | "rediss-cluster" => Some("rediss"),
        "redis" | "rediss" => None,
        "redis+unix" | "unix" => {
            check_socket_url(url)?;
            return Ok(RedisUrls {
                urls: vec![url.to_owned()],
                cluster: false,
            });
        }
        _ => {
            return Err(ConfigError::new(
                "a Redis URL must start with redis://, rediss://, redis+unix:// or redis+cluster://",
            ));
        }
    };
    if let Some(node_scheme) = cluster_scheme {
        let rest = rest.trim_end_matches('/');
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (Some(auth), hosts),
            None => (None, rest),
        };
        let urls: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| match auth {
                Some(a) => format!("{node_scheme}://{a}@{h}"),
                None => format!("{node_scheme}://{h}"),
            })
            .collect();
        if urls.is_empty() || hosts.contains('/') {
            return Err(ConfigError::new(
                "a redis+cluster:// URL must list host:port pairs separated by commas",
            ));
        }
        for u in &urls {
            check_url(u)?;
        }
        return Ok(RedisUrls {
            urls,
            cluster: true,
        });
    }
    let parts: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let is_node = |u: &str| {
        let lower = u.get(..9).unwrap_or(u).to_ascii_lowercase();
        lower.starts_with("redis://") || lower.starts_with("rediss://")
    };
    if url.contains(',') && !parts.is_empty() && parts.iter().all(|u| is_node(u)) {
        for u in &parts {
            check_url(u)?;
        }
        let cluster = parts.len() > 1;
        return Ok(RedisUrls {
            urls: parts.into_iter().map(str::to_owned).collect(),
            cluster,
        });
    }
    check_url(url).map_err(|e| {
        if url.contains(',') {
            ConfigError::new(
                "a Redis URL could not be parsed (to list the nodes of a cluster, start every \
                 comma-separated part with redis:// or rediss://, or use redis+cluster://)",
            )
        } else {
            e
        }
    })?;
    Ok(RedisUrls {
        urls: vec![url.to_owned()],
        cluster: false,
    })
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    match url::Url::parse(url) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err(ConfigError::new("a Redis URL must name a host")),
        Err(e) => Err(ConfigError::new("a Redis URL could not be parsed").with_source(e)),
    }
}

fn check_socket_url(url: &str) -> Result<(), ConfigError> {
    match url::Url::parse(url) {
        Ok(u) if u.path().len() > 1 => Ok(()),
        Ok(_) => Err(ConfigError::new(
            "a redis+unix:// URL must name the socket's path",
        )),
        Err(e) => Err(ConfigError::new("a Redis URL could not be parsed").with_source(e)),
    }
}

/// `host:port` of each URL, without credentials.
fn describe_nodes<S: AsRef<str>>(urls: &[S]) -> Vec<String> {
    urls.iter()
        .map(|u| match url::Url::parse(u.as_ref()) {
            Ok(p) => match p.host_str() {
                Some(h) if !h.is_empty() => {
                    format!("{h}:{}", p.port().unwrap_or(6379))
                }
                _ => format!("{}:<local>", p.scheme()),
            },
            Err(_) => "<unparsable URL>".to_owned(),
        })
        .collect()
}

/// A connection to one server or to a cluster. Clones share it.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Redis (or Redis Cluster) [`KeyStorage`]. See the [crate docs](crate).
///
/// Clones share the connection, which reconnects by itself.
#[derive(Clone)]
pub struct RedisStorage {
    conn: Connection,
    layout: Layout,
    options: RedisOptions,
    nodes: Arc<[String]>,
}

impl fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStorage")
            .field(
                "mode",
                &if self.is_cluster() {
                    "cluster"
                } else {
                    "standalone"
                },
            )
            .field("nodes", &self.nodes)
            .field("prefix", &self.layout.prefix())
            .field("options", &self.options)
            .finish()
    }
}

impl RedisStorage {
    /// Connects to one Redis server (`redis://` or `rediss://`; TLS needs the
    /// `redis` crate's TLS features), with the key prefix of `config` and
    /// default [`RedisOptions`].
    pub async fn connect(url: &str, config: &ByokConfig) -> Result<Self> {
        Self::connect_with(url, config, RedisOptions::default()).await
    }

    /// [`connect`](Self::connect) with explicit options.
    pub async fn connect_with(
        url: &str,
        config: &ByokConfig,
        options: RedisOptions,
    ) -> Result<Self> {
        options.check()?;
        let layout = Layout::new(&config.session_key_prefix)?;
        let client = redis::Client::open(url).map_err(|e| {
            let message = if url.trim_start().to_ascii_lowercase().starts_with("rediss:") {
                "the Redis URL is not usable (rediss:// needs TLS support, which this build \
                 of the redis crate may lack: enable one of its TLS features)"
            } else {
                "the Redis URL is not usable"
            };
            ConfigError::new(message).with_source(e)
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connection_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let deadline = options.command_deadline();
        let manager = match tokio::time::timeout(
            deadline,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(storage_error(e, "connecting to Redis failed")),
            Err(_) => return Err(timeout_error(deadline)),
        };
        let store = RedisStorage {
            conn: Connection::Single(manager),
            layout,
            options,
            nodes: describe_nodes(&[url]).into(),
        };
        store.check_eviction_policy().await;
        Ok(store)
    }

    /// Connects to a Redis Cluster through its seed nodes (`redis://` URLs),
    /// with the key prefix of `config` and default [`RedisOptions`].
    #[cfg(feature = "cluster")]
    pub async fn connect_cluster<S: AsRef<str>>(urls: &[S], config: &ByokConfig) -> Result<Self> {
        Self::connect_cluster_with(urls, config, RedisOptions::default()).await
    }

    /// [`connect_cluster`](Self::connect_cluster) with explicit options.
    #[cfg(feature = "cluster")]
    pub async fn connect_cluster_with<S: AsRef<str>>(
        urls: &[S],
        config: &ByokConfig,
        options: RedisOptions,
    ) -> Result<Self> {
        options.check()?;
        let layout = Layout::new(&config.session_key_prefix)?;
        if urls.is_empty() {
            return Err(ConfigError::new("a Redis Cluster needs at least one node URL").into());
        }
        let nodes: Vec<&str> = urls.iter().map(AsRef::as_ref).collect();
        let client = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(options.connection_timeout)
            .response_timeout(options.response_timeout)
            .retries(2)
            .max_retry_wait(1000)
            .build()
            .map_err(|e| {
                ConfigError::new("the Redis Cluster URLs are not usable").with_source(e)
            })?;
        let deadline = options.command_deadline();
        let conn = match tokio::time::timeout(deadline, client.get_async_connection()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(storage_error(e, "connecting to Redis Cluster failed")),
            Err(_) => return Err(timeout_error(deadline)),
        };
        let store = RedisStorage {
            conn: Connection::Cluster(conn),
            layout,
            options,
            nodes: describe_nodes(urls).into(),
        };
        store.check_eviction_policy().await;
        Ok(store)
    }

    /// Connects to what `url` names (see [`parse_urls`]): one server (over
    /// TCP, or a Unix socket with `redis+unix://`), or a cluster given as `redis+cluster://h1:p1,h2:p2` or as several
    /// comma-separated `redis://` URLs. A cluster needs the `cluster`
    /// feature.
    pub async fn open(url: &str, config: &ByokConfig) -> Result<Self> {
        Self::open_with(url, config, RedisOptions::default()).await
    }

    /// [`open`](Self::open) with explicit options.
    pub async fn open_with(url: &str, config: &ByokConfig, options: RedisOptions) -> Result<Self> {
        let parsed = parse_urls(url)?;
        if !parsed.is_cluster() {
            let [single] = parsed.urls() else {
                return Err(ConfigError::new("the Redis URL names no server").into());
            };
            return Self::connect_with(single, config, options).await;
        }
        #[cfg(feature = "cluster")]
        {
            Self::connect_cluster_with(parsed.urls(), config, options).await
        }
        #[cfg(not(feature = "cluster"))]
        {
            Err(ConfigError::new(
                "the URL names a Redis Cluster, but byok-redis was built without its `cluster` feature",
            )
            .into())
        }
    }

    /// Uses an existing [`ConnectionManager`] to one server, with the key
    /// prefix of `config`. Its own timeouts apply; each command is also cut
    /// off after [`RedisOptions::command_deadline`] of the default options.
    pub fn from_connection_manager(
        manager: ConnectionManager,
        config: &ByokConfig,
    ) -> Result<Self> {
        Ok(RedisStorage {
            conn: Connection::Single(manager),
            layout: Layout::new(&config.session_key_prefix)?,
            options: RedisOptions::default(),
            nodes: Arc::from(vec!["<given connection>".to_owned()]),
        })
    }

    /// The same store under another key prefix (see [`check_prefix`]).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        self.layout = Layout::new(prefix)?;
        Ok(self)
    }

    /// The prefix of every Redis key of this store.
    pub fn prefix(&self) -> &str {
        self.layout.prefix()
    }

    /// The connection settings.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        match self.conn {
            Connection::Single(_) => false,
            #[cfg(feature = "cluster")]
            Connection::Cluster(_) => true,
        }
    }

    /// The Redis key that holds the key of a slot (a hash), for tools and
    /// tests. Fails on invalid ids.
    pub fn redis_key(&self, user_id: &str, provider: &str) -> Result<String> {
        validate::slot(user_id, provider)?;
        Ok(self.layout.key(user_id, provider))
    }

    /// The Redis key of a user's index of providers. Fails on an invalid id.
    pub fn redis_index_key(&self, user_id: &str) -> Result<String> {
        validate::user_id(user_id)?;
        Ok(self.layout.user_index(user_id))
    }

    /// Logs a warning for each server whose `maxmemory-policy` is not
    /// `noeviction` (see the [crate docs](crate#server-requirements)).
    /// Never fails: a server that refuses `CONFIG` is not checked.
    async fn check_eviction_policy(&self) {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        let replies: Vec<(String, Value)> = match &self.conn {
            Connection::Single(_) => match self
                .query::<Value>("reading maxmemory-policy failed", &cmd)
                .await
            {
                Ok(v) => vec![(self.nodes.join(","), v)],
                Err(e) => {
                    tracing::debug!(error = %e, "could not read Redis's maxmemory-policy");
                    return;
                }
            },
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => {
                use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                let mut c = c.clone();
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match self
                    .run(
                        "reading maxmemory-policy failed",
                        c.route_command(cmd, routing),
                    )
                    .await
                {
                    Ok(Value::Map(per_node)) => per_node
                        .into_iter()
                        .map(|(node, v)| {
                            let node = redis::from_redis_value_ref::<String>(&node)
                                .unwrap_or_else(|_| "<unknown node>".to_owned());
                            (node, v)
                        })
                        .collect(),
                    Ok(_) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "could not read Redis's maxmemory-policy");
                        return;
                    }
                }
            }
        };
        for (node, reply) in replies {
            match eviction_policy(&reply) {
                Some(policy) if policy != "noeviction" => tracing::warn!(
                    node = %node,
                    policy = %policy,
                    "Redis's maxmemory-policy is not noeviction: a full Redis may evict \
                     stored byok keys or their indexes"
                ),
                Some(_) => {}
                None => tracing::debug!(node = %node, "could not read Redis's maxmemory-policy"),
            }
        }
    }

    /// Runs one round trip with the command deadline.
    async fn run<T, F>(&self, what: &'static str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = self.options.command_deadline();
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(storage_error(e, what)),
            Err(_) => Err(timeout_error(deadline)),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, what: &'static str, cmd: &Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        self.run(what, cmd.query_async(&mut conn)).await
    }

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
    async fn read_keys(&self, user: &str, providers: &[String]) -> Result<Vec<Option<ApiKey>>> {
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

/// The policy in a `CONFIG GET maxmemory-policy` reply (an array of name
/// and value over RESP2, a map over RESP3); `None` for anything else, such
/// as the error a server with `CONFIG` disabled answers.
fn eviction_policy(reply: &Value) -> Option<String> {
    let text = |v: &Value| redis::from_redis_value_ref::<String>(v).ok();
    match reply {
        Value::Array(items) => match items.as_slice() {
            [name, value] if text(name).as_deref() == Some("maxmemory-policy") => text(value),
            _ => None,
        },
        Value::Map(pairs) => pairs
            .iter()
            .find(|(name, _)| text(name).as_deref() == Some("maxmemory-policy"))
            .and_then(|(_, value)| text(value)),
        _ => None,
    }
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn corrupt(message: &'static str) -> ByokError {
    StorageError::new(BACKEND, StorageErrorKind::Corrupt, message).into()
}

fn timeout_error(deadline: Duration) -> ByokError {
    StorageError::new(
        BACKEND,
        StorageErrorKind::Timeout,
        format!("no answer from Redis within {deadline:?}"),
    )
    .into()
}

/// Maps a driver error to a storage error of the right kind.
fn storage_error(e: RedisError, what: &'static str) -> ByokError {
    // BUSY: another client's script has run past the server's time limit;
    // the server answers again once it ends or is killed.
    let kind = if e.is_timeout() || e.code() == Some("BUSY") {
        StorageErrorKind::Timeout
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
    {
        StorageErrorKind::Unavailable
    } else {
        // MOVED, ASK, TRYAGAIN and CLUSTERDOWN are cluster errors, above.
        match e.kind() {
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly,
            )
            | ErrorKind::ClusterConnectionNotFound => StorageErrorKind::Unavailable,
            ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::Server(ServerErrorKind::NoPerm | ServerErrorKind::CrossSlot) => {
                StorageErrorKind::Rejected
            }
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StorageErrorKind::Corrupt,
            _ if is_wrong_type(&e) => StorageErrorKind::Corrupt,
            _ if e.code() == Some("OOM") => StorageErrorKind::Rejected,
            _ => StorageErrorKind::Other,
        }
    };
    let message = if kind == StorageErrorKind::Corrupt {
        "a value at a byok key is not of the byok format"
    } else {
        what
    };
    StorageError::new(BACKEND, kind, message)
        .with_source(e)
        .into()
}

/// `WRONGTYPE`, directly or raised inside a script.
fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
        || e.detail().is_some_and(|d| d.contains("WRONGTYPE"))
        || e.to_string().contains("WRONGTYPE")
}

/// A key from the fields of its hash; `None` when the hash is absent.
fn decode(
    user: &str,
    provider: &str,
    mut fields: HashMap<Vec<u8>, Vec<u8>>,
) -> Result<Option<ApiKey>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let value = fields
        .remove(b"v".as_slice())
        .ok_or_else(|| corrupt("a byok key hash has no ciphertext field"))?;
    let created = fields
        .remove(b"c".as_slice())
        .and_then(|c| parse_millis(&c))
        .ok_or_else(|| corrupt("a byok key hash has no valid creation time"))?;
    let hint = match fields.remove(b"h".as_slice()) {
        None => None,
        Some(h) => Some(
            String::from_utf8(h).map_err(|_| corrupt("a byok key hash has a non-UTF-8 hint"))?,
        ),
    };
    let expires = match fields.remove(b"e".as_slice()) {
        None => None,
        Some(e) => {
            Some(parse_millis(&e).ok_or_else(|| corrupt("a byok key hash has an invalid expiry"))?)
        }
    };
    if !fields.is_empty() {
        return Err(corrupt("a byok key hash has unknown fields"));
    }
    let key = ApiKey::new(user, provider, value)
        .and_then(|k| k.with_hint(hint))
        .map_err(|_| {
            corrupt("a byok key hash, or the index naming it, holds an invalid id or hint")
        })?
        .with_created_at(created)
        .with_expires_at(expires);
    Ok(Some(key))
}

fn parse_millis(bytes: &[u8]) -> Option<DateTime<Utc>> {
    std::str::from_utf8(bytes)
        .ok()?
        .parse::<i64>()
        .ok()
        .and_then(millis_to_time)
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
        use futures::stream::{self, StreamExt, TryStreamExt};
        stream::iter(0..BUCKETS)
            .map(|bucket| self.purge_bucket(bucket))
            .buffer_unordered(PURGE_CONCURRENCY)
            .try_fold(0u64, |total, n| async move { Ok(total + n) })
            .await
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
        validate::page_size(limit)?;
        let mut pos = match cursor {
            Some(c) => Position::from_cursor(c)?,
            None => Position::START,
        };
        let mut keys: Vec<ApiKey> = Vec::new();
        // Users of the current bucket after `pos`, read ahead in one batch.
        let mut next_users: VecDeque<String> = VecDeque::new();
        let mut trips = 0usize;
        let mut probe: u16 = 1;
        let now = Utc::now();
        loop {
            if pos.bucket >= BUCKETS {
                return Ok(ScanPage { keys, next: None });
            }
            if keys.len() == limit || trips >= SCAN_ROUND_TRIPS {
                return Ok(ScanPage {
                    keys,
                    next: Some(pos.to_cursor()),
                });
            }
            match pos.after.clone() {
                Some((user, after_provider)) => {
                    let need = limit - keys.len();
                    let mut read = redis::cmd("ZRANGEBYLEX");
                    read.arg(self.layout.user_index(&user))
                        .arg(exclusive_after(&after_provider))
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(need);
                    let raw: Vec<Vec<u8>> = self.query("scanning failed", &read).await?;
                    trips += 1;
                    let providers = raw
                        .into_iter()
                        .map(|p| {
                            String::from_utf8(p)
                                .map_err(|_| corrupt("a provider index holds non-UTF-8"))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let found = self.read_keys(&user, &providers).await?;
                    if !providers.is_empty() {
                        trips += 1;
                    }
                    keys.extend(
                        found
                            .into_iter()
                            .flatten()
                            .filter(|k| !k.is_expired_at(now)),
                    );
                    if providers.len() == need {
                        if let Some(last) = providers.last() {
                            pos.after = Some((user, last.clone()));
                        }
                        continue;
                    }
                    // This user is done: on to the next one of the bucket.
                    if next_users.is_empty() {
                        next_users = self.users_after(pos.bucket, Some(&user)).await?;
                        trips += 1;
                    }
                    match next_users.pop_front() {
                        Some(u) => pos.after = Some((u, String::new())),
                        None => pos = next_bucket(pos.bucket),
                    }
                }
                None => {
                    // The start of a bucket: read the first users of the next
                    // `probe` buckets at once, doubling `probe` while they
                    // come back empty, so a sparse store costs few round trips.
                    let end = pos.bucket.saturating_add(probe).min(BUCKETS);
                    let firsts = futures::future::try_join_all(
                        (pos.bucket..end).map(|b| self.users_after(b, None)),
                    )
                    .await?;
                    trips += 1;
                    let found = (pos.bucket..end)
                        .zip(firsts)
                        .find_map(|(b, mut users)| users.pop_front().map(|u| (b, u, users)));
                    match found {
                        Some((bucket, first, rest)) => {
                            pos = Position {
                                bucket,
                                after: Some((first, String::new())),
                            };
                            next_users = rest;
                            probe = 1;
                        }
                        None => {
                            pos = Position {
                                bucket: end,
                                after: None,
                            };
                            probe = (probe * 2).min(SCAN_PROBE_MAX);
                        }
                    }
                }
            }
        }
    }
}

impl RedisStorage {
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
                inv.key(self.layout.user_index(user))
                    .key(self.layout.key(user, provider))
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

    /// Up to [`SCAN_USER_BATCH`] users of a bucket after `after`, in byte order.
    async fn users_after(&self, bucket: u16, after: Option<&str>) -> Result<VecDeque<String>> {
        let mut read = redis::cmd("ZRANGEBYLEX");
        read.arg(self.layout.bucket_users(bucket))
            .arg(exclusive_after(after.unwrap_or("")))
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(SCAN_USER_BATCH);
        let raw: Vec<Vec<u8>> = self.query("scanning failed", &read).await?;
        raw.into_iter()
            .map(|u| {
                String::from_utf8(u)
                    .ok()
                    .filter(|u| validate::user_id(u).is_ok())
                    .ok_or_else(|| corrupt("a bucket's user set holds an invalid user id"))
            })
            .collect()
    }
}

/// The `ZRANGEBYLEX` bound just after `member` (`(` and the member: every
/// member is non-empty, so `(` alone starts at the first).
fn exclusive_after(member: &str) -> Vec<u8> {
    let mut bound = Vec::with_capacity(member.len() + 1);
    bound.push(b'(');
    bound.extend_from_slice(member.as_bytes());
    bound
}

fn next_bucket(bucket: u16) -> Position {
    Position {
        bucket: bucket + 1,
        after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_for_one_server_and_for_clusters() {
        let one = parse_urls("redis://:secret@127.0.0.1:6379/2").unwrap();
        assert!(!one.is_cluster());
        assert_eq!(one.urls(), ["redis://:secret@127.0.0.1:6379/2"]);

        let list = parse_urls("redis://a:1, redis://b:2,redis://c:3").unwrap();
        assert!(list.is_cluster());
        assert_eq!(list.urls().len(), 3);

        let c = parse_urls("rediss+cluster://u:pw@h1:7000,h2:7001/").unwrap();
        assert!(c.is_cluster());
        assert_eq!(c.urls(), ["rediss://u:pw@h1:7000", "rediss://u:pw@h2:7001"]);

        for bad in [
            "",
            "h1:7000",
            "http://x",
            "redis+cluster://",
            "redis://a:1,http://b",
            "redis://a:1, b:2",
            "redis+unix://",
            "unix:///",
        ] {
            assert!(parse_urls(bad).is_err(), "{bad:?}");
        }
        let hint = parse_urls("redis://a:1, b:2").unwrap_err();
        assert!(hint.to_string().contains("redis+cluster://"), "{hint}");
        let e = parse_urls("ftp://u:hunter2@h").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(!format!("{c:?}").contains("pw"), "{c:?}");
    }

    #[test]
    fn commas_split_only_lists_of_urls() {
        // A password with a comma, unencoded: one server.
        let one = parse_urls("redis://user:p,a,ss@db:6379/1").unwrap();
        assert!(!one.is_cluster());
        assert_eq!(one.urls(), ["redis://user:p,a,ss@db:6379/1"]);
        let c = redis::Client::open(one.urls()[0].as_str()).unwrap();
        assert_eq!(
            c.get_connection_info().redis_settings().password(),
            Some("p,a,ss")
        );

        // Every part a URL: the nodes of a cluster, whatever their case.
        let list = parse_urls("REDIS://a:1,rediss://b:2").unwrap();
        assert!(list.is_cluster());
        assert_eq!(list.urls(), ["REDIS://a:1", "rediss://b:2"]);

        // A trailing comma after one URL: still one server.
        let trailing = parse_urls("redis://a:1,").unwrap();
        assert!(!trailing.is_cluster());
        assert_eq!(trailing.urls(), ["redis://a:1"]);
    }

    #[test]
    fn unix_socket_urls_name_one_server() {
        for url in [
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock?db=2",
        ] {
            let parsed = parse_urls(url).unwrap();
            assert!(!parsed.is_cluster(), "{url}");
            assert_eq!(parsed.urls(), [url]);
            assert!(redis::Client::open(url).is_ok(), "{url}");
        }
        // A comma in a socket path is part of the path.
        let odd = parse_urls("redis+unix:///tmp/a,b.sock").unwrap();
        assert_eq!(odd.urls(), ["redis+unix:///tmp/a,b.sock"]);
    }

    #[test]
    fn debug_of_nodes_has_no_credentials() {
        let d = describe_nodes(&["redis://user:hunter2@db.example:6380/0", "rediss://h"]);
        assert_eq!(d, ["db.example:6380", "h:6379"]);
    }

    #[test]
    fn decode_rejects_foreign_hashes() {
        let mut f = HashMap::new();
        assert!(decode("u", "p", f.clone()).unwrap().is_none());
        f.insert(b"x".to_vec(), b"1".to_vec());
        let e = decode("u", "p", f.clone()).unwrap_err();
        assert_eq!(
            e.as_storage().map(|s| s.kind),
            Some(StorageErrorKind::Corrupt)
        );
        assert!(!e.is_retryable());
        f.clear();
        f.insert(b"v".to_vec(), vec![0, 1]);
        f.insert(b"c".to_vec(), b"1700000000123".to_vec());
        let k = decode("u", "p", f.clone()).unwrap().unwrap();
        assert_eq!(k.encrypted_value(), [0, 1]);
        assert_eq!(k.created_at().timestamp_millis(), 1_700_000_000_123);
        f.insert(b"e".to_vec(), b"soon".to_vec());
        assert!(decode("u", "p", f).is_err());
    }

    #[tokio::test]
    async fn debug_is_exact_and_leaves_credentials_out() {
        let url = "redis://app:hunter2@127.0.0.1:1/0";
        let client = redis::Client::open(url).unwrap();
        let manager =
            ConnectionManager::new_lazy_with_config(client, ConnectionManagerConfig::new())
                .unwrap();
        let store = RedisStorage {
            conn: Connection::Single(manager),
            layout: Layout::new("byok_").unwrap(),
            options: RedisOptions::default(),
            nodes: describe_nodes(&[url]).into(),
        };
        assert_eq!(
            format!("{store:?}"),
            "RedisStorage { mode: \"standalone\", nodes: [\"127.0.0.1:1\"], prefix: \"byok_\", \
             options: RedisOptions { connection_timeout: 2s, response_timeout: 3s } }"
        );
    }

    #[tokio::test]
    async fn tls_urls_without_tls_support_are_a_config_error() {
        let err = RedisStorage::connect("rediss://:hunter2@127.0.0.1:1", &ByokConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ByokError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("TLS"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn driver_errors_map_to_kinds() {
        let kind_of = |e: RedisError| {
            let err = storage_error(e, "test");
            err.as_storage().map(|s| (s.kind, s.is_retryable()))
        };
        let busy = redis::make_extension_error(
            "BUSY".to_owned(),
            Some("Redis is busy running a script.".to_owned()),
        );
        assert_eq!(kind_of(busy), Some((StorageErrorKind::Timeout, true)));
        let loading = RedisError::from((ServerErrorKind::BusyLoading.into(), "loading"));
        assert_eq!(
            kind_of(loading),
            Some((StorageErrorKind::Unavailable, true))
        );
        let no_perm = RedisError::from((ServerErrorKind::NoPerm.into(), "no permission"));
        assert_eq!(kind_of(no_perm), Some((StorageErrorKind::Rejected, false)));
        for cluster in [
            ServerErrorKind::Moved,
            ServerErrorKind::Ask,
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
        ] {
            let e = RedisError::from((cluster.into(), "cluster"));
            assert_eq!(kind_of(e), Some((StorageErrorKind::Unavailable, true)));
        }
        let cross = RedisError::from((ServerErrorKind::CrossSlot.into(), "cross slot"));
        assert_eq!(kind_of(cross), Some((StorageErrorKind::Rejected, false)));
        let oom = redis::make_extension_error("OOM".to_owned(), None);
        assert_eq!(kind_of(oom), Some((StorageErrorKind::Rejected, false)));
        let other = redis::make_extension_error("SOMETHING".to_owned(), None);
        assert_eq!(kind_of(other), Some((StorageErrorKind::Other, false)));
    }

    #[test]
    fn eviction_policy_is_read_from_both_protocols() {
        let bulk = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let resp2 = Value::Array(vec![bulk("maxmemory-policy"), bulk("allkeys-lru")]);
        assert_eq!(eviction_policy(&resp2).as_deref(), Some("allkeys-lru"));
        let resp3 = Value::Map(vec![(bulk("maxmemory-policy"), bulk("noeviction"))]);
        assert_eq!(eviction_policy(&resp3).as_deref(), Some("noeviction"));
        assert_eq!(eviction_policy(&Value::Array(Vec::new())), None);
        assert_eq!(
            eviction_policy(&Value::Array(vec![bulk("maxmemory"), bulk("0")])),
            None
        );
        assert_eq!(eviction_policy(&Value::Nil), None);
    }

    #[test]
    fn options_are_checked() {
        assert!(RedisOptions::default().check().is_ok());
        let zero = RedisOptions::default().with_connection_timeout(Duration::ZERO);
        assert!(zero.check().is_err());
        assert_eq!(
            RedisOptions::default().command_deadline(),
            Duration::from_secs(5)
        );
    }
}
