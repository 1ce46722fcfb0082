//! Properties of the ciphertext decoder: whatever is done to a ciphertext
//! (a bit flipped, bytes cut off or added, the key id or format version
//! changed, another user's or provider's slot), decrypting it is an error,
//! never a panic, and never gives the plaintext back, not even inside the
//! error.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use byok_core::crypto::{FORMAT_VERSION, OVERHEAD, key_id_of};
use byok_core::{EncryptionError, Keyring, MasterKey};
use proptest::prelude::*;

/// Cases per property: enough to reach every byte position of short
/// ciphertexts many times, few enough to run in seconds in CI.
const CASES: u32 = 256;

/// Where the key id sits in the header: after "BY" and the version byte.
const KEY_ID_AT: usize = 3;

fn ring() -> Keyring {
    let mut ring = Keyring::new(7, MasterKey::from_bytes(&[0x11; 32]).unwrap());
    ring.add(8, MasterKey::from_bytes(&[0x22; 32]).unwrap())
        .unwrap();
    ring.set_primary(7).unwrap();
    ring
}

/// A plaintext that can be recognised in any output.
fn plaintext() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{0,48}".prop_map(|tail| format!("sk-canary-{tail}"))
}

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9:{}%_ ]{1,12}"
}

/// Decrypting must fail; neither the error nor its `Debug` holds the
/// plaintext.
fn assert_rejected(ring: &Keyring, user: &str, provider: &str, ciphertext: &[u8], plain: &str) {
    match ring.decrypt(user, provider, ciphertext) {
        Ok(got) => panic!(
            "a tampered ciphertext decrypted ({} bytes; plaintext matched: {})",
            got.len(),
            &got[..] == plain.as_bytes()
        ),
        Err(e) => {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("sk-canary"), "{shown}");
        }
    }
    assert!(
        ring.decrypt_string(user, provider, ciphertext).is_err(),
        "decrypt_string accepted a tampered ciphertext"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn untouched_ciphertexts_decrypt(plain in plaintext(), user in id(), provider in id()) {
        let ring = ring();
        let ct = ring.encrypt(&user, &provider, plain.as_bytes()).unwrap();
        prop_assert_eq!(ct.len(), OVERHEAD + plain.len());
        let got = ring.decrypt(&user, &provider, &ct).unwrap();
        prop_assert_eq!(&got[..], plain.as_bytes());
    }

    #[test]
    fn any_flipped_bit_is_rejected(plain in plaintext(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let ring = ring();
        let mut ct = ring.encrypt("alice", "openai", plain.as_bytes()).unwrap();
        let at = at.index(ct.len());
        ct[at] ^= 1 << bit;
        assert_rejected(&ring, "alice", "openai", &ct, &plain);
    }

    #[test]
    fn any_changed_bytes_are_rejected(
        plain in plaintext(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
    ) {
        let ring = ring();
        let mut ct = ring.encrypt("alice", "openai", plain.as_bytes()).unwrap();
        let original = ct.clone();
        for (at, mask) in edits {
            let at = at.index(ct.len());
            ct[at] ^= mask;
        }
        // Two edits of one byte can cancel out.
        prop_assume!(ct != original);
        assert_rejected(&ring, "alice", "openai", &ct, &plain);
    }

    #[test]
    fn any_truncation_is_rejected(plain in plaintext(), keep in any::<prop::sample::Index>()) {
        let ring = ring();
        let ct = ring.encrypt("alice", "openai", plain.as_bytes()).unwrap();
        let keep = keep.index(ct.len());
        assert_rejected(&ring, "alice", "openai", &ct[..keep], &plain);
        prop_assert!(key_id_of(&ct[..keep]).is_err() || keep >= KEY_ID_AT + 4);
    }

    #[test]
    fn any_extension_is_rejected(
        plain in plaintext(),
        extra in prop::collection::vec(any::<u8>(), 1..64),
        front in any::<bool>(),
    ) {
        let ring = ring();
        let ct = ring.encrypt("alice", "openai", plain.as_bytes()).unwrap();
        let longer = if front {
            [extra.as_slice(), ct.as_slice()].concat()
        } else {
            [ct.as_slice(), extra.as_slice()].concat()
        };
        assert_rejected(&ring, "alice", "openai", &longer, &plain);
    }

    #[test]
    fn another_key_id_is_rejected(plain in plaintext(), key_id in any::<u32>()) {
        let ring = ring();
        let mut ct = ring.encrypt("alice", "openai", plain.as_bytes()).unwrap();
        prop_assume!(key_id != 7);
        ct[KEY_ID_AT..KEY_ID_AT + 4].copy_from_slice(&key_id.to_be_bytes());
        prop_assert_eq!(key_id_of(&ct).unwrap(), key_id);
        assert_rejected(&ring, "alice", "openai", &ct, &plain);
        let err = ring.decrypt("alice", "openai", &ct).unwrap_err();
        if key_id == 8 {
            // A key the ring holds, but not the one that sealed it.
            prop_assert_eq!(err, EncryptionError::AuthenticationFailed { key_id: 8 });
        } else {
            prop_assert_eq!(err, EncryptionError::UnknownKeyId { key_id });
        }
    }

    #[test]
    fn another_format_version_is_rejected(plain in plaintext(), version in any::<u8>()) {
        let ring = ring();
        let mut ct = ring.encrypt("alice", "openai", plain.as_bytes()).unwrap();
        prop_assume!(version != FORMAT_VERSION);
        ct[2] = version;
        assert_rejected(&ring, "alice", "openai", &ct, &plain);
        prop_assert_eq!(
            ring.decrypt("alice", "openai", &ct).unwrap_err(),
            EncryptionError::UnsupportedVersion { version }
        );
    }

    #[test]
    fn another_slot_is_rejected(
        plain in plaintext(),
        (user, provider) in (id(), id()),
        (other_user, other_provider) in (id(), id()),
    ) {
        prop_assume!((&user, &provider) != (&other_user, &other_provider));
        let ring = ring();
        let ct = ring.encrypt(&user, &provider, plain.as_bytes()).unwrap();
        assert_rejected(&ring, &other_user, &other_provider, &ct, &plain);
        // The boundary between user and provider is part of the slot too.
        let joined = format!("{user}{provider}");
        if joined.len() > 1 {
            let (u, p) = joined.split_at(1);
            if (u, p) != (user.as_str(), provider.as_str()) {
                assert_rejected(&ring, u, p, &ct, &plain);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_rejected(
        bytes in prop::collection::vec(any::<u8>(), 0..96),
        with_header in any::<bool>(),
    ) {
        let ring = ring();
        let input = if with_header {
            let mut v = b"BY".to_vec();
            v.push(FORMAT_VERSION);
            v.extend_from_slice(&7u32.to_be_bytes());
            v.extend_from_slice(&bytes);
            v
        } else {
            bytes
        };
        prop_assert!(ring.decrypt("alice", "openai", &input).is_err());
        let _ = key_id_of(&input);
    }
}
