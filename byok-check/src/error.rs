//! [`CheckError`]: why a check could not be made at all.
//!
//! A key that the provider refuses is not an error: it is a
//! [`KeyCheck`](crate::KeyCheck). These are the cases where no provider was
//! asked (or may be asked), so the result says nothing about the key.

use byok_core::ByokError;

/// The result of this crate's operations.
pub type Result<T, E = CheckError> = std::result::Result<T, E>;

/// Why a check was not made. Never contains the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// No prober is registered for this provider.
    #[error("no key check is known for provider {provider:?}")]
    UnknownProvider {
        /// The provider that was asked for.
        provider: String,
    },
    /// This prober cannot make the check that was asked for.
    #[error("the {provider:?} check cannot {what}")]
    Unsupported {
        /// The provider.
        provider: String,
        /// What it cannot do.
        what: &'static str,
    },
    /// The address to ask is not allowed by the [`CheckPolicy`](crate::CheckPolicy):
    /// not `https`, a private or loopback address, a redirect to another
    /// host, or a URL that cannot be used.
    #[error("refused to check against {target}: {reason}")]
    Refused {
        /// The host (or URL without credentials) that was refused.
        target: String,
        /// Why.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("the HTTP client for key checks could not be built")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Reading the saved key failed (no key, storage, decryption).
    #[error(transparent)]
    Byok(#[from] ByokError),
}

impl CheckError {
    #[cfg(feature = "http")]
    pub(crate) fn refused(target: impl Into<String>, reason: &'static str) -> Self {
        CheckError::Refused {
            target: target.into(),
            reason,
        }
    }
}
