//! [`ByokWeb`]: the manager, the way users are identified and the web
//! settings, shared by the settings router and the route guards.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use byok_core::display::{ProviderInfo, known_providers};
use byok_core::{Byok, ConfigError, validate};
use tower::{Layer, Service};

use crate::html::{self, View};
use crate::identity::{Identify, IdentityRefused, UserIdentity};
use crate::page::{Layout, Texts};
use crate::rejection::{ByokRejection, DEFAULT_CSP, RejectionKind};

/// Where the settings page is served unless set otherwise.
pub const DEFAULT_SETTINGS_PATH: &str = "/settings/api-keys";

/// The largest request body the settings routes accept, unless set
/// otherwise; a larger one is answered with `413 Payload Too Large`.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;

/// The lifetimes the settings form offers with
/// [`ByokWebBuilder::lifetime_choices`]: one day, 30 days, and until the
/// user deletes the key.
pub const LIFETIME_CHOICES: [Option<Duration>; 3] = [
    Some(Duration::from_secs(24 * 3600)),
    Some(Duration::from_secs(30 * 24 * 3600)),
    None,
];

/// byok for an axum application: the [`Byok`] manager, how a request's user
/// is found, the providers the settings page offers, and the HTTPS policy.
///
/// Cloning is cheap; clones share everything. Build one with
/// [`ByokWeb::builder`], then merge [`settings_router`](Self::settings_router)
/// into the app and guard routes with [`require_key`](Self::require_key).
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
    /// The configured providers, and those that guards added after them.
    providers: RwLock<Arc<[ProviderInfo]>>,
    settings_path: String,
    trusted_origins: Vec<String>,
    csp: HeaderValue,
    options: Options,
}

/// What the builder sets and the built value keeps as it was set.
struct Options {
    production: bool,
    trust_forwarded_proto: bool,
    trust_forwarded_host: bool,
    served_over_tls: bool,
    loopback_http: bool,
    body_limit: usize,
    key_ttl: Option<Duration>,
    lifetimes: Vec<Option<Duration>>,
    sign_in_url: Option<String>,
    texts: Texts,
    layout: Option<Arc<dyn Layout>>,
    #[cfg(feature = "checks")]
    checks: crate::check::Checks,
}

impl fmt::Debug for ByokWeb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("ByokWeb");
        d.field("byok", &i.byok)
            .field("identity", &i.identity)
            .field(
                "providers",
                &self
                    .providers()
                    .iter()
                    .map(|p| p.id.clone())
                    .collect::<Vec<_>>(),
            )
            .field("settings_path", &i.settings_path)
            .field("production", &i.options.production)
            .field("trust_forwarded_proto", &i.options.trust_forwarded_proto)
            .field("trust_forwarded_host", &i.options.trust_forwarded_host)
            .field("served_over_tls", &i.options.served_over_tls)
            .field("loopback_http", &i.options.loopback_http)
            .field("trusted_origins", &i.trusted_origins)
            .field("body_limit", &i.options.body_limit)
            .field("key_ttl", &i.options.key_ttl)
            .field("lifetimes", &i.options.lifetimes)
            .field("sign_in_url", &i.options.sign_in_url);
        #[cfg(feature = "checks")]
        d.field("checker", &i.options.checks.checker)
            .field("check_before_saving", &i.options.checks.before_saving);
        d.finish_non_exhaustive()
    }
}

/// Builds a [`ByokWeb`].
pub struct ByokWebBuilder {
    byok: Byok,
    identity: Arc<dyn Identify>,
    providers: Option<Vec<String>>,
    settings_path: String,
    trusted_origins: Vec<String>,
    csp: String,
    options: Options,
}

impl fmt::Debug for ByokWebBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByokWebBuilder")
            .field("providers", &self.providers)
            .field("settings_path", &self.settings_path)
            .field("production", &self.options.production)
            .finish_non_exhaustive()
    }
}

impl ByokWebBuilder {
    /// The providers the settings page and API offer, in this order.
    /// Default: every provider of
    /// [`known_providers`](byok_core::display::known_providers). A provider
    /// that a guard asks for ([`ByokWeb::require_key`], [`RequireKey`](crate::RequireKey))
    /// is added after these, so that users can always add the key a page needs.
    pub fn providers<I, P>(mut self, providers: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.providers = Some(providers.into_iter().map(Into::into).collect());
        self
    }

    /// Where the settings page is served (with or without a trailing
    /// slash); [`ByokWeb::settings_router`] routes there, and the guard's
    /// page and the forms link there. Default: [`DEFAULT_SETTINGS_PATH`].
    pub fn settings_path(mut self, path: impl Into<String>) -> Self {
        self.settings_path = path.into();
        self
    }

    /// Whether the application runs in production. With
    /// `ByokConfig::require_https` on, a key submitted over plain HTTP from
    /// another machine is refused in production and only logged as a
    /// warning otherwise. Default: `true`.
    pub fn production(mut self, production: bool) -> Self {
        self.options.production = production;
        self
    }

    /// Whether plain HTTP on a loopback address (`localhost`,
    /// `127.0.0.0/8`, `[::1]`) counts as secure, as browsers count it.
    /// A request counts as loopback when its `Host` names such an address,
    /// its `Origin` or `Referer` (if sent) too, it carries no proxy header
    /// (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`), and the peer address is
    /// a loopback address where the server records it
    /// ([`ConnectInfo`](axum::extract::ConnectInfo)). Default: `true`.
    ///
    /// Behind a reverse proxy on the same machine that forwards plain HTTP
    /// from the network, rewrites `Host` to a loopback address and adds
    /// none of those headers (nginx's `proxy_pass` does so unless told to
    /// add `X-Forwarded-For`), a browser's post still names the public site
    /// in `Origin` and is refused, but a client that sends no `Origin`
    /// would pass: turn this off there, or have the proxy add
    /// `X-Forwarded-For`.
    pub fn allow_loopback_http(mut self, allow: bool) -> Self {
        self.options.loopback_http = allow;
        self
    }

    /// Whether to believe the `X-Forwarded-Proto` header. Turn this on only
    /// behind a reverse proxy that sets (and overwrites) it, since any client
    /// can send it. Default: `false`.
    pub fn trust_forwarded_proto(mut self, trust: bool) -> Self {
        self.options.trust_forwarded_proto = trust;
        self
    }

    /// Whether to take the site's own host from `X-Forwarded-Host` (its
    /// first value) rather than `Host`, for the same-origin check behind a
    /// proxy that rewrites `Host`. Turn it on only behind a proxy that sets
    /// (and overwrites) it. Default: `false`.
    pub fn trust_forwarded_host(mut self, trust: bool) -> Self {
        self.options.trust_forwarded_host = trust;
        self
    }

    /// Origins (`https://app.example.com`, scheme, host and port as a
    /// browser sends them in `Origin`) whose pages may change keys besides
    /// the site's own, such as the public name of a site behind a proxy.
    /// Default: none.
    pub fn trusted_origins<I, O>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        self.trusted_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the application's own listener speaks TLS, so that every
    /// request it gets arrived encrypted. Default: `false`.
    pub fn served_over_tls(mut self, tls: bool) -> Self {
        self.options.served_over_tls = tls;
        self
    }

    /// The largest request body the settings routes accept. Default:
    /// [`DEFAULT_BODY_LIMIT`].
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.options.body_limit = bytes;
        self
    }

    /// How long a key saved through the settings page or the JSON API
    /// lives when the user does not choose; `None` keeps it until the user
    /// deletes it. Default: `None`, no expiry. (The manager's own default
    /// TTL, `ByokConfig::default_ttl`, applies to `Ttl::Default` in the
    /// library and not here.) A [`UserIdentity::key_ttl`] caps it.
    pub fn key_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.options.key_ttl = ttl;
        self
    }

    /// The lifetimes the settings form offers, in this order; `None` is
    /// "until deleted". The [`key_ttl`](Self::key_ttl) is chosen at first
    /// when it is one of them. Default: no choice (every key gets the
    /// `key_ttl`). [`LIFETIME_CHOICES`] offers one day, 30 days and
    /// until deleted.
    pub fn lifetime_choices<I>(mut self, choices: I) -> Self
    where
        I: IntoIterator<Item = Option<Duration>>,
    {
        self.options.lifetimes = choices.into_iter().collect();
        self
    }

    /// The application's sign-in page: a request without a user gets a page
    /// that links there, with `?next=` back to the page it asked for.
    /// Default: none.
    pub fn sign_in_url(mut self, url: impl Into<String>) -> Self {
        self.options.sign_in_url = Some(url.into());
        self
    }

    /// The words of the pages, for an application in another language.
    /// Default: [`Texts::default`], English.
    pub fn texts(mut self, texts: Texts) -> Self {
        self.options.texts = texts;
        self
    }

    /// Puts byok-axum's pages (the settings page, the guard's page, error
    /// pages) into the application's layout.
    pub fn layout(mut self, layout: impl Layout) -> Self {
        self.options.layout = Some(Arc::new(layout));
        self
    }

    /// The `Content-Security-Policy` of byok-axum's pages, for a
    /// [`layout`](Self::layout) that needs more than inline styles.
    /// Default: `default-src 'none'; style-src 'unsafe-inline';
    /// form-action 'self'; frame-ancestors 'none'; base-uri 'none'`.
    pub fn content_security_policy(mut self, policy: impl Into<String>) -> Self {
        self.csp = policy.into();
        self
    }

    /// Key checks for the settings page and the JSON API: a "Test" button
    /// beside each saved key and each key input, and
    /// `POST …/api/{provider}/check`, for the providers `checker` has a
    /// probe for. Default: none.
    ///
    /// A check asks the provider over the network; build the checker's
    /// `CheckClient` with the default (strict) policy in production.
    #[cfg(feature = "checks")]
    #[cfg_attr(docsrs, doc(cfg(feature = "checks")))]
    pub fn checker(mut self, checker: byok_check::Checker) -> Self {
        self.options.checks.checker = Some(Arc::new(checker));
        self
    }

    /// Whether a key is checked before it is saved, for providers the
    /// [`checker`](Self::checker) knows: a key the provider calls invalid
    /// is refused (`422`, the message by the field on the page); any other
    /// answer saves the key, with a warning on the page (and the check in
    /// the JSON answer) unless the provider accepted it. Default: `false`.
    #[cfg(feature = "checks")]
    #[cfg_attr(docsrs, doc(cfg(feature = "checks")))]
    pub fn check_before_saving(mut self, check: bool) -> Self {
        self.options.checks.before_saving = check;
        self
    }

    /// How many key checks one user may ask for in a minute (the "Test"
    /// buttons, the JSON check route and checks before saving), counted in
    /// this process; default
    /// [`DEFAULT_CHECKS_PER_MINUTE`](crate::DEFAULT_CHECKS_PER_MINUTE).
    /// Past it, a Test answers `429` with `Retry-After`, and a key saved
    /// with a check before saving is saved unconfirmed. Without a limit a
    /// signed-in user could try out any number of keys through the app.
    #[cfg(feature = "checks")]
    #[cfg_attr(docsrs, doc(cfg(feature = "checks")))]
    pub fn checks_per_minute(mut self, per_minute: u32) -> Self {
        self.options.checks.limit = std::sync::Arc::new(crate::check::CheckLimit::new(per_minute));
        self
    }

    /// Checks the settings and builds the [`ByokWeb`].
    ///
    /// Fails when a provider name is not a valid provider or appears
    /// twice, the settings path does not start with `/`, a trusted origin
    /// is not of the form `scheme://host[:port]`, a lifetime is zero or
    /// appears twice, or the sign-in URL or the content security policy
    /// is not a valid header value.
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
        let mut origins = Vec::with_capacity(self.trusted_origins.len());
        for origin in &self.trusted_origins {
            let o = origin.trim_end_matches('/').to_ascii_lowercase();
            match o.split_once("://") {
                Some((scheme, host))
                    if !scheme.is_empty() && !host.is_empty() && !host.contains('/') => {}
                _ => {
                    return Err(ConfigError::new(format!(
                        "trusted origin {origin:?} is not of the form scheme://host[:port]"
                    )));
                }
            }
            origins.push(o);
        }
        for (i, l) in self.options.lifetimes.iter().enumerate() {
            if l.is_some_and(|d| d.as_secs() == 0) {
                return Err(ConfigError::new(
                    "a lifetime choice must be at least 1 second",
                ));
            }
            if self.options.lifetimes[..i].contains(l) {
                return Err(ConfigError::new("a lifetime choice is listed twice"));
            }
        }
        if let Some(url) = &self.options.sign_in_url
            && HeaderValue::from_str(url).is_err()
        {
            return Err(ConfigError::new("the sign-in URL is not a valid URL"));
        }
        let csp = HeaderValue::from_str(&self.csp)
            .map_err(|_| ConfigError::new("the content security policy is not a header value"))?;
        if self.options.production
            && self.byok.config().require_https
            && !self.options.served_over_tls
            && !self.options.trust_forwarded_proto
        {
            tracing::warn!(
                "byok-axum runs in production with require_https, but neither served_over_tls \
                 nor trust_forwarded_proto is set: keys are accepted only from loopback \
                 addresses (localhost) or over a URI that says https"
            );
        }
        Ok(ByokWeb {
            inner: Arc::new(Inner {
                byok: self.byok,
                identity: self.identity,
                providers: RwLock::new(providers.into()),
                settings_path: path.to_owned(),
                trusted_origins: origins,
                csp,
                options: self.options,
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
            trusted_origins: Vec::new(),
            csp: DEFAULT_CSP.to_owned(),
            options: Options {
                production: true,
                trust_forwarded_proto: false,
                trust_forwarded_host: false,
                served_over_tls: false,
                loopback_http: true,
                body_limit: DEFAULT_BODY_LIMIT,
                key_ttl: None,
                lifetimes: Vec::new(),
                sign_in_url: None,
                texts: Texts::default(),
                layout: None,
                #[cfg(feature = "checks")]
                checks: crate::check::Checks::default(),
            },
        }
    }

    /// The manager.
    pub fn byok(&self) -> &Byok {
        &self.inner.byok
    }

    /// The providers the settings page offers, in order: the configured
    /// ones, then those that guards asked for.
    pub fn providers(&self) -> Arc<[ProviderInfo]> {
        Arc::clone(
            &self
                .inner
                .providers
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The provider `id`, if the settings page offers it.
    pub fn provider(&self, id: &str) -> Option<ProviderInfo> {
        self.providers().iter().find(|p| p.id == id).cloned()
    }

    /// Adds the providers that a guard needs to the settings page, so that
    /// users can add the key the guard asks for.
    pub(crate) fn offer(&self, ids: &[String]) {
        let missing = |list: &[ProviderInfo]| {
            ids.iter()
                .filter(|id| !list.iter().any(|p| &p.id == *id))
                .any(|id| validate::provider(id).is_ok())
        };
        if !missing(&self.providers()) {
            return;
        }
        let mut list = self
            .inner
            .providers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut grown = list.to_vec();
        for id in ids {
            if grown.iter().any(|p| &p.id == id) {
                continue;
            }
            match validate::provider(id) {
                Ok(()) => {
                    tracing::debug!(
                        provider = id.as_str(),
                        "a guard needs a provider the settings page did not offer; it is offered now"
                    );
                    grown.push(ProviderInfo::of(id));
                }
                Err(e) => tracing::error!(error = %e, "a guard asks for an invalid provider"),
            }
        }
        *list = grown.into();
    }

    /// Where the settings page is served (no trailing slash).
    pub fn settings_path(&self) -> &str {
        &self.inner.settings_path
    }

    /// Whether the application runs in production.
    pub fn is_production(&self) -> bool {
        self.inner.options.production
    }

    /// How long a key saved through the web lives unless the user chooses;
    /// `None` is no expiry.
    pub fn key_ttl(&self) -> Option<Duration> {
        self.inner.options.key_ttl
    }

    pub(crate) fn lifetimes(&self) -> &[Option<Duration>] {
        &self.inner.options.lifetimes
    }

    pub(crate) fn trusts_forwarded_proto(&self) -> bool {
        self.inner.options.trust_forwarded_proto
    }

    pub(crate) fn trusts_forwarded_host(&self) -> bool {
        self.inner.options.trust_forwarded_host
    }

    pub(crate) fn served_over_tls(&self) -> bool {
        self.inner.options.served_over_tls
    }

    pub(crate) fn allows_loopback_http(&self) -> bool {
        self.inner.options.loopback_http
    }

    pub(crate) fn is_trusted_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.inner
            .trusted_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.inner.options.body_limit
    }

    pub(crate) fn csp(&self) -> HeaderValue {
        self.inner.csp.clone()
    }

    #[cfg(feature = "checks")]
    pub(crate) fn checks(&self) -> &crate::check::Checks {
        &self.inner.options.checks
    }

    pub(crate) fn view(&self) -> View<'_> {
        View {
            texts: &self.inner.options.texts,
            layout: self.inner.options.layout.as_deref(),
        }
    }

    /// The user of a request, or `401 Unauthorized` when there is none and
    /// `400` when the identity header is repeated or unreadable.
    pub async fn identify(&self, parts: &mut Parts) -> Result<UserIdentity, ByokRejection> {
        match self.inner.identity.identify(parts).await {
            Ok(Some(user)) => {
                validate::user_id(&user.user_id).map_err(|e| {
                    ByokRejection::internal("the user could not be identified")
                        .with_source(e)
                        .with_note("; the application's identity gave an invalid user id")
                })?;
                Ok(user)
            }
            Ok(None) => Err(ByokRejection::unauthenticated()),
            Err(e) => match e.downcast::<IdentityRefused>() {
                Ok(refused) => Err(ByokRejection::bad_identity(refused.reason())),
                Err(e) => Err(ByokRejection::internal("the user could not be identified")
                    .with_source(e)
                    .with_note("; identifying the user failed")),
            },
        }
    }

    /// Finishes a rejection of a request: its full path for the log, and
    /// for a browser the page in this `ByokWeb`'s texts and layout.
    pub(crate) fn reject(&self, rejection: ByokRejection, parts: &Parts) -> ByokRejection {
        let path = full_path(parts);
        let rejection = rejection.at(path);
        if !rejection.is_html() {
            return rejection;
        }
        let view = self.view();
        let page = match rejection.kind() {
            RejectionKind::ApiKeyRequired => {
                let link = with_next(self.settings_path(), &path_and_query(parts));
                html::key_required_page(view, rejection.providers(), &link)
            }
            RejectionKind::Unauthenticated => {
                let sign_in = self
                    .inner
                    .options
                    .sign_in_url
                    .as_deref()
                    .map(|url| with_next(url, &path_and_query(parts)));
                html::signed_out_page(view, sign_in.as_deref())
            }
            _ => html::generic_page(
                view,
                rejection.title(),
                rejection.detail(),
                rejection.settings_link(),
                None,
            ),
        };
        rejection.with_page(page, self.csp())
    }

    /// A layer that puts this `ByokWeb` on every request, for the
    /// [`ByokUser`](crate::ByokUser) and [`RequireKey`](crate::RequireKey)
    /// extractors, and marks a response made with a key that
    /// [`RequireKey`](crate::RequireKey) found `Cache-Control: no-store`
    /// (unless the handler set a `Cache-Control` of its own), as
    /// [`require_key`](Self::require_key) does.
    pub fn layer(&self) -> ByokLayer {
        ByokLayer { web: self.clone() }
    }
}

/// The layer of [`ByokWeb::layer`].
#[derive(Debug, Clone)]
pub struct ByokLayer {
    web: ByokWeb,
}

impl<S> Layer<S> for ByokLayer {
    type Service = ByokService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ByokService {
            inner,
            web: self.web.clone(),
        }
    }
}

/// The service of [`ByokLayer`].
#[derive(Debug, Clone)]
pub struct ByokService<S> {
    inner: S,
    web: ByokWeb,
}

/// Set by an extractor that handed a handler a key, so that the response
/// is not cached.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyUsed(Arc<AtomicBool>);

impl KeyUsed {
    pub(crate) fn mark(parts: &Parts) {
        if let Some(used) = parts.extensions.get::<KeyUsed>() {
            used.0.store(true, Ordering::Relaxed);
        }
    }
}

impl<S> Service<Request> for ByokService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let used = KeyUsed::default();
        request.extensions_mut().insert(self.web.clone());
        request.extensions_mut().insert(used.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            if used.0.load(Ordering::Relaxed) {
                response
                    .headers_mut()
                    .entry(header::CACHE_CONTROL)
                    .or_insert(HeaderValue::from_static("no-store"));
            }
            Ok(response)
        })
    }
}

/// The `ByokWeb` of a request, put there by [`ByokWeb::layer`] or by the
/// settings router.
pub(crate) fn from_parts(parts: &Parts) -> Result<ByokWeb, ByokRejection> {
    parts.extensions.get::<ByokWeb>().cloned().ok_or_else(|| {
        ByokRejection::internal("byok is not set up on this route")
            .at(full_path(parts))
            .with_note(
                "; ByokWeb is not on the request: add `.layer(byok_web.layer())` to the router",
            )
    })
}

/// The request's path as the client sent it, also inside a nested router.
pub(crate) fn full_path(parts: &Parts) -> &str {
    parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.path(), |u| u.0.path())
}

/// The request's path and query as the client sent it.
pub(crate) fn path_and_query(parts: &Parts) -> String {
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |u| &u.0);
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// `url` with `?next=` (or `&next=`) pointing back to `back`.
pub(crate) fn with_next(url: &str, back: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}next={}", encode_component(back))
}

/// Whether `next` is a path of this site that is safe to link to: it
/// starts with one `/`, and holds no backslash (which browsers read as
/// `/`) and no control character.
pub(crate) fn is_safe_next(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 2048
        && !next.bytes().any(|b| b == b'\\' || b.is_ascii_control())
}

/// Percent-encodes `s` for a URL path segment or query value: everything
/// but the unreserved characters of RFC 3986.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrustedHeader;
    use byok_core::{ByokConfig, Keyring, MasterKey};

    fn builder() -> ByokWebBuilder {
        let config = ByokConfig::for_tests();
        let byok = Byok::new(
            Arc::new(byok_memory::MemoryStorage::new()),
            Keyring::new(1, MasterKey::generate()),
            config,
        )
        .unwrap();
        ByokWeb::builder(byok, TrustedHeader::new("x-user".parse().unwrap()))
    }

    #[test]
    fn next_must_be_a_path_of_this_site() {
        for ok in ["/", "/chat?q=1", "/a/b#c"] {
            assert!(is_safe_next(ok), "{ok}");
        }
        for bad in [
            "",
            "chat",
            "//evil.test",
            "/\\evil.test",
            "https://evil.test",
            "/a\nb",
            "/a\tb",
        ] {
            assert!(!is_safe_next(bad), "{bad}");
        }
        assert_eq!(
            with_next("/s", "/chat?q=a b"),
            "/s?next=%2Fchat%3Fq%3Da%20b"
        );
        assert_eq!(with_next("/login?x=1", "/"), "/login?x=1&next=%2F");
        assert_eq!(encode_component("a/b?c#d é"), "a%2Fb%3Fc%23d%20%C3%A9");
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
        let providers = web.providers();
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Groq", "Anthropic"]);

        for bad in [
            builder().providers(["openai", "openai"]),
            builder().providers([""]),
            builder().providers(["tab\there"]),
            builder().settings_path("settings"),
            builder().settings_path("/"),
            builder().trusted_origins(["app.example"]),
            builder().trusted_origins(["https://app.example/path"]),
            builder().lifetime_choices([Some(std::time::Duration::ZERO)]),
            builder().lifetime_choices([None, None]),
            builder().sign_in_url("/login\n"),
            builder().content_security_policy("default-src\n'none'"),
        ] {
            assert!(bad.build().is_err());
        }
        assert!(
            web.key_ttl().is_none(),
            "keys saved on the web never expire by default"
        );
        let debug = format!("{:?}", builder().build().unwrap());
        assert!(
            debug.contains("settings_path: \"/settings/api-keys\""),
            "{debug}"
        );
    }
}
