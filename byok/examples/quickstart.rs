#![allow(clippy::print_stdout, reason = "an example prints what it does")]

//! Set, list (masked), get, rotate and delete a user's key with the memory
//! backend.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::sync::Arc;

use byok::secrecy::ExposeSecret;
use byok::{Byok, ByokConfig, Keyring, MasterKey, MemoryStorage, Ttl};

#[tokio::main(flavor = "current_thread")]
async fn main() -> byok::Result<()> {
    let storage = Arc::new(MemoryStorage::new());
    let config = ByokConfig::default();

    // Key id 1 is the first master key. Keep its base64 form in a secret
    // store and load it with MasterKey::from_base64 or Keyring::from_env.
    let first = MasterKey::generate();
    let byok = Byok::new(
        storage.clone(),
        Keyring::new(1, first.clone()),
        config.clone(),
    )?;

    // A key for a day: Ttl::Default is ByokConfig::default_ttl, 24 hours.
    byok.set_key(
        "alice",
        "openai",
        "sk-proj-quickstart-0123456789",
        Ttl::Default,
    )
    .await?;
    // A key kept until alice removes it.
    byok.set_key(
        "alice",
        "anthropic",
        "sk-ant-quickstart-0123456789",
        Ttl::Never,
    )
    .await?;

    println!("alice's keys:");
    for key in byok.key_summary("alice").await? {
        println!(
            "  {:<10} {:<14} set {}, {}",
            key.display_name, key.hint, key.created, key.expires
        );
    }

    let openai = byok.require_key("alice", "openai").await?;
    println!(
        "the OpenAI key has {} characters (never print it)",
        openai.expose_secret().len()
    );

    // Rotate: add a new master key as primary, keep the old one to read
    // old ciphertexts, re-encrypt everything, then drop the old key.
    let mut keyring = Keyring::new(1, first);
    keyring.add(2, MasterKey::generate())?.set_primary(2)?;
    let rotated = Byok::new(storage.clone(), keyring.clone(), config.clone())?;
    let report = rotated.rotate().await?;
    println!(
        "rotation: {:?} re-encrypted by old key id, complete: {}",
        report.rotated,
        report.is_complete()
    );
    keyring.remove(1)?;
    let byok = Byok::new(storage, keyring, config)?;
    assert_eq!(
        byok.require_key("alice", "openai").await?.expose_secret(),
        openai.expose_secret()
    );

    byok.delete_key("alice", "openai").await?;
    println!("after delete: {:?}", byok.list_providers("alice").await?);
    Ok(())
}
