//! Errors of the command: one line for the operator and an exit code.

use std::fmt;
use std::process::ExitCode;

use byok::{ByokError, EncryptionError, StorageErrorKind};

/// The exit codes, as documented in `byok --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command ran and found a problem.
    Problem = 1,
    /// Bad input.
    Usage = 2,
    /// No keyring, or one that cannot be read.
    Config = 3,
    /// The store failed or cannot be reached.
    Store = 4,
    /// A key did not decrypt.
    Decrypt = 5,
    /// The key asked for does not exist.
    NotFound = 6,
    /// Interrupted (Ctrl-C), as shells report a process ended by SIGINT.
    Interrupted = 130,
    /// `byok test`: the provider does not accept the key.
    KeyInvalid = 10,
    /// `byok test`: the key is valid but out of credit or quota.
    KeyOutOfCredit = 11,
    /// `byok test`: the provider is rate-limiting the key.
    KeyRateLimited = 12,
    /// `byok test`: the provider does not serve this region.
    KeyRegionBlocked = 13,
    /// `byok test`: the key may not use the service.
    KeyForbidden = 14,
    /// `byok test`: the provider could not be reached (5xx, timeout, DNS).
    ProviderUnavailable = 15,
    /// `byok test`: an answer that could not be classified.
    KeyCheckUnknown = 16,
}

impl Exit {
    /// A name of the code, for `--json` errors.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Problem => "problem",
            Exit::Usage => "usage",
            Exit::Config => "config",
            Exit::Store => "store",
            Exit::Decrypt => "decrypt",
            Exit::NotFound => "not-found",
            Exit::Interrupted => "interrupted",
            Exit::KeyInvalid => "key-invalid",
            Exit::KeyOutOfCredit => "key-out-of-credit",
            Exit::KeyRateLimited => "key-rate-limited",
            Exit::KeyRegionBlocked => "key-region-blocked",
            Exit::KeyForbidden => "key-forbidden",
            Exit::ProviderUnavailable => "provider-unavailable",
            Exit::KeyCheckUnknown => "key-check-unknown",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// What went wrong, as one line: what failed, then what to do next.
///
/// The message is built from byok's errors, which never hold key material,
/// and from the redacted store URL, never the URL itself.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    message: String,
    /// The kind of the store's failure (`StorageErrorKind::as_str`), when
    /// a store failed.
    pub storage_kind: Option<&'static str>,
    /// The reader of standard output went away (`byok list | head -1`):
    /// nothing is printed and the command ends with success.
    pub quiet: bool,
}

impl CliError {
    /// An error with its exit code.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
            storage_kind: None,
            quiet: false,
        }
    }

    /// Standard output could not be written: a closed pipe ends quietly,
    /// anything else (a full disk) is an error.
    pub fn output(e: &std::io::Error) -> Self {
        let mut err = Self::problem(format!("cannot write the output: {e}"));
        err.quiet = e.kind() == std::io::ErrorKind::BrokenPipe;
        err
    }

    /// The message, without the exit code.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Bad input.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// A problem the command found (not an error of the command itself).
    pub fn problem(message: impl Into<String>) -> Self {
        Self::new(Exit::Problem, message)
    }

    /// `what` failed because of `e`; `store` is the redacted URL, if a
    /// store was involved.
    pub fn from_byok(what: &str, e: &ByokError, store: Option<&str>) -> Self {
        let at = store.map(|s| format!(" at {s}")).unwrap_or_default();
        let cause = chain(e);
        match e {
            ByokError::Config(_) => Self::usage(format!("{what}: {cause}")),
            ByokError::InvalidInput(_) => Self::usage(format!("{what}: {cause}")),
            ByokError::KeyNotFound { .. } => Self::new(Exit::NotFound, format!("{what}: {cause}")),
            ByokError::Encryption(EncryptionError::UnknownKeyId { .. })
            | ByokError::Encryption(EncryptionError::AuthenticationFailed { .. }) => Self::new(
                Exit::Decrypt,
                format!(
                    "{what}: {cause}; check that the keyring holds the right master keys \
                     (nothing was changed in the store)"
                ),
            ),
            ByokError::Encryption(_) => Self::new(Exit::Decrypt, format!("{what}: {cause}")),
            ByokError::Storage(s) => {
                let next = match (s.kind, refusal(e)) {
                    (_, Refusal::Credentials) => {
                        "check the user name and password (in the URL or BYOK_STORE; \
                         PostgreSQL also reads PGPASSWORD)"
                    }
                    (_, Refusal::NoSchema) => "create the schema with `byok migrate`",
                    (StorageErrorKind::Unavailable | StorageErrorKind::Timeout, _) => {
                        "check that the store is running and the URL is right"
                    }
                    _ => "check the store",
                };
                let mut err = Self::new(Exit::Store, format!("{what}{at}: {cause}; {next}"));
                err.storage_kind = Some(s.kind.as_str());
                err
            }
            _ => Self::new(Exit::Store, format!("{what}{at}: {cause}")),
        }
    }
}

/// Why a database refused a statement, as far as the advice goes.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Wrong user name or password.
    Credentials,
    /// The table is missing.
    NoSchema,
    /// Anything else.
    Other,
}

/// What the database error under `e`, if any, says.
fn refusal(e: &(dyn std::error::Error + 'static)) -> Refusal {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(byok::byok_sql::sqlx::Error::Database(db)) =
            s.downcast_ref::<byok::byok_sql::sqlx::Error>()
        {
            let code = db.code().unwrap_or_default();
            // SQLSTATE class 28 is "invalid authorization" in PostgreSQL
            // and MariaDB; 42P01 (PostgreSQL) and 42S02 (MariaDB) are
            // "no such table", which SQLite says only in words.
            return if code.starts_with("28") {
                Refusal::Credentials
            } else if code == "42P01"
                || code == "42S02"
                || code == "1146"
                || db.message().starts_with("no such table")
            {
                Refusal::NoSchema
            } else {
                Refusal::Other
            };
        }
        if let Some(redis) = s.downcast_ref::<byok::byok_redis::redis::RedisError>()
            && redis.kind() == byok::byok_redis::redis::ErrorKind::AuthenticationFailed
        {
            return Refusal::Credentials;
        }
        source = s.source();
    }
    Refusal::Other
}

/// `text` without the PostgreSQL server's source position (`… at line
/// 768`), which names a line of the server's C code, not of anything the
/// operator wrote.
fn without_server_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" at line ") {
        let after = &rest[at + " at line ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
            continue;
        }
        out.push_str(&rest[..at]);
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// The error and its sources, joined into one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    without_server_line(&text.replace('\n', " "))
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's failure carries its kind by the name spans and metrics
    /// use; other errors carry none.
    #[test]
    fn store_failures_name_their_kind() {
        for kind in [StorageErrorKind::Timeout, StorageErrorKind::Corrupt] {
            let e = ByokError::from(byok::StorageError::new("sqlite", kind, "m"));
            let err = CliError::from_byok("list", &e, None);
            assert_eq!(err.exit, Exit::Store);
            assert_eq!(err.storage_kind, Some(kind.as_str()));
            assert_eq!(err.storage_kind, Some(byok::observe::error_kind(&e)));
        }
        let e = ByokError::KeyNotFound {
            user_id: "u".into(),
            provider: "p".into(),
        };
        assert_eq!(CliError::from_byok("get", &e, None).storage_kind, None);
    }

    #[test]
    fn server_source_lines_are_dropped() {
        assert_eq!(
            without_server_line("role \"u\" does not exist at line 768; check"),
            "role \"u\" does not exist; check"
        );
        assert_eq!(without_server_line("at line x at line 3"), "at line x");
    }
}
