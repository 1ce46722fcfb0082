//! The conformance cases: one `pub async fn` per case, each taking the store
//! under test as `&dyn KeyStorage`.
//!
//! Every case works in its own random namespace of user ids and removes
//! what it wrote, so cases can run in parallel against one shared server.
//! The one exception is [`purge_removes_only_expired_keys`], which (like
//! every purge) removes expired keys of all users; it never touches an
//! unexpired key, so it cannot disturb another case.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use byok_core::error::Field;
use byok_core::{ApiKey, ByokError, Cursor, KeyStorage};
use chrono::{DateTime, TimeZone, Utc};
use futures::future::join_all;

use crate::{CaseResult, Failure, Namespace};

/// User or provider ids that are legal but trip naive key layouts, SQL
/// `LIKE`, glob patterns, separators and case-insensitive collations.
pub const HOSTILE_IDS: &[&str] = &[
    "a",
    "a:b",
    "b:c",
    "a:",
    ":a",
    "{x}",
    "{",
    "}",
    "}{",
    "*",
    "a*",
    "?",
    "[a]",
    "%",
    "a%",
    "_",
    "a_",
    "'",
    "\"",
    "`",
    "\\",
    "a\\b",
    " ",
    "a ",
    "alice",
    "Alice",
    "ALICE",
    "alice ",
    "alíce",
    "ss",
    "ß",
    "日本",
    "🦀",
    "ab",
    "abc",
    "a/b",
    "a|b",
    "a.b",
    "%2F",
    "a\u{00a0}",
];

fn key(user: &str, provider: &str, value: impl Into<Vec<u8>>) -> Result<ApiKey, Failure> {
    ApiKey::new(user, provider, value).map_err(|e| Failure::new(format!("building a key: {e}")))
}

fn at_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

fn in_future(d: chrono::Duration) -> DateTime<Utc> {
    byok_core::key::now() + d
}

async fn get(store: &dyn KeyStorage, user: &str, provider: &str) -> Result<ApiKey, Failure> {
    store
        .retrieve(user, provider)
        .await?
        .ok_or_else(|| Failure::new(format!("key ({user:?}, {provider:?}) is missing")))
}

fn expect_invalid<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, ByokError>,
    field: Field,
) -> CaseResult {
    match result {
        Err(ByokError::InvalidInput(e)) if e.field == field => Ok(()),
        other => Err(Failure::new(format!(
            "{what}: expected an InvalidInput error for the {field}, got {other:?}"
        ))),
    }
}

case! {
    /// Every field survives a store and a retrieve: a ciphertext of every
    /// byte value, the hint, and both timestamps to the millisecond.
    round_trip_preserves_every_field(store, ns) {
        let user = ns.user("u");
        let value: Vec<u8> = (0u8..=255).rev().chain(0u8..=255).collect();
        let k = key(&user, "openai", value)?
            .with_hint(Some("sk-a...wxyz".to_owned()))?
            .with_created_at(at_millis(1_700_000_000_123))
            .with_expires_at(Some(in_future(chrono::Duration::days(3))));
        store.store(&k).await?;
        let got = get(store, &user, "openai").await?;
        ensure_eq!(got, k, "the stored key");
        Ok(())
    }
}

case! {
    /// Ciphertexts are binary: NUL bytes, invalid UTF-8 and high bytes survive.
    binary_ciphertext_round_trips(store, ns) {
        let user = ns.user("u");
        let values: [&[u8]; 5] = [
            &[0],
            &[0, 0, 0, 0],
            &[0xff, 0xfe, 0xc3, 0x28, 0x00, 0x80],
            b"\\x00'\"%;--",
            &[0x7b, 0x7d, 0x3a, 0x2a, 0x0d, 0x0a],
        ];
        for (i, v) in values.iter().enumerate() {
            let provider = format!("p{i}");
            store.store(&key(&user, &provider, v.to_vec())?).await?;
        }
        for (i, v) in values.iter().enumerate() {
            let got = get(store, &user, &format!("p{i}")).await?;
            ensure_eq!(got.encrypted_value(), *v, "ciphertext {i}");
        }
        Ok(())
    }
}

case! {
    /// A 64 KiB ciphertext survives unchanged.
    large_value_round_trips(store, ns) {
        let user = ns.user("u");
        let value: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        store.store(&key(&user, "big", value.clone())?).await?;
        let got = get(store, &user, "big").await?;
        ensure!(got.encrypted_value() == value.as_slice(), "the 64 KiB value changed");
        Ok(())
    }
}

case! {
    /// Timestamps keep their milliseconds, at both ends of a second.
    timestamps_keep_millisecond_precision(store, ns) {
        let user = ns.user("u");
        let base = byok_core::key::now().timestamp() * 1000;
        for (i, ms) in [1i64, 999, 500].into_iter().enumerate() {
            let created = at_millis(base - 86_400_000 + ms);
            let expires = at_millis(base + 86_400_000 * 365 + 1000 - ms);
            let k = key(&user, &format!("p{i}"), vec![1])?
                .with_created_at(created)
                .with_expires_at(Some(expires));
            store.store(&k).await?;
            let got = get(store, &user, &format!("p{i}")).await?;
            ensure_eq!(got.created_at(), created, "created_at");
            ensure_eq!(got.expires_at(), Some(expires), "expires_at");
        }
        Ok(())
    }
}

case! {
    /// A key with neither hint nor expiry comes back with neither.
    key_without_hint_or_expiry_round_trips(store, ns) {
        let user = ns.user("u");
        let k = key(&user, "p", vec![9])?;
        store.store(&k).await?;
        let got = get(store, &user, "p").await?;
        ensure_eq!(got.hint(), None, "hint");
        ensure_eq!(got.expires_at(), None, "expires_at");
        ensure_eq!(got, k, "the stored key");
        Ok(())
    }
}

case! {
    /// Storing into a taken slot replaces value, hint and expiry; the slot
    /// still holds one key.
    replace_keeps_one_slot(store, ns) {
        let user = ns.user("u");
        let first = key(&user, "p", b"first".to_vec())?
            .with_hint(Some("one".into()))?
            .with_expires_at(Some(in_future(chrono::Duration::hours(1))));
        let second = key(&user, "p", b"second".to_vec())?
            .with_hint(Some("two".into()))?
            .with_expires_at(Some(in_future(chrono::Duration::hours(2))));
        store.store(&first).await?;
        store.store(&second).await?;
        ensure_eq!(get(store, &user, "p").await?, second, "after the replace");
        ensure_eq!(store.list_providers(&user).await?, vec!["p".to_owned()], "providers");
        ensure_eq!(store.clear_all(&user).await?, 1, "keys cleared");
        Ok(())
    }
}

case! {
    /// Replacing a key that had an expiry with one that has none clears the
    /// expiry, and the reverse sets it.
    replacing_clears_expiry(store, ns) {
        let user = ns.user("u");
        let expiring = key(&user, "p", vec![1])?
            .with_expires_at(Some(in_future(chrono::Duration::seconds(30))));
        store.store(&expiring).await?;
        store.store(&key(&user, "p", vec![2])?).await?;
        let got = get(store, &user, "p").await?;
        ensure_eq!(got.expires_at(), None, "expiry after replacing with a key without one");
        ensure_eq!(got.encrypted_value(), [2u8].as_slice(), "value");
        store.store(&expiring).await?;
        let got = get(store, &user, "p").await?;
        ensure_eq!(got.expires_at(), expiring.expires_at(), "expiry set again");
        Ok(())
    }
}

case! {
    /// Unknown users and providers read as absent, list empty and clear zero.
    missing_key_is_none(store, ns) {
        let user = ns.user("u");
        ensure!(store.retrieve(&user, "p").await?.is_none(), "unknown user has a key");
        store.store(&key(&user, "p", vec![1])?).await?;
        ensure!(store.retrieve(&user, "q").await?.is_none(), "unknown provider has a key");
        let nobody = ns.user("nobody");
        ensure!(store.list_providers(&nobody).await?.is_empty(), "unknown user lists providers");
        ensure_eq!(store.clear_all(&nobody).await?, 0, "keys cleared of an unknown user");
        ensure!(!store.delete(&nobody, "p").await?, "delete of an unknown user removed something");
        Ok(())
    }
}

case! {
    /// Delete returns true, then false; the user's other keys stay.
    delete_returns_true_then_false(store, ns) {
        let user = ns.user("u");
        store.store(&key(&user, "a", vec![1])?).await?;
        store.store(&key(&user, "b", vec![2])?).await?;
        ensure!(store.delete(&user, "a").await?, "first delete returned false");
        ensure!(!store.delete(&user, "a").await?, "second delete returned true");
        ensure!(store.retrieve(&user, "a").await?.is_none(), "deleted key still readable");
        ensure_eq!(get(store, &user, "b").await?.encrypted_value(), [2u8].as_slice(), "other key");
        ensure_eq!(store.list_providers(&user).await?, vec!["b".to_owned()], "providers");
        Ok(())
    }
}

case! {
    /// Providers list sorted by bytes, each once, only this user's.
    list_is_sorted_unique_and_scoped(store, ns) {
        let user = ns.user("u");
        let other = ns.user("v");
        let providers = ["openai", "Anthropic", "anthropic", "_z", "~", "é", "a b", "A", "0"];
        for p in providers {
            store.store(&key(&user, p, vec![1])?).await?;
        }
        store.store(&key(&user, "openai", vec![2])?).await?;
        store.store(&key(&other, "groq", vec![3])?).await?;
        let mut expected: Vec<String> = providers.iter().map(|p| p.to_string()).collect();
        expected.sort();
        ensure_eq!(store.list_providers(&user).await?, expected, "providers");
        ensure_eq!(store.list_providers(&other).await?, vec!["groq".to_owned()], "other user's providers");
        Ok(())
    }
}

case! {
    /// Clearing a user removes that user's keys only, and counts them.
    clear_removes_only_that_users_keys(store, ns) {
        let a = ns.user("a");
        let b = ns.user("b");
        for p in ["x", "y", "z"] {
            store.store(&key(&a, p, vec![1])?).await?;
        }
        for p in ["x", "y"] {
            store.store(&key(&b, p, vec![2])?).await?;
        }
        ensure_eq!(store.clear_all(&a).await?, 3, "keys cleared");
        ensure!(store.list_providers(&a).await?.is_empty(), "cleared user still lists keys");
        ensure!(store.retrieve(&a, "x").await?.is_none(), "cleared key still readable");
        ensure_eq!(store.list_providers(&b).await?.len(), 2, "other user's keys");
        ensure_eq!(store.clear_all(&a).await?, 0, "second clear");
        Ok(())
    }
}

case! {
    /// Clearing a user whose id is a prefix or a pattern of other ids
    /// (`a`, `a%`, `a_`, `a*`) removes exactly that user's keys.
    clear_is_exact_for_prefix_and_pattern_ids(store, ns) {
        let ids = ["a", "a%", "a_", "a*", "ab", "a:b", "a?", "a\\"];
        for id in ids {
            store.store(&key(&ns.user(id), "p", vec![1])?).await?;
        }
        for (i, id) in ids.iter().enumerate() {
            ensure_eq!(store.clear_all(&ns.user(id)).await?, 1, "keys cleared for {id:?}");
            for rest in &ids[i + 1..] {
                ensure!(
                    store.retrieve(&ns.user(rest), "p").await?.is_some(),
                    "clearing {id:?} removed the key of {rest:?}"
                );
            }
        }
        Ok(())
    }
}

case! {
    /// Users with hostile-but-legal ids never see each other's keys.
    users_are_isolated_under_hostile_ids(store, ns) {
        let users: Vec<String> = HOSTILE_IDS.iter().map(|id| ns.user(id)).collect();
        for (i, user) in users.iter().enumerate() {
            store.store(&key(user, "openai", (i as u32).to_be_bytes().to_vec())?).await?;
        }
        for (i, user) in users.iter().enumerate() {
            let got = get(store, user, "openai").await?;
            ensure_eq!(got.user_id(), user.as_str(), "user id of the key");
            ensure_eq!(got.encrypted_value(), (i as u32).to_be_bytes().as_slice(), "value of {user:?}");
            ensure_eq!(store.list_providers(user).await?, vec!["openai".to_owned()], "providers of {user:?}");
        }
        ensure!(store.delete(&users[0], "openai").await?, "delete");
        ensure_eq!(store.clear_all(&users[1]).await?, 1, "clear");
        for user in &users[2..] {
            ensure!(store.retrieve(user, "openai").await?.is_some(), "{user:?} lost its key");
        }
        Ok(())
    }
}

case! {
    /// Ids with format characters (an emoji sequence joined by U+200D, a
    /// soft hyphen) were legal before new ones were refused: keys stored
    /// under them stay readable, listable, walkable, swappable and
    /// removable, so one such row never breaks a scan, a rotation or an
    /// erasure.
    ids_with_format_characters_stored_earlier_stay_usable(store, ns) {
        let users = [ns.user("\u{1f468}\u{200d}\u{1f469}"), ns.user("soft\u{00ad}hyphen")];
        let provider = "open\u{200d}ai";
        for (i, user) in users.iter().enumerate() {
            store.store(&key(user, provider, vec![b'f', i as u8])?).await?;
        }
        let first = get(store, &users[0], provider).await?;
        ensure_eq!(first.encrypted_value(), [b'f', 0].as_slice(), "value of the first key");
        ensure!(
            store.retrieve_value(&users[0], provider).await?.is_some(),
            "retrieve_value of a stored id with a format character"
        );
        ensure_eq!(store.list_providers(&users[0]).await?, vec![provider.to_owned()], "providers");
        let mut seen = 0;
        let mut cursor = None;
        loop {
            let page = store.scan(cursor.as_ref(), 1).await?;
            seen += page.keys.iter().filter(|k| users.iter().any(|u| u == k.user_id())).count();
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        ensure_eq!(seen, 2, "keys of the walk, in pages of one");
        let swapped = key(&users[0], provider, b"g".to_vec())?;
        ensure!(store.compare_and_swap(&first, &swapped).await?, "compare_and_swap");
        ensure!(store.delete(&users[0], provider).await?, "delete");
        ensure_eq!(store.clear_all(&users[1]).await?, 1, "clear_all");
        Ok(())
    }
}

case! {
    /// Providers with hostile-but-legal names never see each other's keys.
    providers_are_isolated_under_hostile_ids(store, ns) {
        let user = ns.user("u");
        for (i, p) in HOSTILE_IDS.iter().enumerate() {
            store.store(&key(&user, p, (i as u32).to_be_bytes().to_vec())?).await?;
        }
        for (i, p) in HOSTILE_IDS.iter().enumerate() {
            let got = get(store, &user, p).await?;
            ensure_eq!(got.provider(), *p, "provider of the key");
            ensure_eq!(got.encrypted_value(), (i as u32).to_be_bytes().as_slice(), "value of {p:?}");
        }
        let mut expected: Vec<String> = HOSTILE_IDS.iter().map(|p| p.to_string()).collect();
        expected.sort();
        ensure_eq!(store.list_providers(&user).await?, expected, "providers");
        ensure_eq!(store.clear_all(&user).await?, HOSTILE_IDS.len() as u64, "keys cleared");
        Ok(())
    }
}

case! {
    /// Pairs that would collide if user and provider were joined with a
    /// separator stay apart.
    joined_ids_do_not_collide(store, ns) {
        let pairs = [
            ("a:b", "c"), ("a", "b:c"),
            ("a{", "}b"), ("a", "{}b"), ("a{}", "b"),
            ("a/b", "c"), ("a", "b/c"),
            ("a|b", "c"), ("a", "b|c"),
            ("a_b", "c"), ("a", "b_c"),
            ("a}:{b", "c"), ("a", "}:{b:c"),
        ];
        for (i, (u, p)) in pairs.iter().enumerate() {
            store.store(&key(&ns.user(u), p, vec![i as u8])?).await?;
        }
        for (i, (u, p)) in pairs.iter().enumerate() {
            let got = get(store, &ns.user(u), p).await?;
            ensure_eq!(got.encrypted_value(), [i as u8].as_slice(), "value of ({u:?}, {p:?})");
        }
        Ok(())
    }
}

case! {
    /// Ids compare byte for byte: case, trailing spaces and accents matter.
    ids_compare_byte_for_byte(store, ns) {
        let users = ["alice", "Alice", "ALICE", "alice ", "alíce", "ss", "ß"];
        for (i, u) in users.iter().enumerate() {
            store.store(&key(&ns.user(u), "openai", vec![i as u8])?).await?;
        }
        for (i, u) in users.iter().enumerate() {
            let got = get(store, &ns.user(u), "openai").await?;
            ensure_eq!(got.encrypted_value(), [i as u8].as_slice(), "value of {u:?}");
        }
        let user = ns.user("p");
        let providers = ["openai", "OpenAI", "openai ", "öpenai"];
        for (i, p) in providers.iter().enumerate() {
            store.store(&key(&user, p, vec![i as u8])?).await?;
        }
        let mut expected: Vec<String> = providers.iter().map(|p| p.to_string()).collect();
        expected.sort();
        ensure_eq!(store.list_providers(&user).await?, expected, "providers");
        ensure!(store.retrieve(&user, "OPENAI").await?.is_none(), "OPENAI matched another case");
        Ok(())
    }
}

case! {
    /// The longest legal ids (255-byte user, 64-byte provider, multi-byte
    /// characters) round-trip.
    longest_legal_ids_round_trip(store, ns) {
        let mut user = ns.user("");
        while user.len() + 3 <= byok_core::validate::MAX_USER_ID_LEN {
            user.push('日');
        }
        while user.len() < byok_core::validate::MAX_USER_ID_LEN {
            user.push('x');
        }
        let user = ns.user(&user[ns.prefix().len()..]);
        let provider = format!("{}x", "€".repeat(21));
        ensure_eq!(user.len(), 255, "user id length");
        ensure_eq!(provider.len(), 64, "provider length");
        store.store(&key(&user, &provider, vec![7])?).await?;
        let got = get(store, &user, &provider).await?;
        ensure_eq!(got.user_id(), user.as_str(), "user id");
        ensure_eq!(got.provider(), provider.as_str(), "provider");
        ensure_eq!(store.list_providers(&user).await?, vec![provider.clone()], "providers");
        Ok(())
    }
}

case! {
    /// Empty, over-long and control-character ids are rejected by every
    /// method with an `InvalidInput` error; so is a page size of zero.
    invalid_ids_are_rejected(store, ns) {
        let user = ns.user("u");
        let long_user = "u".repeat(256);
        let long_provider = "p".repeat(65);
        for bad in ["", long_user.as_str(), "a\nb", "a\0b", "\u{1b}[31m"] {
            expect_invalid("retrieve", store.retrieve(bad, "p").await, Field::UserId)?;
            expect_invalid("delete", store.delete(bad, "p").await, Field::UserId)?;
            expect_invalid("list_providers", store.list_providers(bad).await, Field::UserId)?;
            expect_invalid("clear_all", store.clear_all(bad).await, Field::UserId)?;
        }
        for bad in ["", long_provider.as_str(), "a\tb", "a\u{7f}"] {
            expect_invalid("retrieve", store.retrieve(&user, bad).await, Field::Provider)?;
            expect_invalid("delete", store.delete(&user, bad).await, Field::Provider)?;
        }
        expect_invalid("scan", store.scan(None, 0).await, Field::PageSize)?;
        let a = key(&user, "p", vec![1])?;
        let b = key(&user, "q", vec![2])?;
        expect_invalid("compare_and_swap", store.compare_and_swap(&a, &b).await, Field::KeyPair)?;
        Ok(())
    }
}

case! {
    /// An expired key is invisible to retrieve, list, scan and
    /// compare-and-swap; an unexpired neighbour is not.
    expired_key_is_invisible(store, ns) {
        let user = ns.user("u");
        let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
        let expired = key(&user, "old", vec![1])?.with_expires_at(past);
        store.store(&expired).await?;
        store.store(&key(&user, "new", vec![2])?.with_expires_at(Some(in_future(chrono::Duration::hours(1))))).await?;
        ensure!(store.retrieve(&user, "old").await?.is_none(), "expired key was returned");
        ensure_eq!(store.list_providers(&user).await?, vec!["new".to_owned()], "providers");
        let replacement = key(&user, "old", vec![3])?;
        ensure!(
            !store.compare_and_swap(&expired, &replacement).await?,
            "compare-and-swap replaced an expired key"
        );
        let seen = scan_namespace(store, &ns, 100).await?;
        ensure!(!seen.contains_key(&(user.clone(), "old".to_owned())), "scan returned an expired key");
        ensure!(seen.contains_key(&(user.clone(), "new".to_owned())), "scan missed a live key");
        Ok(())
    }
}

case! {
    /// `retrieve_value` returns the encrypted value that `retrieve` does,
    /// byte for byte, and nothing for a missing or expired key; bad ids are
    /// refused as they are by `retrieve`.
    retrieve_value_is_the_value_retrieve_returns(store, ns) {
        let user = ns.user("u");
        let every_byte: Vec<u8> = (0..=255u8).rev().collect();
        let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
        let soon = Some(in_future(chrono::Duration::hours(1)));
        store.store(&key(&user, "forever", every_byte.clone())?).await?;
        store.store(&key(&user, "soon", vec![7; 3000])?.with_expires_at(soon)).await?;
        store.store(&key(&user, "old", vec![1])?.with_expires_at(past)).await?;
        for provider in ["forever", "soon"] {
            let whole = get(store, &user, provider).await?;
            let value = store.retrieve_value(&user, provider).await?;
            ensure!(
                value.as_deref() == Some(whole.encrypted_value()),
                "retrieve_value of {provider:?} differs from retrieve's value"
            );
        }
        ensure!(
            store.retrieve_value(&user, "forever").await?.as_deref() == Some(every_byte.as_slice()),
            "retrieve_value changed the bytes"
        );
        ensure!(store.retrieve_value(&user, "old").await?.is_none(), "an expired value was returned");
        ensure!(store.retrieve_value(&user, "none").await?.is_none(), "a missing provider has a value");
        ensure!(store.retrieve_value(&ns.user("nobody"), "forever").await?.is_none(), "a missing user has a value");
        expect_invalid("retrieve_value", store.retrieve_value("", "p").await, Field::UserId)?;
        expect_invalid("retrieve_value", store.retrieve_value("a\0b", "p").await, Field::UserId)?;
        expect_invalid("retrieve_value", store.retrieve_value(&user, "a\tb").await, Field::Provider)?;
        Ok(())
    }
}

case! {
    /// `user_keys` returns every live key of the user, whole and sorted by
    /// provider, nobody else's, and an expired key only as expired.
    user_keys_returns_the_users_keys_sorted(store, ns) {
        let user = ns.user("u");
        let other = ns.user("other");
        let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
        let later = Some(in_future(chrono::Duration::hours(1)));
        let mut live = Vec::new();
        for (p, value) in [("zeta", 3u8), ("alpha", 1), ("mid", 2)] {
            let k = key(&user, p, vec![value; 20])?
                .with_hint(Some(format!("hint-{p}")))
                .map_err(|e| Failure::new(format!("building a hint: {e}")))?
                .with_expires_at(later);
            store.store(&k).await?;
            live.push(k);
        }
        store.store(&key(&user, "gone", vec![9])?.with_expires_at(past)).await?;
        store.store(&key(&other, "alpha", vec![7])?).await?;
        ensure_eq!(store.user_keys(&ns.user("nobody")).await?.len(), 0, "keys of a user without keys");
        let got = store.user_keys(&user).await?;
        let providers: Vec<&str> = got.iter().map(ApiKey::provider).collect();
        let mut sorted = providers.clone();
        sorted.sort_unstable();
        ensure_eq!(providers, sorted, "user_keys order");
        for k in &got {
            ensure_eq!(k.user_id(), user.as_str(), "user of a returned key");
            if k.provider() == "gone" {
                ensure!(k.is_expired(), "the expired key came back as live");
            }
        }
        let live_got: Vec<&ApiKey> = got.iter().filter(|k| !k.is_expired()).collect();
        live.sort_by(|a, b| a.provider().cmp(b.provider()));
        ensure_eq!(live_got, live.iter().collect::<Vec<_>>(), "live keys from user_keys");
        Ok(())
    }
}

case! {
    /// Purge removes expired keys (of every user) and counts at least ours;
    /// it leaves unexpired keys alone.
    purge_removes_only_expired_keys(store, ns) {
        let user = ns.user("u");
        let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
        for p in ["e1", "e2", "e3"] {
            store.store(&key(&user, p, vec![1])?.with_expires_at(past)).await?;
        }
        store.store(&key(&user, "live", vec![2])?.with_expires_at(Some(in_future(chrono::Duration::hours(1))))).await?;
        store.store(&key(&user, "forever", vec![3])?).await?;
        let purged = store.purge_expired().await?;
        ensure!(purged >= 3, "purge reported {purged} keys, fewer than the 3 expired ones");
        for p in ["e1", "e2", "e3"] {
            ensure!(!store.delete(&user, p).await?, "expired key {p} was still stored after purge");
        }
        ensure_eq!(store.list_providers(&user).await?, vec!["forever".to_owned(), "live".to_owned()], "live keys");
        Ok(())
    }
}

case! {
    /// A short time to live elapses in real time.
    short_ttl_elapses_in_real_time(store, ns) {
        let user = ns.user("u");
        let expires = in_future(chrono::Duration::milliseconds(2500));
        store.store(&key(&user, "p", vec![1])?.with_expires_at(Some(expires))).await?;
        ensure!(store.retrieve(&user, "p").await?.is_some(), "the key was gone before its expiry");
        let wait = (expires - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(250);
        tokio::time::sleep(wait).await;
        ensure!(store.retrieve(&user, "p").await?.is_none(), "the key outlived its expiry");
        ensure!(store.list_providers(&user).await?.is_empty(), "an expired key was listed");
        Ok(())
    }
}

case! {
    /// 64 concurrent writers of one slot leave exactly one key, holding one
    /// of the written values.
    concurrent_writers_of_one_slot(store, ns) {
        let user = ns.user("u");
        let keys = (0..64u8)
            .map(|i| key(&user, "p", vec![i; 16]))
            .collect::<Result<Vec<_>, _>>()?;
        for r in join_all(keys.iter().map(|k| store.store(k))).await {
            r?;
        }
        let got = get(store, &user, "p").await?;
        let v = got.encrypted_value();
        ensure!(v.len() == 16 && v.iter().all(|b| *b == v[0]) && v[0] < 64, "a torn value: {v:?}");
        ensure_eq!(store.list_providers(&user).await?, vec!["p".to_owned()], "providers");
        ensure_eq!(store.clear_all(&user).await?, 1, "keys in the slot");
        Ok(())
    }
}

case! {
    /// 64 concurrent writers of distinct slots leave all 64 keys.
    concurrent_writers_of_distinct_slots(store, ns) {
        let users: Vec<String> = (0..8).map(|u| ns.user(&format!("u{u}"))).collect();
        let mut keys = Vec::new();
        for (u, user) in users.iter().enumerate() {
            for p in 0..8 {
                keys.push(key(user, &format!("p{p}"), vec![u as u8, p as u8])?);
            }
        }
        for r in join_all(keys.iter().map(|k| store.store(k))).await {
            r?;
        }
        for (u, user) in users.iter().enumerate() {
            for p in 0..8u8 {
                let got = get(store, user, &format!("p{p}")).await?;
                ensure_eq!(got.encrypted_value(), [u as u8, p].as_slice(), "value");
            }
            ensure_eq!(store.list_providers(user).await?.len(), 8, "providers of {user:?}");
        }
        Ok(())
    }
}

case! {
    /// Compare-and-swap replaces only the current value, and never creates
    /// a key in an empty slot.
    compare_and_swap_requires_current_value(store, ns) {
        let user = ns.user("u");
        let a = key(&user, "p", b"a".to_vec())?;
        let b = key(&user, "p", b"b".to_vec())?.with_hint(Some("hint-b".into()))?;
        let c = key(&user, "p", b"c".to_vec())?;
        ensure!(!store.compare_and_swap(&a, &b).await?, "swap into an empty slot succeeded");
        ensure!(store.retrieve(&user, "p").await?.is_none(), "swap created a key");
        store.store(&a).await?;
        ensure!(!store.compare_and_swap(&c, &b).await?, "swap with a stale value succeeded");
        ensure_eq!(get(store, &user, "p").await?, a, "after a failed swap");
        ensure!(store.compare_and_swap(&a, &b).await?, "swap with the current value failed");
        ensure_eq!(get(store, &user, "p").await?, b, "after the swap");
        ensure!(!store.compare_and_swap(&a, &c).await?, "second swap from the old value succeeded");
        ensure_eq!(get(store, &user, "p").await?, b, "after the second swap");
        Ok(())
    }
}

case! {
    /// Of 16 concurrent compare-and-swaps from the same value, exactly one wins.
    compare_and_swap_is_atomic(store, ns) {
        let user = ns.user("u");
        let start = key(&user, "p", b"start".to_vec())?;
        store.store(&start).await?;
        let news = (0..16u8)
            .map(|i| key(&user, "p", vec![i]))
            .collect::<Result<Vec<_>, _>>()?;
        let mut wins = 0;
        for r in join_all(news.iter().map(|n| store.compare_and_swap(&start, n))).await {
            wins += u32::from(r?);
        }
        ensure_eq!(wins, 1, "winning swaps");
        Ok(())
    }
}

case! {
    /// `store_if_absent` stores into an empty slot and says so; refuses a
    /// slot with a live key, leaving that key exactly as it was; and
    /// stores over a key that has expired.
    store_if_absent_stores_only_into_an_empty_slot(store, ns) {
        let user = ns.user("u");
        let first = key(&user, "p", b"first".to_vec())?
            .with_hint(Some("hint-1".into()))?
            .with_created_at(at_millis(1_700_000_000_123))
            .with_expires_at(Some(in_future(chrono::Duration::hours(1))));
        ensure!(store.store_if_absent(&first).await?, "an empty slot was refused");
        ensure_eq!(get(store, &user, "p").await?, first, "the stored key");
        let second = key(&user, "p", b"second".to_vec())?;
        ensure!(!store.store_if_absent(&second).await?, "a live key was replaced");
        ensure_eq!(get(store, &user, "p").await?, first, "the live key after a refusal");
        let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
        let expired = key(&user, "q", b"old".to_vec())?.with_expires_at(past);
        store.store(&expired).await?;
        let fresh = key(&user, "q", b"fresh".to_vec())?.with_hint(Some("hint-2".into()))?;
        ensure!(store.store_if_absent(&fresh).await?, "an expired key was not replaced");
        ensure_eq!(get(store, &user, "q").await?, fresh, "the key over the expired one");
        ensure_eq!(store.list_providers(&user).await?, vec!["p".to_owned(), "q".to_owned()], "providers");
        Ok(())
    }
}

case! {
    /// Of 16 concurrent `store_if_absent` calls for one empty slot, and
    /// then for one whose key has expired, exactly one stores, and the
    /// slot holds that one's key.
    store_if_absent_is_atomic(store, ns) {
        let user = ns.user("u");
        let past = Some(byok_core::key::now() - chrono::Duration::seconds(5));
        store.store(&key(&user, "expired", b"old".to_vec())?.with_expires_at(past)).await?;
        for provider in ["empty", "expired"] {
            let keys = (0..16u8)
                .map(|i| key(&user, provider, vec![i; 24]))
                .collect::<Result<Vec<_>, _>>()?;
            let results = join_all(keys.iter().map(|k| store.store_if_absent(k))).await;
            let mut winners = Vec::new();
            for (k, r) in keys.iter().zip(results) {
                if r? {
                    winners.push(k);
                }
            }
            ensure_eq!(winners.len(), 1, "calls that stored into the {provider} slot");
            ensure_eq!(get(store, &user, provider).await?, *winners[0], "the {provider} slot's key");
        }
        Ok(())
    }
}

/// Walks the whole store and keeps the keys of this namespace, failing if
/// one comes twice or a page is larger than asked.
async fn scan_namespace(
    store: &dyn KeyStorage,
    ns: &Namespace,
    page_size: usize,
) -> Result<HashMap<(String, String), ApiKey>, Failure> {
    let mut seen = HashMap::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0u64;
    loop {
        let page = store.scan(cursor.as_ref(), page_size).await?;
        ensure!(
            page.keys.len() <= page_size,
            "a page of {} keys, more than the {page_size} asked for",
            page.keys.len()
        );
        for k in page.keys {
            if k.user_id().starts_with(ns.prefix()) {
                let slot = (k.user_id().to_owned(), k.provider().to_owned());
                ensure!(!seen.contains_key(&slot), "scan returned {slot:?} twice");
                seen.insert(slot, k);
            }
        }
        pages += 1;
        ensure!(pages < 10_000_000, "the scan does not end");
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(seen),
        }
    }
}

case! {
    /// A paged walk visits every key exactly once, whatever the page size.
    scan_visits_every_key_once(store, ns) {
        let mut expected = BTreeSet::new();
        for u in 0..5 {
            let user = ns.user(&format!("u{u}"));
            for p in 0..(u * 2 + 1) {
                let provider = format!("p{p}");
                store.store(&key(&user, &provider, vec![u as u8, p as u8])?).await?;
                expected.insert((user.clone(), provider));
            }
        }
        for page_size in [1, 7, 1000] {
            let seen = scan_namespace(store, &ns, page_size).await?;
            let got: BTreeSet<_> = seen.keys().cloned().collect();
            ensure_eq!(got, expected, "keys walked with pages of {page_size}");
            for ((u, p), k) in &seen {
                ensure!(k.user_id() == u && k.provider() == p, "a key under the wrong slot");
            }
        }
        Ok(())
    }
}

case! {
    /// One user with 500 providers: all stored, listed sorted, cleared.
    user_with_500_providers(store, ns) {
        let user = ns.user("u");
        let keys = (0..500)
            .map(|i| key(&user, &format!("provider-{i:03}"), vec![(i % 251) as u8]))
            .collect::<Result<Vec<_>, _>>()?;
        for chunk in keys.chunks(50) {
            for r in join_all(chunk.iter().map(|k| store.store(k))).await {
                r?;
            }
        }
        let listed = store.list_providers(&user).await?;
        let expected: Vec<String> = (0..500).map(|i| format!("provider-{i:03}")).collect();
        ensure_eq!(listed, expected, "providers");
        ensure_eq!(get(store, &user, "provider-499").await?.encrypted_value(), [(499 % 251) as u8].as_slice(), "a value");
        ensure_eq!(store.clear_all(&user).await?, 500, "keys cleared");
        Ok(())
    }
}

/// Hostile ids: NUL and other control characters, combining and invisible
/// characters, SQL, Redis, glob and hash-tag metacharacters,
/// percent-encodings, paths, and ids at, just over and far over the
/// length limits (1 MiB). Some are legal and must be kept apart from every
/// other id; the rest must be refused with a typed error.
///
/// `room` is how many bytes the id may take and stay legal (a user id
/// made of a namespace prefix and one of these has less room than 255).
pub fn hostile_ids(room: usize) -> Vec<String> {
    const FIXED: &[&str] = &[
        // NUL and control characters.
        "\0",
        "a\0b",
        "a\0",
        "\t",
        "a\nb",
        "\r\n",
        "\u{1b}[31m",
        "\u{7f}",
        "\u{85}",
        "\u{9b}",
        "\u{8}",
        "*-1\r\n",
        // Combining, composed and look-alike characters: all distinct ids.
        "e\u{301}",
        "\u{e9}",
        "\u{301}",
        "a\u{300}\u{301}\u{302}\u{303}\u{304}",
        "\u{1100}\u{1161}",
        "\u{ac00}",
        "\u{212b}",
        "\u{c5}",
        "A\u{30a}",
        "\u{ff41}",
        "a",
        "A",
        "\u{df}",
        "ss",
        "\u{130}",
        "i\u{307}",
        "\u{131}",
        "\u{2126}",
        "\u{3a9}",
        // Invisible, bidirectional and other whitespace.
        "\u{200b}",
        "\u{200d}",
        "\u{202e}abc",
        "\u{feff}x",
        "\u{2028}",
        "\u{a0}",
        "\u{3000}",
        " ",
        "  ",
        "a ",
        " a",
        "\u{10ffff}",
        "\u{fffd}",
        "\u{1f980}",
        // SQL metacharacters and injections.
        "'",
        "''",
        "\"",
        "`",
        "\\",
        "\\'",
        "'; DROP TABLE user_api_keys; --",
        "' OR '1'='1",
        "\" OR 1=1 --",
        "%",
        "_",
        "%%",
        "[",
        "]",
        "[a-z]",
        "$1",
        "?",
        ":name",
        "@var",
        "/*",
        "*/",
        "--",
        ";",
        "\\x00",
        "\\0",
        "NULL",
        "null",
        // Redis, glob and hash-tag characters.
        "{",
        "}",
        "{}",
        "{a}",
        "}{",
        "{a}{b}",
        "{{}}",
        "*",
        "a*",
        "\\*",
        "^",
        "!",
        "a b",
        "\"quoted\"",
        "KEYS *",
        ":",
        "::",
        "a:b",
        "byok_",
        "byok_:x",
        "$-1",
        "+OK",
        "-ERR",
        // Percent-encodings, URL and path characters.
        "%00",
        "%0A",
        "%2F",
        "%25",
        "%2525",
        "a%20b",
        "%s",
        "%n",
        "%x%x",
        "+",
        "&",
        "=",
        "#",
        "?x=1",
        "..",
        "../",
        "/",
        "./",
        "~",
        "a/../b",
        "a|b",
        "a,b",
        // Empty.
        "",
    ];
    let mut ids: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
    ids.push("x".repeat(room));
    ids.push("x".repeat(room + 1));
    // Multi-byte characters straddling the limit.
    let mut euros = "\u{20ac}".repeat(room / 3);
    ids.push(euros.clone());
    euros.push('\u{20ac}');
    ids.push(euros);
    ids.push("{".repeat(1024 * 1024));
    ids.push("\u{e9}".repeat(512 * 1024));
    ids
}

/// An id as it may appear in a failure message: its first 40 characters.
fn short(id: &str) -> String {
    let head: String = id.chars().take(40).collect();
    if head.len() < id.len() {
        format!("{head:?}... ({} bytes)", id.len())
    } else {
        format!("{head:?}")
    }
}

/// What one run of a hostile table did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostileTally {
    /// Inputs tried.
    pub inputs: u64,
    /// Inputs refused with a typed, non-retryable error.
    pub typed_errors: u64,
    /// Inputs stored, then read back exactly and apart from every other.
    pub stored: u64,
}

impl std::fmt::Display for HostileTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} inputs tried: {} typed errors, {} stored in isolation",
            self.inputs, self.typed_errors, self.stored
        )
    }
}

/// Stores one hostile slot, or checks that the store refuses it the way it
/// must: every method gives `InvalidInput` for an invalid id, and any other
/// refusal is typed, not retryable, and writes nothing.
async fn try_hostile_slot(
    store: &dyn KeyStorage,
    tally: &mut HostileTally,
    user: &str,
    provider: &str,
    value: Vec<u8>,
) -> Result<bool, Failure> {
    tally.inputs += 1;
    let (su, sp) = (short(user), short(provider));
    let k = match ApiKey::new(user, provider, value) {
        Ok(k) => k,
        Err(e) => {
            let field = e.field;
            let what = format!("{}/{}", short(user), short(provider));
            expect_invalid(
                &format!("retrieve {what}"),
                store.retrieve(user, provider).await,
                field,
            )?;
            expect_invalid(
                &format!("delete {what}"),
                store.delete(user, provider).await,
                field,
            )?;
            if field == Field::UserId {
                expect_invalid(
                    &format!("list_providers {what}"),
                    store.list_providers(user).await,
                    field,
                )?;
                expect_invalid(
                    &format!("clear_all {what}"),
                    store.clear_all(user).await,
                    field,
                )?;
                expect_invalid(
                    &format!("user_keys {what}"),
                    store.user_keys(user).await,
                    field,
                )?;
            }
            tally.typed_errors += 1;
            return Ok(false);
        }
    };
    match store.store(&k).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_retryable() => Err(Failure::new(format!(
            "storing ({su}, {sp}) failed with a retryable error, \
             though a retry cannot help: {e}"
        ))),
        Err(_) => {
            ensure!(
                store.retrieve(user, provider).await?.is_none(),
                "a refused store of ({su}, {sp}) left a key behind"
            );
            tally.typed_errors += 1;
            Ok(false)
        }
    }
}

/// Runs the hostile-id table against `store`, each id as a user id and as
/// a provider, and checks that what was stored reads back exactly, lists
/// and walks apart from every other id; returns the tally.
pub async fn hostile_id_table(
    store: &dyn KeyStorage,
    ns: &Namespace,
) -> Result<HostileTally, Failure> {
    let mut tally = HostileTally::default();
    let mut stored: Vec<(String, String, Vec<u8>)> = Vec::new();
    let user_room = byok_core::validate::MAX_USER_ID_LEN - ns.prefix().len();
    let owner = ns.user("providers");
    let mut n = 0u32;
    for id in hostile_ids(user_room) {
        n += 1;
        let user = ns.user(&id);
        let value = [b"u".as_slice(), &n.to_be_bytes()].concat();
        if try_hostile_slot(store, &mut tally, &user, "hostile", value.clone()).await? {
            stored.push((user, "hostile".to_owned(), value));
        }
    }
    // The provider ids fill the rest of a 64-byte provider.
    for id in hostile_ids(byok_core::validate::MAX_PROVIDER_LEN) {
        n += 1;
        let value = [b"p".as_slice(), &n.to_be_bytes()].concat();
        if try_hostile_slot(store, &mut tally, &owner, &id, value.clone()).await? {
            stored.push((owner.clone(), id, value));
        }
    }
    // Every stored slot reads back exactly: had two ids met in one slot,
    // one of them would read the other's value.
    for (user, provider, value) in &stored {
        let (su, sp) = (short(user), short(provider));
        let got = get(store, user, provider).await?;
        ensure!(
            got.user_id() == user && got.provider() == provider,
            "({su}, {sp}) came back as ({}, {})",
            short(got.user_id()),
            short(got.provider())
        );
        ensure!(
            got.encrypted_value() == value.as_slice(),
            "({su}, {sp}) reads another slot's value"
        );
        tally.stored += 1;
    }
    let mut owned: Vec<String> = stored
        .iter()
        .filter(|(u, _, _)| *u == owner)
        .map(|(_, p, _)| p.clone())
        .collect();
    owned.sort();
    ensure_eq!(
        store.list_providers(&owner).await?,
        owned,
        "providers of the hostile provider ids"
    );
    let keys: Vec<String> = store
        .user_keys(&owner)
        .await?
        .iter()
        .map(|k| k.provider().to_owned())
        .collect();
    ensure_eq!(keys, owned, "user_keys of the hostile provider ids");
    for (user, _, _) in stored.iter().filter(|(u, _, _)| *u != owner) {
        let su = short(user);
        ensure_eq!(
            store.list_providers(user).await?,
            vec!["hostile".to_owned()],
            "providers of {su}"
        );
    }
    // A paged walk finds each slot once, whatever the cursor must encode.
    let walked: BTreeSet<(String, String)> =
        scan_namespace(store, ns, 7).await?.into_keys().collect();
    let expected: BTreeSet<(String, String)> = stored
        .iter()
        .map(|(u, p, _)| (u.clone(), p.clone()))
        .collect();
    ensure!(
        walked == expected,
        "the walk found {} slots, {} were stored",
        walked.len(),
        expected.len()
    );
    // Removing every other slot leaves the rest.
    for (i, (user, provider, _)) in stored.iter().enumerate() {
        if i % 2 == 0 {
            let (su, sp) = (short(user), short(provider));
            ensure!(
                store.delete(user, provider).await?,
                "delete of ({su}, {sp})"
            );
        }
    }
    for (i, (user, provider, value)) in stored.iter().enumerate() {
        let (su, sp) = (short(user), short(provider));
        let got = store.retrieve(user, provider).await?;
        if i % 2 == 0 {
            ensure!(got.is_none(), "({su}, {sp}) survived its delete");
        } else {
            ensure!(
                got.is_some_and(|k| k.encrypted_value() == value.as_slice()),
                "deleting a neighbour changed ({su}, {sp})"
            );
        }
    }
    Ok(tally)
}

case! {
    /// Hostile ids (see [`hostile_ids`]), each as a user id and as a
    /// provider, are refused with a typed error by every method or stored
    /// apart from every other id: they read back exactly, list, walk and
    /// delete alone. Never a panic. Prints its tally.
    hostile_ids_are_refused_or_isolated(store, ns) {
        let tally = hostile_id_table(store, &ns).await?;
        ensure!(tally.stored > 0 && tally.typed_errors > 0, "a one-sided tally: {tally}");
        eprintln!("hostile ids: {tally}");
        Ok(())
    }
}

/// Expiry and creation times at the edges of what a backend may hold:
/// before 1970, the 32-bit and four-digit-year limits, and the ends of the
/// range `chrono` (and so a manager's TTL) can reach.
pub fn absurd_times() -> Vec<DateTime<Utc>> {
    let mut times: Vec<DateTime<Utc>> = [
        -62_135_596_800_000i64, // 0001-01-01
        -1,                     // 1969-12-31T23:59:59.999
        0,                      // 1970-01-01
        2_147_483_648_000,      // 2038-01-19T03:14:08, past i32 seconds
        253_402_300_799_999,    // 9999-12-31T23:59:59.999
        253_402_300_800_000,    // 10000-01-01
        8_640_000_000_000_000,  // 275760-09-13, the end of JavaScript dates
    ]
    .into_iter()
    .filter_map(|ms| Utc.timestamp_millis_opt(ms).single())
    .collect();
    times.push(byok_core::key::to_millis(DateTime::<Utc>::MAX_UTC));
    times.push(byok_core::key::to_millis(DateTime::<Utc>::MIN_UTC));
    times
}

case! {
    /// A key whose expiry or creation time is absurd (year 1, before 1970,
    /// after 9999, the ends of `chrono`'s range) is stored with exactly
    /// those times, or refused with a typed, non-retryable error that
    /// writes nothing; a past expiry is invisible. Never a panic. Prints
    /// its tally.
    absurd_times_are_stored_exactly_or_refused(store, ns) {
        let user = ns.user("u");
        let now = byok_core::key::now();
        let mut tally = HostileTally::default();
        for (i, t) in absurd_times().into_iter().enumerate() {
            for (role, k) in [
                ("expires_at", key(&user, &format!("e{i}"), vec![1])?.with_expires_at(Some(t))),
                ("created_at", key(&user, &format!("c{i}"), vec![2])?.with_created_at(t)),
            ] {
                tally.inputs += 1;
                let provider = k.provider().to_owned();
                match store.store(&k).await {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => {
                        return Err(Failure::new(format!("{role} {t}: a retryable error: {e}")));
                    }
                    Err(_) => {
                        ensure!(store.retrieve(&user, &provider).await?.is_none(),
                            "{role} {t}: a refused store left a key behind");
                        tally.typed_errors += 1;
                        continue;
                    }
                }
                let got = store.retrieve(&user, &provider).await?;
                if k.is_expired_at(now) {
                    ensure!(got.is_none(), "{role} {t}: an expired key was returned");
                } else {
                    let got = got.ok_or_else(|| Failure::new(format!("{role} {t}: the key is missing")))?;
                    ensure_eq!(got.expires_at(), k.expires_at(), "{role} {t}: expires_at");
                    ensure_eq!(got.created_at(), k.created_at(), "{role} {t}: created_at");
                }
                tally.stored += 1;
            }
        }
        eprintln!("absurd times: {tally}");
        Ok(())
    }
}

case! {
    /// Keys created and expiring after the year 9999 (where MySQL's
    /// `DATETIME` stops), up to `chrono`'s last millisecond, are stored,
    /// listed, walked, swapped and read back exactly, and no purge removes
    /// them.
    times_after_the_year_9999_round_trip(store, ns) {
        let user = ns.user("far");
        let year_10000 = Utc
            .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
            .single()
            .ok_or_else(|| Failure::new("chrono holds the year 10000"))?
            + chrono::Duration::milliseconds(123);
        let year_99999 = Utc
            .with_ymd_and_hms(99_999, 12, 31, 23, 59, 59)
            .single()
            .ok_or_else(|| Failure::new("chrono holds the year 99999"))?;
        let times = [year_10000, year_99999, DateTime::<Utc>::MAX_UTC];
        let mut providers = Vec::new();
        for (i, at) in times.into_iter().enumerate() {
            let provider = format!("far{i}");
            let k = key(&user, &provider, vec![1, 2, 3])?
                .with_created_at(at)
                .with_expires_at(Some(at));
            store.store(&k).await?;
            ensure_eq!(store.retrieve(&user, &provider).await?, Some(k), "expiring at {at}");
            providers.push(provider);
        }
        ensure_eq!(store.list_providers(&user).await?, providers, "providers");
        ensure_eq!(scan_namespace(store, &ns, 10).await?.len(), times.len(), "keys walked");

        let current = get(store, &user, "far0").await?;
        let swapped = current
            .clone()
            .with_encrypted_value(vec![9])
            .with_expires_at(Some(DateTime::<Utc>::MAX_UTC));
        ensure!(store.compare_and_swap(&current, &swapped).await?, "the swap failed");
        ensure_eq!(get(store, &user, "far0").await?, swapped, "after the swap");
        store.purge_expired().await?;
        ensure_eq!(store.list_providers(&user).await?, providers, "providers after a purge");
        Ok(())
    }
}

case! {
    /// A scan cursor that is malformed, or that names a slot no key can
    /// have (an id with NUL or another control character, an empty id),
    /// is refused as invalid input naming the cursor, before anything
    /// reaches the store's server.
    bad_scan_cursors_are_invalid_input(store, _ns) {
        let bad = [
            Cursor::after_slot("a\0b", "p"),
            Cursor::after_slot("u", "p\0"),
            Cursor::after_slot("u\n", "p"),
            Cursor::after_slot("", "p"),
            Cursor::after_slot("u", ""),
            Cursor::new("no length"),
            Cursor::new("nonsense"),
            Cursor::new("99:short"),
        ];
        for cursor in &bad {
            expect_invalid(&format!("scan from {cursor:?}"), store.scan(Some(cursor), 10).await, Field::Cursor)?;
        }
        Ok(())
    }
}

case! {
    /// Swapping a key for an identical one succeeds and leaves it as it
    /// was (MySQL counts matched rows, not changed ones, for this).
    swapping_for_an_identical_key_succeeds(store, ns) {
        let user = ns.user("u");
        let k = key(&user, "p", b"same".to_vec())?;
        store.store(&k).await?;
        ensure!(store.compare_and_swap(&k, &k).await?, "the swap for an identical key failed");
        ensure!(store.compare_and_swap(&k, &k).await?, "the second swap for an identical key failed");
        ensure_eq!(get(store, &user, "p").await?, k, "after the swap");
        Ok(())
    }
}

case! {
    /// A kept check reads back for its slot alone, and a second check
    /// replaces the first.
    checks_are_kept_per_slot(store, ns) {
        let user = ns.user("u");
        let other = ns.user("v");
        store.store(&key(&user, "a", vec![1])?).await?;
        store.store(&key(&user, "b", vec![2])?).await?;
        store.store(&key(&other, "a", vec![3])?).await?;
        ensure!(store.store_check(&user, "a", "first").await?, "store_check on a key returned false");
        ensure!(store.store_check(&user, "a", "second").await?, "second store_check returned false");
        ensure!(store.store_check(&user, "b", "{\"b\":\"é\"}").await?, "store_check of b returned false");
        ensure_eq!(
            store.checks(&user).await?,
            vec![("a".to_owned(), "second".to_owned()), ("b".to_owned(), "{\"b\":\"é\"}".to_owned())],
            "checks of the user"
        );
        ensure_eq!(store.checks(&other).await?, Vec::<(String, String)>::new(), "checks of another user");
        Ok(())
    }
}

case! {
    /// Without a key in the slot nothing is kept, and a check goes with
    /// its key when the key is deleted, cleared or purged.
    checks_go_with_their_key(store, ns) {
        let user = ns.user("u");
        ensure!(!store.store_check(&user, "a", "x").await?, "store_check without a key returned true");
        ensure!(store.checks(&user).await?.is_empty(), "a check was kept without a key");
        store.store(&key(&user, "a", vec![1])?).await?;
        store.store(&key(&user, "b", vec![2])?).await?;
        store.store(&key(&user, "c", vec![3])?.with_expires_at(Some(Utc::now() + chrono::Duration::milliseconds(300)))).await?;
        for p in ["a", "b", "c"] {
            ensure!(store.store_check(&user, p, p).await?, "store_check of {p} returned false");
        }
        store.delete(&user, "a").await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        store.purge_expired().await?;
        ensure_eq!(store.checks(&user).await?, vec![("b".to_owned(), "b".to_owned())], "checks after delete and purge");
        store.store(&key(&user, "a", vec![1])?).await?;
        ensure!(
            !store.checks(&user).await?.iter().any(|(p, _)| p == "a"),
            "a deleted key's check came back with a new key"
        );
        store.clear_all(&user).await?;
        ensure!(store.checks(&user).await?.is_empty(), "checks left after clear_all");
        Ok(())
    }
}

case! {
    /// The longest check text the manager writes round-trips byte for
    /// byte, under hostile ids.
    checks_round_trip_under_hostile_ids(store, ns) {
        let text: String = "\"\\é{}".repeat(byok_core::check_record::MAX_ENCODED_LEN / 8);
        for (i, id) in HOSTILE_IDS.iter().enumerate() {
            let user = ns.user(id);
            store.store(&key(&user, id, vec![u8::try_from(i % 250).unwrap_or(0)])?).await?;
            ensure!(store.store_check(&user, id, &text).await?, "store_check under {id:?} returned false");
            ensure_eq!(store.checks(&user).await?, vec![((*id).to_owned(), text.clone())], "checks under {id:?}");
        }
        Ok(())
    }
}
