//! Every route of byok-axum through `tower::ServiceExt::oneshot`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on unexpected results"
)]

use std::io;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::routing::get;
use axum::{Router, response::IntoResponse};
use byok_axum::tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer};
use byok_axum::{ByokWeb, KeyOf, ProviderKey, RequireKey, SessionKeys, TrustedHeader};
use byok_core::error::{StorageError, StorageErrorKind};
use byok_core::secrecy::ExposeSecret;
use byok_core::storage::{Cursor, KeyStorage, ScanPage};
use byok_core::{ApiKey, Byok, ByokConfig, Keyring, MasterKey, Ttl};
use byok_memory::MemoryStorage;
use http_body_util::BodyExt;
use tower::ServiceExt;

const OPENAI_KEY: &str = "sk-proj-abcdefghijklmnopqrstuvwxyz0123";
const SETTINGS: &str = "/settings/api-keys";

struct OpenAi;
impl KeyOf for OpenAi {
    const PROVIDERS: &'static [&'static str] = &["openai"];
}

fn config() -> ByokConfig {
    ByokConfig::for_tests()
}

fn manager(storage: Arc<dyn KeyStorage>) -> Byok {
    Byok::new(storage, Keyring::new(1, MasterKey::generate()), config()).unwrap()
}

async fn chat(key: ProviderKey) -> String {
    format!(
        "chat with {} ({} bytes)",
        key.provider(),
        key.key().expose_secret().len()
    )
}

async fn chat_extractor(RequireKey(key, ..): RequireKey<OpenAi>) -> String {
    format!("extractor {}", key.provider())
}

/// The application of the tests: users named by `x-user`, the settings
/// router, and three guarded routes.
fn app_of(web: &ByokWeb) -> Router {
    let guarded = Router::new()
        .route("/chat", get(chat))
        .route_layer(web.require_key("openai"));
    let any = Router::new()
        .route("/any", get(chat))
        .route_layer(web.require_any_key(["anthropic", "openai"]));
    Router::new()
        .merge(guarded)
        .merge(any)
        .route("/extract", get(chat_extractor))
        .merge(web.settings_router())
        .layer(web.layer())
}

struct TestApp {
    byok: Byok,
    app: Router,
}

fn test_app(production: bool, trust_proxy: bool) -> TestApp {
    let byok = manager(Arc::new(MemoryStorage::new()));
    let web = ByokWeb::builder(byok.clone(), TrustedHeader::new("x-user".parse().unwrap()))
        .providers(["openai", "anthropic"])
        .production(production)
        .trust_forwarded_proto(trust_proxy)
        .build()
        .unwrap();
    TestApp {
        app: app_of(&web),
        byok,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// A request as a browser would send it from the settings page.
fn browser(method: Method, uri: &str, user: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("x-user", user)
        .header(header::HOST, "app.test")
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .header("sec-fetch-site", "same-origin")
        .header("x-forwarded-proto", "https")
}

fn form_post(uri: &str, user: &str, body: &str) -> Request<Body> {
    browser(Method::POST, uri, user)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn form_body(key: &str) -> String {
    let mut out = String::from("api_key=");
    for b in key.bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
    out
}

fn api(method: Method, uri: &str, user: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("x-user", user)
        .header("x-forwarded-proto", "https")
        .header(header::ACCEPT, "application/json")
}

fn put_key(provider: &str, user: &str, body: serde_json::Value) -> Request<Body> {
    api(Method::PUT, &format!("{SETTINGS}/api/{provider}"), user)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get_api(uri: &str, user: &str) -> Request<Body> {
    api(Method::GET, uri, user).body(Body::empty()).unwrap()
}

fn location(a: &Answer) -> String {
    a.headers[header::LOCATION].to_str().unwrap().to_owned()
}

fn assert_no_store(a: &Answer) {
    assert_eq!(
        a.headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
        Some(&b"no-store"[..]),
        "{:?}",
        a.headers
    );
}

async fn providers_of(byok: &Byok, user: &str) -> Vec<String> {
    byok.list_providers(user).await.unwrap()
}

/// Runs under a trusted proxy, so the HTTPS policy passes unless a test
/// says otherwise.
fn app() -> TestApp {
    test_app(true, true)
}

#[tokio::test]
async fn api_adds_replaces_lists_and_deletes() {
    let t = app();
    let a = send(
        &t.app,
        put_key(
            "openai",
            "alice",
            serde_json::json!({ "api_key": OPENAI_KEY }),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_no_store(&a);
    let v = a.json();
    assert_eq!(v["provider"], "openai");
    assert_eq!(v["display_name"], "OpenAI");
    assert_eq!(v["hint"], "sk-p...0123");
    assert!(!a.body.contains(OPENAI_KEY));

    let a = send(&t.app, get_api(&format!("{SETTINGS}/api/openai"), "alice")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["hint"], "sk-p...0123");
    assert_no_store(&a);

    let replacement = "sk-proj-replacement-key-999999";
    let a = send(
        &t.app,
        put_key(
            "openai",
            "alice",
            serde_json::json!({ "api_key": replacement, "ttl_seconds": 3600 }),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["hint"], "sk-p...9999");
    assert!(!a.json()["expires_at"].is_null());
    let stored = t.byok.require_key("alice", "openai").await.unwrap();
    assert_eq!(stored.expose_secret(), replacement);

    let a = send(&t.app, get_api(&format!("{SETTINGS}/api"), "alice")).await;
    assert_eq!(a.status, StatusCode::OK);
    let list = a.json();
    let providers = list["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 2);
    assert_eq!(providers[0]["provider"], "openai");
    assert_eq!(providers[0]["key"]["hint"], "sk-p...9999");
    assert!(
        providers[0]["key"]["last_check"].is_null(),
        "never checked: {}",
        a.body
    );
    assert_eq!(providers[0]["placeholder"], "sk-...");
    assert_eq!(providers[1]["provider"], "anthropic");
    assert!(providers[1]["key"].is_null());
    assert!(!a.body.contains(replacement));

    let delete = || {
        api(Method::DELETE, &format!("{SETTINGS}/api/openai"), "alice")
            .body(Body::empty())
            .unwrap()
    };
    let a = send(&t.app, delete()).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(providers_of(&t.byok, "alice").await.is_empty());
    let a = send(&t.app, delete()).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.content_type(), "application/problem+json");
    assert_eq!(a.json()["type"], "tag:byok-rs,2026:problem:key-not-found");
    let a = send(&t.app, get_api(&format!("{SETTINGS}/api/openai"), "alice")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn form_adds_replaces_and_deletes() {
    let t = app();
    let page = send(
        &t.app,
        browser(Method::GET, SETTINGS, "alice")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_no_store(&page);
    assert!(page.body.contains("OpenAI") && page.body.contains("Anthropic"));
    assert!(page.body.contains("No key saved."));
    assert!(
        page.body
            .contains(r#"type="password" name="api_key" autocomplete="new-password""#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"action="/settings/api-keys/openai""#));
    assert!(
        !page.body.contains("/delete"),
        "no delete form without a key"
    );

    let a = send(
        &t.app,
        form_post(
            &format!("{SETTINGS}/openai"),
            "alice",
            &form_body(OPENAI_KEY),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let saved = location(&a);
    assert!(
        saved.starts_with("/settings/api-keys?notice=saved&provider=openai&at="),
        "{saved}"
    );
    assert_no_store(&a);
    let stored = t.byok.require_key("alice", "openai").await.unwrap();
    assert_eq!(stored.expose_secret(), OPENAI_KEY);

    let page = send(
        &t.app,
        browser(Method::GET, &saved, "alice")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(page.body.contains("Saved your OpenAI key."));
    assert!(page.body.contains("sk-p...0123"));
    assert!(page.body.contains("Replace"));
    assert!(
        page.body
            .contains(r#"action="/settings/api-keys/openai/delete""#)
    );
    assert!(!page.body.contains(OPENAI_KEY));

    // Replace, with the spaces and line break of a careless paste.
    let a = send(
        &t.app,
        form_post(
            &format!("{SETTINGS}/openai"),
            "alice",
            &form_body("  sk-proj-second-key-abcdefgh\n"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let stored = t.byok.require_key("alice", "openai").await.unwrap();
    assert_eq!(stored.expose_secret(), "sk-proj-second-key-abcdefgh");

    let a = send(
        &t.app,
        form_post(&format!("{SETTINGS}/openai/delete"), "alice", ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let deleted = location(&a);
    assert!(
        deleted.starts_with("/settings/api-keys?notice=deleted&provider=openai&at="),
        "{deleted}"
    );
    assert!(providers_of(&t.byok, "alice").await.is_empty());
    let page = send(
        &t.app,
        browser(Method::GET, &deleted, "alice")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(page.body.contains("Deleted your OpenAI key."));
    assert!(page.body.contains("No key saved."));
}

#[tokio::test]
async fn a_user_never_sees_replaces_or_deletes_another_users_key() {
    let t = app();
    t.byok
        .set_key("alice", "openai", OPENAI_KEY, Ttl::Default)
        .await
        .unwrap();

    let a = send(&t.app, get_api(&format!("{SETTINGS}/api/openai"), "bob")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = send(&t.app, get_api(&format!("{SETTINGS}/api"), "bob")).await;
    assert!(a.json()["providers"][0]["key"].is_null());
    assert!(!a.body.contains("sk-p...0123"));
    let page = send(
        &t.app,
        browser(Method::GET, SETTINGS, "bob")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(!page.body.contains("sk-p...0123"));

    let a = send(
        &t.app,
        api(Method::DELETE, &format!("{SETTINGS}/api/openai"), "bob")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = send(
        &t.app,
        form_post(&format!("{SETTINGS}/openai/delete"), "bob", ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);

    let a = send(
        &t.app,
        put_key(
            "openai",
            "bob",
            serde_json::json!({ "api_key": "sk-bobs-own-key-0000000000" }),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "bob's first key is new");

    let alice = t.byok.require_key("alice", "openai").await.unwrap();
    assert_eq!(alice.expose_secret(), OPENAI_KEY);
    let bob = t.byok.require_key("bob", "openai").await.unwrap();
    assert_eq!(bob.expose_secret(), "sk-bobs-own-key-0000000000");

    // And the guard gives each user their own key.
    let a = send(&t.app, get_api("/chat", "bob")).await;
    assert_eq!(a.body, "chat with openai (26 bytes)");
    let a = send(&t.app, get_api("/chat", "carol")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bad_input_gets_its_status_and_stores_nothing() {
    let t = app();
    let json = |body: &str, content_type: &str| {
        api(Method::PUT, &format!("{SETTINGS}/api/openai"), "alice")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let ct = "application/json";
    let oversized_key = "k".repeat(9 * 1024);
    let huge_body = format!(r#"{{"api_key":"{}"}}"#, "k".repeat(20 * 1024));
    let cases: Vec<(&str, Request<Body>, StatusCode, Option<&str>)> = vec![
        (
            "empty",
            json(r#"{"api_key":""}"#, ct),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("api_key"),
        ),
        (
            "blank",
            json(r#"{"api_key":"   "}"#, ct),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("api_key"),
        ),
        (
            "control character",
            json(r#"{"api_key":"sk-abc\u0007defghijklmnop"}"#, ct),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("api_key"),
        ),
        (
            "key over 8 KiB",
            json(&format!(r#"{{"api_key":"{oversized_key}"}}"#), ct),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("api_key"),
        ),
        (
            "body over the limit",
            json(&huge_body, ct),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
        (
            "malformed JSON",
            json(r#"{"api_key": "#, ct),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "not JSON",
            json(r#"{"api_key":"sk-abcdefghijklmnopqrst"}"#, "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            "missing field",
            json(r#"{"key":"sk-abcdefghijklmnopqrst"}"#, ct),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "zero TTL",
            json(
                r#"{"api_key":"sk-abcdefghijklmnopqrst","ttl_seconds":0}"#,
                ct,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("ttl_seconds"),
        ),
        (
            "unknown provider",
            api(Method::PUT, &format!("{SETTINGS}/api/mistral"), "alice")
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(r#"{"api_key":"sk-abcdefghijklmnopqrst"}"#))
                .unwrap(),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "form: empty",
            form_post(&format!("{SETTINGS}/openai"), "alice", "api_key="),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "form: blank",
            form_post(&format!("{SETTINGS}/openai"), "alice", "api_key=+++"),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "form: control character",
            form_post(
                &format!("{SETTINGS}/openai"),
                "alice",
                "api_key=sk-abc%00defghijklmnop",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "form: missing field",
            form_post(&format!("{SETTINGS}/openai"), "alice", "other=1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "form: over the limit",
            form_post(
                &format!("{SETTINGS}/openai"),
                "alice",
                &format!("api_key={}", "k".repeat(20 * 1024)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
        (
            "form: unknown provider",
            form_post(
                &format!("{SETTINGS}/mistral"),
                "alice",
                "api_key=sk-abcdefghijklmnopqrst",
            ),
            StatusCode::NOT_FOUND,
            None,
        ),
    ];
    for (name, request, status, field) in cases {
        let is_form = name.starts_with("form");
        let a = send(&t.app, request).await;
        assert_eq!(a.status, status, "{name}: {}", a.body);
        assert_no_store(&a);
        if is_form {
            assert!(a.content_type().starts_with("text/html"), "{name}");
        } else {
            assert_eq!(a.content_type(), "application/problem+json", "{name}");
            let problem = a.json();
            assert_eq!(problem["status"], status.as_u16(), "{name}");
            if let Some(field) = field {
                assert_eq!(problem["field"], field, "{name}: {}", a.body);
            }
        }
        assert!(!a.body.contains("kkkkkkkk"), "{name} echoed the key");
        assert!(!a.body.contains("defghijklmnop"), "{name} echoed the key");
        assert!(
            providers_of(&t.byok, "alice").await.is_empty(),
            "{name} stored a key"
        );
    }
}

#[tokio::test]
async fn cross_site_requests_change_nothing() {
    let t = app();
    t.byok
        .set_key("alice", "openai", OPENAI_KEY, Ttl::Default)
        .await
        .unwrap();
    let forged = |site: Option<&str>, origin: Option<&str>, uri: &str, body: &str| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("x-user", "alice")
            .header(header::HOST, "app.test")
            .header("x-forwarded-proto", "https")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(site) = site {
            b = b.header("sec-fetch-site", site);
        }
        if let Some(origin) = origin {
            b = b.header(header::ORIGIN, origin);
        }
        b.body(Body::from(body.to_owned())).unwrap()
    };
    let replace = format!("{SETTINGS}/openai");
    let delete = format!("{SETTINGS}/openai/delete");
    let evil = form_body("sk-attacker-key-0000000000");
    for (site, origin) in [
        (Some("cross-site"), Some("https://evil.test")),
        (Some("same-site"), Some("https://sub.app.test")),
        (Some("cross-site"), None),
        (None, Some("https://evil.test")),
        (None, Some("null")),
        (None, Some("https://app.test.evil.test")),
    ] {
        for (uri, body) in [(&replace, evil.as_str()), (&delete, "")] {
            let a = send(&t.app, forged(site, origin, uri, body)).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{site:?} {origin:?} {uri}");
            assert_no_store(&a);
            assert_eq!(
                a.json()["type"],
                "tag:byok-rs,2026:problem:cross-site-request"
            );
        }
    }
    let a = send(
        &t.app,
        api(Method::DELETE, &format!("{SETTINGS}/api/openai"), "alice")
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(
        &t.app,
        api(Method::PUT, &format!("{SETTINGS}/api/openai"), "alice")
            .header(header::ORIGIN, "https://evil.test")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"api_key":"sk-attacker-key-0000000000"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let kept = t.byok.require_key("alice", "openai").await.unwrap();
    assert_eq!(kept.expose_secret(), OPENAI_KEY);

    // Same origin by Origin alone (no Sec-Fetch-Site), and a client that
    // sends neither, pass.
    let a = send(&t.app, forged(None, Some("https://app.test"), &delete, "")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let a = send(&t.app, forged(None, None, &replace, &form_body(OPENAI_KEY))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(t.byok.has_key("alice", "openai").await.unwrap());
}

/// Collects everything that tracing writes while it is installed.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn plain_http_put(user: &str, proto: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::PUT)
        .uri(format!("{SETTINGS}/api/openai"))
        .header("x-user", user)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(proto) = proto {
        b = b.header("x-forwarded-proto", proto);
    }
    b.body(Body::from(format!(r#"{{"api_key":"{OPENAI_KEY}"}}"#)))
        .unwrap()
}

#[tokio::test]
async fn https_policy_in_production_and_development() {
    let logs = Logs::default();
    let _guard = logs.install();

    // Production, no trusted proxy: plain HTTP is refused, and a client's
    // own X-Forwarded-Proto is not believed.
    let t = test_app(true, false);
    for proto in [None, Some("https")] {
        let a = send(&t.app, plain_http_put("alice", proto)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{proto:?}");
        assert_eq!(
            a.json()["type"],
            "tag:byok-rs,2026:problem:insecure-transport"
        );
        assert_no_store(&a);
    }
    let a = send(
        &t.app,
        Request::builder()
            .method(Method::POST)
            .uri(format!("{SETTINGS}/openai"))
            .header("x-user", "alice")
            .header(header::ACCEPT, "text/html")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form_body(OPENAI_KEY)))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("HTTPS required"));
    assert!(providers_of(&t.byok, "alice").await.is_empty());
    let refusals = logs.text().matches("security warning").count();
    assert_eq!(refusals, 3, "{}", logs.text());
    assert!(logs.text().contains("key refused"));

    // Production behind a trusted proxy: its header decides.
    let t = test_app(true, true);
    let a = send(&t.app, plain_http_put("alice", Some("http"))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(&t.app, plain_http_put("alice", Some("https"))).await;
    assert_eq!(a.status, StatusCode::CREATED);

    // Production on a TLS listener.
    let byok = manager(Arc::new(MemoryStorage::new()));
    let web = ByokWeb::builder(byok.clone(), TrustedHeader::new("x-user".parse().unwrap()))
        .served_over_tls(true)
        .build()
        .unwrap();
    let a = send(&app_of(&web), plain_http_put("alice", None)).await;
    assert_eq!(a.status, StatusCode::CREATED);

    // Development: stored, with a warning in the log and on the page.
    let before = logs.text().matches("security warning").count();
    let t = test_app(false, false);
    let a = send(&t.app, plain_http_put("alice", None)).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(t.byok.has_key("alice", "openai").await.unwrap());
    assert_eq!(logs.text().matches("security warning").count(), before + 1);
    assert!(logs.text().contains("key accepted in development mode"));
    let page = send(
        &t.app,
        Request::builder()
            .uri(SETTINGS)
            .header("x-user", "alice")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(page.body.contains("served over plain HTTP"));

    // With require_https off there is no check at all.
    let byok = Byok::new(
        Arc::new(MemoryStorage::new()),
        Keyring::new(1, MasterKey::generate()),
        config().with_require_https(false),
    )
    .unwrap();
    let web = ByokWeb::builder(byok, TrustedHeader::new("x-user".parse().unwrap()))
        .build()
        .unwrap();
    let a = send(&app_of(&web), plain_http_put("alice", None)).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(!logs.text().contains(OPENAI_KEY));
}

#[tokio::test]
async fn guards_answer_browsers_and_api_clients() {
    let t = app();
    let html = |uri: &str, user: &str| browser(Method::GET, uri, user).body(Body::empty()).unwrap();

    let a = send(&t.app, html("/chat", "alice")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.content_type().starts_with("text/html"));
    assert_no_store(&a);
    assert!(a.body.contains("API key required"));
    assert!(a.body.contains("<strong>OpenAI</strong>"));
    assert!(a.body.contains(r#"href="/settings/api-keys?next=%2Fchat""#));

    let a = send(&t.app, get_api("/chat", "alice")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.content_type(), "application/problem+json");
    assert_no_store(&a);
    let p = a.json();
    assert_eq!(p["type"], "tag:byok-rs,2026:problem:api-key-required");
    assert_eq!(p["title"], "API key required");
    assert_eq!(p["status"], 403);
    assert_eq!(p["providers"], serde_json::json!(["openai"]));
    assert_eq!(p["settings_url"], "/settings/api-keys");

    let a = send(&t.app, html("/any", "alice")).await;
    assert!(
        a.body
            .contains("<strong>Anthropic</strong> or <strong>OpenAI</strong>")
    );
    let a = send(&t.app, get_api("/any", "alice")).await;
    assert_eq!(
        a.json()["providers"],
        serde_json::json!(["anthropic", "openai"])
    );
    let a = send(&t.app, get_api("/extract", "alice")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["providers"], serde_json::json!(["openai"]));

    // Without a user: 401.
    let a = send(
        &t.app,
        Request::builder().uri("/chat").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(
        &t.app,
        Request::builder()
            .uri(SETTINGS)
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("Not signed in"));

    t.byok
        .set_key("alice", "openai", OPENAI_KEY, Ttl::Default)
        .await
        .unwrap();
    let a = send(&t.app, html("/chat", "alice")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_no_store(&a);
    assert_eq!(
        a.body,
        format!("chat with openai ({} bytes)", OPENAI_KEY.len())
    );
    let a = send(&t.app, get_api("/any", "alice")).await;
    assert_eq!(
        a.body,
        format!("chat with openai ({} bytes)", OPENAI_KEY.len())
    );
    let a = send(&t.app, get_api("/extract", "alice")).await;
    assert_eq!(a.body, "extractor openai");

    // The first provider of require_any_key that the user has wins.
    t.byok
        .set_key(
            "alice",
            "anthropic",
            "sk-ant-abcdefghijklmnop",
            Ttl::Default,
        )
        .await
        .unwrap();
    let a = send(&t.app, get_api("/any", "alice")).await;
    assert_eq!(a.body, "chat with anthropic (23 bytes)");

    // An expired key does not open the guard.
    t.byok
        .set_key(
            "dave",
            "openai",
            OPENAI_KEY,
            Ttl::After(std::time::Duration::from_millis(1)),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let a = send(&t.app, get_api("/chat", "dave")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

/// A store that is down.
#[derive(Debug)]
struct DownStorage;

fn down() -> byok_core::ByokError {
    StorageError::new(
        "test",
        StorageErrorKind::Unavailable,
        "the test store is down",
    )
    .into()
}

#[byok_core::async_trait]
impl KeyStorage for DownStorage {
    async fn store(&self, _: &ApiKey) -> byok_core::Result<()> {
        Err(down())
    }
    async fn retrieve(&self, _: &str, _: &str) -> byok_core::Result<Option<ApiKey>> {
        Err(down())
    }
    async fn delete(&self, _: &str, _: &str) -> byok_core::Result<bool> {
        Err(down())
    }
    async fn list_providers(&self, _: &str) -> byok_core::Result<Vec<String>> {
        Err(down())
    }
    async fn clear_all(&self, _: &str) -> byok_core::Result<u64> {
        Err(down())
    }
    async fn purge_expired(&self) -> byok_core::Result<u64> {
        Err(down())
    }
    async fn compare_and_swap(&self, _: &ApiKey, _: &ApiKey) -> byok_core::Result<bool> {
        Err(down())
    }
    async fn scan(&self, _: Option<&Cursor>, _: usize) -> byok_core::Result<ScanPage> {
        Err(down())
    }
}

#[tokio::test]
async fn storage_outage_is_503_with_retry_after() {
    let web = ByokWeb::builder(
        manager(Arc::new(DownStorage)),
        TrustedHeader::new("x-user".parse().unwrap()),
    )
    .trust_forwarded_proto(true)
    .build()
    .unwrap();
    let app = app_of(&web);
    for request in [
        get_api("/chat", "alice"),
        get_api(&format!("{SETTINGS}/api"), "alice"),
        put_key(
            "openai",
            "alice",
            serde_json::json!({ "api_key": OPENAI_KEY }),
        ),
        browser(Method::GET, SETTINGS, "alice")
            .body(Body::empty())
            .unwrap(),
    ] {
        let a = send(&app, request).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
        assert_eq!(a.headers[header::RETRY_AFTER], "5");
        assert_no_store(&a);
        assert!(!a.body.contains(OPENAI_KEY));
    }
}

#[tokio::test]
async fn decryption_failure_is_500_and_keeps_the_key() {
    let storage: Arc<dyn KeyStorage> = Arc::new(MemoryStorage::new());
    manager(Arc::clone(&storage))
        .set_key("alice", "openai", OPENAI_KEY, Ttl::Default)
        .await
        .unwrap();
    let before = storage.retrieve("alice", "openai").await.unwrap().unwrap();
    // Another master key: the stored key cannot be decrypted.
    let web = ByokWeb::builder(
        manager(Arc::clone(&storage)),
        TrustedHeader::new("x-user".parse().unwrap()),
    )
    .build()
    .unwrap();
    let logs = Logs::default();
    let _guard = logs.install();
    let a = send(&app_of(&web), get_api("/chat", "alice")).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        a.json()["type"],
        "tag:byok-rs,2026:problem:decryption-failed"
    );
    assert!(
        logs.text().contains("could not be decrypted"),
        "{}",
        logs.text()
    );
    let after = storage.retrieve("alice", "openai").await.unwrap().unwrap();
    assert_eq!(before.encrypted_value(), after.encrypted_value());
}

async fn logout(
    session: Session,
    axum::Extension(web): axum::Extension<ByokWeb>,
) -> impl IntoResponse {
    let removed = SessionKeys::end(&session, web.byok()).await.unwrap();
    format!("removed {removed}")
}

#[tokio::test]
async fn session_keys_disappear_with_the_session() {
    let storage = Arc::new(MemoryStorage::new());
    let byok = manager(storage.clone());
    let web = ByokWeb::builder(byok.clone(), SessionKeys)
        .providers(["openai"])
        .trust_forwarded_proto(true)
        .build()
        .unwrap();
    let sessions = SessionManagerLayer::new(MemoryStore::default())
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    let app = Router::new()
        .route("/chat", get(chat))
        .route_layer(web.require_key("openai"))
        .route("/logout", axum::routing::post(logout))
        .merge(web.settings_router())
        .layer(web.layer())
        .layer(sessions);

    let put = |cookie: Option<&str>| {
        let mut b = Request::builder()
            .method(Method::PUT)
            .uri(format!("{SETTINGS}/api/openai"))
            .header("x-forwarded-proto", "https")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        b.body(Body::from(format!(r#"{{"api_key":"{OPENAI_KEY}"}}"#)))
            .unwrap()
    };
    let with_cookie = |method: Method, uri: &str, cookie: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap()
    };

    let a = send(&app, put(None)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let set_cookie = a.headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // The key lives at most as long as the session (one hour).
    let expires_at = a.json()["expires_at"].as_str().unwrap().to_owned();
    let expires_at: byok_core::chrono::DateTime<byok_core::chrono::Utc> =
        expires_at.parse().unwrap();
    assert!(expires_at <= byok_core::chrono::Utc::now() + byok_core::chrono::Duration::hours(1));

    let a = send(&app, with_cookie(Method::GET, "/chat", &cookie)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let users: Vec<ApiKey> = storage.scan(None, 100).await.unwrap().keys;
    assert_eq!(users.len(), 1);
    let user_id = users[0].user_id().to_owned();
    assert!(user_id.starts_with("session:"));
    assert!(
        !cookie.contains(&user_id["session:".len()..]),
        "the user id is not the session id"
    );

    // Another session (no cookie) does not see it.
    let a = send(
        &app,
        Request::builder().uri("/chat").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // Ending the session deletes its keys; the old cookie gets a new session.
    let a = send(&app, with_cookie(Method::POST, "/logout", &cookie)).await;
    assert_eq!(a.body, "removed 1");
    assert!(byok.list_providers(&user_id).await.unwrap().is_empty());
    let a = send(&app, with_cookie(Method::GET, "/chat", &cookie)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn canary_key_never_appears_in_responses_logs_or_errors() {
    const CANARY: &str = "sk-CANARY-7f3a9c1e5b2d8f4a6c0e";
    let logs = Logs::default();
    let _guard = logs.install();
    let t = test_app(true, false);
    let mut seen = String::new();
    let form = form_body(CANARY);
    let json = format!(r#"{{"api_key":"{CANARY}"}}"#);
    let https_form = |uri: &str, body: String| {
        let mut r = form_post(uri, "alice", &body);
        r.headers_mut().remove("x-forwarded-proto");
        r
    };
    let requests = vec![
        // Refused over plain HTTP in production (no trusted proxy).
        https_form(&format!("{SETTINGS}/openai"), form.clone()),
        plain_http_put("alice", Some("https")),
        // Cross-site.
        Request::builder()
            .method(Method::POST)
            .uri(format!("{SETTINGS}/openai"))
            .header("x-user", "alice")
            .header("sec-fetch-site", "cross-site")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.clone()))
            .unwrap(),
        // Invalid: a control character inside, a malformed body around it,
        // a wrong type next to it, an unknown field.
        https_form(&format!("{SETTINGS}/openai"), format!("{form}%07")),
        Request::builder()
            .method(Method::PUT)
            .uri(format!("{SETTINGS}/api/openai"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-user", "alice")
            .body(Body::from(format!(r#"{{"api_key":"{CANARY}","#)))
            .unwrap(),
        Request::builder()
            .method(Method::PUT)
            .uri(format!("{SETTINGS}/api/openai"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-user", "alice")
            .body(Body::from(format!(
                r#"{{"api_key":"{CANARY}","ttl_seconds":"{CANARY}"}}"#
            )))
            .unwrap(),
        Request::builder()
            .method(Method::PUT)
            .uri(format!("{SETTINGS}/api/openai"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-user", "alice")
            .body(Body::from(format!(
                r#"{{"api_key":"{CANARY}","{CANARY}":1}}"#
            )))
            .unwrap(),
        Request::builder()
            .method(Method::PUT)
            .uri(format!("{SETTINGS}/api/openai"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-user", "alice")
            .body(Body::from(format!(r#"{{"api_key":{{"{CANARY}":1}}}}"#)))
            .unwrap(),
    ];
    for request in requests {
        let a = send(&t.app, request).await;
        assert!(a.status.is_client_error(), "{}: {}", a.status, a.body);
        seen.push_str(&format!("{} {:?} {}\n", a.status, a.headers, a.body));
    }
    assert!(providers_of(&t.byok, "alice").await.is_empty());

    // Stored through the form and the API, then every read path.
    let t = test_app(false, false);
    let stored = [
        form_post(&format!("{SETTINGS}/openai"), "alice", &form),
        put_key("openai", "bob", serde_json::json!({ "api_key": CANARY })),
    ];
    for request in stored {
        let a = send(&t.app, request).await;
        assert!(
            a.status.is_success() || a.status.is_redirection(),
            "{}",
            a.body
        );
        seen.push_str(&format!("{} {:?} {}\n", a.status, a.headers, a.body));
    }
    let _ = json;
    for (uri, user) in [
        (SETTINGS.to_owned(), "alice"),
        (format!("{SETTINGS}/api"), "alice"),
        (format!("{SETTINGS}/api/openai"), "bob"),
        ("/chat".to_owned(), "alice"),
    ] {
        let a = send(
            &t.app,
            browser(Method::GET, &uri, user)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        seen.push_str(&format!("{} {:?} {}\n", a.status, a.headers, a.body));
    }
    assert!(t.byok.require_key("alice", "openai").await.is_ok());
    assert!(
        seen.contains("sk-C...4a6c0e") || seen.contains("sk-C...6c0e"),
        "{seen}"
    );
    assert!(
        !seen.contains(CANARY),
        "a response holds the canary:\n{seen}"
    );
    assert!(
        !seen.contains("CANARY"),
        "a response holds part of the canary"
    );
    let logs = logs.text();
    assert!(!logs.is_empty());
    assert!(
        !logs.contains("CANARY"),
        "a log line holds the canary:\n{logs}"
    );

    // Errors and rejections, through Display and Debug.
    let e = byok_core::validate::api_key(&format!("{CANARY}\u{7}")).unwrap_err();
    let r = byok_axum::ByokRejection::from(byok_core::ByokError::from(e));
    assert!(!format!("{r} {r:?}").contains("CANARY"));
}

#[tokio::test]
async fn provider_picker_stores_for_the_chosen_provider_only() {
    let t = app();
    let page = send(
        &t.app,
        browser(Method::GET, SETTINGS, "alice")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(page.body.contains(r#"<select name="provider""#));
    assert!(
        page.body
            .contains(r#"<option value="anthropic">Anthropic</option>"#)
    );

    let a = send(
        &t.app,
        form_post(
            SETTINGS,
            "alice",
            &format!(
                "provider=anthropic&{}",
                form_body("sk-ant-abcdefghijklmnop")
            ),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(location(&a).starts_with("/settings/api-keys?notice=saved&provider=anthropic&"));
    assert_eq!(providers_of(&t.byok, "alice").await, ["anthropic"]);

    for body in [
        format!("provider=mistral&{}", form_body(OPENAI_KEY)),
        form_body(OPENAI_KEY),
    ] {
        let a = send(&t.app, form_post(SETTINGS, "bob", &body)).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        // The page again, the message next to the picker.
        assert!(
            a.body.contains(
                r#"<p class="field-error" id="error-add-key" role="alert">Choose one of the providers listed.</p>"#
            ),
            "{}",
            a.body
        );
        assert!(a.body.contains(r#"<h1>API keys</h1>"#), "the settings page");
        assert!(!a.body.contains("abcdefghijklmnop"));
        assert!(providers_of(&t.byok, "bob").await.is_empty());
    }
}

/// A guarded route under a nested router, to see the paths in log lines.
async fn chat_no_cache_override(RequireKey(key, ..): RequireKey<OpenAi>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "private, max-age=5")],
        format!("extractor {}", key.provider()),
    )
}

fn web_with(f: impl FnOnce(byok_axum::ByokWebBuilder) -> byok_axum::ByokWebBuilder) -> TestApp {
    let byok = manager(Arc::new(MemoryStorage::new()));
    let builder = ByokWeb::builder(byok.clone(), TrustedHeader::new("x-user".parse().unwrap()))
        .providers(["openai", "anthropic"])
        .trust_forwarded_proto(true);
    let web = f(builder).build().unwrap();
    TestApp {
        app: app_of(&web),
        byok,
    }
}

fn page_of(uri: &str, user: &str) -> Request<Body> {
    browser(Method::GET, uri, user).body(Body::empty()).unwrap()
}

/// A PUT of the JSON API as `curl` on this machine sends it: plain HTTP,
/// no proxy headers.
fn local_put(host: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::PUT)
        .uri(format!("{SETTINGS}/api/openai"))
        .header("x-user", "alice")
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Body::from(format!(r#"{{"api_key":"{OPENAI_KEY}"}}"#)))
        .unwrap()
}

#[tokio::test]
async fn loopback_plain_http_is_accepted_in_production() {
    let logs = Logs::default();
    let _guard = logs.install();
    // Production defaults: no TLS, no proxy.
    let t = test_app(true, false);
    for host in [
        "127.0.0.1:3000",
        "localhost:3000",
        "[::1]:3000",
        "127.0.0.2",
    ] {
        let a = send(&t.app, local_put(host, &[])).await;
        assert!(a.status.is_success(), "{host}: {} {}", a.status, a.body);
    }
    let a = send(
        &t.app,
        local_put("localhost:3000", &[("origin", "http://localhost:3000")]),
    )
    .await;
    assert!(a.status.is_success());
    let refusals_before = logs.text().matches(" WARN ").count();
    // Not loopback: another host, a browser on another site, a proxy.
    for (host, extra) in [
        ("app.test", vec![]),
        // A browser on the public name of a proxy that rewrote Host.
        (
            "127.0.0.1:3000",
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://public.example"),
            ],
        ),
        (
            "127.0.0.1:3000",
            vec![
                ("sec-fetch-site", "same-origin"),
                ("referer", "http://public.example/"),
            ],
        ),
        ("127.0.0.1:3000", vec![("x-forwarded-for", "203.0.113.7")]),
        ("127.0.0.1:3000", vec![("forwarded", "for=203.0.113.7")]),
        ("localhost.evil.test", vec![]),
    ] {
        let a = send(&t.app, local_put(host, &extra)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{host} {extra:?}");
        assert_eq!(
            a.json()["type"],
            "tag:byok-rs,2026:problem:insecure-transport"
        );
    }
    // One WARN line per refusal, saying how to configure it.
    let text = logs.text();
    let warns: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warns.len() - refusals_before, 6, "{text}");
    let last = warns.last().unwrap();
    for words in [
        "HTTPS",
        "served_over_tls",
        "trust_forwarded_proto",
        "localhost",
    ] {
        assert!(last.contains(words), "{last}");
    }
    assert!(last.contains("/settings/api-keys/api/openai"), "{last}");
    // The page warns only off loopback.
    let page = |host: &str| {
        Request::builder()
            .uri(SETTINGS)
            .header("x-user", "alice")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    assert!(
        !send(&t.app, page("127.0.0.1:3000"))
            .await
            .body
            .contains("plain HTTP")
    );
    assert!(
        send(&t.app, page("app.test"))
            .await
            .body
            .contains("plain HTTP")
    );
    // And it can be turned off.
    let t = web_with(|b| b.trust_forwarded_proto(false).allow_loopback_http(false));
    let a = send(&t.app, local_put("127.0.0.1:3000", &[])).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn web_keys_live_as_long_as_the_app_says() {
    let day = std::time::Duration::from_secs(24 * 3600);
    let expiry = |t: &TestApp, user: &'static str| {
        let byok = t.byok.clone();
        async move { byok.key_summary(user).await.unwrap()[0].expires_at }
    };
    // Default: no expiry, from the form and from the API.
    let t = app();
    let a = send(
        &t.app,
        form_post(
            &format!("{SETTINGS}/openai"),
            "alice",
            &form_body(OPENAI_KEY),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(expiry(&t, "alice").await, None);
    let a = send(
        &t.app,
        put_key(
            "openai",
            "bob",
            serde_json::json!({ "api_key": OPENAI_KEY }),
        ),
    )
    .await;
    assert!(a.json()["expires_at"].is_null(), "{}", a.body);
    assert_eq!(a.json()["expires"], "Never");
    let page = send(&t.app, page_of(SETTINGS, "alice")).await;
    assert!(page.body.contains("never expires"), "{}", page.body);
    assert!(
        !page.body.contains(r#"name="ttl""#),
        "no choice unless offered"
    );

    // A lifetime set by the app, shown as people read it.
    let t = web_with(|b| b.key_ttl(Some(day)));
    let a = send(
        &t.app,
        form_post(
            &format!("{SETTINGS}/openai"),
            "alice",
            &form_body(OPENAI_KEY),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let at = expiry(&t, "alice").await.unwrap();
    let left = at - byok_core::chrono::Utc::now();
    assert!(left > byok_core::chrono::Duration::hours(23), "{left}");
    let page = send(&t.app, page_of(SETTINGS, "alice")).await;
    assert!(page.body.contains("expires in 24 hours"), "{}", page.body);
    let a = send(&t.app, get_api(&format!("{SETTINGS}/api/openai"), "alice")).await;
    assert_eq!(a.json()["expires"], "Expires in 24 hours");
    // ttl_seconds: null is no expiry; a number is that many seconds.
    let a = send(
        &t.app,
        put_key(
            "openai",
            "bob",
            serde_json::json!({ "api_key": OPENAI_KEY, "ttl_seconds": null }),
        ),
    )
    .await;
    assert!(a.json()["expires_at"].is_null(), "{}", a.body);
    let a = send(
        &t.app,
        put_key(
            "openai",
            "carol",
            serde_json::json!({ "api_key": OPENAI_KEY, "ttl_seconds": 7200 }),
        ),
    )
    .await;
    assert_eq!(a.json()["expires"], "Expires in 2 hours");

    // A choice on the form.
    let t = web_with(|b| {
        b.key_ttl(Some(day))
            .lifetime_choices(byok_axum::LIFETIME_CHOICES)
    });
    let page = send(&t.app, page_of(SETTINGS, "alice")).await;
    assert!(
        page.body.contains(
            r#"<option value="86400" selected>1 day</option><option value="2592000">30 days</option><option value="never">until deleted</option>"#
        ),
        "{}",
        page.body
    );
    let post = |user: &'static str, ttl: &str| {
        form_post(
            &format!("{SETTINGS}/openai"),
            user,
            &format!("{}&ttl={ttl}", form_body(OPENAI_KEY)),
        )
    };
    assert_eq!(
        send(&t.app, post("alice", "never")).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(expiry(&t, "alice").await, None);
    assert_eq!(
        send(&t.app, post("bob", "2592000")).await.status,
        StatusCode::SEE_OTHER
    );
    let page = send(&t.app, page_of(SETTINGS, "bob")).await;
    assert!(page.body.contains("expires in 30 days"), "{}", page.body);
    let a = send(&t.app, post("carol", "12345")).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(a.body.contains("Choose one of the lifetimes listed."));
    assert!(providers_of(&t.byok, "carol").await.is_empty());
}

struct Groq;
impl KeyOf for Groq {
    const PROVIDERS: &'static [&'static str] = &["groq"];
}

async fn groq_extractor(RequireKey(key, ..): RequireKey<Groq>) -> String {
    format!("extractor {}", key.provider())
}

#[tokio::test]
async fn a_guard_offers_its_provider_on_the_page() {
    let byok = manager(Arc::new(MemoryStorage::new()));
    let web = ByokWeb::builder(byok.clone(), TrustedHeader::new("x-user".parse().unwrap()))
        .providers(["openai"])
        .trust_forwarded_proto(true)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/groq", get(chat))
        .route_layer(web.require_key("groq"))
        .route(
            "/mistral",
            get(|RequireKey(k, ..): RequireKey<Mistral>| async move { k.provider().to_owned() }),
        )
        .route("/groq-extract", get(groq_extractor))
        .merge(web.settings_router())
        .layer(web.layer());
    let page = send(&app, page_of(SETTINGS, "alice")).await;
    assert!(page.body.contains(r#"id="provider-groq""#), "{}", page.body);
    assert!(page.body.contains(r#"action="/settings/api-keys/groq""#));
    let a = send(&app, page_of("/groq", "alice")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(
        &app,
        form_post(
            &format!("{SETTINGS}/groq"),
            "alice",
            &form_body("gsk_abcdefghijklmnop"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(
        send(&app, get_api("/groq", "alice")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_api("/groq-extract", "alice")).await.body,
        "extractor groq"
    );
    // An extractor's provider is offered once a request has asked for it.
    let _ = send(&app, get_api("/mistral", "alice")).await;
    let page = send(&app, page_of(SETTINGS, "alice")).await;
    assert!(page.body.contains(r#"id="provider-mistral""#));
    assert_eq!(
        web.providers()
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["openai", "groq", "mistral"]
    );
}

struct Mistral;
impl KeyOf for Mistral {
    const PROVIDERS: &'static [&'static str] = &["mistral"];
}

#[tokio::test]
async fn form_errors_show_the_page_again_with_the_message_by_the_field() {
    let t = app();
    t.byok
        .set_key("alice", "anthropic", "sk-ant-abcdefghijklmnop", Ttl::Never)
        .await
        .unwrap();
    for (body, message) in [
        ("api_key=".to_owned(), "Enter your key."),
        ("api_key=+++".to_owned(), "Enter your key."),
        (
            format!("api_key={}", "k".repeat(9 * 1024)),
            "That is longer than any API key.",
        ),
        (
            "api_key=sk-abc%07defghijklmnop".to_owned(),
            "The key contains a character",
        ),
    ] {
        let a = send(
            &t.app,
            form_post(&format!("{SETTINGS}/openai"), "alice", &body),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(a.content_type().starts_with("text/html"));
        assert_no_store(&a);
        assert!(a.headers.contains_key(header::CONTENT_SECURITY_POLICY));
        // The whole page, with the user's other key, and the message right
        // after the form of that provider.
        assert!(a.body.contains("<h1>API keys</h1>"));
        assert!(a.body.contains("sk-a...mnop"), "{}", a.body);
        let openai = a.body.find(r#"id="provider-openai""#).unwrap();
        let error = a.body.find(r#"id="error-openai""#).unwrap();
        let anthropic = a.body.find(r#"id="provider-anthropic""#).unwrap();
        assert!(openai < error && error < anthropic, "{}", a.body);
        assert!(a.body[error..].contains(message), "{message}: {}", a.body);
        assert!(
            a.body
                .contains(r#"aria-invalid="true" aria-describedby="error-openai""#)
        );
        assert!(!a.body.contains("defghijklmnop") && !a.body.contains("kkkkkkkk"));
    }
    assert_eq!(providers_of(&t.byok, "alice").await, ["anthropic"]);
}

#[tokio::test]
async fn notices_cannot_be_faked_by_a_link() {
    let t = app();
    for uri in [
        format!("{SETTINGS}?saved=openai"),
        format!("{SETTINGS}?deleted=openai"),
        format!(
            "{SETTINGS}?notice=saved&provider=openai&at={}&sig=0123456789abcdef",
            byok_core::chrono::Utc::now().timestamp()
        ),
    ] {
        let page = send(&t.app, page_of(&uri, "alice")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains("class=\"notice\""), "{uri}");
    }
    let a = send(
        &t.app,
        form_post(
            &format!("{SETTINGS}/openai"),
            "alice",
            &form_body(OPENAI_KEY),
        ),
    )
    .await;
    let real = location(&a);
    assert!(
        send(&t.app, page_of(&real, "alice"))
            .await
            .body
            .contains("Saved your OpenAI key.")
    );
    // Another user's link, or a changed provider, shows nothing.
    assert!(
        !send(&t.app, page_of(&real, "bob"))
            .await
            .body
            .contains("class=\"notice\"")
    );
    let changed = real.replace("provider=openai", "provider=anthropic");
    assert!(
        !send(&t.app, page_of(&changed, "alice"))
            .await
            .body
            .contains("class=\"notice\"")
    );
}

#[tokio::test]
async fn guard_page_links_back_and_to_sign_in() {
    let t = web_with(|b| b.sign_in_url("/login"));
    let a = send(&t.app, page_of("/chat?q=hi%20there&x=1", "alice")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.body
            .contains(r#"href="/settings/api-keys?next=%2Fchat%3Fq%3Dhi%2520there%26x%3D1""#),
        "{}",
        a.body
    );
    // The settings page links back, and its forms carry the way back
    // through the save.
    let next = "/chat?q=hi%20there&x=1";
    let settings = format!("{SETTINGS}?next=%2Fchat%3Fq%3Dhi%2520there%26x%3D1");
    let page = send(&t.app, page_of(&settings, "alice")).await;
    assert!(
        page.body
            .contains(r#"<a id="back-link" href="/chat?q=hi%20there&amp;x=1">"#),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(r#"<input type="hidden" name="next" value="/chat?q=hi%20there&amp;x=1">"#)
    );
    let a = send(
        &t.app,
        form_post(
            &format!("{SETTINGS}/openai"),
            "alice",
            &format!(
                "{}&next=%2Fchat%3Fq%3Dhi%2520there%26x%3D1",
                form_body(OPENAI_KEY)
            ),
        ),
    )
    .await;
    let to = location(&a);
    assert!(
        to.ends_with("&next=%2Fchat%3Fq%3Dhi%2520there%26x%3D1"),
        "{to}"
    );
    let page = send(&t.app, page_of(&to, "alice")).await;
    assert!(page.body.contains("Saved your OpenAI key."));
    assert!(
        page.body
            .contains(&format!(r#"href="{}""#, next.replace('&', "&amp;")))
    );
    // Only this site's paths.
    for bad in [
        "//evil.test/x",
        "https://evil.test/",
        "/\\evil.test",
        "javascript:alert(1)",
        "/%0d%0aSet-Cookie:x",
    ] {
        let uri = format!(
            "{SETTINGS}?next={}",
            bad.replace('/', "%2F")
                .replace('\\', "%5C")
                .replace(':', "%3A")
        );
        let page = send(&t.app, page_of(&uri, "alice")).await;
        assert_eq!(page.status, StatusCode::OK, "{bad}");
        assert!(!page.body.contains("back-link"), "{bad}: {}", page.body);
        assert!(!page.body.contains("evil.test"), "{bad}");
    }
    // Without a user: a link to the app's sign-in page, which leads back.
    let a = send(
        &t.app,
        Request::builder()
            .uri("/chat?q=1")
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        a.body
            .contains(r#"<a id="sign-in-link" href="/login?next=%2Fchat%3Fq%3D1">Sign in</a>"#),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn trailing_slash_serves_the_page() {
    let t = app();
    let a = send(&t.app, page_of(&format!("{SETTINGS}/"), "alice")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("<h1>API keys</h1>"));
    assert_no_store(&a);
}

#[tokio::test]
async fn guard_pages_carry_the_settings_pages_headers() {
    let t = app();
    let settings = send(&t.app, page_of(SETTINGS, "alice")).await;
    let csp = settings.headers[header::CONTENT_SECURITY_POLICY].clone();
    assert!(csp.to_str().unwrap().contains("default-src 'none'"));
    for request in [
        page_of("/chat", "alice"),
        page_of("/extract", "alice"),
        Request::builder()
            .uri("/chat")
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap(),
    ] {
        let a = send(&t.app, request).await;
        assert!(a.status.is_client_error());
        assert!(a.content_type().starts_with("text/html"));
        assert_eq!(
            a.headers[header::CONTENT_SECURITY_POLICY],
            csp,
            "{}",
            a.body
        );
        assert_eq!(a.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        // Same-origin, so that a browser's form post carries its Origin.
        assert_eq!(a.headers[header::REFERRER_POLICY], "same-origin");
        assert_no_store(&a);
    }
}

#[tokio::test]
async fn layout_and_texts_can_be_replaced() {
    let t = web_with(|b| {
        b.texts(byok_axum::Texts {
            lang: "de".into(),
            title: "API-Schlüssel".into(),
            save: "Speichern".into(),
            no_key: "Kein Schlüssel.".into(),
            key_required_title: "API-Schlüssel nötig".into(),
            ..byok_axum::Texts::default()
        })
        .layout(|page: &byok_axum::Page<'_>| {
            format!(
                "<!DOCTYPE html><html lang=\"{}\"><title>{}</title><nav>My app</nav><main>{}</main></html>",
                page.lang, page.title, page.body
            )
        })
    });
    let page = send(&t.app, page_of(SETTINGS, "alice")).await;
    assert!(page.body.starts_with("<!DOCTYPE html><html lang=\"de\"><title>API-Schlüssel</title><nav>My app</nav><main><h1>API-Schlüssel</h1>"), "{}", page.body);
    assert!(page.body.contains("Kein Schlüssel.") && page.body.contains(">Speichern<"));
    let guard = send(&t.app, page_of("/chat", "alice")).await;
    assert!(
        guard
            .body
            .contains("<nav>My app</nav><main><h1>API-Schlüssel nötig</h1>"),
        "{}",
        guard.body
    );
    let a = send(
        &t.app,
        form_post(&format!("{SETTINGS}/openai"), "alice", "api_key=+"),
    )
    .await;
    assert!(a.body.contains("<nav>My app</nav>") && a.body.contains("Enter your key."));
}

#[tokio::test]
async fn a_repeated_identity_header_is_refused() {
    let logs = Logs::default();
    let _guard = logs.install();
    let t = app();
    t.byok
        .set_key("alice", "openai", OPENAI_KEY, Ttl::Never)
        .await
        .unwrap();
    for uri in [
        "/chat",
        "/extract",
        &format!("{SETTINGS}/api/openai"),
        SETTINGS,
    ] {
        let request = Request::builder()
            .uri(uri)
            .header("x-user", "alice")
            .header("x-user", "mallory")
            .header("x-forwarded-proto", "https")
            .body(Body::empty())
            .unwrap();
        let a = send(&t.app, request).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.body);
        assert_eq!(a.json()["type"], "tag:byok-rs,2026:problem:bad-identity");
        assert!(!a.body.contains("alice") && !a.body.contains("sk-p"));
    }
    let a = send(
        &t.app,
        api(Method::DELETE, &format!("{SETTINGS}/api/openai"), "mallory")
            .header("x-user", "alice")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(t.byok.has_key("alice", "openai").await.unwrap());
    assert!(!logs.text().contains("ERROR"), "{}", logs.text());
}

#[tokio::test]
async fn a_non_ascii_identity_header_is_a_clear_400() {
    let logs = Logs::default();
    let _guard = logs.install();
    let t = app();
    for uri in ["/chat", SETTINGS] {
        let request = Request::builder()
            .uri(uri)
            .header(
                "x-user",
                axum::http::HeaderValue::from_bytes("José".as_bytes()).unwrap(),
            )
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap();
        let a = send(&t.app, request).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(a.body.contains("not visible ASCII"), "{}", a.body);
    }
    let text = logs.text();
    assert!(!text.contains("ERROR"), "{text}");
    assert!(
        text.contains("WARN") && text.contains("bad-identity"),
        "{text}"
    );
}

#[tokio::test]
async fn the_extractor_guard_marks_its_answers_no_store() {
    let t = app();
    t.byok
        .set_key("alice", "openai", OPENAI_KEY, Ttl::Never)
        .await
        .unwrap();
    let a = send(&t.app, get_api("/extract", "alice")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_no_store(&a);
    // A handler's own Cache-Control stays, as with the layer.
    let web = ByokWeb::builder(
        t.byok.clone(),
        TrustedHeader::new("x-user".parse().unwrap()),
    )
    .build()
    .unwrap();
    let app = Router::new()
        .route("/own", get(chat_no_cache_override))
        .route("/plain", get(|| async { "no key here" }))
        .layer(web.layer());
    let a = send(&app, get_api("/own", "alice")).await;
    assert_eq!(a.headers[header::CACHE_CONTROL], "private, max-age=5");
    let a = send(&app, get_api("/plain", "alice")).await;
    assert!(
        !a.headers.contains_key(header::CACHE_CONTROL),
        "only answers made with a key"
    );
}

#[tokio::test]
async fn provider_ids_are_percent_encoded_in_every_url() {
    let odd = "team/a?b#c d";
    let byok = manager(Arc::new(MemoryStorage::new()));
    let web = ByokWeb::builder(byok.clone(), TrustedHeader::new("x-user".parse().unwrap()))
        .providers(["openai", odd])
        .trust_forwarded_proto(true)
        .build()
        .unwrap();
    let app = app_of(&web);
    let page = send(&app, page_of(SETTINGS, "alice")).await;
    let action = "/settings/api-keys/team%2Fa%3Fb%23c%20d";
    assert!(
        page.body.contains(&format!(r#"action="{action}""#)),
        "{}",
        page.body
    );
    let a = send(&app, form_post(action, "alice", &form_body(OPENAI_KEY))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(
        location(&a).contains("provider=team%2Fa%3Fb%23c%20d"),
        "{}",
        location(&a)
    );
    assert_eq!(providers_of(&byok, "alice").await, [odd]);
    let page = send(&app, page_of(&location(&a), "alice")).await;
    assert!(page.body.contains("Saved your"), "{}", page.body);
    assert!(page.body.contains(&format!(r#"action="{action}/delete""#)));
    let a = send(
        &app,
        get_api(&format!("{SETTINGS}/api/team%2Fa%3Fb%23c%20d"), "alice"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = send(&app, form_post(&format!("{action}/delete"), "alice", "")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(providers_of(&byok, "alice").await.is_empty());
}

#[tokio::test]
async fn referer_is_checked_when_origin_is_absent() {
    let t = web_with(|b| b.trusted_origins(["https://public.example"]));
    t.byok
        .set_key("alice", "openai", OPENAI_KEY, Ttl::Never)
        .await
        .unwrap();
    let post = |referer: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(format!("{SETTINGS}/openai"))
            .header("x-user", "alice")
            .header(header::HOST, "app.test")
            .header("x-forwarded-proto", "https")
            .header(header::REFERER, referer)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form_body("sk-attacker-key-0000000000")))
            .unwrap()
    };
    for referer in [
        "https://evil.test/page",
        "https://app.test.evil.test/",
        "garbage",
    ] {
        let a = send(&t.app, post(referer)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{referer}");
    }
    assert_eq!(
        t.byok
            .require_key("alice", "openai")
            .await
            .unwrap()
            .expose_secret(),
        OPENAI_KEY
    );
    for referer in [
        "https://app.test/settings/api-keys",
        "https://public.example/settings",
    ] {
        let a = send(&t.app, post(referer)).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{referer}");
    }
}

/// A memory store whose reads and writes take a moment, as a server's do,
/// so that racing requests overlap.
#[derive(Debug, Default)]
struct SlowStorage(MemoryStorage);

async fn pause() {
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
}

#[deny(clippy::missing_trait_methods)]
#[byok_core::async_trait]
impl KeyStorage for SlowStorage {
    async fn store(&self, key: &ApiKey) -> byok_core::Result<()> {
        pause().await;
        self.0.store(key).await
    }
    async fn store_if_absent(&self, key: &ApiKey) -> byok_core::Result<bool> {
        pause().await;
        self.0.store_if_absent(key).await
    }
    async fn retrieve(&self, u: &str, p: &str) -> byok_core::Result<Option<ApiKey>> {
        pause().await;
        self.0.retrieve(u, p).await
    }
    async fn delete(&self, u: &str, p: &str) -> byok_core::Result<bool> {
        self.0.delete(u, p).await
    }
    async fn list_providers(&self, u: &str) -> byok_core::Result<Vec<String>> {
        self.0.list_providers(u).await
    }
    async fn clear_all(&self, u: &str) -> byok_core::Result<u64> {
        self.0.clear_all(u).await
    }
    async fn purge_expired(&self) -> byok_core::Result<u64> {
        self.0.purge_expired().await
    }
    async fn compare_and_swap(&self, a: &ApiKey, b: &ApiKey) -> byok_core::Result<bool> {
        self.0.compare_and_swap(a, b).await
    }
    async fn scan(&self, c: Option<&Cursor>, n: usize) -> byok_core::Result<ScanPage> {
        self.0.scan(c, n).await
    }
    async fn retrieve_value(&self, u: &str, p: &str) -> byok_core::Result<Option<Arc<[u8]>>> {
        pause().await;
        self.0.retrieve_value(u, p).await
    }
    async fn user_keys(&self, u: &str) -> byok_core::Result<Vec<ApiKey>> {
        pause().await;
        self.0.user_keys(u).await
    }
    async fn store_check(&self, u: &str, p: &str, check: &str) -> byok_core::Result<bool> {
        self.0.store_check(u, p, check).await
    }
    async fn checks(&self, u: &str) -> byok_core::Result<Vec<(String, String)>> {
        self.0.checks(u).await
    }
    fn as_fast_tier(&self) -> Option<&dyn byok_core::FastTier> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_racing_puts_only_the_one_that_created_the_key_says_201() {
    let byok = manager(Arc::new(SlowStorage::default()));
    let web = ByokWeb::builder(byok, TrustedHeader::new("x-user".parse().unwrap()))
        .trust_forwarded_proto(true)
        .build()
        .unwrap();
    let app = app_of(&web);
    for user in ["alice", "bob", "carol"] {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let body = serde_json::json!({ "api_key": format!("sk-race-{i:04}-abcdefghijkl") });
                send(&app, put_key("openai", user, body)).await.status
            }));
        }
        let mut created = 0;
        for task in tasks {
            let status = task.await.unwrap();
            assert!(
                status == StatusCode::CREATED || status == StatusCode::OK,
                "{status}"
            );
            created += usize::from(status == StatusCode::CREATED);
        }
        assert_eq!(created, 1, "{user}");
    }
}

/// Two app instances, each with its own manager and its own connections to
/// one SQLite file, as two processes of one app would be: of racing `PUT`s
/// spread over both, only the one that created the key says `201`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_racing_puts_across_app_instances_only_one_says_201() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let keyring = Keyring::new(1, MasterKey::generate());
    let mut apps = Vec::new();
    for _ in 0..2 {
        let store = byok_sql::SqliteStorage::connect(&url, &config())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let byok = Byok::new(Arc::new(store), keyring.clone(), config()).unwrap();
        let web = ByokWeb::builder(byok, TrustedHeader::new("x-user".parse().unwrap()))
            .trust_forwarded_proto(true)
            .build()
            .unwrap();
        apps.push(app_of(&web));
    }
    for user in ["alice", "bob", "carol", "dave"] {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let app = apps[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let body = serde_json::json!({ "api_key": format!("sk-race-{i:04}-abcdefghijkl") });
                send(&app, put_key("openai", user, body)).await.status
            }));
        }
        let mut created = 0;
        for task in tasks {
            let status = task.await.unwrap();
            assert!(
                status == StatusCode::CREATED || status == StatusCode::OK,
                "{status}"
            );
            created += usize::from(status == StatusCode::CREATED);
        }
        assert_eq!(created, 1, "{user}");
    }
}

#[tokio::test]
async fn log_lines_name_the_full_path() {
    let logs = Logs::default();
    let _guard = logs.install();
    let web = ByokWeb::builder(
        manager(Arc::new(DownStorage)),
        TrustedHeader::new("x-user".parse().unwrap()),
    )
    .build()
    .unwrap();
    let inner = Router::new()
        .route("/chat", get(chat))
        .route_layer(web.require_key("openai"));
    let app = Router::new()
        .nest("/v1", inner)
        .merge(web.settings_router())
        .layer(web.layer());
    let a = send(&app, get_api("/v1/chat", "alice")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let a = send(
        &app,
        api(Method::DELETE, &format!("{SETTINGS}/api/openai"), "alice")
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let text = logs.text();
    assert!(
        text.contains("path=\"/v1/chat\"") || text.contains("path=/v1/chat"),
        "{text}"
    );
    assert!(text.contains("/settings/api-keys/api/openai"), "{text}");
}

#[tokio::test]
async fn a_rejection_logs_once_when_answered_and_keeps_its_source() {
    use std::error::Error as _;
    let logs = Logs::default();
    let _guard = logs.install();
    let r = byok_axum::ByokRejection::from(down());
    assert!(
        logs.text().is_empty(),
        "nothing logged on conversion: {}",
        logs.text()
    );
    let source = r.source().expect("the byok error is the source");
    assert!(source.downcast_ref::<byok_core::ByokError>().is_some());
    assert!(source.to_string().contains("the test store is down"));
    let response = r.clone().into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = logs.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("WARN") && text.contains("the test store is down"),
        "{text}"
    );
    // Through a route: one line per failed request.
    let web = ByokWeb::builder(
        manager(Arc::new(DownStorage)),
        TrustedHeader::new("x-user".parse().unwrap()),
    )
    .build()
    .unwrap();
    let before = logs.text().lines().count();
    let a = send(&app_of(&web), get_api("/chat", "alice")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let after: Vec<String> = logs
        .text()
        .lines()
        .skip(before)
        .map(str::to_owned)
        .collect();
    let warnings: Vec<&String> = after
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert_eq!(warnings.len(), 1, "{after:?}");
}

/// Key checks against the stub provider on loopback (the `checks` feature).
#[cfg(feature = "checks")]
mod checks {
    use std::time::Duration;

    use byok_check::{CheckClient, CheckPolicy, Checker, HttpProber};
    use byok_testkit::provider_stub::{
        ProviderStub, RETRY_AFTER_SECS, Scenario, StubAnswer, StubProvider, answer,
    };

    use super::*;

    const TYPED: &str = "sk-proj-TYPED-canary-5e1d7a3b9c";

    /// A client that may reach the stub: loopback over plain HTTP, allowed
    /// here only. The timeout is well under the stub's slow answer.
    fn test_client() -> CheckClient {
        CheckClient::new(
            CheckPolicy::default()
                .allow_http(true)
                .allow_private_addresses(true)
                .timeout(Duration::from_millis(800)),
        )
        .unwrap()
    }

    fn openai_at(client: &CheckClient, stub: &ProviderStub) -> Checker {
        Checker::new().register(
            HttpProber::openai(client)
                .with_base_url(&format!("{}/v1", stub.url()))
                .unwrap(),
        )
    }

    async fn check_app(before_saving: bool) -> (TestApp, ProviderStub) {
        let stub = ProviderStub::start().await.unwrap();
        let checker = openai_at(&test_client(), &stub);
        let t = web_with(|b| b.checker(checker).check_before_saving(before_saving));
        (t, stub)
    }

    fn test_typed(key: &str) -> Request<Body> {
        form_post(
            &format!("{SETTINGS}/openai/check"),
            "alice",
            &form_body(key),
        )
    }

    fn test_saved() -> Request<Body> {
        form_post(&format!("{SETTINGS}/openai/check"), "alice", "")
    }

    /// The text of the check's result in the OpenAI row, and its outcome.
    fn result_of(a: &Answer) -> (String, String) {
        let at = a
            .body
            .find("id=\"check-openai\"")
            .unwrap_or_else(|| panic!("no result in the page: {}", a.body));
        let start = a.body[..at].rfind("<p").unwrap();
        let element = &a.body[start..];
        let tag = &element[..element.find('>').unwrap()];
        // One class attribute (a browser reads only the first).
        assert_eq!(tag.matches("class=").count(), 1, "{tag}");
        let class = tag
            .split("class=\"check-result check-")
            .nth(1)
            .and_then(|c| c.split('"').next())
            .unwrap_or_else(|| panic!("no outcome in {tag}"))
            .to_owned();
        let text =
            element[element.find('>').unwrap() + 1..element.find("</p>").unwrap()].to_owned();
        (class, text)
    }

    #[tokio::test]
    async fn checks_are_limited_per_user() {
        let stub = ProviderStub::start().await.unwrap();
        let checker = openai_at(&test_client(), &stub);
        let t = web_with(|b| b.checker(checker).checks_per_minute(2));
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
        for _ in 0..2 {
            let a = send(&t.app, test_typed(TYPED)).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        }
        let a = send(&t.app, test_typed(TYPED)).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
        let wait: u64 = a.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        assert!(!a.body.contains("TYPED-canary"), "the key is echoed");
        assert_eq!(
            stub.requests().len(),
            2,
            "the refused check reached the provider"
        );
        // The JSON route counts against the same share.
        let api = send(
            &t.app,
            form_post(&format!("{SETTINGS}/api/openai/check"), "alice", ""),
        )
        .await;
        assert_eq!(api.status, StatusCode::TOO_MANY_REQUESTS, "{}", api.body);
        // Another user has a share of their own.
        let bob = send(
            &t.app,
            form_post(
                &format!("{SETTINGS}/openai/check"),
                "bob",
                &form_body(TYPED),
            ),
        )
        .await;
        assert_eq!(bob.status, StatusCode::OK, "{}", bob.body);
    }

    /// The words and outcome of the last check shown in the OpenAI row.
    fn last_check_of(a: &Answer) -> (String, String) {
        let at = a
            .body
            .find("id=\"last-check-openai\"")
            .unwrap_or_else(|| panic!("no last check in the page: {}", a.body));
        let start = a.body[..at].rfind("<p").unwrap();
        let element = &a.body[start..];
        let tag = &element[..element.find('>').unwrap()];
        let class = tag
            .split("class=\"")
            .nth(1)
            .and_then(|c| c.split('"').next())
            .unwrap_or_else(|| panic!("no class in {tag}"))
            .to_owned();
        let text =
            element[element.find('>').unwrap() + 1..element.find("</p>").unwrap()].to_owned();
        (class, text)
    }

    async fn settings_page(t: &TestApp) -> Answer {
        let a = send(&t.app, page_of(SETTINGS, "alice")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a
    }

    #[tokio::test]
    async fn the_last_check_of_a_saved_key_is_kept_shown_and_cleared_by_a_new_key() {
        let (t, stub) = check_app(false).await;
        let a = send(
            &t.app,
            form_post(
                &format!("{SETTINGS}/openai"),
                "alice",
                &form_body(OPENAI_KEY),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let page = settings_page(&t).await;
        assert_eq!(
            last_check_of(&page),
            (
                "meta last-check not-checked".to_owned(),
                "Not checked yet.".to_owned()
            )
        );

        // A test of the saved key: shown at once, and kept for the next visit.
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::NoCredit));
        let a = send(&t.app, test_saved()).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let words = "This key is valid but the account has no credit.";
        assert_eq!(
            result_of(&a),
            ("out_of_credit".to_owned(), words.to_owned())
        );
        let kept = (
            "meta last-check last-check-out_of_credit".to_owned(),
            format!("Checked less than a minute ago: {words}"),
        );
        assert_eq!(last_check_of(&a), kept);
        let page = settings_page(&t).await;
        assert_eq!(last_check_of(&page), kept);
        assert!(!page.body.contains("id=\"check-openai\""), "{}", page.body);

        // The JSON API lists it with the key.
        let a = send(&t.app, get_api(&format!("{SETTINGS}/api"), "alice")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let check = &a.json()["providers"][0]["key"]["last_check"];
        assert_eq!(check["outcome"], "out_of_credit", "{}", a.body);
        assert_eq!(
            check["summary"],
            "The key is valid but the account has no credit or quota left."
        );
        assert!(check["checked_at"].is_string(), "{}", a.body);
        assert!(!a.body.contains(OPENAI_KEY));

        // A typed key's test keeps nothing: the saved key's check stays.
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
        let a = send(&t.app, test_typed(TYPED)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(result_of(&a).0, "invalid");
        assert_eq!(last_check_of(&settings_page(&t).await), kept);

        // The JSON route's check of the saved key is kept too.
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
        let a = send(
            &t.app,
            api(
                Method::POST,
                &format!("{SETTINGS}/api/openai/check"),
                "alice",
            )
            .body(Body::empty())
            .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(
            last_check_of(&settings_page(&t).await),
            (
                "meta last-check last-check-valid".to_owned(),
                "Checked less than a minute ago: OpenAI accepted this key.".to_owned()
            )
        );

        // A new key starts unchecked, on the page and in the JSON API.
        let a = send(
            &t.app,
            form_post(
                &format!("{SETTINGS}/openai"),
                "alice",
                &form_body("sk-proj-a-new-key-0000000000000"),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(
            last_check_of(&settings_page(&t).await).1,
            "Not checked yet."
        );
        let a = send(&t.app, get_api(&format!("{SETTINGS}/api"), "alice")).await;
        assert!(
            a.json()["providers"][0]["key"]["last_check"].is_null(),
            "{}",
            a.body
        );
    }

    #[tokio::test]
    async fn a_kept_check_is_escaped_and_an_unknown_outcome_shows_its_summary() {
        let (t, _stub) = check_app(false).await;
        t.byok
            .set_key("alice", "openai", OPENAI_KEY, byok_core::Ttl::Never)
            .await
            .unwrap();
        let record =
            byok_core::CheckRecord::new("something_new", "<script>alert(1)</script> & \"quoted\"")
                .unwrap();
        assert!(
            t.byok
                .record_check("alice", "openai", &record)
                .await
                .unwrap()
        );
        let page = settings_page(&t).await;
        assert!(!page.body.contains("<script>alert"), "{}", page.body);
        assert_eq!(
            last_check_of(&page),
            (
                "meta last-check last-check-something_new".to_owned(),
                "Checked less than a minute ago: &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"
                    .to_owned()
            )
        );
    }

    #[tokio::test]
    async fn without_a_checker_only_a_kept_check_is_shown_in_the_apps_words() {
        let texts = byok_axum::Texts {
            checked: "Geprüft vor {time}: {result}".into(),
            check_invalid: "{provider} lehnt diesen Schlüssel ab.".into(),
            ..byok_axum::Texts::default()
        };
        let t = web_with(|b| b.texts(texts));
        t.byok
            .set_key("alice", "openai", OPENAI_KEY, byok_core::Ttl::Never)
            .await
            .unwrap();
        // No Test on the page, so no "Not checked yet" either.
        let page = settings_page(&t).await;
        assert!(!page.body.contains("last-check"), "{}", page.body);
        // A check kept elsewhere (`byok test`, another app) is shown.
        let record =
            byok_core::CheckRecord::new("invalid", "The provider does not accept this key.")
                .unwrap();
        assert!(
            t.byok
                .record_check("alice", "openai", &record)
                .await
                .unwrap()
        );
        assert_eq!(
            last_check_of(&settings_page(&t).await),
            (
                "meta last-check last-check-invalid".to_owned(),
                "Geprüft vor less than a minute: OpenAI lehnt diesen Schlüssel ab.".to_owned()
            )
        );
    }

    #[tokio::test]
    async fn every_result_is_shown_in_plain_words() {
        let (t, stub) = check_app(false).await;
        let cases = [
            (
                answer(StubProvider::OpenAi, Scenario::Valid),
                "valid",
                "OpenAI accepted this key.".to_owned(),
            ),
            (
                answer(StubProvider::OpenAi, Scenario::InvalidKey),
                "invalid",
                "OpenAI does not accept this key.".to_owned(),
            ),
            (
                answer(StubProvider::OpenAi, Scenario::NoCredit),
                "out_of_credit",
                "This key is valid but the account has no credit.".to_owned(),
            ),
            (
                answer(StubProvider::OpenAi, Scenario::RateLimited),
                "rate_limited",
                format!(
                    "The provider is rate-limiting this key; try again in {RETRY_AFTER_SECS} seconds."
                ),
            ),
            (
                StubAnswer::json(
                    429,
                    r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
                ),
                "rate_limited",
                "The provider is rate-limiting this key; try again later.".to_owned(),
            ),
            (
                answer(StubProvider::OpenAi, Scenario::RegionBlocked),
                "region_blocked",
                "OpenAI does not serve the region this app runs in.".to_owned(),
            ),
            (
                StubAnswer::json(
                    403,
                    r#"{"error":{"message":"You have insufficient permissions for this operation.","type":"invalid_request_error","code":null}}"#,
                ),
                "forbidden",
                "OpenAI knows this key but does not allow it to be used here.".to_owned(),
            ),
            (
                answer(StubProvider::OpenAi, Scenario::ServerError),
                "unavailable",
                "The provider could not be reached; try again later.".to_owned(),
            ),
            (
                answer(StubProvider::OpenAi, Scenario::Slow),
                "unavailable",
                "The provider could not be reached; try again later.".to_owned(),
            ),
            (
                StubAnswer::json(418, "{}"),
                "unknown",
                "OpenAI gave an answer that does not say whether this key works.".to_owned(),
            ),
        ];
        for (stubbed, outcome, words) in cases {
            stub.clear_requests();
            stub.set_answer(stubbed);
            let a = send(&t.app, test_typed(&format!(" {TYPED}\n"))).await;
            assert_eq!(a.status, StatusCode::OK, "{outcome}: {}", a.body);
            assert_no_store(&a);
            assert_eq!(result_of(&a), (outcome.to_owned(), words), "{outcome}");
            assert!(
                !a.body.contains("TYPED-canary"),
                "{outcome}: the key is echoed"
            );
            // The trimmed key went to the provider, in its header only.
            let seen = stub.requests();
            assert_eq!(seen.len(), 1, "{outcome}");
            assert_eq!(
                seen[0].header("authorization"),
                Some(&*format!("Bearer {TYPED}"))
            );
            assert!(!seen[0].path.contains("canary"));
        }
        assert!(
            providers_of(&t.byok, "alice").await.is_empty(),
            "a test stores nothing"
        );
    }

    #[tokio::test]
    async fn a_check_that_cannot_be_made_says_so_and_defaults_stay_strict() {
        // The default policy refuses the stub (plain HTTP on loopback).
        let stub = ProviderStub::start().await.unwrap();
        let strict = CheckClient::new(CheckPolicy::default()).unwrap();
        let checker = openai_at(&strict, &stub);
        let t = web_with(|b| b.checker(checker));
        let a = send(&t.app, test_typed(TYPED)).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            result_of(&a),
            (
                "error".to_owned(),
                "This key could not be checked.".to_owned()
            )
        );
        assert!(stub.requests().is_empty(), "nothing was sent");
        let a = send(
            &t.app,
            api(
                Method::POST,
                &format!("{SETTINGS}/api/openai/check"),
                "alice",
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(format!(r#"{{"api_key":"{TYPED}"}}"#)))
            .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.body);
        assert_eq!(
            a.json()["type"]
                .as_str()
                .map(|t| t.ends_with("check-failed")),
            Some(true)
        );
        assert!(!a.body.contains("canary"));

        // Before saving, a check that cannot be made saves with a warning.
        let checker = openai_at(&strict, &stub);
        let t = web_with(|b| b.checker(checker).check_before_saving(true));
        let a = send(
            &t.app,
            form_post(&format!("{SETTINGS}/openai"), "alice", &form_body(TYPED)),
        )
        .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let page = send(&t.app, page_of(&location(&a), "alice")).await;
        assert!(
            page.body.contains(
                "Saved your OpenAI key without confirming that it works: This key could not be checked."
            ),
            "{}",
            page.body
        );
        let a = send(
            &t.app,
            put_key("openai", "bob", serde_json::json!({ "api_key": TYPED })),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED);
        assert_eq!(a.json()["check"]["outcome"], "error");
        assert!(t.byok.has_key("alice", "openai").await.unwrap());
        assert!(stub.requests().is_empty(), "nothing was sent");
    }

    #[tokio::test]
    async fn test_buttons_check_the_saved_key_or_the_typed_one() {
        let (t, stub) = check_app(false).await;
        // Before a key is saved: a Test beside the input only, and none for
        // a provider the checker does not know.
        let a = send(&t.app, page_of(SETTINGS, "alice")).await;
        let openai = &a.body[a.body.find("id=\"provider-openai\"").unwrap()..];
        let openai = &openai[..openai.find("</section>").unwrap()];
        assert!(
            openai.contains("formaction=\"/settings/api-keys/openai/check\""),
            "{openai}"
        );
        assert!(!openai.contains("test-saved"));
        let anthropic = &a.body[a.body.find("id=\"provider-anthropic\"").unwrap()..];
        assert!(!anthropic[..anthropic.find("</section>").unwrap()].contains("Test"));
        let a = send(&t.app, test_saved()).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "no saved key");
        let a = send(
            &t.app,
            form_post(
                &format!("{SETTINGS}/anthropic/check"),
                "alice",
                &form_body(TYPED),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "no check for anthropic");

        // The saved key: the form without a key, and the API without a body.
        t.byok
            .set_key("alice", "openai", OPENAI_KEY, Ttl::Never)
            .await
            .unwrap();
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
        let a = send(&t.app, page_of(SETTINGS, "alice")).await;
        assert!(a.body.contains("test-saved"));
        let a = send(&t.app, test_saved()).await;
        assert_eq!(result_of(&a).0, "valid");
        let a = send(
            &t.app,
            api(
                Method::POST,
                &format!("{SETTINGS}/api/openai/check"),
                "alice",
            )
            .body(Body::empty())
            .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.json()["outcome"], "valid");
        assert_eq!(a.json()["models"][0], "gpt-4o-mini");
        let seen = stub.requests();
        assert_eq!(seen.len(), 2);
        for r in &seen {
            assert_eq!(
                r.header("authorization"),
                Some(&*format!("Bearer {OPENAI_KEY}"))
            );
        }

        // A typed key through the API: checked, never stored.
        stub.clear_requests();
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
        let a = send(
            &t.app,
            api(Method::POST, &format!("{SETTINGS}/api/openai/check"), "bob")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(r#"{{"api_key":"{TYPED}"}}"#)))
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.json()["outcome"], "invalid");
        assert_eq!(a.json()["status"], 401);
        assert!(!a.body.contains("canary"));
        assert_eq!(
            stub.requests()[0].header("authorization"),
            Some(&*format!("Bearer {TYPED}"))
        );
        assert!(providers_of(&t.byok, "bob").await.is_empty());
        assert_eq!(
            t.byok
                .require_key("alice", "openai")
                .await
                .unwrap()
                .expose_secret(),
            OPENAI_KEY,
            "a test of a typed key leaves the saved one"
        );

        // Bad input: clear statuses, and no request to the provider.
        stub.clear_requests();
        let check = format!("{SETTINGS}/api/openai/check");
        for (content_type, body, status) in [
            (
                "text/plain",
                format!(r#"{{"api_key":"{TYPED}"}}"#),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                "application/json",
                format!(r#"{{"api_key":"{TYPED}""#),
                StatusCode::BAD_REQUEST,
            ),
            (
                "application/json",
                format!(r#"{{"api_key":"{TYPED}","x":1}}"#),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "application/json",
                r#"{"api_key":"  "}"#.to_owned(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ] {
            let a = send(
                &t.app,
                api(Method::POST, &check, "bob")
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
            assert_eq!(a.status, status, "{}", a.body);
            assert!(!a.body.contains("canary"));
        }
        let a = send(&t.app, test_typed("   ")).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(a.body.contains("id=\"error-openai\""), "{}", a.body);
        assert!(stub.requests().is_empty());
        let a = send(
            &t.app,
            api(Method::POST, &format!("{SETTINGS}/api/nope/check"), "bob")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_typed_key_is_never_stored_echoed_or_logged() {
        let logs = Logs::default();
        let _guard = logs.install();
        let (t, stub) = check_app(false).await;
        let mut seen = String::new();
        for scenario in [Scenario::Valid, Scenario::InvalidKey, Scenario::ServerError] {
            stub.set_answer(answer(StubProvider::OpenAi, scenario));
            let a = send(&t.app, test_typed(TYPED)).await;
            assert_eq!(a.status, StatusCode::OK);
            seen.push_str(&format!("{:?} {}\n", a.headers, a.body));
            let a = send(
                &t.app,
                api(
                    Method::POST,
                    &format!("{SETTINGS}/api/openai/check"),
                    "alice",
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(r#"{{"api_key":"{TYPED}"}}"#)))
                .unwrap(),
            )
            .await;
            assert_eq!(a.status, StatusCode::OK);
            seen.push_str(&format!("{:?} {}\n", a.headers, a.body));
        }
        assert_eq!(stub.requests().len(), 6, "every test asked the provider");
        assert!(providers_of(&t.byok, "alice").await.is_empty());
        assert!(seen.contains("OpenAI accepted this key."));
        assert!(
            !seen.contains("TYPED-canary"),
            "an answer holds the key:\n{seen}"
        );
        let logs = logs.text();
        // What is logged depends on which callsites other tests enabled
        // first; that something is, not.
        assert!(!logs.is_empty());
        assert!(
            !logs.contains("TYPED-canary"),
            "a log line holds the key:\n{logs}"
        );
    }

    #[tokio::test]
    async fn tests_are_refused_cross_site_and_typed_keys_over_plain_http() {
        let (t, stub) = check_app(false).await;
        let forged = Request::builder()
            .method(Method::POST)
            .uri(format!("{SETTINGS}/openai/check"))
            .header("x-user", "alice")
            .header(header::HOST, "app.test")
            .header("x-forwarded-proto", "https")
            .header("sec-fetch-site", "cross-site")
            .header(header::ORIGIN, "https://evil.test")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form_body(TYPED)))
            .unwrap();
        let a = send(&t.app, forged).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        let forged_api = Request::builder()
            .method(Method::POST)
            .uri(format!("{SETTINGS}/api/openai/check"))
            .header("x-user", "alice")
            .header(header::ORIGIN, "https://evil.test")
            .body(Body::empty())
            .unwrap();
        let a = send(&t.app, forged_api).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);

        // Plain HTTP from another machine in production: a typed key is
        // refused, a saved key (no secret in the request) may be tested.
        t.byok
            .set_key("alice", "openai", OPENAI_KEY, Ttl::Never)
            .await
            .unwrap();
        let plain = |body: &str| {
            let mut r = form_post(&format!("{SETTINGS}/openai/check"), "alice", body);
            r.headers_mut().remove("x-forwarded-proto");
            r
        };
        let a = send(&t.app, plain(&form_body(TYPED))).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        assert!(
            stub.requests().is_empty(),
            "nothing was sent for refused tests"
        );
        let a = send(&t.app, plain("")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(stub.requests().len(), 1);
    }

    #[tokio::test]
    async fn without_a_checker_there_is_no_test_and_words_can_be_translated() {
        let t = web_with(|b| b);
        let page = send(&t.app, page_of(SETTINGS, "alice")).await;
        assert!(!page.body.contains("/check") && !page.body.contains(">Test<"));
        let a = send(&t.app, test_typed(TYPED)).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = send(
            &t.app,
            api(
                Method::POST,
                &format!("{SETTINGS}/api/openai/check"),
                "alice",
            )
            .body(Body::empty())
            .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);

        let stub = ProviderStub::start().await.unwrap();
        let checker = openai_at(&test_client(), &stub);
        let texts = byok_axum::Texts {
            test: "Prüfen".into(),
            check_rate_limited: "Zu viele Anfragen; in {seconds} Sekunden erneut.".into(),
            ..byok_axum::Texts::default()
        };
        let t = web_with(|b| b.checker(checker).texts(texts));
        let page = send(&t.app, page_of(SETTINGS, "alice")).await;
        assert!(page.body.contains(">Prüfen<"));
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::RateLimited));
        let a = send(&t.app, test_typed(TYPED)).await;
        assert_eq!(
            result_of(&a).1,
            format!("Zu viele Anfragen; in {RETRY_AFTER_SECS} Sekunden erneut.")
        );
    }

    #[tokio::test]
    async fn the_provider_picker_tests_the_chosen_provider_without_saving() {
        let (t, stub) = check_app(true).await;
        let page = send(&t.app, page_of(SETTINGS, "alice")).await;
        let picker = &page.body[page.body.find("id=\"add-key\"").unwrap()..];
        assert!(picker.contains("name=\"test\""), "{picker}");
        let picker_post = |provider: &str, key: &str, test: bool| {
            let mut body = format!("provider={provider}&{}", form_body(key));
            if test {
                body.push_str("&test=1");
            }
            form_post(SETTINGS, "alice", &body)
        };
        let picked = |a: &Answer| {
            let at = a
                .body
                .find("id=\"check-add-key\"")
                .unwrap_or_else(|| panic!("no result: {}", a.body));
            let rest = &a.body[at..];
            rest[rest.find('>').unwrap() + 1..rest.find("</p>").unwrap()].to_owned()
        };

        stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
        let a = send(&t.app, picker_post("openai", TYPED, true)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(picked(&a), "OpenAI accepted this key.");
        assert!(
            !a.body.contains("id=\"check-openai\""),
            "shown by the picker only"
        );
        assert!(!a.body.contains("canary"));
        assert_eq!(stub.requests().len(), 1);
        // A provider without a check says so; nothing is stored either way.
        let a = send(&t.app, picker_post("anthropic", TYPED, true)).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(picked(&a), "This key could not be checked.");
        assert_eq!(stub.requests().len(), 1);
        assert!(providers_of(&t.byok, "alice").await.is_empty());

        // Saving through the picker is checked before saving too.
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
        let a = send(&t.app, picker_post("openai", TYPED, false)).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(a.body.contains("id=\"error-add-key\""), "{}", a.body);
        assert!(providers_of(&t.byok, "alice").await.is_empty());
    }

    #[tokio::test]
    async fn check_before_saving_refuses_invalid_keys_and_warns_on_the_rest() {
        let (t, stub) = check_app(true).await;
        let save = || form_post(&format!("{SETTINGS}/openai"), "alice", &form_body(TYPED));

        // Invalid: refused by the field, nothing stored, in the page and the API.
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
        let a = send(&t.app, save()).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            a.body
                .contains("OpenAI does not accept this key, so it was not saved."),
            "{}",
            a.body
        );
        assert!(a.body.contains("id=\"error-openai\""));
        assert!(!a.body.contains("canary"));
        let a = send(
            &t.app,
            put_key("openai", "alice", serde_json::json!({ "api_key": TYPED })),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        assert_eq!(a.json()["field"], "api_key");
        assert!(providers_of(&t.byok, "alice").await.is_empty());

        // Unreachable (a 5xx, a timeout), out of credit, rate-limited:
        // saved, with a warning that says why it was not confirmed.
        for (scenario, words) in [
            (
                Scenario::ServerError,
                "The provider could not be reached; try again later.",
            ),
            (
                Scenario::Slow,
                "The provider could not be reached; try again later.",
            ),
            (
                Scenario::NoCredit,
                "This key is valid but the account has no credit.",
            ),
            (
                Scenario::RateLimited,
                "The provider is rate-limiting this key; try again later.",
            ),
        ] {
            t.byok.delete_key("alice", "openai").await.unwrap();
            stub.set_answer(answer(StubProvider::OpenAi, scenario));
            let a = send(&t.app, save()).await;
            assert_eq!(a.status, StatusCode::SEE_OTHER, "{scenario:?}: {}", a.body);
            let page = send(&t.app, page_of(&location(&a), "alice")).await;
            assert!(
                page.body.contains(&format!(
                    "Saved your OpenAI key without confirming that it works: {words}"
                )),
                "{scenario:?}: {}",
                page.body
            );
            assert_eq!(
                t.byok
                    .require_key("alice", "openai")
                    .await
                    .unwrap()
                    .expose_secret(),
                TYPED
            );
        }

        // Accepted: the plain notice.
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::Valid));
        let a = send(&t.app, save()).await;
        let page = send(&t.app, page_of(&location(&a), "alice")).await;
        assert!(page.body.contains("Saved your OpenAI key."));
        assert!(!page.body.contains("without confirming"));

        // The API says what the check found beside the saved key.
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::ServerError));
        let a = send(
            &t.app,
            put_key("openai", "bob", serde_json::json!({ "api_key": TYPED })),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        assert_eq!(a.json()["check"]["outcome"], "unavailable");
        assert_eq!(a.json()["check"]["reason"], "server_error");
        assert_eq!(a.json()["provider"], "openai");
        assert!(!a.body.contains("canary"));
        assert!(t.byok.has_key("bob", "openai").await.unwrap());

        // A provider the checker does not know is saved unchecked.
        stub.clear_requests();
        let a = send(
            &t.app,
            form_post(
                &format!("{SETTINGS}/anthropic"),
                "alice",
                &form_body("sk-ant-0123456789"),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER);
        assert!(stub.requests().is_empty());
    }
}
