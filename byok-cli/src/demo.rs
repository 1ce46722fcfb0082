//! `byok demo`: a tour of byok on a temporary SQLite store.

use byok::secrecy::ExposeSecret;
use byok::{Byok, KeyStorage as _, Keyring, MasterKey, Ttl};

use crate::context::{self, Schema, Store};
use crate::error::{CliError, CliResult, Exit};
use crate::keys::{Row, table};
use crate::output::out;

fn step(n: u32, text: &str) -> CliResult {
    out!("\n[{n}] {text}")
}

/// Keys that look like real ones but are made up here.
const DEMO_KEYS: [(&str, &str, &str); 3] = [
    ("alice", "openai", "sk-proj-demo-4f3a9c1e7b2d8a60"),
    ("alice", "anthropic", "sk-ant-demo-9e8d7c6b5a4f3e2d"),
    ("bob", "openai", "sk-proj-demo-0a1b2c3d4e5f6a7b"),
];

/// `byok demo`.
pub(crate) async fn run() -> CliResult {
    let dir = tempfile::Builder::new()
        .prefix("byok-demo-")
        .tempdir()
        .map_err(|e| {
            CliError::new(
                Exit::Config,
                format!("cannot make a temporary directory: {e}"),
            )
        })?;
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let result = tour(&url).await;
    let path = dir.path().display().to_string();
    let closed = dir.close();
    result?;
    step(9, "clean up")?;
    match closed {
        Ok(()) => out!("    removed {path}")?,
        Err(e) => out!("    could not remove {path}: {e}")?,
    }
    out!("\ndone. Next: `byok keygen --out keyring.txt`, then `byok --help`.")?;
    Ok(())
}

async fn tour(url: &str) -> CliResult {
    step(
        1,
        "a temporary SQLite store and a fresh keyring with master key id 1",
    )?;
    let store = Store::open_url(url, "user_api_keys", "byok_", Schema::Create).await?;
    out!("    store: {}", store.name)?;
    let ring = Keyring::new(1, MasterKey::generate());
    let byok = context::manager(&store, ring.clone())?;
    let fail = |what: &'static str| store.fail(what);

    step(2, "set keys for two users (encrypted under key id 1)")?;
    for (user, provider, key) in DEMO_KEYS {
        byok.set_key(user, provider, key, Ttl::Default)
            .await
            .map_err(fail("set failed"))?;
        out!("    set {user}'s {provider} key")?;
    }

    step(3, "list them, masked (nothing is decrypted)")?;
    let mut rows = Vec::new();
    for user in ["alice", "bob"] {
        for key in store
            .storage
            .user_keys(user)
            .await
            .map_err(fail("list failed"))?
        {
            rows.push(Row::of(&key));
        }
    }
    out!("{}", table(&rows))?;

    step(4, "read one back, decrypted")?;
    let key = byok
        .require_key("alice", "openai")
        .await
        .map_err(fail("get failed"))?;
    let matches = key.expose_secret() == DEMO_KEYS[0].2;
    out!(
        "    alice's openai key decrypts ({} characters, {})",
        key.expose_secret().len(),
        if matches {
            "matches what was set"
        } else {
            "DOES NOT MATCH"
        }
    )?;

    step(5, "rotate: add master key id 2, make it primary")?;
    let mut new_ring = ring;
    new_ring
        .add(2, MasterKey::generate())
        .and_then(|r| r.set_primary(2))
        .map_err(|e| CliError::new(Exit::Config, e.message().to_owned()))?;
    let rotated = context::manager(&store, new_ring.clone())?;
    out!("    keyring now holds ids 1 and 2; new keys are written under id 2")?;

    step(6, "old keys still read while they are under id 1")?;
    let bob = rotated
        .require_key("bob", "openai")
        .await
        .map_err(fail("get failed"))?;
    out!(
        "    bob's openai key, still under id 1, decrypts with the new keyring: {}",
        bob.expose_secret() == DEMO_KEYS[2].2
    )?;
    let report = rotated.rotate().await.map_err(fail("rotate failed"))?;
    out!(
        "    rotate(): {} key(s) re-encrypted from id 1 to id 2; complete: {}",
        report.rotated.get(&1).copied().unwrap_or(0),
        report.is_complete()
    )?;
    let mut only_new = new_ring;
    only_new
        .remove(1)
        .map_err(|e| CliError::new(Exit::Config, e.message().to_owned()))?;
    let after: Byok = context::manager(&store, only_new)?;
    let mut ok = 0;
    for (user, provider, key) in DEMO_KEYS {
        let got = after
            .require_key(user, provider)
            .await
            .map_err(fail("get failed"))?;
        if got.expose_secret() == key {
            ok += 1;
        }
    }
    out!(
        "    with key id 1 removed from the keyring, {ok} of {} keys still decrypt",
        DEMO_KEYS.len()
    )?;

    step(7, "delete one key, then all of alice's")?;
    let removed = after
        .delete_key("bob", "openai")
        .await
        .map_err(fail("delete failed"))?;
    out!("    deleted bob's openai key: {removed}")?;
    let cleared = after
        .clear_keys("alice")
        .await
        .map_err(fail("clear failed"))?;
    out!("    cleared alice's keys: {cleared} removed")?;

    step(8, "what is left")?;
    let left = store.count().await?;
    out!("    {left} key(s) in the store")?;
    if !matches || ok != DEMO_KEYS.len() || left != 0 {
        return Err(CliError::problem("the demo did not go as expected"));
    }
    Ok(())
}
