//! The `web` rows: byok-axum's route guard and settings page, served over a
//! real loopback socket, against the same handler written by hand on the
//! same server.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use byok::axum::{ByokWeb, ProviderKey, TrustedHeader};
use byok::{Byok, ByokConfig, KeyStorage, MemoryStorage, SqliteStorage, Ttl};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::ExposeSecret;

use crate::harness::{self, BResult, Plan, Row, RowResult};
use crate::opt::Sizes;
use crate::rows::{api_key, manager};

/// The users of the web rows (each with an OpenAI and an Anthropic key).
const MAX_USERS: usize = 1_000;

/// The guarded handler: what an application does with the key.
async fn guarded(key: ProviderKey) -> String {
    key.key().expose_secret().len().to_string()
}

/// The same handler written by hand: the user from the proxy's header, the
/// key through `Byok::get_key`, a 403 without one, and no caching.
async fn by_hand(State(byok): State<Byok>, headers: HeaderMap) -> Response {
    let Some(user) = headers.get("x-user").and_then(|v| v.to_str().ok()) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match byok.get_key(user, "openai").await {
        Ok(Some(key)) => (
            [(header::CACHE_CONTROL, "no-store")],
            key.expose_secret().len().to_string(),
        )
            .into_response(),
        Ok(None) => StatusCode::FORBIDDEN.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A settings page written by hand: the user's keys through
/// `Byok::key_summary`, listed in a minimal page.
async fn page_by_hand(State(byok): State<Byok>, headers: HeaderMap) -> Response {
    let Some(user) = headers.get("x-user").and_then(|v| v.to_str().ok()) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Ok(keys) = byok.key_summary(user).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut body = String::from("<!DOCTYPE html><html><body><h1>API keys</h1>");
    for k in keys {
        body.push_str(&format!(
            "<section><h2>{}</h2><p>{} · {} · {}</p><form method=\"post\"><input type=\"password\" \
             name=\"api_key\"><button>Replace</button></form></section>",
            k.display_name, k.hint, k.created, k.expires
        ));
    }
    body.push_str("</body></html>");
    ([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

/// Serves the guarded route, the hand-written one, and both pages on a
/// loopback port; returns the base URL and the server task.
async fn serve(byok: Byok) -> BResult<(String, tokio::task::JoinHandle<()>)> {
    let web = ByokWeb::builder(byok.clone(), TrustedHeader::new("x-user".parse()?))
        .providers(["openai", "anthropic"])
        .build()?;
    let app = Router::new()
        .route("/guarded", get(guarded))
        .route_layer(web.require_key("openai"))
        .merge(web.settings_router())
        .merge(
            Router::new()
                .route("/hand", get(by_hand))
                .route("/hand-page", get(page_by_hand))
                .with_state(byok),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((base, server))
}

type HttpClient = Client<HttpConnector, Body>;

/// One GET as user `user`; fails unless it answers 200.
async fn get_ok(client: &HttpClient, url: &str, user: &str, html: bool) -> BResult<()> {
    let mut request = Request::get(url).header("x-user", user);
    if html {
        request = request.header(header::ACCEPT, "text/html");
    }
    let response = client.request(request.body(Body::empty())?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(())
}

/// Compares `byok_path` with `hand_path` on the same server.
async fn compare_paths(
    client: &HttpClient,
    base: &str,
    users: &Arc<Vec<String>>,
    (byok_path, hand_path): (&str, &str),
    html: bool,
    plan: Plan,
) -> BResult<harness::Comparison> {
    let side = |path: &str| {
        let (client, users, url) = (client.clone(), Arc::clone(users), format!("{base}{path}"));
        move |i: u64| {
            let (client, users, url) = (client.clone(), Arc::clone(&users), url.clone());
            async move {
                let user = &users[(i % users.len() as u64) as usize];
                get_ok(&client, &url, user, html).await
            }
        }
    };
    harness::compare(plan, side(byok_path), side(hand_path)).await
}

/// The rows of one store.
async fn rows_of(
    name: &str,
    storage: Arc<dyn KeyStorage>,
    sizes: &Sizes,
    out: &mut Vec<Row>,
) -> BResult<()> {
    let byok = manager(storage, 1)?;
    let users: Arc<Vec<String>> = Arc::new(
        (0..sizes.users.min(MAX_USERS))
            .map(|i| format!("{}web-{i:06}", sizes.namespace))
            .collect(),
    );
    for (i, user) in users.iter().enumerate() {
        byok.set_key(user, "openai", &api_key(i as u64), Ttl::Never)
            .await?;
        byok.set_key(user, "anthropic", &api_key(i as u64 + 1), Ttl::Never)
            .await?;
    }
    let (base, server) = serve(byok.clone()).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let cases = [
        ("guarded route (HTTP)", ("/guarded", "/hand"), false, 1),
        ("guarded route (HTTP)", ("/guarded", "/hand"), false, 64),
        (
            "settings page (HTTP)",
            ("/settings/api-keys", "/hand-page"),
            true,
            1,
        ),
    ];
    let mut result = Ok(());
    for (operation, paths, html, tasks) in cases {
        let plan = Plan {
            rounds: sizes.rounds,
            ops: if tasks == 1 {
                sizes.server_ops
            } else {
                sizes.server_ops * 4
            },
            batch: 1,
            tasks,
        };
        let row = match compare_paths(&client, &base, &users, paths, html, plan).await {
            Ok(c) => RowResult::Timing(c),
            Err(e) => {
                result = Err(e.to_string());
                RowResult::Failed(e.to_string())
            }
        };
        crate::emit(
            out,
            Row {
                backend: name.to_owned(),
                operation: operation.to_owned(),
                tasks,
                result: row,
            },
        );
    }
    server.abort();
    result.map_err(Into::into)
}

/// The web rows on the memory store and on a SQLite file.
pub(crate) async fn rows(
    sizes: &Sizes,
    config: &ByokConfig,
    memory: bool,
    sqlite: bool,
    out: &mut Vec<Row>,
) -> BResult<()> {
    if memory {
        rows_of("memory", Arc::new(MemoryStorage::new()), sizes, out).await?;
    }
    if sqlite {
        let dir =
            std::env::temp_dir().join(format!("byok-bench-web-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let result = async {
            let url = format!("sqlite://{}", dir.join("web.db").display());
            let store = SqliteStorage::connect(&url, config).await?;
            store.migrate().await?;
            rows_of("sqlite", Arc::new(store), sizes, out).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    Ok(())
}
