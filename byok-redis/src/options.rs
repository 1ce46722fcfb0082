//! Connection settings.

use std::time::Duration;

use byok_core::error::ConfigError;

///
/// Every command sent to Redis, including waiting for a reconnect, fails
/// with a retryable [`StorageErrorKind::Timeout`](byok_core::error::StorageErrorKind::Timeout) once
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
