//! Connection settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use byok_core::error::ConfigError;

/// Connection settings of a [`RedisStorage`](crate::RedisStorage).
///
/// Every command sent to Redis, including waiting for a reconnect, fails
/// with a retryable [`StorageErrorKind::Timeout`](byok_core::error::StorageErrorKind::Timeout) once
/// `connection_timeout + response_timeout` has passed.
///
/// For `rediss://`, [`with_root_certificates`](Self::with_root_certificates)
/// names the certificate authorities to trust; without it, the system's
/// are trusted (or, with the `tls-rustls-webpki-roots` feature, the
/// Mozilla roots).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    connection_timeout: Duration,
    response_timeout: Duration,
    root_certificates: Option<Arc<[u8]>>,
    replica_wait: Option<ReplicaWait>,
}

/// How many replicas must acknowledge each write, and how long to wait for
/// them: see [`RedisOptions::with_replica_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    /// Replicas that must acknowledge a write.
    pub replicas: u32,
    /// How long a write waits for them.
    pub timeout: Duration,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RedisOptions");
        d.field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout);
        if let Some(wait) = &self.replica_wait {
            d.field("replica_wait", wait);
        }
        if let Some(pem) = &self.root_certificates {
            d.field(
                "root_certificates",
                &format_args!("<{} bytes of PEM>", pem.len()),
            );
        }
        d.finish()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connection_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(3),
            root_certificates: None,
            replica_wait: None,
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

    /// Trusts the certificate authorities in `pem` (one or more
    /// certificates in PEM format) for `rediss://` connections, instead of
    /// the system's. Needs a TLS feature (`tls`, `tls-rustls` or
    /// `tls-native-tls`); connecting fails with a config error without one.
    pub fn with_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates = Some(Arc::from(pem.into()));
        self
    }

    /// After each write (`store`, `delete`, `clear_all`, a
    /// `compare_and_swap` that swapped, a `store_if_absent` that stored),
    /// waits until `replicas` replicas of
    /// the written key's master have acknowledged it (Redis `WAIT`), for at
    /// most `timeout`, which must be shorter than the response timeout.
    /// A write that fewer replicas acknowledged in time fails with the
    /// retryable [`StorageErrorKind::NotReplicated`](byok_core::error::StorageErrorKind::NotReplicated):
    /// the master applied it, and it may survive or be lost in a failover.
    ///
    /// Redis replicates asynchronously: without this option, a failover
    /// (automatic, or forced while a master is paused) can lose the last
    /// writes a master acknowledged before it. With it, a write that
    /// returned `Ok` has reached `replicas` replicas, so a failover to one
    /// of them keeps it; `WAIT` does not make Redis strongly consistent
    /// (a failover may still pick a replica that had not acknowledged, if
    /// fewer than all replicas were required, and writes are not fsynced
    /// by it). Reads are not affected. Default: no waiting.
    pub fn with_replica_wait(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_wait = (replicas > 0).then_some(ReplicaWait { replicas, timeout });
        self
    }

    /// The replica acknowledgement each write waits for, if any.
    pub fn replica_wait(&self) -> Option<ReplicaWait> {
        self.replica_wait
    }

    /// The certificate authorities given by
    /// [`with_root_certificates`](Self::with_root_certificates), in PEM.
    pub fn root_certificates(&self) -> Option<&[u8]> {
        self.root_certificates.as_deref()
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

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.connection_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(ConfigError::new("Redis timeouts must be longer than zero"));
        }
        if let Some(wait) = self.replica_wait
            && (wait.timeout.is_zero() || wait.timeout >= self.response_timeout)
        {
            return Err(ConfigError::new(
                "the replica wait timeout must be longer than zero and shorter than the \
                 response timeout",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_size_of_the_root_certificates_only() {
        assert_eq!(
            format!("{:?}", RedisOptions::default()),
            "RedisOptions { connection_timeout: 2s, response_timeout: 3s }"
        );
        let with = RedisOptions::default().with_root_certificates(b"-----BEGIN".to_vec());
        assert_eq!(with.root_certificates(), Some(b"-----BEGIN".as_slice()));
        assert_eq!(
            format!("{with:?}"),
            "RedisOptions { connection_timeout: 2s, response_timeout: 3s, \
             root_certificates: <10 bytes of PEM> }"
        );
    }

    #[test]
    fn options_are_checked() {
        assert!(RedisOptions::default().check().is_ok());
        let zero = RedisOptions::default().with_connection_timeout(Duration::ZERO);
        assert!(zero.check().is_err());
        let waits = RedisOptions::default().with_replica_wait(1, Duration::from_millis(500));
        assert!(waits.check().is_ok());
        assert_eq!(
            format!("{waits:?}"),
            "RedisOptions { connection_timeout: 2s, response_timeout: 3s, \
             replica_wait: ReplicaWait { replicas: 1, timeout: 500ms } }"
        );
        let too_long = RedisOptions::default().with_replica_wait(1, Duration::from_secs(3));
        assert!(too_long.check().is_err());
        assert_eq!(
            RedisOptions::default()
                .with_replica_wait(0, Duration::from_secs(1))
                .replica_wait(),
            None
        );
        assert_eq!(
            RedisOptions::default().command_deadline(),
            Duration::from_secs(5)
        );
    }
}
