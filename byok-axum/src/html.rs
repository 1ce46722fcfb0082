//! The HTML of the settings page and the error pages, through maud, which
//! escapes every value it interpolates.

use std::time::Duration;

use byok_core::KeySummary;
use byok_core::chrono::{DateTime, Utc};
use byok_core::display::ProviderInfo;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::page::{Layout, Page, Texts, fill, kept_check_words};
use crate::web::encode_component;

pub(crate) const STYLE: &str = "
body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#1d232a;background:#f6f7f9}
h1{font-size:1.6rem}
.card{background:#fff;border:1px solid #d6dae0;border-radius:.5rem;padding:1rem 1.2rem;margin:1rem 0}
.card h2{font-size:1.15rem;margin:0 0 .4rem}
.meta{color:#4b5563;font-size:.92rem;margin:.2rem 0 .7rem}
.hint{font-family:ui-monospace,monospace;background:#eef1f4;padding:.1rem .35rem;border-radius:.25rem}
form{display:inline-flex;flex-wrap:wrap;gap:.5rem;margin:.2rem .5rem .2rem 0}
input[type=password],select{padding:.4rem .5rem;border:1px solid #b8bec7;border-radius:.3rem;background:#fff}
input[type=password]{min-width:18rem}
input[aria-invalid=true]{border-color:#b91c1c}
button{padding:.4rem .9rem;border:0;border-radius:.3rem;background:#2563eb;color:#fff;cursor:pointer}
button.delete{background:#b91c1c}
button.test{background:#4b5563}
.check-result{margin:.3rem 0;padding:.3rem .6rem;border-radius:.3rem;background:#fff4e5}
.check-valid{background:#e7f6ec}
.check-invalid{background:#fde8e8}
.notice{padding:.6rem .9rem;border-radius:.4rem;background:#e7f6ec;border:1px solid #a6d8b5}
.warning{padding:.6rem .9rem;border-radius:.4rem;background:#fff4e5;border:1px solid #f0c27b}
.field-error{color:#b91c1c;margin:.3rem 0}
.expired{color:#b91c1c}
a{color:#1d4ed8}
";

/// The texts and layout a page is made with.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) texts: &'a Texts,
    pub(crate) layout: Option<&'a dyn Layout>,
}

impl View<'_> {
    fn document(&self, title: &str, body: Markup) -> String {
        let body = body.into_string();
        let page = Page {
            lang: &self.texts.lang,
            title,
            style: STYLE,
            body: &body,
        };
        match self.layout {
            Some(layout) => layout.render(&page),
            None => default_layout(&page),
        }
    }
}

fn default_layout(page: &Page<'_>) -> String {
    html! {
        (DOCTYPE)
        html lang=(page.lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (page.title) }
                style { (PreEscaped(page.style)) }
            }
            body { (PreEscaped(page.body)) }
        }
    }
    .into_string()
}

/// The page of an error answer made without a `ByokWeb` at hand: its
/// title and detail, and a link back to the settings if there is one.
pub(crate) fn error_page(
    title: &str,
    detail: &str,
    providers: &[ProviderInfo],
    settings_path: Option<&str>,
) -> String {
    let texts = Texts::default();
    let view = View {
        texts: &texts,
        layout: None,
    };
    if !providers.is_empty()
        && let Some(path) = settings_path
    {
        return key_required_page(view, providers, path);
    }
    generic_page(view, title, detail, settings_path, None)
}

/// An error page: the problem's title and detail, a link back to the
/// settings page and, for a request without a user, to the sign-in page.
pub(crate) fn generic_page(
    view: View<'_>,
    title: &str,
    detail: &str,
    back: Option<&str>,
    sign_in: Option<&str>,
) -> String {
    view.document(
        title,
        html! {
            h1 { (title) }
            p { (detail) }
            @if let Some(url) = sign_in {
                p { a #sign-in-link href=(url) { (view.texts.sign_in) } }
            }
            @if let Some(path) = back {
                p { a #settings-link href=(path) { (view.texts.title) } }
            }
        },
    )
}

/// The page of a request without a user.
pub(crate) fn signed_out_page(view: View<'_>, sign_in: Option<&str>) -> String {
    generic_page(
        view,
        &view.texts.signed_out_title,
        &view.texts.signed_out,
        None,
        sign_in,
    )
}

/// The guard's page: which providers the page needs, and a link to the
/// settings (which links back).
pub(crate) fn key_required_page(
    view: View<'_>,
    providers: &[ProviderInfo],
    settings_link: &str,
) -> String {
    let t = view.texts;
    let mut names = String::new();
    for (i, p) in providers.iter().enumerate() {
        if i > 0 {
            names.push_str(if i + 1 == providers.len() {
                &t.or
            } else {
                ", "
            });
        }
        names.push_str("<strong>");
        names.push_str(&escape(&p.name));
        names.push_str("</strong>");
    }
    // The template is the application's; the names are escaped above.
    let template = escape(&t.key_required);
    let sentence = fill(&template, "providers", &names);
    view.document(
        &t.key_required_title,
        html! {
            h1 { (t.key_required_title) }
            p { (PreEscaped(sentence)) }
            p { a #settings-link href=(settings_link) { (t.add_in_settings) } }
        },
    )
}

/// `s`, escaped for HTML text.
fn escape(s: &str) -> String {
    html! { (s) }.into_string()
}

/// One provider row of the settings page.
pub(crate) struct Row<'a> {
    pub(crate) info: &'a ProviderInfo,
    pub(crate) summary: Option<&'a KeySummary>,
    /// Whether the page offers a "Test" of this provider's keys.
    pub(crate) testable: bool,
}

/// What the settings page says above the list.
pub(crate) enum Notice<'a> {
    None,
    Saved(&'a str),
    Deleted(&'a str),
    /// Saved after a check that did not confirm the key (the provider's
    /// name, the check's words).
    SavedUnconfirmed(&'a str, String),
}

/// The result of a "Test", shown in its provider's row.
pub(crate) struct CheckShown<'a> {
    pub(crate) provider: &'a str,
    /// Whether the key was typed into the provider picker.
    pub(crate) in_picker: bool,
    /// The `outcome` of the check (`valid`, `invalid`, …), or `error`
    /// when no check could be made.
    pub(crate) outcome: &'static str,
    pub(crate) message: String,
}

/// A form input that was refused, shown next to its form.
pub(crate) struct FormError<'a> {
    /// The provider row whose form it was; `None` for the picker.
    pub(crate) provider: Option<&'a str>,
    pub(crate) message: &'a str,
}

/// Everything the settings page shows.
pub(crate) struct SettingsPage<'a> {
    pub(crate) base: &'a str,
    pub(crate) rows: Vec<Row<'a>>,
    pub(crate) notice: Notice<'a>,
    pub(crate) plain_http_warning: bool,
    pub(crate) next: Option<&'a str>,
    pub(crate) error: Option<FormError<'a>>,
    pub(crate) check: Option<CheckShown<'a>>,
    pub(crate) lifetimes: &'a [Option<Duration>],
    pub(crate) default_lifetime: Option<Duration>,
    pub(crate) now: DateTime<Utc>,
}

fn lifetime_value(l: Option<Duration>) -> String {
    l.map_or_else(|| "never".to_owned(), |d| d.as_secs().to_string())
}

/// The settings page: every configured provider with its masked key, when
/// it was added and when it expires, and forms to add, replace and delete.
pub(crate) fn settings_page(view: View<'_>, page: &SettingsPage<'_>) -> String {
    let t = view.texts;
    let base = page.base;
    let since = |at: DateTime<Utc>| {
        let d = (page.now - at).to_std().unwrap_or_default();
        fill(&t.added, "time", &(t.duration)(d))
    };
    let until = |at: Option<DateTime<Utc>>| match at {
        None => t.never_expires.to_string(),
        Some(at) => match (at - page.now).to_std() {
            Ok(d) if !d.is_zero() => fill(&t.expires_in, "time", &(t.duration)(d)),
            _ => t.expired.to_string(),
        },
    };
    let last_check = |c: &byok_core::CheckRecord, provider: &str| {
        let d = (page.now - c.checked_at()).to_std().unwrap_or_default();
        let words = kept_check_words(t, provider, c);
        fill(
            &fill(&t.checked, "time", &(t.duration)(d)),
            "result",
            &words,
        )
    };
    let error_for = |provider: Option<&str>| {
        page.error
            .as_ref()
            .filter(|e| e.provider == provider)
            .map(|e| e.message)
    };
    let hidden = html! {
        @if let Some(next) = page.next { input type="hidden" name="next" value=(next); }
    };
    let lifetime = |id: &str| {
        html! {
            @if !page.lifetimes.is_empty() {
                select name="ttl" aria-label=(t.lifetime_label) id={ "ttl-" (id) } {
                    @for l in page.lifetimes {
                        option value=(lifetime_value(*l)) selected[*l == page.default_lifetime] {
                            @match l { Some(d) => ((t.duration)(*d)), None => (t.lifetime_never) }
                        }
                    }
                }
            }
        }
    };
    view.document(
        &t.title,
        html! {
            h1 { (t.title) }
            p { (t.intro) }
            @match page.notice {
                Notice::Saved(name) => p.notice role="status" { (fill(&t.saved, "provider", name)) },
                Notice::Deleted(name) => p.notice role="status" { (fill(&t.deleted, "provider", name)) },
                Notice::SavedUnconfirmed(name, ref words) => p.warning.notice role="status" {
                    (fill(&t.saved_unconfirmed, "provider", name)) " " (words)
                },
                Notice::None => {},
            }
            @if let Some(next) = page.next {
                p { a #back-link href=(next) { (t.back) } }
            }
            @if page.plain_http_warning {
                p.warning role="alert" { (t.plain_http) }
            }
            @for row in &page.rows {
                @let id = row.info.id.as_str();
                @let action = format!("{base}/{}", encode_component(id));
                @let error = error_for(Some(id));
                @let check = page.check.as_ref().filter(|c| c.provider == id && !c.in_picker);
                @let test_action = format!("{action}/check");
                section.card id={ "provider-" (id) } {
                    h2 { (row.info.name) }
                    @match row.summary {
                        Some(k) => {
                            p.meta {
                                (t.key) " " span.hint.key-hint { (k.hint) }
                                " · " (since(k.created_at)) " · "
                                @if k.is_expired { span.expired.key-expiry { (t.expired) } }
                                @else { span.key-expiry { (until(k.expires_at)) } }
                            }
                        },
                        None => p.meta.no-key { (t.no_key) },
                    }
                    @if let Some(k) = row.summary {
                        @match &k.last_check {
                            Some(c) => p class={ "meta last-check last-check-" (c.outcome()) } id={ "last-check-" (id) } {
                                (last_check(c, &row.info.name))
                            },
                            // "Not checked yet" only where a Test is offered.
                            None if row.testable => p.meta.last-check.not-checked id={ "last-check-" (id) } { (t.not_checked) },
                            None => {},
                        }
                    }
                    form method="post" action=(action) {
                        (hidden)
                        input type="password" name="api_key" autocomplete="new-password" required
                            aria-label=(fill(&t.key_label, "provider", &row.info.name))
                            aria-invalid=[error.map(|_| "true")]
                            aria-describedby=[error.map(|_| format!("error-{id}"))]
                            placeholder=(row.info.placeholder);
                        (lifetime(id))
                        button type="submit" { @if row.summary.is_some() { (t.replace) } @else { (t.save) } }
                        @if row.testable {
                            button.test.test-typed type="submit" formaction=(test_action)
                                title=(t.test_typed_title) { (t.test) }
                        }
                    }
                    @if let Some(message) = error {
                        p.field-error id={ "error-" (id) } role="alert" { (message) }
                    }
                    @if row.testable && row.summary.is_some() {
                        form method="post" action=(test_action) {
                            (hidden)
                            button.test.test-saved type="submit" title=(t.test_saved_title) { (t.test_saved) }
                        }
                    }
                    @if row.summary.is_some() {
                        form method="post" action={ (action) "/delete" } {
                            (hidden)
                            button.delete type="submit" { (t.delete) }
                        }
                    }
                    @if let Some(check) = check {
                        p class={ "check-result check-" (check.outcome) } id={ "check-" (id) } role="status" { (check.message) }
                    }
                    @if let Some(url) = row.info.docs_url {
                        p.meta { a href=(url) rel="noopener noreferrer" target="_blank" { (fill(&t.get_key, "provider", &row.info.name)) } }
                    }
                }
            }
            @if page.rows.len() > 1 {
                @let error = error_for(None);
                section.card #add-key {
                    h2 { (t.add_key) }
                    form method="post" action=(base) {
                        (hidden)
                        select name="provider" aria-label=(t.provider_label) required {
                            @for row in &page.rows {
                                option value=(row.info.id) { (row.info.name) }
                            }
                        }
                        input type="password" name="api_key" autocomplete="new-password" required
                            aria-label=(t.key_placeholder) placeholder=(t.key_placeholder)
                            aria-invalid=[error.map(|_| "true")]
                            aria-describedby=[error.map(|_| "error-add-key")];
                        (lifetime("add-key"))
                        button type="submit" { (t.save) }
                        @if page.rows.iter().any(|r| r.testable) {
                            button.test.test-typed type="submit" name="test" value="1"
                                title=(t.test_typed_title) { (t.test) }
                        }
                    }
                    @if let Some(message) = error {
                        p.field-error #error-add-key role="alert" { (message) }
                    }
                    @if let Some(check) = page.check.as_ref().filter(|c| c.in_picker) {
                        p #check-add-key class={ "check-result check-" (check.outcome) } role="status" { (check.message) }
                    }
                }
            }
        },
    )
}
