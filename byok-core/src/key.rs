//! The stored form of an API key: [`ApiKey`].

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Field, InvalidInput, Problem};
use crate::validate;

/// The current time, truncated to the millisecond precision that every
/// backend keeps.
///
/// Not part of the documented API: the backends of this workspace and the
/// conformance suite share it so that they truncate alike. A backend of
/// its own needs only `Utc::now()` and [`ApiKey::is_expired_at`].
#[doc(hidden)]
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Truncates a time to millisecond precision (see [`now`]).
#[doc(hidden)]
pub fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

/// An encrypted API key with its metadata: what a [`KeyStorage`](crate::KeyStorage)
/// stores, one per (user, provider) slot.
///
/// `encrypted_value` is the ciphertext, never the plaintext key. The optional
/// `hint` is a masked form such as `sk-a...wxyz`, written when the key is set,
/// so that a list of keys can be shown without decrypting anything.
///
/// # User ids
///
/// `user_id` is required. For keys that belong to a browser session rather
/// than an account, pass the session id as the user id; the key then lives
/// exactly as long as you keep that id (and its expiry allows).
///
/// # Invariants
///
/// The fields are private so that every `ApiKey` holds a valid user id and
/// provider (see [`validate`]) and timestamps in UTC truncated to
/// milliseconds, the precision every backend keeps.
///
/// # JSON
///
/// The serde form is stable and uses the Python library's field names:
///
/// ```
/// # use byok_core::ApiKey;
/// let key = ApiKey::new("alice", "openai", vec![0xde, 0xad])?;
/// let json = serde_json::to_value(&key).unwrap();
/// assert_eq!(json["encrypted_value"], "dead");
/// assert_eq!(json["expires_at"], serde_json::Value::Null);
/// let back: ApiKey = serde_json::from_value(json).unwrap();
/// assert_eq!(back, key);
/// # Ok::<(), byok_core::error::InvalidInput>(())
/// ```
///
/// # Cost
///
/// The ids, the ciphertext and the hint are shared, immutable buffers:
/// cloning an `ApiKey` copies no bytes and allocates nothing, which is what
/// an in-memory store does on every read.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    user_id: Arc<str>,
    provider: Arc<str>,
    encrypted_value: Arc<[u8]>,
    hint: Option<Arc<str>>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// A key created now, without expiry or hint.
    ///
    /// Fails when the user id or provider breaks the rules of [`validate`].
    pub fn new(
        user_id: impl Into<String>,
        provider: impl Into<String>,
        encrypted_value: impl Into<Vec<u8>>,
    ) -> Result<Self, InvalidInput> {
        let user_id = user_id.into();
        let provider = provider.into();
        validate::stored_slot(&user_id, &provider)?;
        Ok(ApiKey {
            user_id: user_id.into(),
            provider: provider.into(),
            encrypted_value: encrypted_value.into().into(),
            hint: None,
            created_at: now(),
            expires_at: None,
        })
    }

    /// A key from parts the caller has already validated: the manager's
    /// write path, which checks the slot before encrypting and derives the
    /// hint from a validated key, so nothing is checked twice.
    pub(crate) fn from_checked(
        user_id: &str,
        provider: &str,
        encrypted_value: Vec<u8>,
        hint: String,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Self {
        ApiKey {
            user_id: user_id.into(),
            provider: provider.into(),
            encrypted_value: encrypted_value.into(),
            hint: Some(hint.into()),
            created_at,
            expires_at,
        }
    }

    /// Sets the creation time (truncated to milliseconds).
    pub fn with_created_at(mut self, created_at: DateTime<Utc>) -> Self {
        self.created_at = to_millis(created_at);
        self
    }

    /// Sets or clears the expiry time (truncated to milliseconds).
    pub fn with_expires_at(mut self, expires_at: Option<DateTime<Utc>>) -> Self {
        self.expires_at = expires_at.map(to_millis);
        self
    }

    /// Sets or clears the display hint. Fails when it is longer than
    /// [`validate::MAX_HINT_LEN`] bytes, empty, or holds control characters.
    pub fn with_hint(mut self, hint: Option<String>) -> Result<Self, InvalidInput> {
        if let Some(h) = &hint {
            validate::hint(h)?;
        }
        self.hint = hint.map(Arc::from);
        Ok(self)
    }

    /// Replaces the ciphertext, keeping the slot and metadata.
    pub fn with_encrypted_value(mut self, encrypted_value: impl Into<Vec<u8>>) -> Self {
        self.encrypted_value = encrypted_value.into().into();
        self
    }

    /// The user the key belongs to.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The user id as a shared buffer: cloning it copies nothing. A store
    /// that indexes keys by user can keep this one copy of the id.
    pub fn user_id_shared(&self) -> Arc<str> {
        Arc::clone(&self.user_id)
    }

    /// The provider, such as `openai`.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The ciphertext.
    pub fn encrypted_value(&self) -> &[u8] {
        &self.encrypted_value
    }

    /// The encrypted value, shared with this key rather than copied.
    pub fn encrypted_value_shared(&self) -> Arc<[u8]> {
        Arc::clone(&self.encrypted_value)
    }

    /// The masked display hint, if one was written.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// When the key was set.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// When the key expires; `None` means never.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// Whether the key has expired by now.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(Utc::now())
    }

    /// Whether the key has expired at `now`. A key is expired from its
    /// `expires_at` instant on.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// The expiry as milliseconds since the Unix epoch.
    pub fn expires_at_millis(&self) -> Option<i64> {
        self.expires_at.map(|t| t.timestamp_millis())
    }

    /// Takes the ciphertext out.
    pub fn into_encrypted_value(self) -> Vec<u8> {
        self.encrypted_value.to_vec()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("user_id", &self.user_id)
            .field("provider", &self.provider)
            .field(
                "encrypted_value",
                &format_args!("<{} bytes>", self.encrypted_value.len()),
            )
            .field("hint", &self.hint)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct ApiKeyJson {
    provider: String,
    #[serde(serialize_with = "ser_hex", deserialize_with = "de_hex")]
    encrypted_value: Vec<u8>,
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    created_at: DateTime<Utc>,
    #[serde(
        serialize_with = "ser_opt_time",
        deserialize_with = "de_opt_time",
        default
    )]
    expires_at: Option<DateTime<Utc>>,
    user_id: Option<String>,
    #[serde(default)]
    hint: Option<String>,
}

impl Serialize for ApiKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ApiKeyJson {
            provider: self.provider.to_string(),
            encrypted_value: self.encrypted_value.to_vec(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            user_id: Some(self.user_id.to_string()),
            hint: self.hint.as_deref().map(str::to_owned),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let j = ApiKeyJson::deserialize(d)?;
        let user_id = j.user_id.ok_or_else(|| {
            D::Error::custom(InvalidInput::new(
                Field::UserId,
                Problem::Other("is required (null or missing in the JSON document)"),
            ))
        })?;
        ApiKey::new(user_id, j.provider, j.encrypted_value)
            .and_then(|k| k.with_hint(j.hint))
            .map(|k| {
                k.with_created_at(j.created_at)
                    .with_expires_at(j.expires_at)
            })
            .map_err(D::Error::custom)
    }
}

fn ser_hex<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

fn de_hex<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    hex::decode(text).map_err(|_| serde::de::Error::custom("encrypted_value is not valid hex"))
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn ser_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

/// Parses RFC 3339, and also the Python library's naive ISO 8601 form
/// (`datetime.isoformat()` without an offset), which is read as UTC.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    parse_time(&text).ok_or_else(|| serde::de::Error::custom("timestamp is not RFC 3339"))
}

fn de_opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        // The Python row type wrote "" for "no expiry".
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => parse_time(&text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("timestamp is not RFC 3339")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A key whose id was legal when it was written still reads back: ids
    /// with format characters are refused on the way in, not on the way out.
    #[test]
    fn a_stored_id_with_a_format_character_still_reads_back() {
        let user_id = "\u{1f468}\u{200d}\u{1f469}";
        let provider = "open\u{ad}ai";
        let key = ApiKey::new(user_id, provider, vec![1]).unwrap();
        assert_eq!(key.user_id(), user_id);
        assert_eq!(key.provider(), provider);
        assert!(ApiKey::new("tab\there", provider, vec![1]).is_err());
    }

    fn sample() -> ApiKey {
        ApiKey::new("alice", "openai", (0u8..=255).collect::<Vec<_>>())
            .unwrap()
            .with_hint(Some("sk-a...wxyz".into()))
            .unwrap()
            .with_created_at(Utc.timestamp_millis_opt(1_700_000_000_123).unwrap())
            .with_expires_at(Some(Utc.timestamp_millis_opt(1_800_000_000_456).unwrap()))
    }

    #[test]
    fn json_form_is_stable() {
        let json = serde_json::to_string(&sample()).unwrap();
        let expected = format!(
            "{{\"provider\":\"openai\",\"encrypted_value\":\"{}\",\
             \"created_at\":\"2023-11-14T22:13:20.123Z\",\
             \"expires_at\":\"2027-01-15T08:00:00.456Z\",\
             \"user_id\":\"alice\",\"hint\":\"sk-a...wxyz\"}}",
            hex::encode((0u8..=255).collect::<Vec<_>>())
        );
        assert_eq!(json, expected);
        let back: ApiKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn reads_python_documents() {
        let doc = r#"{"provider":"openai","encrypted_value":"00ff",
            "created_at":"2024-01-02T03:04:05.678901","expires_at":null,"user_id":"bob"}"#;
        let k: ApiKey = serde_json::from_str(doc).unwrap();
        assert_eq!(k.encrypted_value(), &[0, 255]);
        assert_eq!(k.created_at().timestamp_subsec_millis(), 678);
        assert_eq!(k.created_at().timestamp_subsec_micros(), 678_000);
        assert_eq!(k.expires_at(), None);
        assert_eq!(k.hint(), None);

        let no_user = r#"{"provider":"openai","encrypted_value":"00",
            "created_at":"2024-01-02T03:04:05","expires_at":null,"user_id":null}"#;
        let e = serde_json::from_str::<ApiKey>(no_user).unwrap_err();
        assert!(e.to_string().contains("user id"), "{e}");
    }

    #[test]
    fn expiry_is_inclusive_of_the_instant() {
        let t = Utc.timestamp_millis_opt(1_000).unwrap();
        let k = sample().with_expires_at(Some(t));
        assert!(k.is_expired_at(t));
        assert!(!k.is_expired_at(t - chrono::Duration::milliseconds(1)));
        assert!(!k.with_expires_at(None).is_expired_at(t));
    }

    #[test]
    fn clones_share_their_buffers() {
        let k = sample();
        let c = k.clone();
        assert!(Arc::ptr_eq(&k.user_id_shared(), &c.user_id_shared()));
        assert_eq!(k.encrypted_value().as_ptr(), c.encrypted_value().as_ptr());
        assert_eq!(k.hint().map(str::as_ptr), c.hint().map(str::as_ptr));
    }

    #[test]
    fn debug_hides_ciphertext() {
        let k = ApiKey::new("u", "p", b"SECRETCIPHER".to_vec()).unwrap();
        let d = format!("{k:?}");
        assert!(d.contains("<12 bytes>"));
        assert!(!d.contains("83, 69"));
    }
}
