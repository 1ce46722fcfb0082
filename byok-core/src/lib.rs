//! The core of byok: types, errors, encryption and the [`KeyStorage`] trait.
//!
//! byok keeps the API keys that your users bring (OpenAI, Anthropic, …)
//! encrypted at rest, gives each back only to its own user, expires it on
//! time, and survives a master-key rotation without losing a key.
//!
//! Most applications use the `byok` facade crate, which re-exports this
//! one and the storage backends. Backend authors implement [`KeyStorage`]
//! and run the `byok-testkit` conformance suite.
//!
//! ```
//! use byok_core::{ApiKey, Keyring, MasterKey};
//!
//! let ring = Keyring::new(1, MasterKey::generate());
//! let ciphertext = ring.encrypt("alice", "openai", b"sk-example")?;
//! let key = ApiKey::new("alice", "openai", ciphertext)?;
//! assert!(!key.is_expired());
//! let plain = ring.decrypt("alice", "openai", key.encrypted_value())?;
//! assert_eq!(&plain[..], b"sk-example");
//! # Ok::<(), byok_core::ByokError>(())
//! ```

pub mod config;
pub mod copy;
pub mod crypto;
pub mod display;
pub mod error;
pub mod key;
pub mod keyring_source;
pub mod keyring_text;
pub mod manager;
pub mod observe;
pub mod storage;
pub mod store;
pub mod tiered;
pub mod validate;

pub use async_trait::async_trait;
pub use chrono;
pub use config::{ByokConfig, StorageBackend};
pub use copy::{CopyOptions, CopyReport, OnConflict};
pub use crypto::{Keyring, MasterKey};
pub use error::{
    ByokError, ConfigError, EncryptionError, InvalidInput, Result, SecurityWarning, StorageError,
    StorageErrorKind,
};
pub use key::{ApiKey, UserApiKey};
pub use keyring_source::{
    KeyUnwrapper, KeyringCommand, KeyringEnv, KeyringFile, KeyringSource, Unwrapping,
};
pub use keyring_text::WrappedKey;
pub use manager::{Byok, ByokBuilder, ImportOutcome, KeySummary, RotationReport, Ttl};
pub use observe::ObservedStorage;
pub use secrecy;
pub use storage::{Cursor, KeyStorage, KeyStorageExt, ScanPage};
pub use store::{IntoStorage, SchemaStatus, Store, StoreAdmin, StoreStats};
pub use tiered::{FastTier, LeaseToken, Lookup, TieredStorage};
