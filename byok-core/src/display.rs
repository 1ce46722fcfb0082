//! Helpers for showing keys to people without showing the keys: masking,
//! fingerprints, ages, expiries and provider names (ported from the Python
//! library's `mask_key`, `get_key_fingerprint`, `format_key_age`,
//! `format_expiration` and `PROVIDER_INFO`).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// How many characters [`mask_key`] shows at each end.
pub const VISIBLE_CHARS: usize = 4;

/// Masks an API key for display: `sk-proj-abcdefghwxyz` → `sk-p...wxyz`.
///
/// Shows [`VISIBLE_CHARS`] characters at each end. Unlike the Python
/// library, which showed 8 characters of any key longer than 8, a key
/// shorter than 16 characters is fully masked, and always as `********`,
/// so that neither most of a short key nor its length is revealed.
///
/// ```
/// use byok_core::display::mask_key;
/// assert_eq!(mask_key("sk-abcdefghijklmnopqrstuvwxyz"), "sk-a...wxyz");
/// assert_eq!(mask_key("short-key"), "********");
/// ```
pub fn mask_key(key: &str) -> String {
    // Walks only the characters it needs: this runs on every set_key.
    if key.chars().nth(VISIBLE_CHARS * 4 - 1).is_none() {
        return "********".to_owned();
    }
    let head = key
        .char_indices()
        .nth(VISIBLE_CHARS)
        .map_or(key.len(), |(at, _)| at);
    let tail = key
        .char_indices()
        .nth_back(VISIBLE_CHARS - 1)
        .map_or(0, |(at, _)| at);
    let mut masked = String::with_capacity(head + 3 + (key.len() - tail));
    masked.push_str(&key[..head]);
    masked.push_str("...");
    masked.push_str(&key[tail..]);
    masked
}

/// The Python library's fingerprint (`get_key_fingerprint`), unkeyed: the
/// first 16 hex digits of SHA-256 of the key.
///
/// Anyone holding the key can compute it, so it identifies a key across
/// deployments; prefer [`Keyring::keyed_fingerprint`](crate::Keyring::keyed_fingerprint)
/// when that is not wanted.
///
/// ```
/// use byok_core::display::unkeyed_fingerprint;
/// assert_eq!(unkeyed_fingerprint("sk-test"), "f3abf2a6cc4f0098");
/// ```
pub fn unkeyed_fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

fn plural(n: i64, unit: &str) -> String {
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// How long ago a key was set, as the Python library says it: `Just now`,
/// `5 minutes ago`, `3 hours ago`, `2 days ago`, `1 month ago`.
///
/// ```
/// use byok_core::chrono::{Duration, Utc};
/// use byok_core::display::format_key_age;
/// let now = Utc::now();
/// assert_eq!(format_key_age(now - Duration::days(3), now), "3 days ago");
/// assert_eq!(format_key_age(now - Duration::seconds(30), now), "Just now");
/// ```
pub fn format_key_age(created_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let age = now - created_at;
    let (days, seconds) = (age.num_days(), age.num_seconds() - age.num_days() * 86_400);
    if days > 30 {
        format!("{} ago", plural(days / 30, "month"))
    } else if days > 0 {
        format!("{} ago", plural(days, "day"))
    } else if seconds > 3600 {
        format!("{} ago", plural(seconds / 3600, "hour"))
    } else if seconds > 60 {
        format!("{} ago", plural(seconds / 60, "minute"))
    } else {
        "Just now".to_owned()
    }
}

/// When a key expires, as the Python library says it: `Never`, `Expired`,
/// `Expires in 2 days`, `Expires in 5 hours`, `Expires in 10 minutes`.
///
/// ```
/// use byok_core::chrono::{Duration, Utc};
/// use byok_core::display::format_expiration;
/// let now = Utc::now();
/// assert_eq!(format_expiration(None, now), "Never");
/// assert_eq!(format_expiration(Some(now - Duration::seconds(1)), now), "Expired");
/// assert_eq!(format_expiration(Some(now + Duration::minutes(301)), now), "Expires in 5 hours");
/// ```
pub fn format_expiration(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(expires_at) = expires_at else {
        return "Never".to_owned();
    };
    if expires_at <= now {
        return "Expired".to_owned();
    }
    let remaining = expires_at - now;
    let (days, seconds) = (
        remaining.num_days(),
        remaining.num_seconds() - remaining.num_days() * 86_400,
    );
    if days > 0 {
        format!("Expires in {}", plural(days, "day"))
    } else if seconds > 3600 {
        format!("Expires in {}", plural(seconds / 3600, "hour"))
    } else {
        format!("Expires in {}", plural(seconds / 60, "minute"))
    }
}

/// What byok knows about a provider, for forms and lists.
///
/// Its JSON form names `id` `provider` and `name` `display_name`, as
/// [`KeySummary`](crate::KeySummary) does; byok-axum's JSON API answers
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderInfo {
    /// The provider id, such as `openai`.
    #[serde(rename = "provider")]
    pub id: String,
    /// The display name, such as `OpenAI`.
    #[serde(rename = "display_name")]
    pub name: String,
    /// The prefix its keys start with, if it has one.
    pub key_prefix: Option<&'static str>,
    /// Where users create keys.
    pub docs_url: Option<&'static str>,
    /// A placeholder for a key input.
    pub placeholder: &'static str,
}

struct Known {
    id: &'static str,
    name: &'static str,
    key_prefix: Option<&'static str>,
    docs_url: Option<&'static str>,
    placeholder: &'static str,
}

/// The providers the Python library knows.
const KNOWN: &[Known] = &[
    Known {
        id: "openai",
        name: "OpenAI",
        key_prefix: Some("sk-"),
        docs_url: Some("https://platform.openai.com/api-keys"),
        placeholder: "sk-...",
    },
    Known {
        id: "anthropic",
        name: "Anthropic",
        key_prefix: Some("sk-ant-"),
        docs_url: Some("https://console.anthropic.com/settings/keys"),
        placeholder: "sk-ant-...",
    },
    Known {
        id: "google",
        name: "Google Gemini",
        key_prefix: None,
        docs_url: Some("https://makersuite.google.com/app/apikey"),
        placeholder: "Your API key",
    },
    Known {
        id: "fireworks",
        name: "Fireworks AI",
        key_prefix: None,
        docs_url: Some("https://app.fireworks.ai/api-keys"),
        placeholder: "Your API key",
    },
    Known {
        id: "groq",
        name: "Groq",
        key_prefix: Some("gsk_"),
        docs_url: Some("https://console.groq.com/keys"),
        placeholder: "gsk_...",
    },
    Known {
        id: "xai",
        name: "xAI Grok",
        key_prefix: Some("xai-"),
        docs_url: Some("https://console.x.ai/"),
        placeholder: "xai-...",
    },
];

impl ProviderInfo {
    /// The information for `provider`; an unknown provider gets a name
    /// made from its id as the Python library makes it: `_` and `-` become
    /// spaces, then each word is title-cased (`google_ai` → `Google Ai`,
    /// `azure-openai` → `Azure Openai`; see [`format_provider_name`]).
    pub fn of(provider: &str) -> Self {
        match KNOWN.iter().find(|k| k.id == provider) {
            Some(k) => ProviderInfo {
                id: k.id.to_owned(),
                name: k.name.to_owned(),
                key_prefix: k.key_prefix,
                docs_url: k.docs_url,
                placeholder: k.placeholder,
            },
            None => ProviderInfo {
                id: provider.to_owned(),
                name: title_case(provider),
                key_prefix: None,
                docs_url: None,
                placeholder: "Your API key",
            },
        }
    }
}

/// Every provider byok knows, with display names, key prefixes, docs links
/// and input placeholders, in a stable order (for settings pages and
/// provider pickers).
///
/// ```
/// use byok_core::display::known_providers;
/// let openai = known_providers().find(|p| p.id == "openai").expect("known");
/// assert_eq!(openai.name, "OpenAI");
/// assert_eq!(openai.placeholder, "sk-...");
/// ```
pub fn known_providers() -> impl Iterator<Item = ProviderInfo> {
    KNOWN.iter().map(|k| ProviderInfo::of(k.id))
}

/// The display name of a provider: its name in the table of known
/// providers (`openai` → `OpenAI`), else its id with `_` and `-` turned
/// into spaces and each word title-cased, as the Python library's
/// `provider.replace('_', ' ').replace('-', ' ').title()` does.
///
/// A word starts after any character that has no case (a space, a digit,
/// punctuation, a CJK ideograph), as in Python. The first letter of a word
/// is upper-cased where Python title-cases it; the two differ only for a
/// few characters such as `ß` (`SS` here, `Ss` in Python).
///
/// ```
/// use byok_core::display::format_provider_name;
/// assert_eq!(format_provider_name("anthropic"), "Anthropic");
/// assert_eq!(format_provider_name("google_ai"), "Google Ai");
/// assert_eq!(format_provider_name("azure-openai"), "Azure Openai");
/// assert_eq!(format_provider_name("gpt4all"), "Gpt4All");
/// ```
pub fn format_provider_name(provider: &str) -> String {
    ProviderInfo::of(provider).name
}

/// Python's `str.title()` after `_` and `-` became spaces.
fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for c in s.chars() {
        let c = if matches!(c, '_' | '-') { ' ' } else { c };
        if at_word_start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        at_word_start = !(c.is_lowercase() || c.is_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn mask_counts_characters_not_bytes() {
        assert_eq!(mask_key("ключ-abcdefghijklmnop-конец"), "ключ...онец");
        assert_eq!(mask_key("🦀🦀🦀🦀é123456789🦀x€"), "🦀🦀🦀🦀...9🦀x€");
        assert_eq!(mask_key("ééééééééééééééé"), "********");
        assert_eq!(mask_key("éééééééééééééééé"), "éééé...éééé");
        assert_eq!(mask_key("0123456789abcde"), "********");
        assert_eq!(mask_key("0123456789abcdef"), "0123...cdef");
        assert_eq!(mask_key(""), "********");
    }

    #[test]
    fn provider_json_uses_the_names_of_key_summaries() {
        let json = serde_json::to_value(ProviderInfo::of("openai")).unwrap();
        assert_eq!(json["provider"], "openai");
        assert_eq!(json["display_name"], "OpenAI");
        assert_eq!(json["key_prefix"], "sk-");
        assert!(json.get("id").is_none() && json.get("name").is_none());
        let unknown = serde_json::to_value(ProviderInfo::of("my_llm")).unwrap();
        assert_eq!(unknown["docs_url"], serde_json::Value::Null);
    }

    #[test]
    fn fingerprint_matches_python() {
        // hashlib.sha256(b"sk-test").hexdigest()[:16]
        assert_eq!(unkeyed_fingerprint("sk-test"), "f3abf2a6cc4f0098");
        assert_eq!(unkeyed_fingerprint("").len(), 16);
    }

    #[test]
    fn ages_follow_python_thresholds() {
        let now = Utc::now();
        let cases = [
            (Duration::seconds(0), "Just now"),
            (Duration::seconds(60), "Just now"),
            (Duration::seconds(61), "1 minute ago"),
            (Duration::seconds(3600), "60 minutes ago"),
            (Duration::seconds(7201), "2 hours ago"),
            (Duration::days(1), "1 day ago"),
            (Duration::days(30), "30 days ago"),
            (Duration::days(31), "1 month ago"),
            (Duration::days(95), "3 months ago"),
            (Duration::seconds(-50), "Just now"),
        ];
        for (age, want) in cases {
            assert_eq!(format_key_age(now - age, now), want, "{age}");
        }
    }

    #[test]
    fn expirations_follow_python_thresholds() {
        let now = Utc::now();
        assert_eq!(format_expiration(Some(now), now), "Expired");
        let cases = [
            (Duration::seconds(30), "Expires in 0 minutes"),
            (Duration::minutes(59), "Expires in 59 minutes"),
            (Duration::hours(5), "Expires in 5 hours"),
            (Duration::days(1), "Expires in 1 day"),
            (Duration::days(2) + Duration::hours(3), "Expires in 2 days"),
        ];
        for (left, want) in cases {
            assert_eq!(format_expiration(Some(now + left), now), want, "{left}");
        }
    }

    #[test]
    fn provider_names() {
        assert_eq!(format_provider_name("openai"), "OpenAI");
        assert_eq!(format_provider_name("xai"), "xAI Grok");
        assert_eq!(format_provider_name("mistral ai"), "Mistral Ai");
    }

    #[test]
    fn unknown_provider_names_follow_python() {
        // provider.replace('_', ' ').replace('-', ' ').title()
        let cases = [
            ("google_ai", "Google Ai"),
            ("azure-openai", "Azure Openai"),
            ("my_custom_provider", "My Custom Provider"),
            ("api-service", "Api Service"),
            ("my-llm", "My Llm"),
            ("a__b--c", "A  B  C"),
            ("_lead", " Lead"),
            ("MISTRAL", "Mistral"),
            ("gpt4all", "Gpt4All"),
            ("o'neil.ai", "O'Neil.Ai"),
            ("日本a", "日本A"),
            ("élan_vital", "Élan Vital"),
        ];
        for (id, name) in cases {
            assert_eq!(format_provider_name(id), name, "{id:?}");
            assert_eq!(ProviderInfo::of(id).name, name, "{id:?}");
        }
        // Known providers keep their table names, separators and all.
        assert_eq!(format_provider_name("fireworks"), "Fireworks AI");
        assert_eq!(ProviderInfo::of("groq").key_prefix, Some("gsk_"));
        assert_eq!(ProviderInfo::of("custom").placeholder, "Your API key");
    }
}
