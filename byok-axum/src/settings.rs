//! The settings page and its JSON API, mounted with one
//! [`Router::nest`](axum::Router::nest) (see [`ByokWeb::settings_router`]).

use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Form, Json, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use byok_core::chrono::{DateTime, Utc};
use byok_core::display::ProviderInfo;
use byok_core::error::{Field, Problem};
use byok_core::secrecy::{ExposeSecret, SecretString};
use byok_core::{ByokError, InvalidInput, KeySummary, Ttl};
use serde::{Deserialize, Serialize};

use crate::html::{self, Notice, Row};
use crate::identity::UserIdentity;
use crate::policy;
use crate::rejection::ByokRejection;
use crate::require::ByokUser;
use crate::web::ByokWeb;

/// What the JSON API says about a stored key; nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyView {
    /// The provider id.
    pub provider: String,
    /// Its display name.
    pub display_name: String,
    /// The masked hint, such as `sk-p...wxyz`.
    pub hint: String,
    /// How old the key is, such as `3 days ago`.
    pub created: String,
    /// When it expires, such as `Expires in 5 hours` or `Never`.
    pub expires: String,
    /// Whether it has expired.
    pub is_expired: bool,
    /// When it was set (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// When it expires (RFC 3339), or `null`.
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&KeySummary> for KeyView {
    fn from(k: &KeySummary) -> Self {
        KeyView {
            provider: k.provider.clone(),
            display_name: k.display_name.clone(),
            hint: k.hint.clone(),
            created: k.created.clone(),
            expires: k.expires.clone(),
            is_expired: k.is_expired,
            created_at: k.created_at,
            expires_at: k.expires_at,
        }
    }
}

/// One provider in the JSON list: what it is, and the user's key if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProviderView {
    /// The provider id.
    pub provider: String,
    /// Its display name.
    pub display_name: String,
    /// A placeholder for a key input.
    pub placeholder: String,
    /// Where users create keys.
    pub docs_url: Option<String>,
    /// The user's key, or `null`.
    pub key: Option<KeyView>,
}

/// The answer of `GET …/api`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyList {
    /// Every configured provider, in the configured order.
    pub providers: Vec<ProviderView>,
}

/// The forms of the settings page; `provider` only on the provider picker.
#[derive(Deserialize)]
struct KeyForm {
    #[serde(default)]
    provider: Option<String>,
    api_key: SecretString,
}

/// The body of `PUT …/api/{provider}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    api_key: SecretString,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct Flash {
    saved: Option<String>,
    deleted: Option<String>,
}

impl ByokWeb {
    /// The settings page and its JSON API, for the configured providers.
    /// Nest it where [`settings_path`](Self::settings_path) says:
    ///
    /// ```
    /// # use byok_axum::{ByokWeb, axum::Router};
    /// # fn app(web: ByokWeb) -> Router {
    /// Router::new().nest(web.settings_path(), web.settings_router())
    /// # }
    /// ```
    ///
    /// | method and path | answer |
    /// |---|---|
    /// | `GET /` | the settings page (HTML) |
    /// | `POST /` (form `provider`, `api_key`) | the provider picker: stores the key; `303` back to the page |
    /// | `POST /{provider}` (form `api_key`) | stores the key; `303` back to the page |
    /// | `POST /{provider}/delete` | deletes the key; `303` back to the page |
    /// | `GET /api` | every provider with the user's key ([`KeyList`]) |
    /// | `GET /api/{provider}` | `200` [`KeyView`], `404` without a key |
    /// | `PUT /api/{provider}` (JSON `{"api_key", "ttl_seconds"?}`) | `201` new or `200` replaced, [`KeyView`] |
    /// | `DELETE /api/{provider}` | `204`, `404` without a key |
    ///
    /// Errors are [`ByokRejection`]s: `401` without a user, `403` for a
    /// cross-site request or a key over plain HTTP in production, `404` for
    /// a provider that is not configured (`422` naming `provider` on the
    /// picker), `400`/`415`/`422` for a malformed
    /// body, `422` for an invalid key (naming the field), `413` for a body
    /// over the limit, `503` with `Retry-After` when the store is
    /// unavailable. Every answer carries `Cache-Control: no-store`; no
    /// answer ever contains a key.
    pub fn settings_router(&self) -> Router {
        Router::new()
            .route("/", get(page).post(form_add))
            .route("/api", get(api_list))
            .route(
                "/api/{provider}",
                get(api_get).put(api_put).delete(api_delete),
            )
            .route("/{provider}", post(form_set))
            .route("/{provider}/delete", post(form_delete))
            .layer(middleware::from_fn(same_origin))
            .layer(DefaultBodyLimit::max(self.body_limit()))
            .layer(middleware::map_response(security_headers))
            .layer(self.layer())
    }
}

async fn same_origin(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(rejection) = policy::check_same_origin(&parts) {
        return rejection.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

fn configured<'a>(
    web: &'a ByokWeb,
    provider: &str,
    headers: &HeaderMap,
) -> Result<&'a ProviderInfo, ByokRejection> {
    web.provider(provider)
        .ok_or_else(|| ByokRejection::unknown_provider().for_request(headers))
}

/// The key of a submission, trimmed (a pasted key often carries a space or
/// line break), or the error naming what was wrong with it.
fn submitted_key(key: &SecretString) -> Result<&str, ByokError> {
    let key = key.expose_secret().trim();
    if key.is_empty() {
        return Err(InvalidInput::new(Field::ApiKey, Problem::Empty).into());
    }
    byok_core::validate::api_key(key)?;
    Ok(key)
}

/// The TTL of a key the user sets: what was asked for (or the manager's
/// default), capped by what the user's identity allows.
fn key_ttl(web: &ByokWeb, user: &UserIdentity, asked: Option<u64>) -> Result<Ttl, ByokError> {
    let asked = match asked {
        Some(0) => {
            return Err(InvalidInput::new(Field::Ttl, Problem::Other("must be at least 1")).into());
        }
        Some(s) => Some(Duration::from_secs(s)),
        None => web.byok().config().default_ttl,
    };
    Ok(match (asked, user.key_ttl) {
        (Some(a), Some(cap)) => Ttl::After(a.min(cap)),
        (None, Some(cap)) => Ttl::After(cap),
        (Some(a), None) => Ttl::After(a),
        (None, None) => Ttl::Never,
    })
}

async fn summary_of(
    web: &ByokWeb,
    user: &str,
    provider: &str,
) -> Result<Option<KeySummary>, ByokError> {
    Ok(web
        .byok()
        .key_summary(user)
        .await?
        .into_iter()
        .find(|k| k.provider == provider))
}

async fn page(
    ByokUser { web, user }: ByokUser,
    parts: Parts,
    Query(flash): Query<Flash>,
) -> Result<Response, ByokRejection> {
    let html = |e: ByokError| ByokRejection::from(e).html(true);
    let summaries = web.byok().key_summary(&user.user_id).await.map_err(html)?;
    let rows: Vec<Row<'_>> = web
        .providers()
        .iter()
        .map(|info| Row {
            info,
            summary: summaries.iter().find(|k| k.provider == info.id),
        })
        .collect();
    let name_of = |id: &str| web.provider(id).map(|p| p.name.as_str());
    let notice = match (
        flash.saved.as_deref().and_then(name_of),
        flash.deleted.as_deref().and_then(name_of),
    ) {
        (Some(name), _) => Notice::Saved(name),
        (None, Some(name)) => Notice::Deleted(name),
        (None, None) => Notice::None,
    };
    let warn = web.byok().config().require_https && !policy::is_https(&web, &parts);
    let body = html::settings_page(web.settings_path(), &rows, notice, warn);
    Ok(Html(body).into_response())
}

/// Percent-encodes `s` for a query string.
fn query_value(s: &str) -> String {
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

async fn form_set(
    user: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Response {
    let back = user.web.settings_path().to_owned();
    store_from_form(user, Some(provider), parts, form)
        .await
        .unwrap_or_else(|r| r.html(true).back_to(&back).into_response())
}

async fn form_add(
    user: ByokUser,
    parts: Parts,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Response {
    let back = user.web.settings_path().to_owned();
    store_from_form(user, None, parts, form)
        .await
        .unwrap_or_else(|r| r.html(true).back_to(&back).into_response())
}

/// Stores the key of a form post, for the provider of the path or, on the
/// page's provider picker, of the form's `provider` field.
async fn store_from_form(
    ByokUser { web, user }: ByokUser,
    path_provider: Option<String>,
    parts: Parts,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Result<Response, ByokRejection> {
    if let Some(provider) = &path_provider {
        configured(&web, provider, &parts.headers)?;
    }
    policy::check_key_transport(&web, &parts)?;
    let Form(form) = form.map_err(|e| ByokRejection::malformed_body(e.status()))?;
    let provider = match path_provider {
        Some(provider) => provider,
        None => {
            let provider = form.provider.unwrap_or_default();
            if web.provider(&provider).is_none() {
                return Err(ByokError::from(InvalidInput::new(
                    Field::Provider,
                    Problem::Other("is not one that this application offers"),
                ))
                .into());
            }
            provider
        }
    };
    let key = submitted_key(&form.api_key)?;
    let ttl = key_ttl(&web, &user, None)?;
    web.byok()
        .set_key(&user.user_id, &provider, key, ttl)
        .await?;
    let to = format!("{}?saved={}", web.settings_path(), query_value(&provider));
    Ok(Redirect::to(&to).into_response())
}

async fn form_delete(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ByokRejection> {
    let back = |r: ByokRejection| r.html(true).back_to(web.settings_path());
    configured(&web, &provider, &headers).map_err(back)?;
    web.byok()
        .delete_key(&user.user_id, &provider)
        .await
        .map_err(|e| back(e.into()))?;
    let to = format!("{}?deleted={}", web.settings_path(), query_value(&provider));
    Ok(Redirect::to(&to).into_response())
}

async fn api_list(ByokUser { web, user }: ByokUser) -> Result<Json<KeyList>, ByokRejection> {
    let summaries = web.byok().key_summary(&user.user_id).await?;
    let providers = web
        .providers()
        .iter()
        .map(|p| ProviderView {
            provider: p.id.clone(),
            display_name: p.name.clone(),
            placeholder: p.placeholder.to_owned(),
            docs_url: p.docs_url.map(str::to_owned),
            key: summaries
                .iter()
                .find(|k| k.provider == p.id)
                .map(KeyView::from),
        })
        .collect();
    Ok(Json(KeyList { providers }))
}

async fn api_get(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    headers: HeaderMap,
) -> Result<Json<KeyView>, ByokRejection> {
    configured(&web, &provider, &headers)?;
    match summary_of(&web, &user.user_id, &provider).await? {
        Some(k) => Ok(Json(KeyView::from(&k))),
        None => Err(ByokError::KeyNotFound {
            user_id: user.user_id,
            provider,
        }
        .into()),
    }
}

async fn api_put(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
    body: Result<Json<KeyBody>, JsonRejection>,
) -> Result<Response, ByokRejection> {
    configured(&web, &provider, &parts.headers)?;
    policy::check_key_transport(&web, &parts)?;
    let Json(body) = body.map_err(|e| ByokRejection::malformed_body(e.status()))?;
    let key = submitted_key(&body.api_key)?;
    let ttl = key_ttl(&web, &user, body.ttl_seconds)?;
    let existed = web.byok().has_key(&user.user_id, &provider).await?;
    web.byok()
        .set_key(&user.user_id, &provider, key, ttl)
        .await?;
    let view = summary_of(&web, &user.user_id, &provider)
        .await?
        .map(|k| KeyView::from(&k))
        .ok_or_else(|| ByokRejection::internal("the key was stored but could not be read back"))?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view)).into_response())
}

async fn api_delete(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ByokRejection> {
    configured(&web, &provider, &headers)?;
    if web.byok().delete_key(&user.user_id, &provider).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ByokError::KeyNotFound {
            user_id: user.user_id,
            provider,
        }
        .into())
    }
}
