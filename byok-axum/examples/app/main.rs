//! A small "chat" application whose page needs the user's OpenAI key, with
//! byok's settings page beside it.
//!
//! ```sh
//! cargo run -p byok-axum --example app
//! ```
//!
//! It keeps its keys in a SQLite file in `target/byok-axum-example/` (or
//! `BYOK_APP_DIR`), and listens on 127.0.0.1:3000 (or `BYOK_APP_ADDR`). Its
//! master keys come from the keyring file `BYOK_KEYRING_FILE`, or from a
//! development keyring that it creates in that directory on first start.
//! It reloads the keyring file while it runs (see the README's "Master
//! keys" section for a rotation) and shows the key ids it has at
//! `/status/keyring`. Keys belong to the
//! browser session: another browser, or the same one after a restart of
//! the app, starts without keys.

mod chat;

use std::error::Error;
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,byok_axum=debug".into()),
        )
        .init();
    let dir = std::env::var_os("BYOK_APP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/byok-axum-example"));
    let addr = std::env::var("BYOK_APP_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());

    let keyring = std::env::var_os("BYOK_KEYRING_FILE").map(PathBuf::from);
    let app = chat::build(&dir, keyring.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let keyring = std::path::absolute(&app.keyring)?;
    if app.created_keyring {
        eprintln!(
            "Created a development keyring at {} (keep it: the keys in the database need it).",
            keyring.display()
        );
    } else {
        eprintln!(
            "Using the keyring at {} (reloaded while the app runs).",
            keyring.display()
        );
    }
    eprintln!(
        "Keys are stored in {}.",
        std::path::absolute(&app.database)?.display()
    );
    eprintln!("Open {url}/chat (API keys: {url}/settings/api-keys)");
    axum::serve(listener, app.router).await?;
    Ok(())
}
