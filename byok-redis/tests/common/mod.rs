//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

pub mod server;

use std::sync::OnceLock;

use byok_core::{ApiKey, ByokConfig, KeyStorage};
use byok_redis::RedisStorage;
use byok_redis::redis::{self, aio::ConnectionLike};
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
