//! Keyring sources: see [`KeyringSource`](crate::KeyringSource).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt as _;
use zeroize::Zeroizing;

use crate::crypto::{Keyring, MasterKey};
use crate::error::ConfigError;
use crate::keyring_text::{EntryKey, WrappedKey};

/// A place a keyring can be read from, again and again.
///
/// Where a running [`Byok`](crate::Byok) reloads its keyring from: a file,
/// an environment variable, or a command's output.
///
/// A manager built with a source
/// ([`Byok::builder_with_source`](crate::Byok::builder_with_source))
/// reloads the keyring on a timer and, at most once per
/// [`unknown_key_reload_gap`](crate::ByokBuilder::unknown_key_reload_gap),
/// when a stored key names a master key id it lacks; it then tries that
/// decryption once more. A reload that fails, or reads a malformed
/// keyring, keeps the keyring in use and logs a warning that names the
/// source and the problem, never a key.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use byok_core::{Byok, KeyringFile};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> byok_core::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("byok-source-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let path = dir.join("keyring");
/// # std::fs::write(&path, "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
/// let storage = Arc::new(byok_memory::MemoryStorage::new());
/// // A mounted secret: the orchestrator re-points its symbolic link.
/// let byok = Byok::builder_with_source(storage, KeyringFile::new(&path))
///     .await?
///     .reload_interval(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(byok.keyring().primary_id(), 1);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(())
/// # }
/// ```
///
/// [`read_text`](Self::read_text) fetches the keyring text;
/// [`load`](Self::load) turns it into a [`Keyring`] with the one keyring
/// parser. A source whose entries need more work than parsing (a key
/// wrapped by a key management service, say) overrides `load`, or wraps
/// another source and does that work between the two steps.
///
/// `Debug` names the source (a path, a variable, a program), never its
/// content: it appears in reload warnings.
#[async_trait]
pub trait KeyringSource: fmt::Debug + Send + Sync + 'static {
    /// The keyring text as it is now.
    async fn read_text(&self) -> Result<Zeroizing<String>, ConfigError>;

    /// The keyring as it is now.
    async fn load(&self) -> Result<Keyring, ConfigError> {
        let text = self.read_text().await?;
        Keyring::from_text(&text)
    }
}

#[async_trait]
impl<S: KeyringSource + ?Sized> KeyringSource for std::sync::Arc<S> {
    async fn read_text(&self) -> Result<Zeroizing<String>, ConfigError> {
        (**self).read_text().await
    }

    async fn load(&self) -> Result<Keyring, ConfigError> {
        (**self).load().await
    }
}

/// A keyring file, read anew at each load.
///
/// The path is opened each time, so a symbolic link that an orchestrator
/// re-points (a Kubernetes secret volume) is followed to its new target,
/// and a file replaced by a rename is read whole, never half written.
#[derive(Debug, Clone)]
pub struct KeyringFile {
    path: PathBuf,
}

impl KeyringFile {
    /// The file at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        KeyringFile {
            path: path.as_ref().to_path_buf(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl KeyringSource for KeyringFile {
    async fn read_text(&self) -> Result<Zeroizing<String>, ConfigError> {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
            .await
            .map_err(|e| ConfigError::new("reading the keyring file stopped").with_source(e))?;
        read.map(Zeroizing::new).map_err(|e| {
            ConfigError::new(format!(
                "cannot read the keyring file {}",
                self.path.display()
            ))
            .with_source(e)
        })
    }
}

/// A keyring in an environment variable of this process.
#[derive(Debug, Clone)]
pub struct KeyringEnv {
    var: String,
}

impl KeyringEnv {
    /// The variable `var`, such as `BYOK_KEYRING`.
    pub fn new(var: impl Into<String>) -> Self {
        KeyringEnv { var: var.into() }
    }
}

#[async_trait]
impl KeyringSource for KeyringEnv {
    async fn read_text(&self) -> Result<Zeroizing<String>, ConfigError> {
        std::env::var(&self.var).map(Zeroizing::new).map_err(|_| {
            ConfigError::new(format!(
                "environment variable {} is not set or not UTF-8",
                self.var
            ))
        })
    }
}

/// The default time a [`KeyringCommand`] may take.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a [`KeyringCommand`] may print: 1 MiB, some 18 000 keyring
/// entries.
pub const MAX_COMMAND_OUTPUT: usize = 1 << 20;

/// A command whose standard output is the keyring text, such as
/// `age -d keyring.age` or `vault kv get -field=keyring secret/byok`.
///
/// The program runs without a shell, with standard input closed. It must
/// finish within the timeout ([`DEFAULT_COMMAND_TIMEOUT`] unless set),
/// print at most [`MAX_COMMAND_OUTPUT`] bytes and exit with success;
/// otherwise it is killed and the load fails. Its
/// standard error is discarded, never copied into an error or a log: a
/// tool may print there what it decrypted or a token it used.
#[derive(Clone)]
pub struct KeyringCommand {
    program: OsString,
    args: Vec<OsString>,
    timeout: Duration,
}

impl KeyringCommand {
    /// Runs `program` with `args`.
    pub fn new<I, A>(program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        KeyringCommand {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// How long the command may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for KeyringCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The arguments may hold a token; the program name is enough to
        // tell which source a warning is about.
        f.debug_struct("KeyringCommand")
            .field("program", &self.program)
            .field("args", &self.args.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[async_trait]
impl KeyringSource for KeyringCommand {
    async fn read_text(&self) -> Result<Zeroizing<String>, ConfigError> {
        let program = Path::new(&self.program).display().to_string();
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ConfigError::new(format!("cannot run the keyring command {program}")).with_source(e)
            })?;
        let mut out = child.stdout.take().ok_or_else(|| {
            ConfigError::new(format!(
                "the keyring command {program} has no standard output"
            ))
        })?;
        // Read to the cap and one byte more, so that a command that prints
        // without end (a wrong program, `yes`) is stopped there instead of
        // filling memory until the timeout. Room is made up front: a
        // growing buffer would leave unwiped copies of the keyring behind.
        let mut stdout = Zeroizing::new(Vec::with_capacity(64 * 1024));
        let run = async {
            let cap = u64::try_from(MAX_COMMAND_OUTPUT).unwrap_or(u64::MAX);
            (&mut out).take(cap + 1).read_to_end(&mut stdout).await?;
            if stdout.len() > MAX_COMMAND_OUTPUT {
                return Ok(None);
            }
            child.wait().await.map(Some)
        };
        // On a timeout or too much output the child is dropped, which
        // kills it.
        let status = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                ConfigError::new(format!(
                    "the keyring command {program} did not finish within {:?}; it was killed",
                    self.timeout
                ))
            })?
            .map_err(|e| {
                ConfigError::new(format!("the keyring command {program} failed")).with_source(e)
            })?
            .ok_or_else(|| {
                ConfigError::new(format!(
                    "the keyring command {program} printed more than {MAX_COMMAND_OUTPUT} bytes; \
                     it was killed"
                ))
            })?;
        if !status.success() {
            return Err(ConfigError::new(format!(
                "the keyring command {program} ended with {status}"
            )));
        }
        let text = std::str::from_utf8(&stdout).map_err(|_| {
            ConfigError::new(format!(
                "the keyring command {program} printed something that is not UTF-8"
            ))
        })?;
        Ok(Zeroizing::new(text.to_owned()))
    }
}

/// A key management service that turns a wrapped keyring entry
/// (`ID:kms:KMS:KEY:BLOB`, a [`WrappedKey`]) back into its master key.
///
/// The `byok-kms` crate implements it for AWS KMS; any other service can
/// be added the same way.
#[async_trait]
pub trait KeyUnwrapper: fmt::Debug + Send + Sync + 'static {
    /// The name entries use for this service: `aws` for `ID:kms:aws:…`.
    fn kms(&self) -> &str;

    /// The master key of entry `key_id`, wrapped as `wrapped`.
    ///
    /// An error names the service, its key and `key_id`, never the blob;
    /// one that cannot reach the service says so after the retries the
    /// implementation makes.
    async fn unwrap_key(&self, key_id: u32, wrapped: &WrappedKey)
    -> Result<MasterKey, ConfigError>;
}

#[async_trait]
impl<U: KeyUnwrapper + ?Sized> KeyUnwrapper for std::sync::Arc<U> {
    fn kms(&self) -> &str {
        (**self).kms()
    }

    async fn unwrap_key(
        &self,
        key_id: u32,
        wrapped: &WrappedKey,
    ) -> Result<MasterKey, ConfigError> {
        (**self).unwrap_key(key_id, wrapped).await
    }
}

/// The keyring of `text`, whose wrapped entries are unwrapped by the one
/// of `unwrappers` that serves their KMS: one call per wrapped entry, all
/// at once, and none for entries in the clear. The plain master keys live
/// only in the returned keyring (wiped when it is dropped).
///
/// A wrapped entry whose KMS no unwrapper serves, or that its KMS refuses
/// or cannot unwrap, fails the whole load: a keyring missing a key would
/// leave the keys under it unreadable.
pub async fn unwrap_text(
    text: &str,
    unwrappers: &[&dyn KeyUnwrapper],
) -> Result<Keyring, ConfigError> {
    let entries = crate::keyring_text::parse(text)?;
    let primary = crate::keyring_text::primary_of(&entries)?;
    let unwraps = entries.into_iter().map(|e| async move {
        match e.key {
            EntryKey::Clear(key) => Ok((e.id, key)),
            EntryKey::Wrapped(w) => {
                let unwrapper =
                    unwrappers
                        .iter()
                        .find(|u| u.kms() == w.kms())
                        .ok_or_else(|| {
                            ConfigError::new(format!(
                                "master key id {} is wrapped by the {} KMS, which this keyring \
                             source cannot reach (it knows: {})",
                                e.id,
                                w.kms(),
                                if unwrappers.is_empty() {
                                    "none".to_owned()
                                } else {
                                    unwrappers
                                        .iter()
                                        .map(|u| u.kms())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                }
                            ))
                        })?;
                Ok((e.id, unwrapper.unwrap_key(e.id, &w).await?))
            }
        }
    });
    let keys = futures_util::future::try_join_all(unwraps).await?;
    Keyring::from_keys(keys, primary)
}

/// A keyring source whose entries may be wrapped by a KMS: the text comes
/// from `source` (a file, a variable, a command), and each wrapped entry
/// is unwrapped once per load by the [`KeyUnwrapper`] of its KMS (see
/// [`unwrap_text`]).
///
/// In a manager, a reload that cannot reach the KMS fails like any reload:
/// the keyring in use is kept and a warning names the KMS, its key and the
/// entry's id.
#[derive(Debug)]
pub struct Unwrapping<S> {
    source: S,
    unwrappers: Vec<Box<dyn KeyUnwrapper>>,
}

impl<S: KeyringSource> Unwrapping<S> {
    /// Entries of `source` wrapped by `unwrapper`'s KMS are unwrapped by it.
    pub fn new(source: S, unwrapper: impl KeyUnwrapper) -> Self {
        Unwrapping {
            source,
            unwrappers: vec![Box::new(unwrapper)],
        }
    }

    /// Entries wrapped by another KMS too.
    pub fn and(mut self, unwrapper: impl KeyUnwrapper) -> Self {
        self.unwrappers.push(Box::new(unwrapper));
        self
    }
}

#[async_trait]
impl<S: KeyringSource> KeyringSource for Unwrapping<S> {
    async fn read_text(&self) -> Result<Zeroizing<String>, ConfigError> {
        self.source.read_text().await
    }

    async fn load(&self) -> Result<Keyring, ConfigError> {
        let text = self.source.read_text().await?;
        let unwrappers: Vec<&dyn KeyUnwrapper> = self
            .unwrappers
            .iter()
            .map(|u| &**u as &dyn KeyUnwrapper)
            .collect();
        unwrap_text(&text, &unwrappers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[tokio::test]
    async fn file_source_reads_anew_and_follows_links() {
        let dir = std::env::temp_dir().join(format!(
            "byok-source-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, format!("1:{KEY}")).unwrap();
        std::fs::write(&b, format!("1:{KEY}\n2:{KEY}")).unwrap();
        let link = dir.join("keyring");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&a, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&a, &link).unwrap();
        let source = KeyringFile::new(&link);
        assert_eq!(source.load().await.unwrap().primary_id(), 1);
        // Re-pointed as a secret volume is: a new link renamed over the old.
        let next = dir.join("keyring.next");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&b, &next).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&b, &next).unwrap();
        std::fs::rename(&next, &link).unwrap();
        assert_eq!(source.load().await.unwrap().primary_id(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
        let e = source.load().await.unwrap_err();
        assert!(
            e.to_string().contains("cannot read the keyring file"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn env_source() {
        let e = KeyringEnv::new("BYOK_TEST_UNSET_SOURCE_VARIABLE")
            .load()
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("BYOK_TEST_UNSET_SOURCE_VARIABLE"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn command_source_keeps_stderr_out_and_times_out() {
        let ok = KeyringCommand::new("sh", ["-c", &format!("echo '*3:{KEY}'; echo noise >&2")]);
        assert_eq!(ok.load().await.unwrap().primary_id(), 3);

        let failing = KeyringCommand::new("sh", ["-c", &format!("echo 'token-{KEY}' >&2; exit 3")]);
        let e = failing.load().await.unwrap_err();
        let text = format!("{e} {:?}", std::error::Error::source(&e));
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(!text.contains(KEY) && !text.contains("token"), "{text}");
        assert!(!format!("{failing:?}").contains(KEY));

        // A malformed keyring: the error names no key.
        let bad = KeyringCommand::new("sh", ["-c", &format!("echo '1:{KEY},1:{KEY}'")]);
        let e = bad.load().await.unwrap_err();
        assert!(!e.to_string().contains(KEY), "{e}");

        let slow = KeyringCommand::new("sleep", ["5"]).timeout(Duration::from_millis(100));
        let e = slow.load().await.unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");

        let missing = KeyringCommand::new("/nonexistent/byok-keyring-tool", Vec::<String>::new());
        assert!(missing.load().await.is_err());
    }

    /// A command that prints more than a keyring is stopped at the cap,
    /// not read into memory until it ends or times out.
    #[cfg(unix)]
    #[tokio::test]
    async fn command_output_is_capped() {
        let flood = KeyringCommand::new(
            "sh",
            ["-c", "head -c 3000000 /dev/zero | tr '\\0' a; sleep 30"],
        )
        .timeout(Duration::from_secs(20));
        let started = std::time::Instant::now();
        let e = flood.load().await.unwrap_err();
        assert!(e.to_string().contains("printed more than"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(15));

        // Exactly at the cap is still read (and then parsed).
        let full = KeyringCommand::new(
            "sh",
            [
                "-c",
                &format!(
                    "printf '1:{KEY}'; head -c {} /dev/zero | tr '\\0' ' '",
                    MAX_COMMAND_OUTPUT - 46
                ),
            ],
        );
        assert_eq!(full.load().await.unwrap().primary_id(), 1);
    }
}
