//! The keyring text format: its one parser, edits that keep the rest of the
//! text as it was, and safe rewrites of a keyring file.
//!
//! The format is described on [`Keyring`]. [`KeyringText`] adds, promotes
//! and removes entries in place: comments, blank lines, the order of the
//! entries and their separators (`1:A,2:B` on one line) stay as they were.
//! [`edit_file`] applies such an edit to a file the way a mounted secret
//! needs it: through a symbolic link to its target, atomically, keeping
//! the file's mode and owner.
//!
//! Staged rotation, as the `byok` command does it:
//!
//! ```
//! use byok_core::keyring_text::KeyringText;
//! use byok_core::MasterKey;
//!
//! let mut text = KeyringText::new("# production\n1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")?;
//! // A new key, decrypt-only: key id 1 stays primary.
//! let id = text.add(None, &MasterKey::generate(), false)?;
//! assert_eq!((id, text.keyring()?.primary_id()), (2, 1));
//! // Once every instance has it: make it primary.
//! text.promote(2)?;
//! assert_eq!(text.keyring()?.primary_id(), 2);
//! // Once every stored key is under it: drop the old one.
//! text.remove(1)?;
//! assert_eq!(text.keyring()?.key_ids().collect::<Vec<_>>(), [2]);
//! assert!(text.expose_text().starts_with("# production\n*2:"));
//! # Ok::<(), byok_core::ConfigError>(())
//! ```

use std::fmt;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use crate::crypto::{Keyring, MasterKey};
use crate::error::ConfigError;

/// A master key wrapped (encrypted) by a key management service, as a
/// keyring entry `ID:kms:KMS:KEY:BLOB` holds it.
///
/// `KMS` names the service (`aws`), `KEY` the service's key that wrapped
/// it (for AWS KMS a key id, an alias or an ARN: colons are allowed), and
/// `BLOB` is the service's ciphertext in padded base64. Only that service,
/// asked by someone allowed to use that key, turns it back into the
/// master key; see [`KeyUnwrapper`](crate::keyring_source::KeyUnwrapper).
///
/// `Debug` and every error show the service and its key, never the blob.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    kms: String,
    key: String,
    blob: Vec<u8>,
}

/// The most a wrapped key's blob may hold. An AWS KMS ciphertext of a
/// 32-byte key is under 200 bytes; this bounds a mistyped or hostile entry.
pub const MAX_WRAPPED_BLOB: usize = 6144;

impl WrappedKey {
    /// A key wrapped by the service `kms` (lowercase letters, digits and
    /// `-`) under its key `key` (no blank, `#`, `,` or `;`), as `blob`.
    pub fn new(
        kms: impl Into<String>,
        key: impl Into<String>,
        blob: Vec<u8>,
    ) -> Result<Self, ConfigError> {
        let (kms, key) = (kms.into(), key.into());
        if kms.is_empty()
            || !kms
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::new(
                "a KMS name is lowercase letters, digits and '-', such as aws",
            ));
        }
        if key.is_empty()
            || key
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '#' | ',' | ';'))
        {
            return Err(ConfigError::new(format!(
                "the {kms} KMS key of a wrapped entry must be a non-empty name without blanks,                  '#', ',' or ';'"
            )));
        }
        if blob.is_empty() || blob.len() > MAX_WRAPPED_BLOB {
            return Err(ConfigError::new(format!(
                "a key wrapped by the {kms} KMS key {key} must be 1 to {MAX_WRAPPED_BLOB} bytes;                  got {}",
                blob.len()
            )));
        }
        Ok(WrappedKey { kms, key, blob })
    }

    /// The service that wrapped it, such as `aws`.
    pub fn kms(&self) -> &str {
        &self.kms
    }

    /// The service's key that wrapped it, as the entry names it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The service's ciphertext.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The keyring entry `ID:kms:KMS:KEY:BLOB` of this key under `id`.
    pub fn entry(&self, id: u32) -> String {
        format!("{id}:{}", self.to_value())
    }

    /// The entry's text after `ID:`: `kms:KMS:KEY:BLOB`.
    fn to_value(&self) -> String {
        use base64::Engine as _;
        format!(
            "kms:{}:{}:{}",
            self.kms,
            self.key,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }

    /// Reads `kms:KMS:KEY:BLOB`; `what` names the entry in errors.
    fn parse(value: &str, what: &str) -> Result<Self, ConfigError> {
        use base64::Engine as _;
        let shape = || {
            ConfigError::new(format!(
                "{what} is wrapped but not of the form kms:KMS:KEY:BLOB"
            ))
        };
        let rest = value.strip_prefix("kms:").ok_or_else(shape)?;
        let (kms, rest) = rest.split_once(':').ok_or_else(shape)?;
        // The blob is base64, which has no colon; the key may have some.
        let (key, blob) = rest.rsplit_once(':').ok_or_else(shape)?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(blob.trim())
            .map_err(|_| {
                ConfigError::new(format!(
                    "{what}: the key wrapped by the {kms} KMS key {key} is not valid base64"
                ))
            })?;
        WrappedKey::new(kms, key, blob)
            .map_err(|e| ConfigError::new(format!("{what}: {}", e.message())))
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kms", &self.kms)
            .field("key", &self.key)
            .field("blob_len", &self.blob.len())
            .finish()
    }
}

/// The master key of an entry: in the clear, or wrapped by a KMS.
pub(crate) enum EntryKey {
    Clear(MasterKey),
    Wrapped(WrappedKey),
}

/// One entry of a keyring text, with where it is.
pub(crate) struct ParsedEntry {
    pub(crate) id: u32,
    pub(crate) key: EntryKey,
    pub(crate) marked: bool,
    /// The entry, from its `*` (if any) or its id to the end of its key.
    span: Range<usize>,
    /// Its key, after the `:` that follows the id.
    value: Range<usize>,
    /// Its line, with the line break.
    line: Range<usize>,
}

/// What a keyring text says of one entry; nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// The master key id.
    pub id: u32,
    /// Whether it is the primary key.
    pub primary: bool,
    /// The KMS and its key that wrap it; `None` for a key in the clear.
    pub wrapped: Option<WrappedKey>,
}

/// Parses every entry of a keyring text; an empty text has none.
///
/// This is the only parser of the format: [`Keyring::from_text`] and the
/// edits of [`KeyringText`] both use it. Errors name entries by position
/// and id, never by their key.
pub(crate) fn parse(text: &str) -> Result<Vec<ParsedEntry>, ConfigError> {
    let mut entries = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        // A comment runs from `#` to the end of its line; it is removed
        // before entries are split, so it may hold commas and semicolons.
        // Neither hex nor base64 has a `#`.
        let body = line.split_once('#').map_or(line, |(entries, _)| entries);
        let mut piece_start = line_start;
        for piece in body.split([',', ';']) {
            let raw = piece.trim();
            if !raw.is_empty() {
                let start = piece_start + (piece.len() - piece.trim_start().len());
                let n = entries.len() + 1;
                let (marked, entry) = match raw.strip_prefix('*') {
                    Some(rest) => (true, rest),
                    None => (false, raw),
                };
                let (id, key) = entry.split_once(':').ok_or_else(|| {
                    ConfigError::new(format!("keyring entry {n} is not of the form ID:KEY"))
                })?;
                let value_start = start + (raw.len() - key.len());
                let id: u32 = id.trim().parse().map_err(|_| {
                    ConfigError::new(format!(
                        "keyring entry {n} has a key id that is not a number from 0 to 4294967295"
                    ))
                })?;
                let what = format!("keyring entry for key id {id}");
                let key = if key.trim_start().starts_with("kms:") {
                    EntryKey::Wrapped(WrappedKey::parse(key.trim(), &what)?)
                } else {
                    EntryKey::Clear(
                        MasterKey::from_text(key)
                            .map_err(|e| ConfigError::new(format!("{what}: {}", e.message())))?,
                    )
                };
                entries.push(ParsedEntry {
                    id,
                    key,
                    marked,
                    span: start..start + raw.len(),
                    value: value_start..start + raw.len(),
                    line: line_start..line_start + line.len(),
                });
            }
            // Each separator is one byte.
            piece_start += piece.len() + 1;
        }
        line_start += line.len();
    }
    Ok(entries)
}

/// The keyring entry `ID:KEY` of `key` under `id`, its key in padded
/// base64; wiped when dropped.
pub fn entry(id: u32, key: &MasterKey) -> Zeroizing<String> {
    let id = id.to_string();
    let key = key.to_base64();
    // Piece by piece: a formatted temporary would hold the key unwiped.
    let mut text = Zeroizing::new(String::with_capacity(id.len() + 1 + 44));
    text.push_str(&id);
    text.push(':');
    text.push_str(key.expose_secret());
    text
}

/// The primary key id of parsed entries: the one marked `*`, else the
/// largest. Refuses two marks, two entries of one id and no entry at all.
pub(crate) fn primary_of(entries: &[ParsedEntry]) -> Result<u32, ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for e in entries {
        if !seen.insert(e.id) {
            return Err(ConfigError::new(format!(
                "master key id {} appears twice in the keyring",
                e.id
            )));
        }
    }
    let mut marked = entries.iter().filter(|e| e.marked);
    match (marked.next(), marked.next()) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "more than one keyring entry is marked primary with '*'",
        )),
        (Some(e), None) => Ok(e.id),
        (None, _) => seen
            .last()
            .copied()
            .ok_or_else(|| ConfigError::new("the keyring holds no keys")),
    }
}

/// The text of a keyring, edited in place.
///
/// It holds master keys, so it is wiped when dropped and its `Debug` shows
/// only the key ids. Every edit checks that the result reads back as the
/// keyring intended before it keeps it; a failed edit changes nothing.
pub struct KeyringText {
    text: Zeroizing<String>,
}

/// One change to a text: replace `range` by `with`, which is never a key
/// in the clear.
struct Splice {
    range: Range<usize>,
    with: String,
}

impl KeyringText {
    /// A keyring text, which must parse; an empty text (a keyring file yet
    /// to be filled) is accepted.
    pub fn new(text: impl Into<String>) -> Result<Self, ConfigError> {
        let text = KeyringText {
            text: Zeroizing::new(text.into()),
        };
        let entries = parse(&text.text)?;
        if !entries.is_empty() {
            primary_of(&entries)?;
        }
        Ok(text)
    }

    /// The keyring this text describes.
    pub fn keyring(&self) -> Result<Keyring, ConfigError> {
        Keyring::from_text(&self.text)
    }

    /// The text itself, master keys included.
    pub fn expose_text(&self) -> &str {
        &self.text
    }

    /// Whether the text holds no entry.
    pub fn is_empty(&self) -> Result<bool, ConfigError> {
        Ok(parse(&self.text)?.is_empty())
    }

    /// The id [`add`](Self::add) picks when given none: one more than the
    /// largest id, or 1.
    pub fn next_id(&self) -> Result<u32, ConfigError> {
        match parse(&self.text)?.iter().map(|e| e.id).max() {
            None => Ok(1),
            Some(max) => max
                .checked_add(1)
                .ok_or_else(|| ConfigError::new("no key id is left above the largest; choose one")),
        }
    }

    /// The primary key id; `None` for a text with no entry. Unlike
    /// [`keyring`](Self::keyring), it reads wrapped entries too.
    pub fn primary_id(&self) -> Result<Option<u32>, ConfigError> {
        let entries = parse(&self.text)?;
        if entries.is_empty() {
            return Ok(None);
        }
        primary_of(&entries).map(Some)
    }

    /// What the text says of each entry, in the text's order: id, role and
    /// custody, nothing secret.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, ConfigError> {
        let entries = parse(&self.text)?;
        let primary = if entries.is_empty() {
            None
        } else {
            Some(primary_of(&entries)?)
        };
        Ok(entries
            .into_iter()
            .map(|e| EntryInfo {
                id: e.id,
                primary: Some(e.id) == primary,
                wrapped: match e.key {
                    EntryKey::Clear(_) => None,
                    EntryKey::Wrapped(w) => Some(w),
                },
            })
            .collect())
    }

    /// The master key of entry `id` when the text holds it in the clear;
    /// `None` when it is wrapped by a KMS. To wrap it (`byok keyring
    /// rewrap`).
    pub fn clear_key(&self, id: u32) -> Result<Option<MasterKey>, ConfigError> {
        match parse(&self.text)?.into_iter().find(|e| e.id == id) {
            None => Err(ConfigError::new(format!(
                "master key id {id} is not in the keyring"
            ))),
            Some(ParsedEntry {
                key: EntryKey::Clear(key),
                ..
            }) => Ok(Some(key)),
            Some(_) => Ok(None),
        }
    }

    /// Whether some entry holds its key wrapped by a KMS, so that
    /// [`keyring`](Self::keyring) cannot read it alone (see
    /// [`keyring_source::unwrap_text`](crate::keyring_source::unwrap_text)).
    pub fn has_wrapped(&self) -> Result<bool, ConfigError> {
        Ok(parse(&self.text)?
            .iter()
            .any(|e| matches!(e.key, EntryKey::Wrapped(_))))
    }

    /// Adds `key` under `id` (default: [`next_id`](Self::next_id)) and
    /// returns the id.
    ///
    /// Unless `primary`, the primary key stays what it was: a new entry
    /// with a larger id would otherwise become primary by the "largest id"
    /// rule, so the current primary is marked with `*` when it is not yet.
    /// The first key of an empty text is primary.
    pub fn add(
        &mut self,
        id: Option<u32>,
        key: &MasterKey,
        primary: bool,
    ) -> Result<u32, ConfigError> {
        self.add_entry(id, primary, |id| entry(id, key))
    }

    /// Adds an entry whose key is wrapped by a KMS, as [`add`](Self::add)
    /// does for a key in the clear.
    pub fn add_wrapped(
        &mut self,
        id: Option<u32>,
        key: &WrappedKey,
        primary: bool,
    ) -> Result<u32, ConfigError> {
        self.add_entry(id, primary, |id| Zeroizing::new(key.entry(id)))
    }

    /// Puts `key` in the place of entry `id`'s key: the same master key
    /// wrapped anew (under another KMS key, say), or a key in the clear
    /// wrapped for the first time. Its role and place stay. The caller
    /// makes sure that `key` unwraps to the same master key: stored keys
    /// under `id` would not decrypt otherwise.
    pub fn rewrap(&mut self, id: u32, key: &WrappedKey) -> Result<(), ConfigError> {
        let entries = parse(&self.text)?;
        let entry = entries
            .iter()
            .find(|e| e.id == id)
            .ok_or_else(|| ConfigError::new(format!("master key id {id} is not in the keyring")))?;
        let primary = primary_of(&entries)?;
        let edited = apply(
            &self.text,
            &[Splice {
                range: entry.value.clone(),
                with: key.to_value(),
            }],
            "",
        );
        let ids: Vec<u32> = entries.iter().map(|e| e.id).collect();
        self.keep(edited, &ids, primary)?;
        match parse(&self.text)?.into_iter().find(|e| e.id == id) {
            Some(ParsedEntry {
                key: EntryKey::Wrapped(w),
                ..
            }) if w == *key => Ok(()),
            _ => Err(ConfigError::new(
                "the rewrapped keyring does not read back as intended",
            )),
        }
    }

    /// Adds the entry `entry(id)` makes, as [`add`](Self::add) says.
    fn add_entry(
        &mut self,
        id: Option<u32>,
        primary: bool,
        entry: impl FnOnce(u32) -> Zeroizing<String>,
    ) -> Result<u32, ConfigError> {
        let entries = parse(&self.text)?;
        let id = match id {
            Some(id) => id,
            None => self.next_id()?,
        };
        if entries.iter().any(|e| e.id == id) {
            return Err(ConfigError::new(format!(
                "master key id {id} is already in the keyring"
            )));
        }
        let (expected_primary, splices) = if entries.is_empty() {
            (id, Vec::new())
        } else if primary {
            (id, unmark(&entries))
        } else {
            let current = primary_of(&entries)?;
            (current, mark(&entries, current))
        };
        let entry = entry(id);
        let mut tail = Zeroizing::new(String::with_capacity(entry.len() + 3));
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            tail.push('\n');
        }
        if primary || entries.is_empty() {
            tail.push('*');
        }
        tail.push_str(&entry);
        tail.push('\n');
        let edited = apply(&self.text, &splices, &tail);
        let mut ids: Vec<u32> = entries.iter().map(|e| e.id).collect();
        ids.push(id);
        self.keep(edited, &ids, expected_primary)?;
        Ok(id)
    }

    /// Makes `id` the primary key; returns whether anything changed.
    pub fn promote(&mut self, id: u32) -> Result<bool, ConfigError> {
        let entries = parse(&self.text)?;
        if !entries.iter().any(|e| e.id == id) {
            return Err(ConfigError::new(format!(
                "master key id {id} is not in the keyring"
            )));
        }
        if primary_of(&entries)? == id {
            return Ok(false);
        }
        let mut splices = unmark(&entries);
        splices.extend(mark(&entries, id));
        let edited = apply(&self.text, &splices, "");
        let ids: Vec<u32> = entries.iter().map(|e| e.id).collect();
        self.keep(edited, &ids, id)?;
        Ok(true)
    }

    /// Removes the entry of `id`, which must not be primary. A line left
    /// with no entry goes, with its comment; other entries of its line
    /// stay, with their separators.
    pub fn remove(&mut self, id: u32) -> Result<(), ConfigError> {
        let entries = parse(&self.text)?;
        let Some(entry) = entries.iter().find(|e| e.id == id) else {
            return Err(ConfigError::new(format!(
                "master key id {id} is not in the keyring"
            )));
        };
        let primary = primary_of(&entries)?;
        if primary == id {
            return Err(ConfigError::new(format!(
                "master key id {id} is primary; promote another key first"
            )));
        }
        let text = self.text.as_str();
        let alone = !entries
            .iter()
            .any(|e| e.id != id && e.line.start == entry.line.start);
        let range = if alone {
            entry.line.clone()
        } else {
            let bytes = text.as_bytes();
            let blank = |b: u8| b == b' ' || b == b'\t';
            let sep = |b: u8| b == b',' || b == b';';
            let mut after = entry.span.end;
            while after < entry.line.end && blank(bytes[after]) {
                after += 1;
            }
            if after < entry.line.end && sep(bytes[after]) {
                // "A, B": drop "A, ".
                after += 1;
                while after < entry.line.end && blank(bytes[after]) {
                    after += 1;
                }
                entry.span.start..after
            } else {
                // "A, B" without B's own separator after it: drop ", B".
                let mut before = entry.span.start;
                while before > entry.line.start && blank(bytes[before - 1]) {
                    before -= 1;
                }
                if before > entry.line.start && sep(bytes[before - 1]) {
                    before -= 1;
                }
                before..entry.span.end
            }
        };
        let edited = apply(
            text,
            &[Splice {
                range,
                with: String::new(),
            }],
            "",
        );
        let ids: Vec<u32> = entries.iter().map(|e| e.id).filter(|i| *i != id).collect();
        self.keep(edited, &ids, primary)
    }

    /// Keeps `edited` if it reads back with exactly `ids` and `primary`.
    fn keep(
        &mut self,
        edited: Zeroizing<String>,
        ids: &[u32],
        primary: u32,
    ) -> Result<(), ConfigError> {
        let entries = parse(&edited)?;
        let read_primary = primary_of(&entries)?;
        let mut read: Vec<u32> = entries.iter().map(|e| e.id).collect();
        read.sort_unstable();
        let mut want = ids.to_vec();
        want.sort_unstable();
        if read != want || read_primary != primary {
            return Err(ConfigError::new(
                "the edited keyring would not read back as intended; nothing was changed",
            ));
        }
        self.text = edited;
        Ok(())
    }
}

impl fmt::Debug for KeyringText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u32> = parse(&self.text)
            .map(|e| e.iter().map(|e| e.id).collect())
            .unwrap_or_default();
        f.debug_struct("KeyringText")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

/// Removes the `*` of a marked entry, if any.
fn unmark(entries: &[ParsedEntry]) -> Vec<Splice> {
    entries
        .iter()
        .filter(|e| e.marked)
        .map(|e| Splice {
            range: e.span.start..e.span.start + 1,
            with: String::new(),
        })
        .collect()
}

/// Marks the entry of `id` with `*`, unless it is marked already.
fn mark(entries: &[ParsedEntry], id: u32) -> Vec<Splice> {
    entries
        .iter()
        .filter(|e| e.id == id && !e.marked)
        .map(|e| Splice {
            range: e.span.start..e.span.start,
            with: "*".to_owned(),
        })
        .collect()
}

/// The text with every splice applied (splices must not overlap), and
/// `tail` after it.
fn apply(text: &str, splices: &[Splice], tail: &str) -> Zeroizing<String> {
    let mut order: Vec<&Splice> = splices.iter().collect();
    order.sort_by_key(|s| s.range.start);
    // Room for the marks and an added entry, so that the buffer holding
    // master keys is never reallocated (a reallocation leaves an unwiped
    // copy behind).
    let added: usize = splices.iter().map(|s| s.with.len()).sum::<usize>() + tail.len();
    let mut out = Zeroizing::new(String::with_capacity(text.len() + added));
    let mut at = 0;
    for s in order {
        out.push_str(&text[at..s.range.start]);
        out.push_str(&s.with);
        at = s.range.end;
    }
    out.push_str(&text[at..]);
    out.push_str(tail);
    out
}

/// What [`edit_file`] did, beside the edit's own result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileEdit {
    /// The file that was rewritten: the target of the path when the path
    /// is a symbolic link.
    pub written: PathBuf,
    /// Whether the file was created by this edit.
    pub created: bool,
    /// Things the operator should know, such as a file that others can
    /// read. Nothing secret.
    pub warnings: Vec<String>,
}

/// Applies `edit` to the keyring file at `path` and writes the result back
/// safely; a missing file is created (mode 0600) from an empty text.
///
/// * A symbolic link is followed to its target, which is rewritten; the
///   link stays (a mounted secret is a chain of links).
/// * The new text goes to a temporary file in the target's directory,
///   which is synced and renamed over the target: a reader sees the old
///   keyring or the new one, never half of one.
/// * The target's mode and owner are kept; a file that group or others
///   may read or write is rewritten as it was, with a warning.
/// * Edits of one file by `edit_file` run one at a time (an advisory lock
///   on the target's directory, on Unix), so that two at once cannot each
///   drop the other's change. Writers that do not take the lock, such as
///   a text editor, are not kept out.
///
/// When `edit` fails, or the result does not read back as intended,
/// nothing is written.
pub fn edit_file<T>(
    path: impl AsRef<Path>,
    edit: impl FnOnce(&mut KeyringText) -> Result<T, ConfigError>,
) -> Result<(T, FileEdit), ConfigError> {
    let path = path.as_ref();
    let io = |what: &str, e: std::io::Error| {
        ConfigError::new(format!("cannot {what} the keyring file {}", path.display()))
            .with_source(e)
    };
    let target = match std::fs::canonicalize(path) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(ConfigError::new(format!(
                    "the keyring file {} is a symbolic link to a file that does not exist",
                    path.display()
                )));
            }
            path.to_path_buf()
        }
        Err(e) => return Err(io("read", e)),
    };
    // Two edits at once (two operators, or a script run twice) would each
    // read the same text and the later rename would drop the other's
    // change: a key added, or a promotion, silently lost. The file is read
    // only once the lock is held, and written before it is released.
    let _lock = lock_dir(dir_of(&target));
    let old = match std::fs::read_to_string(&target) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let meta = std::fs::metadata(&target).map_err(|e| io("read", e))?;
            Some((text, meta))
        }
        // Not there yet (or no longer): created from an empty text.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("read", e)),
    };
    let mut text = match &old {
        Some((text, _)) => KeyringText::new(text.as_str()).map_err(|e| {
            ConfigError::new(format!(
                "cannot edit the keyring file {}: {}",
                path.display(),
                e.message()
            ))
        })?,
        None => KeyringText::new("")?,
    };
    let value = edit(&mut text)?;
    let mut warnings = Vec::new();
    #[cfg(unix)]
    if let Some((_, meta)) = &old {
        use std::os::unix::fs::MetadataExt as _;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "{} is open to group or others (mode {mode:04o}); `chmod 600` it unless they \
                 must read it",
                target.display()
            ));
        }
    }
    write_atomically(&target, text.expose_text(), old.as_ref().map(|(_, m)| m))
        .map_err(|e| io("write", e))?;
    Ok((
        value,
        FileEdit {
            written: target,
            created: old.is_none(),
            warnings,
        },
    ))
}

/// The directory of `file`.
fn dir_of(file: &Path) -> &Path {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// An exclusive lock on `dir` (an advisory `flock`, which other `byok`
/// edits honour), held until the returned file is dropped. The directory
/// is locked rather than the file, because the edit replaces the file by a
/// rename. Best effort: where a directory cannot be opened or locked, the
/// edit goes on unlocked, as before.
fn lock_dir(dir: &Path) -> Option<std::fs::File> {
    #[cfg(unix)]
    {
        let handle = std::fs::File::open(dir).ok()?;
        handle.lock().ok()?;
        Some(handle)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Writes `text` to a new file beside `target`, with `like`'s mode and
/// owner (or mode 0600), and renames it over `target`.
fn write_atomically(
    target: &Path,
    text: &str,
    like: Option<&std::fs::Metadata>,
) -> std::io::Result<()> {
    let dir = dir_of(target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut suffix);
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let written = (|| {
        file.write_all(text.as_bytes())?;
        #[cfg(unix)]
        if let Some(meta) = like {
            use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
            let mine = file.metadata()?;
            if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
            }
            file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        #[cfg(not(unix))]
        if let Some(meta) = like {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The rename is durable once the directory is synced; not every
    // platform can open a directory, and the rename is done either way.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    fn b64(b: u8) -> String {
        BASE64.encode([b; 32])
    }

    fn ids(t: &KeyringText) -> (Vec<u32>, u32) {
        let ring = t.keyring().unwrap();
        (ring.key_ids().collect(), ring.primary_id())
    }

    #[test]
    fn add_keeps_the_primary_unless_asked() {
        let mut t = KeyringText::new(format!("1:{}", b64(1))).unwrap();
        assert_eq!(t.add(None, &MasterKey::generate(), false).unwrap(), 2);
        assert_eq!(ids(&t), (vec![1, 2], 1));
        assert!(t.expose_text().starts_with(&format!("*1:{}\n2:", b64(1))));
        assert_eq!(t.add(None, &MasterKey::generate(), true).unwrap(), 3);
        assert_eq!(ids(&t), (vec![1, 2, 3], 3));
        assert_eq!(t.expose_text().matches('*').count(), 1);
        assert!(t.add(Some(2), &MasterKey::generate(), false).is_err());
        let mut empty = KeyringText::new("").unwrap();
        assert_eq!(
            empty.add(Some(7), &MasterKey::generate(), false).unwrap(),
            7
        );
        assert_eq!(ids(&empty), (vec![7], 7));
    }

    /// Every form the parser reads can be edited: entries on one line,
    /// separated by commas or semicolons, with comments and CRLF.
    #[test]
    fn edits_accept_every_form_the_parser_reads() {
        let (a, b) = (b64(1), b64(2));
        for text in [
            format!("1:{a},2:{b}"),
            format!("1:{a} ; 2:{b};"),
            format!("# keys, old first\r\n1:{a}, 2:{b} # both\r\n"),
            format!("*2:{b},1:{a}\n"),
        ] {
            let mut t = KeyringText::new(text.as_str()).unwrap();
            assert_eq!(t.add(None, &MasterKey::generate(), false).unwrap(), 3);
            assert_eq!(ids(&t), (vec![1, 2, 3], 2), "{text}");
            assert!(t.promote(3).unwrap());
            assert!(!t.promote(3).unwrap());
            assert_eq!(ids(&t), (vec![1, 2, 3], 3), "{text}");
            t.remove(1).unwrap();
            assert_eq!(ids(&t), (vec![2, 3], 3), "{text}");
            t.remove(2).unwrap();
            assert_eq!(ids(&t), (vec![3], 3), "{text}");
            assert!(t.expose_text().contains("*3:"), "{text}");
        }
        let mut t = KeyringText::new(format!("# keys\n1:{a}, 2:{b} # both\n")).unwrap();
        t.remove(1).unwrap();
        assert_eq!(t.expose_text(), format!("# keys\n2:{b} # both\n"));
        let mut t = KeyringText::new(format!("1:{a}\n2:{b} # new\n")).unwrap();
        t.promote(1).unwrap();
        t.remove(2).unwrap();
        assert_eq!(t.expose_text(), format!("*1:{a}\n"));
    }

    #[test]
    fn refused_edits_change_nothing_and_name_no_key() {
        let (a, b) = (b64(1), b64(2));
        let text = format!("1:{a}\n*2:{b}\n");
        let mut t = KeyringText::new(text.as_str()).unwrap();
        for e in [t.remove(2).unwrap_err(), t.remove(9).unwrap_err()] {
            assert!(
                !e.to_string().contains(&a) && !e.to_string().contains(&b),
                "{e}"
            );
        }
        assert!(t.promote(9).is_err());
        assert_eq!(t.expose_text(), text);
        let e = KeyringText::new(format!("1:{a}\n1:{b}")).unwrap_err();
        assert!(!e.to_string().contains(&a), "{e}");
        assert_eq!(format!("{t:?}"), "KeyringText { key_ids: [1, 2], .. }");
    }

    #[cfg(unix)]
    #[test]
    fn file_edits_follow_links_and_keep_the_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!(
            "byok-keyring-edit-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let data = dir.join("..2026_data");
        std::fs::create_dir_all(&data).unwrap();
        let real = data.join("keyring");
        std::fs::write(&real, format!("1:{},2:{}", b64(1), b64(2))).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.join("keyring");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let (id, done) = edit_file(&link, |t| t.add(None, &MasterKey::generate(), false)).unwrap();
        assert_eq!(id, 3);
        assert_eq!(done.written, std::fs::canonicalize(&real).unwrap());
        assert!(!done.created);
        assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let ring = Keyring::from_file(&link).unwrap();
        assert_eq!((ring.key_ids().count(), ring.primary_id()), (3, 2));

        // A failed edit writes nothing and leaves no temporary file.
        let before = std::fs::read(&real).unwrap();
        assert!(edit_file(&link, |t| t.remove(2)).is_err());
        assert_eq!(std::fs::read(&real).unwrap(), before);
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);

        let fresh = dir.join("new-keyring");
        let (_, done) = edit_file(&fresh, |t| t.add(None, &MasterKey::generate(), false)).unwrap();
        assert!(done.created && done.warnings.is_empty());
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Edits that run at the same time each see the others' changes: none
    /// is lost, and no key id is handed out twice.
    #[cfg(unix)]
    #[test]
    fn concurrent_file_edits_lose_nothing() {
        let dir = std::env::temp_dir().join(format!(
            "byok-keyring-race-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keyring");
        std::fs::write(&path, format!("1:{}\n", b64(1))).unwrap();
        let (threads, each) = (6, 8);
        let start = std::sync::Barrier::new(threads);
        let mut ids: Vec<u32> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        (0..each)
                            .map(|_| {
                                edit_file(&path, |t| t.add(None, &MasterKey::generate(), false))
                                    .unwrap()
                                    .0
                            })
                            .collect::<Vec<u32>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), threads * each, "an id was handed out twice");
        let ring = Keyring::from_file(&path).unwrap();
        assert_eq!(
            ring.key_ids().count(),
            1 + threads * each,
            "an edit was lost"
        );
        assert_eq!(ring.primary_id(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Wrapped entries: read by the one parser, with colons in the KMS
    /// key; shown without their blob; edited like any entry; rewrapped in
    /// place.
    #[test]
    fn wrapped_entries_parse_show_and_rewrap() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab";
        let blob = BASE64.encode([7u8; 150]);
        let text = format!("# kms\n1:{}\n2:kms:aws:{arn}:{blob} # wrapped\n", b64(1));
        let mut t = KeyringText::new(text.as_str()).unwrap();
        let entries = t.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].id, entries[0].primary, &entries[0].wrapped),
            (1, false, &None)
        );
        let w = entries[1].wrapped.clone().unwrap();
        assert_eq!((w.kms(), w.key(), w.blob()), ("aws", arn, &[7u8; 150][..]));
        assert!(entries[1].primary);
        assert!(!format!("{w:?}").contains(&blob));

        // A rewrap replaces the blob and key of its entry only.
        let other = WrappedKey::new("aws", "alias/byok-2027", vec![9u8; 160]).unwrap();
        t.rewrap(2, &other).unwrap();
        assert_eq!(
            t.expose_text(),
            format!(
                "# kms\n1:{}\n2:kms:aws:alias/byok-2027:{} # wrapped\n",
                b64(1),
                BASE64.encode([9u8; 160])
            )
        );
        assert!(t.rewrap(5, &other).is_err());
        assert_eq!(t.clear_key(2).unwrap(), None);
        assert!(t.clear_key(1).unwrap().is_some());
        assert!(t.clear_key(9).is_err());

        // Adds, promotions and removals work around wrapped entries.
        let id = t.add_wrapped(None, &other, false).unwrap();
        assert_eq!(id, 3);
        assert!(t.promote(3).unwrap());
        t.remove(2).unwrap();
        let ids: Vec<(u32, bool)> = t
            .entries()
            .unwrap()
            .iter()
            .map(|e| (e.id, e.primary))
            .collect();
        assert_eq!(ids, [(1, false), (3, true)]);
        assert!(t.keyring().is_err());
        assert_eq!(t.next_id().unwrap(), 4);
        assert_eq!(t.primary_id().unwrap(), Some(3));
    }

    #[test]
    fn malformed_wrapped_entries_are_refused_without_their_blob() {
        let blob = BASE64.encode([3u8; 100]);
        for (text, says) in [
            (format!("1:kms:aws:{blob}"), "not of the form"),
            (format!("1:kms:aws::{blob}"), "non-empty name"),
            (format!("1:kms::key:{blob}"), "KMS name"),
            (format!("1:kms:AWS:key:{blob}"), "KMS name"),
            ("1:kms:aws:key:not base64!".to_owned(), "not valid base64"),
            ("1:kms:aws:key:".to_owned(), "1 to 6144 bytes"),
            (
                format!("1:kms:aws:key:{}", BASE64.encode([0u8; 7000])),
                "got 7000",
            ),
        ] {
            let e = KeyringText::new(text.as_str()).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(says), "{text}: {shown}");
            assert!(shown.contains("key id 1"), "{shown}");
            assert!(!shown.contains(&blob), "{shown}");
        }
        assert!(WrappedKey::new("aws", "a key", vec![1]).is_err());
        assert!(WrappedKey::new("aws", "k#1", vec![1]).is_err());
    }
}
