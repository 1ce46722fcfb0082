//! [`ByokRejection`]: every error answer of byok-axum, and the one place
//! where a [`ByokError`] becomes an HTTP status.

use std::fmt;

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
    /// A state-changing request came from another site.
    CrossSiteRequest,
    /// A key was submitted over plain HTTP in production.
    InsecureTransport,
    /// The key store is unavailable for now; retrying later can help.
    StorageUnavailable,
    /// A stored key could not be decrypted (it was left as it was).
    DecryptionFailed,
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
            RejectionKind::CrossSiteRequest => "cross-site-request",
            RejectionKind::InsecureTransport => "insecure-transport",
            RejectionKind::StorageUnavailable => "storage-unavailable",
            RejectionKind::DecryptionFailed => "decryption-failed",
            RejectionKind::Internal => "internal",
        }
    }
}

/// An error answer: an RFC 9457 problem document
/// (`application/problem+json`) for API clients, or an HTML page for
/// browsers (requests whose `Accept` names `text/html`).
///
/// Every answer carries `Cache-Control: no-store`. No answer ever holds a
/// key: invalid input is named by its field and problem, never its value.
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

impl std::error::Error for ByokRejection {}

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

    /// The human-readable explanation (never holds a key).
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The input that was rejected, for [`RejectionKind::InvalidInput`].
    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
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

    /// `401`: the request has no user.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            RejectionKind::Unauthenticated,
            "Not signed in",
            "sign in to manage API keys",
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
}

impl From<ByokError> for ByokRejection {
    fn from(e: ByokError) -> Self {
        Self::from(&e)
    }
}

impl From<&ByokError> for ByokRejection {
    /// The mapping of byok's errors to HTTP. Server-side failures are logged
    /// here (their messages hold no key material); nothing is deleted.
    fn from(e: &ByokError) -> Self {
        match e {
            ByokError::KeyNotFound { .. } => Self::new(
                StatusCode::NOT_FOUND,
                RejectionKind::KeyNotFound,
                "API key not found",
                "no key is stored for this provider",
            ),
            ByokError::InvalidInput(invalid) => {
                let mut r = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    RejectionKind::InvalidInput,
                    "Invalid input",
                    invalid.to_string(),
                );
                r.0.field = Some(field_name(invalid.field).to_owned());
                r
            }
            ByokError::Security(warning) => {
                tracing::warn!(%warning, "request refused");
                Self::insecure_transport()
            }
            ByokError::Storage(s) if s.is_retryable() => {
                tracing::warn!(error = %s, "key store unavailable");
                let mut r = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    RejectionKind::StorageUnavailable,
                    "Key store unavailable",
                    "the key store is unavailable right now; try again shortly",
                );
                r.0.retry_after = Some(RETRY_AFTER_SECONDS);
                r
            }
            ByokError::Encryption(err) => {
                tracing::error!(error = %err, "a stored API key could not be decrypted; it was left unchanged");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    RejectionKind::DecryptionFailed,
                    "Stored key unreadable",
                    "the stored key could not be decrypted; it was kept, and the operators were told",
                )
            }
            other => {
                tracing::error!(error = %other, "byok operation failed");
                Self::internal("the key store failed")
            }
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
        let mut response = if self.0.html {
            let page = html::error_page(
                self.0.title,
                &self.0.detail,
                &self.0.providers,
                self.0.settings_path.as_deref(),
            );
            (self.0.status, axum::response::Html(page)).into_response()
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
