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

/// One entry of a keyring text, with where it is.
pub(crate) struct ParsedEntry {
    pub(crate) id: u32,
    pub(crate) key: MasterKey,
    pub(crate) marked: bool,
    /// The entry, from its `*` (if any) or its id to the end of its key.
    span: Range<usize>,
    /// Its line, with the line break.
    line: Range<usize>,
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
                let id: u32 = id.trim().parse().map_err(|_| {
                    ConfigError::new(format!(
                        "keyring entry {n} has a key id that is not a number from 0 to 4294967295"
                    ))
                })?;
                let key = MasterKey::from_text(key).map_err(|e| {
                    ConfigError::new(format!("keyring entry for key id {id}: {}", e.message()))
                })?;
                entries.push(ParsedEntry {
                    id,
                    key,
                    marked,
                    span: start..start + raw.len(),
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

/// One change to a text: replace `range` by `with`.
struct Splice {
    range: Range<usize>,
    with: &'static str,
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

    /// Adds `key` under `id` (default: one more than the largest id, or 1)
    /// and returns the id.
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
        let entries = parse(&self.text)?;
        let id = match id {
            Some(id) => id,
            None => match entries.iter().map(|e| e.id).max() {
                None => 1,
                Some(max) => max.checked_add(1).ok_or_else(|| {
                    ConfigError::new("no key id is left above the largest; choose one")
                })?,
            },
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
        let mut tail = Zeroizing::new(String::with_capacity(128));
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            tail.push('\n');
        }
        if primary || entries.is_empty() {
            tail.push('*');
        }
        // Piece by piece: a formatted temporary would hold the key unwiped.
        tail.push_str(&id.to_string());
        tail.push(':');
        tail.push_str(key.to_base64().expose_secret());
        tail.push('\n');
        let mut edited = apply(&self.text, &splices);
        edited.push_str(&tail);
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
        let edited = apply(&self.text, &splices);
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
        let edited = apply(text, &[Splice { range, with: "" }]);
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
        let ring = Keyring::from_text(&edited)?;
        let mut want = ids.to_vec();
        want.sort_unstable();
        if ring.key_ids().collect::<Vec<_>>() != want || ring.primary_id() != primary {
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
            with: "",
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
            with: "*",
        })
        .collect()
}

/// The text with every splice applied; splices must not overlap.
fn apply(text: &str, splices: &[Splice]) -> Zeroizing<String> {
    let mut order: Vec<&Splice> = splices.iter().collect();
    order.sort_by_key(|s| s.range.start);
    // Room for the marks and an added entry, so that the buffer holding
    // master keys is never reallocated (a reallocation leaves an unwiped
    // copy behind).
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 128));
    let mut at = 0;
    for s in order {
        out.push_str(&text[at..s.range.start]);
        out.push_str(s.with);
        at = s.range.end;
    }
    out.push_str(&text[at..]);
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
}
