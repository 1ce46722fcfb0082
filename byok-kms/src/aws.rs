//! AWS KMS: unwrap (`Decrypt`), new wrapped keys
//! (`GenerateDataKeyWithoutPlaintext`) and rewraps (`ReEncrypt`).

use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use byok_core::secrecy::ExposeSecret as _;
use byok_core::{ConfigError, KeyUnwrapper, MasterKey, WrappedKey};
use zeroize::Zeroizing;

use crate::CONTEXT_KEY;

/// The name of AWS KMS in keyring entries: `ID:kms:aws:…`.
const KMS: &str = "aws";

/// Tries of one KMS call before it fails: the first and two retries.
pub const ATTEMPTS: u32 = 3;

/// How long one try may take, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one KMS call may take, its retries included; well within the
/// manager's `RELOAD_TIMEOUT`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// AWS KMS, which wraps and unwraps byok master keys.
///
/// Built from the SDK's usual configuration ([`from_env`](Self::from_env):
/// environment variables, the shared config and credentials files, an
/// instance or task role; `AWS_ENDPOINT_URL_KMS` or `AWS_ENDPOINT_URL`
/// point it at another endpoint), or from an [`SdkConfig`] of your own
/// ([`new`](Self::new), with [`loader`](Self::loader) for this crate's
/// HTTPS client, retries and timeouts).
///
/// Each call is tried [`ATTEMPTS`] times at most, each try within
/// [`ATTEMPT_TIMEOUT`], all within [`CALL_TIMEOUT`]; then the error says
/// that the KMS could not be reached, naming its key and the master key id.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use byok_core::{Byok, KeyringFile, Unwrapping};
/// use byok_kms::AwsKms;
///
/// let kms = AwsKms::from_env().await;
/// let source = Unwrapping::new(KeyringFile::new("/run/secrets/byok-keyring"), kms);
/// let storage = Arc::new(byok_memory::MemoryStorage::new());
/// let byok = Byok::builder_with_source(storage, source).await?.build()?;
/// # let _ = byok;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // It names a keyring source in reload warnings: the region is
        // enough, and the SDK's configuration is long.
        f.debug_struct("AwsKms")
            .field("region", &self.client.config().region())
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// The SDK's configuration loader with this crate's HTTPS client
    /// (rustls with the `ring` provider), retries and timeouts; set a
    /// region, credentials or an endpoint on it, then
    /// [`new`](Self::new) with what it loads.
    pub fn loader() -> ConfigLoader {
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(https)
            .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(ATTEMPT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            )
    }

    /// AWS KMS as the SDK's usual configuration says.
    pub async fn from_env() -> Self {
        Self::new(&Self::loader().load().await)
    }

    /// AWS KMS with `config` (see [`loader`](Self::loader)).
    pub fn new(config: &SdkConfig) -> Self {
        AwsKms {
            client: aws_sdk_kms::Client::new(config),
        }
    }

    /// AWS KMS through a client of your own.
    pub fn from_client(client: aws_sdk_kms::Client) -> Self {
        AwsKms { client }
    }

    /// The SDK client, for calls byok does not make (creating keys, say).
    pub fn client(&self) -> &aws_sdk_kms::Client {
        &self.client
    }

    /// A new master key for id `key_id`, wrapped under the KMS key `key`
    /// (a key id, an alias such as `alias/byok`, or an ARN). The key is
    /// made by KMS (`GenerateDataKeyWithoutPlaintext`, AES_256) and never
    /// leaves it in the clear: this process sees only the wrapped blob. The
    /// entry names the key by the ARN KMS answers with, so that a later
    /// change of an alias cannot redirect it.
    pub async fn generate(&self, key_id: u32, key: &str) -> Result<WrappedKey, ConfigError> {
        let out = self
            .client
            .generate_data_key_without_plaintext()
            .key_id(key)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, key_id.to_string())
            .send()
            .await
            .map_err(|e| failure("make a new master key", key_id, key, &e))?;
        wrapped_from(key_id, key, out.ciphertext_blob, out.key_id)
    }

    /// `key`, a master key in the clear (of entry `key_id`), wrapped under
    /// the KMS key `to` (`Encrypt`): to move a keyring in the clear into
    /// KMS custody without changing a master key, so without touching a
    /// stored key.
    pub async fn wrap(
        &self,
        key_id: u32,
        key: &MasterKey,
        to: &str,
    ) -> Result<WrappedKey, ConfigError> {
        let out = self
            .client
            .encrypt()
            .plaintext(Blob::new(key.expose_secret().as_slice()))
            .key_id(to)
            .encryption_context(CONTEXT_KEY, key_id.to_string())
            .send()
            .await
            .map_err(|e| failure("wrap", key_id, to, &e))?;
        wrapped_from(key_id, to, out.ciphertext_blob, out.key_id)
    }

    /// The master key of `wrapped` (entry `key_id`), wrapped anew under the
    /// KMS key `to` (`ReEncrypt`: the key is unwrapped and wrapped again
    /// inside KMS, never in this process). No stored key changes: the
    /// master key is the same.
    pub async fn rewrap(
        &self,
        key_id: u32,
        wrapped: &WrappedKey,
        to: &str,
    ) -> Result<WrappedKey, ConfigError> {
        check_kms(key_id, wrapped)?;
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.blob()))
            .source_key_id(wrapped.key())
            .source_encryption_context(CONTEXT_KEY, key_id.to_string())
            .destination_key_id(to)
            .destination_encryption_context(CONTEXT_KEY, key_id.to_string())
            .send()
            .await
            .map_err(|e| {
                failure(
                    &format!("rewrap it (from KMS key {}) under", wrapped.key()),
                    key_id,
                    to,
                    &e,
                )
            })?;
        wrapped_from(key_id, to, out.ciphertext_blob, out.key_id)
    }
}

#[async_trait]
impl KeyUnwrapper for AwsKms {
    fn kms(&self) -> &str {
        KMS
    }

    async fn unwrap_key(
        &self,
        key_id: u32,
        wrapped: &WrappedKey,
    ) -> Result<MasterKey, ConfigError> {
        check_kms(key_id, wrapped)?;
        // The key id is given, so KMS refuses a blob of another key; the
        // context, so it refuses a blob of another master key id.
        let mut out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped.blob()))
            .key_id(wrapped.key())
            .encryption_context(CONTEXT_KEY, key_id.to_string())
            .send()
            .await
            .map_err(|e| failure("unwrap", key_id, wrapped.key(), &e))?;
        let plain = Zeroizing::new(
            out.plaintext
                .take()
                .map(Blob::into_inner)
                .unwrap_or_default(),
        );
        MasterKey::from_bytes(&plain).map_err(|e| {
            ConfigError::new(format!(
                "AWS KMS unwrapped master key id {key_id} (KMS key {}) to something that is not \
                 a master key: {}",
                wrapped.key(),
                e.message()
            ))
        })
    }
}

/// The wrapped key of a KMS answer, named by the key KMS says it used
/// (an ARN) or else by `key`, the one asked for.
fn wrapped_from(
    key_id: u32,
    key: &str,
    blob: Option<Blob>,
    answered_key: Option<String>,
) -> Result<WrappedKey, ConfigError> {
    let blob = blob.ok_or_else(|| {
        ConfigError::new(format!(
            "AWS KMS answered without a wrapped key for master key id {key_id} (KMS key {key})"
        ))
    })?;
    WrappedKey::new(
        KMS,
        answered_key.as_deref().unwrap_or(key),
        blob.into_inner(),
    )
}

/// Refuses an entry wrapped by another KMS.
fn check_kms(key_id: u32, wrapped: &WrappedKey) -> Result<(), ConfigError> {
    if wrapped.kms() == KMS {
        Ok(())
    } else {
        Err(ConfigError::new(format!(
            "master key id {key_id} is wrapped by the {} KMS, not by AWS KMS",
            wrapped.kms()
        )))
    }
}

/// The error of a KMS call that failed: unreachable (after the retries),
/// or refused (with KMS's code and message). Never the blob: requests are
/// not part of SDK errors.
fn failure<E, R>(what: &str, key_id: u32, key: &str, e: &SdkError<E, R>) -> ConfigError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ConfigError::new(format!(
            "cannot reach AWS KMS to {what} master key id {key_id} (KMS key {key}) after \
             {ATTEMPTS} attempts: {}",
            root_cause(e)
        )),
        SdkError::ServiceError(service) => {
            let err = service.err();
            let message = err.message().map(|m| format!(": {m}")).unwrap_or_default();
            ConfigError::new(format!(
                "AWS KMS refused to {what} master key id {key_id} (KMS key {key}): {}{message}",
                err.code().unwrap_or("unknown error"),
            ))
        }
        _ => ConfigError::new(format!(
            "AWS KMS failed to {what} master key id {key_id} (KMS key {key}): {}",
            DisplayErrorContext(e)
        )),
    }
}

/// The innermost cause of `e` ("Connection refused (os error 111)", a
/// timeout), which says more than the SDK's layers around it.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
