//! Keeping store passwords and API keys out of everything the command
//! prints: its own messages, clap's, and those of the libraries below.

use std::ffi::OsString;

/// Query parameters whose value is a secret (`?password=…`,
/// `?sslpassword=…`).
const SECRET_PARAMS: [&str; 10] = [
    "password",
    "pass",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "auth",
    "access_token",
    "api_key",
];

/// What an API key given as an argument is shown as.
pub(crate) const KEY_NOT_SHOWN: &str = "<a value that looks like an API key, not shown>";

fn secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// The URL with any password (in the user info or a `password=` query
/// parameter) replaced by `***`, fit for printing.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let mut changed = false;
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
                changed = true;
            }
            if u.query_pairs().any(|(k, _)| secret_param(&k)) {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if secret_param(&k) {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
                changed = true;
            }
            if changed {
                u.to_string().replace("%2A%2A%2A", "***")
            } else {
                url.to_owned()
            }
        }
        // A Redis Cluster list or a plain path: redact each part.
        Err(_) if url.contains(',') => url.split(',').map(redact).collect::<Vec<_>>().join(","),
        Err(_) if url.contains('@') || url.contains('?') => {
            "<a URL that could not be parsed>".to_owned()
        }
        Err(_) => url.to_owned(),
    }
}

/// The passwords in a URL (or a comma-separated list), raw and decoded, so
/// that they can be scrubbed from any message.
pub(crate) fn passwords(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |raw: &str| {
        if raw.is_empty() {
            return;
        }
        out.push(raw.to_owned());
        let decoded = url::form_urlencoded::parse(format!("x={raw}").as_bytes())
            .next()
            .map(|(_, d)| d.into_owned());
        if let Some(d) = decoded
            && d != raw
        {
            out.push(d);
        }
    };
    for part in url.split(',') {
        if let Ok(u) = url::Url::parse(part.trim()) {
            if let Some(p) = u.password() {
                push(p);
            }
            let query = u.query().unwrap_or_default();
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=')
                    && secret_param(k)
                {
                    push(v);
                }
            }
        }
    }
    out
}

/// Whether `word` looks like an API key: a known key prefix, or a long
/// token of letters and digits. Provider names and flags never do.
pub(crate) fn looks_like_key(word: &str) -> bool {
    const PREFIXES: [&str; 16] = [
        "sk-",
        "sk_",
        "pk-",
        "rk_",
        "xai-",
        "gsk_",
        "hf_",
        "r8_",
        "pplx-",
        "AIza",
        "ghp_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "AKIA",
        "ya29.",
    ];
    let token = word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !token || word.len() < 12 {
        return false;
    }
    if PREFIXES.iter().any(|p| word.starts_with(p)) {
        return true;
    }
    let digits = word.bytes().filter(u8::is_ascii_digit).count();
    let letters = word.bytes().filter(u8::is_ascii_alphabetic).count();
    word.len() >= 32 && digits >= 4 && letters >= 4
}

/// Removes what must never be printed from messages: every password of a
/// URL named on the command line or in `BYOK_STORE`, and any URL with a
/// password that a message quotes.
///
/// It holds the very secrets it removes, so its `Debug` shows only how
/// many it holds.
#[derive(Default)]
pub(crate) struct Scrubber {
    /// Passwords, raw and decoded, longest first.
    passwords: Vec<String>,
    /// Arguments that look like API keys.
    keys: Vec<String>,
}

impl Scrubber {
    /// The scrubber of an invocation: its arguments and the environment.
    pub(crate) fn new(args: &[OsString]) -> Scrubber {
        let mut words: Vec<String> = args
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        if let Some(store) = std::env::var_os("BYOK_STORE") {
            words.push(store.to_string_lossy().into_owned());
        }
        let mut passwords = Vec::new();
        let mut keys = Vec::new();
        for word in &words {
            // `--store=URL` as well as `--store URL`.
            let value = match word.split_once('=') {
                Some((flag, v)) if flag.starts_with("--") => v,
                _ => word.as_str(),
            };
            passwords.extend(passwords_in(value));
            if looks_like_key(value) {
                keys.push(value.to_owned());
            }
        }
        passwords.sort();
        passwords.dedup();
        // Longest first, so that a password inside another is not
        // replaced first, leaving the rest of the longer one.
        passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Scrubber { passwords, keys }
    }

    /// `text` without passwords, and without any argument that looks like
    /// an API key.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = scrub_urls(text);
        for key in &self.keys {
            out = out.replace(key.as_str(), KEY_NOT_SHOWN);
        }
        for p in &self.passwords {
            out = out.replace(p.as_str(), "***");
        }
        out
    }
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("passwords", &self.passwords.len())
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The passwords of a word that may be a URL, or hold one.
fn passwords_in(word: &str) -> Vec<String> {
    if word.contains(':') {
        passwords(word)
            .into_iter()
            // Replacing one- or two-letter passwords would garble every
            // message; URLs that hold them are redacted whole instead.
            .filter(|p| p.len() >= 3)
            .collect()
    } else {
        Vec::new()
    }
}

/// `text` with every URL-shaped word that holds a password redacted.
fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The word around `://`: back to a space or quote, on to one.
        let stop = |c: char| c.is_whitespace() || "'\"`<>()[]".contains(c);
        // Past the stop character, whose length in bytes varies: a
        // no-break space is whitespace too.
        let start = rest[..at]
            .char_indices()
            .rfind(|&(_, c)| stop(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = rest[at..].find(stop).map_or(rest.len(), |i| at + i);
        let word = &rest[start..end];
        // A trailing `;` or `,` of the sentence is not part of the URL.
        let trimmed = word.trim_end_matches([';', ',', '.', ':']);
        out.push_str(&rest[..start]);
        out.push_str(&redact(trimmed));
        out.push_str(&word[trimmed.len()..]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_printed_without_passwords() {
        assert_eq!(
            redact("postgres://app:hunter2@db:5432/keys"),
            "postgres://app:***@db:5432/keys"
        );
        assert_eq!(redact("sqlite://./byok.db"), "sqlite://./byok.db");
        let cluster = redact("redis://:hunter2@h1:7000,redis://:hunter2@h2:7001");
        assert!(!cluster.contains("hunter2"), "{cluster}");
        assert!(!redact("postgres://app:hunter2@[::1/x").contains("hunter2"));
        assert_eq!(
            redact("postgres://app@db/keys?sslmode=require&password=hunter2"),
            "postgres://app@db/keys?sslmode=require&password=***"
        );
    }

    #[test]
    fn passwords_are_found_raw_and_decoded() {
        let found = passwords("mysql://app:p%40ss@h/db,redis://:other@h2");
        assert!(found.contains(&"p%40ss".to_owned()), "{found:?}");
        assert!(found.contains(&"p@ss".to_owned()), "{found:?}");
        assert!(found.contains(&"other".to_owned()), "{found:?}");
        assert!(passwords("sqlite://./byok.db").is_empty());
        assert_eq!(
            passwords("postgres://h/db?password=s%21cret"),
            ["s%21cret", "s!cret"]
        );
    }

    #[test]
    fn messages_lose_passwords_wherever_the_url_is() {
        let args: Vec<OsString> = ["byok", "list", "--to=postgres://u:SECRETPW@h/db"]
            .map(OsString::from)
            .to_vec();
        let s = Scrubber::new(&args);
        let text = s.scrub("error: unexpected argument 'postgres://u:SECRETPW@h/db' found");
        assert_eq!(
            text,
            "error: unexpected argument 'postgres://u:***@h/db' found"
        );
        // A URL the scrubber was never told of is redacted too.
        let other = s.scrub("at mysql://root:hunter2@db/x; check the store");
        assert_eq!(other, "at mysql://root:***@db/x; check the store");
    }

    #[test]
    fn a_url_after_a_wide_space_is_scrubbed_without_a_panic() {
        // U+00A0 and U+3000 are whitespace of two and three bytes.
        for space in ['\u{a0}', '\u{3000}', '\u{2028}'] {
            let text = format!("bad store{space}postgres://u:SECRETPW@h/db{space}end");
            let out = scrub_urls(&text);
            assert_eq!(
                out,
                format!("bad store{space}postgres://u:***@h/db{space}end"),
                "{space:?}"
            );
        }
    }

    #[test]
    fn the_scrubber_does_not_print_what_it_scrubs() {
        let args: Vec<OsString> = [
            "byok",
            "--store=postgres://u:SECRETPW@h/db",
            "sk-proj-canary-7d1e0c9b8a7f6e5d",
        ]
        .map(OsString::from)
        .to_vec();
        let shown = format!("{:?}", Scrubber::new(&args));
        assert!(shown.starts_with("Scrubber { passwords: "), "{shown}");
        assert!(
            !shown.contains("SECRETPW") && !shown.contains("canary"),
            "{shown}"
        );
    }

    #[test]
    fn key_shaped_words_are_told_from_names() {
        for key in [
            "sk-proj-canary-7d1e0c9b8a7f6e5d",
            "sk-ant-api03-abcdefghijkl",
            "AIzaSyD-1234567890abcdefghij",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert!(looks_like_key(key), "{key}");
        }
        for name in [
            "openai",
            "anthropic",
            "azure-openai",
            "google_vertex_ai",
            "--store",
            "sk-short",
            "a3f2c1d0-0000-4000-8000-000000000000 x",
        ] {
            assert!(!looks_like_key(name), "{name}");
        }
    }
}
