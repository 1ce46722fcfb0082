//! [`ByokRejection`]: every error answer of byok-axum, and the one place
//! where a [`ByokError`] becomes an HTTP status.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byok_core::ByokError;
use byok_core::display::ProviderInfo;
use serde::Serialize;

use crate::html;

/// Seconds a client is asked to wait before retrying after a retryable
/// storage error (`Retry-After` of a `503`).
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// The base of the `type` URIs of byok-axum's problem documents.
/// A tag URI (RFC 4151): unique, and not pretending to be a page.
const PROBLEM_BASE: &str = "tag:byok-rs,2026:problem:";

/// The `Content-Security-Policy` of byok-axum's pages unless set otherwise.
pub(crate) const DEFAULT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What went wrong, as a short slug; it ends the problem document's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The route needs a provider key that the user has not set.
    ApiKeyRequired,
    /// No key is stored for the provider asked for.
    KeyNotFound,
    /// The provider is not one the application offers.
    UnknownProvider,
    /// An input was not acceptable; `field` says which.
    InvalidInput,
    /// The body was not of the expected form or type.
    MalformedBody,
    /// The body was larger than allowed.
    BodyTooLarge,
    /// The request has no user.
    Unauthenticated,
    /// The header that names the user was repeated or unreadable, so the
    /// request was not taken to be anyone's.
    BadIdentity,
    /// A state-changing request came from another site.
    CrossSiteRequest,
    /// A key was submitted over plain HTTP in production.
    InsecureTransport,
    /// The key store is unavailable for now; retrying later can help.
    StorageUnavailable,
    /// A stored key could not be decrypted (it was left as it was).
    DecryptionFailed,
    /// A key check was asked for but could not be made (the provider's
    /// answer broke the check client's rules, or the client failed).
    CheckFailed,
    /// The user asked for more key checks than the app allows in a while.
    TooManyChecks,
    /// Anything else that is the server's fault.
    Internal,
}

impl RejectionKind {
    fn slug(self) -> &'static str {
        match self {
            RejectionKind::ApiKeyRequired => "api-key-required",
            RejectionKind::KeyNotFound => "key-not-found",
            RejectionKind::UnknownProvider => "unknown-provider",
            RejectionKind::InvalidInput => "invalid-input",
            RejectionKind::MalformedBody => "malformed-body",
            RejectionKind::BodyTooLarge => "body-too-large",
            RejectionKind::Unauthenticated => "unauthenticated",
            RejectionKind::BadIdentity => "bad-identity",
            RejectionKind::CrossSiteRequest => "cross-site-request",
            RejectionKind::InsecureTransport => "insecure-transport",
            RejectionKind::StorageUnavailable => "storage-unavailable",
            RejectionKind::DecryptionFailed => "decryption-failed",
            RejectionKind::CheckFailed => "check-failed",
            RejectionKind::TooManyChecks => "too-many-checks",
            RejectionKind::Internal => "internal",
        }
    }
}

/// An error answer: an RFC 9457 problem document
/// (`application/problem+json`) for API clients, or an HTML page for
/// browsers (requests whose `Accept` names `text/html`).
///
/// Every answer carries `Cache-Control: no-store`, and HTML pages the
/// same `Content-Security-Policy` and `X-Content-Type-Options: nosniff` as
/// the settings page. No answer ever holds a key: invalid input is named
/// by its field and problem, never its value.
///
/// A rejection is logged once, when it becomes a response: server faults
/// as errors (with the chain of [`source`](std::error::Error::source)s),
/// refusals that an operator may need to act on as warnings, client
/// mistakes at debug level.
#[derive(Clone)]
pub struct ByokRejection(Box<Details>);

#[derive(Clone)]
struct Details {
    status: StatusCode,
    kind: RejectionKind,
    title: &'static str,
    detail: String,
    field: Option<String>,
    providers: Vec<ProviderInfo>,
    settings_path: Option<String>,
    retry_after: Option<u32>,
    html: bool,
    /// The error this answer was made from.
    source: Option<Arc<dyn StdError + Send + Sync>>,
    /// For the log only: why, and what the operator can do.
    note: Option<Cow<'static, str>>,
    /// The request's full path, for the log.
    path: Option<String>,
    /// The HTML page, made by the `ByokWeb` (its texts and layout).
    page: Option<String>,
    /// The headers of the HTML page.
    csp: Option<HeaderValue>,
}

impl fmt::Debug for ByokRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByokRejection")
            .field("status", &self.0.status)
            .field("kind", &self.0.kind)
            .field("detail", &self.0.detail)
            .field("field", &self.0.field)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ByokRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.0.status.as_u16(),
            self.0.title,
            self.0.detail
        )
    }
}

impl StdError for ByokRejection {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl ByokRejection {
    fn new(
        status: StatusCode,
        kind: RejectionKind,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ByokRejection(Box::new(Details {
            status,
            kind,
            title,
            detail: detail.into(),
            field: None,
            providers: Vec::new(),
            settings_path: None,
            retry_after: None,
            html: false,
            source: None,
            note: None,
            path: None,
            page: None,
            csp: None,
        }))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// What went wrong.
    pub fn kind(&self) -> RejectionKind {
        self.0.kind
    }

    /// The short title of the problem.
    pub fn title(&self) -> &'static str {
        self.0.title
    }

    /// The human-readable explanation (never holds a key).
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The input that was rejected, for [`RejectionKind::InvalidInput`].
    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }

    /// The providers a [`RejectionKind::ApiKeyRequired`] asks for.
    pub fn providers(&self) -> &[ProviderInfo] {
        &self.0.providers
    }

    /// Whether the answer is an HTML page.
    pub fn is_html(&self) -> bool {
        self.0.html
    }

    /// Answers with an HTML page instead of a problem document.
    pub fn html(mut self, html: bool) -> Self {
        self.0.html = html;
        self
    }

    /// Answers with an HTML page when the request's `Accept` header names
    /// `text/html` (as browsers' navigations and form posts do).
    pub fn for_request(self, headers: &HeaderMap) -> Self {
        self.html(wants_html(headers))
    }

    /// Keeps `source` as the cause of this rejection: it is logged with the
    /// rejection and returned by [`Error::source`](std::error::Error::source),
    /// never sent to the client.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.0.source = Some(Arc::from(source.into()));
        self
    }

    /// Adds a line for the log (never for the client): why, and how to
    /// change it.
    pub(crate) fn with_note(mut self, note: impl Into<Cow<'static, str>>) -> Self {
        self.0.note = Some(note.into());
        self
    }

    /// Says when to try again (`Retry-After`, in seconds).
    fn retry_after(mut self, seconds: u32) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }

    /// Names the field of the body that was wrong.
    fn on_field(mut self, field: &str) -> Self {
        self.0.field = Some(field.to_owned());
        self
    }

    /// The request's full path, for the log line.
    pub(crate) fn at(mut self, path: &str) -> Self {
        if self.0.path.is_none() {
            self.0.path = Some(path.to_owned());
        }
        self
    }

    /// The HTML page of this rejection, made by the caller, and the
    /// `Content-Security-Policy` it is served with.
    pub(crate) fn with_page(mut self, page: String, csp: HeaderValue) -> Self {
        self.0.page = Some(page);
        self.0.csp = Some(csp);
        self
    }

    pub(crate) fn settings_link(&self) -> Option<&str> {
        self.0.settings_path.as_deref()
    }

    /// Answers a browser with a page that links back to the settings page
    /// at `settings_path`.
    pub(crate) fn back_to(mut self, settings_path: &str) -> Self {
        self.0.settings_path = Some(settings_path.to_owned());
        self
    }

    /// `403`: none of `providers` has a key; the page links to the settings
    /// at `settings_path`.
    pub fn api_key_required(providers: Vec<ProviderInfo>, settings_path: &str) -> Self {
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        let detail = match names.as_slice() {
            [one] => format!("this page needs your {one} API key; add it in the API key settings"),
            _ => format!(
                "this page needs an API key of one of: {}; add one in the API key settings",
                names.join(", ")
            ),
        };
        let mut r = Self::new(
            StatusCode::FORBIDDEN,
            RejectionKind::ApiKeyRequired,
            "API key required",
            detail,
        );
        r.0.providers = providers;
        r.0.settings_path = Some(settings_path.to_owned());
        r
    }

    /// `404`: `provider` is not one the application offers.
    pub fn unknown_provider() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            RejectionKind::UnknownProvider,
            "Unknown provider",
            "this application does not offer that provider",
        )
    }

    /// `404`: the application has no key check for this provider.
    pub fn no_check() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            RejectionKind::UnknownProvider,
            "No key check",
            "this application cannot check keys of that provider",
        )
    }

    /// `502`: a key check could not be made; nothing is known about the key.
    pub fn check_failed() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            RejectionKind::CheckFailed,
            "Key check failed",
            "the key could not be checked; nothing is known about it",
        )
    }

    /// `429` with `Retry-After`: the user asked for more key checks than
    /// the app allows in a minute.
    pub fn too_many_checks(retry_after_seconds: u32) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            RejectionKind::TooManyChecks,
            "Too many key checks",
            "too many key checks in a short time; try again in a minute",
        )
        .retry_after(retry_after_seconds)
    }

    /// `422`: checked before saving, the provider does not accept the key,
    /// which was not saved.
    pub fn key_refused_by_provider() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            RejectionKind::InvalidInput,
            "Key refused by the provider",
            "the provider does not accept this key; it was not saved",
        )
        .on_field("api_key")
    }

    /// `401`: the request has no user.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            RejectionKind::Unauthenticated,
            "Not signed in",
            "sign in to manage API keys",
        )
    }

    /// `400`: the header that names the user was repeated or unreadable.
    pub fn bad_identity(why: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            RejectionKind::BadIdentity,
            "Bad identity header",
            why,
        )
    }

    /// `403`: a state-changing request from another site.
    pub fn cross_site() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            RejectionKind::CrossSiteRequest,
            "Cross-site request refused",
            "API keys can only be changed from this site's own pages",
        )
    }

    /// `403`: a key submitted over plain HTTP in production.
    pub fn insecure_transport() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            RejectionKind::InsecureTransport,
            "HTTPS required",
            "API keys are accepted only over HTTPS; the key was not stored",
        )
    }

    /// `400`, `413`, `415` or `422`: the body could not be read as what the
    /// route expects. The detail is fixed per status, because a parser's
    /// message can quote the input.
    pub fn malformed_body(status: StatusCode) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                RejectionKind::BodyTooLarge,
                "Request body too large",
                "the request body is larger than this route accepts",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                RejectionKind::MalformedBody,
                "Unsupported media type",
                "send application/json to the API and a form to the page",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Self::new(
                status,
                RejectionKind::MalformedBody,
                "Unexpected body",
                "the body does not have the expected fields (api_key, and optionally ttl_seconds)",
            ),
            _ => Self::new(
                StatusCode::BAD_REQUEST,
                RejectionKind::MalformedBody,
                "Malformed body",
                "the body could not be parsed",
            ),
        }
    }

    /// `500` for a fault of the server or its setup; `detail` is shown to
    /// the client, so it says nothing internal.
    pub fn internal(detail: &'static str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            RejectionKind::Internal,
            "Internal error",
            detail,
        )
    }

    /// The log line of this rejection, written once when it becomes a
    /// response.
    fn log(&self) {
        let d = &self.0;
        let path = d.path.as_deref().unwrap_or("");
        let note = d.note.as_deref().unwrap_or("");
        let source = d.source.as_deref().map(ErrorChain);
        let status = d.status.as_u16();
        let kind = d.kind.slug();
        match d.kind {
            RejectionKind::Internal | RejectionKind::DecryptionFailed => tracing::error!(
                status,
                kind,
                path,
                error = source.map(tracing::field::display),
                "{}{note}",
                d.detail
            ),
            RejectionKind::StorageUnavailable
            | RejectionKind::CheckFailed
            | RejectionKind::TooManyChecks
            | RejectionKind::InsecureTransport
            | RejectionKind::CrossSiteRequest
            | RejectionKind::BadIdentity => tracing::warn!(
                status,
                kind,
                path,
                error = source.map(tracing::field::display),
                "{}{note}",
                d.detail
            ),
            _ => tracing::debug!(
                status,
                kind,
                path,
                error = source.map(tracing::field::display),
                "{}{note}",
                d.detail
            ),
        }
    }
}

/// An error and its sources, joined by `: `.
struct ErrorChain<'a>(&'a (dyn StdError + Send + Sync));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

impl From<ByokError> for ByokRejection {
    /// The mapping of byok's errors to HTTP; the error is kept as the
    /// rejection's source. Nothing is logged here: the rejection is logged
    /// when it becomes a response.
    fn from(e: ByokError) -> Self {
        let r = Self::from(&e);
        r.with_source(e)
    }
}

impl From<&ByokError> for ByokRejection {
    /// The same mapping as `From<ByokError>`, without keeping the error as
    /// the source (it is borrowed).
    fn from(e: &ByokError) -> Self {
        match e {
            ByokError::KeyNotFound { .. } => Self::new(
                StatusCode::NOT_FOUND,
                RejectionKind::KeyNotFound,
                "API key not found",
                "no key is stored for this provider",
            ),
            ByokError::InvalidInput(invalid) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                RejectionKind::InvalidInput,
                "Invalid input",
                invalid.to_string(),
            )
            .on_field(field_name(invalid.field)),
            ByokError::Storage(s) if s.is_retryable() => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                RejectionKind::StorageUnavailable,
                "Key store unavailable",
                "the key store is unavailable right now; try again shortly",
            )
            .retry_after(RETRY_AFTER_SECONDS),
            ByokError::Encryption(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                RejectionKind::DecryptionFailed,
                "Stored key unreadable",
                "the stored key could not be decrypted; it was kept unchanged",
            )
            .with_note("; the key was left unchanged"),
            _ => Self::internal("the key store failed"),
        }
    }
}

/// The problem-document name of a field, as it is named in request bodies.
fn field_name(field: byok_core::error::Field) -> &'static str {
    match field {
        byok_core::error::Field::ApiKey => "api_key",
        byok_core::error::Field::Provider => "provider",
        byok_core::error::Field::UserId => "user_id",
        byok_core::error::Field::Ttl => "ttl_seconds",
        _ => "input",
    }
}

/// Whether the request asks for HTML (a browser navigation or form post).
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// The headers every HTML page of byok-axum carries.
pub(crate) fn page_headers(headers: &mut HeaderMap, csp: HeaderValue) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not no-referrer: under it, browsers send `Origin: null` with a form
    // post, and the same-origin and loopback checks could not see where the
    // post came from. Other sites still get no Referer.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    providers: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings_url: Option<&'a str>,
}

impl IntoResponse for ByokRejection {
    fn into_response(self) -> Response {
        self.log();
        let mut response = if self.0.html {
            let page = match self.0.page {
                Some(page) => page,
                None => html::error_page(
                    self.0.title,
                    &self.0.detail,
                    &self.0.providers,
                    self.0.settings_path.as_deref(),
                ),
            };
            let mut r = (self.0.status, axum::response::Html(page)).into_response();
            let csp = self
                .0
                .csp
                .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_CSP));
            page_headers(r.headers_mut(), csp);
            r
        } else {
            let problem = Problem {
                kind: format!("{PROBLEM_BASE}{}", self.0.kind.slug()),
                title: self.0.title,
                status: self.0.status.as_u16(),
                detail: &self.0.detail,
                field: self.0.field.as_deref(),
                providers: self.0.providers.iter().map(|p| p.id.as_str()).collect(),
                settings_url: self
                    .0
                    .settings_path
                    .as_deref()
                    .filter(|_| !self.0.providers.is_empty()),
            };
            let body = serde_json::to_vec(&problem).unwrap_or_default();
            let mut r = (self.0.status, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
            r.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(seconds) = self.0.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byok_core::error::{
        EncryptionError, Field, InvalidInput, Problem, StorageError, StorageErrorKind,
    };

    #[test]
    fn byok_errors_map_to_statuses() {
        let cases: Vec<(ByokError, StatusCode, RejectionKind)> = vec![
            (
                ByokError::KeyNotFound {
                    user_id: "u".into(),
                    provider: "openai".into(),
                },
                StatusCode::NOT_FOUND,
                RejectionKind::KeyNotFound,
            ),
            (
                InvalidInput::new(Field::ApiKey, Problem::Empty).into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                RejectionKind::InvalidInput,
            ),
            (
                StorageError::new("t", StorageErrorKind::Timeout, "slow").into(),
                StatusCode::SERVICE_UNAVAILABLE,
                RejectionKind::StorageUnavailable,
            ),
            (
                StorageError::new("t", StorageErrorKind::Corrupt, "bad row").into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                RejectionKind::Internal,
            ),
            (
                EncryptionError::AuthenticationFailed { key_id: 1 }.into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                RejectionKind::DecryptionFailed,
            ),
            (
                byok_core::ConfigError::new("bad").into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                RejectionKind::Internal,
            ),
        ];
        for (error, status, kind) in cases {
            let r = ByokRejection::from(&error);
            assert_eq!((r.status(), r.kind()), (status, kind), "{error}");
            let response = r.into_response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                status == StatusCode::SERVICE_UNAVAILABLE
            );
        }
        let r = ByokRejection::from(ByokError::from(InvalidInput::new(
            Field::ApiKey,
            Problem::ControlCharacter { at: 3 },
        )));
        assert_eq!(r.field(), Some("api_key"));
        assert_eq!(
            r.detail(),
            "invalid API key: contains a control character at byte 3"
        );
    }

    #[test]
    fn html_is_chosen_by_accept() {
        let mut headers = HeaderMap::new();
        assert!(!wants_html(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_html(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9"),
        );
        assert!(wants_html(&headers));
        let r = ByokRejection::unauthenticated()
            .for_request(&headers)
            .into_response();
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}
