//! What an application can change about byok-axum's pages: the words
//! ([`Texts`]) and the layout around them ([`Layout`]).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Every word byok-axum's HTML pages show, so that an application in
/// another language (or with another tone) can replace them.
///
/// `{provider}`, `{providers}`, `{time}`, `{seconds}`, `{result}` and `{hint}` in a text are
/// replaced by the value they name. Change what you need and keep the rest:
///
/// ```
/// use byok_axum::Texts;
///
/// let texts = Texts {
///     lang: "de".into(),
///     title: "API-Schlüssel".into(),
///     save: "Speichern".into(),
///     ..Texts::default()
/// };
/// # let _ = texts;
/// ```
///
/// The JSON API and the problem documents stay in English: they are read
/// by programs.
#[derive(Debug, Clone)]
pub struct Texts {
    /// The `lang` attribute of the pages.
    pub lang: Cow<'static, str>,
    /// The title and heading of the settings page.
    pub title: Cow<'static, str>,
    /// The paragraph under the heading.
    pub intro: Cow<'static, str>,
    /// The notice after a key was saved (`{provider}`).
    pub saved: Cow<'static, str>,
    /// The notice after a key was deleted (`{provider}`).
    pub deleted: Cow<'static, str>,
    /// The warning on a page served over plain HTTP from another machine.
    pub plain_http: Cow<'static, str>,
    /// What a provider without a key shows.
    pub no_key: Cow<'static, str>,
    /// Before the masked key.
    pub key: Cow<'static, str>,
    /// How old the key is (`{time}`).
    pub added: Cow<'static, str>,
    /// When the key expires (`{time}`).
    pub expires_in: Cow<'static, str>,
    /// A key without an expiry.
    pub never_expires: Cow<'static, str>,
    /// A key that has expired.
    pub expired: Cow<'static, str>,
    /// The label of a key input (`{provider}`).
    pub key_label: Cow<'static, str>,
    /// The button that saves a first key.
    pub save: Cow<'static, str>,
    /// The button that replaces a key.
    pub replace: Cow<'static, str>,
    /// The button that deletes a key.
    pub delete: Cow<'static, str>,
    /// The link to where keys are made (`{provider}`).
    pub get_key: Cow<'static, str>,
    /// The heading of the provider picker.
    pub add_key: Cow<'static, str>,
    /// The label of the provider picker.
    pub provider_label: Cow<'static, str>,
    /// The placeholder of the picker's key input.
    pub key_placeholder: Cow<'static, str>,
    /// The label of the lifetime choice.
    pub lifetime_label: Cow<'static, str>,
    /// The lifetime choice of a key that does not expire.
    pub lifetime_never: Cow<'static, str>,
    /// The link back to the page that sent the user to the settings.
    pub back: Cow<'static, str>,
    /// An empty or blank key.
    pub error_key_empty: Cow<'static, str>,
    /// A key that is too long.
    pub error_key_too_long: Cow<'static, str>,
    /// A key with a control character inside.
    pub error_key_control: Cow<'static, str>,
    /// A provider that is not offered.
    pub error_provider: Cow<'static, str>,
    /// A lifetime that is not offered.
    pub error_lifetime: Cow<'static, str>,
    /// The button that tests a key with its provider, without saving it
    /// (with the `checks` feature and a checker).
    pub test: Cow<'static, str>,
    /// The button that tests the saved key.
    pub test_saved: Cow<'static, str>,
    /// The tooltip of the "Test" button beside a key input.
    pub test_typed_title: Cow<'static, str>,
    /// The tooltip of the "Test" button of a saved key.
    pub test_saved_title: Cow<'static, str>,
    /// A test: the provider accepted the key (`{provider}`).
    pub check_valid: Cow<'static, str>,
    /// A test: the provider does not accept the key (`{provider}`).
    pub check_invalid: Cow<'static, str>,
    /// A test: the key is valid but the account has no credit or quota.
    pub check_out_of_credit: Cow<'static, str>,
    /// A test: rate-limited, with the wait the provider asked for
    /// (`{seconds}`).
    pub check_rate_limited: Cow<'static, str>,
    /// A test: rate-limited, without a wait given.
    pub check_rate_limited_later: Cow<'static, str>,
    /// A test: the provider does not serve this region (`{provider}`).
    pub check_region_blocked: Cow<'static, str>,
    /// A test: the key may not be used for this (`{provider}`).
    pub check_forbidden: Cow<'static, str>,
    /// A test: the provider did not answer, or failed (5xx, timeout, DNS).
    pub check_unavailable: Cow<'static, str>,
    /// A test: an answer that says nothing clear (`{provider}`).
    pub check_unknown: Cow<'static, str>,
    /// A test that could not be made at all.
    pub check_failed: Cow<'static, str>,
    /// The last check kept with a saved key: when (`{time}`) and what it
    /// found (`{result}`, the words of the test's result above).
    pub checked: Cow<'static, str>,
    /// A saved key that was never checked, or was replaced since (shown
    /// where the page offers a "Test").
    pub not_checked: Cow<'static, str>,
    /// With check before saving: a key the provider refused, not saved
    /// (`{provider}`).
    pub error_key_refused: Cow<'static, str>,
    /// With check before saving: saved, but the check did not confirm the
    /// key (`{provider}`); the check's words follow.
    pub saved_unconfirmed: Cow<'static, str>,
    /// The title of the guard's page.
    pub key_required_title: Cow<'static, str>,
    /// The guard's explanation (`{providers}`).
    pub key_required: Cow<'static, str>,
    /// Joins the last two providers of `{providers}`.
    pub or: Cow<'static, str>,
    /// The guard's link to the settings page.
    pub add_in_settings: Cow<'static, str>,
    /// The title of the page for a request without a user.
    pub signed_out_title: Cow<'static, str>,
    /// Its explanation.
    pub signed_out: Cow<'static, str>,
    /// The link to the application's sign-in page.
    pub sign_in: Cow<'static, str>,
    /// A duration, in the words of the page's language, rounded to the
    /// unit a reader thinks in. The default says "24 hours" for a key
    /// saved a second ago with a one-day lifetime, not "23 hours".
    pub duration: fn(Duration) -> String,
}

impl Default for Texts {
    fn default() -> Self {
        Texts {
            lang: "en".into(),
            title: "API keys".into(),
            intro: "Your keys are stored encrypted and used only for your own requests. A saved \
                    key is never shown again; you see only its first and last characters."
                .into(),
            saved: "Saved your {provider} key.".into(),
            deleted: "Deleted your {provider} key.".into(),
            plain_http: "This page is served over plain HTTP, so keys travel unencrypted. That \
                         is refused in production; use HTTPS."
                .into(),
            no_key: "No key saved.".into(),
            key: "Key".into(),
            added: "added {time} ago".into(),
            expires_in: "expires in {time}".into(),
            never_expires: "never expires".into(),
            expired: "expired".into(),
            key_label: "{provider} API key".into(),
            save: "Save".into(),
            replace: "Replace".into(),
            delete: "Delete".into(),
            get_key: "Get your {provider} key".into(),
            add_key: "Add a key".into(),
            provider_label: "Provider".into(),
            key_placeholder: "Your API key".into(),
            lifetime_label: "Keep for".into(),
            lifetime_never: "until deleted".into(),
            back: "Back to where you were".into(),
            error_key_empty: "Enter your key.".into(),
            error_key_too_long: "That is longer than any API key.".into(),
            error_key_control: "The key contains a character that no key has, such as a line \
                                break inside it."
                .into(),
            error_provider: "Choose one of the providers listed.".into(),
            error_lifetime: "Choose one of the lifetimes listed.".into(),
            test: "Test".into(),
            test_saved: "Test saved key".into(),
            test_typed_title: "Ask the provider whether this key works, without saving it".into(),
            test_saved_title: "Ask the provider whether the saved key works".into(),
            check_valid: "{provider} accepted this key.".into(),
            check_invalid: "{provider} does not accept this key.".into(),
            check_out_of_credit: "This key is valid but the account has no credit.".into(),
            check_rate_limited: "The provider is rate-limiting this key; try again in {seconds} \
                                 seconds."
                .into(),
            check_rate_limited_later: "The provider is rate-limiting this key; try again later."
                .into(),
            check_region_blocked: "{provider} does not serve the region this app runs in.".into(),
            check_forbidden: "{provider} knows this key but does not allow it to be used here."
                .into(),
            check_unavailable: "The provider could not be reached; try again later.".into(),
            check_unknown: "{provider} gave an answer that does not say whether this key works."
                .into(),
            check_failed: "This key could not be checked.".into(),
            checked: "Checked {time} ago: {result}".into(),
            not_checked: "Not checked yet.".into(),
            error_key_refused: "{provider} does not accept this key, so it was not saved.".into(),
            saved_unconfirmed: "Saved your {provider} key without confirming that it works:".into(),
            key_required_title: "API key required".into(),
            key_required: "This page needs an API key for {providers}.".into(),
            or: " or ".into(),
            add_in_settings: "Add your API key in the settings".into(),
            signed_out_title: "Not signed in".into(),
            signed_out: "Sign in to manage API keys.".into(),
            sign_in: "Sign in".into(),
            duration: english_duration,
        }
    }
}

/// A duration in English, rounded to the nearest unit: "less than a
/// minute", "5 minutes", "24 hours" (up to two days), "30 days"; a whole
/// number of days (a lifetime to choose) is said in days: "1 day".
pub fn english_duration(d: Duration) -> String {
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    let secs = d.as_secs_f64();
    let minutes = (secs / 60.0).round() as u64;
    let hours = (secs / 3600.0).round() as u64;
    if d.subsec_nanos() == 0 && d.as_secs() > 0 && d.as_secs().is_multiple_of(86_400) {
        plural(d.as_secs() / 86_400, "day")
    } else if minutes < 1 {
        "less than a minute".to_owned()
    } else if minutes < 60 {
        plural(minutes, "minute")
    } else if hours < 48 {
        plural(hours, "hour")
    } else {
        plural((secs / 86_400.0).round() as u64, "day")
    }
}

/// The words of a check's result: `outcome` as in `KeyCheck::outcome`
/// (anything else is a check that could not be made), `retry_seconds` the
/// wait of a rate limit.
pub(crate) fn check_words(
    t: &Texts,
    provider: &str,
    outcome: &str,
    retry_seconds: Option<u64>,
) -> String {
    let text = match outcome {
        "valid" => &t.check_valid,
        "invalid" => &t.check_invalid,
        "out_of_credit" => &t.check_out_of_credit,
        "rate_limited" => match retry_seconds {
            Some(s) => {
                return fill(
                    &fill(&t.check_rate_limited, "seconds", &s.to_string()),
                    "provider",
                    provider,
                );
            }
            None => &t.check_rate_limited_later,
        },
        "region_blocked" => &t.check_region_blocked,
        "forbidden" => &t.check_forbidden,
        "unavailable" => &t.check_unavailable,
        "unknown" => &t.check_unknown,
        _ => &t.check_failed,
    };
    fill(text, "provider", provider)
}

/// The words of a check kept with a key ([`byok_core::CheckRecord`]):
/// the page's own words for an outcome it knows, else the sentence kept
/// with the record (from a newer version, say).
pub(crate) fn kept_check_words(
    t: &Texts,
    provider: &str,
    check: &byok_core::CheckRecord,
) -> String {
    match check.outcome() {
        "valid" | "invalid" | "out_of_credit" | "rate_limited" | "region_blocked" | "forbidden"
        | "unavailable" | "unknown" => {
            // The wait of a rate limit is long past: "try again later".
            check_words(t, provider, check.outcome(), None)
        }
        _ => check.summary().to_owned(),
    }
}

/// Replaces `{name}` in `text` with `value`.
pub(crate) fn fill(text: &str, name: &str, value: &str) -> String {
    text.replace(&format!("{{{name}}}"), value)
}

/// What byok-axum hands a [`Layout`]: one of its pages, ready to be put
/// into the application's own.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Page<'a> {
    /// The language of the page's texts ([`Texts::lang`]).
    pub lang: &'a str,
    /// The title, for the `<title>` element (plain text, not escaped).
    pub title: &'a str,
    /// The CSS of byok-axum's own elements, for a `<style>` element.
    pub style: &'a str,
    /// The page's content: HTML, with every value in it escaped.
    pub body: &'a str,
}

/// Wraps byok-axum's pages in the application's layout.
///
/// A closure `Fn(&Page<'_>) -> String` is a `Layout`. The page's
/// `Content-Security-Policy` allows inline styles and nothing else
/// from other places (no scripts, no external style sheets or images)
/// unless [`ByokWebBuilder::content_security_policy`](crate::ByokWebBuilder::content_security_policy)
/// says otherwise. Escape whatever you interpolate yourself.
///
/// ```
/// use byok_axum::Page;
///
/// let layout = |page: &Page<'_>| {
///     format!(
///         "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title>\
///          <style>{}</style></head><body><nav>My app</nav><main>{}</main></body></html>",
///         page.lang,
///         page.title.replace('&', "&amp;").replace('<', "&lt;"),
///         page.style,
///         page.body,
///     )
/// };
/// # let _: &dyn byok_axum::Layout = &layout;
/// ```
pub trait Layout: Send + Sync + 'static {
    /// The whole HTML document of `page`.
    fn render(&self, page: &Page<'_>) -> String;
}

impl<F> Layout for F
where
    F: Fn(&Page<'_>) -> String + Send + Sync + 'static,
{
    fn render(&self, page: &Page<'_>) -> String {
        self(page)
    }
}

impl fmt::Debug for dyn Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Layout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_the_way_people_read_them() {
        let h = 3600;
        for (secs, words) in [
            (0, "less than a minute"),
            (29, "less than a minute"),
            (31, "1 minute"),
            (59 * 60 + 40, "1 hour"),
            (24 * h - 1, "24 hours"),
            (23 * h + 31 * 60, "24 hours"),
            (47 * h, "47 hours"),
            (30 * 24 * h - 5, "30 days"),
            (24 * h, "1 day"),
            (30 * 24 * h, "30 days"),
        ] {
            assert_eq!(english_duration(Duration::from_secs(secs)), words, "{secs}");
        }
    }
}
