//! The connection to one server or a cluster, and connecting.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use byok_core::error::ConfigError;
use byok_core::{ByokConfig, Result, validate};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::{storage_error, timeout_error};
use crate::layout::Layout;
use crate::options::RedisOptions;
use crate::tls;
use crate::url::{describe_nodes, parse_urls};

/// A connection to one server or to a cluster. Clones share it.
#[derive(Clone)]
pub(crate) enum Connection {
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

/// Redis (or Redis Cluster) [`KeyStorage`](byok_core::KeyStorage). See the [crate docs](crate).
///
/// Clones share the connection, which reconnects by itself.
#[derive(Clone)]
pub struct RedisStorage {
    pub(crate) conn: Connection,
    pub(crate) layout: Layout,
    pub(crate) options: RedisOptions,
    pub(crate) nodes: Arc<[String]>,
    /// Whether the driver's own timeouts already bound every command by
    /// [`RedisOptions::command_deadline`], so that [`run`](Self::run) needs
    /// no timer of its own (one timer less per command).
    pub(crate) bounded_by_driver: bool,
    /// Whether the prefix is known to hold the format marker, so that a
    /// write need not check it (see [`migrate`](Self::migrate)). Opening
    /// never writes it: a prefix is marked by its first write.
    pub(crate) marked: Arc<AtomicBool>,
    /// Held while a first write marks the prefix, so that concurrent first
    /// writes walk the buckets once, not once each.
    pub(crate) marking: Arc<tokio::sync::Mutex<()>>,
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

/// How a [`RedisStorage`] is opened: [`RedisStorage::builder`], then
/// [`config`](Self::config) or [`prefix`](Self::prefix),
/// [`options`](Self::options), and [`open`](Self::open).
///
/// ```no_run
/// use byok_core::ByokConfig;
/// use byok_redis::{RedisOptions, RedisStorage};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> byok_core::Result<()> {
/// let store = RedisStorage::builder("redis://127.0.0.1:6379")
///     .config(&ByokConfig::default())
///     .options(RedisOptions::default().with_response_timeout(Duration::from_secs(1)))
///     .open()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until it is opened"]
pub struct RedisStorageBuilder {
    url: String,
    prefix: String,
    options: RedisOptions,
}

impl fmt::Debug for RedisStorageBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = match parse_urls(&self.url) {
            Ok(parsed) => describe_nodes(parsed.urls()),
            Err(_) => vec!["<invalid URL>".to_owned()],
        };
        f.debug_struct("RedisStorageBuilder")
            .field("nodes", &nodes)
            .field("prefix", &self.prefix)
            .field("options", &self.options)
            .finish()
    }
}

impl RedisStorageBuilder {
    /// Takes the key prefix of `config`
    /// ([`ByokConfig::session_key_prefix`]); nothing else of it applies to
    /// this store.
    pub fn config(mut self, config: &ByokConfig) -> Self {
        self.prefix.clone_from(&config.session_key_prefix);
        self
    }

    /// The prefix of every Redis key of the store (default: `byok_`, the
    /// default [`ByokConfig::session_key_prefix`]): 1 to
    /// [`MAX_PREFIX_LEN`](crate::MAX_PREFIX_LEN) bytes, no braces,
    /// whitespace or control characters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The connection settings (default: [`RedisOptions::default`]).
    pub fn options(mut self, options: RedisOptions) -> Self {
        self.options = options;
        self
    }

    /// Connects. Opening reads only: it never writes under the prefix, nor
    /// moves data of an older format (see [`StoreAdmin::migrate`](byok_core::StoreAdmin::migrate)).
    ///
    /// Fails with a config error on a bad URL, prefix or options (without
    /// repeating the URL, which may hold a password), and with a storage
    /// error when the server does not answer within
    /// [`RedisOptions::command_deadline`].
    pub async fn open(self) -> Result<RedisStorage> {
        let RedisStorageBuilder {
            url,
            prefix,
            options,
        } = self;
        options.check()?;
        let layout = Layout::new(&prefix)?;
        let parsed = parse_urls(&url)?;
        let (conn, bounded_by_driver) = if parsed.is_cluster() {
            (connect_cluster(parsed.urls(), &options).await?, false)
        } else {
            let [single] = parsed.urls() else {
                return Err(ConfigError::new("the Redis URL names no server").into());
            };
            (connect_single(single, &options).await?, true)
        };
        let store = RedisStorage {
            conn,
            layout,
            options,
            nodes: describe_nodes(parsed.urls()).into(),
            bounded_by_driver,
            marked: Arc::default(),
            marking: Arc::default(),
        };
        store.check_eviction_policy().await;
        Ok(store)
    }
}

/// Bounds `connecting` by `deadline`.
async fn connect_within<T>(
    deadline: Duration,
    what: &'static str,
    connecting: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(connect_error(e, what)),
        Err(elapsed) => Err(timeout_error(deadline, elapsed)),
    }
}

/// One server (`redis://`, `rediss://`, `redis+unix://`).
async fn connect_single(url: &str, options: &RedisOptions) -> Result<Connection> {
    let client = tls::client(url, options)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connection_timeout()))
        .set_response_timeout(Some(options.response_timeout()))
        // One connection attempt per reconnect: a command then waits at
        // most `connection_timeout` for the connection and
        // `response_timeout` for its answer, which is the documented
        // deadline without a timer of our own. A failed attempt fails
        // the commands waiting on it (retryably); the next command
        // starts a new one.
        .set_number_of_retries(0)
        .set_max_delay(Duration::from_secs(1));
    let manager = connect_within(
        options.command_deadline(),
        "connecting to Redis failed",
        ConnectionManager::new_with_config(client, manager_config),
    )
    .await?;
    Ok(Connection::Single(manager))
}

/// A cluster, through its seed nodes.
#[cfg(feature = "cluster")]
async fn connect_cluster(urls: &[String], options: &RedisOptions) -> Result<Connection> {
    if urls.is_empty() {
        return Err(ConfigError::new("a Redis Cluster needs at least one node URL").into());
    }
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().copied());
    let client = tls::cluster_builder(builder, &nodes, options)?
        .connection_timeout(options.connection_timeout())
        .response_timeout(options.response_timeout())
        .retries(2)
        .max_retry_wait(1000)
        .build()
        .map_err(|e| ConfigError::new("the Redis Cluster URLs are not usable").with_source(e))?;
    let conn = connect_within(
        options.command_deadline(),
        "connecting to Redis Cluster failed",
        client.get_async_connection(),
    )
    .await?;
    Ok(Connection::Cluster(conn))
}

#[cfg(not(feature = "cluster"))]
async fn connect_cluster(_urls: &[String], _options: &RedisOptions) -> Result<Connection> {
    Err(ConfigError::new(
        "the URL names a Redis Cluster, but byok-redis was built without its `cluster` feature",
    )
    .into())
}

impl RedisStorage {
    /// Starts opening the store at `url`: one server (`redis://`, or
    /// `rediss://` with a TLS feature: see [TLS](crate#tls); or a Unix
    /// socket with `redis+unix:///path`), or a cluster (with the `cluster`
    /// feature) given as `redis+cluster://[user:password@]h1:p1,h2:p2` or
    /// as several comma-separated `redis://` URLs. A password may hold a
    /// comma; percent-encoding it as `%2C` is never ambiguous.
    pub fn builder(url: impl Into<String>) -> RedisStorageBuilder {
        RedisStorageBuilder {
            url: url.into(),
            prefix: ByokConfig::default().session_key_prefix,
            options: RedisOptions::default(),
        }
    }

    /// Uses an existing [`ConnectionManager`] to one server (for an
    /// application that configures its connection itself: Sentinel, a
    /// custom TLS setup), with the key prefix of `config`. Its own timeouts
    /// apply; each command is also cut off after
    /// [`RedisOptions::command_deadline`] of the default options.
    pub fn from_connection_manager(
        manager: ConnectionManager,
        config: &ByokConfig,
    ) -> Result<Self> {
        Ok(RedisStorage {
            conn: Connection::Single(manager),
            layout: Layout::new(&config.session_key_prefix)?,
            options: RedisOptions::default(),
            nodes: Arc::from(vec!["<given connection>".to_owned()]),
            bounded_by_driver: false,
            marked: Arc::default(),
            marking: Arc::default(),
        })
    }

    /// The same store under another key prefix (see [`RedisStorageBuilder::prefix`]).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        self.layout = Layout::new(prefix)?;
        self.marked = Arc::default();
        self.marking = Arc::default();
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

    /// The Redis key of the hash that holds a user's keys, one field per
    /// provider (see the [crate docs](crate#key-layout)), for this crate's
    /// integration tests; not part of the API. Fails on an invalid id.
    #[doc(hidden)]
    pub fn redis_user_key(&self, user_id: &str) -> Result<String> {
        validate::stored_user_id(user_id)?;
        Ok(self.layout.user_hash(user_id))
    }

    /// The Redis key of the hash that holds the checks kept for a user's
    /// keys, one field per provider (see the [crate docs](crate#key-layout)),
    /// for this crate's integration tests; not part of the API. Fails on an
    /// invalid id.
    #[doc(hidden)]
    pub fn redis_check_key(&self, user_id: &str) -> Result<String> {
        validate::stored_user_id(user_id)?;
        Ok(self.layout.check_hash(user_id))
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
    pub(crate) async fn run<T, F>(&self, what: &'static str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.bounded_by_driver {
            return fut.await.map_err(|e| storage_error(e, what));
        }
        let deadline = self.options.command_deadline();
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(storage_error(e, what)),
            Err(elapsed) => Err(timeout_error(deadline, elapsed)),
        }
    }

    /// After a write of `user_id`'s keys: with
    /// [`RedisOptions::with_replica_wait`], waits for the replicas of the
    /// user's master (`WAIT`, on the connection that carried the write),
    /// and fails with [`StorageErrorKind::NotReplicated`](byok_core::error::StorageErrorKind::NotReplicated)
    /// when fewer acknowledged in time.
    #[cfg_attr(
        not(feature = "cluster"),
        expect(
            unused_variables,
            reason = "the user names the master on a cluster only"
        )
    )]
    pub(crate) async fn confirm_write(&self, user_id: &str) -> Result<()> {
        let Some(wait) = self.options.replica_wait() else {
            return Ok(());
        };
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wait.replicas)
            .arg(u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX));
        let what = "waiting for replicas failed";
        let answer: Result<Value> = match &self.conn {
            Connection::Single(_) => self.query(what, &cmd).await,
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(self.layout.user_hash(user_id), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let mut conn = c.clone();
                self.run(what, conn.route_command(cmd, routing)).await
            }
        };
        // The write was applied; whatever stops the wait (a timeout, a
        // master demoted meanwhile: `UNBLOCKED`, `WAIT cannot be used with
        // replica instances`) leaves its outcome unknown.
        let not_replicated = |message: String| {
            byok_core::error::StorageError::new(
                crate::error::BACKEND,
                byok_core::error::StorageErrorKind::NotReplicated,
                message,
            )
        };
        let acknowledged = match answer {
            Ok(value) => match redis::from_redis_value::<i64>(value) {
                Ok(n) => n,
                Err(e) => {
                    return Err(not_replicated(
                        "the wait for replicas after a write failed; the write may survive \
                         or be lost in a failover"
                            .to_owned(),
                    )
                    .with_source(redis::RedisError::from(e))
                    .into());
                }
            },
            Err(e) => {
                let mut error = not_replicated(
                    "the wait for replicas after a write failed; the write may survive or be \
                     lost in a failover"
                        .to_owned(),
                );
                if let byok_core::ByokError::Storage(inner) = e {
                    error = error.with_source(inner);
                }
                return Err(error.into());
            }
        };
        if acknowledged >= i64::from(wait.replicas) {
            return Ok(());
        }
        Err(not_replicated(format!(
            "the write was acknowledged by {acknowledged} of the {} replicas required within \
             {:?}; it may survive or be lost in a failover",
            wait.replicas, wait.timeout
        ))
        .into())
    }

    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &Cmd,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        self.run(what, cmd.query_async(&mut conn)).await
    }
}

/// A failed connection as a storage error: a refused certificate is
/// [`StorageErrorKind::Rejected`](byok_core::error::StorageErrorKind::Rejected)
/// (retrying cannot help), anything else as [`storage_error`] maps it.
fn connect_error(e: redis::RedisError, what: &'static str) -> byok_core::ByokError {
    if tls::is_certificate_error(&e) {
        return byok_core::error::StorageError::new(
            crate::error::BACKEND,
            byok_core::error::StorageErrorKind::Rejected,
            "the Redis server's TLS certificate was not accepted: it does not verify against \
             the trusted certificate authorities (see RedisOptions::with_root_certificates) \
             or does not name the host connected to",
        )
        .with_source(e)
        .into();
    }
    storage_error(e, what)
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

#[cfg(test)]
mod tests {
    use super::*;

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
            bounded_by_driver: true,
            marked: Arc::default(),
            marking: Arc::default(),
        };
        assert_eq!(
            format!("{store:?}"),
            "RedisStorage { mode: \"standalone\", nodes: [\"127.0.0.1:1\"], prefix: \"byok_\", \
             options: RedisOptions { connection_timeout: 2s, response_timeout: 3s } }"
        );
    }

    #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
    #[tokio::test]
    async fn tls_without_a_tls_feature_is_a_config_error() {
        let options = RedisOptions::default().with_root_certificates(b"PEM".to_vec());
        let err = RedisStorage::builder("redis://127.0.0.1:1")
            .options(options)
            .open()
            .await
            .unwrap_err();
        assert!(matches!(err, byok_core::ByokError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("TLS feature"), "{err}");
    }

    #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
    #[tokio::test]
    async fn tls_urls_without_tls_support_are_a_config_error() {
        let err = RedisStorage::builder("rediss://:hunter2@127.0.0.1:1")
            .open()
            .await
            .unwrap_err();
        assert!(matches!(err, byok_core::ByokError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("TLS"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn builder_debug_leaves_credentials_out() {
        let builder = RedisStorage::builder("redis://app:hunter2@127.0.0.1:1/0")
            .config(&ByokConfig::default().with_session_key_prefix("app_"));
        let shown = format!("{builder:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("127.0.0.1:1") && shown.contains("app_"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn bad_prefixes_and_urls_are_config_errors_naming_the_problem() {
        let err = RedisStorage::builder("redis://127.0.0.1:1")
            .prefix("bad{prefix}")
            .open()
            .await
            .unwrap_err();
        assert!(matches!(err, byok_core::ByokError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("prefix"), "{err}");
        let err = RedisStorage::builder("http://:hunter2@127.0.0.1:1")
            .open()
            .await
            .unwrap_err();
        assert!(matches!(err, byok_core::ByokError::Config(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
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
}
