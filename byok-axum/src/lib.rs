//! byok for [axum] applications: the page where users add, replace and
//! delete their API keys (with a JSON API beside it), route guards that
//! hand a handler the user's decrypted key, and the HTTPS policy for keys
//! in transit.
//!
//! ```
//! use byok_axum::axum::{Router, routing::get};
//! use byok_axum::{ByokWeb, ProviderKey, TrustedHeader};
//! use byok_core::secrecy::ExposeSecret;
//! use byok_core::{Byok, ByokConfig, Keyring, MasterKey};
//!
//! async fn chat(key: ProviderKey) -> String {
//!     // Call the provider with key.key().expose_secret().
//!     format!("{} key of {} bytes", key.provider(), key.key().expose_secret().len())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = std::sync::Arc::new(byok_memory::MemoryStorage::new());
//! let byok = Byok::new(storage, Keyring::new(1, MasterKey::generate()), ByokConfig::default())?;
//! let web = ByokWeb::builder(byok, TrustedHeader::new("x-forwarded-user".parse()?))
//!     .providers(["openai", "anthropic"])
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/chat", get(chat))
//!     .route_layer(web.require_key("openai"))
//!     .merge(web.settings_router());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! - **Who the user is** is the application's call: an [`Identify`]
//!   implementation, a closure ([`identify_with`]), a header set by a
//!   trusted proxy ([`TrustedHeader`]), or the session itself
//!   ([`SessionKeys`], keys that end with a `tower-sessions` session).
//! - **Guards**: [`ByokWeb::require_key`] and [`ByokWeb::require_any_key`]
//!   are route layers that put a [`ProviderKey`] on the request;
//!   [`RequireKey`] is the same guard as an extractor. Without a key,
//!   browsers get an "API key required" page that links to the settings
//!   page (which links back), API clients an RFC 9457 problem document
//!   (`403`).
//! - **Settings**: [`ByokWeb::settings_router`] serves the page (plain
//!   HTML forms, no JavaScript) and `GET`/`PUT`/`DELETE` JSON endpoints,
//!   refuses cross-site posts, limits body size, and marks every answer
//!   `Cache-Control: no-store`. Keys saved there never expire unless the
//!   app says so ([`ByokWebBuilder::key_ttl`],
//!   [`ByokWebBuilder::lifetime_choices`]); the words ([`Texts`]) and the
//!   layout around the page ([`Layout`]) can be replaced.
//! - **Key checks** (feature `checks`): with a `byok_check::Checker`
//!   ([`ByokWebBuilder::checker`]), a "Test" button beside each saved key
//!   and each key input asks the provider whether the key works (a typed
//!   key is never stored) and shows the answer in plain words; the JSON API
//!   has `POST …/api/{provider}/check`; and
//!   [`ByokWebBuilder::check_before_saving`] refuses keys the provider
//!   calls invalid.
//! - **Errors**: every error becomes a [`ByokRejection`]; the mapping from
//!   [`ByokError`](byok_core::ByokError) to a status lives in its `From`
//!   implementation and nowhere else, and a rejection is logged once, when
//!   it becomes a response.
//! - **HTTPS**: with `ByokConfig::require_https`, a key sent over plain
//!   HTTP is refused in production (unless it stays on the machine:
//!   `localhost`, `127.0.0.0/8`, `[::1]`, as browsers allow) and logged as
//!   a warning in development ([`ByokWebBuilder::production`],
//!   [`ByokWebBuilder::trust_forwarded_proto`],
//!   [`ByokWebBuilder::allow_loopback_http`]).
//!
//! Nothing runs per request beyond what a route asks for: expired keys are
//! invisible to every read, and removing them is the job of the store and
//! the manager's cleanup task, not of a middleware that decrypts every key
//! of the user on every request as the Python library did.

#[cfg(feature = "checks")]
mod check;
mod html;
mod identity;
mod page;
mod policy;
mod rejection;
mod require;
mod settings;
mod web;

pub use async_trait::async_trait;
pub use axum;
#[cfg(feature = "checks")]
#[cfg_attr(docsrs, doc(cfg(feature = "checks")))]
pub use check::DEFAULT_CHECKS_PER_MINUTE;
pub use identity::{
    FnIdentity, Identify, IdentityRefused, SESSION_USER_KEY, SessionKeys, TrustedHeader,
    UserIdentity, identify_with,
};
pub use page::{Layout, Page, Texts, english_duration};
pub use rejection::{ByokRejection, RETRY_AFTER_SECONDS, RejectionKind};
pub use require::{ByokUser, KeyOf, ProviderKey, RequireKey, RequireKeyLayer, RequireKeyService};
pub use settings::{KeyList, ProviderEntry};
pub use tower_sessions;
pub use web::{
    ByokLayer, ByokService, ByokWeb, ByokWebBuilder, DEFAULT_BODY_LIMIT, DEFAULT_SETTINGS_PATH,
    LIFETIME_CHOICES,
};
