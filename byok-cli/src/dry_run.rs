//! `--dry-run` of `rotate` and `purge`: what the command would do, with
//! nothing written (`copy --dry-run` is the library's own, in `admin`).

use std::collections::BTreeMap;

use byok::EncryptionError;
use serde::Serialize;

use crate::context::{self, Concrete, Schema, Store};
use crate::error::{CliError, CliResult, Exit};
use crate::opt::{KeyringOpts, RotateOpts, StoreOpts};

/// What `byok rotate --dry-run` prints.
#[derive(Debug, Default, Serialize)]
struct RotationPlan {
    store: String,
    dry_run: bool,
    primary_key_id: u32,
    keys: u64,
    already_current: u64,
    would_rotate: BTreeMap<u32, u64>,
    would_fail: BTreeMap<u32, u64>,
    malformed: u64,
}

/// `byok rotate --dry-run`: decrypts every key that is not under the
/// primary key, as the rotation would, and writes nothing (no state file).
pub(crate) async fn rotate(
    opts: &RotateOpts,
    store_opts: &StoreOpts,
    ring: &KeyringOpts,
    json: bool,
) -> CliResult {
    let page_size = context::page_size(opts.page_size)?;
    let ring = context::keyring(ring)?;
    let store = Store::open(store_opts, Schema::AsItIs).await?;
    let primary = ring.primary_id();
    let mut plan = RotationPlan {
        store: store.name.clone(),
        dry_run: true,
        primary_key_id: primary,
        ..RotationPlan::default()
    };
    let mut cursor = None;
    loop {
        let page = store
            .storage
            .scan(cursor.as_ref(), page_size)
            .await
            .map_err(store.fail("reading the keys failed"))?;
        for key in &page.keys {
            plan.keys += 1;
            let Ok(id) = byok::crypto::key_id_of(key.encrypted_value()) else {
                plan.malformed += 1;
                continue;
            };
            if id == primary {
                plan.already_current += 1;
                continue;
            }
            match ring.decrypt(key.user_id(), key.provider(), key.encrypted_value()) {
                Ok(_plain) => *plan.would_rotate.entry(id).or_default() += 1,
                Err(
                    EncryptionError::Malformed { .. } | EncryptionError::UnsupportedVersion { .. },
                ) => {
                    plan.malformed += 1;
                }
                Err(_) => *plan.would_fail.entry(id).or_default() += 1,
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let failing: u64 = plan.would_fail.values().sum::<u64>() + plan.malformed;
    if json {
        context::print_json(&plan)?;
    } else {
        println!(
            "dry run: would rotate {} of {} key(s) to master key id {primary}; {} already \
             under it; nothing was written",
            plan.would_rotate.values().sum::<u64>(),
            plan.keys,
            plan.already_current
        );
        for (id, n) in &plan.would_rotate {
            println!("  from master key id {id}: {n} key(s)");
        }
        for (id, n) in &plan.would_fail {
            println!("  master key id {id}: {n} key(s) do NOT decrypt and would be left");
        }
        if plan.malformed > 0 {
            println!(
                "  {} stored value(s) are not byok ciphertexts and would be left",
                plan.malformed
            );
        }
    }
    if failing > 0 {
        return Err(CliError::problem(format!(
            "a rotation would leave {failing} key(s) behind; fix the keyring first"
        )));
    }
    Ok(())
}

/// `byok purge --dry-run`: counts the expired keys a purge would delete
/// (on SQL stores; elsewhere it says it cannot count them).
pub(crate) async fn purge(opts: &StoreOpts, json: bool) -> CliResult {
    let store = Store::open(opts, Schema::AsItIs).await?;
    let (_, concrete) = Concrete::open(&opts.url, &context::config(&opts.table, &opts.prefix))
        .await
        .map_err(store.fail("cannot open the store"))?;
    let expired = match concrete.count_expired().await {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            return Err(CliError::new(
                Exit::Store,
                format!("counting expired keys at {} failed: {e}", store.name),
            ));
        }
        None => None,
    };
    if json {
        return context::print_json(&serde_json::json!({
            "store": store.name, "dry_run": true, "would_purge": expired,
        }));
    }
    match expired {
        Some(n) => println!("dry run: would purge {n} expired key(s); nothing was deleted"),
        None => println!(
            "dry run: {} cannot count its expired keys without reading every record; \
             nothing was deleted",
            store.name
        ),
    }
    Ok(())
}
