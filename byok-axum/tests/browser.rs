//! The example app in a real browser: headless Chromium driven over
//! WebDriver by `fantoccini`.
//!
//! It needs `chromium` and `chromedriver` on the `PATH` (Debian's
//! `chromium` and `chromium-driver`, which `scripts/services.sh`
//! installs). Without them it prints a `skipped:` line and passes, unless
//! `BYOK_TEST_REQUIRE_SERVICES=1`. It saves a screenshot of the settings
//! page to `target/byok-axum-artifacts/settings.png`.

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

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const KEY: &str = "sk-proj-BROWSER-canary-4f9e2b7c1a";
const HINT: &str = "sk-p...7c1a";

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
        .for_url(&url_of(&base, "/settings/api-keys"))
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
        Some("off")
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
