//! Whole-store work: `stats`, `verify`, `rotate`, `copy`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use byok::validate::shown_id;
use byok::{Cursor, KeyStorage as _, KeyStorageExt as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::context::{self, Concrete, Schema, Store};
use crate::error::{CliError, CliResult, Exit};
use crate::interrupt::Interruptible;
use crate::opt::{CopyOpts, KeyringOpts, OnConflict, RotateOpts, StoreOpts};
use crate::output::{note, out};

const SCAN_PAGE: usize = 500;

fn key_id_label(id: Option<u32>) -> String {
    id.map_or_else(|| "not a byok ciphertext".to_owned(), |id| id.to_string())
}

/// What `byok stats` prints.
#[derive(Debug, Default, Serialize)]
struct Stats {
    store: String,
    keys: u64,
    by_key_id: BTreeMap<String, u64>,
    by_provider: BTreeMap<String, u64>,
    users: u64,
    /// `None` where the store drops expired keys by itself (Redis, memory).
    expired_not_purged: Option<u64>,
    never_expire: u64,
}

/// `byok stats`.
pub(crate) async fn stats(opts: &StoreOpts, json: bool) -> CliResult {
    let store = Store::open(opts, Schema::AsItIs).await?;
    let (_, concrete) = Concrete::open(&opts.url, &context::config(&opts.table, &opts.prefix))
        .await
        .map_err(store.fail("cannot open the store"))?;
    let what = "reading the keys failed";
    let mut stats = Stats {
        store: store.name.clone(),
        ..Stats::default()
    };
    let mut users = BTreeSet::new();
    let mut cursor = None;
    let bar = context::progress(None, "counting");
    loop {
        let page = store
            .storage
            .scan(cursor.as_ref(), SCAN_PAGE)
            .await
            .map_err(store.fail(what))?;
        for key in &page.keys {
            stats.keys += 1;
            let id = byok::crypto::key_id_of(key.encrypted_value()).ok();
            *stats.by_key_id.entry(key_id_label(id)).or_default() += 1;
            *stats
                .by_provider
                .entry(key.provider().to_owned())
                .or_default() += 1;
            if key.expires_at().is_none() {
                stats.never_expire += 1;
            }
            if !users.contains(key.user_id()) {
                users.insert(key.user_id().to_owned());
            }
        }
        bar.inc(page.keys.len() as u64);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // A walk sees only live keys: expired rows are counted by the store.
    stats.expired_not_purged = match concrete.count_expired().await {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            return Err(CliError::new(
                Exit::Store,
                format!("counting expired keys at {} failed: {e}", store.name),
            ));
        }
        None => None,
    };
    bar.finish_and_clear();
    stats.users = users.len() as u64;
    if json {
        return context::print_json(&stats);
    }
    out!("store: {}", stats.store)?;
    out!(
        "{} live key(s) of {} user(s), {} without expiry",
        stats.keys,
        stats.users,
        stats.never_expire
    )?;
    match stats.expired_not_purged {
        Some(n) => out!("{n} expired key(s) still stored (`byok purge` removes them)")?,
        None => out!("expired keys: removed by the store itself")?,
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
    let total = context::count_keys(&store, SCAN_PAGE).await?;
    let bar = context::progress(Some(total), "verifying");
    let mut v = Verification {
        store: store.name.clone(),
        ..Verification::default()
    };
    let mut cursor = None;
    loop {
        let page = store
            .storage
            .scan(cursor.as_ref(), SCAN_PAGE)
            .await
            .map_err(store.fail("reading the keys failed"))?;
        for key in &page.keys {
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
        }
        bar.inc(page.keys.len() as u64);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
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

/// The saved progress of a rotation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RotationState {
    /// Which store and namespace this belongs to (a hash; no URL is saved).
    store: String,
    primary_key_id: u32,
    cursor: Option<Cursor>,
    seen: u64,
    already_current: u64,
    rotated: BTreeMap<u32, u64>,
    changed_concurrently: u64,
    failed: BTreeMap<u32, u64>,
    malformed: u64,
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

fn save_state(path: &Path, state: &RotationState) -> CliResult {
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

fn load_state(path: &Path) -> CliResult<Option<RotationState>> {
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

/// `byok rotate`.
pub(crate) async fn rotate(
    opts: &RotateOpts,
    store_opts: &StoreOpts,
    ring: &KeyringOpts,
    json: bool,
) -> CliResult {
    if opts.dry_run {
        return crate::dry_run::rotate(opts, store_opts, ring, json).await;
    }
    let page_size = context::page_size(opts.page_size)?;
    let ring = context::keyring(ring)?;
    let store = Store::open(store_opts, Schema::AsItIs).await?;
    let primary = ring.primary_id();
    let key_ids: Vec<u32> = ring.key_ids().collect();
    let byok = context::manager(&store, ring)?;
    let path = state_path(opts, store_opts);
    let fingerprint = store_fingerprint(store_opts);
    let mut state = match load_state(&path)? {
        Some(s) if s.store != fingerprint => {
            return Err(CliError::usage(format!(
                "the rotation state {} belongs to another store; pass --state FILE, or remove it",
                path.display()
            )));
        }
        Some(s) if s.primary_key_id != primary => {
            return Err(CliError::usage(format!(
                "the rotation state {} is of a rotation to master key id {}, but the primary \
                 key is now {primary}; remove it to start a new rotation",
                path.display(),
                s.primary_key_id
            )));
        }
        Some(s) => {
            // On standard error, so that --json output stays clean.
            eprintln!(
                "resuming the rotation saved in {} ({} key(s) done)",
                path.display(),
                s.seen
            );
            s
        }
        None => RotationState {
            store: fingerprint,
            primary_key_id: primary,
            ..RotationState::default()
        },
    };
    let total = context::count_keys(&store, SCAN_PAGE).await?;
    let bar = context::progress_from(total.max(state.seen), state.seen, "rotating");
    if !json {
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
        let page = tokio::select! {
            biased;
            () = interrupt.interrupted() => {
                bar.finish_and_clear();
                return Err(CliError::new(
                    Exit::Interrupted,
                    format!(
                        "interrupted after {} of {} key(s); the progress is saved in {}: run the \
                         same command again to resume",
                        state.seen,
                        total.max(state.seen),
                        path.display()
                    ),
                ));
            }
            page = byok.rotate_page(state.cursor.as_ref(), page_size) => page,
        };
        let page = page.map_err(store.fail(&format!("rotating failed ({resume})")))?;
        let n = page.already_current
            + page.changed_concurrently
            + page.malformed
            + page.rotated.values().sum::<u64>()
            + page.failed.values().sum::<u64>();
        state.seen += n;
        state.already_current += page.already_current;
        state.changed_concurrently += page.changed_concurrently;
        state.malformed += page.malformed;
        for (id, k) in &page.rotated {
            *state.rotated.entry(*id).or_default() += k;
        }
        for (id, k) in &page.failed {
            *state.failed.entry(*id).or_default() += k;
        }
        state.cursor = page.resume_from;
        bar.inc(n);
        if state.cursor.is_none() {
            break;
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
    // The walk is over: the state has served its purpose.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!(
            "warning: could not remove the finished rotation state {}: {e}",
            path.display()
        ),
    }
    let failed: u64 = state.failed.values().sum();
    let complete = failed == 0 && state.malformed == 0;
    let advice: BTreeMap<u32, String> = key_ids
        .iter()
        .filter(|id| **id != primary)
        .map(|id| {
            let text = match state.failed.get(id) {
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
    if json {
        context::print_json(&serde_json::json!({
            "store": store.name,
            "primary_key_id": primary,
            "keys": state.seen,
            "already_current": state.already_current,
            "rotated": state.rotated,
            "changed_concurrently": state.changed_concurrently,
            "failed": state.failed,
            "malformed": state.malformed,
            "complete": complete,
            "old_keys": advice,
        }))?;
    } else {
        println!(
            "rotated {} of {} key(s) to master key id {primary}; {} were already under it, \
             {} changed meanwhile (and are under it)",
            state.rotated.values().sum::<u64>(),
            state.seen,
            state.already_current,
            state.changed_concurrently
        );
        for (id, n) in &state.rotated {
            println!("  from master key id {id}: {n} key(s)");
        }
        for (id, n) in &state.failed {
            println!("  master key id {id}: {n} key(s) could not be decrypted; left as they were");
        }
        if state.malformed > 0 {
            println!(
                "  {} stored value(s) are not byok ciphertexts; left as they were",
                state.malformed
            );
        }
        for (id, text) in &advice {
            println!("master key id {id}: {text}");
        }
        out!("{}", rotate_note(primary))?;
    }
    if complete {
        Ok(())
    } else {
        Err(CliError::problem(
            "the rotation did not cover every key; see above, fix the keyring, and run it again",
        ))
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
    let total = context::count_keys(&source, page_size).await?;
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
        .copy_into(target.storage.as_ref(), &options)
        .await
        .map_err(target.fail("copying failed (re-running is safe)"));
    bar.finish_and_clear();
    let report = report?;
    let in_target = context::count_keys(&target, page_size).await?;
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
