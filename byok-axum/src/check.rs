//! Key checks on the settings page and in the JSON API (the `checks`
//! feature): the "Test" buttons, `POST …/api/{provider}/check`, and the
//! check before saving.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Json, Path};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use byok_check::{CheckError, Checker, KeyCheck};
use byok_core::ByokError;
use byok_core::secrecy::SecretString;
use serde::Deserialize;

use crate::html::CheckShown;
use crate::identity::UserIdentity;
use crate::page::check_words;
use crate::policy;
use crate::rejection::ByokRejection;
use crate::require::ByokUser;
use crate::settings::{PreCheck, Rendered, offered, render, submitted_key};
use crate::web::ByokWeb;

/// The checker of a [`ByokWeb`], whether keys are checked before they
/// are saved, and how many checks a user may ask for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checks {
    pub(crate) checker: Option<Arc<Checker>>,
    pub(crate) before_saving: bool,
    pub(crate) limit: Arc<CheckLimit>,
}

/// How many key checks one user may ask for in a minute, unless set
/// otherwise: a "Test" button must not let a signed-in user try out
/// keys (stolen ones, say) through the app's servers without end.
pub const DEFAULT_CHECKS_PER_MINUTE: u32 = 20;

/// Counts each user's checks in fixed one-minute windows (in this
/// process).
#[derive(Debug)]
pub(crate) struct CheckLimit {
    per_minute: u32,
    users: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32)>>,
}

impl Default for CheckLimit {
    fn default() -> Self {
        CheckLimit::new(DEFAULT_CHECKS_PER_MINUTE)
    }
}

impl CheckLimit {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    pub(crate) fn new(per_minute: u32) -> Self {
        CheckLimit {
            per_minute,
            users: std::sync::Mutex::default(),
        }
    }

    /// Counts a check of `user`; when the user has had their share of
    /// this window, the seconds until the next one begins.
    fn take(&self, user: &str) -> Result<(), u32> {
        let now = std::time::Instant::now();
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if users.len() >= 10_000 {
            users.retain(|_, (start, _)| now.duration_since(*start) < Self::WINDOW);
        }
        let (start, count) = users.entry(user.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            let left = Self::WINDOW.saturating_sub(now.duration_since(*start));
            return Err(u32::try_from(left.as_secs() + 1).unwrap_or(u32::MAX));
        }
        *count += 1;
        Ok(())
    }
}

/// Counts a check the user asked for, or refuses it with `429`.
fn counted(web: &ByokWeb, user: &str) -> Result<(), ByokRejection> {
    web.checks()
        .limit
        .take(user)
        .map_err(ByokRejection::too_many_checks)
}

impl Checks {
    /// The checker, if it has a probe for `provider`.
    fn for_provider(&self, provider: &str) -> Option<&Checker> {
        self.checker
            .as_deref()
            .filter(|c| c.prober(provider).is_ok())
    }
}

/// Whether the page offers a "Test" of `provider`'s keys.
pub(crate) fn testable(web: &ByokWeb, provider: &str) -> bool {
    web.checks().for_provider(provider).is_some()
}

/// The seconds of a rate limit's wait, rounded up, at least one.
fn retry_seconds(check: &KeyCheck) -> Option<u64> {
    match check {
        KeyCheck::RateLimited {
            retry_after: Some(d),
            ..
        } => Some((d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)),
        _ => None,
    }
}

/// The words of a check of `provider`'s key.
fn words_of(web: &ByokWeb, provider: &str, check: &KeyCheck) -> String {
    let name = web
        .provider(provider)
        .map_or_else(|| provider.to_owned(), |p| p.name);
    check_words(
        web.view().texts,
        &name,
        check.outcome(),
        retry_seconds(check),
    )
}

/// A check that could not be made: logged (without the key, which no
/// `CheckError` holds) and said in plain words; the reading of a saved key
/// keeps its own answer (`404` without one, `503` for an outage).
fn not_checked(provider: &str, e: CheckError) -> Result<(), ByokRejection> {
    match e {
        CheckError::Byok(e) => Err(ByokRejection::from(e)),
        CheckError::UnknownProvider { .. } => Err(ByokRejection::no_check()),
        e => {
            tracing::warn!(provider, error = %e, "a key check could not be made");
            Ok(())
        }
    }
}

/// Checks a key before it is saved, when the app asked for that and the
/// checker knows the provider.
pub(crate) async fn before_saving(
    web: &ByokWeb,
    user: &str,
    provider: &str,
    key: &str,
) -> Option<PreCheck> {
    let checks = web.checks();
    if !checks.before_saving {
        return None;
    }
    let checker = checks.for_provider(provider)?;
    if checks.limit.take(user).is_err() {
        // Saving stays possible; the key is saved unconfirmed.
        return Some(PreCheck {
            outcome: "error",
            json: serde_json::json!({ "outcome": "error" }),
        });
    }
    let secret = SecretString::from(key.to_owned());
    Some(match checker.check(provider, &secret).await {
        Ok(check) => PreCheck {
            outcome: check.outcome(),
            json: serde_json::to_value(&check).unwrap_or_default(),
        },
        Err(e) => {
            tracing::warn!(provider, error = %e, "a key check before saving could not be made");
            PreCheck {
                outcome: "error",
                json: serde_json::json!({ "outcome": "error" }),
            }
        }
    })
}

/// The "Test" forms: `api_key` absent tests the saved key; present, the
/// typed key (sent by the "Test" button of the key's form), which is never
/// stored.
#[derive(Deserialize)]
pub(crate) struct TestForm {
    #[serde(default)]
    api_key: Option<SecretString>,
    #[serde(default)]
    next: Option<String>,
}

/// `POST {settings}/{provider}/check`: runs the check and shows the page
/// again with its result in the provider's row.
pub(crate) async fn form_test(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
    form: Result<Form<TestForm>, FormRejection>,
) -> Response {
    test_from_form(&web, &user, &provider, &parts, form)
        .await
        .unwrap_or_else(|r| {
            web.reject(r.html(true).back_to(web.settings_path()), &parts)
                .into_response()
        })
}

async fn test_from_form(
    web: &ByokWeb,
    user: &UserIdentity,
    provider: &str,
    parts: &Parts,
    form: Result<Form<TestForm>, FormRejection>,
) -> Result<Response, ByokRejection> {
    offered(web, provider, parts)?;
    let Some(checker) = web.checks().for_provider(provider) else {
        return Err(ByokRejection::no_check());
    };
    let Form(form) = form.map_err(|e| ByokRejection::malformed_body(e.status()))?;
    counted(web, &user.user_id)?;
    let next = form.next.as_deref();
    let result = match &form.api_key {
        Some(typed) => {
            // A typed key is a secret in transit, as when it is saved.
            policy::check_key_transport(web, parts)?;
            let key = match submitted_key(typed) {
                Ok(key) => SecretString::from(key.to_owned()),
                Err(invalid) => {
                    let message = crate::settings::key_message(web, &invalid);
                    return crate::settings::form_error(
                        web,
                        user,
                        parts,
                        Some(provider),
                        message,
                        next,
                    )
                    .await;
                }
            };
            checker.check(provider, &key).await
        }
        None => {
            checker
                .check_saved(web.byok(), &user.user_id, provider)
                .await
        }
    };
    let shown = shown(web, provider, false, result)?;
    show_check(web, user, parts, shown, next).await
}

/// The page again with a check's result: a `200`.
async fn show_check(
    web: &ByokWeb,
    user: &UserIdentity,
    parts: &Parts,
    shown: CheckShown<'_>,
    next: Option<&str>,
) -> Result<Response, ByokRejection> {
    let rendered = Rendered {
        next,
        check: Some(shown),
        ..Rendered::default()
    };
    render(web, user, parts, rendered, StatusCode::OK).await
}

/// The result of a check, to show in the provider's row or the picker.
fn shown<'a>(
    web: &ByokWeb,
    provider: &'a str,
    in_picker: bool,
    result: Result<KeyCheck, CheckError>,
) -> Result<CheckShown<'a>, ByokRejection> {
    Ok(match result {
        Ok(check) => CheckShown {
            provider,
            in_picker,
            outcome: check.outcome(),
            message: words_of(web, provider, &check),
        },
        Err(e) => {
            not_checked(provider, e)?;
            CheckShown {
                provider,
                in_picker,
                outcome: "error",
                message: web.view().texts.check_failed.to_string(),
            }
        }
    })
}

/// The "Test" button of the provider picker: the key typed there, for the
/// provider chosen there (already checked to be offered, the key to be
/// well-formed and the transport to be secure); never stored.
pub(crate) async fn test_in_picker(
    web: &ByokWeb,
    user: &UserIdentity,
    parts: &Parts,
    provider: &str,
    key: &str,
    next: Option<&str>,
) -> Result<Response, ByokRejection> {
    let shown = match web.checks().for_provider(provider) {
        Some(checker) => {
            counted(web, &user.user_id)?;
            let result = checker
                .check(provider, &SecretString::from(key.to_owned()))
                .await;
            shown(web, provider, true, result)?
        }
        // The picker offers every provider; not every one has a check.
        None => CheckShown {
            provider,
            in_picker: true,
            outcome: "error",
            message: web.view().texts.check_failed.to_string(),
        },
    };
    show_check(web, user, parts, shown, next).await
}

/// The body of `POST …/api/{provider}/check` for a key that is not saved.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    api_key: SecretString,
}

/// `POST {settings}/api/{provider}/check`: without a body, checks the
/// saved key; with `{"api_key": …}`, that key, which is not stored.
/// Answers `200` with the [`KeyCheck`] whatever the provider said.
pub(crate) async fn api_check(
    ByokUser { web, user }: ByokUser,
    Path(provider): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let result = async {
        offered(&web, &provider, &parts)?;
        let Some(checker) = web.checks().for_provider(&provider) else {
            return Err(ByokRejection::no_check());
        };
        counted(&web, &user.user_id)?;
        let result = if body.is_empty() {
            checker
                .check_saved(web.byok(), &user.user_id, &provider)
                .await
        } else {
            policy::check_key_transport(&web, &parts)?;
            let json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if !json {
                return Err(ByokRejection::malformed_body(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ));
            }
            let Json(body) = Json::<CheckBody>::from_bytes(&body)
                .map_err(|e| ByokRejection::malformed_body(e.status()))?;
            let key = submitted_key(&body.api_key).map_err(ByokError::from)?;
            checker
                .check(&provider, &SecretString::from(key.to_owned()))
                .await
        };
        match result {
            Ok(check) => Ok(Json(check).into_response()),
            Err(e) => {
                not_checked(&provider, e)?;
                Err(ByokRejection::check_failed())
            }
        }
    }
    .await;
    result.unwrap_or_else(|r| web.reject(r, &parts).into_response())
}
