//! [`Checker`]: the probes of an app, by provider id, and the checks of saved
//! and unsaved keys.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use byok_core::Byok;
use secrecy::SecretString;
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::{CheckError, Result};
use crate::prober::Prober;
use crate::result::KeyCheck;

/// The probes an app knows, by provider id.
///
/// [`Checker::builtin`] holds every built-in probe at its provider's public
/// URL; [`register`](Self::register) adds or replaces one (an Azure
/// endpoint, an OpenAI-compatible gateway, a provider of the app's own).
///
/// Every check runs in a `byok.check` span (`provider`, `outcome`) and,
/// with the `metrics` feature, counts in `byok_key_checks_total`
/// (`provider`, `result` — an [`outcome`](KeyCheck::outcome) or `error`)
/// and `byok_key_check_duration_seconds` (`provider`). Unlike the storage
/// metrics, these carry the provider: its values are the ids of the probes
/// the app registered, never an id a user typed (an unknown provider fails
/// before anything is counted). The user id and the key are never there.
#[derive(Clone, Default)]
pub struct Checker {
    probers: BTreeMap<String, Arc<dyn Prober>>,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("providers", &self.probers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Checker {
    /// A checker without probes.
    pub fn new() -> Self {
        Checker::default()
    }

    /// Every built-in probe, at its provider's public URL, over `client`:
    /// `openai`, `anthropic`, `google` (also as `gemini`), `mistral`,
    /// `groq`, `openrouter`, `deepseek`, `xai`, `cohere`. Azure OpenAI and
    /// OpenAI-compatible endpoints need a URL: register them.
    ///
    /// ```
    /// use byok_check::{CheckClient, CheckPolicy, Checker};
    /// let checker = Checker::builtin(&CheckClient::new(CheckPolicy::default())?);
    /// assert!(checker.providers().any(|p| p == "anthropic"));
    /// # Ok::<(), byok_check::CheckError>(())
    /// ```
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn builtin(client: &crate::CheckClient) -> Self {
        use crate::HttpProber;
        let gemini = Arc::new(HttpProber::gemini(client));
        Checker::new()
            .register(HttpProber::openai(client))
            .register(HttpProber::anthropic(client))
            .register_as("google", Arc::clone(&gemini))
            .register_as("gemini", gemini)
            .register(HttpProber::mistral(client))
            .register(HttpProber::groq(client))
            .register(HttpProber::openrouter(client))
            .register(HttpProber::deepseek(client))
            .register(HttpProber::xai(client))
            .register(HttpProber::cohere(client))
    }

    /// Adds `prober` under its own provider id, replacing any before it.
    pub fn register(self, prober: impl Prober) -> Self {
        let id = prober.provider().to_owned();
        self.register_as(&id, prober)
    }

    /// Adds `prober` under `provider`, for keys stored under another id
    /// than the prober's own.
    pub fn register_as(mut self, provider: &str, prober: impl Prober) -> Self {
        self.probers.insert(provider.to_owned(), Arc::new(prober));
        self
    }

    /// The provider ids that can be checked.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.probers.keys().map(String::as_str)
    }

    /// The prober of `provider`.
    pub fn prober(&self, provider: &str) -> Result<&Arc<dyn Prober>> {
        self.probers
            .get(provider)
            .ok_or_else(|| CheckError::UnknownProvider {
                provider: provider.to_owned(),
            })
    }

    /// Checks a key that is not saved (such as one a user just typed),
    /// with the provider's cheap call. Nothing is stored.
    pub async fn check(&self, provider: &str, key: &SecretString) -> Result<KeyCheck> {
        let prober = self.prober(provider)?;
        observed(prober.provider(), prober.check(key)).await
    }

    /// Checks a key that is not saved with a one-token request to `model`.
    /// **This costs a (tiny) billed request**; use it where the cheap call
    /// cannot see the quota and the app has chosen to pay for knowing.
    pub async fn check_with_completion(
        &self,
        provider: &str,
        key: &SecretString,
        model: &str,
    ) -> Result<KeyCheck> {
        let prober = self.prober(provider)?;
        observed(prober.provider(), prober.check_with_completion(key, model)).await
    }

    /// Checks the key that `user_id` saved for `provider`, and keeps the
    /// result with the key ([`Byok::record_check`], read back by
    /// [`Byok::last_check`] and [`Byok::key_summary`]) as
    /// [`KeyCheck::record`] makes it. Fails with
    /// [`ByokError::KeyNotFound`](byok_core::ByokError::KeyNotFound) when
    /// there is none.
    ///
    /// Every result is kept, [`Unavailable`](KeyCheck::Unavailable) too:
    /// the last check is the last one made ("the provider could not be
    /// reached", and when), even if it says nothing about the key. A check
    /// that could not be made at all (an error) keeps nothing. A failure
    /// to keep the result is logged, never returned: the check itself was
    /// made.
    pub async fn check_saved(
        &self,
        byok: &Byok,
        user_id: &str,
        provider: &str,
    ) -> Result<KeyCheck> {
        let prober = self.prober(provider)?;
        let key = byok.require_key(user_id, provider).await?;
        let check = observed(prober.provider(), prober.check(&key)).await?;
        drop(key);
        keep(byok, user_id, provider, &check).await;
        Ok(check)
    }
}

/// Keeps `check` as the last check of the user's key for `provider`;
/// logs (without the user id or the key) when it cannot.
async fn keep(byok: &Byok, user_id: &str, provider: &str, check: &KeyCheck) {
    let record = match check.record() {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(provider, error = %e, "the result of a key check could not be kept");
            return;
        }
    };
    match byok.record_check(user_id, provider, &record).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(
            provider,
            "the result of a key check was not kept (the key is gone, or the store keeps no checks)"
        ),
        Err(e) => {
            tracing::warn!(provider, error = %e, "the result of a key check could not be kept");
        }
    }
}

async fn observed(
    provider: &str,
    check: impl Future<Output = Result<KeyCheck>>,
) -> Result<KeyCheck> {
    let span = tracing::info_span!("byok.check", provider, outcome = Empty);
    let start = Instant::now();
    let result = check.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(check) => check.outcome(),
        Err(_) => "error",
    };
    span.record("outcome", outcome);
    #[cfg(feature = "metrics")]
    {
        let provider = provider.to_owned();
        metrics::counter!("byok_key_checks_total", "provider" => provider.clone(), "result" => outcome)
            .increment(1);
        metrics::histogram!("byok_key_check_duration_seconds", "provider" => provider)
            .record(start.elapsed().as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = start;
    result
}

/// Key checks as methods of the [`Byok`] manager.
///
/// ```
/// use std::sync::Arc;
/// use byok_check::{ByokCheckExt, Checker, CheckError};
/// use byok_core::{Byok, ByokConfig, ByokError, Keyring, MasterKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let byok = Byok::new(
///     Arc::new(byok_memory::MemoryStorage::new()),
///     Keyring::new(1, MasterKey::generate()),
///     ByokConfig::default(),
/// )?;
/// # let checker = Checker::new().register(byok_check::testing::Fixed::valid("openai"));
/// // let checker = Checker::builtin(&CheckClient::new(CheckPolicy::default())?);
/// let err = byok.check_key(&checker, "alice", "openai").await.unwrap_err();
/// assert!(matches!(err, CheckError::Byok(ByokError::KeyNotFound { .. })));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait ByokCheckExt {
    /// Checks the key that `user_id` saved for `provider` with `checker`,
    /// and keeps the result with the key (see [`Checker::check_saved`]).
    async fn check_key(&self, checker: &Checker, user_id: &str, provider: &str)
    -> Result<KeyCheck>;
}

#[async_trait]
impl ByokCheckExt for Byok {
    async fn check_key(
        &self,
        checker: &Checker,
        user_id: &str,
        provider: &str,
    ) -> Result<KeyCheck> {
        checker.check_saved(self, user_id, provider).await
    }
}
