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

// The modules of the manager, its configuration, keyring sources and the
// tiered store hold nothing but what the crate root re-exports: they are
// private, and their items live at the root. The others are namespaces
// (their items are reached by path) or hold more than the root shows.
pub mod check_record;
mod config;
pub mod copy;
pub mod crypto;
pub mod display;
pub mod error;
pub mod key;
mod keyring_source;
pub mod keyring_text;
mod manager;
pub mod observe;
pub mod storage;
pub mod store;
mod tiered;
pub mod validate;

pub use async_trait::async_trait;
pub use check_record::CheckRecord;
pub use chrono;
pub use config::*;
pub use copy::{CopyOptions, CopyReport, OnConflict};
pub use crypto::{Keyring, MasterKey};
pub use error::{
    ByokError, ConfigError, EncryptionError, InvalidInput, Result, StorageError, StorageErrorKind,
};
pub use key::ApiKey;
pub use keyring_source::*;
pub use keyring_text::WrappedKey;
pub use manager::*;
pub use observe::ObservedStorage;
pub use secrecy;
pub use storage::{Cursor, KeyStorage, KeyStorageExt, ScanPage};
pub use store::{IntoStorage, SchemaStatus, Store, StoreAdmin, StoreStats};
pub use tiered::*;
