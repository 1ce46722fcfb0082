//! The example application: a "chat" page that needs the user's OpenAI key,
//! and byok's settings page. Kept apart from `main.rs` so that the browser
//! test serves the very same application.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::response::{Html, Redirect};
use axum::routing::get;
use byok_axum::tower_sessions::{Expiry, MemoryStore, SessionManagerLayer};
use byok_axum::{ByokWeb, ProviderKey, SessionKeys};
use byok_core::display::mask_key;
use byok_core::secrecy::ExposeSecret;
use byok_core::{Byok, ByokConfig, KeyringFile, MasterKey};
use maud::{DOCTYPE, html};
use serde::Deserialize;

/// What [`build`] made, for the caller to print.
pub(crate) struct App {
    /// The application.
    pub(crate) router: Router,
    /// The SQLite database of keys.
    pub(crate) database: PathBuf,
    /// The keyring file, reloaded while the app runs.
    pub(crate) keyring: PathBuf,
    /// Whether the keyring was created just now.
    pub(crate) created_keyring: bool,
}

/// How often the app reloads its keyring file.
const KEYRING_RELOAD: Duration = Duration::from_secs(10);

/// The application, keeping its SQLite file in `dir` (created if
/// missing), and its master keys in the keyring file `keyring`, or a
/// development keyring in `dir` that it creates on first start.
///
/// The keyring file is a keyring source: the app reloads it every
/// [`KEYRING_RELOAD`], and at once when a stored key names a master key
/// id it lacks, so `byok keygen --add-to`, `byok keyring promote` and
/// `byok keyring remove` reach it without a restart. A file that cannot
/// be read or parsed at a reload leaves the keyring in use as it was.
pub(crate) async fn build(dir: &Path, keyring: Option<&Path>) -> Result<App, Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let (keyring_path, created_keyring) = match keyring {
        Some(path) => (path.to_path_buf(), false),
        None => {
            let path = dir.join("dev-keyring");
            let created = !path.exists();
            if created {
                write_dev_keyring(&path)?;
            }
            (path, created)
        }
    };
    let config = ByokConfig::default();
    let database = dir.join("keys.db");
    let storage =
        byok_sql::SqliteStorage::connect(&format!("sqlite://{}", database.display()), &config)
            .await?;
    storage.migrate().await?;
    let byok = Byok::builder_with_source(Arc::new(storage), KeyringFile::new(&keyring_path))
        .await?
        .config(config)
        .reload_interval(KEYRING_RELOAD)
        .build()?;
    let status = byok.clone();

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
        // What an operator checks on every instance between the stages
        // of a rotation: the key ids this instance has, and its primary.
        .route(
            "/status/keyring",
            get(move || async move { keyring_status(&status) }),
        )
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

/// `key ids 1,2; primary 2`: nothing secret.
fn keyring_status(byok: &Byok) -> String {
    let ring = byok.keyring();
    let ids: Vec<String> = ring.key_ids().map(|id| id.to_string()).collect();
    format!("key ids {}; primary {}\n", ids.join(","), ring.primary_id())
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
