//! The classifier: a provider's answer (status, `Retry-After`, error body)
//! to a [`KeyCheck`].
//!
//! Each provider reports the same trouble differently. The rules below
//! follow the providers' documented error shapes; where a provider is not
//! specific, the common meaning of the status applies:
//!
//! | status | common meaning | read from the body first |
//! |---|---|---|
//! | 2xx | valid | OpenRouter `limit_remaining <= 0` and DeepSeek `is_available: false` are out of credit; xAI `api_key_disabled` is invalid, `api_key_blocked`/`team_blocked` forbidden; Cohere `valid: false` is invalid |
//! | 400 | unknown | Gemini `API_KEY_INVALID` is invalid and "location is not supported" region-blocked; Anthropic "credit balance is too low" is out of credit; xAI "Incorrect API key" is invalid |
//! | 401 | invalid | |
//! | 402 | out of credit | |
//! | 403 | forbidden | a message about a country, region or location is region-blocked (OpenAI `unsupported_country_region_territory`); xAI "credits" is out of credit; Gemini `API_KEY_INVALID` is invalid |
//! | 429 | rate-limited | OpenAI `insufficient_quota`, "exceeded your current quota", a Gemini per-day quota and Cohere's monthly trial limit are out of credit |
//! | 408 | unavailable (timeout) | |
//! | 5xx, 529 | unavailable | |
//! | other | unknown | |

use std::time::Duration;

use serde_json::Value;

use crate::result::{Balance, Detail, KeyCheck, KeyInfo, Unavailable, clean_message};

/// Whose error shapes to read: one per built-in provider, and a generic one
/// for OpenAI-compatible endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// OpenAI.
    OpenAi,
    /// Anthropic.
    Anthropic,
    /// Google Gemini (Generative Language API).
    Gemini,
    /// Mistral.
    Mistral,
    /// Groq.
    Groq,
    /// OpenRouter (`/api/v1/key`).
    OpenRouter,
    /// DeepSeek (`/user/balance`).
    DeepSeek,
    /// xAI (`/v1/api-key`).
    Xai,
    /// Cohere (`/v1/check-api-key`).
    Cohere,
    /// Azure OpenAI.
    AzureOpenAi,
    /// Any endpoint that answers like OpenAI.
    OpenAiCompatible,
}

/// A provider's answer, as the classifier needs it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The wait the headers asked for (`Retry-After`, `retry-after-ms`).
    pub retry_after: Option<Duration>,
    /// The body, or `None` when it was over the size cap or unreadable.
    pub body: Option<&'a [u8]>,
}

/// Classifies `answer` by the rules of `dialect`. `secret` is the key that
/// was checked: any copy of it in a provider message is replaced.
///
/// ```
/// use byok_check::classify::{Answer, Dialect, classify};
/// use byok_check::KeyCheck;
///
/// let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
/// let answer = Answer { status: 429, retry_after: None, body: Some(body) };
/// assert!(matches!(classify(Dialect::OpenAi, &answer, None), KeyCheck::OutOfCredit(_)));
///
/// let body = br#"{"error":{"code":"rate_limit_exceeded","message":"Rate limit reached"}}"#;
/// let answer = Answer { status: 429, retry_after: Some(std::time::Duration::from_secs(20)), body: Some(body) };
/// assert!(matches!(classify(Dialect::OpenAi, &answer, None), KeyCheck::RateLimited { .. }));
/// ```
pub fn classify(dialect: Dialect, answer: &Answer<'_>, secret: Option<&str>) -> KeyCheck {
    let json: Option<Value> = answer.body.and_then(|b| serde_json::from_slice(b).ok());
    let status = answer.status;
    if (200..300).contains(&status) {
        return classify_success(dialect, status, answer.body.is_some(), json.as_ref());
    }
    let fields = json.as_ref().map(ErrorFields::read).unwrap_or_default();
    let detail = fields.detail(status, secret);
    let text = fields.text();
    let has = |needle: &str| text.contains(needle);
    let region = has("region") || has("country") || has("territory") || has("location");
    let quota_words = has("insufficient_quota")
        || has("insufficientquota")
        || has("exceeded your current quota")
        || has("quota exceeded")
        || has("billing")
        || has("credit");

    match status {
        400 => match dialect {
            Dialect::Gemini if has("api_key_invalid") || has("api key not valid") => {
                KeyCheck::Invalid(detail)
            }
            Dialect::Gemini if has("failed_precondition") && region => {
                KeyCheck::RegionBlocked(detail)
            }
            Dialect::Anthropic if has("credit balance") => KeyCheck::OutOfCredit(detail),
            Dialect::Xai if has("incorrect api key") || has("invalid api key") => {
                KeyCheck::Invalid(detail)
            }
            _ if has("invalid_api_key") || has("invalid api key") => KeyCheck::Invalid(detail),
            _ => KeyCheck::Unknown(detail),
        },
        401 => KeyCheck::Invalid(detail),
        402 => KeyCheck::OutOfCredit(detail),
        403 => {
            if dialect == Dialect::Gemini && has("api_key_invalid") {
                KeyCheck::Invalid(detail)
            } else if region {
                KeyCheck::RegionBlocked(detail)
            } else if dialect == Dialect::Xai && has("credits") {
                KeyCheck::OutOfCredit(detail)
            } else {
                KeyCheck::Forbidden(detail)
            }
        }
        408 => KeyCheck::Unavailable {
            reason: Unavailable::Timeout,
            detail,
        },
        429 => {
            let daily = fields.quota_ids.iter().any(|q| q.contains("perday"));
            let trial_month = dialect == Dialect::Cohere && has("trial key") && has("month");
            if quota_words || daily || trial_month {
                KeyCheck::OutOfCredit(detail)
            } else {
                KeyCheck::RateLimited {
                    retry_after: answer.retry_after.or(fields.retry_delay),
                    detail,
                }
            }
        }
        500..=599 => KeyCheck::Unavailable {
            reason: Unavailable::ServerError,
            detail,
        },
        _ => KeyCheck::Unknown(detail),
    }
}

fn classify_success(
    dialect: Dialect,
    status: u16,
    has_body: bool,
    json: Option<&Value>,
) -> KeyCheck {
    let mut info = KeyInfo::status(status);
    // These providers say in a 200 whether the key can be used at all: an
    // answer whose body cannot be read proves nothing there.
    let body_decides = matches!(
        dialect,
        Dialect::OpenRouter | Dialect::DeepSeek | Dialect::Xai | Dialect::Cohere
    );
    let Some(json) = json else {
        if body_decides {
            let why = if has_body {
                "the answer was not the JSON this provider sends"
            } else {
                "the body of the answer was over the size cap or cut off"
            };
            return KeyCheck::Unknown(Detail::new(Some(status), None, Some(why.to_owned())));
        }
        return KeyCheck::Valid(info);
    };
    let with_code = |code: &str| Detail::new(Some(status), Some(code.to_owned()), None);
    match dialect {
        Dialect::OpenRouter => {
            let data = &json["data"];
            if !data.is_object() {
                return KeyCheck::Unknown(with_code("no data"));
            }
            info.limit = data["limit"].as_f64();
            info.limit_remaining = data["limit_remaining"].as_f64();
            info.usage = data["usage"].as_f64();
            info.free_tier = data["is_free_tier"].as_bool();
            if info.limit_remaining.is_some_and(|left| left <= 0.0) {
                return KeyCheck::OutOfCredit(with_code("limit_remaining"));
            }
        }
        Dialect::DeepSeek => {
            for b in json["balance_infos"].as_array().into_iter().flatten() {
                if let (Some(c), Some(a)) = (b["currency"].as_str(), b["total_balance"].as_str()) {
                    info.balances.push(Balance::new(c, a));
                }
            }
            match json["is_available"].as_bool() {
                Some(true) => {}
                Some(false) => return KeyCheck::OutOfCredit(with_code("is_available")),
                None => return KeyCheck::Unknown(with_code("no is_available")),
            }
        }
        Dialect::Xai => {
            let flag = |name: &str| json[name].as_bool() == Some(true);
            if flag("api_key_disabled") {
                return KeyCheck::Invalid(with_code("api_key_disabled"));
            }
            if flag("api_key_blocked") {
                return KeyCheck::Forbidden(with_code("api_key_blocked"));
            }
            if flag("team_blocked") {
                return KeyCheck::Forbidden(with_code("team_blocked"));
            }
            if json["api_key_id"].is_null() && json["redacted_api_key"].is_null() {
                return KeyCheck::Unknown(with_code("no api_key_id"));
            }
        }
        Dialect::Cohere => match json["valid"].as_bool() {
            Some(true) => {}
            Some(false) => return KeyCheck::Invalid(with_code("valid: false")),
            None => return KeyCheck::Unknown(with_code("no valid")),
        },
        Dialect::Gemini => {
            for m in json["models"].as_array().into_iter().flatten() {
                if let Some(name) = m["name"].as_str() {
                    let id = name.strip_prefix("models/").unwrap_or(name);
                    info.models.push(id.to_owned());
                }
            }
        }
        _ => {
            for m in json["data"].as_array().into_iter().flatten() {
                if let Some(id) = m["id"].as_str() {
                    info.models.push(id.to_owned());
                }
            }
        }
    }
    KeyCheck::Valid(info)
}

/// The fields of an error body, wherever this provider puts them.
#[derive(Debug, Default)]
struct ErrorFields {
    /// Most specific first: Google `reason`, error `code`, error `type`,
    /// Google `status`, a top-level `code` or `type`.
    codes: Vec<String>,
    message: Option<String>,
    quota_ids: Vec<String>,
    retry_delay: Option<Duration>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl ErrorFields {
    fn read(json: &Value) -> Self {
        let mut f = ErrorFields::default();
        let error = &json["error"];
        if error.is_object() {
            for d in error["details"].as_array().into_iter().flatten() {
                f.codes.extend(scalar(&d["reason"]));
                if let Some(delay) = d["retryDelay"].as_str() {
                    f.retry_delay = parse_google_duration(delay);
                }
                for v in d["violations"].as_array().into_iter().flatten() {
                    f.quota_ids
                        .extend(scalar(&v["quotaId"]).map(|q| q.to_ascii_lowercase()));
                }
            }
            // Gemini's `code` is the HTTP status again: not worth keeping.
            if !error["code"].is_number() {
                f.codes.extend(scalar(&error["code"]));
            }
            f.codes.extend(scalar(&error["type"]));
            f.codes.extend(scalar(&error["status"]));
            f.message = scalar(&error["message"]);
        } else {
            // xAI: {"code": "...", "error": "..."}.
            f.message = scalar(error);
        }
        if !json["code"].is_number() {
            f.codes.extend(scalar(&json["code"]));
        }
        if json["type"] != "error" {
            f.codes.extend(scalar(&json["type"]));
        }
        if f.message.is_none() {
            // Mistral and Cohere: {"message": "..."}; older Mistral: {"detail": "..."}.
            f.message = scalar(&json["message"]).or_else(|| scalar(&json["detail"]));
        }
        f
    }

    /// Everything that the rules look for, lower-cased.
    fn text(&self) -> String {
        let mut t = self.codes.join(" ");
        if let Some(m) = &self.message {
            t.push(' ');
            t.push_str(m);
        }
        t.to_ascii_lowercase()
    }

    fn detail(&self, status: u16, secret: Option<&str>) -> Detail {
        Detail {
            status: Some(status),
            code: self.codes.first().map(|c| clean_message(c, secret)),
            message: self.message.as_deref().map(|m| clean_message(m, secret)),
        }
    }
}

/// Google's duration form: `"27s"`, `"1.5s"`.
fn parse_google_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// Reads `Retry-After` (seconds or an HTTP date) and `retry-after-ms`
/// (OpenAI, Azure), preferring the more precise one.
pub fn retry_after(retry_after: Option<&str>, retry_after_ms: Option<&str>) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok())
        && let Ok(d) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(d);
    }
    let v = retry_after?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = when.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dialect: Dialect, status: u16, body: &str) -> KeyCheck {
        let answer = Answer {
            status,
            retry_after: None,
            body: Some(body.as_bytes()),
        };
        classify(dialect, &answer, Some("sk-the-key-itself"))
    }

    #[test]
    fn the_same_status_means_different_things() {
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(run(Dialect::OpenAi, 429, quota).outcome(), "out_of_credit");
        let rate = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(run(Dialect::OpenAi, 429, rate).outcome(), "rate_limited");
        let credit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
        assert_eq!(
            run(Dialect::Anthropic, 400, credit).outcome(),
            "out_of_credit"
        );
        let gemini = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        let check = run(Dialect::Gemini, 400, gemini);
        assert_eq!(check.outcome(), "invalid");
        assert_eq!(
            check.detail().and_then(|d| d.code.as_deref()),
            Some("API_KEY_INVALID")
        );
        // A 400 that says nothing known stays unknown rather than "invalid".
        assert_eq!(run(Dialect::OpenAi, 400, "{}").outcome(), "unknown");
    }

    #[test]
    fn a_key_echoed_in_a_message_is_replaced() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-the-key-itself.","code":"invalid_api_key"}}"#;
        let check = run(Dialect::OpenAiCompatible, 401, body);
        let message = check
            .detail()
            .and_then(|d| d.message.clone())
            .unwrap_or_default();
        assert_eq!(message, "Incorrect API key provided: [key].");
        assert!(!format!("{check:?}").contains("sk-the-key-itself"));
    }

    #[test]
    fn gemini_retry_info_and_daily_quota() {
        let minute = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"Resource has been exhausted","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"27s"}]}}"#;
        assert_eq!(
            run(Dialect::Gemini, 429, minute),
            KeyCheck::RateLimited {
                retry_after: Some(Duration::from_secs(27)),
                detail: Detail {
                    status: Some(429),
                    code: Some("RESOURCE_EXHAUSTED".into()),
                    message: Some("Resource has been exhausted".into()),
                },
            }
        );
        let day = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"Resource has been exhausted","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#;
        assert_eq!(run(Dialect::Gemini, 429, day).outcome(), "out_of_credit");
    }

    #[test]
    fn a_200_can_still_refuse_the_key() {
        let xai = |flags: &str| {
            run(
                Dialect::Xai,
                200,
                &format!(r#"{{"api_key_id":"k-1",{flags}}}"#),
            )
        };
        assert_eq!(xai(r#""api_key_disabled":true"#).outcome(), "invalid");
        assert_eq!(xai(r#""api_key_blocked":true"#).outcome(), "forbidden");
        assert_eq!(xai(r#""team_blocked":true"#).outcome(), "forbidden");
        assert_eq!(xai(r#""team_blocked":false"#).outcome(), "valid");
        assert_eq!(
            run(Dialect::Cohere, 200, r#"{"valid":false}"#).outcome(),
            "invalid"
        );
        // OpenRouter without a limit: nothing to run out of at the key.
        let unlimited = r#"{"data":{"limit":null,"limit_remaining":null,"usage":3}}"#;
        assert_eq!(run(Dialect::OpenRouter, 200, unlimited).outcome(), "valid");
        let credits = r#"{"error":{"code":402,"message":"Insufficient credits"}}"#;
        assert_eq!(
            run(Dialect::OpenRouter, 402, credits).outcome(),
            "out_of_credit"
        );
    }

    #[test]
    fn status_meanings_where_the_body_says_nothing() {
        for (status, outcome) in [
            (401, "invalid"),
            (402, "out_of_credit"),
            (403, "forbidden"),
            (404, "unknown"),
            (408, "unavailable"),
            (429, "rate_limited"),
            (500, "unavailable"),
            (529, "unavailable"),
            (302, "unknown"),
        ] {
            let check = run(Dialect::OpenAiCompatible, status, "");
            assert_eq!(check.outcome(), outcome, "{status}");
            assert_eq!(check.status(), Some(status));
        }
        let blocked = r#"{"error":{"code":403,"message":"Requests to this API are blocked.","status":"PERMISSION_DENIED","details":[{"reason":"API_KEY_SERVICE_BLOCKED"}]}}"#;
        assert_eq!(run(Dialect::Gemini, 403, blocked).outcome(), "forbidden");
    }

    const DIALECTS: [Dialect; 11] = [
        Dialect::OpenAi,
        Dialect::Anthropic,
        Dialect::Gemini,
        Dialect::Mistral,
        Dialect::Groq,
        Dialect::OpenRouter,
        Dialect::DeepSeek,
        Dialect::Xai,
        Dialect::Cohere,
        Dialect::AzureOpenAi,
        Dialect::OpenAiCompatible,
    ];

    proptest::proptest! {
        /// Any answer is classified without a panic, keeps its status, and
        /// never gives back the key, whatever the body holds.
        #[test]
        fn any_answer_is_classified(
            dialect in 0..DIALECTS.len(),
            status in 100u16..600,
            message in ".{0,40}",
            code in "[a-z_]{0,12}",
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let key = "sk-the-key-itself";
            let json = serde_json::json!({
                "error": { "message": format!("{message} {key}"), "code": code, "details": [{"reason": code, "retryDelay": message}] },
                "message": message,
            })
            .to_string();
            for body in [json.as_bytes(), &raw[..]] {
                let answer = Answer { status, retry_after: None, body: Some(body) };
                let check = classify(DIALECTS[dialect], &answer, Some(key));
                proptest::prop_assert_eq!(check.status(), Some(status));
                let shown = format!("{check:?}");
                proptest::prop_assert!(!shown.contains(key), "{}", shown);
            }
        }
    }

    #[test]
    fn retry_after_headers() {
        assert_eq!(retry_after(Some("20"), None), Some(Duration::from_secs(20)));
        assert_eq!(
            retry_after(Some("20"), Some("1500")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), None),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some("soon"), None), None);
        assert_eq!(retry_after(None, Some("-5")), None);
    }

    #[test]
    fn bodies_that_are_not_json_do_not_panic() {
        for dialect in [Dialect::OpenRouter, Dialect::Xai, Dialect::OpenAi] {
            for status in [200, 400, 401, 429, 500, 302] {
                let _ = run(dialect, status, "\u{0}not json[");
            }
        }
        assert_eq!(
            run(Dialect::OpenRouter, 200, "not json").outcome(),
            "unknown"
        );
        assert_eq!(run(Dialect::OpenAi, 200, "not json").outcome(), "valid");
    }
}
