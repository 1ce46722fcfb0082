//! [`KeyCheck`]: what a provider said about a key, in terms an app can act on.

use std::fmt;
use std::time::Duration;

use byok_core::CheckRecord;
use byok_core::error::InvalidInput;
use serde::Serialize;

/// What a check found out about one key.
///
/// The same HTTP status means different things at different providers
/// (OpenAI reports an exhausted quota as a 429, like a rate limit;
/// Anthropic reports low credit as a 400; Gemini reports a bad key as a
/// 400), so a `KeyCheck` is made from the status *and* the error body; see
/// [`classify`](crate::classify).
///
/// Nothing in it is secret: provider messages are cut short and any copy of
/// the key in them is replaced before they get here.
///
/// ```
/// use byok_check::{Detail, KeyCheck};
/// let check = KeyCheck::Invalid(Detail::status(401));
/// assert_eq!(check.outcome(), "invalid");
/// assert!(!check.is_valid());
/// assert_eq!(check.to_string(), "the provider does not accept this key");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyCheck {
    /// The provider accepted the key, and told this much about it.
    Valid(KeyInfo),
    /// The provider does not know the key, or it was revoked or disabled.
    Invalid(Detail),
    /// The key is accepted but the account has no credit or quota left.
    OutOfCredit(Detail),
    /// Too many requests for now; try again after `retry_after` if given.
    RateLimited {
        /// How long the provider asked to wait (`Retry-After`,
        /// `retry-after-ms`, or Gemini's `RetryInfo`).
        #[serde(serialize_with = "secs")]
        retry_after: Option<Duration>,
        /// What the provider said.
        detail: Detail,
    },
    /// The provider does not serve the place the request came from.
    RegionBlocked(Detail),
    /// The key is known but not allowed to do this (permissions, a
    /// blocked team or key, a network rule).
    Forbidden(Detail),
    /// The provider could not be asked: a 5xx, a timeout, a failed DNS
    /// look-up or connection. Says nothing about the key.
    Unavailable {
        /// Why.
        reason: Unavailable,
        /// What the provider said, if it answered at all.
        detail: Detail,
    },
    /// An answer this crate cannot read as any of the above.
    Unknown(Detail),
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl KeyCheck {
    /// Every value of [`outcome`](Self::outcome), in the order of the
    /// variants.
    pub const OUTCOMES: [&'static str; 8] = [
        "valid",
        "invalid",
        "out_of_credit",
        "rate_limited",
        "region_blocked",
        "forbidden",
        "unavailable",
        "unknown",
    ];

    /// A short stable name of the result (`valid`, `invalid`,
    /// `out_of_credit`, `rate_limited`, `region_blocked`, `forbidden`,
    /// `unavailable`, `unknown`): the `result` label of the metric and the
    /// `outcome` field of the JSON form.
    pub fn outcome(&self) -> &'static str {
        match self {
            KeyCheck::Valid(_) => "valid",
            KeyCheck::Invalid(_) => "invalid",
            KeyCheck::OutOfCredit(_) => "out_of_credit",
            KeyCheck::RateLimited { .. } => "rate_limited",
            KeyCheck::RegionBlocked(_) => "region_blocked",
            KeyCheck::Forbidden(_) => "forbidden",
            KeyCheck::Unavailable { .. } => "unavailable",
            KeyCheck::Unknown(_) => "unknown",
        }
    }

    /// Whether the provider accepted the key.
    pub fn is_valid(&self) -> bool {
        matches!(self, KeyCheck::Valid(_))
    }

    /// Whether the provider said the key itself is wrong: the one result
    /// on which an app may refuse to save a key.
    pub fn is_invalid(&self) -> bool {
        matches!(self, KeyCheck::Invalid(_))
    }

    /// What the provider said, for every result but `Valid`.
    pub fn detail(&self) -> Option<&Detail> {
        match self {
            KeyCheck::Valid(_) => None,
            KeyCheck::Invalid(d)
            | KeyCheck::OutOfCredit(d)
            | KeyCheck::RegionBlocked(d)
            | KeyCheck::Forbidden(d)
            | KeyCheck::Unknown(d)
            | KeyCheck::RateLimited { detail: d, .. }
            | KeyCheck::Unavailable { detail: d, .. } => Some(d),
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            KeyCheck::Valid(info) => info.status,
            other => other.detail().and_then(|d| d.status),
        }
    }
}

impl KeyCheck {
    /// The sentence kept with a saved key for this result: its
    /// [`Display`](fmt::Display) form, capitalized, with a full stop
    /// ("The provider does not accept this key."), cut to
    /// [`MAX_SUMMARY_LEN`](byok_core::check_record::MAX_SUMMARY_LEN)
    /// bytes on a character boundary. It holds no provider message and
    /// never the key.
    pub fn summary(&self) -> String {
        use byok_core::check_record::MAX_SUMMARY_LEN;
        let words = self.to_string();
        let mut chars = words.chars();
        let mut out: String = chars
            .next()
            .map(|c| c.to_uppercase().collect())
            .unwrap_or_default();
        out.extend(chars.filter(|c| !c.is_control()));
        if !out.ends_with('.') {
            out.push('.');
        }
        if out.len() > MAX_SUMMARY_LEN {
            let mut end = MAX_SUMMARY_LEN;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
        }
        out
    }

    /// The record of this result made now, to keep with the saved key it
    /// was made for ([`Byok::record_check`](byok_core::Byok::record_check)):
    /// the [`outcome`](Self::outcome) and the [`summary`](Self::summary).
    /// [`Checker::check_saved`](crate::Checker::check_saved) keeps it by
    /// itself.
    pub fn record(&self) -> Result<CheckRecord, InvalidInput> {
        CheckRecord::new(self.outcome(), &self.summary())
    }
}

/// Plain words for a person: "the provider does not accept this key".
impl fmt::Display for KeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyCheck::Valid(_) => f.write_str("the provider accepted this key"),
            KeyCheck::Invalid(_) => f.write_str("the provider does not accept this key"),
            KeyCheck::OutOfCredit(_) => {
                f.write_str("the key is valid but the account has no credit or quota left")
            }
            KeyCheck::RateLimited {
                retry_after: Some(d),
                ..
            } => write!(
                f,
                "the provider is rate-limiting this key; try again in {} s",
                d.as_secs().max(1)
            ),
            KeyCheck::RateLimited { .. } => {
                f.write_str("the provider is rate-limiting this key; try again later")
            }
            KeyCheck::RegionBlocked(_) => {
                f.write_str("the provider does not serve the region this request came from")
            }
            KeyCheck::Forbidden(_) => f.write_str("the key is not allowed to use this service"),
            KeyCheck::Unavailable {
                reason: Unavailable::ServerError,
                ..
            } => f.write_str("the provider failed to answer (a server error); try again later"),
            KeyCheck::Unavailable { reason, .. } => {
                write!(f, "the provider could not be reached ({reason})")
            }
            KeyCheck::Unknown(d) => match d.status {
                Some(s) => write!(f, "the provider answered with an unexpected status {s}"),
                None => f.write_str("the provider gave an answer that could not be read"),
            },
        }
    }
}

/// What a provider told about a key it accepted. Every field is optional:
/// each provider tells a different part.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The HTTP status of the answer.
    pub status: Option<u16>,
    /// The ids of the models the key may use (models endpoints).
    pub models: Vec<String>,
    /// Balances by currency, as the provider wrote them (DeepSeek).
    pub balances: Vec<Balance>,
    /// The credit limit of the key, if it has one (OpenRouter).
    pub limit: Option<f64>,
    /// What is left of that limit (OpenRouter).
    pub limit_remaining: Option<f64>,
    /// What the key has spent (OpenRouter).
    pub usage: Option<f64>,
    /// Whether the key is on a free tier (OpenRouter).
    pub free_tier: Option<bool>,
}

impl KeyInfo {
    /// No more than the status.
    pub fn status(status: u16) -> Self {
        KeyInfo {
            status: Some(status),
            ..KeyInfo::default()
        }
    }
}

/// One balance of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Balance {
    /// The currency code, such as `USD`.
    pub currency: String,
    /// The amount as the provider wrote it (a decimal string).
    pub amount: String,
}

impl Balance {
    /// A balance.
    pub fn new(currency: impl Into<String>, amount: impl Into<String>) -> Self {
        Balance {
            currency: currency.into(),
            amount: amount.into(),
        }
    }
}

/// What a provider said when it did not simply accept a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Detail {
    /// The HTTP status, if there was an answer.
    pub status: Option<u16>,
    /// The provider's machine-readable code: its error `code`, `type`,
    /// `reason` or `status` (the most specific one found).
    pub code: Option<String>,
    /// The provider's message, at most [`MAX_MESSAGE`] characters, with
    /// any copy of the key replaced by `[key]`.
    pub message: Option<String>,
}

/// The longest provider message kept in a [`Detail`], in characters.
pub const MAX_MESSAGE: usize = 300;

impl Detail {
    /// A detail with only a status.
    pub fn status(status: u16) -> Self {
        Detail {
            status: Some(status),
            ..Detail::default()
        }
    }

    /// A detail with a status, a code and a message; the message is
    /// cleaned as for [`Detail::message`] but without a key to look for.
    pub fn new(status: Option<u16>, code: Option<String>, message: Option<String>) -> Self {
        Detail {
            status,
            code,
            message: message.map(|m| clean_message(&m, None)),
        }
    }
}

/// Cuts `message` to [`MAX_MESSAGE`] characters, drops control characters
/// and replaces `secret` (when given and not trivially short) by `[key]`.
pub(crate) fn clean_message(message: &str, secret: Option<&str>) -> String {
    let scrubbed;
    let message = match secret {
        Some(s) if s.len() >= 4 && message.contains(s) => {
            scrubbed = message.replace(s, "[key]");
            scrubbed.as_str()
        }
        _ => message,
    };
    let mut out: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if message.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// Why a provider could not be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unavailable {
    /// It answered with a server error (5xx, Anthropic's 529 "overloaded").
    ServerError,
    /// No answer came in time.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// No connection could be made (refused, reset, TLS failure).
    Connect,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unavailable::ServerError => "server error",
            Unavailable::Timeout => "timed out",
            Unavailable::Dns => "host name not found",
            Unavailable::Connect => "connection failed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_the_key_control_characters_and_length() {
        let key = "sk-secret-123456";
        let m = clean_message(
            &format!("Incorrect API key provided: {key}.\nBye"),
            Some(key),
        );
        assert_eq!(m, "Incorrect API key provided: [key]. Bye");
        let long = "x".repeat(MAX_MESSAGE + 10);
        assert_eq!(clean_message(&long, None).chars().count(), MAX_MESSAGE + 1);
    }

    #[test]
    fn outcomes_are_listed_in_order() {
        let all = [
            KeyCheck::Valid(KeyInfo::default()),
            KeyCheck::Invalid(Detail::default()),
            KeyCheck::OutOfCredit(Detail::default()),
            KeyCheck::RateLimited {
                retry_after: None,
                detail: Detail::default(),
            },
            KeyCheck::RegionBlocked(Detail::default()),
            KeyCheck::Forbidden(Detail::default()),
            KeyCheck::Unavailable {
                reason: Unavailable::Timeout,
                detail: Detail::default(),
            },
            KeyCheck::Unknown(Detail::default()),
        ];
        let names: Vec<_> = all.iter().map(KeyCheck::outcome).collect();
        assert_eq!(names, KeyCheck::OUTCOMES);
    }

    #[test]
    fn json_form_names_the_outcome() {
        let check = KeyCheck::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            detail: Detail::status(429),
        };
        let json = serde_json::to_value(&check).unwrap_or_default();
        assert_eq!(json["outcome"], "rate_limited");
        assert_eq!(json["retry_after"], 7.0);
        assert_eq!(json["detail"]["status"], 429);
    }
}
