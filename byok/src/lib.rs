//! byok keeps the API keys that your users bring (OpenAI, Anthropic, …)
//! encrypted at rest, gives each back only to its own user, expires it on
//! time, and survives a master-key rotation without losing a key.
//!
//! This facade re-exports [`byok_core`] and the storage backends chosen by
//! cargo feature:
//!
//! | feature | backend |
//! |---|---|
//! | `memory` (default) | [`MemoryStorage`] |
//!
//! To write a backend of your own, implement [`KeyStorage`] and run the
//! conformance suite of the `byok-testkit` crate on it; its documentation
//! walks through a complete backend.

pub use byok_core::*;

#[cfg(feature = "memory")]
pub use byok_memory::{self, MemoryStorage};
