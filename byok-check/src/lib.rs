//! Key checks for byok: ask a provider whether a user's API key works, and
//! if not, why not — before it is saved and after.
//!
//! A fake key saved without a word fails only at the app's first real
//! request; a key that is out of credit, rate-limited or blocked in the
//! user's region fails the same way. The providers say which in their error
//! bodies, so a check here reads the status **and** the body, provider by
//! provider, into a [`KeyCheck`]:
//!
//! | result | meaning |
//! |---|---|
//! | [`Valid`](KeyCheck::Valid) | accepted, with what the provider told (models, balance, limit) |
//! | [`Invalid`](KeyCheck::Invalid) | the provider does not know the key, or it was revoked |
//! | [`OutOfCredit`](KeyCheck::OutOfCredit) | accepted, but no credit or quota left |
//! | [`RateLimited`](KeyCheck::RateLimited) | too many requests for now, with `Retry-After` |
//! | [`RegionBlocked`](KeyCheck::RegionBlocked) | the provider does not serve this region |
//! | [`Forbidden`](KeyCheck::Forbidden) | the key may not use this service |
//! | [`Unavailable`](KeyCheck::Unavailable) | 5xx, timeout, DNS or connection failure: nothing known about the key |
//! | [`Unknown`](KeyCheck::Unknown) | any other answer, with its status |
//!
//! * [`Prober`] is the trait of one provider's check; [`HttpProber`] holds
//!   the built-in ones (OpenAI, Anthropic, Gemini, Mistral, Groq,
//!   OpenRouter, DeepSeek, xAI, Cohere, Azure OpenAI and any
//!   OpenAI-compatible URL), each with the cheapest call that tells the
//!   most (see [`probes`]).
//! * [`Checker`] holds an app's probers by provider id and checks unsaved
//!   keys ([`Checker::check`], which stores nothing) and saved ones
//!   ([`ByokCheckExt::check_key`] on the [`Byok`](byok_core::Byok) manager).
//! * [`CheckClient`] is the one HTTP client of checks: https only, no
//!   private or loopback addresses (after DNS resolution too), no
//!   redirects to other hosts, short timeouts, a cap on the body, the key
//!   only in a sensitive header (see [`client`]).
//! * [`classify`] holds the rules, usable on their own.
//!
//! The cheap checks cost nothing at the provider. A deeper check,
//! [`Checker::check_with_completion`], asks a model the app names for one
//! token, and so **costs a request**; it is for providers whose cheap call
//! cannot see the quota (OpenAI, Anthropic, Gemini).
//!
//! ```no_run
//! # #[cfg(feature = "http")] {
//! use byok_check::{ByokCheckExt, CheckClient, CheckPolicy, Checker, KeyCheck};
//! use byok_core::secrecy::SecretString;
//!
//! # async fn run(byok: byok_core::Byok) -> Result<(), Box<dyn std::error::Error>> {
//! let checker = Checker::builtin(&CheckClient::new(CheckPolicy::default())?);
//!
//! // A key the user just typed, before saving it (nothing is stored):
//! let typed = SecretString::from("sk-proj-...");
//! match checker.check("openai", &typed).await? {
//!     KeyCheck::Invalid(_) => println!("OpenAI does not accept this key"),
//!     other => println!("{other}"),
//! }
//!
//! // A key already saved:
//! let check = byok.check_key(&checker, "alice", "anthropic").await?;
//! println!("{}: {check}", check.outcome());
//! # Ok(())
//! # }
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod checker;
pub mod classify;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod client;
pub mod error;
pub mod prober;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod probes;
pub mod result;
pub mod testing;

pub use checker::{ByokCheckExt, Checker};
#[cfg(feature = "http")]
pub use client::{CheckClient, CheckPolicy};
pub use error::{CheckError, Result};
pub use prober::Prober;
#[cfg(feature = "http")]
pub use probes::HttpProber;
pub use result::{Balance, Detail, KeyCheck, KeyInfo, Unavailable};
