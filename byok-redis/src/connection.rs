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

impl RedisStorage {
    /// Connects to one Redis server (`redis://`, or `rediss://` with a TLS
    /// feature: see [TLS](crate#tls)), with the key prefix of `config` and
    /// default [`RedisOptions`], and moves data of an older format (see
    /// [upgrading](crate#upgrading-from-format-1)). Connecting to a prefix
    /// that holds no data of an older format writes nothing.
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
        let client = tls::client(url, &options)?;
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
        let deadline = options.command_deadline();
        let manager = match tokio::time::timeout(
            deadline,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(connect_error(e, "connecting to Redis failed")),
            Err(_) => return Err(timeout_error(deadline)),
        };
        let store = RedisStorage {
            conn: Connection::Single(manager),
            layout,
            options,
            nodes: describe_nodes(&[url]).into(),
            bounded_by_driver: true,
            marked: Arc::default(),
            marking: Arc::default(),
        };
        store.check_eviction_policy().await;
        store.upgrade().await?;
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
        let builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().copied());
        let client = tls::cluster_builder(builder, &nodes, &options)?
            .connection_timeout(options.connection_timeout())
            .response_timeout(options.response_timeout())
            .retries(2)
            .max_retry_wait(1000)
            .build()
            .map_err(|e| {
                ConfigError::new("the Redis Cluster URLs are not usable").with_source(e)
            })?;
        let deadline = options.command_deadline();
        let conn = match tokio::time::timeout(deadline, client.get_async_connection()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(connect_error(e, "connecting to Redis Cluster failed")),
            Err(_) => return Err(timeout_error(deadline)),
        };
        let store = RedisStorage {
            conn: Connection::Cluster(conn),
            layout,
            options,
            nodes: describe_nodes(urls).into(),
            bounded_by_driver: false,
            marked: Arc::default(),
            marking: Arc::default(),
        };
        store.check_eviction_policy().await;
        store.upgrade().await?;
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
            bounded_by_driver: false,
            marked: Arc::default(),
            marking: Arc::default(),
        })
    }

    /// The same store under another key prefix (see [`check_prefix`](crate::check_prefix)).
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
    /// provider (see the [crate docs](crate#key-layout)), for tools and
    /// tests. Fails on an invalid id.
    pub fn redis_user_key(&self, user_id: &str) -> Result<String> {
        validate::stored_user_id(user_id)?;
        Ok(self.layout.user_hash(user_id))
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
            Err(_) => Err(timeout_error(deadline)),
        }
    }

    /// After a write of `user_id`'s keys: with
    /// [`RedisOptions::with_replica_wait`], waits for the replicas of the
    /// user's master (`WAIT`, on the connection that carried the write),
    /// and fails with [`StorageErrorKind::NotReplicated`](byok_core::error::StorageErrorKind::NotReplicated)
    /// when fewer acknowledged in time.
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
        let err =
            RedisStorage::connect_with("redis://127.0.0.1:1", &ByokConfig::default(), options)
                .await
                .unwrap_err();
        assert!(matches!(err, byok_core::ByokError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("TLS feature"), "{err}");
    }

    #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
    #[tokio::test]
    async fn tls_urls_without_tls_support_are_a_config_error() {
        let err = RedisStorage::connect("rediss://:hunter2@127.0.0.1:1", &ByokConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, byok_core::ByokError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("TLS"), "{err}");
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
