//! The input rules every backend shares.
//!
//! A user id is non-empty UTF-8 of at most [`MAX_USER_ID_LEN`] bytes; a
//! provider is non-empty and at most [`MAX_PROVIDER_LEN`] bytes; neither may
//! contain control characters, nor invisible format characters (Unicode
//! category Cf, such as the bidirectional controls U+202A–U+202E and
//! U+2066–U+2069, or U+200B–U+200F and U+FEFF), which would let two ids
//! look alike, or reorder what is printed around them. Everything else — colons, `*`, `%`, `_`,
//! quotes, braces, backslashes, spaces, any Unicode — is legal and must
//! round-trip exactly. Ids compare byte for byte: `alice`, `Alice` and
//! `alice ` are three different users.

use crate::error::{Field, InvalidInput, Problem};

/// The longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 255;
/// The longest provider name, in bytes.
pub const MAX_PROVIDER_LEN: usize = 64;
/// The longest display hint, in bytes.
pub const MAX_HINT_LEN: usize = 64;
/// The longest plaintext API key, in bytes (8 KiB).
pub const MAX_API_KEY_LEN: usize = 8 * 1024;
/// The largest page a scan returns.
pub const MAX_PAGE_SIZE: usize = 10_000;

fn check(field: Field, value: &str, max: usize) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::new(field, Problem::Empty));
    }
    if value.len() > max {
        return Err(InvalidInput::new(
            field,
            Problem::TooLong {
                len: value.len(),
                max,
            },
        ));
    }
    if let Some(at) = control_character(value) {
        return Err(InvalidInput::new(field, Problem::ControlCharacter { at }));
    }
    Ok(())
}

/// The byte offset of the first control character (Unicode category Cc:
/// U+0000–U+001F and U+007F–U+009F) in `value`, if any.
///
/// A byte scan: in UTF-8 those characters are the bytes below 0x20, 0x7F,
/// and 0xC2 followed by 0x80–0x9F (0xC2 only ever starts a character), so
/// no character is decoded. Ids and keys are checked on every write.
fn control_character(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    // One pass the compiler vectorises, over every byte: most ids and keys
    // hold none of the bytes that can start a control character.
    let suspect = bytes.iter().fold(false, |seen, &b| {
        seen | (b < 0x20) | (b == 0x7f) | (b == 0xc2)
    });
    if !suspect {
        return None;
    }
    bytes.iter().enumerate().position(|(at, &b)| {
        b < 0x20
            || b == 0x7f
            || (b == 0xc2 && bytes.get(at + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    })
}

/// Whether `c` is a format character (Unicode general category Cf, as of
/// Unicode 16).
pub fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// The first format character of `value` and its byte offset, if any.
fn format_character(value: &str) -> Option<(usize, char)> {
    // Every format character is outside ASCII, and most ids are ASCII.
    if value.is_ascii() {
        return None;
    }
    value.char_indices().find(|(_, c)| is_format(*c))
}

/// [`check`], and no format characters: the rules of ids.
fn check_id(field: Field, value: &str, max: usize) -> Result<(), InvalidInput> {
    check(field, value, max)?;
    match format_character(value) {
        Some((at, c)) => Err(InvalidInput::new(
            field,
            Problem::FormatCharacter {
                at,
                code_point: u32::from(c),
            },
        )),
        None => Ok(()),
    }
}

/// Checks a user id.
///
/// ```
/// use byok_core::validate::user_id;
/// assert!(user_id("alice").is_ok());
/// assert!(user_id("a:b{c}*%_'\"\\ é").is_ok());
/// assert!(user_id("").is_err());
/// assert!(user_id("tab\there").is_err());
/// // A right-to-left override, named by its code point, never printed.
/// let e = user_id("alice\u{202e}nimda").unwrap_err();
/// assert_eq!(
///     e.to_string(),
///     "invalid user id: contains the invisible format character U+202E at byte 5"
/// );
/// ```
pub fn user_id(value: &str) -> Result<(), InvalidInput> {
    check_id(Field::UserId, value, MAX_USER_ID_LEN)
}

/// Checks a provider name.
pub fn provider(value: &str) -> Result<(), InvalidInput> {
    check_id(Field::Provider, value, MAX_PROVIDER_LEN)
}

/// Checks a user id and a provider name together.
pub fn slot(user: &str, prov: &str) -> Result<(), InvalidInput> {
    user_id(user)?;
    provider(prov)
}

/// Checks a user id and a provider name at the storage layer (every
/// [`KeyStorage`](crate::KeyStorage) method, rows read back, cursors): the
/// rules of [`slot`] without the refusal of format characters.
///
/// New ids are refused where they enter: [`Byok::set_key`](crate::Byok::set_key),
/// byok-axum and the `byok` command check them with [`slot`].
/// Ids with format characters were legal before they were refused (an
/// emoji sequence joined by U+200D, a soft hyphen): refusing them when
/// they are read would make one such row fail every page of a scan that
/// holds it, and with it every rotation, verification and copy of the
/// store. They stay readable; only new ones are refused.
///
/// ```
/// use byok_core::validate::{slot, stored_slot};
/// let family = "\u{1f468}\u{200d}\u{1f469}";
/// assert!(slot(family, "openai").is_err());
/// assert!(stored_slot(family, "openai").is_ok());
/// assert!(stored_slot("tab\there", "openai").is_err());
/// ```
pub fn stored_slot(user: &str, prov: &str) -> Result<(), InvalidInput> {
    check(Field::UserId, user, MAX_USER_ID_LEN)?;
    check(Field::Provider, prov, MAX_PROVIDER_LEN)
}

/// Checks a user id at the storage layer: the rules of [`user_id`] without
/// the refusal of format characters (see [`stored_slot`]).
pub fn stored_user_id(value: &str) -> Result<(), InvalidInput> {
    check(Field::UserId, value, MAX_USER_ID_LEN)
}

/// Checks a provider name at the storage layer: the rules of [`provider`]
/// without the refusal of format characters (see [`stored_slot`]).
pub fn stored_provider(value: &str) -> Result<(), InvalidInput> {
    check(Field::Provider, value, MAX_PROVIDER_LEN)
}

/// An id as it may be shown to a person: every format character written
/// as `\u{…}`, so that an id stored before they were refused cannot
/// reorder or hide what a terminal or a page shows around it.
///
/// ```
/// use byok_core::validate::shown_id;
/// assert_eq!(shown_id("alice"), "alice");
/// assert_eq!(shown_id("ali\u{202e}ce"), "ali\\u{202e}ce");
/// ```
pub fn shown_id(id: &str) -> std::borrow::Cow<'_, str> {
    if !id.chars().any(is_format) {
        return std::borrow::Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        if is_format(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Checks a display hint.
pub fn hint(value: &str) -> Result<(), InvalidInput> {
    check(Field::Hint, value, MAX_HINT_LEN)
}

/// Checks a plaintext API key and returns it without the whitespace around
/// it, as [`Byok::set_key`](crate::Byok::set_key) stores it.
///
/// Whitespace before and after the key (spaces, tabs, line breaks and the
/// other Unicode `White_Space` characters) is dropped: a key pasted with a
/// trailing newline is the common case, and no provider issues keys that
/// begin or end with whitespace. What remains must be non-empty, at most
/// 8 KiB, and free of control characters; whitespace inside the key is
/// kept. The error names the problem and its position in `value`, never
/// the key.
///
/// ```
/// use byok_core::error::Problem;
/// use byok_core::validate::api_key;
/// assert_eq!(api_key("  sk-abc\r\n")?, "sk-abc");
/// assert_eq!(api_key(" \t\n").unwrap_err().problem, Problem::Blank);
/// assert_eq!(api_key("").unwrap_err().problem, Problem::Empty);
/// assert_eq!(
///     api_key(" sk\0abc").unwrap_err().problem,
///     Problem::ControlCharacter { at: 3 }
/// );
/// # Ok::<(), byok_core::error::InvalidInput>(())
/// ```
pub fn api_key(value: &str) -> Result<&str, InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::new(Field::ApiKey, Problem::Empty));
    }
    let trimmed = value.trim_start();
    let offset = value.len() - trimmed.len();
    let trimmed = trimmed.trim_end();
    if trimmed.is_empty() {
        return Err(InvalidInput::new(Field::ApiKey, Problem::Blank));
    }
    check(Field::ApiKey, trimmed, MAX_API_KEY_LEN).map_err(|mut e| {
        if let Problem::ControlCharacter { at } = &mut e.problem {
            *at += offset;
        }
        e
    })?;
    Ok(trimmed)
}

/// Checks the page size of a scan: between 1 and [`MAX_PAGE_SIZE`].
pub fn page_size(limit: usize) -> Result<(), InvalidInput> {
    if limit == 0 {
        return Err(InvalidInput::new(Field::PageSize, Problem::Empty));
    }
    if limit > MAX_PAGE_SIZE {
        return Err(InvalidInput::new(
            Field::PageSize,
            Problem::Other("must be at most 10000"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_in_bytes() {
        assert!(user_id(&"a".repeat(255)).is_ok());
        assert_eq!(
            user_id(&"a".repeat(256)).unwrap_err().problem,
            Problem::TooLong { len: 256, max: 255 }
        );
        // 64 three-byte characters are 192 bytes: too long for a provider.
        assert!(provider(&"€".repeat(21)).is_ok());
        assert!(provider(&"€".repeat(22)).is_err());
    }

    #[test]
    fn control_characters_are_rejected_with_position() {
        for bad in ["a\0b", "a\nb", "a\u{7f}b", "a\u{85}b"] {
            let e = user_id(bad).unwrap_err();
            assert_eq!(e.problem, Problem::ControlCharacter { at: 1 }, "{bad:?}");
        }
    }

    #[test]
    fn the_byte_scan_finds_exactly_what_is_control_finds() {
        // Every character, alone and between others of one to four bytes.
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            for text in [
                c.to_string(),
                format!("aé{c}€🦀"),
                format!("{c}\u{a0}\u{9f}"),
            ] {
                let expected = text
                    .char_indices()
                    .find(|(_, c)| c.is_control())
                    .map(|(at, _)| at);
                assert_eq!(control_character(&text), expected, "{:?}", text);
            }
        }
    }

    #[test]
    fn format_characters_are_rejected_by_code_point() {
        for c in [
            '\u{ad}',
            '\u{61c}',
            '\u{200b}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{2060}',
            '\u{feff}',
            '\u{e0001}',
            '\u{e007f}',
        ] {
            let id = format!("é{c}x");
            for e in [user_id(&id).unwrap_err(), provider(&id).unwrap_err()] {
                assert_eq!(
                    e.problem,
                    Problem::FormatCharacter {
                        at: 2,
                        code_point: u32::from(c)
                    },
                    "{c:?}"
                );
                assert!(!e.to_string().contains(c), "{e}");
            }
        }
        // Neighbours that are not format characters stay legal.
        for ok in [
            "\u{200a}x",
            "\u{2028}x",
            "\u{2070}",
            "\u{fffc}",
            "\u{e0080}",
        ] {
            assert!(user_id(ok).is_ok(), "{ok:?}");
        }
        // Keys and hints are not ids: their rules are unchanged.
        assert!(api_key("sk-\u{200b}abc").is_ok());
    }

    #[test]
    fn hostile_but_legal_ids_pass() {
        for ok in [
            "a:b",
            "*",
            "%",
            "_",
            "'",
            "\"",
            "{x}",
            "\\",
            " ",
            "alice ",
            "日本語",
            "🦀",
        ] {
            assert!(user_id(ok).is_ok(), "{ok:?}");
            assert!(provider(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn api_keys_are_trimmed_and_blank_ones_rejected() {
        assert_eq!(api_key("sk-abc\n").unwrap(), "sk-abc");
        assert_eq!(api_key("\u{3000}sk abc\u{a0}\u{2028}").unwrap(), "sk abc");
        for blank in [" ", "   ", "\t\r\n", "\u{a0}\u{3000}\u{2003}", "\u{85}"] {
            let e = api_key(blank).unwrap_err();
            assert_eq!(
                (e.field, e.problem),
                (Field::ApiKey, Problem::Blank),
                "{blank:?}"
            );
        }
        for (bad, at) in [("sk\u{7}x", 2), (" \tsk\u{1b}x", 4), ("a\nb", 1)] {
            assert_eq!(
                api_key(bad).unwrap_err().problem,
                Problem::ControlCharacter { at },
                "{bad:?}"
            );
        }
        let long = format!(" {} ", "k".repeat(MAX_API_KEY_LEN));
        assert_eq!(api_key(&long).unwrap().len(), MAX_API_KEY_LEN);
    }

    #[test]
    fn api_key_error_never_holds_the_key() {
        let secret = format!("sk-canary-{}", "x".repeat(9000));
        let e = api_key(&secret).unwrap_err();
        assert!(!e.to_string().contains("sk-canary"));
        assert!(!format!("{e:?}").contains("sk-canary"));
    }
}
