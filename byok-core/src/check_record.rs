//! [`CheckRecord`]: the last check of a key, kept with it.
//!
//! When an application asks a provider whether a saved key works (the
//! `byok-check` crate does), the answer is worth keeping: the settings page,
//! `byok list` and [`Byok::key_summary`](crate::Byok::key_summary) show it
//! without asking again. [`Byok::record_check`](crate::Byok::record_check)
//! keeps it, [`Byok::last_check`](crate::Byok::last_check) reads it.
//!
//! # Bound to the key it describes
//!
//! A stored check names the key it was made for by that key's creation
//! time and hint. A check read back for a slot whose key has since been
//! replaced — by this version of byok, by an older one that knows nothing
//! of checks, or by a copy — does not match and is not shown: **editing a
//! key clears its check**, on every backend, without a transaction that
//! spans both. A master-key rotation keeps the creation time and hint, so
//! the check of a rotated key stays.
//!
//! Stores keep the record as a short opaque text ([`CheckRecord::encode`],
//! at most [`MAX_ENCODED_LEN`] bytes); nothing in it is secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Field, InvalidInput, Problem};
use crate::key::{ApiKey, to_millis};

/// The longest [`CheckRecord::summary`], in bytes.
pub const MAX_SUMMARY_LEN: usize = 300;
/// The longest [`CheckRecord::outcome`], in bytes.
pub const MAX_OUTCOME_LEN: usize = 32;
/// The longest encoded record a store is asked to keep, in bytes.
pub const MAX_ENCODED_LEN: usize = 1024;

/// The result of the last check of a key: what the provider said, in a
/// word and in a sentence, and when.
///
/// ```
/// use byok_core::CheckRecord;
/// let record = CheckRecord::new("invalid", "The provider does not accept this key.")?;
/// assert_eq!(record.outcome(), "invalid");
/// assert!(!record.is_valid());
/// # Ok::<(), byok_core::error::InvalidInput>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    outcome: String,
    summary: String,
    checked_at: DateTime<Utc>,
}

impl CheckRecord {
    /// A record of a check made now.
    ///
    /// `outcome` is one word of lowercase ASCII letters and underscores
    /// (`valid`, `invalid`, `out_of_credit`, … — `byok-check`'s
    /// `KeyCheck::outcome`), at most [`MAX_OUTCOME_LEN`] bytes; `summary`
    /// is the sentence shown to the user, at most [`MAX_SUMMARY_LEN`]
    /// bytes, without control characters. Neither may hold key material:
    /// the caller builds them from a classified answer, never from a key.
    pub fn new(outcome: &str, summary: &str) -> Result<Self, InvalidInput> {
        Self::at(outcome, summary, Utc::now())
    }

    /// A record of a check made at `checked_at` (kept to the millisecond).
    pub fn at(
        outcome: &str,
        summary: &str,
        checked_at: DateTime<Utc>,
    ) -> Result<Self, InvalidInput> {
        let bad = |p| InvalidInput::new(Field::Json, p);
        if outcome.is_empty() {
            return Err(bad(Problem::Other("a check's outcome must not be empty")));
        }
        if outcome.len() > MAX_OUTCOME_LEN {
            return Err(bad(Problem::TooLong {
                len: outcome.len(),
                max: MAX_OUTCOME_LEN,
            }));
        }
        if !outcome.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(bad(Problem::Other(
                "a check's outcome is lowercase ASCII letters and underscores",
            )));
        }
        if summary.len() > MAX_SUMMARY_LEN {
            return Err(bad(Problem::TooLong {
                len: summary.len(),
                max: MAX_SUMMARY_LEN,
            }));
        }
        if let Some(at) = summary.find(char::is_control) {
            return Err(bad(Problem::ControlCharacter { at }));
        }
        Ok(CheckRecord {
            outcome: outcome.to_owned(),
            summary: summary.to_owned(),
            checked_at: to_millis(checked_at),
        })
    }

    /// The outcome in one word (`valid`, `invalid`, `out_of_credit`, …).
    pub fn outcome(&self) -> &str {
        &self.outcome
    }

    /// Whether the provider accepted the key.
    pub fn is_valid(&self) -> bool {
        self.outcome == "valid"
    }

    /// What the check found, in plain words for the user.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// When the check was made.
    pub fn checked_at(&self) -> DateTime<Utc> {
        self.checked_at
    }

    /// The text a store keeps for this record of a check of `key`: the
    /// record and what names the key (its creation time and hint), at most
    /// [`MAX_ENCODED_LEN`] bytes.
    pub fn encode(&self, key: &ApiKey) -> String {
        let stored = Stored {
            v: 1,
            outcome: &self.outcome,
            summary: &self.summary,
            checked_at: self.checked_at.timestamp_millis(),
            key_created_at: key.created_at().timestamp_millis(),
            key_hint: key.hint(),
        };
        // Serializing this struct of strings and integers cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// The record in `text` if it was made for `key`: `None` when it names
    /// another key (the slot's key was replaced since), or when the text is
    /// not a record this version reads (it is then ignored, never an
    /// error: a check is a hint, not data).
    pub fn decode_for(text: &str, key: &ApiKey) -> Option<CheckRecord> {
        if text.len() > MAX_ENCODED_LEN {
            return None;
        }
        let stored: StoredOwned = serde_json::from_str(text).ok()?;
        if stored.v != 1
            || stored.key_created_at != key.created_at().timestamp_millis()
            || stored.key_hint.as_deref() != key.hint()
        {
            return None;
        }
        let at = DateTime::<Utc>::from_timestamp_millis(stored.checked_at)?;
        CheckRecord::at(&stored.outcome, &stored.summary, at).ok()
    }
}

#[derive(Serialize)]
struct Stored<'a> {
    v: u8,
    outcome: &'a str,
    summary: &'a str,
    checked_at: i64,
    key_created_at: i64,
    key_hint: Option<&'a str>,
}

#[derive(Deserialize)]
struct StoredOwned {
    v: u8,
    outcome: String,
    summary: String,
    checked_at: i64,
    key_created_at: i64,
    key_hint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hint: &str) -> ApiKey {
        ApiKey::new("alice", "openai", vec![1, 2, 3])
            .unwrap()
            .with_hint(Some(hint.to_owned()))
            .unwrap()
    }

    #[test]
    fn a_record_reads_back_for_its_key_only() {
        let k = key("sk-a...wxyz");
        let r = CheckRecord::new("out_of_credit", "No credit left.").unwrap();
        let text = r.encode(&k);
        assert!(text.len() <= MAX_ENCODED_LEN);
        assert_eq!(CheckRecord::decode_for(&text, &k), Some(r.clone()));
        // Rotation keeps the creation time and hint: the check stays.
        let rotated = k.clone().with_encrypted_value(vec![9, 9]);
        assert_eq!(CheckRecord::decode_for(&text, &rotated), Some(r));
        // A new key (another creation time or hint) does not match.
        let later = k
            .clone()
            .with_created_at(k.created_at() + chrono::Duration::milliseconds(1));
        assert_eq!(CheckRecord::decode_for(&text, &later), None);
        assert_eq!(CheckRecord::decode_for(&text, &key("sk-b...wxyz")), None);
        for junk in ["", "{}", "not json", "{\"v\":2}"] {
            assert_eq!(CheckRecord::decode_for(junk, &k), None, "{junk}");
        }
    }

    #[test]
    fn bad_records_are_refused_with_what_was_wrong() {
        assert!(CheckRecord::new("", "x").is_err());
        assert!(CheckRecord::new("Valid", "x").is_err());
        assert!(CheckRecord::new(&"a".repeat(33), "x").is_err());
        assert!(CheckRecord::new("valid", &"x".repeat(301)).is_err());
        let e = CheckRecord::new("valid", "a\nb").unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        let longest = CheckRecord::new(&"a".repeat(32), &"\u{7ff}".repeat(150)).unwrap();
        let k = key(&"h".repeat(64));
        assert!(longest.encode(&k).len() <= MAX_ENCODED_LEN);
    }
}
