//! Master keys of byok held in a key management service.
//!
//! A keyring entry may hold its master key wrapped by a KMS instead of in
//! the clear: `ID:kms:aws:KEY:BLOB`, where `KEY` is the AWS KMS key that
//! wrapped it (its ARN, as written by [`AwsKms::generate`]) and `BLOB` the
//! KMS ciphertext in base64. The keyring text may then sit in a file, an
//! environment variable or a command's output like any other: whoever
//! reads it still needs the right to call `kms:Decrypt` on that key.
//!
//! [`AwsKms`] (feature `aws`) unwraps such entries as a
//! [`KeyUnwrapper`](byok_core::KeyUnwrapper): give it to an
//! [`Unwrapping`](byok_core::Unwrapping) source, and every load or reload
//! of the keyring makes one `Decrypt` call per wrapped entry, never one
//! per stored key. A reload that cannot reach the KMS keeps the keyring in
//! use (with a warning); at start, the manager's first load fails with an
//! error naming the KMS key and the master key id, never the blob.
//!
//! See [`AwsKms`] for a manager over a wrapped keyring.
//!
//! Each wrapped key is bound to its master key id: the KMS ciphertext
//! carries the encryption context `byok-master-key-id = ID`, so a blob
//! copied under another id is refused by the KMS.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "aws")]
mod aws;

#[cfg(feature = "aws")]
pub use aws::{ATTEMPT_TIMEOUT, ATTEMPTS, AwsKms, CALL_TIMEOUT};
/// The AWS SDK's configuration crate, for [`AwsKms::loader`].
#[cfg(feature = "aws")]
pub use aws_config;
/// The AWS SDK's KMS crate, for [`AwsKms::client`] and its types.
#[cfg(feature = "aws")]
pub use aws_sdk_kms;

/// The name of the encryption context entry that binds a wrapped key to
/// its master key id.
pub const CONTEXT_KEY: &str = "byok-master-key-id";

/// The KMS named by `spec`, written `KMS:KEY` (such as
/// `aws:alias/byok`): its name and its key.
pub fn parse_spec(spec: &str) -> Result<(&str, &str), byok_core::ConfigError> {
    match spec.split_once(':') {
        Some((kms, key)) if !kms.is_empty() && !key.trim().is_empty() => Ok((kms, key.trim())),
        _ => Err(byok_core::ConfigError::new(format!(
            "a KMS key is written KMS:KEY, such as aws:alias/byok; got {spec:?}"
        ))),
    }
}
