//! [`HttpProber`]: the built-in probes, one per provider.
//!
//! | provider id | constructor | cheap call | key in | deeper call (costs a request) |
//! |---|---|---|---|---|
//! | `openai` | [`openai`](HttpProber::openai) | `GET {base}/models` | `Authorization: Bearer` | `POST {base}/chat/completions`, `max_completion_tokens: 1` |
//! | `anthropic` | [`anthropic`](HttpProber::anthropic) | `GET {base}/models` | `x-api-key` (+ `anthropic-version`) | `POST {base}/messages`, `max_tokens: 1` |
//! | `google` | [`gemini`](HttpProber::gemini) | `GET {base}/models` | `x-goog-api-key` (never `?key=`) | `POST {base}/models/{model}:generateContent`, `maxOutputTokens: 1` |
//! | `mistral` | [`mistral`](HttpProber::mistral) | `GET {base}/models` | `Authorization: Bearer` | `POST {base}/chat/completions` |
//! | `groq` | [`groq`](HttpProber::groq) | `GET {base}/models` | `Authorization: Bearer` | `POST {base}/chat/completions` |
//! | `openrouter` | [`openrouter`](HttpProber::openrouter) | `GET {base}/key` (its `/models` is public) | `Authorization: Bearer` | `POST {base}/chat/completions` |
//! | `deepseek` | [`deepseek`](HttpProber::deepseek) | `GET {base}/user/balance` | `Authorization: Bearer` | `POST {base}/chat/completions` |
//! | `xai` | [`xai`](HttpProber::xai) | `GET {base}/api-key` | `Authorization: Bearer` | `POST {base}/chat/completions` |
//! | `cohere` | [`cohere`](HttpProber::cohere) | `POST {base}/check-api-key` | `Authorization: Bearer` | none (the cheap call sees trial limits) |
//! | `azure-openai` | [`azure_openai`](HttpProber::azure_openai) | `GET {endpoint}/openai/v1/models` | `api-key` | `POST {endpoint}/openai/v1/chat/completions` (model = deployment) |
//! | any | [`openai_compatible`](HttpProber::openai_compatible) | `GET {base}/models` | `Authorization: Bearer` | `POST {base}/chat/completions` |
//!
//! Every base URL can be changed with [`with_base_url`](HttpProber::with_base_url)
//! (a regional endpoint, a gateway, a test server); the client's
//! [`CheckPolicy`](crate::CheckPolicy) decides whether it may be reached.

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::json;
use tracing::Instrument;
use url::Url;

use crate::classify::{Answer, Dialect, classify};
use crate::client::{CheckClient, ProbeRequest, Reply};
use crate::error::{CheckError, Result};
use crate::prober::Prober;
use crate::result::{Detail, KeyCheck, KeyInfo};

/// The `anthropic-version` header that the Anthropic probe sends.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A built-in probe: a provider's cheapest telling call over a
/// [`CheckClient`], classified by that provider's [`Dialect`].
///
/// ```
/// use byok_check::{CheckClient, CheckPolicy, HttpProber, Prober};
/// let client = CheckClient::new(CheckPolicy::default())?;
/// let groq = HttpProber::groq(&client);
/// assert_eq!(groq.provider(), "groq");
/// assert_eq!(groq.base_url().as_str(), "https://api.groq.com/openai/v1/");
/// let local = HttpProber::openai_compatible(&client, "together", "https://api.together.xyz/v1")?;
/// assert_eq!(local.provider(), "together");
/// # Ok::<(), byok_check::CheckError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpProber {
    provider: String,
    dialect: Dialect,
    base: Url,
    client: CheckClient,
}

/// The id under which each dialect's keys are stored by default, and its
/// default base URL.
fn defaults(dialect: Dialect) -> (&'static str, &'static str) {
    match dialect {
        Dialect::OpenAi => ("openai", "https://api.openai.com/v1"),
        Dialect::Anthropic => ("anthropic", "https://api.anthropic.com/v1"),
        Dialect::Gemini => ("google", "https://generativelanguage.googleapis.com/v1beta"),
        Dialect::Mistral => ("mistral", "https://api.mistral.ai/v1"),
        Dialect::Groq => ("groq", "https://api.groq.com/openai/v1"),
        Dialect::OpenRouter => ("openrouter", "https://openrouter.ai/api/v1"),
        Dialect::DeepSeek => ("deepseek", "https://api.deepseek.com"),
        Dialect::Xai => ("xai", "https://api.x.ai/v1"),
        Dialect::Cohere => ("cohere", "https://api.cohere.com/v1"),
        Dialect::AzureOpenAi => ("azure-openai", "https://example.openai.azure.com/openai/v1"),
        Dialect::OpenAiCompatible => ("openai-compatible", "https://api.openai.com/v1"),
    }
}

/// Parses a base URL so that relative paths join beneath it.
fn base_url(base: &str) -> Result<Url> {
    let with_slash = if base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    };
    let url = Url::parse(&with_slash).map_err(|_| CheckError::refused("", "not a URL"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CheckError::refused(
            url.host_str().unwrap_or(""),
            "a base URL takes no query or fragment",
        ));
    }
    Ok(url)
}

/// A model name goes into a path or a body: keep it to the characters
/// model names use.
fn check_model(provider: &str, model: &str, path_chars: bool) -> Result<()> {
    let ok = !model.is_empty()
        && model.len() <= 200
        && !model.contains("..")
        && model.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.')
                || (path_chars && matches!(c, ':' | '@' | '/'))
        });
    if ok {
        Ok(())
    } else {
        Err(CheckError::Unsupported {
            provider: provider.to_owned(),
            what: "use a model name with characters other than letters, digits and -_. (and :@/ in a body)",
        })
    }
}

impl HttpProber {
    #[allow(clippy::expect_used, reason = "constant URLs, tested")]
    fn builtin(client: &CheckClient, dialect: Dialect) -> Self {
        let (provider, base) = defaults(dialect);
        HttpProber {
            provider: provider.to_owned(),
            dialect,
            base: base_url(base).expect("the default base URLs are valid"),
            client: client.clone(),
        }
    }

    /// OpenAI.
    pub fn openai(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::OpenAi)
    }
    /// Anthropic.
    pub fn anthropic(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::Anthropic)
    }
    /// Google Gemini, under the provider id `google`.
    pub fn gemini(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::Gemini)
    }
    /// Mistral.
    pub fn mistral(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::Mistral)
    }
    /// Groq.
    pub fn groq(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::Groq)
    }
    /// OpenRouter.
    pub fn openrouter(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::OpenRouter)
    }
    /// DeepSeek.
    pub fn deepseek(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::DeepSeek)
    }
    /// xAI.
    pub fn xai(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::Xai)
    }
    /// Cohere.
    pub fn cohere(client: &CheckClient) -> Self {
        Self::builtin(client, Dialect::Cohere)
    }

    /// Azure OpenAI at `endpoint` (`https://{resource}.openai.azure.com`),
    /// under the provider id `azure-openai`.
    pub fn azure_openai(client: &CheckClient, endpoint: &str) -> Result<Self> {
        let base = base_url(endpoint)?
            .join("openai/v1")
            .map_err(|_| CheckError::refused("", "not a URL"))?;
        Self::builtin(client, Dialect::AzureOpenAi).with_base_url(base.as_str())
    }

    /// Any endpoint that speaks OpenAI's API at `base_url` (up to and
    /// including its `/v1`), for keys stored under `provider`.
    pub fn openai_compatible(client: &CheckClient, provider: &str, base_url: &str) -> Result<Self> {
        byok_core::validate::provider(provider).map_err(byok_core::ByokError::from)?;
        let mut prober =
            Self::builtin(client, Dialect::OpenAiCompatible).with_base_url(base_url)?;
        provider.clone_into(&mut prober.provider);
        Ok(prober)
    }

    /// The same probe against another base URL (the part before `/models`,
    /// `/key`, …). Whether it may be reached is the client policy's call,
    /// made on every request.
    pub fn with_base_url(mut self, base: &str) -> Result<Self> {
        self.base = base_url(base)?;
        Ok(self)
    }

    /// The same probe for keys stored under another provider id.
    pub fn with_provider_id(mut self, provider: &str) -> Result<Self> {
        byok_core::validate::provider(provider).map_err(byok_core::ByokError::from)?;
        provider.clone_into(&mut self.provider);
        Ok(self)
    }

    /// The base URL, ending in `/`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The dialect its answers are read in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|_| CheckError::refused(self.base.host_str().unwrap_or(""), "not a URL"))
    }

    fn authorize(&self, request: ProbeRequest, key: &SecretString) -> Result<ProbeRequest> {
        match self.dialect {
            Dialect::Anthropic => request
                .header("anthropic-version", ANTHROPIC_VERSION)
                .secret_header("x-api-key", "", key),
            Dialect::Gemini => request.secret_header("x-goog-api-key", "", key),
            Dialect::AzureOpenAi => request.secret_header("api-key", "", key),
            _ => request.secret_header("authorization", "Bearer ", key),
        }
    }

    async fn ask(
        &self,
        request: ProbeRequest,
        key: &SecretString,
        completion: bool,
    ) -> Result<KeyCheck> {
        let request = self.authorize(request, key)?;
        let span = tracing::debug_span!(
            "byok.check.request",
            provider = %self.provider,
            status = tracing::field::Empty,
        );
        let reply = self.client.send(request).instrument(span.clone()).await?;
        Ok(match reply {
            Reply::Failed(reason) => KeyCheck::Unavailable {
                reason,
                detail: Detail::default(),
            },
            Reply::Answer { status, .. } if completion && (200..300).contains(&status) => {
                KeyCheck::Valid(KeyInfo::status(status))
            }
            Reply::Answer {
                status,
                retry_after,
                body,
            } => {
                span.record("status", status);
                let answer = Answer {
                    status,
                    retry_after,
                    body: body.as_deref(),
                };
                classify(
                    self.dialect,
                    &answer,
                    Some(secrecy::ExposeSecret::expose_secret(key)),
                )
            }
        })
    }
}

#[async_trait]
impl Prober for HttpProber {
    fn provider(&self) -> &str {
        &self.provider
    }

    async fn check(&self, key: &SecretString) -> Result<KeyCheck> {
        let request = match self.dialect {
            Dialect::OpenRouter => ProbeRequest::get(self.url("key")?),
            Dialect::DeepSeek => ProbeRequest::get(self.url("user/balance")?),
            Dialect::Xai => ProbeRequest::get(self.url("api-key")?),
            Dialect::Cohere => ProbeRequest::post_json(self.url("check-api-key")?, &json!({})),
            _ => ProbeRequest::get(self.url("models")?),
        };
        self.ask(request, key, false).await
    }

    async fn check_with_completion(&self, key: &SecretString, model: &str) -> Result<KeyCheck> {
        let hi = json!([{ "role": "user", "content": "hi" }]);
        let request = match self.dialect {
            Dialect::Cohere => {
                return Err(CheckError::Unsupported {
                    provider: self.provider.clone(),
                    what: "make a completion request (its check-api-key call already sees trial limits)",
                });
            }
            Dialect::Anthropic => {
                check_model(&self.provider, model, true)?;
                let body = json!({ "model": model, "max_tokens": 1, "messages": hi });
                ProbeRequest::post_json(self.url("messages")?, &body)
            }
            Dialect::Gemini => {
                // The model goes into the path: no '/', ':' or '@' there.
                let model = model.strip_prefix("models/").unwrap_or(model);
                check_model(&self.provider, model, false)?;
                let body = json!({
                    "contents": [{ "parts": [{ "text": "hi" }] }],
                    "generationConfig": { "maxOutputTokens": 1 },
                });
                ProbeRequest::post_json(
                    self.url(&format!("models/{model}:generateContent"))?,
                    &body,
                )
            }
            Dialect::OpenAi => {
                check_model(&self.provider, model, true)?;
                let body = json!({ "model": model, "max_completion_tokens": 1, "messages": hi });
                ProbeRequest::post_json(self.url("chat/completions")?, &body)
            }
            _ => {
                check_model(&self.provider, model, true)?;
                let body = json!({ "model": model, "max_tokens": 1, "messages": hi });
                ProbeRequest::post_json(self.url("chat/completions")?, &body)
            }
        };
        self.ask(request, key, true).await
    }
}
