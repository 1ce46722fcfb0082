//! [`StorageBackend`] and [`ByokConfig`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::crypto::MasterKey;
use crate::error::ConfigError;

/// The kinds of storage byok can keep keys in.
///
/// It prints as, and parses from, a URL scheme: `memory:`, `redis://`,
/// `sqlite://`, `postgres://` and `mysql://`. Parsing accepts a
/// whole URL and a few aliases (`rediss`, `redis+cluster`, `postgresql`,
/// `mariadb`, `session`).
///
/// ```
/// use byok_core::StorageBackend;
/// let b: StorageBackend = "postgresql://app@db/keys".parse()?;
/// assert_eq!(b, StorageBackend::Postgres);
/// assert_eq!(b.to_string(), "postgres://");
/// assert_eq!("memory:".parse::<StorageBackend>()?, StorageBackend::Memory);
/// # Ok::<(), byok_core::error::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum StorageBackend {
    /// In-process memory: tests, single-process apps and session-scoped keys
    /// (the Python library's `SESSION`).
    #[default]
    Memory,
    /// Redis or Redis Cluster.
    Redis,
    /// SQLite, a file or in memory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

impl StorageBackend {
    /// The URL scheme, with its separator (`"redis://"`, `"memory:"`).
    pub fn scheme(self) -> &'static str {
        match self {
            StorageBackend::Memory => "memory:",
            StorageBackend::Redis => "redis://",
            StorageBackend::Sqlite => "sqlite://",
            StorageBackend::Postgres => "postgres://",
            StorageBackend::MySql => "mysql://",
        }
    }

    /// The backend a URL names by its scheme.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let scheme = url.split_once(':').map_or(url, |(s, _)| s);
        Ok(match scheme.to_ascii_lowercase().as_str() {
            "memory" | "session" => StorageBackend::Memory,
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis-cluster" => {
                StorageBackend::Redis
            }
            "sqlite" => StorageBackend::Sqlite,
            "postgres" | "postgresql" => StorageBackend::Postgres,
            "mysql" | "mariadb" => StorageBackend::MySql,
            "hybrid" => {
                return Err(ConfigError::new(
                    "hybrid: is not a storage URL: a fast store in front of a durable one is \
                     built in code, with TieredStorage::new(fast, durable)",
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    "unknown storage URL scheme; expected memory:, redis://, sqlite://, \
                     postgres:// or mysql://",
                ));
            }
        })
    }
}

impl fmt::Display for StorageBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

impl FromStr for StorageBackend {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Self::from_url(s)
    }
}

/// Configuration of byok (the Python library's `BYOKConfig`), with the same
/// names and defaults.
///
/// **Keys set with [`Ttl::Default`](crate::Ttl::Default) expire after
/// [`default_ttl`](Self::default_ttl), 24 hours by default**, as in the
/// Python library. Set `default_ttl: None` for keys that never expire
/// unless a TTL is given, or pass an explicit [`Ttl`](crate::Ttl) to
/// [`set_key`](crate::Byok::set_key).
///
/// ```
/// use std::time::Duration;
/// use byok_core::ByokConfig;
/// let config = ByokConfig::default();
/// assert_eq!(config.default_ttl, Some(Duration::from_secs(24 * 3600)));
/// assert_eq!(config.session_key_prefix, "byok_");
/// assert_eq!(config.db_table_name, "user_api_keys");
/// assert!(config.auto_cleanup && config.require_https);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ByokConfig {
    /// The kind of storage this configuration is meant for. Default:
    /// `None`, any.
    ///
    /// When set, `byok::connect_with` refuses a URL whose scheme names
    /// another backend, with a [`ConfigError`] that names both kinds but
    /// never repeats the URL: a deployment meant for PostgreSQL cannot
    /// quietly start on a memory store because its URL variable was wrong.
    pub storage_backend: Option<StorageBackend>,
    /// The master key. Default: `None` (give the manager a
    /// [`Keyring`](crate::Keyring) instead). Never printed by `Debug`.
    pub encryption_key: Option<MasterKey>,
    /// How long a key lives when `set_key` is given
    /// [`Ttl::Default`](crate::Ttl::Default). Default: **24 hours**. `None`
    /// means such keys never expire.
    pub default_ttl: Option<Duration>,
    /// Prefix of every Redis key. Default: `"byok_"`.
    pub session_key_prefix: String,
    /// Table of the SQL backends. Default: `"user_api_keys"`.
    pub db_table_name: String,
    /// Purge expired keys in the background. Default: true.
    ///
    /// The purge that runs is the manager's: [`Byok::new`](crate::Byok::new)
    /// starts one task that calls `purge_expired` on its store every cleanup
    /// interval ([`DEFAULT_CLEANUP_INTERVAL`](crate::DEFAULT_CLEANUP_INTERVAL)
    /// unless set with [`ByokBuilder::cleanup_interval`](crate::ByokBuilder::cleanup_interval)),
    /// and stops it with the last clone of the manager. `byok::connect` and
    /// `byok::connect_with` open stores without a purge of their own, so
    /// a manager over a connected store is the only one that runs.
    ///
    /// A store used without a manager is not purged unless you spawn
    /// [`store::purge_every`](crate::store::purge_every) or call
    /// `purge_expired` yourself, or build it with a constructor that reads
    /// this flag itself (such as `SqliteStorage::connect`, which starts a
    /// purge of its own when it is on): give such a store a configuration with `auto_cleanup` off
    /// when a manager runs over it, so that one purge runs, not two.
    pub auto_cleanup: bool,
    /// Require HTTPS for requests that submit a key. Default: true.
    ///
    /// The manager itself does nothing with it: the web layer does.
    /// byok-axum refuses (`403`, `insecure_transport`) a key submitted over
    /// plain HTTP from another machine when the app runs in production, and
    /// accepts it with one `WARN` log line in development; a request counts
    /// as HTTPS when the app is served over TLS or a trusted proxy says so,
    /// and loopback addresses may be allowed. Off, any transport is
    /// accepted without a word.
    pub require_https: bool,
}

impl Default for ByokConfig {
    fn default() -> Self {
        ByokConfig {
            storage_backend: None,
            encryption_key: None,
            default_ttl: Some(Duration::from_secs(24 * 60 * 60)),
            session_key_prefix: "byok_".to_owned(),
            db_table_name: "user_api_keys".to_owned(),
            auto_cleanup: true,
            require_https: true,
        }
    }
}

impl ByokConfig {
    /// Sets [`storage_backend`](Self::storage_backend).
    pub fn with_storage_backend(mut self, backend: Option<StorageBackend>) -> Self {
        self.storage_backend = backend;
        self
    }

    /// Sets [`encryption_key`](Self::encryption_key).
    pub fn with_encryption_key(mut self, key: Option<MasterKey>) -> Self {
        self.encryption_key = key;
        self
    }

    /// Sets [`default_ttl`](Self::default_ttl); `None`: keys set with
    /// [`Ttl::Default`](crate::Ttl::Default) never expire.
    pub fn with_default_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Sets [`session_key_prefix`](Self::session_key_prefix), the prefix
    /// of every Redis key.
    pub fn with_session_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.session_key_prefix = prefix.into();
        self
    }

    /// Sets [`db_table_name`](Self::db_table_name), the table of the SQL
    /// backends.
    pub fn with_db_table_name(mut self, table: impl Into<String>) -> Self {
        self.db_table_name = table.into();
        self
    }

    /// Sets [`auto_cleanup`](Self::auto_cleanup), whether the manager
    /// purges expired keys in the background.
    pub fn with_auto_cleanup(mut self, on: bool) -> Self {
        self.auto_cleanup = on;
        self
    }

    /// Sets [`require_https`](Self::require_https).
    pub fn with_require_https(mut self, on: bool) -> Self {
        self.require_https = on;
        self
    }

    /// The configuration for tests and short-lived tools: the defaults,
    /// without the manager's background purge.
    pub fn for_tests() -> Self {
        ByokConfig::default().with_auto_cleanup(false)
    }
}

impl fmt::Debug for ByokConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByokConfig")
            .field("storage_backend", &self.storage_backend)
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("default_ttl", &self.default_ttl)
            .field("session_key_prefix", &self.session_key_prefix)
            .field("db_table_name", &self.db_table_name)
            .field("auto_cleanup", &self.auto_cleanup)
            .field("require_https", &self.require_https)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_round_trip() {
        for b in [
            StorageBackend::Memory,
            StorageBackend::Redis,
            StorageBackend::Sqlite,
            StorageBackend::Postgres,
            StorageBackend::MySql,
        ] {
            assert_eq!(b.to_string().parse::<StorageBackend>().unwrap(), b);
        }
        assert_eq!(
            "rediss://h:6380".parse::<StorageBackend>().unwrap(),
            StorageBackend::Redis
        );
        assert_eq!(
            "mariadb://root@localhost/test"
                .parse::<StorageBackend>()
                .unwrap(),
            StorageBackend::MySql
        );
        let e = "ftp://user:hunter2@host"
            .parse::<StorageBackend>()
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(!e.to_string().contains("hybrid"), "{e}");
        let e = "hybrid:".parse::<StorageBackend>().unwrap_err();
        assert!(e.to_string().contains("TieredStorage::new"), "{e}");
    }

    #[test]
    fn debug_redacts_the_master_key() {
        let key = MasterKey::from_bytes(&[0x5a; 32]).unwrap();
        let config = ByokConfig {
            encryption_key: Some(key),
            ..ByokConfig::default()
        };
        let d = format!("{config:?}");
        assert!(d.contains("encryption_key: Some(\"[REDACTED]\")"), "{d}");
        assert!(
            !d.contains("90") && !d.contains("5a") && !d.contains("Wl"),
            "{d}"
        );
    }
}
