//! The suite is only worth running if it fails on broken backends: each bug
//! planted here must make the cases that guard against it fail, and only
//! the correct store must pass everything.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use byok_core::{ApiKey, Cursor, KeyStorage, Result, ScanPage, async_trait};
use byok_memory::MemoryStorage;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bug {
    None,
    /// Folds user ids to lower case, as a case-insensitive collation does.
    CaseInsensitiveIds,
    /// Swaps without checking the current value.
    BlindSwap,
    /// Joins user and provider with ':' into one flat key.
    NaiveJoin,
    /// Lists providers in insertion order, duplicates included.
    UnsortedList,
}

#[derive(Debug)]
struct Buggy {
    inner: MemoryStorage,
    bug: Bug,
}

impl Buggy {
    fn user(&self, u: &str) -> String {
        match self.bug {
            Bug::CaseInsensitiveIds => u.to_lowercase(),
            _ => u.to_owned(),
        }
    }

    /// With the naive join, every key lives under user `u:p` and provider
    /// `-`, so `a:b`+`c` and `a`+`b:c` collide.
    fn slot(&self, u: &str, p: &str) -> (String, String) {
        match self.bug {
            Bug::NaiveJoin => (format!("{u}:{p}"), "-".to_owned()),
            _ => (self.user(u), p.to_owned()),
        }
    }

    fn translate(&self, k: &ApiKey) -> Result<ApiKey> {
        let (u, p) = self.slot(k.user_id(), k.provider());
        Ok(ApiKey::new(u, p, k.encrypted_value().to_vec())?
            .with_hint(k.hint().map(str::to_owned))?
            .with_created_at(k.created_at())
            .with_expires_at(k.expires_at()))
    }

    fn untranslate(&self, stored: ApiKey, u: &str, p: &str) -> ApiKey {
        ApiKey::new(u, p, stored.encrypted_value().to_vec())
            .unwrap()
            .with_hint(stored.hint().map(str::to_owned))
            .unwrap()
            .with_created_at(stored.created_at())
            .with_expires_at(stored.expires_at())
    }
}

#[async_trait]
impl KeyStorage for Buggy {
    async fn store_check(&self, u: &str, p: &str, check: &str) -> Result<bool> {
        let (u, p) = self.slot(u, p);
        self.inner.store_check(&u, &p, check).await
    }

    async fn checks(&self, u: &str) -> Result<Vec<(String, String)>> {
        self.inner.checks(&self.user(u)).await
    }

    async fn store(&self, key: &ApiKey) -> Result<()> {
        self.inner.store(&self.translate(key)?).await
    }

    async fn store_if_absent(&self, key: &ApiKey) -> Result<bool> {
        self.inner.store_if_absent(&self.translate(key)?).await
    }

    async fn retrieve(&self, u: &str, p: &str) -> Result<Option<ApiKey>> {
        byok_core::validate::stored_slot(u, p)?;
        let (su, sp) = self.slot(u, p);
        if su.len() > byok_core::validate::MAX_USER_ID_LEN {
            return Ok(None);
        }
        Ok(self
            .inner
            .retrieve(&su, &sp)
            .await?
            .map(|k| self.untranslate(k, u, p)))
    }

    async fn delete(&self, u: &str, p: &str) -> Result<bool> {
        byok_core::validate::stored_slot(u, p)?;
        let (su, sp) = self.slot(u, p);
        self.inner.delete(&su, &sp).await
    }

    async fn list_providers(&self, u: &str) -> Result<Vec<String>> {
        let mut list = self.inner.list_providers(&self.user(u)).await?;
        if self.bug == Bug::UnsortedList {
            list.reverse();
            if let Some(first) = list.first().cloned() {
                list.push(first);
            }
        }
        Ok(list)
    }

    async fn clear_all(&self, u: &str) -> Result<u64> {
        self.inner.clear_all(&self.user(u)).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.inner.purge_expired().await
    }

    async fn compare_and_swap(&self, current: &ApiKey, new: &ApiKey) -> Result<bool> {
        byok_core::storage::check_same_slot(current, new)?;
        let (current, new) = (self.translate(current)?, self.translate(new)?);
        if self.bug == Bug::BlindSwap {
            self.inner.store(&new).await?;
            return Ok(true);
        }
        self.inner.compare_and_swap(&current, &new).await
    }

    async fn scan(&self, cursor: Option<&Cursor>, limit: usize) -> Result<ScanPage> {
        self.inner.scan(cursor, limit).await
    }
}

async fn failures(bug: Bug) -> Vec<&'static str> {
    let store = Buggy {
        inner: MemoryStorage::new(),
        bug,
    };
    let report = byok_testkit::run_all(&store).await;
    report.failures().map(|r| r.name).collect()
}

#[tokio::test]
async fn a_correct_store_passes_every_case() {
    let report = byok_testkit::run_all(&MemoryStorage::new()).await;
    assert!(report.all_passed(), "{report}");
    assert_eq!(report.results().len(), byok_testkit::CASES.len());
    assert!(report.to_string().ends_with(&format!(
        "conformance: {} passed, 0 failed",
        byok_testkit::CASES.len()
    )));
}

#[tokio::test]
async fn planted_bugs_fail_the_cases_that_guard_against_them() {
    let expectations: [(Bug, &[&str]); 4] = [
        (
            Bug::CaseInsensitiveIds,
            &[
                "users_are_isolated_under_hostile_ids",
                "ids_compare_byte_for_byte",
                "hostile_ids_are_refused_or_isolated",
            ],
        ),
        (
            Bug::BlindSwap,
            &[
                "compare_and_swap_requires_current_value",
                "compare_and_swap_is_atomic",
            ],
        ),
        (Bug::NaiveJoin, &["joined_ids_do_not_collide"]),
        (
            Bug::UnsortedList,
            &[
                "list_is_sorted_unique_and_scoped",
                "hostile_ids_are_refused_or_isolated",
            ],
        ),
    ];
    for (bug, must_fail) in expectations {
        let failed = failures(bug).await;
        for case in must_fail {
            assert!(
                failed.contains(case),
                "{bug:?} was not caught by {case}; failed: {failed:?}"
            );
        }
    }
    let clean = failures(Bug::None).await;
    assert!(
        clean.is_empty(),
        "a store without a planted bug failed: {clean:?}"
    );
}
