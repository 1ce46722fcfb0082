//! The settings page and its JSON API, mounted with one
//! [`Router::nest`](axum::Router::nest) (see [`ByokWeb::settings_router`]).

use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, Json, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use byok_core::chrono::Utc;
use byok_core::display::ProviderInfo;
use byok_core::error::{Field, Problem};
use byok_core::secrecy::{ExposeSecret, SecretString};
use byok_core::{ByokError, InvalidInput, KeySummary, Ttl};
use serde::{Deserialize, Deserializer, Serialize};

use crate::html::{self, CheckShown, FormError, Notice, Row, SettingsPage};
use crate::identity::UserIdentity;
use crate::page::{check_words, english_duration, fill};
use crate::policy;
use crate::rejection::{ByokRejection, page_headers};
use crate::require::ByokUser;
use crate::web::{ByokWeb, encode_component, is_safe_next, with_next};

/// A key's summary as people read it: the words of `created` and
/// `expires` rounded (a key set a second ago for a day "expires in 24
/// hours"), the rest as the manager said.
fn for_people(k: KeySummary) -> KeySummary {
    let now = Utc::now();
    let words = |d: byok_core::chrono::TimeDelta| english_duration(d.to_std().unwrap_or_default());
    let expires = match k.expires_at {
        None => "Never".to_owned(),
        Some(_) if k.is_expired => "Expired".to_owned(),
        Some(at) if at <= now => "Expired".to_owned(),
        Some(at) => format!("Expires in {}", words(at - now)),
    };
    KeySummary {
        created: format!("{} ago", words(now - k.created_at)),
        expires,
        ..k
    }
}

/// One provider in the JSON list: what it is (its fields, as
/// [`ProviderInfo`] names them), and the user's key, or `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProviderEntry {
    /// The provider.
    #[serde(flatten)]
    pub provider: ProviderInfo,
    /// The user's key, or `null`.
    pub key: Option<KeySummary>,
}

/// The answer of `GET …/api`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyList {
    /// Every configured provider, in the configured order.
    pub providers: Vec<ProviderEntry>,
}

/// The forms of the settings page; `provider` only on the provider picker,
/// `ttl` only where the page offers a choice of lifetimes.
#[derive(Deserialize)]
struct KeyForm {
    #[serde(default)]
    provider: Option<String>,
    api_key: SecretString,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    next: Option<String>,
    /// Sent by the picker's "Test" button: test the key, do not save it.
    #[serde(default)]
    #[cfg_attr(
        not(feature = "checks"),
        allow(dead_code, reason = "the button is there with the checks feature")
    )]
    test: Option<String>,
}

/// The delete form.
#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    next: Option<String>,
}

/// The body of `PUT …/api/{provider}`: `ttl_seconds` absent is the web's
/// default lifetime, `null` is no expiry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    api_key: SecretString,
    #[serde(default, deserialize_with = "present")]
    ttl_seconds: Option<Option<u64>>,
}

/// Tells a field that is present (even as `null`) from one that is absent.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// The query of the settings page: a signed notice of what was just done,
/// and where the user came from.
#[derive(Deserialize, Default)]
struct PageQuery {
    notice: Option<String>,
    provider: Option<String>,
    at: Option<i64>,
    sig: Option<String>,
    next: Option<String>,
}

/// How long a notice link is good for.
const NOTICE_SECONDS: i64 = 120;

impl ByokWeb {
    /// The settings page and its JSON API, for the providers of the page,
    /// served under [`settings_path`](Self::settings_path). Merge it into
    /// the application's router:
    ///
    /// ```
    /// # use byok_axum::{ByokWeb, axum::Router};
    /// # fn app(web: ByokWeb) -> Router {
    /// Router::new().merge(web.settings_router())
    /// # }
    /// ```
    ///
    /// | method and path (under the settings path) | answer |
    /// |---|---|
    /// | `GET` (with or without `/`) | `200` the settings page (HTML) |
    /// | `POST` (form `provider`, `api_key`, `ttl`?) | the provider picker: stores the key; `303` back to the page |
    /// | `POST /{provider}` (form `api_key`, `ttl`?) | stores the key; `303` back to the page |
    /// | `POST /{provider}/delete` | deletes the key; `303` back to the page |
    /// | `GET /api` | `200` every provider with the user's key ([`KeyList`]) |
    /// | `GET /api/{provider}` | `200` [`KeySummary`], `404` without a key |
    /// | `PUT /api/{provider}` (JSON `{"api_key", "ttl_seconds"?}`) | `201` new or `200` replaced, [`KeySummary`] |
    /// | `DELETE /api/{provider}` | `204`, `404` without a key |
    /// | `POST /{provider}/check` (form, `api_key`?) | with the `checks` feature and a [`checker`](crate::ByokWebBuilder::checker): tests the typed key (never stored) or, without `api_key`, the saved one; `200` the page with the result in the provider's row |
    /// | `POST /api/{provider}/check` (JSON `{"api_key"}` or no body) | the same: `200` the `KeyCheck` (`{"outcome": "valid", …}`), `404` without a saved key or a check for the provider, `502` when no check could be made |
    ///
    /// With [`check_before_saving`](crate::ByokWebBuilder::check_before_saving),
    /// a key the provider calls invalid is refused (`422`, by the field on
    /// the page, `field: "api_key"` in the API); any other answer saves it,
    /// the page says why it could not be confirmed, and the API's answer
    /// carries the check as `check` (`{"outcome": "error"}` when none
    /// could be made).
    ///
    /// `ttl_seconds` absent gives the key the
    /// [`key_ttl`](crate::ByokWebBuilder::key_ttl) (default: no expiry),
    /// `null` no expiry, a number that many seconds. Of racing `PUT`s for
    /// one key, whichever processes serve them, only the one that created
    /// it answers `201`.
    ///
    /// A form that is refused for its input (an empty or blank key, one
    /// that is too long or holds a control character, a provider or
    /// lifetime the page does not offer) gets the page again, `422`, with
    /// the message next to the field. Other errors are [`ByokRejection`]s:
    /// `400` for a repeated or unreadable identity header, `401` without a
    /// user, `403` for a cross-site request or a key over plain HTTP from
    /// another machine in production, `404` for a provider that is not
    /// offered, `400`/`415`/`422` for a malformed body, `422` for an
    /// invalid key in the API (naming the field), `413` for a body over the
    /// limit, `503` with `Retry-After` when the store is unavailable. Every
    /// answer carries `Cache-Control: no-store`, pages a
    /// `Content-Security-Policy` and `X-Content-Type-Options: nosniff`;
    /// no answer ever contains a key.
    pub fn settings_router(&self) -> Router {
        let base = self.settings_path();
        let router = Router::new()
            .route(base, get(page).post(form_add))
            .route(&format!("{base}/"), get(page).post(form_add))
            .route(&format!("{base}/api"), get(api_list))
            .route(
                &format!("{base}/api/{{provider}}"),
                get(api_get).put(api_put).delete(api_delete),
            )
            .route(&format!("{base}/{{provider}}"), post(form_set))
            .route(&format!("{base}/{{provider}}/delete"), post(form_delete));
        #[cfg(feature = "checks")]
        let router = router
            .route(
                &format!("{base}/{{provider}}/check"),
                post(crate::check::form_test),
            )
            .route(
                &format!("{base}/api/{{provider}}/check"),
                post(crate::check::api_check),
            );
        router
            .layer(middleware::from_fn_with_state(self.clone(), same_origin))
            .layer(DefaultBodyLimit::max(self.body_limit()))
            .layer(middleware::from_fn_with_state(
                self.clone(),
                security_headers,
            ))
            .layer(self.layer())
    }
}

async fn same_origin(State(web): State<ByokWeb>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(rejection) = policy::check_same_origin(&web, &parts) {
        return web.reject(rejection, &parts).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

async fn security_headers(State(web): State<ByokWeb>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    page_headers(response.headers_mut(), web.csp());
    response
}

/// The provider of a path, if the page offers it; `404` otherwise.
pub(crate) fn offered(web: &ByokWeb, provider: &str, parts: &Parts) -> Result<(), ByokRejection> {
    match web.provider(provider) {
        Some(_) => Ok(()),
        None => Err(ByokRejection::unknown_provider()
            .for_request(&parts.headers)
            .back_to(web.settings_path())),
    }
}

/// The key of a submission, trimmed (a pasted key often carries a space or
/// line break), or the error naming what was wrong with it.
pub(crate) fn submitted_key(key: &SecretString) -> Result<&str, InvalidInput> {
    let key = key.expose_secret().trim();
    if key.is_empty() {
        return Err(InvalidInput::new(Field::ApiKey, Problem::Empty));
    }
    byok_core::validate::api_key(key)?;
    Ok(key)
}

/// The TTL of a key the user sets: what was asked for (`None`: the web's
/// default; `Some(None)`: no expiry), capped by what the user's identity
/// allows.
fn key_ttl(web: &ByokWeb, user: &UserIdentity, asked: Option<Option<Duration>>) -> Ttl {
    let asked = asked.unwrap_or(web.key_ttl());
    match (asked, user.key_ttl) {
        (Some(a), Some(cap)) => Ttl::After(a.min(cap)),
        (None, Some(cap)) => Ttl::After(cap),
        (Some(a), None) => Ttl::After(a),
        (None, None) => Ttl::Never,
    }
}

/// The lifetime a form chose: one of those the page offers, or the web's
/// default when the page offers none and the form says nothing.
fn chosen_lifetime(web: &ByokWeb, ttl: Option<&str>) -> Result<Option<Duration>, ()> {
    let Some(ttl) = ttl else {
        return Ok(web.key_ttl());
    };
    let chosen = if ttl == "never" {
        None
    } else {
        Some(Duration::from_secs(ttl.parse::<u64>().map_err(|_| ())?))
    };
    if web.lifetimes().contains(&chosen) {
        Ok(chosen)
    } else {
        Err(())
    }
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

/// The MAC of a notice: only this application, for this user, could have
/// made the link, so a crafted link shows no notice.
fn notice_sig(web: &ByokWeb, user: &str, action: &str, provider: &str, at: i64) -> String {
    web.byok().keyed_fingerprint(&format!(
        "byok-axum notice\n{user}\n{action}\n{provider}\n{at}"
    ))
}

/// Where a form post sends the browser: the settings page with a signed
/// notice, and the page the user came from.
fn back_to_page(
    web: &ByokWeb,
    user: &str,
    action: &str,
    provider: &str,
    next: Option<&str>,
) -> Response {
    let at = Utc::now().timestamp();
    let sig = notice_sig(web, user, action, provider, at);
    let mut to = format!(
        "{}?notice={action}&provider={}&at={at}&sig={sig}",
        web.settings_path(),
        encode_component(provider)
    );
    if let Some(next) = next.filter(|n| is_safe_next(n)) {
        to = with_next(&to, next);
    }
    Redirect::to(&to).into_response()
}

/// Whether a notice of the query was made by this application for `user`
/// in the last two minutes.
fn notice_is_genuine(web: &ByokWeb, user: &str, q: &PageQuery) -> bool {
    let (Some(action), Some(provider), Some(at), Some(sig)) = (
        q.notice.as_deref(),
        q.provider.as_deref(),
        q.at,
        q.sig.as_deref(),
    ) else {
        return false;
    };
    let age = Utc::now().timestamp() - at;
    if !(0..=NOTICE_SECONDS).contains(&age) {
        return false;
    }
    let expected = notice_sig(web, user, action, provider, at);
    expected.len() == sig.len()
        && expected
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a rendering of the settings page shows beside the list.
#[derive(Default)]
pub(crate) struct Rendered<'a> {
    /// A signed notice: its action and provider.
    pub(crate) notice: Option<(&'a str, &'a str)>,
    /// Where the user came from.
    pub(crate) next: Option<&'a str>,
    /// A refused input, by its field.
    pub(crate) error: Option<FormError<'a>>,
    /// The result of a "Test", in its provider's row.
    pub(crate) check: Option<CheckShown<'a>>,
}

/// What a check before saving found.
#[cfg_attr(
    not(feature = "checks"),
    allow(dead_code, reason = "made only by the checks feature")
)]
pub(crate) struct PreCheck {
    /// The check's outcome, or `error` when it could not be made.
    pub(crate) outcome: &'static str,
    /// Its JSON form, for the API.
    pub(crate) json: serde_json::Value,
}

impl PreCheck {
    fn refuses(&self) -> bool {
        self.outcome == "invalid"
    }
}

#[cfg(feature = "checks")]
use crate::check::{before_saving, testable};

#[cfg(not(feature = "checks"))]
async fn before_saving(_: &ByokWeb, _: &str, _: &str, _: &str) -> Option<PreCheck> {
    None
}

#[cfg(not(feature = "checks"))]
fn testable(_: &ByokWeb, _: &str) -> bool {
    false
}

/// Renders the settings page for `user`, with what the page says above the
/// list, an inline error and a check's result, answered with `status`.
/// The page again with `message` next to the form of `provider` (the
/// picker's when `None`): a `422`.
pub(crate) async fn form_error(
    web: &ByokWeb,
    user: &UserIdentity,
    parts: &Parts,
    provider: Option<&str>,
    message: &str,
    next: Option<&str>,
) -> Result<Response, ByokRejection> {
    let shown = Rendered {
        next,
        error: Some(FormError { provider, message }),
        ..Rendered::default()
    };
    render(web, user, parts, shown, StatusCode::UNPROCESSABLE_ENTITY).await
}

pub(crate) async fn render(
    web: &ByokWeb,
    user: &UserIdentity,
    parts: &Parts,
    shown: Rendered<'_>,
    status: StatusCode,
) -> Result<Response, ByokRejection> {
    let Rendered {
        notice,
        next,
        error,
        check,
    } = shown;
    let summaries = web
        .byok()
        .key_summary(&user.user_id)
        .await
        .map_err(|e| ByokRejection::from(e).html(true))?;
    let providers = web.providers();
    let rows: Vec<Row<'_>> = providers
        .iter()
        .map(|info| Row {
            info,
            summary: summaries.iter().find(|k| k.provider == info.id),
            testable: testable(web, &info.id),
        })
        .collect();
    let name_of = |id: &str| {
        providers
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.as_str())
    };
    let notice = match notice {
        Some(("saved", id)) => name_of(id).map_or(Notice::None, Notice::Saved),
        Some(("deleted", id)) => name_of(id).map_or(Notice::None, Notice::Deleted),
        Some((action, id)) => match (action.strip_prefix("saved-"), name_of(id)) {
            (Some(outcome), Some(name)) => {
                Notice::SavedUnconfirmed(name, check_words(web.view().texts, name, outcome, None))
            }
            _ => Notice::None,
        },
        None => Notice::None,
    };
    let page = SettingsPage {
        base: web.settings_path(),
        rows,
        notice,
        plain_http_warning: !policy::transport_is_secure(web, parts),
        next: next.filter(|n| is_safe_next(n)),
        error,
        check,
        lifetimes: web.lifetimes(),
        default_lifetime: web.key_ttl(),
        now: Utc::now(),
    };
    let body = html::settings_page(web.view(), &page);
    let mut response = (status, Html(body)).into_response();
    page_headers(response.headers_mut(), web.csp());
    Ok(response)
}

async fn page(
    ByokUser { web, user }: ByokUser,
    parts: Parts,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let notice = if notice_is_genuine(&web, &user.user_id, &q) {
        q.notice.as_deref().zip(q.provider.as_deref())
    } else {
        None
    };
    render(
        &web,
        &user,
        &parts,
        Rendered {
            notice,
            next: q.next.as_deref(),
            ..Rendered::default()
        },
        StatusCode::OK,
    )
    .await
    .unwrap_or_else(|r| web.reject(r.html(true), &parts).into_response())
}

async fn form_set(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Response {
    store_from_form(&web, &user, Some(provider), &parts, form)
        .await
        .unwrap_or_else(|r| {
            web.reject(r.html(true).back_to(web.settings_path()), &parts)
                .into_response()
        })
}

async fn form_add(
    ByokUser { web, user }: ByokUser,
    parts: Parts,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Response {
    store_from_form(&web, &user, None, &parts, form)
        .await
        .unwrap_or_else(|r| {
            web.reject(r.html(true).back_to(web.settings_path()), &parts)
                .into_response()
        })
}

/// The message of a refused key, in the page's words.
pub(crate) fn key_message<'a>(web: &'a ByokWeb, invalid: &InvalidInput) -> &'a str {
    let t = &web.view().texts;
    match invalid.problem {
        Problem::Empty | Problem::Blank => &t.error_key_empty,
        Problem::TooLong { .. } => &t.error_key_too_long,
        _ => &t.error_key_control,
    }
}

/// Stores the key of a form post, for the provider of the path or, on the
/// page's provider picker, of the form's `provider` field. Input the user
/// can fix gets the page again with the message next to the field.
async fn store_from_form(
    web: &ByokWeb,
    user: &UserIdentity,
    path_provider: Option<String>,
    parts: &Parts,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Result<Response, ByokRejection> {
    if let Some(provider) = &path_provider {
        offered(web, provider, parts)?;
    }
    policy::check_key_transport(web, parts)?;
    let Form(form) = form.map_err(|e| ByokRejection::malformed_body(e.status()))?;
    let next = form.next.as_deref();
    let texts = web.view().texts;
    let provider = match path_provider.as_deref() {
        Some(provider) => Ok(provider.to_owned()),
        None => match form.provider.as_deref() {
            Some(p) if web.provider(p).is_some() => Ok(p.to_owned()),
            _ => Err(&*texts.error_provider),
        },
    };
    let checked = provider.and_then(|provider| {
        let key = submitted_key(&form.api_key).map_err(|invalid| key_message(web, &invalid))?;
        let lifetime =
            chosen_lifetime(web, form.ttl.as_deref()).map_err(|()| &*texts.error_lifetime)?;
        Ok((provider, key, lifetime))
    });
    let (provider, key, lifetime) = match checked {
        Ok(checked) => checked,
        Err(message) => {
            return form_error(web, user, parts, path_provider.as_deref(), message, next).await;
        }
    };
    #[cfg(feature = "checks")]
    if path_provider.is_none() && form.test.is_some() {
        return crate::check::test_in_picker(web, user, parts, &provider, key, next).await;
    }
    let pre = before_saving(web, &user.user_id, &provider, key).await;
    if pre.as_ref().is_some_and(PreCheck::refuses) {
        let name = web
            .provider(&provider)
            .map_or_else(|| provider.clone(), |p| p.name);
        let message = fill(&texts.error_key_refused, "provider", &name);
        return form_error(web, user, parts, path_provider.as_deref(), &message, next).await;
    }
    let ttl = key_ttl(web, user, Some(lifetime));
    web.byok()
        .set_key(&user.user_id, &provider, key, ttl)
        .await?;
    let action = match &pre {
        Some(pre) if pre.outcome != "valid" => format!("saved-{}", pre.outcome),
        _ => "saved".to_owned(),
    };
    Ok(back_to_page(web, &user.user_id, &action, &provider, next))
}

async fn form_delete(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
    form: Result<Form<DeleteForm>, FormRejection>,
) -> Response {
    let result = async {
        offered(&web, &provider, &parts)?;
        web.byok().delete_key(&user.user_id, &provider).await?;
        let next = form.as_ref().ok().and_then(|Form(f)| f.next.as_deref());
        Ok::<_, ByokRejection>(back_to_page(
            &web,
            &user.user_id,
            "deleted",
            &provider,
            next,
        ))
    }
    .await;
    result.unwrap_or_else(|r| {
        web.reject(r.html(true).back_to(web.settings_path()), &parts)
            .into_response()
    })
}

async fn api_list(ByokUser { web, user }: ByokUser, parts: Parts) -> Response {
    let result = async {
        let summaries = web.byok().key_summary(&user.user_id).await?;
        let providers = web
            .providers()
            .iter()
            .map(|p| ProviderEntry {
                provider: p.clone(),
                key: summaries
                    .iter()
                    .find(|k| k.provider == p.id)
                    .cloned()
                    .map(for_people),
            })
            .collect();
        Ok::<_, ByokRejection>(Json(KeyList { providers }).into_response())
    }
    .await;
    result.unwrap_or_else(|r| web.reject(r, &parts).into_response())
}

/// The `404` of a provider the user has no key for.
fn no_key(user: &UserIdentity, provider: &str) -> ByokRejection {
    ByokError::KeyNotFound {
        user_id: user.user_id.clone(),
        provider: provider.to_owned(),
    }
    .into()
}

async fn api_get(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
) -> Response {
    let result = async {
        offered(&web, &provider, &parts)?;
        match summary_of(&web, &user.user_id, &provider).await? {
            Some(k) => Ok(Json(for_people(k)).into_response()),
            None => Err(no_key(&user, &provider)),
        }
    }
    .await;
    result.unwrap_or_else(|r: ByokRejection| web.reject(r, &parts).into_response())
}

async fn api_put(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
    body: Result<Json<KeyBody>, JsonRejection>,
) -> Response {
    let result = async {
        offered(&web, &provider, &parts)?;
        policy::check_key_transport(&web, &parts)?;
        let Json(body) = body.map_err(|e| ByokRejection::malformed_body(e.status()))?;
        let key = submitted_key(&body.api_key).map_err(ByokError::from)?;
        let asked = match body.ttl_seconds {
            Some(Some(0)) => {
                return Err(ByokError::from(InvalidInput::new(
                    Field::Ttl,
                    Problem::Other("must be at least 1"),
                ))
                .into());
            }
            Some(s) => Some(s.map(Duration::from_secs)),
            None => None,
        };
        let ttl = key_ttl(&web, &user, asked);
        let pre = before_saving(&web, &user.user_id, &provider, key).await;
        if pre.as_ref().is_some_and(PreCheck::refuses) {
            return Err(ByokRejection::key_refused_by_provider());
        }
        // Create first, as one atomic step of the store, so that of racing
        // PUTs (in any process) only the one that created the key says so;
        // the others replace it.
        let created = web
            .byok()
            .set_key_if_absent(&user.user_id, &provider, key, ttl)
            .await?;
        if !created {
            web.byok()
                .set_key(&user.user_id, &provider, key, ttl)
                .await?;
        }
        let view = summary_of(&web, &user.user_id, &provider)
            .await?
            .map(for_people)
            .ok_or_else(|| {
                ByokRejection::internal("the key was stored but could not be read back")
            })?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let Some(pre) = pre else {
            return Ok((status, Json(view)).into_response());
        };
        let mut body = serde_json::to_value(&view).map_err(|e| {
            ByokRejection::internal("the answer could not be written").with_source(e)
        })?;
        if let Some(fields) = body.as_object_mut() {
            fields.insert("check".to_owned(), pre.json);
        }
        Ok::<_, ByokRejection>((status, Json(body)).into_response())
    }
    .await;
    result.unwrap_or_else(|r| web.reject(r, &parts).into_response())
}

async fn api_delete(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
) -> Response {
    let result = async {
        offered(&web, &provider, &parts)?;
        if web.byok().delete_key(&user.user_id, &provider).await? {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(no_key(&user, &provider))
        }
    }
    .await;
    result.unwrap_or_else(|r: ByokRejection| web.reject(r, &parts).into_response())
}
