//! The HTML of the settings page and the error pages, through maud, which
//! escapes every value it interpolates.

use byok_core::KeySummary;
use byok_core::display::ProviderInfo;
use maud::{DOCTYPE, Markup, PreEscaped, html};

const STYLE: &str = "
body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#1d232a;background:#f6f7f9}
h1{font-size:1.6rem}
.card{background:#fff;border:1px solid #d6dae0;border-radius:.5rem;padding:1rem 1.2rem;margin:1rem 0}
.card h2{font-size:1.15rem;margin:0 0 .4rem}
.meta{color:#4b5563;font-size:.92rem;margin:.2rem 0 .7rem}
.hint{font-family:ui-monospace,monospace;background:#eef1f4;padding:.1rem .35rem;border-radius:.25rem}
form{display:inline-flex;gap:.5rem;margin:.2rem .5rem .2rem 0}
input[type=password],select{padding:.4rem .5rem;border:1px solid #b8bec7;border-radius:.3rem;background:#fff}
input[type=password]{min-width:18rem}
button{padding:.4rem .9rem;border:0;border-radius:.3rem;background:#2563eb;color:#fff;cursor:pointer}
button.delete{background:#b91c1c}
.notice{padding:.6rem .9rem;border-radius:.4rem;background:#e7f6ec;border:1px solid #a6d8b5}
.warning{padding:.6rem .9rem;border-radius:.4rem;background:#fff4e5;border:1px solid #f0c27b}
.expired{color:#b91c1c}
a{color:#1d4ed8}
";

fn layout(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// The page of an error answer; for a missing key it names the providers
/// and links to the settings page.
pub(crate) fn error_page(
    title: &str,
    detail: &str,
    providers: &[ProviderInfo],
    settings_path: Option<&str>,
) -> String {
    layout(
        title,
        html! {
            h1 { (title) }
            @if providers.is_empty() {
                p { (detail) }
            } @else {
                p {
                    "This page needs an API key for "
                    @for (i, p) in providers.iter().enumerate() {
                        @if i > 0 { @if i + 1 == providers.len() { " or " } @else { ", " } }
                        strong { (p.name) }
                    }
                    "."
                }
            }
            @if let Some(path) = settings_path {
                @if providers.is_empty() {
                    p { a #settings-link href=(path) { "Back to your API keys" } }
                } @else {
                    p { a #settings-link href=(path) { "Add your API key in the settings" } }
                }
            }
        },
    )
}

/// One provider row of the settings page.
pub(crate) struct Row<'a> {
    pub(crate) info: &'a ProviderInfo,
    pub(crate) summary: Option<&'a KeySummary>,
}

/// What the settings page says above the list.
pub(crate) enum Notice<'a> {
    None,
    Saved(&'a str),
    Deleted(&'a str),
}

/// The settings page: every configured provider with its masked key, when
/// it was added and when it expires, and forms to add, replace and delete.
pub(crate) fn settings_page(
    base: &str,
    rows: &[Row<'_>],
    notice: Notice<'_>,
    plain_http_warning: bool,
) -> String {
    layout(
        "API keys",
        html! {
            h1 { "API keys" }
            p { "Your keys are stored encrypted and used only for your own requests. A saved key is never shown again; you see only its first and last characters." }
            @match notice {
                Notice::Saved(name) => p.notice role="status" { "Saved your " (name) " key." },
                Notice::Deleted(name) => p.notice role="status" { "Deleted your " (name) " key." },
                Notice::None => {},
            }
            @if plain_http_warning {
                p.warning role="alert" {
                    "This page is served over plain HTTP, so keys travel unencrypted. That is refused in production; use HTTPS."
                }
            }
            @for row in rows {
                section.card id={ "provider-" (row.info.id) } {
                    h2 { (row.info.name) }
                    @match row.summary {
                        Some(k) => {
                            p.meta {
                                "Key " span.hint.key-hint { (k.hint) }
                                " · added " (k.created.to_lowercase())
                                " · "
                                @if k.is_expired { span.expired { (k.expires) } } @else { (k.expires.to_lowercase()) }
                            }
                        },
                        None => p.meta.no-key { "No key saved." },
                    }
                    form method="post" action={ (base) "/" (row.info.id) } {
                        input type="password" name="api_key" autocomplete="off" required
                            aria-label={ (row.info.name) " API key" }
                            placeholder=(row.info.placeholder);
                        button type="submit" { @if row.summary.is_some() { "Replace" } @else { "Save" } }
                    }
                    @if row.summary.is_some() {
                        form method="post" action={ (base) "/" (row.info.id) "/delete" } {
                            button.delete type="submit" { "Delete" }
                        }
                    }
                    @if let Some(url) = row.info.docs_url {
                        p.meta { a href=(url) rel="noopener noreferrer" target="_blank" { "Get your " (row.info.name) " key" } }
                    }
                }
            }
            @if rows.len() > 1 {
                section.card #add-key {
                    h2 { "Add a key" }
                    form method="post" action=(base) {
                        select name="provider" aria-label="Provider" required {
                            @for row in rows {
                                option value=(row.info.id) { (row.info.name) }
                            }
                        }
                        input type="password" name="api_key" autocomplete="off" required
                            aria-label="API key" placeholder="Your API key";
                        button type="submit" { "Save" }
                    }
                }
            }
        },
    )
}
