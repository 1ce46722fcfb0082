//! Helpers shared by the integration tests.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test by panicking"
)]

pub mod server;

use std::sync::OnceLock;

use byok_core::{ApiKey, ByokConfig, KeyStorage, StoreAdmin as _};
use byok_redis::RedisStorage;
use byok_redis::redis::{self, aio::ConnectionLike};
use byok_testkit::services::{CleanupOnDrop, WithCleanup};
use chrono::Utc;

/// A key prefix of this test process, so that parallel runs against one
/// server never meet.
pub fn process_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(fresh_prefix)
}

/// A prefix of its own, for a test that counts what it finds.
pub fn fresh_prefix() -> String {
    format!("byok_test_{:016x}_", rand::random::<u64>())
}

/// The `redis+cluster://` URL of a cluster's seed nodes (`redis://host:port`
/// URLs without credentials), so that a single seed is a cluster too.
pub fn cluster_url<S: AsRef<str>>(urls: &[S]) -> String {
    let hosts: Vec<&str> = urls
        .iter()
        .map(|u| u.as_ref().trim_start_matches("redis://"))
        .collect();
    format!("redis+cluster://{}", hosts.join(","))
}

/// A config with `prefix`.
pub fn config(prefix: &str) -> ByokConfig {
    ByokConfig::default()
        .with_session_key_prefix(prefix)
        .with_auto_cleanup(false)
}

/// The expiry set of `user`'s bucket, as the crate docs lay it out.
pub fn expiry_set_of(store: &RedisStorage, user: &str) -> String {
    format!(
        "{}{{{:03x}}}:exp",
        store.prefix(),
        byok_redis::bucket_of(user)
    )
}

/// The user set of `user`'s bucket, as the crate docs lay it out.
pub fn user_set_of(store: &RedisStorage, user: &str) -> String {
    format!(
        "{}{{{:03x}}}:users",
        store.prefix(),
        byok_redis::bucket_of(user)
    )
}

/// Plants, at the front of a bucket's expiry set, more malformed members
/// than one purge batch holds and a member naming a live key of another
/// bucket; purging must remove them, remove the real expired key behind
/// them, and leave the other bucket's key alone.
pub async fn purge_gets_past_stray_members<C: ConnectionLike + Send>(
    store: &RedisStorage,
    raw: &mut C,
) {
    let past = Some(Utc::now() - chrono::Duration::seconds(10));
    let user = "alice";
    let expired = ApiKey::new(user, "openai", vec![1])
        .unwrap()
        .with_expires_at(past);
    store.store(&expired).await.unwrap();
    store
        .store(&ApiKey::new(user, "live", vec![2]).unwrap())
        .await
        .unwrap();
    let other = (0..1000)
        .map(|i| format!("other-{i}"))
        .find(|u| byok_redis::bucket_of(u) != byok_redis::bucket_of(user))
        .unwrap();
    let foreign = ApiKey::new(&other, "p", vec![3]).unwrap();
    store.store(&foreign).await.unwrap();

    let exp = expiry_set_of(store, user);
    let mut strays: Vec<String> = (0..300).map(|i| format!("garbage-{i}")).collect();
    strays.extend([
        format!("{}:{other}p", other.len()),
        format!("0{}:{user}openai", user.len()),
        "0:openai".to_owned(),
        format!("{}:{user}", user.len() + 1),
    ]);
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(&exp);
    for m in &strays {
        zadd.arg(1).arg(m);
    }
    let added: usize = zadd.query_async(raw).await.unwrap();
    assert_eq!(added, strays.len());

    assert_eq!(store.purge_expired().await.unwrap(), 1);
    let left: usize = redis::cmd("ZCARD")
        .arg(&exp)
        .query_async(raw)
        .await
        .unwrap();
    assert_eq!(left, 0, "members were left in the expiry set");
    assert!(!store.delete(user, "openai").await.unwrap());
    assert_eq!(store.list_providers(user).await.unwrap(), ["live"]);
    assert_eq!(store.retrieve(&other, "p").await.unwrap(), Some(foreign));
    assert_eq!(store.purge_expired().await.unwrap(), 0);

    assert_eq!(store.clear_all(user).await.unwrap(), 1);
    assert_eq!(store.clear_all(&other).await.unwrap(), 1);
}

/// Writes a key as byok-redis wrote it in format 1: a hash per key, the
/// user's provider index, the bucket's user set and, for an expiring key,
/// its expiry entry.
pub async fn write_format_1(
    raw: &mut byok_redis::redis::aio::MultiplexedConnection,
    prefix: &str,
    key: &ApiKey,
) {
    use byok_redis::{bucket_of, encode_id, redis};
    let (user, provider) = (key.user_id(), key.provider());
    let tag = format!("{prefix}{{{:03x}}}", bucket_of(user));
    let hash = format!("{tag}:k:{}:{}", encode_id(user), encode_id(provider));
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(format!("{tag}:i:{}", encode_id(user)))
        .arg(0)
        .arg(provider)
        .cmd("ZADD")
        .arg(format!("{tag}:users"))
        .arg(0)
        .arg(user);
    let expires = key.expires_at_millis();
    if expires.is_none_or(|e| e > Utc::now().timestamp_millis()) {
        pipe.cmd("HSET")
            .arg(&hash)
            .arg("v")
            .arg(key.encrypted_value())
            .arg("c")
            .arg(key.created_at().timestamp_millis());
        if let Some(h) = key.hint() {
            pipe.cmd("HSET").arg(&hash).arg("h").arg(h);
        }
        if let Some(e) = expires {
            pipe.cmd("HSET").arg(&hash).arg("e").arg(e);
            pipe.cmd("PEXPIREAT").arg(&hash).arg(e);
        }
    }
    if let Some(e) = expires {
        pipe.cmd("ZADD")
            .arg(format!("{tag}:exp"))
            .arg(e)
            .arg(format!("{}:{user}{provider}", user.len()));
    }
    let () = pipe.query_async(raw).await.unwrap();
}

/// Every Redis key under `prefix` on one server, sorted.
pub async fn keys_under<C: ConnectionLike + Send>(raw: &mut C, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(raw)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// A store that is destroyed when dropped, also when the test panics: a
/// [`KeyStorage`] itself, and a [`RedisStorage`] through `Deref`.
pub type Scratch = WithCleanup<RedisStorage>;

/// Guards `store`; `url` reaches the same server or cluster once the test
/// is over (not through a proxy the test stops).
pub fn scratch(store: RedisStorage, url: &str) -> Scratch {
    let cleanup = cleanup(url, store.prefix());
    WithCleanup::new(store, cleanup)
}

/// A store on a fresh prefix at `url`, destroyed when dropped.
pub async fn open_scratch(url: &str) -> Scratch {
    open_scratch_at(url, &fresh_prefix()).await
}

/// A store on `prefix` at `url`, destroyed when dropped.
pub async fn open_scratch_at(url: &str, prefix: &str) -> Scratch {
    let store = RedisStorage::builder(url)
        .config(&config(prefix))
        .open()
        .await
        .expect("connecting to the test Redis");
    scratch(store, url)
}

/// Removes the store under `prefix` at `url` (one server or a cluster) on
/// drop, also when the test panics.
pub fn cleanup(url: &str, prefix: &str) -> CleanupOnDrop {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    CleanupOnDrop::new(format!("the test keys under {prefix}"), || async move {
        let store = RedisStorage::builder(url)
            .prefix(prefix)
            .open()
            .await
            .map_err(|e| e.to_string())?;
        store.destroy().await.map_err(|e| e.to_string())
    })
}
