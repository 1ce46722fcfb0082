//! Errors.
//!
//! Every fallible operation of byok returns [`ByokError`], which wraps one of
//! the more specific errors below. None of them ever holds a plaintext API
//! key, a master key or a ciphertext: messages name what was wrong (which
//! field, which backend, which key id), never the value.

use std::borrow::Cow;
use std::fmt;

/// A boxed error from a driver or another lower layer, kept as a `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of byok operations.
pub type Result<T, E = ByokError> = std::result::Result<T, E>;

/// The base error of byok (the Python library's `BYOKException`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ByokError {
    /// Encrypting or decrypting a key failed.
    #[error(transparent)]
    Encryption(#[from] EncryptionError),
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// No (unexpired) key is stored for this user and provider.
    #[error("no {provider:?} key is stored for user {user_id:?}")]
    KeyNotFound {
        /// The user that was asked for.
        user_id: String,
        /// The provider that was asked for.
        provider: String,
    },
    /// An argument was not acceptable.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl ByokError {
    /// Whether trying the same operation again later can succeed.
    ///
    /// True only for storage errors that say the backend was unavailable or
    /// timed out; invalid input, corrupt data and decryption failures stay
    /// what they are however often they are retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ByokError::Storage(e) if e.is_retryable())
    }

    /// The storage error inside, if this is one.
    pub fn as_storage(&self) -> Option<&StorageError> {
        match self {
            ByokError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

/// Why encrypting or decrypting failed.
///
/// No variant carries plaintext, key bytes or ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionError {
    /// The ciphertext names a master key id that the keyring does not hold.
    #[error(
        "the ciphertext was encrypted under master key id {key_id}, which is not in the keyring"
    )]
    UnknownKeyId {
        /// The key id written in the ciphertext.
        key_id: u32,
    },
    /// Authentication failed: the master key is wrong, the data was tampered
    /// with, or the ciphertext was copied from another user's or provider's slot.
    #[error(
        "decryption failed under master key id {key_id}: wrong master key, tampered data, \
         or a ciphertext that belongs to another user or provider"
    )]
    AuthenticationFailed {
        /// The key id that was tried.
        key_id: u32,
    },
    /// The input is not a ciphertext of this format (too short, bad prefix).
    #[error("malformed ciphertext: {reason}")]
    Malformed {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The ciphertext was written by a format version this build does not read.
    #[error("unsupported ciphertext format version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The cipher refused to encrypt (the plaintext is beyond its size limit).
    #[error("encryption failed: the plaintext is too large for the cipher")]
    EncryptFailed,
}

/// What kind of storage failure happened; decides whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The backend could not be reached or the connection was lost.
    Unavailable,
    /// The backend did not answer in time (including pool acquire timeouts).
    Timeout,
    /// Stored data could not be decoded (a bad row, a value of the wrong type).
    Corrupt,
    /// The backend refused the operation (a constraint, a permission, bad SQL).
    Rejected,
    /// Anything else.
    Other,
    /// A write that the backend applied but could not confirm as durable
    /// as asked (Redis: not acknowledged by the required replicas in
    /// time). Its outcome is unknown: it may stay, or be lost in a
    /// failover. Retryable: writing the same key again is safe.
    NotReplicated,
}

impl StorageErrorKind {
    /// A short, stable name of the kind: `unavailable`, `timeout`,
    /// `corrupt`, `rejected`, `other` or `not_replicated`. These are the
    /// `error_kind` of spans and metrics ([`observe::error_kind`](crate::observe::error_kind))
    /// and of the `byok` command's `--json` errors.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageErrorKind::Unavailable => "unavailable",
            StorageErrorKind::Timeout => "timeout",
            StorageErrorKind::Corrupt => "corrupt",
            StorageErrorKind::Rejected => "rejected",
            StorageErrorKind::Other => "other",
            StorageErrorKind::NotReplicated => "not_replicated",
        }
    }

    /// Whether an operation that failed with this kind can succeed when retried.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            StorageErrorKind::Unavailable
                | StorageErrorKind::Timeout
                | StorageErrorKind::NotReplicated
        )
    }
}

impl fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageErrorKind::Unavailable => "unavailable",
            StorageErrorKind::Timeout => "timed out",
            StorageErrorKind::Corrupt => "corrupt data",
            StorageErrorKind::Rejected => "rejected",
            StorageErrorKind::Other => "failed",
            StorageErrorKind::NotReplicated => "write not confirmed by replicas",
        })
    }
}

/// A storage backend failed.
///
/// It names the backend and, once it has passed an
/// [`ObservedStorage`](crate::ObservedStorage) or the manager, the
/// operation that failed ([`operation`](Self::operation)); it says whether
/// retrying can help ([`is_retryable`](Self::is_retryable)), and keeps the
/// driver's error as its [`source`](std::error::Error::source), so the
/// original error can be inspected or downcast.
///
/// ```
/// use byok_core::{StorageError, StorageErrorKind};
/// let e = StorageError::new("redis", StorageErrorKind::Timeout, "no answer in 5 s")
///     .with_operation("retrieve");
/// assert_eq!(e.operation(), Some("retrieve"));
/// assert_eq!(e.to_string(), "redis storage timed out in retrieve: no answer in 5 s");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{backend} storage {kind}{}: {message}", InOperation(.operation))]
#[non_exhaustive]
pub struct StorageError {
    /// The backend that failed, such as `"redis"` or `"postgres"`.
    pub backend: &'static str,
    /// What kind of failure it was.
    pub kind: StorageErrorKind,
    operation: Option<&'static str>,
    message: Cow<'static, str>,
    #[source]
    source: Option<BoxError>,
}

impl StorageError {
    /// A new error of `kind` from `backend`, with a short message that must
    /// not contain key material.
    pub fn new(
        backend: &'static str,
        kind: StorageErrorKind,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        StorageError {
            backend,
            kind,
            operation: None,
            message: message.into(),
            source: None,
        }
    }

    /// Names the operation that failed, such as `"retrieve"` or `"store"`
    /// (the method of [`KeyStorage`](crate::KeyStorage), or of the manager
    /// when no store named one).
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    /// The operation that failed, when it is known.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }

    /// Keeps `source` (usually the driver's error) as this error's source.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether the operation can succeed when retried.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The message, without the backend and kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Names `operation`, unless one is already named: the innermost layer
/// knows best which call failed.
pub(crate) fn name_operation<T>(result: Result<T>, operation: &'static str) -> Result<T> {
    result.map_err(|e| match e {
        ByokError::Storage(s) if s.operation.is_none() => {
            ByokError::Storage(s.with_operation(operation))
        }
        other => other,
    })
}

/// ` in {operation}`, or nothing.
struct InOperation<'a>(&'a Option<&'static str>);

impl fmt::Display for InOperation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(operation) => write!(f, " in {operation}"),
            None => Ok(()),
        }
    }
}

/// The part of an input that was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// A user id.
    UserId,
    /// A provider name.
    Provider,
    /// A plaintext API key.
    ApiKey,
    /// A display hint.
    Hint,
    /// A page size of a scan.
    PageSize,
    /// A scan cursor.
    Cursor,
    /// A pair of keys given to compare-and-swap.
    KeyPair,
    /// A time to live.
    Ttl,
    /// A stored JSON document.
    Json,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::UserId => "user id",
            Field::Provider => "provider",
            Field::ApiKey => "API key",
            Field::Hint => "hint",
            Field::PageSize => "page size",
            Field::Cursor => "cursor",
            Field::KeyPair => "key pair",
            Field::Ttl => "time to live",
            Field::Json => "JSON document",
        })
    }
}

/// What was wrong with an input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// It was empty.
    Empty,
    /// It was longer than allowed.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// It held a control character at this byte offset.
    ControlCharacter {
        /// Byte offset of the first control character.
        at: usize,
    },
    /// It held an invisible format character (Unicode category Cf: the
    /// bidirectional controls U+202A–U+202E and U+2066–U+2069, zero-width
    /// characters U+200B–U+200F, U+FEFF, …), which would make two ids look
    /// alike or reorder the text around them when printed.
    FormatCharacter {
        /// Byte offset of the first format character.
        at: usize,
        /// The character, by its code point.
        code_point: u32,
    },
    /// It held nothing but whitespace.
    Blank,
    /// Something else, described.
    Other(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("must not be empty"),
            Problem::TooLong { len, max } => {
                write!(f, "is {len} bytes long; at most {max} bytes are allowed")
            }
            Problem::ControlCharacter { at } => {
                write!(f, "contains a control character at byte {at}")
            }
            Problem::FormatCharacter { at, code_point } => write!(
                f,
                "contains the invisible format character U+{code_point:04X} at byte {at}"
            ),
            Problem::Blank => f.write_str("must not be blank (only whitespace)"),
            Problem::Other(what) => f.write_str(what),
        }
    }
}

/// An argument was rejected. It names the field and the problem, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
#[non_exhaustive]
pub struct InvalidInput {
    /// Which input was wrong.
    pub field: Field,
    /// What was wrong with it.
    pub problem: Problem,
}

impl InvalidInput {
    /// A new rejection of `field` for `problem`.
    pub fn new(field: Field, problem: Problem) -> Self {
        InvalidInput { field, problem }
    }
}

/// The configuration is not usable (a bad table name, a missing cargo
/// feature, a malformed URL or master key).
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {message}")]
#[non_exhaustive]
pub struct ConfigError {
    message: Cow<'static, str>,
    #[source]
    source: Option<BoxError>,
}

impl ConfigError {
    /// A new configuration error; the message must not contain secrets.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        ConfigError {
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `source` as this error's source.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn storage_error_keeps_source_and_retryable_flag() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = StorageError::new("redis", StorageErrorKind::Unavailable, "cannot connect")
            .with_source(io);
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), "redis storage unavailable: cannot connect");
        let source = err.source().expect("source kept");
        let io = source.downcast_ref::<std::io::Error>().expect("downcast");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);

        let corrupt = StorageError::new("postgres", StorageErrorKind::Corrupt, "bad row");
        assert!(!corrupt.is_retryable());
        assert!(!ByokError::from(corrupt).is_retryable());
    }

    #[test]
    fn the_innermost_operation_is_kept() {
        let err = StorageError::new("redis", StorageErrorKind::Unavailable, "cannot connect");
        let named = name_operation::<()>(Err(err.into()), "retrieve");
        let named = name_operation(named, "get_key").unwrap_err();
        let storage = named.as_storage().unwrap();
        assert_eq!(storage.operation(), Some("retrieve"));
        assert_eq!(
            named.to_string(),
            "redis storage unavailable in retrieve: cannot connect"
        );
        let other = name_operation::<()>(Err(ByokError::Config(ConfigError::new("x"))), "store");
        assert!(other.unwrap_err().as_storage().is_none());
    }

    #[test]
    fn invalid_input_names_field_and_problem() {
        let e = InvalidInput::new(Field::UserId, Problem::TooLong { len: 300, max: 255 });
        assert_eq!(
            e.to_string(),
            "invalid user id: is 300 bytes long; at most 255 bytes are allowed"
        );
    }
}
