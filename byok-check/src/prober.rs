//! The [`Prober`] trait: how one provider's keys are checked.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::error::{CheckError, Result};
use crate::result::KeyCheck;

/// Checks keys of one provider. The built-in probes are
/// [`HttpProber`](crate::HttpProber)s; an app adds a provider of its own by
/// implementing this trait and registering it with
/// [`Checker::register`](crate::Checker::register).
///
/// Implementations must keep the key out of URLs, logs, spans, errors and
/// `Debug` output; the [`CheckClient`](crate::CheckClient) of the `http`
/// feature does the network side of that.
///
/// ```
/// use byok_check::{Checker, Detail, KeyCheck, KeyInfo, Prober, Result};
/// use byok_core::async_trait;
/// use byok_core::secrecy::{ExposeSecret, SecretString};
///
/// /// An in-house gateway whose keys all start with "gw-".
/// #[derive(Debug)]
/// struct Gateway;
///
/// #[async_trait]
/// impl Prober for Gateway {
///     fn provider(&self) -> &str {
///         "gateway"
///     }
///     async fn check(&self, key: &SecretString) -> Result<KeyCheck> {
///         Ok(if key.expose_secret().starts_with("gw-") {
///             KeyCheck::Valid(KeyInfo::default())
///         } else {
///             KeyCheck::Invalid(Detail::default())
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let checker = Checker::new().register(Gateway);
/// let check = checker.check("gateway", &SecretString::from("gw-123")).await?;
/// assert!(check.is_valid());
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Prober: fmt::Debug + Send + Sync + 'static {
    /// The provider id this prober checks, as keys are stored under it
    /// (`openai`, `google`, …).
    fn provider(&self) -> &str;

    /// The cheap check: a call that costs nothing (listing models, reading
    /// the key's own record or balance), never a completion.
    async fn check(&self, key: &SecretString) -> Result<KeyCheck>;

    /// The deeper check: a request for one token from `model`, for
    /// providers whose cheap call cannot see the quota (OpenAI, Anthropic,
    /// Gemini, …). **It costs a (tiny) billed request.** Probers that have
    /// no such call answer [`CheckError::Unsupported`].
    async fn check_with_completion(&self, key: &SecretString, model: &str) -> Result<KeyCheck> {
        let _ = (key, model);
        Err(CheckError::Unsupported {
            provider: self.provider().to_owned(),
            what: "make a completion request",
        })
    }
}

/// `Arc` and `Box` of a prober are probers, each method forwarded.
macro_rules! forward_prober {
    ($($ptr:ident),*) => {$(
        #[async_trait]
        impl<P: Prober + ?Sized> Prober for $ptr<P> {
            fn provider(&self) -> &str {
                (**self).provider()
            }
            async fn check(&self, key: &SecretString) -> Result<KeyCheck> {
                (**self).check(key).await
            }
            async fn check_with_completion(&self, key: &SecretString, model: &str) -> Result<KeyCheck> {
                (**self).check_with_completion(key, model).await
            }
        }
    )*};
}

forward_prober!(Arc, Box);
