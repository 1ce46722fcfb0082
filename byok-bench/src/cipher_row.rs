//! The crypto row: byok's `Keyring` against a cached cipher by hand.

use std::sync::Arc;

use byok::{Keyring, MasterKey};
use secrecy::ExposeSecret;

use crate::hand::HandCipher;
use crate::harness::{self, BResult, Plan, Row, RowResult};
use crate::opt::Sizes;
use crate::rows::{KEY_1, api_key};

/// Encrypt + decrypt of a 100-byte key for one slot.
pub(crate) async fn row(sizes: &Sizes) -> BResult<Row> {
    let ring = Arc::new(Keyring::new(1, MasterKey::from_bytes(&KEY_1)?));
    let cipher = HandCipher::new(&KEY_1)?;
    let key = Arc::new(api_key(1));
    let key2 = Arc::clone(&key);
    let plan = Plan {
        rounds: sizes.rounds,
        ops: sizes.in_process_ops,
        batch: 32,
        tasks: 1,
    };
    let c = harness::compare(
        plan,
        move |_| {
            let (ring, key) = (Arc::clone(&ring), Arc::clone(&key));
            async move {
                let sealed = ring.encrypt("user-00000042", "openai", key.as_bytes())?;
                let back = ring.decrypt_string("user-00000042", "openai", &sealed)?;
                if back.expose_secret().len() == key.len() {
                    Ok(())
                } else {
                    Err("the round trip changed the key".into())
                }
            }
        },
        move |_| {
            let (cipher, key) = (cipher.clone(), Arc::clone(&key2));
            async move {
                let sealed = cipher.seal("user-00000042", "openai", key.as_bytes())?;
                let back = cipher.open("user-00000042", "openai", &sealed)?;
                if back.len() == key.len() {
                    Ok(())
                } else {
                    Err("the round trip changed the key".into())
                }
            }
        },
    )
    .await?;
    Ok(Row {
        backend: "crypto".into(),
        operation: "encrypt + decrypt, 100-byte key".into(),
        tasks: 1,
        result: RowResult::Timing(c),
    })
}
