//! The table name: validated once, before it is ever formatted into SQL.

use std::fmt;
use std::sync::Arc;

use byok_core::ConfigError;
use sqlx::AssertSqlSafe;

/// The longest table name, in bytes: PostgreSQL's identifier limit, and
/// under MySQL's 64.
pub(crate) const MAX_TABLE_NAME_LEN: usize = 63;

/// A table name that is a plain SQL identifier: an ASCII letter or `_`,
/// then ASCII letters, digits or `_`, at most [`MAX_TABLE_NAME_LEN`] bytes.
///
/// Such a name needs no quoting on any engine and cannot end a statement,
/// open a string or comment, or name another schema, so formatting it into
/// SQL is safe. Anything else is refused rather than quoted: quoting rules
/// differ between the three engines, and a name that needs quoting is
/// almost always a mistake in the configuration.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TableName(String);

impl TableName {
    /// Checks `name`; the error does not repeat the name, which may come
    /// from an untrusted configuration source.
    pub(crate) fn new(name: &str) -> Result<Self, ConfigError> {
        let mut chars = name.chars();
        let Some(first) = chars.next() else {
            return Err(ConfigError::new("the SQL table name is empty"));
        };
        if name.len() > MAX_TABLE_NAME_LEN {
            return Err(ConfigError::new(format!(
                "the SQL table name is {} bytes long; at most {MAX_TABLE_NAME_LEN} are allowed",
                name.len()
            )));
        }
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(ConfigError::new(
                "the SQL table name must start with an ASCII letter or `_`",
            ));
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::new(
                "the SQL table name may hold only ASCII letters, digits and `_`",
            ));
        }
        Ok(TableName(name.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of an object derived from the table (an index, a lock),
    /// `<table>_<suffix>`, kept within `max` bytes.
    ///
    /// When the plain form is too long it is shortened and given a hash of
    /// the full table name, so that two long table names that share a
    /// prefix never share an index name (PostgreSQL would otherwise
    /// truncate both to the same name, and `CREATE INDEX IF NOT EXISTS`
    /// would silently skip the second).
    pub(crate) fn derived(&self, suffix: &str, max: usize) -> String {
        let plain = format!("{}_{suffix}", self.0);
        if plain.len() <= max {
            return plain;
        }
        let hash = format!("{:016x}", fnv1a(self.0.as_bytes()));
        let keep = max.saturating_sub(suffix.len() + hash.len() + 2);
        // The name is ASCII, so any byte index is a character boundary.
        format!("{}_{hash}_{suffix}", &self.0[..keep.min(self.0.len())])
    }

    /// A 64-bit key for advisory locks that serialize `migrate` of this table.
    #[cfg(feature = "postgres")]
    pub(crate) fn lock_key(&self) -> i64 {
        i64::from_ne_bytes(fnv1a(format!("byok-sql migrate {}", self.0).as_bytes()).to_ne_bytes())
    }
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A statement for sqlx.
///
/// Every statement of this crate is built once, from constant text and a
/// validated [`TableName`]; values are always bound, never formatted in.
pub(crate) fn sql(statement: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(statement))
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for ok in ["user_api_keys", "_t", "T1", "a", &"x".repeat(63)] {
            assert_eq!(TableName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "1abc",
            "a b",
            "a;b",
            "a'b",
            "a\"b",
            "a`b",
            "a-b",
            "a.b",
            "keys; DROP TABLE users; --",
            "tablé",
            "a\0",
            &"x".repeat(64),
        ] {
            assert!(TableName::new(bad).is_err(), "{bad:?}");
        }
        let e = TableName::new("x'; DROP TABLE t; --").unwrap_err();
        assert!(!e.to_string().contains("DROP"), "{e}");
    }

    #[test]
    fn derived_names_fit_and_stay_distinct() {
        let t = TableName::new("user_api_keys").unwrap();
        assert_eq!(
            t.derived("expires_at_idx", 63),
            "user_api_keys_expires_at_idx"
        );
        let a = TableName::new(&format!("{}a", "x".repeat(62))).unwrap();
        let b = TableName::new(&format!("{}b", "x".repeat(62))).unwrap();
        let (da, db) = (
            a.derived("expires_at_idx", 63),
            b.derived("expires_at_idx", 63),
        );
        assert!(da.len() <= 63 && db.len() <= 63, "{da} {db}");
        assert_ne!(da, db);
        assert!(
            TableName::new(&da).is_ok(),
            "a derived name is an identifier too"
        );
        #[cfg(feature = "postgres")]
        assert_ne!(a.lock_key(), b.lock_key());
    }
}
