//! Route guards: a route that needs a provider key, as a layer
//! ([`ByokWeb::require_key`], [`ByokWeb::require_any_key`]) and as
//! extractors ([`ProviderKey`], [`RequireKey`]).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use byok_core::secrecy::SecretString;
use tower::{Layer, Service};

use crate::identity::UserIdentity;
use crate::rejection::ByokRejection;
use crate::web::{self, ByokWeb};

/// The decrypted key a guard found, handed to the handler.
///
/// Its `Debug` shows the provider and never the key.
#[derive(Clone)]
pub struct ProviderKey {
    provider: String,
    user_id: String,
    key: SecretString,
}

impl fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderKey")
            .field("provider", &self.provider)
            .field("user_id", &self.user_id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl ProviderKey {
    /// The provider whose key this is (for a guard over several providers,
    /// the first one in its list that the user has a key for).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The user the key belongs to.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The key; read it with [`ExposeSecret`](byok_core::secrecy::ExposeSecret).
    pub fn key(&self) -> &SecretString {
        &self.key
    }

    /// The key, taken out.
    pub fn into_key(self) -> SecretString {
        self.key
    }
}

/// Finds the first of `providers` that the request's user has a key for.
/// A rejection is finished for the request (its page and log line).
async fn find_key(
    web: &ByokWeb,
    parts: &mut Parts,
    providers: &[String],
) -> Result<ProviderKey, ByokRejection> {
    let html = crate::rejection::wants_html(&parts.headers);
    let user = match web.identify(parts).await {
        Ok(user) => user,
        Err(r) => return Err(web.reject(r.html(html), parts)),
    };
    for provider in providers {
        match web.byok().get_key(&user.user_id, provider).await {
            Ok(Some(key)) => {
                return Ok(ProviderKey {
                    provider: provider.clone(),
                    user_id: user.user_id,
                    key,
                });
            }
            Ok(None) => {}
            Err(e) => return Err(web.reject(ByokRejection::from(e).html(html), parts)),
        }
    }
    let infos = providers
        .iter()
        .map(|p| {
            web.provider(p)
                .unwrap_or_else(|| byok_core::display::ProviderInfo::of(p))
        })
        .collect();
    let rejection = ByokRejection::api_key_required(infos, web.settings_path()).html(html);
    Err(web.reject(rejection, parts))
}

impl ByokWeb {
    /// A route layer that lets a request through only when its user has a
    /// key for `provider`, and hands the decrypted key to the handler as a
    /// [`ProviderKey`] extractor.
    ///
    /// Without a key, a browser gets an "API key required" page that links
    /// to the settings page, and an API client a `403` problem document of
    /// type `…:api-key-required`. A guarded response without a
    /// `Cache-Control` header of its own gets `no-store`.
    ///
    /// A provider that the settings page does not offer yet is added to it,
    /// so that users can add the key this guard asks for.
    ///
    /// ```
    /// use byok_axum::axum::{Router, routing::get};
    /// use byok_axum::{ByokWeb, ProviderKey};
    /// use byok_core::secrecy::ExposeSecret;
    ///
    /// async fn chat(key: ProviderKey) -> String {
    ///     format!("calling {} with a key of {} bytes", key.provider(), key.key().expose_secret().len())
    /// }
    ///
    /// fn routes(web: &ByokWeb) -> Router {
    ///     Router::new().route("/chat", get(chat)).route_layer(web.require_key("openai"))
    /// }
    /// ```
    pub fn require_key(&self, provider: impl Into<String>) -> RequireKeyLayer {
        self.require_any_key([provider.into()])
    }

    /// Like [`require_key`](Self::require_key), satisfied by a key of any of
    /// `providers`; the first one in this order that the user has is used.
    pub fn require_any_key<I, P>(&self, providers: I) -> RequireKeyLayer
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let providers: Arc<[String]> = providers.into_iter().map(Into::into).collect();
        self.offer(&providers);
        RequireKeyLayer {
            web: self.clone(),
            providers,
        }
    }
}

/// The layer of [`ByokWeb::require_key`] and [`ByokWeb::require_any_key`].
#[derive(Debug, Clone)]
pub struct RequireKeyLayer {
    web: ByokWeb,
    providers: Arc<[String]>,
}

impl<S> Layer<S> for RequireKeyLayer {
    type Service = RequireKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireKeyService {
            inner,
            web: self.web.clone(),
            providers: Arc::clone(&self.providers),
        }
    }
}

/// The service of [`RequireKeyLayer`].
#[derive(Debug, Clone)]
pub struct RequireKeyService<S> {
    inner: S,
    web: ByokWeb,
    providers: Arc<[String]>,
}

impl<S> Service<Request> for RequireKeyService<S>
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

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone that was polled ready is the one that gets the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let web = self.web.clone();
        let providers = Arc::clone(&self.providers);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            match find_key(&web, &mut parts, &providers).await {
                Ok(key) => {
                    parts.extensions.insert(key);
                    parts.extensions.insert(web);
                    let mut response = inner.call(Request::from_parts(parts, body)).await?;
                    // The page was made with one user's key: no cache keeps it
                    // unless the handler says otherwise.
                    response
                        .headers_mut()
                        .entry(header::CACHE_CONTROL)
                        .or_insert(HeaderValue::from_static("no-store"));
                    Ok(response)
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ProviderKey {
    type Rejection = ByokRejection;

    /// Takes the key that a [`RequireKeyLayer`] put on the request; a route
    /// without that layer answers `500` (a setup error, logged).
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.remove::<ProviderKey>().ok_or_else(|| {
            ByokRejection::internal("this route is not set up for API keys")
                .at(web::full_path(parts))
                .with_note(
                    "; ProviderKey used on a route without require_key; add \
                     .route_layer(byok_web.require_key(..))",
                )
        })
    }
}

/// The providers a [`RequireKey`] extractor asks for.
///
/// ```
/// use byok_axum::KeyOf;
/// struct OpenAiOrAnthropic;
/// impl KeyOf for OpenAiOrAnthropic {
///     const PROVIDERS: &'static [&'static str] = &["openai", "anthropic"];
/// }
/// ```
pub trait KeyOf: Send + Sync + 'static {
    /// The providers; the first one that the user has a key for is used.
    const PROVIDERS: &'static [&'static str];
}

/// An extractor that is its own guard: it finds the user's key for one of
/// `P::PROVIDERS` and rejects the request, as [`ByokWeb::require_key`]
/// does, when there is none. Needs [`ByokWeb::layer`] on the router, which
/// marks a response made with the key `Cache-Control: no-store` (unless
/// the handler set a `Cache-Control` of its own), as the layer does.
///
/// ```
/// use byok_axum::{KeyOf, RequireKey};
/// use byok_core::secrecy::ExposeSecret;
///
/// struct OpenAi;
/// impl KeyOf for OpenAi {
///     const PROVIDERS: &'static [&'static str] = &["openai"];
/// }
///
/// async fn chat(RequireKey(key, ..): RequireKey<OpenAi>) -> String {
///     format!("a key of {} bytes", key.key().expose_secret().len())
/// }
/// ```
pub struct RequireKey<P: KeyOf>(pub ProviderKey, pub PhantomData<P>);

impl<P: KeyOf> fmt::Debug for RequireKey<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequireKey").field(&self.0).finish()
    }
}

impl<P: KeyOf, S: Send + Sync> FromRequestParts<S> for RequireKey<P> {
    type Rejection = ByokRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let web = web::from_parts(parts)?;
        let providers: Vec<String> = P::PROVIDERS.iter().map(|p| (*p).to_owned()).collect();
        web.offer(&providers);
        let key = find_key(&web, parts, &providers).await?;
        crate::web::KeyUsed::mark(parts);
        Ok(RequireKey(key, PhantomData))
    }
}

/// An extractor for the request's user, as the [`ByokWeb`]'s identity
/// finds it, with the [`ByokWeb`] itself; a request without a user is
/// answered with `401`. Needs [`ByokWeb::layer`] on the router (or a
/// guard on the route).
#[derive(Debug, Clone)]
pub struct ByokUser {
    /// The [`ByokWeb`] of the request.
    pub web: ByokWeb,
    /// The user.
    pub user: UserIdentity,
}

impl<S: Send + Sync> FromRequestParts<S> for ByokUser {
    type Rejection = ByokRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let html = crate::rejection::wants_html(&parts.headers);
        let web = web::from_parts(parts).map_err(|r| r.html(html))?;
        match web.identify(parts).await {
            Ok(user) => Ok(ByokUser { web, user }),
            Err(r) => Err(web.reject(r.html(html), parts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = ProviderKey {
            provider: "openai".into(),
            user_id: "alice".into(),
            key: SecretString::from("sk-secret-value-123456"),
        };
        assert_eq!(
            format!("{key:?}"),
            r#"ProviderKey { provider: "openai", user_id: "alice", key: "[REDACTED]" }"#
        );
    }
}
