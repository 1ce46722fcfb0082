//! A prober with a fixed answer, for the tests of apps that check keys.

use async_trait::async_trait;
use secrecy::SecretString;

use crate::error::Result;
use crate::prober::Prober;
use crate::result::{KeyCheck, KeyInfo};

/// Answers every check of its provider with the same [`KeyCheck`], without
/// any network.
///
/// ```
/// use byok_check::testing::Fixed;
/// use byok_check::{Checker, Detail, KeyCheck};
/// use byok_core::secrecy::SecretString;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> byok_check::Result<()> {
/// let checker = Checker::new().register(Fixed::new("openai", KeyCheck::Invalid(Detail::status(401))));
/// let check = checker.check("openai", &SecretString::from("sk-x")).await?;
/// assert!(check.is_invalid());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Fixed {
    provider: String,
    check: KeyCheck,
}

impl Fixed {
    /// Answers `check` for `provider`.
    pub fn new(provider: &str, check: KeyCheck) -> Self {
        Fixed {
            provider: provider.to_owned(),
            check,
        }
    }

    /// Accepts every key of `provider`.
    pub fn valid(provider: &str) -> Self {
        Fixed::new(provider, KeyCheck::Valid(KeyInfo::default()))
    }
}

#[async_trait]
impl Prober for Fixed {
    fn provider(&self) -> &str {
        &self.provider
    }

    async fn check(&self, _key: &SecretString) -> Result<KeyCheck> {
        Ok(self.check.clone())
    }
}
