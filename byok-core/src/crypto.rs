//! Encryption of API keys at rest: [`MasterKey`], [`Keyring`] and the stored format.
//!
//! # The stored format (version 1)
//!
//! ```text
//! "BY" | version (1 byte) | key id (u32, big-endian) | nonce (12 bytes) | AES-256-GCM-SIV ciphertext | tag (16 bytes)
//! ```
//!
//! The associated data binds the ciphertext to its header (so to its format
//! version and key id), to the user id and to the provider, each
//! length-prefixed so that no two different (user, provider) pairs produce
//! the same associated data. A ciphertext copied into another user's or
//! another provider's slot therefore fails to decrypt.
//!
//! Decryption reads the key id from the header and uses that key of the
//! [`Keyring`]; it never tries keys one after another.
//!
//! # Nonces
//!
//! Each ciphertext gets a fresh 96-bit random nonce from `rand`'s
//! [`ThreadRng`](rand::rngs::ThreadRng): a ChaCha-based CSPRNG per thread,
//! seeded from the operating system and reseeded from it periodically. It is
//! a correct source for random nonces and costs a few nanoseconds where a
//! system call per nonce costs a few hundred. With 96-bit random nonces the
//! chance that two ciphertexts under one master key share a nonce stays
//! below 2^-32 for 2^32 encryptions; AES-GCM-SIV is also nonce-misuse
//! resistant, so even a repeated nonce reveals only whether the two
//! plaintexts (with their user and provider) were equal, never a key.
//! Rotate to a new master key well before 2^32 writes under one key.
//!
//! # Wiping
//!
//! Every copy of master-key material is wiped when dropped: the
//! [`MasterKey`] bytes, the AES key schedule kept per keyring entry (whose
//! first round key is the master key itself), the per-message keys, the
//! POLYVAL state, and the HMAC-SHA256 states of HKDF and of
//! [`Keyring::keyed_fingerprint`].
//!
//! # Which master key to use
//!
//! * [`MasterKey::generate`] once, then keep its [`to_base64`](MasterKey::to_base64)
//!   form in your secret manager and load it with [`MasterKey::from_base64`].
//!   This is the best choice: 256 bits of OS randomness.
//! * [`MasterKey::derive_from_secret`] when the deployment already has a long
//!   random application secret (at least 32 bytes) and no place for a second
//!   one. Changing that secret then changes the master key, so rotate with a
//!   [`Keyring`] that holds both.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::Rng as _;
use secrecy::SecretString;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{ConfigError, EncryptionError};

const MAGIC: &[u8; 2] = b"BY";
/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 2 + 1 + 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a ciphertext adds to its plaintext: header, nonce and tag.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

const MASTER_KEY_SALT: &[u8] = b"byok master key v1";
const MASTER_KEY_INFO: &[u8] = b"byok/master-key";
const FINGERPRINT_INFO: &[u8] = b"byok/key-fingerprint";

/// A 256-bit master key.
///
/// Zeroized when dropped; its `Debug` prints a redaction marker; it has no
/// `Serialize`. Construction from text is strict: a wrong length or a bad
/// encoding is an error, never a silent truncation or padding.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Box<Zeroizing<[u8; 32]>>,
}

impl MasterKey {
    /// The length of a master key in bytes.
    pub const LEN: usize = 32;

    /// A new key from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut bytes = Box::new(Zeroizing::new([0u8; 32]));
        rand::rand_core::UnwrapErr(rand::rngs::SysRng).fill_bytes(&mut bytes[..]);
        MasterKey { bytes }
    }

    /// A key from exactly 32 raw bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, ConfigError> {
        if raw.len() != Self::LEN {
            return Err(ConfigError::new(format!(
                "a master key is 32 bytes; got {} bytes",
                raw.len()
            )));
        }
        let mut bytes = Box::new(Zeroizing::new([0u8; 32]));
        bytes.copy_from_slice(raw);
        Ok(MasterKey { bytes })
    }

    /// A key from standard, padded base64 of exactly 32 bytes (44 characters).
    pub fn from_base64(text: &str) -> Result<Self, ConfigError> {
        let decoded = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|_| ConfigError::new("the master key is not valid base64"))?,
        );
        Self::from_bytes(&decoded)
    }

    /// A key from 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<Self, ConfigError> {
        let decoded = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| ConfigError::new("the master key is not valid hexadecimal"))?,
        );
        Self::from_bytes(&decoded)
    }

    /// A key from text: 64 hex digits, or 44 characters of padded base64.
    pub fn from_text(text: &str) -> Result<Self, ConfigError> {
        match text.trim().len() {
            64 => Self::from_hex(text),
            44 => Self::from_base64(text),
            n => Err(ConfigError::new(format!(
                "a master key is 64 hex digits or 44 base64 characters; got {n} characters"
            ))),
        }
    }

    /// Derives a key from an application secret with HKDF-SHA256.
    ///
    /// Refuses secrets shorter than 32 bytes: a short secret makes a key
    /// that can be guessed, however it is derived.
    pub fn derive_from_secret(app_secret: &[u8]) -> Result<Self, ConfigError> {
        if app_secret.len() < 32 {
            return Err(ConfigError::new(format!(
                "an application secret must be at least 32 bytes to derive a master key; got {} bytes",
                app_secret.len()
            )));
        }
        let hk = hkdf::Hkdf::<Sha256>::new(Some(MASTER_KEY_SALT), app_secret);
        let mut bytes = Box::new(Zeroizing::new([0u8; 32]));
        hk.expand(MASTER_KEY_INFO, &mut bytes[..])
            .map_err(|_| ConfigError::new("HKDF refused the output length"))?;
        Ok(MasterKey { bytes })
    }

    /// The key as padded base64, for storing in a secret manager.
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(BASE64.encode(&self.bytes[..]))
    }

    /// The raw bytes, for this crate's tests.
    #[cfg(test)]
    pub(crate) fn expose_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// The raw 32 bytes, for code that hands the key to its custody (a KMS
/// wrapping it, `byok-kms`): named as `secrecy` names every exposure, so
/// that each use stands out in review.
impl secrecy::ExposeSecret<[u8; 32]> for MasterKey {
    fn expose_secret(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        // Not constant time; master keys are compared only in configuration
        // code, never against attacker input.
        self.bytes[..] == other.bytes[..]
    }
}

impl Eq for MasterKey {}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

struct KeyEntry {
    cipher: Aes256GcmSiv,
    fingerprint_key: Zeroizing<[u8; 32]>,
}

/// Several master keys, each under a numeric key id; one of them is primary.
///
/// New ciphertexts are written under the primary key. A ciphertext names
/// its key id, and decryption uses exactly that key; an id that is not in
/// the ring is an [`EncryptionError::UnknownKeyId`] naming it.
///
/// The cipher of each key is built once, when the key is added, and reused.
///
/// # Text format
///
/// [`Keyring::from_text`], [`Keyring::from_env`] and [`Keyring::from_file`]
/// read entries separated by commas, semicolons or line breaks. Each entry
/// is `ID:KEY`, where `ID` is a number from 0 to 4294967295 and `KEY` is a
/// master key as 64 hex digits or 44 characters of padded base64. A `*`
/// before the id marks the primary key; without one, the highest id is
/// primary. Blank lines are ignored, and so is everything from a `#` to
/// the end of its line (a comment, which may hold commas).
///
/// An entry may instead hold its key wrapped by a key management service:
/// `ID:kms:KMS:KEY:BLOB`, such as
/// `2:kms:aws:arn:aws:kms:eu-west-1:111122223333:key/…:AQIDAHh…` (see
/// [`WrappedKey`](crate::keyring_text::WrappedKey)). Such a keyring is
/// read through a source that asks the KMS to unwrap each entry
/// ([`Unwrapping`](crate::keyring_source::Unwrapping)); `from_text`
/// refuses it.
///
/// ```
/// # use byok_core::Keyring;
/// let text = "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\
///             *2:0101010101010101010101010101010101010101010101010101010101010101";
/// let ring = Keyring::from_text(text)?;
/// assert_eq!(ring.primary_id(), 2);
/// assert_eq!(ring.key_ids().collect::<Vec<_>>(), vec![1, 2]);
/// # Ok::<(), byok_core::error::ConfigError>(())
/// ```
///
/// # Rotation
///
/// In stages, so that running instances never meet a key id they lack:
/// add the new key under a new id, not primary, and let every instance
/// load it ([`Byok::replace_keyring`](crate::Byok::replace_keyring), or a
/// [`KeyringSource`](crate::KeyringSource)); then make it
/// primary everywhere; run [`Byok::rotate`](crate::Byok::rotate) until it
/// reports nothing left under the old id; then remove the old key.
/// [`KeyringText`](crate::keyring_text::KeyringText) makes these edits to
/// a keyring text.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<u32, Arc<KeyEntry>>,
    primary: u32,
}

impl Keyring {
    /// A keyring with one key, which is primary.
    pub fn new(key_id: u32, key: MasterKey) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(key_id, Arc::new(KeyEntry::new(&key)));
        Keyring {
            keys,
            primary: key_id,
        }
    }

    /// Adds a key that is not primary. Fails when the id is taken.
    pub fn add(&mut self, key_id: u32, key: MasterKey) -> Result<&mut Self, ConfigError> {
        if self.keys.contains_key(&key_id) {
            return Err(ConfigError::new(format!(
                "master key id {key_id} is already in the keyring"
            )));
        }
        self.keys.insert(key_id, Arc::new(KeyEntry::new(&key)));
        Ok(self)
    }

    /// Makes the key `key_id` primary. Fails when it is not in the ring.
    pub fn set_primary(&mut self, key_id: u32) -> Result<&mut Self, ConfigError> {
        if !self.keys.contains_key(&key_id) {
            return Err(ConfigError::new(format!(
                "master key id {key_id} is not in the keyring"
            )));
        }
        self.primary = key_id;
        Ok(self)
    }

    /// Removes a key that is not primary; returns whether it was there.
    pub fn remove(&mut self, key_id: u32) -> Result<bool, ConfigError> {
        if key_id == self.primary {
            return Err(ConfigError::new(format!(
                "master key id {key_id} is primary; make another key primary first"
            )));
        }
        Ok(self.keys.remove(&key_id).is_some())
    }

    /// The id of the primary key.
    pub fn primary_id(&self) -> u32 {
        self.primary
    }

    /// The ids in the ring, ascending.
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Whether the ring holds a key under `key_id`.
    pub fn contains(&self, key_id: u32) -> bool {
        self.keys.contains_key(&key_id)
    }

    /// Reads a keyring in the text format described on [`Keyring`].
    ///
    /// An entry wrapped by a KMS (`ID:kms:…`) is refused here, naming the
    /// KMS and its key: such a keyring is read through
    /// [`keyring_source::unwrap_text`](crate::keyring_source::unwrap_text)
    /// or an [`Unwrapping`](crate::keyring_source::Unwrapping) source.
    pub fn from_text(text: &str) -> Result<Self, ConfigError> {
        use crate::keyring_text::EntryKey;
        let entries = crate::keyring_text::parse(text)?;
        let primary = crate::keyring_text::primary_of(&entries)?;
        let keys = entries
            .into_iter()
            .map(|e| match e.key {
                EntryKey::Clear(key) => Ok((e.id, Arc::new(KeyEntry::new(&key)))),
                EntryKey::Wrapped(w) => Err(ConfigError::new(format!(
                    "master key id {} is wrapped by the {} KMS key {}; read this keyring \
                     through a source that unwraps it",
                    e.id,
                    w.kms(),
                    w.key()
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Keyring { keys, primary })
    }

    /// A keyring of `keys`, whose primary is `primary`.
    pub(crate) fn from_keys(
        keys: impl IntoIterator<Item = (u32, MasterKey)>,
        primary: u32,
    ) -> Result<Self, ConfigError> {
        let mut map = BTreeMap::new();
        for (id, key) in keys {
            if map.insert(id, Arc::new(KeyEntry::new(&key))).is_some() {
                return Err(ConfigError::new(format!(
                    "master key id {id} appears twice in the keyring"
                )));
            }
        }
        if !map.contains_key(&primary) {
            return Err(ConfigError::new(format!(
                "master key id {primary} is not in the keyring"
            )));
        }
        Ok(Keyring { keys: map, primary })
    }

    /// Reads a keyring from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, ConfigError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|_| {
            ConfigError::new(format!(
                "environment variable {var} is not set or not UTF-8"
            ))
        })?);
        Self::from_text(&text)
    }

    /// Reads a keyring from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path.as_ref())
                .map_err(|e| ConfigError::new("cannot read the keyring file").with_source(e))?,
        );
        Self::from_text(&text)
    }

    /// Encrypts `plaintext` for the slot (user, provider) under the primary key.
    pub fn encrypt(
        &self,
        user_id: &str,
        provider: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EncryptionError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        self.seal(user_id, provider, plaintext, &Nonce::from(nonce))
    }

    fn seal(
        &self,
        user_id: &str,
        provider: &str,
        plaintext: &[u8],
        nonce: &Nonce,
    ) -> Result<Vec<u8>, EncryptionError> {
        let entry = &self.keys[&self.primary];
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.primary.to_be_bytes());
        out.extend_from_slice(nonce);
        let aad = associated_data(&out[..HEADER_LEN], user_id, provider);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = entry
            .cipher
            .encrypt_in_place_detached(nonce, &aad, &mut out[start..])
            .map_err(|_| {
                out.zeroize();
                EncryptionError::EncryptFailed
            })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts a ciphertext of the slot (user, provider).
    ///
    /// The plaintext is returned in memory that is zeroized when dropped.
    pub fn decrypt(
        &self,
        user_id: &str,
        provider: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EncryptionError> {
        let key_id = key_id_of(ciphertext)?;
        if ciphertext.len() < OVERHEAD {
            return Err(EncryptionError::Malformed {
                reason: "shorter than header, nonce and tag",
            });
        }
        let entry = self
            .keys
            .get(&key_id)
            .ok_or(EncryptionError::UnknownKeyId { key_id })?;
        let nonce = <[u8; NONCE_LEN]>::try_from(&ciphertext[HEADER_LEN..HEADER_LEN + NONCE_LEN])
            .map(Nonce::from)
            .map_err(|_| EncryptionError::Malformed {
                reason: "bad nonce",
            })?;
        let body_end = ciphertext.len() - TAG_LEN;
        let tag = <[u8; TAG_LEN]>::try_from(&ciphertext[body_end..])
            .map(Tag::from)
            .map_err(|_| EncryptionError::Malformed { reason: "bad tag" })?;
        let aad = associated_data(&ciphertext[..HEADER_LEN], user_id, provider);
        // Exactly the plaintext's length, so that turning it into a string
        // later never reallocates and leaves a copy behind.
        let mut buf = Zeroizing::new(ciphertext[HEADER_LEN + NONCE_LEN..body_end].to_vec());
        entry
            .cipher
            .decrypt_in_place_detached(&nonce, &aad, &mut buf[..], &tag)
            .map_err(|_| EncryptionError::AuthenticationFailed { key_id })?;
        Ok(buf)
    }

    /// Decrypts a ciphertext holding UTF-8 text into a [`SecretString`].
    pub fn decrypt_string(
        &self,
        user_id: &str,
        provider: &str,
        ciphertext: &[u8],
    ) -> Result<SecretString, EncryptionError> {
        let mut plain = self.decrypt(user_id, provider, ciphertext)?;
        let bytes = std::mem::take(&mut *plain);
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SecretString::from(text)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(EncryptionError::Malformed {
                    reason: "the plaintext is not UTF-8",
                })
            }
        }
    }

    /// A keyed fingerprint of an API key: the first 16 hex digits of
    /// HMAC-SHA256 under a key derived from the primary master key.
    ///
    /// Unlike [`unkeyed_fingerprint`](crate::display::unkeyed_fingerprint), it cannot
    /// be matched across deployments (or against a list of leaked keys)
    /// without the master key. It changes when the primary key changes.
    pub fn keyed_fingerprint(&self, api_key: &str) -> String {
        let entry = &self.keys[&self.primary];
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&entry.fingerprint_key[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(api_key.as_bytes());
        let digest = mac.finalize().into_bytes();
        hex::encode(&digest[..8])
    }
}

impl KeyEntry {
    fn new(key: &MasterKey) -> Self {
        let cipher = Aes256GcmSiv::new_from_slice(&key.bytes[..])
            .unwrap_or_else(|_| unreachable!("a master key is 32 bytes"));
        let hk = hkdf::Hkdf::<Sha256>::new(None, &key.bytes[..]);
        let mut fingerprint_key = Zeroizing::new([0u8; 32]);
        hk.expand(FINGERPRINT_INFO, &mut fingerprint_key[..])
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output length"));
        KeyEntry {
            cipher,
            fingerprint_key,
        }
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("primary", &self.primary)
            .finish()
    }
}

/// The key id named in a ciphertext's header.
pub fn key_id_of(ciphertext: &[u8]) -> Result<u32, EncryptionError> {
    if ciphertext.len() < HEADER_LEN {
        return Err(EncryptionError::Malformed {
            reason: "shorter than the header",
        });
    }
    if &ciphertext[..2] != MAGIC {
        return Err(EncryptionError::Malformed {
            reason: "not a byok ciphertext (bad magic bytes)",
        });
    }
    if ciphertext[2] != FORMAT_VERSION {
        return Err(EncryptionError::UnsupportedVersion {
            version: ciphertext[2],
        });
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&ciphertext[3..HEADER_LEN]);
    Ok(u32::from_be_bytes(id))
}

fn associated_data(header: &[u8], user_id: &str, provider: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 8 + user_id.len() + provider.len());
    aad.extend_from_slice(header);
    for part in [user_id, provider] {
        // Lengths are bounded by validation (255 and 64 bytes), far below u32.
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(&[b; 32]).unwrap()
    }

    #[test]
    fn master_key_text_is_strict() {
        let k = MasterKey::generate();
        let b64 = k.to_base64();
        assert_eq!(MasterKey::from_base64(b64.expose_secret()).unwrap(), k);
        assert_eq!(MasterKey::from_text(b64.expose_secret()).unwrap(), k);
        let hex64 = hex::encode(k.expose_bytes());
        assert_eq!(MasterKey::from_hex(&hex64).unwrap(), k);
        assert_eq!(MasterKey::from_text(&hex64).unwrap(), k);

        assert!(MasterKey::from_bytes(&[0; 31]).is_err());
        assert!(MasterKey::from_bytes(&[0; 33]).is_err());
        // 31 bytes of base64, and unpadded base64 of 32 bytes.
        assert!(MasterKey::from_base64(&BASE64.encode([0u8; 31])).is_err());
        assert!(MasterKey::from_base64(b64.expose_secret().trim_end_matches('=')).is_err());
        assert!(MasterKey::from_hex(&hex64[..62]).is_err());
        assert!(MasterKey::from_hex(&format!("{}zz", &hex64[..62])).is_err());
        assert!(MasterKey::from_text("short").is_err());
    }

    #[test]
    fn derivation_needs_a_long_secret_and_is_deterministic() {
        assert!(MasterKey::derive_from_secret(&[7; 31]).is_err());
        let a = MasterKey::derive_from_secret(&[7; 32]).unwrap();
        assert_eq!(a, MasterKey::derive_from_secret(&[7; 32]).unwrap());
        assert_ne!(a, MasterKey::derive_from_secret(&[8; 32]).unwrap());
    }

    #[test]
    fn debug_is_redacted() {
        let k = key(0xAB);
        assert_eq!(format!("{k:?}"), "MasterKey([REDACTED])");
        let ring = Keyring::new(3, k);
        assert_eq!(format!("{ring:?}"), "Keyring { key_ids: [3], primary: 3 }");
    }

    #[test]
    fn round_trip_and_binding() {
        let ring = Keyring::new(1, key(1));
        let ct = ring.encrypt("alice", "openai", b"sk-test").unwrap();
        assert_eq!(ct.len(), OVERHEAD + 7);
        assert_eq!(&*ring.decrypt("alice", "openai", &ct).unwrap(), b"sk-test");
        for (u, p) in [
            ("bob", "openai"),
            ("alice", "anthropic"),
            ("alic", "eopenai"),
        ] {
            assert_eq!(
                ring.decrypt(u, p, &ct).unwrap_err(),
                EncryptionError::AuthenticationFailed { key_id: 1 }
            );
        }
        // Fresh nonce each time.
        assert_ne!(ct, ring.encrypt("alice", "openai", b"sk-test").unwrap());
    }

    #[test]
    fn errors_say_what_happened() {
        let ring = Keyring::new(1, key(1));
        let mut ct = ring.encrypt("u", "p", b"secret").unwrap();
        let other = Keyring::new(9, key(2));
        assert_eq!(
            other.decrypt("u", "p", &ct).unwrap_err(),
            EncryptionError::UnknownKeyId { key_id: 1 }
        );
        let wrong = Keyring::new(1, key(2));
        assert_eq!(
            wrong.decrypt("u", "p", &ct).unwrap_err(),
            EncryptionError::AuthenticationFailed { key_id: 1 }
        );
        assert!(matches!(
            ring.decrypt("u", "p", &ct[..OVERHEAD - 1]).unwrap_err(),
            EncryptionError::Malformed { .. }
        ));
        assert!(matches!(
            ring.decrypt("u", "p", b"").unwrap_err(),
            EncryptionError::Malformed { .. }
        ));
        assert!(matches!(
            ring.decrypt(
                "u",
                "p",
                b"sk-plaintext-key-stored-by-mistake-xxxxxxxxxxxxxx"
            )
            .unwrap_err(),
            EncryptionError::Malformed { .. }
        ));
        let last = ct.len() - 1;
        ct[last] ^= 1;
        assert_eq!(
            ring.decrypt("u", "p", &ct).unwrap_err(),
            EncryptionError::AuthenticationFailed { key_id: 1 }
        );
        ct[2] = 2;
        assert_eq!(
            ring.decrypt("u", "p", &ct).unwrap_err(),
            EncryptionError::UnsupportedVersion { version: 2 }
        );
    }

    #[test]
    fn keyring_reads_old_and_writes_new() {
        let mut ring = Keyring::new(1, key(1));
        let old = ring.encrypt("u", "p", b"k").unwrap();
        ring.add(2, key(2)).unwrap().set_primary(2).unwrap();
        let new = ring.encrypt("u", "p", b"k").unwrap();
        assert_eq!(key_id_of(&old).unwrap(), 1);
        assert_eq!(key_id_of(&new).unwrap(), 2);
        assert_eq!(&*ring.decrypt("u", "p", &old).unwrap(), b"k");
        assert!(ring.remove(2).is_err(), "primary cannot be removed");
        assert!(ring.remove(1).unwrap());
        assert_eq!(
            ring.decrypt("u", "p", &old).unwrap_err(),
            EncryptionError::UnknownKeyId { key_id: 1 }
        );
        assert!(
            ring.decrypt("u", "p", &old)
                .unwrap_err()
                .to_string()
                .contains("key id 1")
        );
        assert!(ring.add(2, key(3)).is_err());
    }

    #[test]
    fn keyring_text_format() {
        let a = BASE64.encode([1u8; 32]);
        let b = hex::encode([2u8; 32]);
        let ring = Keyring::from_text(&format!("# keys\n5:{a}\n\n7:{b}\n")).unwrap();
        assert_eq!(ring.primary_id(), 7);
        let ring = Keyring::from_text(&format!("*5:{a}, 7:{b}")).unwrap();
        assert_eq!(ring.primary_id(), 5);
        let ring = Keyring::from_text(&format!(
            "# old key, kept; read-only\n5:{a} # rotated out, see notes\n*7:{b};\n"
        ))
        .unwrap();
        assert_eq!(ring.primary_id(), 7);
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [5, 7]);
        for bad in [
            String::new(),
            format!("5:{a};5:{b}"),
            format!("*5:{a};*7:{b}"),
            format!("x:{a}"),
            format!("5{a}"),
            "5:tooshort".to_string(),
        ] {
            let e = Keyring::from_text(&bad).unwrap_err();
            assert!(!e.to_string().contains(&a), "{e}");
        }
    }

    #[test]
    fn keyring_from_file_and_env() {
        let path = std::env::temp_dir().join(format!("byok-keyring-{}.txt", std::process::id()));
        let a = BASE64.encode([3u8; 32]);
        std::fs::write(&path, format!("# production keyring\n*4:{a}\n")).unwrap();
        let ring = Keyring::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(ring.primary_id(), 4);
        let e = Keyring::from_file(&path).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the keyring file"),
            "{e}"
        );
        let e = Keyring::from_env("BYOK_TEST_UNSET_KEYRING_VARIABLE").unwrap_err();
        assert!(
            e.to_string().contains("BYOK_TEST_UNSET_KEYRING_VARIABLE"),
            "{e}"
        );
    }

    /// Each keyring entry keeps an AES key schedule whose first round key is
    /// the master key, and HKDF and the keyed fingerprint run HMAC-SHA256
    /// states keyed by master-key material. Each of these types must wipe
    /// itself when dropped; this does not compile when the `zeroize`
    /// features of `aes`, `sha2` or `hmac` are off.
    #[test]
    fn master_key_material_is_wiped_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<aes::Aes256>();
        wiped_on_drop::<Sha256>();
        // The state an HMAC (and so HKDF) keeps for its inner and outer keys.
        wiped_on_drop::<<Sha256 as hmac::EagerHash>::Core>();
        wiped_on_drop::<Zeroizing<[u8; 32]>>();
    }

    #[test]
    fn nonces_are_fresh_per_ciphertext() {
        let ring = Keyring::new(1, key(1));
        let nonces: std::collections::HashSet<Vec<u8>> = (0..1000)
            .map(|_| {
                let ct = ring.encrypt("u", "p", b"k").unwrap();
                ct[HEADER_LEN..HEADER_LEN + NONCE_LEN].to_vec()
            })
            .collect();
        assert_eq!(nonces.len(), 1000);
    }

    #[test]
    fn keyed_fingerprint_depends_on_master_key() {
        let a = Keyring::new(1, key(1));
        let b = Keyring::new(1, key(2));
        let fa = a.keyed_fingerprint("sk-abc");
        assert_eq!(fa.len(), 16);
        assert_eq!(fa, a.keyed_fingerprint("sk-abc"));
        assert_ne!(fa, b.keyed_fingerprint("sk-abc"));
        assert_ne!(fa, a.keyed_fingerprint("sk-abd"));
    }

    /// The stored format must never change by accident: this ciphertext was
    /// written by version 1 and must read, and be written, the same forever.
    #[test]
    fn golden_vectors() {
        let text = include_str!("../testdata/golden-v1.txt");
        let mut seen = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let f: Vec<&str> = line.split(' ').collect();
            let [
                key_id,
                key_hex,
                nonce,
                user,
                provider,
                plaintext,
                ciphertext,
            ] = f[..]
            else {
                panic!("bad golden line");
            };
            let ring = Keyring::new(
                key_id.parse().unwrap(),
                MasterKey::from_hex(key_hex).unwrap(),
            );
            let nonce =
                Nonce::from(<[u8; NONCE_LEN]>::try_from(&hex::decode(nonce).unwrap()[..]).unwrap());
            let user = String::from_utf8(hex::decode(user).unwrap()).unwrap();
            let provider = String::from_utf8(hex::decode(provider).unwrap()).unwrap();
            let plaintext = hex::decode(plaintext).unwrap();
            let expected = hex::decode(ciphertext).unwrap();
            let sealed = ring.seal(&user, &provider, &plaintext, &nonce).unwrap();
            assert_eq!(
                hex::encode(&sealed),
                ciphertext,
                "format changed for {user:?}"
            );
            assert_eq!(
                *ring.decrypt(&user, &provider, &expected).unwrap(),
                plaintext
            );
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    fn rfc8452_vectors_pass_through_the_same_primitive() {
        let text = include_str!("../testdata/rfc8452-aes256gcmsiv.txt");
        let h = |s: &str| {
            if s == "-" {
                Vec::new()
            } else {
                hex::decode(s).unwrap()
            }
        };
        let mut seen = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let f: Vec<Vec<u8>> = line.split(' ').map(h).collect();
            let cipher = Aes256GcmSiv::new_from_slice(&f[0]).unwrap();
            let nonce = Nonce::from(<[u8; NONCE_LEN]>::try_from(&f[1][..]).unwrap());
            let mut buf = f[3].clone();
            let tag = cipher
                .encrypt_in_place_detached(&nonce, &f[2], &mut buf[..])
                .unwrap();
            buf.extend_from_slice(&tag);
            assert_eq!(buf, f[4]);
            let n = buf.len() - TAG_LEN;
            let tag = Tag::from(<[u8; TAG_LEN]>::try_from(&buf[n..]).unwrap());
            let mut body = buf[..n].to_vec();
            cipher
                .decrypt_in_place_detached(&nonce, &f[2], &mut body[..], &tag)
                .unwrap();
            assert_eq!(body, f[3]);
            seen += 1;
        }
        assert_eq!(seen, 24);
    }
}
