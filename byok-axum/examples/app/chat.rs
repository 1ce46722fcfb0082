//! The example application: a "chat" page that needs the user's OpenAI key,
//! and byok's settings page. Kept apart from `main.rs` so that the browser
//! test serves the very same application.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::response::{Html, Redirect};
use axum::routing::get;
use byok_axum::tower_sessions::{Expiry, MemoryStore, SessionManagerLayer};
use byok_axum::{ByokWeb, ProviderKey, SessionKeys};
use byok_core::display::mask_key;
use byok_core::secrecy::ExposeSecret;
use byok_core::{Byok, ByokConfig, Keyring, MasterKey};
use maud::{DOCTYPE, html};
use serde::Deserialize;

/// What [`build`] made, for the caller to print.
pub(crate) struct App {
    /// The application.
    pub(crate) router: Router,
    /// The SQLite database of keys.
    pub(crate) database: PathBuf,
    /// The development keyring.
    pub(crate) keyring: PathBuf,
    /// Whether the keyring was created just now.
    pub(crate) created_keyring: bool,
}

/// The application, keeping its SQLite file and development keyring in
/// `dir` (created if missing).
pub(crate) async fn build(dir: &Path) -> Result<App, Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let keyring_path = dir.join("dev-keyring");
    let created_keyring = !keyring_path.exists();
    if created_keyring {
        write_dev_keyring(&keyring_path)?;
    }
    let keyring = Keyring::from_file(&keyring_path)?;
    let config = ByokConfig::default();
    let database = dir.join("keys.db");
    let storage =
        byok_sql::SqliteStorage::connect(&format!("sqlite://{}", database.display()), &config)
            .await?;
    storage.migrate().await?;
    let byok = Byok::new(Arc::new(storage), keyring, config)?;

    // Keys belong to the browser session and live as long as it does.
    let web = ByokWeb::builder(byok, SessionKeys)
        .providers(["openai", "anthropic"])
        // Development: a key over plain HTTP is accepted, with a warning.
        .production(false)
        .build()?;
    let sessions = SessionManagerLayer::new(MemoryStore::default())
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(8)));

    let chat = Router::new()
        .route("/chat", get(chat))
        .route_layer(web.require_key("openai"));
    let router = Router::new()
        .route("/", get(|| async { Redirect::to("/chat") }))
        .merge(chat)
        .merge(web.settings_router())
        .layer(web.layer())
        .layer(sessions);
    Ok(App {
        router,
        database,
        keyring: keyring_path,
        created_keyring,
    })
}

/// A keyring with one fresh master key, readable only by its owner. For
/// development only: a production keyring comes from a secret store.
fn write_dev_keyring(path: &Path) -> std::io::Result<()> {
    let key = MasterKey::generate();
    let text = format!(
        "# byok development keyring made by the example app\n1:{}\n",
        key.to_base64().expose_secret()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}

#[derive(Deserialize)]
struct Message {
    q: Option<String>,
}

async fn chat(key: ProviderKey, Query(message): Query<Message>) -> Html<String> {
    // A real application would call the provider here with
    // key.key().expose_secret(); the demo only shows which key it would use.
    let hint = mask_key(key.key().expose_secret());
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "Chat" } }
                body style="font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto" {
                    h1 { "Chat" }
                    p #using-key { "Using your OpenAI key " code { (hint) } "." }
                    @if let Some(q) = message.q.filter(|q| !q.is_empty()) {
                        p #reply { "You said: " (q) ". (This demo would now ask OpenAI.)" }
                    }
                    form method="get" action="/chat" {
                        input name="q" placeholder="Say something" autocomplete="off";
                        button type="submit" { "Send" }
                    }
                    p { a href="/settings/api-keys" { "Manage your API keys" } }
                }
            }
        }
        .into_string(),
    )
}
