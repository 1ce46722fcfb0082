//! `byok purge --dry-run`: what a purge would remove, with nothing
//! written (`rotate --dry-run` walks as the rotation does, in `admin`;
//! `copy --dry-run` is the library's own).

use crate::context::{self, Schema, Store};
use crate::error::CliResult;
use crate::opt::StoreOpts;
use crate::output::out;

/// `byok purge --dry-run`: counts the expired keys a purge would delete,
/// where the store can count them.
pub(crate) async fn purge(opts: &StoreOpts, json: bool) -> CliResult {
    let store = Store::open(opts, Schema::AsItIs).await?;
    let expired = store
        .storage
        .count_expired()
        .await
        .map_err(store.fail("counting expired keys failed"))?;
    if json {
        return context::print_json(&serde_json::json!({
            "store": store.name, "dry_run": true, "would_purge": expired,
        }));
    }
    match expired {
        Some(n) => out!("dry run: would purge {n} expired key(s); nothing was deleted")?,
        None => out!(
            "dry run: {} cannot count its expired keys; nothing was deleted",
            store.name
        )?,
    }
    Ok(())
}
