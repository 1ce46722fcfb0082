//! The key layout: how (user, provider) slots map to Redis keys.
//!
//! See the [crate docs](crate#key-layout) for the picture. Everything here is
//! part of the stored format: changing it makes existing keys unreachable.

use std::fmt::Write as _;

use byok_core::error::{ConfigError, Field, InvalidInput, Problem};
use byok_core::{Cursor, validate};

/// How many buckets users are spread over. Part of the stored format.
pub(crate) const BUCKETS: u16 = 1024;

/// The longest key prefix accepted, in bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// Encodes a user id or provider for use inside a Redis key name.
///
/// ASCII letters, digits and `-` `.` `_` `~` `@` `+` stay as they are; every
/// other byte becomes `%XX` (upper-case hex). The encoding is injective, and
/// its output never holds `{`, `}`, `:`, `%`-ambiguities, glob characters,
/// spaces or control characters, so encoded ids can be joined with `:` and
/// placed next to a hash tag without two ids ever meeting in one key name.
///
pub fn encode_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    push_encoded(&mut out, id);
    out
}

/// Appends [`encode_id`]`(id)` to `out`.
fn push_encoded(out: &mut String, id: &str) {
    let safe =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@' | b'+');
    if id.bytes().all(safe) {
        out.push_str(id);
        return;
    }
    for &b in id.as_bytes() {
        if safe(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The bucket of a user: FNV-1a (32 bit) of the user id's bytes, modulo
/// `BUCKETS` (1024). Part of the stored format.
pub fn bucket_of(user_id: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in user_id.as_bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // BUCKETS is far below u16::MAX, so the remainder fits.
    (hash % u32::from(BUCKETS)) as u16
}

/// Checks a key prefix: 1 to [`MAX_PREFIX_LEN`] bytes, no braces (they
/// would move the hash tag), no whitespace or control characters.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() {
        return Err(ConfigError::new("the Redis key prefix must not be empty"));
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(ConfigError::new(format!(
            "the Redis key prefix is {} bytes long; at most {MAX_PREFIX_LEN} are allowed",
            prefix.len()
        )));
    }
    if prefix
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::new(
            "the Redis key prefix must not contain braces, whitespace or control characters",
        ));
    }
    Ok(())
}

/// Key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    prefix: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Result<Self, ConfigError> {
        check_prefix(prefix)?;
        Ok(Layout {
            prefix: prefix.to_owned(),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>{<bucket>}`: the start of every key of a bucket.
    fn tag(&self, bucket: u16) -> String {
        format!("{}{{{bucket:03x}}}", self.prefix)
    }

    /// The hash of one user: a field per provider, each holding the
    /// provider's record.
    pub(crate) fn user_hash(&self, user_id: &str) -> String {
        let bucket = bucket_of(user_id);
        let mut key = String::with_capacity(self.prefix.len() + 8 + user_id.len());
        // Writing to a String cannot fail.
        let _ = write!(key, "{}{{{bucket:03x}}}:u:", self.prefix);
        push_encoded(&mut key, user_id);
        key
    }

    /// The hash of the checks kept for one user's keys: a field per
    /// provider, each holding the text of the key's last check. Beside the
    /// user's hash, under the same tag, so that the user's hash keeps the
    /// fields an older version reads and writes.
    pub(crate) fn check_hash(&self, user_id: &str) -> String {
        format!(
            "{}:chk:{}",
            self.tag(bucket_of(user_id)),
            encode_id(user_id)
        )
    }

    /// Every key that a write or a delete of one of the user's slots
    /// touches, with the user hashed and encoded once.
    pub(crate) fn user_keys(&self, user_id: &str) -> UserKeys {
        let tag = self.tag(bucket_of(user_id));
        let user = encode_id(user_id);
        UserKeys {
            user_hash: format!("{tag}:u:{user}"),
            bucket_users: format!("{tag}:users"),
            bucket_expiries: format!("{tag}:exp"),
            check_hash: format!("{tag}:chk:{user}"),
        }
    }

    /// The sorted set (all scores 0) of the users of a bucket that have keys.
    pub(crate) fn bucket_users(&self, bucket: u16) -> String {
        format!("{}:users", self.tag(bucket))
    }

    /// The sorted set of the expiring slots of a bucket, scored by expiry
    /// (Unix milliseconds); members from [`expiry_member`].
    pub(crate) fn bucket_expiries(&self, bucket: u16) -> String {
        format!("{}:exp", self.tag(bucket))
    }

    /// The string naming the format of the data under this prefix
    /// (`<prefix>format`; it holds no hash tag, so no data key can be named
    /// the same).
    pub(crate) fn format_key(&self) -> String {
        format!("{}format", self.prefix)
    }

    /// A copy kept for a `TieredStorage` (see [`crate::fast_tier`]): the
    /// slot's copy, the slot's lease, the user's generation and the user's
    /// hold, all under the user's tag.
    pub(crate) fn fast_tier_keys(&self, user_id: &str, provider: &str) -> [String; 4] {
        let tag = self.tag(bucket_of(user_id));
        let (user, provider) = (encode_id(user_id), encode_id(provider));
        [
            format!("{tag}:c:{user}:{provider}"),
            format!("{tag}:l:{user}:{provider}"),
            format!("{tag}:g:{user}"),
            format!("{tag}:h:{user}"),
        ]
    }

    /// The user's generation and hold, as [`Self::fast_tier_keys`].
    pub(crate) fn fast_tier_user_keys(&self, user_id: &str) -> [String; 2] {
        let tag = self.tag(bucket_of(user_id));
        let user = encode_id(user_id);
        [format!("{tag}:g:{user}"), format!("{tag}:h:{user}")]
    }

    /// Format 1: the hash that held one key.
    pub(crate) fn v1_key(&self, user_id: &str, provider: &str) -> String {
        format!(
            "{}:k:{}:{}",
            self.tag(bucket_of(user_id)),
            encode_id(user_id),
            encode_id(provider)
        )
    }

    /// Format 1: the sorted set (all scores 0) of one user's providers.
    pub(crate) fn v1_user_index(&self, user_id: &str) -> String {
        format!("{}:i:{}", self.tag(bucket_of(user_id)), encode_id(user_id))
    }
}

/// The keys of one user, as [`Layout::user_hash`], [`Layout::bucket_users`],
/// [`Layout::bucket_expiries`] and [`Layout::check_hash`] name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserKeys {
    pub(crate) user_hash: String,
    pub(crate) bucket_users: String,
    pub(crate) bucket_expiries: String,
    pub(crate) check_hash: String,
}

/// The start of the expiry member of every slot of a user: `<len>:<user>`.
pub(crate) fn expiry_member_prefix(user_id: &str) -> String {
    format!("{}:{user_id}", user_id.len())
}

/// The member of a slot in its bucket's expiry set: `<len>:<user><provider>`
/// (the user's length in bytes, so any ids split back unambiguously).
pub(crate) fn expiry_member(user_id: &str, provider: &str) -> String {
    format!("{}:{user_id}{provider}", user_id.len())
}

/// The slot of an expiry member, if it is well formed: valid ids, written
/// exactly as [`expiry_member`] writes them (no `05:` for `5:`).
pub(crate) fn parse_expiry_member(member: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(member).ok()?;
    let cursor = Cursor::new(text);
    let (user, provider) = cursor.slot().ok()?;
    validate::stored_slot(user, provider).ok()?;
    if expiry_member(user, provider) != text {
        return None;
    }
    Some((user.to_owned(), provider.to_owned()))
}

/// A position in the walk: a bucket, and optionally the last slot visited
/// in it (`provider` empty: before the user's first provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) bucket: u16,
    pub(crate) after: Option<(String, String)>,
}

const CURSOR_VERSION: &str = "r1";

impl Position {
    pub(crate) const START: Position = Position {
        bucket: 0,
        after: None,
    };

    /// `r1:<bucket>` or `r1:<bucket>:<len>:<user><provider>`.
    pub(crate) fn to_cursor(&self) -> Cursor {
        match &self.after {
            None => Cursor::new(format!("{CURSOR_VERSION}:{}", self.bucket)),
            Some((user, provider)) => Cursor::new(format!(
                "{CURSOR_VERSION}:{}:{}",
                self.bucket,
                expiry_member(user, provider)
            )),
        }
    }

    pub(crate) fn from_cursor(cursor: &Cursor) -> Result<Self, InvalidInput> {
        let bad = || {
            InvalidInput::new(
                Field::Cursor,
                Problem::Other("is not a cursor of the Redis backend"),
            )
        };
        let rest = cursor
            .as_str()
            .strip_prefix(CURSOR_VERSION)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(bad)?;
        let (bucket, slot) = match rest.split_once(':') {
            Some((b, s)) => (b, Some(s)),
            None => (rest, None),
        };
        if bucket.is_empty() || !bucket.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let bucket: u16 = bucket.parse().map_err(|_| bad())?;
        if bucket >= BUCKETS {
            return Err(bad());
        }
        let after = match slot {
            None => None,
            Some(s) => {
                let c = Cursor::new(s);
                let (user, provider) = c.slot().map_err(|_| bad())?;
                validate::stored_user_id(user).map_err(|_| bad())?;
                if !provider.is_empty() {
                    validate::stored_provider(provider).map_err(|_| bad())?;
                }
                Some((user.to_owned(), provider.to_owned()))
            }
        };
        Ok(Position { bucket, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_injective_and_tag_safe() {
        // The conformance suite's hostile ids, and ids that look encoded.
        let extra = ["%25", "%3A", "a b", "a\u{200b}", "A", "a+b", "a@b"];
        let ids = byok_testkit::cases::HOSTILE_IDS.iter().chain(&extra);
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let e = encode_id(id);
            assert!(seen.insert(e.clone()), "{id:?} collides");
            assert!(
                !e.contains(['{', '}', ':', '*', '?', '[', ']', ' ']),
                "{id:?} -> {e}"
            );
        }
        assert_eq!(encode_id("日"), "%E6%97%A5");
        assert_eq!(encode_id("alice@example.com"), "alice@example.com");
        assert_eq!(encode_id("a:b"), "a%3Ab");
        assert_eq!(encode_id("{x}*"), "%7Bx%7D%2A");
    }

    #[test]
    fn distinct_users_get_distinct_keys() {
        let layout = Layout::new("byok_").unwrap();
        let users = ["a:b", "a", "a}:{b", "a{}", "x", "a%3Ab", "日本", "u:x"];
        let mut seen = std::collections::HashSet::new();
        for u in users {
            assert!(seen.insert(layout.user_hash(u)), "{u:?}");
            assert!(seen.insert(layout.check_hash(u)), "{u:?}");
            assert!(seen.insert(layout.v1_user_index(u)), "{u:?}");
            for k in layout.fast_tier_user_keys(u) {
                assert!(seen.insert(k), "{u:?}");
            }
            for p in ["c", "b:c", "i", "{}b"] {
                assert!(seen.insert(layout.v1_key(u, p)), "{u:?} {p:?}");
            }
        }
        assert!(seen.insert(layout.format_key()));
        assert!(seen.insert(layout.bucket_users(0)));
        assert!(seen.insert(layout.bucket_expiries(0)));
    }

    #[test]
    fn keys_of_a_user_share_one_tag() {
        let layout = Layout::new("p:").unwrap();
        let user = "a}{b";
        let tag = format!("p:{{{:03x}}}", bucket_of(user));
        for k in [
            layout.user_hash(user),
            layout.check_hash(user),
            layout.bucket_users(bucket_of(user)),
            layout.bucket_expiries(bucket_of(user)),
            layout.v1_key(user, "{x}"),
            layout.v1_user_index(user),
        ] {
            assert!(k.starts_with(&tag), "{k}");
            assert_eq!(k.matches('{').count(), 1, "{k}");
            assert_eq!(k.matches('}').count(), 1, "{k}");
        }
    }

    #[test]
    fn user_keys_name_the_same_keys() {
        let layout = Layout::new("p:").unwrap();
        for (user, provider) in [("alice", "openai"), ("a:b}{", "{c}"), ("日本", "*")] {
            let bucket = bucket_of(user);
            assert_eq!(
                layout.user_keys(user),
                UserKeys {
                    user_hash: layout.user_hash(user),
                    bucket_users: layout.bucket_users(bucket),
                    bucket_expiries: layout.bucket_expiries(bucket),
                    check_hash: layout.check_hash(user),
                }
            );
            assert!(expiry_member(user, provider).starts_with(&expiry_member_prefix(user)));
        }
    }

    #[test]
    fn bucket_hash_is_stable() {
        // FNV-1a 32 of "" and "a", reduced: fixed forever by the format.
        assert_eq!(bucket_of(""), (0x811c_9dc5u32 % 1024) as u16);
        assert_eq!(bucket_of("a"), (0xe40c_292cu32 % 1024) as u16);
        assert!((0..10_000).all(|i| bucket_of(&format!("user-{i}")) < BUCKETS));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("byok_").is_ok());
        assert!(check_prefix("app:keys:").is_ok());
        for bad in ["", "a{", "}", "a b", "a\nb"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix(&"x".repeat(65)).is_err());
    }

    #[test]
    fn positions_round_trip_through_cursors() {
        for pos in [
            Position::START,
            Position {
                bucket: 1023,
                after: Some(("a:b".into(), "c".into())),
            },
            Position {
                bucket: 7,
                after: Some(("日本".into(), String::new())),
            },
        ] {
            assert_eq!(Position::from_cursor(&pos.to_cursor()).unwrap(), pos);
        }
        for bad in [
            "", "r1", "r1:", "r1:1024", "r2:1", "r1:-1", "r1:1:x", "r1:1:0:",
        ] {
            assert!(Position::from_cursor(&Cursor::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expiry_members_split_back() {
        for (u, p) in [("a:b", "c"), ("a", "b:c"), ("1:x", "y")] {
            let m = expiry_member(u, p);
            assert_eq!(
                parse_expiry_member(m.as_bytes()),
                Some((u.to_owned(), p.to_owned()))
            );
        }
        assert_eq!(parse_expiry_member(b"garbage"), None);
        assert_eq!(parse_expiry_member(b"1:a"), None);
        assert_eq!(parse_expiry_member(b"01:ab"), None);
        assert_eq!(parse_expiry_member(b"+1:ab"), None);
    }
}
