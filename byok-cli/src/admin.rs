//! Whole-store work: `stats`, `verify`, `rotate`, `copy`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use byok::validate::shown_id;
use byok::{KeyStorageExt as _, RotationReport};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::context::{self, Schema, Store};
use crate::error::{CliError, CliResult, Exit};
use crate::interrupt::Interruptible;
use crate::opt::{CopyOpts, KeyringOpts, OnConflict, RotateOpts, StoreOpts};
use crate::output::{note, out};

const SCAN_PAGE: usize = 500;

fn key_id_label(id: Option<u32>) -> String {
    id.map_or_else(|| "not a byok ciphertext".to_owned(), |id| id.to_string())
}

/// What `byok stats` prints.
#[derive(Debug, Serialize)]
struct Stats {
    store: String,
    schema: byok::SchemaStatus,
    keys: u64,
    by_key_id: BTreeMap<String, u64>,
    by_provider: BTreeMap<String, u64>,
    /// `None` where the store cannot count them.
    expired_not_purged: Option<u64>,
}

/// `byok stats`: the store's own exact counts.
pub(crate) async fn stats(opts: &StoreOpts, json: bool) -> CliResult {
    let store = Store::open(opts, Schema::AsItIs).await?;
    let bar = context::progress(None, "counting");
    let counted = store.storage.stats().await;
    let schema = store.storage.schema_status().await;
    bar.finish_and_clear();
    let counted = counted.map_err(store.fail("counting the keys failed"))?;
    let schema = schema.map_err(store.fail("reading the schema failed"))?;
    let stats = Stats {
        store: store.name.clone(),
        schema,
        keys: counted.keys,
        by_key_id: counted
            .by_key_id
            .iter()
            .map(|(id, n)| (key_id_label(*id), *n))
            .collect(),
        by_provider: counted.by_provider,
        expired_not_purged: counted.expired,
    };
    if json {
        return context::print_json(&stats);
    }
    out!("store: {}", stats.store)?;
    out!("schema: {}", stats.schema)?;
    if matches!(stats.schema, byok::SchemaStatus::Older { .. }) {
        out!("run `byok migrate` to bring the schema up to date")?;
    }
    out!("{} live key(s)", stats.keys)?;
    match stats.expired_not_purged {
        Some(n) => out!("{n} expired key(s) still stored (`byok purge` removes them)")?,
        None => out!("expired keys: this store cannot count them (`byok purge` removes them)")?,
    }
    let mut t = context::new_table();
    t.set_header(["master key id", "keys"]);
    for (id, n) in &stats.by_key_id {
        t.add_row([id.clone(), n.to_string()]);
    }
    out!("{t}")?;
    let mut t = context::new_table();
    t.set_header(["provider", "keys"]);
    for (p, n) in &stats.by_provider {
        t.add_row([shown_id(p).into_owned(), n.to_string()]);
    }
    out!("{t}")?;
    Ok(())
}

/// A key that did not decrypt, named without anything secret.
#[derive(Debug, Serialize)]
struct Failed {
    user: String,
    provider: String,
    key_id: Option<u32>,
    reason: String,
}

/// What `byok verify` prints.
#[derive(Debug, Default, Serialize)]
struct Verification {
    store: String,
    checked: u64,
    ok_by_key_id: BTreeMap<String, u64>,
    failed_by_key_id: BTreeMap<String, u64>,
    failed: Vec<Failed>,
}

/// `byok verify`.
pub(crate) async fn verify(opts: &StoreOpts, keyring: &KeyringOpts, json: bool) -> CliResult {
    let ring = context::keyring(keyring)?;
    let store = Store::open(opts, Schema::AsItIs).await?;
    let total = store.count().await?;
    let bar = context::progress(Some(total), "verifying");
    let mut v = Verification {
        store: store.name.clone(),
        ..Verification::default()
    };
    let mut keys = byok::store::keys(&store.storage, SCAN_PAGE);
    while let Some(key) = keys.next().await {
        let key = key.map_err(store.fail("reading the keys failed"))?;
        v.checked += 1;
        let id = byok::crypto::key_id_of(key.encrypted_value()).ok();
        match ring.decrypt(key.user_id(), key.provider(), key.encrypted_value()) {
            Ok(_plain) => *v.ok_by_key_id.entry(key_id_label(id)).or_default() += 1,
            Err(e) => {
                *v.failed_by_key_id.entry(key_id_label(id)).or_default() += 1;
                v.failed.push(Failed {
                    user: key.user_id().to_owned(),
                    provider: key.provider().to_owned(),
                    key_id: id,
                    reason: e.to_string(),
                });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let failed = v.failed.len();
    if json {
        context::print_json(&v)?;
    } else {
        for f in &v.failed {
            out!(
                "FAILED  {} {} (master key id {}): {}",
                shown_id(&f.user),
                shown_id(&f.provider),
                key_id_label(f.key_id),
                f.reason
            )?;
        }
        for (id, n) in &v.ok_by_key_id {
            out!("master key id {id}: {n} key(s) decrypt")?;
        }
        for (id, n) in &v.failed_by_key_id {
            out!("master key id {id}: {n} key(s) do NOT decrypt")?;
        }
        out!("verified {} key(s): {} failed", v.checked, failed)?;
    }
    if failed > 0 {
        return Err(CliError::problem(format!(
            "{failed} key(s) do not decrypt with this keyring; nothing was changed in the store"
        )));
    }
    Ok(())
}

/// The saved progress of a rotation: the library's report of the pages
/// done, with the cursor to resume from, and the store it is of.
#[derive(Debug, Serialize, Deserialize)]
struct SavedRotation {
    /// Which store and namespace this belongs to (a hash; no URL is saved).
    store: String,
    /// How many keys the report covers, for people reading the file.
    #[serde(default)]
    seen: u64,
    /// What the pages done did, and where to resume.
    report: RotationReport,
}

/// What names a store wherever the command runs: a SQLite file by its
/// absolute path, any other store by its URL without the password.
fn store_identity(opts: &StoreOpts) -> String {
    match context::sqlite_file(&opts.url) {
        Some(path) => std::fs::canonicalize(&path)
            .unwrap_or(path)
            .display()
            .to_string(),
        None => context::redact(&opts.url),
    }
}

fn store_fingerprint(opts: &StoreOpts) -> String {
    let mut h = Sha256::new();
    for part in [&store_identity(opts), &opts.table, &opts.prefix] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Where a rotation saves its progress, unless `--state` says: beside a
/// SQLite file, else in the user's state directory
/// (`$XDG_STATE_HOME/byok`, or `~/.local/state/byok`), named after the
/// store, so that a re-run from any directory resumes.
fn state_path(opts: &RotateOpts, store: &StoreOpts) -> PathBuf {
    if let Some(path) = &opts.state {
        return path.clone();
    }
    let name = format!(".byok-rotate-{}.json", store_fingerprint(store));
    if let Some(db) = context::sqlite_file(&store.url) {
        let db = std::fs::canonicalize(&db).unwrap_or(db);
        if let Some(dir) = db.parent() {
            return dir.join(name);
        }
    }
    let dir = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("state"))
        });
    match dir {
        Some(dir) => dir.join("byok").join(&name[1..]),
        None => PathBuf::from(name),
    }
}

fn save_state(path: &Path, state: &SavedRotation) -> CliResult {
    let fail = |e: &dyn std::fmt::Display| {
        CliError::new(
            Exit::Config,
            format!("cannot save the rotation state to {}: {e}", path.display()),
        )
    };
    let text = serde_json::to_vec_pretty(state).map_err(|e| fail(&e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(&e))?;
    std::io::Write::write_all(&mut tmp, &text).map_err(|e| fail(&e))?;
    tmp.persist(path).map_err(|e| fail(&e.error))?;
    Ok(())
}

fn load_state(path: &Path) -> CliResult<Option<SavedRotation>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CliError::usage(format!(
                "the rotation state {} is not readable ({e}); remove it to start over",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::new(
            Exit::Config,
            format!("cannot read the rotation state {}: {e}", path.display()),
        )),
    }
}

/// `byok rotate`, and with `--dry-run` what it would do: the same walk,
/// through [`Byok::plan_rotate_page`](byok::Byok::plan_rotate_page), with
/// nothing written and no state saved.
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
    let key_ids: Vec<u32> = ring.key_ids().collect();
    let byok = context::manager(&store, ring)?;
    let dry_run = opts.dry_run;
    let path = state_path(opts, store_opts);
    let fresh = SavedRotation {
        store: store_fingerprint(store_opts),
        seen: 0,
        report: RotationReport {
            primary_key_id: primary,
            ..RotationReport::default()
        },
    };
    let mut state = if dry_run {
        fresh
    } else {
        resumed(&path, fresh)?
    };
    let total = store.count().await?;
    let bar = context::progress_from(total.max(state.seen), state.seen, "rotating");
    if !json && !dry_run {
        note!(
            "saving the rotation's progress in {}; if it stops, run the same command again \
             to resume",
            path.display()
        );
    }
    // Ctrl-C stops between pages (or within one, whose keys the re-run
    // finds current), and says how to go on.
    let mut interrupt = Interruptible::new();
    let resume = format!("the saved state {} lets you resume", path.display());
    loop {
        let cursor = state.report.resume_from.take();
        let page = tokio::select! {
            biased;
            () = interrupt.interrupted() => {
                bar.finish_and_clear();
                let done = format!("interrupted after {} of {} key(s)", state.seen, total.max(state.seen));
                return Err(CliError::new(
                    Exit::Interrupted,
                    if dry_run {
                        format!("{done}; nothing was written")
                    } else {
                        format!(
                            "{done}; the progress is saved in {}: run the same command again \
                             to resume",
                            path.display()
                        )
                    },
                ));
            }
            page = async {
                if dry_run {
                    byok.plan_rotate_page(cursor.as_ref(), page_size).await
                } else {
                    byok.rotate_page(cursor.as_ref(), page_size).await
                }
            } => page,
        };
        let page = match page {
            Ok(page) => page,
            Err(e) if dry_run => return Err(store.fail("reading the keys failed")(e)),
            Err(e) => return Err(store.fail(&format!("rotating failed ({resume})"))(e)),
        };
        let n = page.keys();
        state.report.merge(page);
        state.seen += n;
        bar.inc(n);
        if state.report.resume_from.is_none() {
            break;
        }
        if dry_run {
            continue;
        }
        save_state(&path, &state)?;
        if opts.pause_ms > 0 {
            tokio::select! {
                biased;
                () = interrupt.interrupted() => {}
                () = tokio::time::sleep(Duration::from_millis(opts.pause_ms)) => {}
            }
        }
    }
    bar.finish_and_clear();
    if !dry_run {
        // The walk is over: the state has served its purpose.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "warning: could not remove the finished rotation state {}: {e}",
                path.display()
            ),
        }
    }
    print_rotation(&store, &state.report, &key_ids, dry_run, json)
}

/// The saved rotation at `path`, if there is one of this store and
/// primary key; else `fresh`.
fn resumed(path: &Path, fresh: SavedRotation) -> CliResult<SavedRotation> {
    match load_state(path)? {
        Some(s) if s.store != fresh.store => Err(CliError::usage(format!(
            "the rotation state {} belongs to another store; pass --state FILE, or remove it",
            path.display()
        ))),
        Some(s) if s.report.primary_key_id != fresh.report.primary_key_id => {
            Err(CliError::usage(format!(
                "the rotation state {} is of a rotation to master key id {}, but the primary \
                 key is now {}; remove it to start a new rotation",
                path.display(),
                s.report.primary_key_id,
                fresh.report.primary_key_id
            )))
        }
        Some(s) => {
            // On standard error, so that --json output stays clean.
            eprintln!(
                "resuming the rotation saved in {} ({} key(s) done)",
                path.display(),
                s.seen
            );
            Ok(s)
        }
        None => Ok(fresh),
    }
}

/// Prints what a rotation did (or, in a dry run, would do), and fails
/// unless it covered every key.
fn print_rotation(
    store: &Store,
    report: &RotationReport,
    key_ids: &[u32],
    dry_run: bool,
    json: bool,
) -> CliResult {
    let primary = report.primary_key_id;
    let complete = report.is_complete();
    let advice: BTreeMap<u32, String> = key_ids
        .iter()
        .filter(|id| !dry_run && **id != primary)
        .map(|id| {
            let text = match report.failed.get(id) {
                Some(n) => {
                    format!("keep it: {n} key(s) under it did not decrypt (run `byok verify`)")
                }
                None if complete => {
                    "can be removed from the keyring now: no live key is under it".to_owned()
                }
                None => "keep it until every key rotates (some keys were not rotated)".to_owned(),
            };
            (*id, text)
        })
        .collect();
    let rotated: u64 = report.rotated.values().sum();
    if json {
        let mut shown = serde_json::to_value(report)
            .map_err(|e| CliError::new(Exit::Problem, format!("cannot print JSON: {e}")))?;
        if let Some(fields) = shown.as_object_mut() {
            fields.remove("resume_from");
            if dry_run {
                for (from, to) in [("rotated", "would_rotate"), ("failed", "would_fail")] {
                    if let Some(v) = fields.remove(from) {
                        fields.insert(to.to_owned(), v);
                    }
                }
                fields.insert("dry_run".to_owned(), true.into());
            } else {
                fields.insert("complete".to_owned(), complete.into());
                fields.insert("old_keys".to_owned(), serde_json::json!(advice));
            }
            fields.insert("store".to_owned(), store.name.clone().into());
            fields.insert("keys".to_owned(), report.keys().into());
        }
        context::print_json(&shown)?;
    } else {
        let left = if dry_run {
            " and would be left"
        } else {
            "; left as they were"
        };
        if dry_run {
            out!(
                "dry run: would rotate {rotated} of {} key(s) to master key id {primary}; {} \
                 already under it; nothing was written",
                report.keys(),
                report.already_current
            )?;
        } else {
            out!(
                "rotated {rotated} of {} key(s) to master key id {primary}; {} were already \
                 under it, {} changed meanwhile (and are under it)",
                report.keys(),
                report.already_current,
                report.changed_concurrently
            )?;
        }
        for (id, n) in &report.rotated {
            out!("  from master key id {id}: {n} key(s)")?;
        }
        for (id, n) in &report.failed {
            out!("  master key id {id}: {n} key(s) could not be decrypted{left}")?;
        }
        if report.malformed > 0 {
            out!(
                "  {} stored value(s) are not byok ciphertexts{left}",
                report.malformed
            )?;
        }
        for (id, text) in &advice {
            out!("master key id {id}: {text}")?;
        }
        if !dry_run {
            out!("{}", rotate_note(primary))?;
        }
    }
    match (complete, dry_run) {
        (true, _) => Ok(()),
        (false, true) => Err(CliError::problem(format!(
            "a rotation would leave {} key(s) behind; fix the keyring first",
            report.failed.values().sum::<u64>() + report.malformed
        ))),
        (false, false) => Err(CliError::problem(
            "the rotation did not cover every key; see above, fix the keyring, and run it again",
        )),
    }
}

/// What `byok rotate` says last: a rotation holds only if every running
/// instance writes under the same primary key.
fn rotate_note(primary: u32) -> String {
    format!(
        "Every running instance must have master key id {primary} as primary before this \
         rotation holds: one that still writes under an older key puts keys back under it. \
         Confirm it on each instance (it logs `keyring replaced` with primary={primary} when \
         it reloads its keyring, and Byok::keyring() says it), re-run `byok rotate` if one \
         lagged, then `byok verify`, then `byok keyring remove ID` for each old id."
    )
}

/// The keyring for `copy`, when one is given: copy checks keys with it,
/// and copies ciphertexts unchecked without one.
fn optional_keyring(opts: &KeyringOpts) -> CliResult<Option<byok::Keyring>> {
    if opts.keyring.is_none() && std::env::var_os(context::KEYRING_VAR).is_none() {
        return Ok(None);
    }
    context::keyring(opts).map(Some)
}

/// `byok copy`.
pub(crate) async fn copy(
    opts: &CopyOpts,
    store: &StoreOpts,
    keyring: &KeyringOpts,
    json: bool,
) -> CliResult {
    let page_size = context::page_size(opts.page_size)?;
    let ring = optional_keyring(keyring)?;
    let on_conflict = match opts.on_conflict {
        OnConflict::Skip => byok::OnConflict::Skip,
        OnConflict::Newer => byok::OnConflict::Newer,
        OnConflict::Overwrite => byok::OnConflict::Overwrite,
    };
    if on_conflict == byok::OnConflict::Overwrite && !opts.dry_run {
        crate::confirm::ask(
            opts.yes,
            "replace every key of the target that differs from the source's",
        )?;
    }
    let source = Store::open(store, Schema::AsItIs).await?;
    // Read the source before the target is touched: a source that cannot
    // be read must not leave an empty target behind.
    let total = source.count().await?;
    let target = if opts.dry_run {
        dry_run_target(&opts.to, &opts.to_table, &opts.to_prefix).await?
    } else {
        Store::open_url(&opts.to, &opts.to_table, &opts.to_prefix, Schema::Create).await?
    };
    if ring.is_none() && !json {
        eprintln!(
            "note: no keyring given (--keyring or {}), so keys are copied without checking \
             that they decrypt",
            context::KEYRING_VAR
        );
    }
    let mut options = byok::CopyOptions::new()
        .page_size(page_size)
        .on_conflict(on_conflict)
        .dry_run(opts.dry_run)
        .sample(opts.sample);
    if let Some(ring) = ring {
        options = options.verify_with(ring);
    }
    let bar = context::progress(None, if opts.dry_run { "checking" } else { "copying" });
    let report = source
        .storage
        .copy_into(&target.storage, &options)
        .await
        .map_err(target.fail("copying failed (re-running is safe)"));
    bar.finish_and_clear();
    let report = report?;
    let in_target = target.count().await?;
    let expected = total.saturating_sub(report.source_failed.len() as u64);
    let counts_ok = report.blocked() || opts.dry_run || in_target >= expected;
    if json {
        context::print_json(&serde_json::json!({
            "from": source.name, "to": target.name, "dry_run": opts.dry_run,
            "source_keys": report.scanned, "copied": report.copied,
            "identical": report.identical, "replaced": report.replaced(),
            "kept": report.kept(), "conflicts": report.conflicts,
            "blocked": report.blocked(),
            "unknown_target_key_ids": report.unknown_target_key_ids,
            "target_failed": report.target_failed, "source_failed": report.source_failed,
            "target_keys": in_target, "sampled": report.sampled,
            "sample_mismatches": report.sample_mismatches,
            "verified": counts_ok && report.is_complete(),
        }))?;
    } else {
        print_copy(&report, &source, &target, in_target);
    }
    copy_outcome(&report, counts_ok, in_target, expected, opts.on_conflict)
}

/// The target of a dry run, opened without creating anything: a SQLite
/// file that does not exist yet is an empty store.
pub(crate) async fn dry_run_target(url: &str, table: &str, prefix: &str) -> CliResult<Store> {
    let missing = ["sqlite://", "sqlite:"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .is_some_and(|path| {
            !path.is_empty() && path != ":memory:" && !std::path::Path::new(path).exists()
        });
    if missing {
        let mut empty = Store::open_url("memory:", "t", "p", Schema::AsItIs).await?;
        empty.name = context::redact(url);
        return Ok(empty);
    }
    Store::open_url(url, table, prefix, Schema::AsItIs).await
}

fn print_copy(report: &byok::CopyReport, source: &Store, target: &Store, in_target: u64) {
    let would = if report.dry_run {
        "dry run: would copy"
    } else {
        "copied"
    };
    if report.blocked() {
        println!(
            "nothing was written: {} key(s) already in {} do not decrypt with this keyring",
            report.target_failed.len(),
            target.name
        );
        for (id, n) in &report.unknown_target_key_ids {
            println!("  master key id {id} (not in the keyring): {n} key(s)");
        }
        for f in &report.target_failed {
            println!(
                "  target key {} {} (master key id {}): {}",
                shown_id(&f.user_id),
                shown_id(&f.provider),
                key_id_label(f.key_id),
                f.reason
            );
        }
        return;
    }
    println!(
        "{would} {} key(s) from {} to {}; {} already identical, {} conflict(s): {} replaced, \
         {} kept",
        report.copied,
        source.name,
        target.name,
        report.identical,
        report.conflicts.len(),
        report.replaced(),
        report.kept()
    );
    for c in &report.conflicts {
        let what = match c.resolution {
            byok::copy::Resolution::KeptTarget => "kept the target's key",
            byok::copy::Resolution::Replaced if report.dry_run => "would replace the target's key",
            byok::copy::Resolution::Replaced => "replaced the target's key",
            byok::copy::Resolution::ChangedDuringCopy => {
                "kept the target's key (it changed during the copy)"
            }
        };
        println!(
            "  conflict {} {}: source master key id {}, created {}; target master key id {}, \
             created {}: {what}",
            shown_id(&c.user_id),
            shown_id(&c.provider),
            key_id_label(c.source_key_id),
            c.source_created_at.to_rfc3339(),
            key_id_label(c.target_key_id),
            c.target_created_at.to_rfc3339()
        );
    }
    for f in &report.source_failed {
        println!(
            "  NOT copied {} {} (master key id {}): {}",
            shown_id(&f.user_id),
            shown_id(&f.provider),
            key_id_label(f.key_id),
            f.reason
        );
    }
    if !report.dry_run {
        println!(
            "target holds {in_target} live key(s); {} copied key(s) read back and compared \
             byte for byte, {} differ",
            report.sampled,
            report.sample_mismatches.len()
        );
        for (u, p) in &report.sample_mismatches {
            println!("  differs: {u} {p}");
        }
    }
}

fn copy_outcome(
    report: &byok::CopyReport,
    counts_ok: bool,
    in_target: u64,
    expected: u64,
    policy: OnConflict,
) -> CliResult {
    if report.blocked() {
        return Err(CliError::problem(
            "the target holds keys this keyring cannot decrypt; nothing was written (add their \
             master keys to the keyring, or copy into another target)",
        ));
    }
    let kept_on_purpose = match policy {
        OnConflict::Newer => report
            .conflicts
            .iter()
            .filter(|c| c.resolution == byok::copy::Resolution::KeptTarget)
            .count() as u64,
        _ => 0,
    };
    if report.kept() > kept_on_purpose {
        return Err(CliError::problem(format!(
            "{} key(s) in the target differ from the source's and were kept (listed above); \
             choose with --on-conflict newer or overwrite",
            report.kept() - kept_on_purpose
        )));
    }
    if !report.source_failed.is_empty() {
        return Err(CliError::problem(format!(
            "{} source key(s) do not decrypt with this keyring and were not copied",
            report.source_failed.len()
        )));
    }
    if !counts_ok {
        return Err(CliError::problem(format!(
            "the target holds {in_target} keys, fewer than the {expected} expected; run the \
             copy again"
        )));
    }
    if !report.sample_mismatches.is_empty() {
        return Err(CliError::problem(
            "some copied keys differ in the target (written meanwhile?); run the copy again",
        ));
    }
    Ok(())
}
