//! Keyring entries wrapped by a key management service: the services this
//! build can reach, and the loads of a keyring that holds such entries.

#[cfg(not(feature = "kms-aws"))]
use byok::WrappedKey;
use byok::keyring_text::KeyringText;
use byok::{ConfigError, KeyUnwrapper, Keyring};
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult, Exit};

/// The services of `--kms KMS:KEY` that this build knows.
const KNOWN: &str = "aws";

/// Said when a wrapped keyring meets a build without KMS support.
#[cfg(not(feature = "kms-aws"))]
const NO_SUPPORT: &str = "this byok was built without AWS KMS support: install byok-cli with \
                          `--features kms-aws`";

/// AWS KMS, configured the SDK's usual way (`AWS_REGION`, `AWS_PROFILE`,
/// credentials, `AWS_ENDPOINT_URL_KMS`, …).
#[cfg(feature = "kms-aws")]
pub(crate) type Aws = byok_kms::AwsKms;

/// No AWS KMS in this build: [`aws`] refuses, so there is never one.
#[cfg(not(feature = "kms-aws"))]
#[derive(Debug)]
pub(crate) enum Aws {}

#[cfg(not(feature = "kms-aws"))]
impl Aws {
    pub(crate) async fn generate(&self, _: u32, _: &str) -> Result<WrappedKey, ConfigError> {
        match *self {}
    }

    pub(crate) async fn wrap(
        &self,
        _: u32,
        _: &byok::MasterKey,
        _: &str,
    ) -> Result<WrappedKey, ConfigError> {
        match *self {}
    }

    pub(crate) async fn rewrap(
        &self,
        _: u32,
        _: &WrappedKey,
        _: &str,
    ) -> Result<WrappedKey, ConfigError> {
        match *self {}
    }
}

#[cfg(not(feature = "kms-aws"))]
#[byok::async_trait]
impl KeyUnwrapper for Aws {
    fn kms(&self) -> &str {
        match *self {}
    }

    async fn unwrap_key(&self, _: u32, _: &WrappedKey) -> Result<byok::MasterKey, ConfigError> {
        match *self {}
    }
}

/// The AWS KMS of `--kms aws:KEY`, and `KEY`.
pub(crate) async fn aws(spec: &str) -> CliResult<(Aws, String)> {
    let (kms, key) = byok_kms::parse_spec(spec).map_err(|e| CliError::usage(e.message()))?;
    if kms != "aws" {
        return Err(CliError::usage(format!(
            "unknown KMS {kms:?} in --kms {spec}; this byok knows: {KNOWN}"
        )));
    }
    #[cfg(feature = "kms-aws")]
    return Ok((byok_kms::AwsKms::from_env().await, key.to_owned()));
    #[cfg(not(feature = "kms-aws"))]
    {
        let _ = key;
        Err(CliError::usage(format!("--kms {spec}: {NO_SUPPORT}")))
    }
}

/// A KMS error as the command reports it: the KMS could not be reached or
/// refused; a configuration problem either way.
pub(crate) fn fail(e: &ConfigError) -> CliError {
    CliError::new(Exit::Config, e.message().to_owned())
}

/// The keyring of `text`, whose wrapped entries (if any) are unwrapped by
/// their KMS: one call per wrapped entry.
///
/// Called from the commands' synchronous keyring loads, so the calls run
/// on a thread of their own with a runtime of its own: that works on any
/// runtime, or none.
pub(crate) fn load(text: &str) -> Result<Keyring, ConfigError> {
    if !KeyringText::new(text)?.has_wrapped()? {
        return Keyring::from_text(text);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    ConfigError::new("cannot start a runtime for the KMS calls").with_source(e)
                })?;
            runtime.block_on(unwrap(text))
        })
        .join()
        .unwrap_or_else(|_| Err(ConfigError::new("unwrapping the keyring stopped")))
    })
}

#[cfg(feature = "kms-aws")]
async fn unwrap(text: &str) -> Result<Keyring, ConfigError> {
    let aws = byok_kms::AwsKms::from_env().await;
    let unwrappers: [&dyn KeyUnwrapper; 1] = [&aws];
    byok::unwrap_text(text, &unwrappers).await
}

#[cfg(not(feature = "kms-aws"))]
async fn unwrap(text: &str) -> Result<Keyring, ConfigError> {
    let none: [&dyn KeyUnwrapper; 0] = [];
    byok::unwrap_text(text, &none)
        .await
        .map_err(|e| ConfigError::new(format!("{}; {NO_SUPPORT}", e.message())))
}

/// The keyring in the file at `path`, unwrapped as [`load`] does.
pub(crate) fn from_file(path: &std::path::Path) -> Result<Keyring, ConfigError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("cannot read the keyring file").with_source(e))?,
    );
    load(&text)
}

/// The keyring in the environment variable `var`, unwrapped as [`load`]
/// does.
pub(crate) fn from_env(var: &str) -> Result<Keyring, ConfigError> {
    let text = Zeroizing::new(std::env::var(var).map_err(|_| {
        ConfigError::new(format!(
            "environment variable {var} is not set or not UTF-8"
        ))
    })?);
    load(&text)
}
