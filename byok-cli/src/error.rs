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
}

impl CliError {
    /// An error with its exit code.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
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
                let next = match s.kind {
                    StorageErrorKind::Unavailable | StorageErrorKind::Timeout => {
                        "check that the store is running and the URL is right"
                    }
                    StorageErrorKind::Rejected => {
                        "if the schema is missing, create it with `byok migrate`"
                    }
                    _ => "check the store",
                };
                Self::new(Exit::Store, format!("{what}{at}: {cause}; {next}"))
            }
            _ => Self::new(Exit::Store, format!("{what}{at}: {cause}")),
        }
    }
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
    text.replace('\n', " ")
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;
