//! [`ByokWeb`]: the manager, the way users are identified and the web
//! settings, shared by the settings router and the route guards.

use std::fmt;
use std::sync::Arc;

use axum::http::request::Parts;
use byok_core::display::{ProviderInfo, known_providers};
use byok_core::{Byok, ConfigError, validate};

use crate::identity::{Identify, UserIdentity};
use crate::rejection::ByokRejection;

/// Where the settings page is mounted unless set otherwise.
pub const DEFAULT_SETTINGS_PATH: &str = "/settings/api-keys";

/// The largest request body the settings routes accept, unless set
/// otherwise; a larger one is answered with `413 Payload Too Large`.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;

/// byok for an axum application: the [`Byok`] manager, how a request's user
/// is found, the providers the settings page offers, and the HTTPS policy.
///
/// Cloning is cheap; clones share everything. Build one with
/// [`ByokWeb::builder`], then mount [`settings_router`](Self::settings_router)
/// and guard routes with [`require_key`](Self::require_key).
///
/// byok-axum does no work per request beyond what a route asks for: it does
/// not decrypt or sweep a user's keys on every request (the Python library
/// did, to clean up expired keys). Expired keys are invisible as soon as
/// they expire, and removing them is the job of the store's sweeper or the
/// manager's `auto_cleanup` task.
#[derive(Clone)]
pub struct ByokWeb {
    inner: Arc<Inner>,
}

struct Inner {
    byok: Byok,
    identity: Arc<dyn Identify>,
    providers: Vec<ProviderInfo>,
    settings_path: String,
    production: bool,
    trust_forwarded_proto: bool,
    served_over_tls: bool,
    body_limit: usize,
}

impl fmt::Debug for ByokWeb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("ByokWeb")
            .field("byok", &i.byok)
            .field("identity", &i.identity)
            .field(
                "providers",
                &i.providers.iter().map(|p| &p.id).collect::<Vec<_>>(),
            )
            .field("settings_path", &i.settings_path)
            .field("production", &i.production)
            .field("trust_forwarded_proto", &i.trust_forwarded_proto)
            .field("served_over_tls", &i.served_over_tls)
            .field("body_limit", &i.body_limit)
            .finish()
    }
}

/// Builds a [`ByokWeb`].
#[derive(Debug)]
pub struct ByokWebBuilder {
    byok: Byok,
    identity: Arc<dyn Identify>,
    providers: Option<Vec<String>>,
    settings_path: String,
    production: bool,
    trust_forwarded_proto: bool,
    served_over_tls: bool,
    body_limit: usize,
}

impl ByokWebBuilder {
    /// The providers the settings page and API offer, in this order.
    /// Default: every provider of
    /// [`known_providers`](byok_core::display::known_providers).
    pub fn providers<I, P>(mut self, providers: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.providers = Some(providers.into_iter().map(Into::into).collect());
        self
    }

    /// Where the application nests [`ByokWeb::settings_router`]; the
    /// "API key required" page and the forms link there. Default:
    /// [`DEFAULT_SETTINGS_PATH`].
    pub fn settings_path(mut self, path: impl Into<String>) -> Self {
        self.settings_path = path.into();
        self
    }

    /// Whether the application runs in production. With
    /// `ByokConfig::require_https` on, a key submitted over plain HTTP is
    /// refused in production and only logged as a warning otherwise.
    /// Default: `true`.
    pub fn production(mut self, production: bool) -> Self {
        self.production = production;
        self
    }

    /// Whether to believe the `X-Forwarded-Proto` header. Turn this on only
    /// behind a reverse proxy that sets (and overwrites) it, since any client
    /// can send it. Default: `false`.
    pub fn trust_forwarded_proto(mut self, trust: bool) -> Self {
        self.trust_forwarded_proto = trust;
        self
    }

    /// Whether the application's own listener speaks TLS, so that every
    /// request it gets arrived encrypted. Default: `false`.
    pub fn served_over_tls(mut self, tls: bool) -> Self {
        self.served_over_tls = tls;
        self
    }

    /// The largest request body the settings routes accept. Default:
    /// [`DEFAULT_BODY_LIMIT`].
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Checks the settings and builds the [`ByokWeb`].
    ///
    /// Fails when a provider name is not a valid provider, appears twice,
    /// or the settings path does not start with `/`.
    pub fn build(self) -> Result<ByokWeb, ConfigError> {
        let providers = match self.providers {
            None => known_providers().collect(),
            Some(ids) => {
                let mut out: Vec<ProviderInfo> = Vec::with_capacity(ids.len());
                for id in ids {
                    validate::provider(&id).map_err(|e| {
                        ConfigError::new(format!("a configured provider is not valid: {e}"))
                    })?;
                    if out.iter().any(|p| p.id == id) {
                        return Err(ConfigError::new(format!(
                            "provider {id:?} is configured twice"
                        )));
                    }
                    out.push(ProviderInfo::of(&id));
                }
                out
            }
        };
        let path = self.settings_path.trim_end_matches('/');
        if !self.settings_path.starts_with('/') || path.is_empty() {
            return Err(ConfigError::new(
                "the settings path must start with '/' and not be the root",
            ));
        }
        if self.production
            && self.byok.config().require_https
            && !self.served_over_tls
            && !self.trust_forwarded_proto
        {
            tracing::warn!(
                "byok-axum runs in production with require_https, but neither served_over_tls \
                 nor trust_forwarded_proto is set: only requests whose URI says https can \
                 submit keys, so every form post will be refused"
            );
        }
        Ok(ByokWeb {
            inner: Arc::new(Inner {
                byok: self.byok,
                identity: self.identity,
                providers,
                settings_path: path.to_owned(),
                production: self.production,
                trust_forwarded_proto: self.trust_forwarded_proto,
                served_over_tls: self.served_over_tls,
                body_limit: self.body_limit,
            }),
        })
    }
}

impl ByokWeb {
    /// A builder over `byok` that finds each request's user with `identity`
    /// (a [`TrustedHeader`](crate::TrustedHeader), a
    /// [`SessionKeys`](crate::SessionKeys), a closure through
    /// [`identify_with`](crate::identify_with), or your own [`Identify`]).
    pub fn builder(byok: Byok, identity: impl Identify) -> ByokWebBuilder {
        ByokWebBuilder {
            byok,
            identity: Arc::new(identity),
            providers: None,
            settings_path: DEFAULT_SETTINGS_PATH.to_owned(),
            production: true,
            trust_forwarded_proto: false,
            served_over_tls: false,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The manager.
    pub fn byok(&self) -> &Byok {
        &self.inner.byok
    }

    /// The configured providers, in order.
    pub fn providers(&self) -> &[ProviderInfo] {
        &self.inner.providers
    }

    /// The configured provider `id`, if it is one.
    pub fn provider(&self, id: &str) -> Option<&ProviderInfo> {
        self.inner.providers.iter().find(|p| p.id == id)
    }

    /// Where the settings router is nested (no trailing slash).
    pub fn settings_path(&self) -> &str {
        &self.inner.settings_path
    }

    /// Whether the application runs in production.
    pub fn is_production(&self) -> bool {
        self.inner.production
    }

    pub(crate) fn trusts_forwarded_proto(&self) -> bool {
        self.inner.trust_forwarded_proto
    }

    pub(crate) fn served_over_tls(&self) -> bool {
        self.inner.served_over_tls
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// The user of a request, or `401 Unauthorized` when there is none.
    pub async fn identify(&self, parts: &mut Parts) -> Result<UserIdentity, ByokRejection> {
        match self.inner.identity.identify(parts).await {
            Ok(Some(user)) => {
                validate::user_id(&user.user_id).map_err(|e| {
                    tracing::error!(error = %e, "the application's identity gave an invalid user id");
                    ByokRejection::internal("the user could not be identified")
                })?;
                Ok(user)
            }
            Ok(None) => Err(ByokRejection::unauthenticated()),
            Err(e) => {
                tracing::error!(error = %e, "identifying the user failed");
                Err(ByokRejection::internal("the user could not be identified"))
            }
        }
    }

    /// An [`Extension`](axum::Extension) layer that puts this `ByokWeb` on
    /// every request, for the [`ByokUser`](crate::ByokUser) and
    /// [`RequireKey`](crate::RequireKey) extractors.
    pub fn layer(&self) -> axum::Extension<ByokWeb> {
        axum::Extension(self.clone())
    }
}

/// The `ByokWeb` of a request, put there by [`ByokWeb::layer`] or by the
/// settings router.
pub(crate) fn from_parts(parts: &Parts) -> Result<ByokWeb, ByokRejection> {
    parts.extensions.get::<ByokWeb>().cloned().ok_or_else(|| {
        tracing::error!(
            "ByokWeb is not on the request: add `.layer(byok_web.layer())` to the router"
        );
        ByokRejection::internal("byok is not set up on this route")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrustedHeader;
    use byok_core::{ByokConfig, Keyring, MasterKey};

    fn builder() -> ByokWebBuilder {
        let config = ByokConfig {
            auto_cleanup: false,
            ..ByokConfig::default()
        };
        let byok = Byok::new(
            Arc::new(byok_memory::MemoryStorage::new()),
            Keyring::new(1, MasterKey::generate()),
            config,
        )
        .unwrap();
        ByokWeb::builder(byok, TrustedHeader::new("x-user".parse().unwrap()))
    }

    #[test]
    fn builder_checks_its_settings() {
        let web = builder().build().unwrap();
        assert_eq!(web.settings_path(), DEFAULT_SETTINGS_PATH);
        assert!(web.provider("openai").is_some() && web.provider("xai").is_some());
        assert!(web.is_production());

        let web = builder()
            .providers(["groq", "anthropic"])
            .settings_path("/keys/")
            .build()
            .unwrap();
        assert_eq!(web.settings_path(), "/keys");
        let names: Vec<&str> = web.providers().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Groq", "Anthropic"]);

        for bad in [
            builder().providers(["openai", "openai"]),
            builder().providers([""]),
            builder().providers(["tab\there"]),
            builder().settings_path("settings"),
            builder().settings_path("/"),
        ] {
            assert!(bad.build().is_err());
        }
        let debug = format!("{:?}", builder().build().unwrap());
        assert!(
            debug.contains("settings_path: \"/settings/api-keys\""),
            "{debug}"
        );
    }
}
