//! The example app in a real browser: headless Chromium driven over
//! WebDriver by `fantoccini`.
//!
//! It needs `chromium` and `chromedriver` on the `PATH` (Debian's
//! `chromium` and `chromium-driver`, which `scripts/services.sh`
//! installs). Without them it prints a `skipped:` line and passes, unless
//! `BYOK_TEST_REQUIRE_SERVICES=1`. It saves a screenshot of the settings
//! page to `target/byok-axum-artifacts/settings.png`, and one after a "Test" to
//! `settings-test.png`.
//!
//! `readme_lines_work_on_plain_http_localhost` runs the README's axum lines
//! as they are written (production defaults) on `http://127.0.0.1`, with a
//! checker that asks the stub provider of `byok-testkit` on loopback, and
//! clicks "Test" for a good key and a bad one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed step fails the test"
)]

#[path = "../examples/app/chat.rs"]
#[allow(dead_code, reason = "the test uses only the router")]
mod chat;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use byok_check::{CheckClient, CheckPolicy, Checker, HttpProber};
use byok_testkit::provider_stub::{ProviderStub, Scenario, StubProvider, answer};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const KEY: &str = "sk-proj-BROWSER-canary-4f9e2b7c1a";
const HINT: &str = "sk-p...7c1a";
const GOOD: &str = "sk-proj-GOOD-canary-2b8e6d0f4a";
const BAD: &str = "sk-proj-BAD-canary-9c3f1a7e5d";

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Prints why the test cannot run, and fails under
/// `BYOK_TEST_REQUIRE_SERVICES=1`.
fn skip(why: &str) {
    if std::env::var("BYOK_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{why}, and BYOK_TEST_REQUIRE_SERVICES=1 (install with scripts/services.sh)");
    }
    eprintln!("skipped: {why} (install with scripts/services.sh)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("byok-axum-artifacts")
}

/// Starts chromedriver on a free loopback port and waits until it answers.
async fn start_chromedriver(program: &PathBuf) -> (tokio::process::Child, u16) {
    let port = free_port();
    let child = tokio::process::Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    // Readiness, not timing: give a slow machine up to a minute.
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on port {port}");
}

async fn connect(port: u16, chromium: &PathBuf) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1000,900",
            ],
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} not found: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits until `css` holds `expected`: after a form post that shows the
/// same page again, the old element is there until the new page loads.
async fn wait_for_text(c: &Client, css: &str, expected: &str) {
    let mut last = String::new();
    for _ in 0..300 {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
        {
            if text == expected {
                return;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} says {last:?}, not {expected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_adds_uses_and_deletes_a_key() {
    let (Some(chromium), Some(driver)) = (find_program("chromium"), find_program("chromedriver"))
    else {
        skip("no chromium or chromedriver on the PATH");
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let app = chat::build(dir.path(), None).await.unwrap();
    assert!(app.created_keyring && app.keyring.exists());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app.router).await });

    let (mut chromedriver, port) = start_chromedriver(&driver).await;
    let c = connect(port, &chromium).await;
    let mut pages = String::new();

    // 1. The guarded page sends the browser to the settings.
    c.goto(&format!("{base}/chat")).await.unwrap();
    assert_eq!(text_of(&c, "h1").await, "API key required");
    assert!(text_of(&c, "body").await.contains("OpenAI"));
    c.find(Locator::Css("#settings-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_url(&url_of(&base, "/settings/api-keys?next=%2Fchat"))
        .await
        .unwrap();
    assert_eq!(text_of(&c, "h1").await, "API keys");
    assert_eq!(
        text_of(&c, "#provider-openai .no-key").await,
        "No key saved."
    );

    // 2. Fill in and submit the form.
    let input = c
        .find(Locator::Css("#provider-openai input[name=api_key]"))
        .await
        .unwrap();
    assert_eq!(
        input.attr("type").await.unwrap().as_deref(),
        Some("password")
    );
    assert_eq!(
        input.attr("autocomplete").await.unwrap().as_deref(),
        Some("new-password")
    );
    input.send_keys(KEY).await.unwrap();
    c.find(Locator::Css("#provider-openai button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // 3. The masked key is shown, and never the key.
    assert_eq!(text_of(&c, ".notice").await, "Saved your OpenAI key.");
    assert_eq!(text_of(&c, "#provider-openai .key-hint").await, HINT);
    pages.push_str(&c.source().await.unwrap());
    let shot = c.screenshot().await.unwrap();
    std::fs::create_dir_all(artifacts()).unwrap();
    let path = artifacts().join("settings.png");
    std::fs::write(&path, &shot).unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    eprintln!("screenshot: {}", path.display());

    // 4. The guarded page works with the key.
    c.goto(&format!("{base}/chat?q=hello")).await.unwrap();
    assert_eq!(text_of(&c, "h1").await, "Chat");
    assert!(text_of(&c, "#using-key").await.contains(HINT));
    assert!(text_of(&c, "#reply").await.contains("hello"));
    pages.push_str(&c.source().await.unwrap());

    // 5. Delete the key, and the guard is back.
    c.goto(&format!("{base}/settings/api-keys")).await.unwrap();
    c.find(Locator::Css("#provider-openai button.delete"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&c, ".notice").await, "Deleted your OpenAI key.");
    assert_eq!(
        text_of(&c, "#provider-openai .no-key").await,
        "No key saved."
    );
    pages.push_str(&c.source().await.unwrap());
    c.goto(&format!("{base}/chat")).await.unwrap();
    assert_eq!(text_of(&c, "h1").await, "API key required");

    assert!(!pages.contains("BROWSER-canary"), "a page showed the key");
    c.close().await.unwrap();
    chromedriver.kill().await.unwrap();
    server.abort();
}

fn url_of(base: &str, path: &str) -> url::Url {
    url::Url::parse(&format!("{base}{path}")).unwrap()
}

/// The crate paths the README's lines use (`byok::axum`, `byok::connect`),
/// over the crates this test links.
mod byok {
    pub(crate) use byok_axum as axum;

    /// `byok::connect` for the SQLite URLs of the README.
    pub(crate) async fn connect(
        url: &str,
    ) -> byok_core::Result<std::sync::Arc<dyn byok_core::KeyStorage>> {
        let store =
            byok_sql::SqliteStorage::connect(url, &byok_core::ByokConfig::default()).await?;
        store.migrate().await?;
        Ok(std::sync::Arc::new(store))
    }
}

/// The README's `chat` handler.
async fn chat(key: byok::axum::ProviderKey) -> String {
    use byok_core::secrecy::ExposeSecret;
    format!(
        "chat with a key of {} bytes",
        key.key().expose_secret().len()
    )
}

/// The README's lines, as written there (the test checks that they are).
#[rustfmt::skip]
async fn readme_app(
    keyring: byok_core::Keyring,
    checker: byok_check::Checker,
) -> Result<axum::Router, Box<dyn std::error::Error>> {
    use axum::Router;
    use axum::routing::get;
    use byok_core::{Byok, ByokConfig};
    // README start
    use byok::axum::{ByokWeb, ProviderKey, TrustedHeader};

    let byok = Byok::new(byok::connect("sqlite://keys.db").await?, keyring, ByokConfig::default())?;
    // Who the user is: your own `Identify`, `identify_with(|parts| …)`, a trusted
    // proxy's header, or `SessionKeys` (keys that end with the session).
    let web = ByokWeb::builder(byok, TrustedHeader::new("x-forwarded-user".parse()?))
        .providers(["openai", "anthropic"])
        .checker(checker) // "Test" buttons (feature `checks`): the checker above
        .build()?;
    let app = Router::new()
        .route("/chat", get(chat)) // async fn chat(key: ProviderKey) -> …
        .route_layer(web.require_key("openai"))
        .merge(web.settings_router()); // /settings/api-keys
    // README end
    let _: Option<ProviderKey> = None;
    Ok(app)
}

#[test]
fn the_readme_lines_are_the_ones_tested() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## In an axum app").unwrap()..];
    let start = section.find("```rust").unwrap();
    let block = &section[start..];
    let block = &block[block.find('\n').unwrap() + 1..block.find("\n```\n").unwrap()];
    let source = include_str!("browser.rs");
    let tested =
        &source[source.find("// README start").unwrap()..source.find("// README end").unwrap()];
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            squash(tested).contains(&squash(line)),
            "the README line {line:?} is not the one the browser test runs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_lines_work_on_plain_http_localhost() {
    let (Some(chromium), Some(driver)) = (find_program("chromium"), find_program("chromedriver"))
    else {
        skip("no chromium or chromedriver on the PATH");
        return;
    };
    // The README's `sqlite://keys.db` is relative: run in a fresh directory.
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let keyring = byok_core::Keyring::new(1, byok_core::MasterKey::generate());
    // The stub provider stands in for OpenAI; only here may checks reach
    // loopback over plain HTTP.
    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(
        CheckPolicy::default()
            .allow_http(true)
            .allow_private_addresses(true),
    )
    .unwrap();
    let checker = Checker::new().register(
        HttpProber::openai(&client)
            .with_base_url(&format!("{}/v1", stub.url()))
            .unwrap(),
    );
    let app = readme_app(keyring, checker).await.unwrap();
    // The authenticating proxy in front of the app names the user.
    let app = app.layer(axum::middleware::map_request(
        |mut request: axum::extract::Request| async move {
            request
                .headers_mut()
                .insert("x-forwarded-user", "alice".parse().unwrap());
            request
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (mut chromedriver, port) = start_chromedriver(&driver).await;
    let c = connect(port, &chromium).await;

    // The guard sends the browser to the settings, which link back.
    c.goto(&format!("{base}/chat")).await.unwrap();
    assert_eq!(text_of(&c, "h1").await, "API key required");
    c.find(Locator::Css("#settings-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&c, "h1").await, "API keys");
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("next=%2Fchat")
    );
    assert!(
        !text_of(&c, "body").await.contains("plain HTTP"),
        "loopback is a secure context"
    );

    // Save a key over plain HTTP on 127.0.0.1, in production mode.
    let input = c
        .find(Locator::Css("#provider-openai input[name=api_key]"))
        .await
        .unwrap();
    input.send_keys(KEY).await.unwrap();
    c.find(Locator::Css("#provider-openai button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&c, ".notice").await, "Saved your OpenAI key.");
    assert_eq!(text_of(&c, "#provider-openai .key-hint").await, HINT);
    // The expiry as configured: the default is none.
    assert_eq!(
        text_of(&c, "#provider-openai .key-expiry").await,
        "never expires"
    );

    // A key of blanks: the page again, the message by the field.
    let input = c
        .find(Locator::Css("#provider-openai input[name=api_key]"))
        .await
        .unwrap();
    input.send_keys("   ").await.unwrap();
    c.find(Locator::Css("#provider-openai button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&c, "#error-openai").await, "Enter your key.");
    assert_eq!(text_of(&c, "h1").await, "API keys");
    assert_eq!(
        text_of(&c, "#provider-openai .key-hint").await,
        HINT,
        "the key is kept"
    );

    // "Test" a good key and a bad one: the answers in plain words, beside
    // the key, and neither key saved nor shown.
    let test = |key: &'static str| {
        let c = &c;
        async move {
            let input = c
                .find(Locator::Css("#provider-openai input[name=api_key]"))
                .await
                .unwrap();
            input.send_keys(key).await.unwrap();
            c.find(Locator::Css("#provider-openai button.test-typed"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
    test(GOOD).await;
    wait_for_text(&c, "#check-openai", "OpenAI accepted this key.").await;
    let typed = c
        .find(Locator::Css("#provider-openai input[name=api_key]"))
        .await
        .unwrap();
    assert_eq!(typed.prop("value").await.unwrap().as_deref(), Some(""));
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
    test(BAD).await;
    wait_for_text(&c, "#check-openai", "OpenAI does not accept this key.").await;
    // The saved key, tested from its own button.
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
    c.find(Locator::Css("#provider-openai button.test-saved"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&c, "#check-openai", "OpenAI accepted this key.").await;
    let sent: Vec<_> = stub
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        sent,
        [
            format!("Bearer {GOOD}"),
            format!("Bearer {BAD}"),
            format!("Bearer {KEY}"),
        ]
    );
    assert_eq!(
        text_of(&c, "#provider-openai .key-hint").await,
        HINT,
        "a test saves nothing"
    );
    let source = c.source().await.unwrap();
    assert!(!source.contains("GOOD-canary") && !source.contains("BAD-canary"));
    let shot = c.screenshot().await.unwrap();
    std::fs::create_dir_all(artifacts()).unwrap();
    std::fs::write(artifacts().join("settings-test.png"), &shot).unwrap();

    // And back to where the user came from, which now works.
    c.find(Locator::Css("#back-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let body = text_of(&c, "body").await;
    assert_eq!(body, format!("chat with a key of {} bytes", KEY.len()));
    assert!(!c.source().await.unwrap().contains("BROWSER-canary"));

    c.close().await.unwrap();
    chromedriver.kill().await.unwrap();
    server.abort();
}

/// The last check of a saved key, kept with it: "Test saved key", a
/// reload that reads it back from the store, and a new key that starts
/// unchecked. (A memory store: every store keeps checks the same way, and
/// the conformance suite checks that each does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_keys_last_check_is_kept_across_a_reload_and_cleared_by_a_new_key() {
    let (Some(chromium), Some(driver)) = (find_program("chromium"), find_program("chromedriver"))
    else {
        skip("no chromium or chromedriver on the PATH");
        return;
    };
    let stub = ProviderStub::start().await.unwrap();
    let client = CheckClient::new(
        CheckPolicy::default()
            .allow_http(true)
            .allow_private_addresses(true),
    )
    .unwrap();
    let checker = Checker::new().register(
        HttpProber::openai(&client)
            .with_base_url(&format!("{}/v1", stub.url()))
            .unwrap(),
    );
    let byok = byok_core::Byok::new(
        std::sync::Arc::new(byok_memory::MemoryStorage::new()),
        byok_core::Keyring::new(1, byok_core::MasterKey::generate()),
        byok_core::ByokConfig::default(),
    )
    .unwrap();
    let web = byok_axum::ByokWeb::builder(
        byok,
        byok_axum::TrustedHeader::new("x-forwarded-user".parse().unwrap()),
    )
    .providers(["openai", "anthropic"])
    .checker(checker)
    .build()
    .unwrap();
    let app = web.settings_router().layer(axum::middleware::map_request(
        |mut request: axum::extract::Request| async move {
            request
                .headers_mut()
                .insert("x-forwarded-user", "alice".parse().unwrap());
            request
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (mut chromedriver, port) = start_chromedriver(&driver).await;
    let c = connect(port, &chromium).await;
    let settings = format!("{base}/settings/api-keys");

    let save = |key: &'static str| {
        let c = &c;
        async move {
            c.find(Locator::Css("#provider-openai input[name=api_key]"))
                .await
                .unwrap()
                .send_keys(key)
                .await
                .unwrap();
            c.find(Locator::Css("#provider-openai button[type=submit]"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    c.goto(&settings).await.unwrap();
    save(KEY).await;
    assert_eq!(text_of(&c, ".notice").await, "Saved your OpenAI key.");
    assert_eq!(text_of(&c, "#last-check-openai").await, "Not checked yet.");

    // "Test saved key": the answer at once, and kept.
    stub.set_answer(answer(StubProvider::OpenAi, Scenario::NoCredit));
    c.find(Locator::Css("#provider-openai button.test-saved"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let words = "This key is valid but the account has no credit.";
    wait_for_text(&c, "#check-openai", words).await;
    let kept = format!("Checked less than a minute ago: {words}");
    wait_for_text(&c, "#last-check-openai", &kept).await;

    // A fresh visit reads it from the store: no result of a test on this
    // page, the kept one in the key's row.
    c.goto(&settings).await.unwrap();
    assert_eq!(text_of(&c, "#last-check-openai").await, kept);
    assert!(
        c.find(Locator::Css("#check-openai")).await.is_err(),
        "a fresh page shows no test"
    );
    c.refresh().await.unwrap();
    assert_eq!(text_of(&c, "#last-check-openai").await, kept);

    // Replacing the key clears it.
    save(GOOD).await;
    wait_for_text(&c, "#last-check-openai", "Not checked yet.").await;
    c.goto(&settings).await.unwrap();
    assert_eq!(text_of(&c, "#last-check-openai").await, "Not checked yet.");
    let source = c.source().await.unwrap();
    assert!(!source.contains("BROWSER-canary") && !source.contains("GOOD-canary"));

    c.close().await.unwrap();
    chromedriver.kill().await.unwrap();
    server.abort();
}
