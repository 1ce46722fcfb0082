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
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RedisOptions");
        d.field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout);
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
        assert_eq!(
            RedisOptions::default().command_deadline(),
            Duration::from_secs(5)
        );
    }
}
