//! Bytes per key: `MemoryStorage` against a hand-written map of the same
//! data, each built in a fresh process of its own and measured as the
//! growth of its resident memory (allocator overhead included).

use byok::{ApiKey, KeyStorage, MemoryStorage};

use crate::hand::{HandStore, MemoryHand, Record, now_ms};
use crate::harness::{BResult, Row, RowResult};
use crate::rows::PROVIDERS;

/// Resident memory of this process, in bytes.
fn resident_bytes() -> BResult<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("no resident size in /proc/self/statm")?
        .parse()?;
    // The page size of Linux on x86-64 and most aarch64 systems.
    Ok(pages * 4096)
}

/// A user id of 36 characters, the length of a UUID or a session id.
fn user_id(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

/// Builds one map (`byok` or `hand`) of `keys` keys, `per_user` per user,
/// and returns the growth of resident memory per key.
pub(crate) fn measure_here(spec: &str) -> BResult<f64> {
    let mut parts = spec.split(':');
    let (Some(kind), Some(per_user), Some(keys), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected KIND:KEYS_PER_USER:KEYS".into());
    };
    let per_user: usize = per_user.parse()?;
    let keys: usize = keys.parse()?;
    if !(1..=PROVIDERS.len()).contains(&per_user) {
        return Err("keys per user must be 1 to 4".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    // A ciphertext of a 100-byte key (35 bytes of overhead), a hint, an expiry.
    let value = vec![7u8; 135];
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    let before = resident_bytes()?;
    let after = runtime.block_on(async {
        match kind {
            "byok" => {
                let store = MemoryStorage::new();
                for i in 0..keys {
                    let key = ApiKey::new(
                        user_id(i / per_user),
                        PROVIDERS[i % per_user],
                        value.clone(),
                    )?
                    .with_hint(Some("sk-p...xxxx".to_owned()))?
                    .with_expires_at(Some(expires));
                    store.store(&key).await?;
                }
                let after = resident_bytes()?;
                std::hint::black_box(&store);
                Ok::<u64, crate::harness::BoxError>(after)
            }
            "hand" => {
                let store = MemoryHand::default();
                for i in 0..keys {
                    let record = Record {
                        value: value.clone(),
                        hint: Some("sk-p...xxxx".to_owned()),
                        created_at_ms: now_ms(),
                        expires_at_ms: Some(expires.timestamp_millis()),
                    };
                    store
                        .write(&user_id(i / per_user), PROVIDERS[i % per_user], record)
                        .await?;
                }
                let after = resident_bytes()?;
                std::hint::black_box(&store);
                Ok(after)
            }
            other => Err(format!("unknown map {other:?}").into()),
        }
    })?;
    Ok(after.saturating_sub(before) as f64 / keys as f64)
}

/// Runs [`measure_here`] in a child process and reads its answer.
fn measure_in_child(kind: &str, per_user: usize, keys: usize) -> BResult<f64> {
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .arg("--footprint")
        .arg(format!("{kind}:{per_user}:{keys}"))
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "measuring {kind} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

/// The `bytes` rows, at 1 and 4 keys per user.
pub(crate) fn rows(keys: usize) -> BResult<Vec<Row>> {
    let mut rows = Vec::new();
    for per_user in [1, 4] {
        let byok = measure_in_child("byok", per_user, keys)?;
        let hand = measure_in_child("hand", per_user, keys)?;
        rows.push(Row {
            backend: "memory".into(),
            operation: format!("bytes per key, {keys} keys, {per_user} per user"),
            tasks: 1,
            result: RowResult::Bytes(byok, hand),
        });
    }
    Ok(rows)
}
