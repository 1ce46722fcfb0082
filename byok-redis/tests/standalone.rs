//! The conformance suite and Redis-specific tests against a standalone
//! Redis (`BYOK_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod common;

use byok_core::error::Field;
use byok_core::{
    ApiKey, ByokError, Cursor, KeyStorage, SchemaStatus, StorageErrorKind, StoreAdmin,
};
use byok_redis::RedisStorage;
use byok_redis::redis::AsyncCommands;
use chrono::Utc;

async fn setup() -> Option<common::Scratch> {
    let url = byok_testkit::services::redis_url().await?;
    Some(common::open_scratch(&url).await)
}

/// A store under a prefix of its own, a plain connection to the server,
/// and a guard that deletes every key under the prefix when it is dropped,
/// also when the test panics.
async fn isolated() -> Option<(
    RedisStorage,
    byok_redis::redis::aio::MultiplexedConnection,
    byok_testkit::services::CleanupOnDrop,
)> {
    let url = byok_testkit::services::redis_url().await?;
    let prefix = common::fresh_prefix();
    let cleanup = common::cleanup(&url, &prefix);
    let store = RedisStorage::builder(&url)
        .config(&common::config(&prefix))
        .open()
        .await
        .expect("connecting to the test Redis");
    let raw = byok_redis::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    Some((store, raw, cleanup))
}

byok_testkit::conformance_tests!(maybe: setup().await);
byok_testkit::admin_conformance_tests!(maybe: setup().await);

#[tokio::test]
async fn pairs_that_join_alike_stay_apart() {
    let Some((store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    let pairs = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("a{", "}b"),
        ("a", "{}b"),
        ("a{}", "b"),
        ("*", ":"),
        ("a}:{b", "c"),
        ("a", "}:{b:c"),
        ("%3A", "x"),
        (":", "x"),
    ];
    let mut redis_keys = std::collections::HashSet::new();
    for (i, (u, p)) in pairs.iter().enumerate() {
        store
            .store(&ApiKey::new(*u, *p, vec![i as u8]).unwrap())
            .await
            .unwrap();
        let k = store.redis_user_key(u).unwrap();
        assert!(redis_keys.insert((k.clone(), *p)), "{u:?}/{p:?} shares {k}");
        let exists: bool = raw.hexists(&k, *p).await.unwrap();
        assert!(exists, "{k} {p} was not written");
    }
    for (i, (u, p)) in pairs.iter().enumerate() {
        let got = store.retrieve(u, p).await.unwrap().expect("stored key");
        assert_eq!(got.encrypted_value(), [i as u8], "{u:?}/{p:?}");
        assert_eq!((got.user_id(), got.provider()), (*u, *p));
    }
    assert_eq!(
        store.list_providers("a").await.unwrap(),
        ["b:c", "{}b", "}:{b:c"]
    );
    assert_eq!(store.clear_all("a").await.unwrap(), 3);
    assert!(store.retrieve("a:b", "c").await.unwrap().is_some());
    for (u, _) in pairs {
        store.clear_all(u).await.unwrap();
    }
}

#[tokio::test]
async fn a_foreign_value_is_corrupt_and_left_alone() {
    let Some((store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    // A string where mallory's hash belongs, and a field of eve's hash
    // that is no byok record.
    let string_key = store.redis_user_key("mallory").unwrap();
    let () = raw.set(&string_key, "not a byok key").await.unwrap();
    let hash_key = store.redis_user_key("eve").unwrap();
    let () = raw.hset(&hash_key, "anthropic", "???").await.unwrap();

    for (user, provider) in [("mallory", "openai"), ("eve", "anthropic")] {
        let err = store.retrieve(user, provider).await.unwrap_err();
        let storage = err.as_storage().expect("a storage error");
        assert_eq!(storage.kind, StorageErrorKind::Corrupt, "{err}");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains("not a byok key"), "{err}");
        for failed in [
            store.list_providers(user).await.unwrap_err(),
            store.user_keys(user).await.unwrap_err(),
        ] {
            assert_eq!(
                failed.as_storage().map(|e| e.kind),
                Some(StorageErrorKind::Corrupt),
                "{failed}"
            );
        }
        let current = ApiKey::new(user, provider, b"x".to_vec()).unwrap();
        let err = store
            .compare_and_swap(&current, &current)
            .await
            .unwrap_err();
        assert_eq!(
            err.as_storage().map(|e| e.kind),
            Some(StorageErrorKind::Corrupt),
            "{err}"
        );
    }
    let value: String = raw.get(&string_key).await.unwrap();
    assert_eq!(value, "not a byok key");
    let field: String = raw.hget(&hash_key, "anthropic").await.unwrap();
    assert_eq!(field, "???");

    let () = raw.del(&[&string_key, &hash_key]).await.unwrap();
}

#[tokio::test]
async fn purge_counts_exactly_what_it_removes() {
    let Some((store, _raw, _cleanup)) = isolated().await else {
        return;
    };
    let past = Some(Utc::now() - chrono::Duration::seconds(10));
    // Users spread over several buckets, one with a live key too.
    for u in 0..20 {
        let user = format!("user-{u}");
        for p in ["a", "b"] {
            let k = ApiKey::new(&user, p, vec![1])
                .unwrap()
                .with_expires_at(past);
            store.store(&k).await.unwrap();
        }
    }
    store
        .store(&ApiKey::new("user-0", "live", vec![2]).unwrap())
        .await
        .unwrap();
    assert!(
        store.delete("user-1", "a").await.unwrap(),
        "an unpurged expired key counts"
    );
    assert_eq!(store.purge_expired().await.unwrap(), 39);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert!(!store.delete("user-2", "a").await.unwrap());
    assert_eq!(store.list_providers("user-0").await.unwrap(), ["live"]);
    assert_eq!(store.clear_all("user-0").await.unwrap(), 1);
    // An empty store is walked in one call: empty buckets are probed in
    // growing batches.
    let page = store.scan(None, 1000).await.unwrap();
    assert!(page.keys.is_empty());
    assert!(
        page.next.is_none(),
        "an empty walk needed more than one call"
    );
}

#[tokio::test]
async fn scan_walks_a_crowded_bucket_in_pages() {
    let Some((store, _raw, _cleanup)) = isolated().await else {
        return;
    };
    // Users that share a bucket, so pages cut inside a bucket and a user.
    let bucket = byok_redis::bucket_of("u0");
    let users: Vec<String> = (0..5000)
        .map(|i| format!("u{i}"))
        .filter(|u| byok_redis::bucket_of(u) == bucket)
        .take(5)
        .collect();
    assert!(users.len() >= 2, "{users:?}");
    let mut expected = std::collections::BTreeSet::new();
    for user in &users {
        for p in 0..3 {
            let provider = format!("p{p}");
            store
                .store(&ApiKey::new(user, &provider, vec![p]).unwrap())
                .await
                .unwrap();
            expected.insert((user.clone(), provider));
        }
    }
    for limit in [1, 2, 4, 100] {
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let page = store.scan(cursor.as_ref(), limit).await.unwrap();
            assert!(page.keys.len() <= limit);
            for k in page.keys {
                assert!(
                    seen.insert((k.user_id().to_owned(), k.provider().to_owned())),
                    "a key came twice"
                );
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "pages of {limit}");
    }
    let bad = store
        .scan(Some(&Cursor::new("3:abc")), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, ByokError::InvalidInput(e) if e.field == Field::Cursor),
        "{bad:?}"
    );
    for user in &users {
        assert_eq!(store.clear_all(user).await.unwrap(), 3);
    }
}

#[tokio::test]
async fn debug_and_prefix_rules() {
    let Some((store, _raw, _cleanup)) = isolated().await else {
        return;
    };
    let debug = format!("{store:?}");
    assert!(
        debug.contains("standalone") && debug.contains(store.prefix()),
        "{debug}"
    );
    assert!(store.clone().with_prefix("a{b}").is_err());
    let renamed = store.with_prefix("byok_other_").unwrap();
    assert_eq!(renamed.prefix(), "byok_other_");
    assert!(
        renamed
            .redis_user_key("u")
            .unwrap()
            .starts_with("byok_other_{")
    );
}

#[tokio::test]
async fn an_empty_ciphertext_round_trips_and_swaps() {
    let Some((store, _raw, _cleanup)) = isolated().await else {
        return;
    };
    let empty = ApiKey::new("u", "p", Vec::new()).unwrap();
    store.store(&empty).await.unwrap();
    assert_eq!(store.retrieve("u", "p").await.unwrap(), Some(empty.clone()));
    let full = ApiKey::new("u", "p", vec![0]).unwrap();
    assert!(store.compare_and_swap(&empty, &full).await.unwrap());
    assert!(!store.compare_and_swap(&empty, &full).await.unwrap());
    assert_eq!(store.clear_all("u").await.unwrap(), 1);
}

#[tokio::test]
async fn a_saved_cursor_resumes_on_another_connection() {
    let Some((store, _raw, _cleanup)) = isolated().await else {
        return;
    };
    for u in 0..10 {
        store
            .store(&ApiKey::new(format!("user-{u}"), "p", vec![u]).unwrap())
            .await
            .unwrap();
    }
    let first = store.scan(None, 4).await.unwrap();
    assert_eq!(first.keys.len(), 4);
    let saved = first.next.expect("more pages").as_str().to_owned();

    let url = byok_testkit::services::redis_url().await.unwrap();
    let other = RedisStorage::builder(&url)
        .config(&common::config(store.prefix()))
        .open()
        .await
        .unwrap();
    let mut seen: std::collections::BTreeSet<String> =
        first.keys.iter().map(|k| k.user_id().to_owned()).collect();
    let mut cursor = Some(Cursor::new(saved));
    while let Some(c) = cursor {
        let page = other.scan(Some(&c), 4).await.unwrap();
        for k in page.keys {
            assert!(seen.insert(k.user_id().to_owned()), "a key came twice");
        }
        cursor = page.next;
    }
    assert_eq!(seen.len(), 10);
    for u in 0..10 {
        assert_eq!(store.clear_all(&format!("user-{u}")).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn purge_removes_stray_members_and_gets_past_them() {
    let Some((store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    common::purge_gets_past_stray_members(&store, &mut raw).await;
}

#[tokio::test]
async fn a_panicking_test_leaves_no_keys_behind() {
    let Some((store, mut raw, cleanup)) = isolated().await else {
        return;
    };
    let prefix = store.prefix().to_owned();
    let key = store.redis_user_key("u").unwrap();
    let task = tokio::spawn(async move {
        let _cleanup = cleanup;
        store
            .store(&ApiKey::new("u", "p", vec![1]).unwrap())
            .await
            .unwrap();
        panic!("a failing test");
    });
    assert!(task.await.unwrap_err().is_panic());
    let exists: bool = raw.exists(&key).await.unwrap();
    assert!(!exists, "{key} outlived the test");
    let left = common::keys_under(&mut raw, &prefix).await;
    assert_eq!(
        left,
        Vec::<String>::new(),
        "keys under the test's prefix outlived it"
    );
}

/// The crate docs promise Redis 7.0 as the minimum; the server these tests
/// run against must be at least that, or the promise is untested.
#[tokio::test]
async fn the_test_server_meets_the_documented_minimum_version() {
    let Some((_store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    let info: String = byok_redis::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut raw)
        .await
        .unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("INFO server names the version")
        .trim();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (7, 0),
        "the test Redis is {version}, older than the documented minimum 7.0"
    );
}

#[tokio::test]
async fn migrate_moves_format_1_keys_to_the_current_format() {
    let Some((store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    let prefix = common::fresh_prefix();
    let url = byok_testkit::services::redis_url().await.unwrap();
    let _cleanup_old = common::cleanup(&url, &prefix);
    let now = byok_core::key::to_millis(Utc::now());
    let later = Some(now + chrono::Duration::hours(1));
    let past = Some(now - chrono::Duration::seconds(10));
    let keys = [
        ApiKey::new("alice", "openai", vec![1, 2, 3])
            .unwrap()
            .with_hint(Some("sk-...1234".into()))
            .unwrap()
            .with_created_at(now)
            .with_expires_at(later),
        ApiKey::new("alice", "anthropic", vec![4])
            .unwrap()
            .with_created_at(now),
        ApiKey::new("b:{o}b", "x:y", Vec::new())
            .unwrap()
            .with_created_at(now),
    ];
    for key in &keys {
        common::write_format_1(&mut raw, &prefix, key).await;
    }
    let gone = ApiKey::new("carol", "openai", vec![9])
        .unwrap()
        .with_expires_at(past);
    common::write_format_1(&mut raw, &prefix, &gone).await;
    // A write over format-1 data is refused, changing nothing, until the
    // data is migrated.
    let early = store.clone().with_prefix(&prefix).unwrap();
    let newer = ApiKey::new("b:{o}b", "x:y", vec![7]).unwrap();
    let before = common::keys_under(&mut raw, &prefix).await;
    let err = early.store(&newer).await.unwrap_err();
    assert!(matches!(err, ByokError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("migrate"), "{err}");
    assert_eq!(common::keys_under(&mut raw, &prefix).await, before);
    // Written in the current format before the migration (planted by hand,
    // from a store of the current format): it must win over the format-1
    // key of the same slot.
    {
        let (scratch, _scratch_raw, _scratch_cleanup) = isolated().await.unwrap();
        scratch.store(&newer).await.unwrap();
        let record: Vec<u8> = raw
            .hget(scratch.redis_user_key("b:{o}b").unwrap(), "x:y")
            .await
            .unwrap();
        let () = raw
            .hset(early.redis_user_key("b:{o}b").unwrap(), "x:y", record)
            .await
            .unwrap();
    }

    // Opening reads only: the older data stays as it is, unseen by reads,
    // until `migrate`.
    let before = common::keys_under(&mut raw, &prefix).await;
    let migrated = RedisStorage::builder(&url)
        .config(&common::config(&prefix))
        .open()
        .await
        .unwrap();
    assert_eq!(migrated.retrieve("alice", "openai").await.unwrap(), None);
    assert_eq!(
        migrated.schema_status().await.unwrap(),
        SchemaStatus::Older {
            found: 1,
            current: 2
        }
    );
    assert_eq!(common::keys_under(&mut raw, &prefix).await, before);
    // The two keys of alice; the newer key of b:{o}b stays, and carol's
    // had expired.
    assert_eq!(migrated.migrate_and_count().await.unwrap(), 2);
    assert_eq!(
        migrated.schema_status().await.unwrap(),
        SchemaStatus::UpToDate
    );
    assert_eq!(
        migrated.retrieve("alice", "openai").await.unwrap(),
        Some(keys[0].clone())
    );
    assert_eq!(
        migrated.user_keys("alice").await.unwrap(),
        [keys[1].clone(), keys[0].clone()]
    );
    assert_eq!(
        migrated.retrieve("b:{o}b", "x:y").await.unwrap(),
        Some(newer)
    );
    assert_eq!(migrated.retrieve("carol", "openai").await.unwrap(), None);
    let format: String = raw.get(format!("{prefix}format")).await.unwrap();
    assert_eq!(format, "2");
    // No format-1 key is left, and migrating again finds nothing.
    let pattern = format!("{prefix}{{*}}:[ki]:*");
    let left: Vec<String> = byok_redis::redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(migrated.migrate_and_count().await.unwrap(), 0);
    // The expired key that Redis had already dropped is still counted by
    // the purge, and the scan sees exactly the live keys.
    assert!(migrated.purge_expired().await.unwrap() >= 1);
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = migrated.scan(cursor.as_ref(), 2).await.unwrap();
        seen.extend(
            page.keys
                .iter()
                .map(|k| (k.user_id().to_owned(), k.provider().to_owned())),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("alice".to_owned(), "anthropic".to_owned()),
            ("alice".to_owned(), "openai".to_owned()),
            ("b:{o}b".to_owned(), "x:y".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_unknown_format_is_refused() {
    let Some((store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    let () = raw
        .set(format!("{}format", store.prefix()), "3")
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(matches!(err, ByokError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("format"), "{err}");
    assert_eq!(
        store.schema_status().await.unwrap(),
        SchemaStatus::Newer {
            found: 3,
            current: 2
        }
    );
    let err = store
        .store(&ApiKey::new("u", "p", vec![1]).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ByokError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn two_processes_migrating_at_once_move_each_key_once() {
    let Some((store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    let prefix = common::fresh_prefix();
    let url = byok_testkit::services::redis_url().await.unwrap();
    let _cleanup_old = common::cleanup(&url, &prefix);
    let now = byok_core::key::to_millis(Utc::now());
    let keys: Vec<ApiKey> = (0..40)
        .map(|i| {
            ApiKey::new(format!("user-{}", i % 20), format!("p{i}"), vec![i as u8])
                .unwrap()
                .with_created_at(now)
        })
        .collect();
    for key in &keys {
        common::write_format_1(&mut raw, &prefix, key).await;
    }
    // Stores made by `with_prefix` have not migrated: both do it now.
    let a = store.clone().with_prefix(&prefix).unwrap();
    let b = store.with_prefix(&prefix).unwrap();
    let (moved_a, moved_b) = tokio::join!(a.migrate_and_count(), b.migrate_and_count());
    assert_eq!(moved_a.unwrap() + moved_b.unwrap(), 40);
    for key in &keys {
        assert_eq!(
            a.retrieve(key.user_id(), key.provider())
                .await
                .unwrap()
                .as_ref(),
            Some(key)
        );
    }
    for u in 0..20 {
        assert_eq!(a.clear_all(&format!("user-{u}")).await.unwrap(), 2);
    }
}

/// A user's hash as Redis holds it, field by field.
async fn user_hash(
    raw: &mut byok_redis::redis::aio::MultiplexedConnection,
    key: &str,
) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    raw.hgetall(key).await.unwrap()
}

#[tokio::test]
async fn checks_leave_the_key_records_as_older_versions_read_them() {
    let Some((store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    let (user, other) = ("alice", "bob");
    let key = ApiKey::new(user, "openai", b"ciphertext".to_vec())
        .unwrap()
        .with_hint(Some("...wxyz".into()))
        .unwrap()
        .with_expires_at(Some(Utc::now() + chrono::Duration::days(1)));
    store.store(&key).await.unwrap();
    store
        .store(&ApiKey::new(user, "anthropic", vec![7]).unwrap())
        .await
        .unwrap();
    store
        .store(&ApiKey::new(other, "openai", vec![8]).unwrap())
        .await
        .unwrap();
    let hash = store.redis_user_key(user).unwrap();
    let before = user_hash(&mut raw, &hash).await;
    assert_eq!(before.len(), 2);

    assert!(store.store_check(user, "openai", "checked").await.unwrap());
    assert!(store.store_check(user, "anthropic", "also").await.unwrap());
    // The user's hash holds exactly the fields and bytes it held: an older
    // version, which reads every field as a provider, sees nothing new.
    assert_eq!(user_hash(&mut raw, &hash).await, before);
    assert_eq!(
        store.retrieve(user, "openai").await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(
        store.list_providers(user).await.unwrap(),
        ["anthropic", "openai"]
    );
    // Checks are not keys: neither counted nor walked.
    assert_eq!(store.count().await.unwrap(), 3);
    let mut walked = 0;
    let mut cursor = None;
    loop {
        let page = store.scan(cursor.as_ref(), 10).await.unwrap();
        walked += page.keys.len();
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(walked, 3);
    // No migration: the prefix stays of the current format.
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);

    // An older version replaces a key with today's record (it writes the
    // user's hash alone): the check stays, naming the old key, and
    // today's reads get the new key.
    let replaced = before.get(b"anthropic".as_slice()).unwrap().clone();
    let () = raw.hset(&hash, "openai", &replaced).await.unwrap();
    let got = store.retrieve(user, "openai").await.unwrap().unwrap();
    assert_eq!(got.encrypted_value(), [7]);
    // An older version deletes a key (`HDEL`, nothing of checks): the next
    // check kept for the user drops the orphan.
    let () = raw.hdel(&hash, "openai").await.unwrap();
    assert!(!store.store_check(user, "openai", "late").await.unwrap());
    assert_eq!(store.checks(user).await.unwrap().len(), 2);
    assert!(store.store_check(user, "anthropic", "again").await.unwrap());
    assert_eq!(
        store.checks(user).await.unwrap(),
        [("anthropic".to_owned(), "again".to_owned())]
    );

    // A check's text is bounded, and an invalid id is refused.
    let long = "x".repeat(byok_core::check_record::MAX_ENCODED_LEN + 1);
    let err = store
        .store_check(user, "anthropic", &long)
        .await
        .unwrap_err();
    assert!(matches!(err, ByokError::InvalidInput(_)), "{err}");
    assert!(store.store_check("", "openai", "x").await.is_err());
    assert!(store.checks("").await.is_err());

    // An entry not written by byok is skipped, not an error, and left
    // alone.
    let checks = store.redis_check_key(user).unwrap();
    let () = raw.hset(&checks, b"\xff".as_slice(), "odd").await.unwrap();
    assert_eq!(
        store.checks(user).await.unwrap(),
        [("anthropic".to_owned(), "again".to_owned())]
    );
    // The user's last key leaves with every check.
    assert_eq!(store.clear_all(user).await.unwrap(), 1);
    let exists: bool = raw.exists(&checks).await.unwrap();
    assert!(!exists, "the check hash outlived clear_all");
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);

    // `destroy` removes checks with everything else under the prefix.
    store
        .store(&ApiKey::new(user, "openai", vec![9]).unwrap())
        .await
        .unwrap();
    assert!(store.store_check(user, "openai", "kept").await.unwrap());
    store.destroy().await.unwrap();
    let exists: bool = raw.exists(&checks).await.unwrap();
    assert!(!exists, "the check hash outlived destroy");
}

#[tokio::test]
async fn one_purge_batch_removes_the_checks_of_every_slot_it_purges() {
    let Some((store, mut raw, _cleanup)) = isolated().await else {
        return;
    };
    let past = Some(Utc::now() - chrono::Duration::hours(1));
    // Users of one bucket, so that one script purges all their slots.
    let users: Vec<String> = {
        let bucket = byok_redis::bucket_of("u0");
        (0..)
            .map(|i| format!("u{i}"))
            .filter(|u| byok_redis::bucket_of(u) == bucket)
            .take(3)
            .collect()
    };
    for user in &users {
        for p in ["a", "b"] {
            let key = ApiKey::new(user, p, vec![1]).unwrap().with_expires_at(past);
            store.store(&key).await.unwrap();
            assert!(store.store_check(user, p, p).await.unwrap(), "{user}/{p}");
        }
        store
            .store(&ApiKey::new(user, "live", vec![2]).unwrap())
            .await
            .unwrap();
        assert!(store.store_check(user, "live", "kept").await.unwrap());
    }
    assert_eq!(store.purge_expired().await.unwrap(), 6);
    for user in &users {
        assert_eq!(
            store.checks(user).await.unwrap(),
            [("live".to_owned(), "kept".to_owned())],
            "{user}"
        );
        let hash = store.redis_check_key(user).unwrap();
        let len: u64 = raw.hlen(&hash).await.unwrap();
        assert_eq!(len, 1, "{user}");
    }
}
