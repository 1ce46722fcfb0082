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
    ByokConfig {
        auto_cleanup: false,
        ..ByokConfig::default()
    }
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
        .nest(web.settings_path(), web.settings_router())
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
            .contains(r#"type="password" name="api_key" autocomplete="off""#),
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
    assert_eq!(
        a.headers[header::LOCATION],
        "/settings/api-keys?saved=openai"
    );
    assert_no_store(&a);
    let stored = t.byok.require_key("alice", "openai").await.unwrap();
    assert_eq!(stored.expose_secret(), OPENAI_KEY);

    let page = send(
        &t.app,
        browser(Method::GET, "/settings/api-keys?saved=openai", "alice")
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
    assert_eq!(
        a.headers[header::LOCATION],
        "/settings/api-keys?deleted=openai"
    );
    assert!(providers_of(&t.byok, "alice").await.is_empty());
    let page = send(
        &t.app,
        browser(Method::GET, "/settings/api-keys?deleted=openai", "alice")
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
        ByokConfig {
            require_https: false,
            ..config()
        },
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
    assert!(a.body.contains(r#"href="/settings/api-keys""#));

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
        .nest(web.settings_path(), web.settings_router())
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
    assert_eq!(
        a.headers[header::LOCATION],
        "/settings/api-keys?saved=anthropic"
    );
    assert_eq!(providers_of(&t.byok, "alice").await, ["anthropic"]);

    for body in [
        format!("provider=mistral&{}", form_body(OPENAI_KEY)),
        form_body(OPENAI_KEY),
    ] {
        let a = send(&t.app, form_post(SETTINGS, "bob", &body)).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        assert!(a.body.contains("invalid provider"), "{}", a.body);
        assert!(
            a.body.contains(r#"href="/settings/api-keys""#),
            "a way back"
        );
        assert!(!a.body.contains("abcdefghijklmnop"));
        assert!(providers_of(&t.byok, "bob").await.is_empty());
    }
}
