//! [`Byok`]: the manager that application code calls.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::check_record::CheckRecord;
use crate::config::ByokConfig;
use crate::crypto::{Keyring, key_id_of};
use crate::display::{ProviderInfo, format_expiration, format_key_age, mask_key};
use crate::error::{ByokError, ConfigError, EncryptionError, Field, InvalidInput, Problem, Result};
use crate::key::{self, ApiKey};
use crate::keyring_source::KeyringSource;
use crate::observe;
use crate::storage::{Cursor, KeyStorage, ScanPage};
use crate::store;
use crate::store::IntoStorage;
use crate::validate;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// How often the background task purges expired keys, unless set otherwise.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// How often a manager with a [`KeyringSource`] reloads its keyring,
/// unless set otherwise.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// How long one reload may read its keyring source before it counts as
/// failed (the keyring in use is kept). Longer than a command source's own
/// default timeout.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The least time between two reloads caused by a stored key under a
/// master key id the keyring lacks, unless set otherwise.
pub const DEFAULT_UNKNOWN_KEY_RELOAD_GAP: Duration = Duration::from_secs(5);

/// The page size of a rotation walk, unless set otherwise.
pub const DEFAULT_ROTATION_PAGE: usize = 500;

/// The default prefix of [`Byok::import_from_env`]: `API_KEY_OPENAI`, …
pub const DEFAULT_ENV_PREFIX: &str = "API_KEY_";

/// How long a key set with [`Byok::set_key`] lives.
///
/// **`Ttl::Default` is 24 hours** unless [`ByokConfig::default_ttl`] says
/// otherwise (the Python library's default): a key that a user pastes into
/// a settings page with `Ttl::Default` is gone the next day. Keys that
/// should stay until the user removes them take [`Ttl::Never`]; keys of a
/// session or a trial take [`Ttl::After`].
///
/// ```
/// use std::time::Duration;
/// use byok_core::Ttl;
/// let settings_page = Ttl::Never;
/// let trial = Ttl::After(Duration::from_secs(7 * 24 * 3600));
/// # let _ = (settings_page, trial);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ttl {
    /// [`ByokConfig::default_ttl`]: 24 hours unless configured otherwise.
    #[default]
    Default,
    /// Never expires.
    Never,
    /// Expires after this long.
    After(Duration),
}

impl From<Duration> for Ttl {
    fn from(d: Duration) -> Self {
        Ttl::After(d)
    }
}

impl From<Option<Duration>> for Ttl {
    /// `None` falls back to the configured default.
    fn from(d: Option<Duration>) -> Self {
        d.map_or(Ttl::Default, Ttl::After)
    }
}

/// Stores, returns, expires and rotates the API keys of users (the Python
/// library's `BYOKManager`).
///
/// It holds a [`KeyStorage`], a [`Keyring`] and a [`ByokConfig`]. Keys are
/// encrypted before they reach the store and decrypted only in
/// [`get_key`](Self::get_key), into a [`SecretString`]. Cloning is cheap and
/// clones share everything, the background cleanup task included; the task
/// stops when the last clone is dropped.
///
/// ```
/// use std::sync::Arc;
/// use byok_core::secrecy::ExposeSecret;
/// use byok_core::{Byok, ByokConfig, Keyring, MasterKey, Ttl};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> byok_core::Result<()> {
/// let storage = Arc::new(byok_memory::MemoryStorage::new());
/// let keyring = Keyring::new(1, MasterKey::generate());
/// let byok = Byok::new(storage, keyring, ByokConfig::default())?;
///
/// // Kept until the user removes it; Ttl::Default would expire it in 24 h.
/// byok.set_key("alice", "openai", "sk-proj-abcdefghijklmnop", Ttl::Never).await?;
/// let key = byok.get_key("alice", "openai").await?.expect("just set");
/// assert_eq!(key.expose_secret(), "sk-proj-abcdefghijklmnop");
/// assert_eq!(byok.key_summary("alice").await?[0].hint, "sk-p...mnop");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Byok {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn KeyStorage>,
    keys: Arc<Keys>,
    config: ByokConfig,
    cleanup: Option<tokio::task::JoinHandle<()>>,
    reload: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in [self.cleanup.take(), self.reload.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// The keyring in use, where it is reloaded from, and the reload state;
/// shared with the reload task, which must not keep the manager alive.
struct Keys {
    /// Read by every operation without a lock.
    current: ArcSwap<Keyring>,
    /// Counts replacements, so that a request that met an unknown key id
    /// can tell whether the keyring changed since it looked.
    generation: AtomicU64,
    source: Option<Arc<dyn KeyringSource>>,
    /// When an unknown key id last caused a reload; held while it runs,
    /// so that requests meeting the same id wait for one reload.
    last_on_demand: tokio::sync::Mutex<Option<Instant>>,
    on_demand_gap: Duration,
    /// Held while a reload reads its source and puts the keyring in use, so
    /// that a timed reload and one caused by an unknown key id never finish
    /// out of order (the older text replacing the newer).
    reloading: tokio::sync::Mutex<()>,
}

impl Keys {
    fn replace(&self, ring: Keyring) {
        let old = self.current.swap(Arc::new(ring));
        self.generation.fetch_add(1, Ordering::AcqRel);
        let new = self.current.load();
        if old.primary_id() != new.primary_id() || !old.key_ids().eq(new.key_ids()) {
            tracing::info!(
                key_ids = ?new.key_ids().collect::<Vec<_>>(),
                primary = new.primary_id(),
                "keyring replaced"
            );
        }
    }

    /// Loads the keyring from the source and puts it in use; a failure
    /// keeps the keyring in use and is logged.
    async fn reload(&self) -> std::result::Result<(), ConfigError> {
        let Some(source) = &self.source else {
            return Err(ConfigError::new("this manager has no keyring source"));
        };
        let _one_at_a_time = self.reloading.lock().await;
        // A source that hangs (a stalled network file system, a FIFO
        // nobody writes) must not hold every request that waits for it.
        let loaded = match tokio::time::timeout(RELOAD_TIMEOUT, source.load()).await {
            Ok(loaded) => loaded,
            Err(_) => Err(ConfigError::new(format!(
                "reading the keyring source took longer than {} s",
                RELOAD_TIMEOUT.as_secs()
            ))),
        };
        match loaded {
            Ok(ring) => {
                self.replace(ring);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    source = ?source,
                    error = %e,
                    "reloading the keyring failed; the keyring in use is kept"
                );
                Err(e)
            }
        }
    }

    /// After a decryption found `key_id` missing from the keyring of
    /// `generation`: whether a keyring to try again is now in use (another
    /// request's reload, or this one's, rate-limited).
    async fn reload_for_unknown(&self, key_id: u32, generation: u64) -> bool {
        if self.source.is_none() {
            return false;
        }
        let mut last = self.last_on_demand.lock().await;
        if self.generation.load(Ordering::Acquire) != generation {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < self.on_demand_gap) {
            return false;
        }
        *last = Some(Instant::now());
        tracing::info!(
            key_id,
            "a stored key names a master key id the keyring lacks; reloading"
        );
        self.reload().await.is_ok()
    }
}

impl fmt::Debug for Byok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Byok")
            .field("storage", &self.inner.storage)
            .field("keyring", &**self.inner.keys.current.load())
            .field("keyring_source", &self.inner.keys.source)
            .field("config", &self.inner.config)
            .field("cleanup", &self.inner.cleanup.is_some())
            .finish()
    }
}

/// Builds a [`Byok`] with options beyond [`Byok::new`].
#[derive(Debug)]
pub struct ByokBuilder {
    storage: Arc<dyn KeyStorage>,
    keyring: Keyring,
    config: ByokConfig,
    cleanup_interval: Duration,
    source: Option<Arc<dyn KeyringSource>>,
    reload_interval: Duration,
    unknown_key_reload_gap: Duration,
}

impl ByokBuilder {
    /// Sets the configuration.
    pub fn config(mut self, config: ByokConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets how often expired keys are purged when `auto_cleanup` is on.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Reloads the keyring from `source` (see [`KeyringSource`](crate::KeyringSource)).
    ///
    /// The keyring given to the builder is used until the first reload;
    /// [`Byok::builder_with_source`] loads it from the source.
    pub fn keyring_source(mut self, source: impl KeyringSource) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// How often the keyring is reloaded from its source
    /// ([`DEFAULT_RELOAD_INTERVAL`] unless set); zero turns the timer off,
    /// leaving reloads on unknown key ids and [`Byok::reload_keyring`].
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// The least time between two reloads caused by stored keys under a
    /// master key id the keyring lacks ([`DEFAULT_UNKNOWN_KEY_RELOAD_GAP`]
    /// unless set): a store full of keys under a removed id must not turn
    /// every request into a reload.
    pub fn unknown_key_reload_gap(mut self, gap: Duration) -> Self {
        self.unknown_key_reload_gap = gap;
        self
    }

    /// Builds the manager. With `auto_cleanup` on, this starts the cleanup
    /// task, and with a keyring source and a reload interval, the reload
    /// task; each needs a running Tokio runtime.
    pub fn build(self) -> Result<Byok> {
        let keys = Arc::new(Keys {
            current: ArcSwap::from_pointee(self.keyring),
            generation: AtomicU64::new(0),
            source: self.source,
            last_on_demand: tokio::sync::Mutex::new(None),
            on_demand_gap: self.unknown_key_reload_gap,
            reloading: tokio::sync::Mutex::new(()),
        });
        let reload = if keys.source.is_some() && !self.reload_interval.is_zero() {
            let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
                ConfigError::new(
                    "reloading the keyring needs a running Tokio runtime; build the manager \
                     inside one or set a reload interval of zero",
                )
                .with_source(e)
            })?;
            let keys = Arc::clone(&keys);
            let interval = self.reload_interval;
            Some(runtime.spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    // A failure is logged and the keyring in use kept.
                    let _ = keys.reload().await;
                }
            }))
        } else {
            None
        };
        let cleanup = if self.config.auto_cleanup {
            if self.cleanup_interval.is_zero() {
                return Err(
                    ConfigError::new("the cleanup interval must be longer than zero").into(),
                );
            }
            let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
                ConfigError::new(
                    "auto_cleanup needs a running Tokio runtime; build the manager inside one \
                     or turn auto_cleanup off",
                )
                .with_source(e)
            })?;
            let storage = Arc::clone(&self.storage);
            Some(runtime.spawn(crate::store::purge_every(storage, self.cleanup_interval)))
        } else {
            None
        };
        Ok(Byok {
            inner: Arc::new(Inner {
                storage: self.storage,
                keys,
                config: self.config,
                cleanup,
                reload,
            }),
        })
    }
}

/// What [`Byok::key_summary`] says about one key; nothing in it is secret.
///
/// Its JSON form has these field names, with the times in RFC 3339
/// (`expires_at` is `null` for a key that never expires); byok-axum's JSON
/// API answers with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeySummary {
    /// The provider id.
    pub provider: String,
    /// Its display name.
    pub display_name: String,
    /// The masked hint written when the key was set (`N/A` if none).
    pub hint: String,
    /// How old the key is, such as `3 days ago`.
    pub created: String,
    /// When it expires, such as `Expires in 5 hours`, `Expired` or `Never`.
    pub expires: String,
    /// Whether it has expired.
    pub is_expired: bool,
    /// When it was set.
    pub created_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// The last check of this key, if one was kept (see
    /// [`Byok::record_check`]); `None` when it was never checked or has
    /// been replaced since.
    pub last_check: Option<CheckRecord>,
}

/// The check among `checks` (provider, text) made for `key`.
fn check_of(checks: &[(String, String)], key: &ApiKey) -> Option<CheckRecord> {
    checks
        .iter()
        .find(|(p, _)| p == key.provider())
        .and_then(|(_, text)| CheckRecord::decode_for(text, key))
}

/// What a rotation did, per master key id.
///
/// It serializes (`serde`) so that an operator's tool can save it with the
/// walk's cursor, resume, and [`merge`](Self::merge) the pages of both
/// runs; nothing in it is secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RotationReport {
    /// The primary key id that keys were rotated to.
    pub primary_key_id: u32,
    /// Keys found already under the primary key.
    pub already_current: u64,
    /// Keys re-encrypted under the primary key, by their old key id.
    pub rotated: BTreeMap<u32, u64>,
    /// Keys left alone because they changed while being rotated (a user set
    /// a new key, which is already under the primary key).
    pub changed_concurrently: u64,
    /// Keys that could not be decrypted, by key id: their key id is not in
    /// the keyring, or authentication failed. They are left as they are.
    pub failed: BTreeMap<u32, u64>,
    /// Stored values that are not byok ciphertexts at all; left as they are.
    pub malformed: u64,
    /// Where to resume if the walk stopped early; `None` when it finished.
    pub resume_from: Option<Cursor>,
}

impl RotationReport {
    /// Whether every key that was seen is now under the primary key, so the
    /// old master keys can be removed from the keyring.
    pub fn is_complete(&self) -> bool {
        self.resume_from.is_none() && self.failed.is_empty() && self.malformed == 0
    }

    /// How many keys the report covers, whatever was done with them.
    pub fn keys(&self) -> u64 {
        self.already_current
            + self.changed_concurrently
            + self.malformed
            + self.rotated.values().sum::<u64>()
            + self.failed.values().sum::<u64>()
    }

    /// Adds the counts of `other`, the report of the pages that follow
    /// this one's, and takes its `resume_from`.
    pub fn merge(&mut self, other: RotationReport) {
        self.already_current += other.already_current;
        self.changed_concurrently += other.changed_concurrently;
        self.malformed += other.malformed;
        for (id, n) in other.rotated {
            *self.rotated.entry(id).or_default() += n;
        }
        for (id, n) in other.failed {
            *self.failed.entry(id).or_default() += n;
        }
        self.resume_from = other.resume_from;
    }
}

/// What [`Byok::import_from_env`] did for one provider.
#[derive(Debug)]
pub enum ImportOutcome {
    /// The variable was set and the key stored.
    Imported,
    /// The variable was not set (or empty).
    NotSet,
    /// The variable was set but storing failed.
    Failed(ByokError),
}

impl Byok {
    /// A manager over `storage` with `keyring` and `config`.
    ///
    /// With `config.auto_cleanup` (the default) this starts a background
    /// task that purges expired keys every [`DEFAULT_CLEANUP_INTERVAL`],
    /// which needs a running Tokio runtime. It is meant to be the only
    /// purge of the store (see [`ByokConfig::auto_cleanup`]); stores opened
    /// with `byok::connect` run none of their own.
    pub fn new(storage: impl IntoStorage, keyring: Keyring, config: ByokConfig) -> Result<Self> {
        Self::builder(storage, keyring).config(config).build()
    }

    /// A manager whose keyring is `config.encryption_key` under key id 0.
    ///
    /// Fails when `config.encryption_key` is `None`: unlike the Python
    /// library, byok never makes up a key that would be lost at restart,
    /// taking every stored key with it.
    pub fn from_config(storage: impl IntoStorage, config: ByokConfig) -> Result<Self> {
        let key = config.encryption_key.clone().ok_or_else(|| {
            ConfigError::new(
                "ByokConfig::encryption_key is not set; generate one with MasterKey::generate \
                 and keep it in your secret store",
            )
        })?;
        Self::new(storage, Keyring::new(0, key), config)
    }

    /// A builder, for options such as the cleanup interval.
    pub fn builder(storage: impl IntoStorage, keyring: Keyring) -> ByokBuilder {
        ByokBuilder {
            storage: storage.into_storage(),
            keyring,
            config: ByokConfig::default(),
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            source: None,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            unknown_key_reload_gap: DEFAULT_UNKNOWN_KEY_RELOAD_GAP,
        }
    }

    /// A builder whose keyring is loaded from `source` now, and reloaded
    /// from it while the manager runs (see [`KeyringSource`](crate::KeyringSource)).
    ///
    /// Fails when the source cannot be read or holds no valid keyring: a
    /// manager never starts without keys.
    pub async fn builder_with_source(
        storage: impl IntoStorage,
        source: impl KeyringSource,
    ) -> Result<ByokBuilder> {
        let keyring = source.load().await?;
        Ok(Self::builder(storage, keyring).keyring_source(source))
    }

    /// The store.
    pub fn storage(&self) -> &Arc<dyn KeyStorage> {
        &self.inner.storage
    }

    /// The keyring in use now.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.inner.keys.current.load_full()
    }

    /// Puts `keyring` in use, for this manager and its clones.
    ///
    /// Operations that started before keep the keyring they began with;
    /// later ones use the new one. Reads take the keyring without a lock,
    /// so replacing it costs `get_key` nothing.
    ///
    /// Replace a keyring in stages (see [`Keyring`]): a key id that
    /// another instance may already write under must stay in it.
    pub fn replace_keyring(&self, keyring: Keyring) {
        self.inner.keys.replace(keyring);
    }

    /// Loads the keyring from the manager's [`KeyringSource`] now and puts
    /// it in use. On failure (no source, a source that cannot be read, a
    /// malformed keyring) the keyring in use is kept, and the failure is
    /// logged as a warning and returned.
    pub async fn reload_keyring(&self) -> Result<Arc<Keyring>> {
        self.inner.keys.reload().await?;
        Ok(self.keyring())
    }

    /// The configuration.
    pub fn config(&self) -> &ByokConfig {
        &self.inner.config
    }

    fn expiry(&self, ttl: Ttl, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let ttl = match ttl {
            Ttl::Default => self.inner.config.default_ttl,
            Ttl::Never => None,
            Ttl::After(d) => Some(d),
        };
        let Some(ttl) = ttl else { return Ok(None) };
        let bad = |what| ByokError::from(InvalidInput::new(Field::Ttl, Problem::Other(what)));
        if ttl < Duration::from_millis(1) {
            return Err(bad("must be at least one millisecond"));
        }
        let ttl = chrono::Duration::from_std(ttl).map_err(|_| bad("is too long"))?;
        now.checked_add_signed(ttl)
            .map(Some)
            .ok_or_else(|| bad("is too long"))
    }

    /// Encrypts and stores a user's key for `provider`, replacing any key
    /// they had for it, with a masked hint for display.
    ///
    /// Whitespace around the key (spaces, tabs, line breaks, any Unicode
    /// whitespace) is dropped before it is stored, so a key pasted with a
    /// trailing newline works. What remains must be non-empty, at most
    /// 8 KiB and free of control characters: a blank key is an
    /// [`InvalidInput`] error for the API key field. An error says which
    /// rule the key broke, never the key (see [`validate::api_key`]).
    pub async fn set_key(
        &self,
        user_id: &str,
        provider: &str,
        api_key: &str,
        ttl: impl Into<Ttl>,
    ) -> Result<()> {
        observe::manager("set_key", async move {
            let (key, key_id) = self.seal(user_id, provider, api_key, ttl.into())?;
            self.inner.storage.store(&key).await?;
            tracing::debug!(user_id, provider, key_id, "stored API key");
            Ok(())
        })
        .await
    }

    /// Like [`set_key`](Self::set_key), but only when the user has no
    /// unexpired key for `provider`; returns whether it stored. A key that
    /// is there is left exactly as it was.
    ///
    /// The check and the write are one atomic step of the store
    /// ([`KeyStorage::store_if_absent`]), across processes too: of racing
    /// calls for an empty slot, exactly one returns `true`. A settings API
    /// uses it to answer "created" to that one and "replaced" to the others
    /// (which then call `set_key`).
    pub async fn set_key_if_absent(
        &self,
        user_id: &str,
        provider: &str,
        api_key: &str,
        ttl: impl Into<Ttl>,
    ) -> Result<bool> {
        observe::manager("set_key_if_absent", async move {
            let (key, key_id) = self.seal(user_id, provider, api_key, ttl.into())?;
            let stored = self.inner.storage.store_if_absent(&key).await?;
            tracing::debug!(
                user_id,
                provider,
                key_id,
                stored,
                "stored API key if absent"
            );
            Ok(stored)
        })
        .await
    }

    /// The key that `set_key` stores: checked, encrypted, with its hint and
    /// times.
    /// The master key id returned is the one it was encrypted under.
    fn seal(
        &self,
        user_id: &str,
        provider: &str,
        api_key: &str,
        ttl: Ttl,
    ) -> Result<(ApiKey, u32)> {
        validate::slot(user_id, provider)?;
        let api_key = validate::api_key(api_key)?;
        // One clock read for both timestamps.
        let now = key::now();
        let expires_at = self.expiry(ttl, now)?;
        let ring = self.inner.keys.current.load();
        let ciphertext = ring.encrypt(user_id, provider, api_key.as_bytes())?;
        let key_id = ring.primary_id();
        drop(ring);
        // The slot and the key were checked above, and the hint of a valid
        // key is a valid hint: nothing is checked twice.
        let key = ApiKey::from_checked(
            user_id,
            provider,
            ciphertext,
            mask_key(api_key),
            now,
            expires_at,
        );
        Ok((key, key_id))
    }

    /// A user's key for `provider`, decrypted; `None` when there is none or
    /// it has expired.
    ///
    /// When decryption fails (a wrong or missing master key, tampered data)
    /// this returns the error and leaves the stored key exactly as it was:
    /// the Python library deleted it, so that a change of secret destroyed
    /// every user's keys on their next request. The failure is also logged
    /// as a `WARN` event (user id and provider, never the key), which
    /// reaches the operators only where the application installed a
    /// `tracing` subscriber or a `log` logger, and counted with the
    /// `metrics` feature.
    pub async fn get_key(&self, user_id: &str, provider: &str) -> Result<Option<SecretString>> {
        observe::manager("get_key", async move {
            let Some(stored) = self.inner.storage.retrieve_value(user_id, provider).await?
            else {
                return Ok(None);
            };
            match self.decrypt_string(user_id, provider, &stored).await {
                Ok(secret) => Ok(Some(secret)),
                Err(e) => {
                    tracing::warn!(user_id, provider, error = %e, "stored API key could not be decrypted; left unchanged");
                    Err(e.into())
                }
            }
        })
        .await
    }

    /// Decrypts with the keyring in use; when the ciphertext names a key id
    /// that keyring lacks, reloads it from the source (rate-limited) and
    /// tries once more.
    async fn decrypt_string(
        &self,
        user_id: &str,
        provider: &str,
        stored: &[u8],
    ) -> std::result::Result<SecretString, EncryptionError> {
        let keys = &self.inner.keys;
        let generation = keys.generation.load(Ordering::Acquire);
        let first = keys
            .current
            .load()
            .decrypt_string(user_id, provider, stored);
        match first {
            Err(EncryptionError::UnknownKeyId { key_id }) if keys.source.is_some() => {
                // Boxed: the rare reload must not grow every get_key's future.
                if Box::pin(keys.reload_for_unknown(key_id, generation)).await {
                    keys.current
                        .load()
                        .decrypt_string(user_id, provider, stored)
                } else {
                    Err(EncryptionError::UnknownKeyId { key_id })
                }
            }
            other => other,
        }
    }

    /// Like [`get_key`](Self::get_key), but a missing key is a
    /// [`ByokError::KeyNotFound`].
    pub async fn require_key(&self, user_id: &str, provider: &str) -> Result<SecretString> {
        self.get_key(user_id, provider)
            .await?
            .ok_or_else(|| ByokError::KeyNotFound {
                user_id: user_id.to_owned(),
                provider: provider.to_owned(),
            })
    }

    /// Whether the user has an unexpired key for `provider`; decrypts nothing.
    pub async fn has_key(&self, user_id: &str, provider: &str) -> Result<bool> {
        observe::manager("has_key", async move {
            Ok(self
                .inner
                .storage
                .retrieve(user_id, provider)
                .await?
                .is_some())
        })
        .await
    }

    /// Removes a user's key for `provider`; returns whether there was one.
    pub async fn delete_key(&self, user_id: &str, provider: &str) -> Result<bool> {
        observe::manager("delete_key", async move {
            let removed = self.inner.storage.delete(user_id, provider).await?;
            tracing::debug!(user_id, provider, removed, "deleted API key");
            Ok(removed)
        })
        .await
    }

    /// The providers a user has unexpired keys for, sorted.
    pub async fn list_providers(&self, user_id: &str) -> Result<Vec<String>> {
        observe::manager("list_providers", async move {
            self.inner.storage.list_providers(user_id).await
        })
        .await
    }

    /// Removes every key of a user; returns how many.
    pub async fn clear_keys(&self, user_id: &str) -> Result<u64> {
        observe::manager("clear_keys", async move {
            self.inner.storage.clear_all(user_id).await
        })
        .await
    }

    /// Removes every expired key of every user; returns how many.
    pub async fn purge_expired(&self) -> Result<u64> {
        observe::manager("purge_expired", async move {
            self.inner.storage.purge_expired().await
        })
        .await
    }

    /// What a settings page shows for each of a user's keys, sorted by
    /// provider: name, masked hint, age and expiry. It decrypts nothing, so
    /// it works even when the master key is wrong.
    ///
    /// It reads the keys with one [`KeyStorage::user_keys`] call (a single
    /// round trip on backends that override it) and their kept checks with
    /// one [`KeyStorage::checks`] call, both at once. The summary may include
    /// keys that have expired but are not purged yet, when the store
    /// returns them: those have `is_expired` set and read `Expired`, so a
    /// user can see that a key needs renewing. [`get_key`](Self::get_key)
    /// never returns them.
    pub async fn key_summary(&self, user_id: &str) -> Result<Vec<KeySummary>> {
        observe::manager("key_summary", async move {
            // Two reads whatever the number of keys, made at once: the
            // keys and the checks kept with them.
            let (keys, checks) = futures_util::future::join(
                self.inner.storage.user_keys(user_id),
                self.inner.storage.checks(user_id),
            )
            .await;
            let (keys, checks) = (keys?, checks?);
            let now = Utc::now();
            Ok(keys
                .into_iter()
                .map(|k| KeySummary {
                    provider: k.provider().to_owned(),
                    display_name: ProviderInfo::of(k.provider()).name,
                    hint: k.hint().unwrap_or("N/A").to_owned(),
                    created: format_key_age(k.created_at(), now),
                    expires: format_expiration(k.expires_at(), now),
                    is_expired: k.is_expired_at(now),
                    created_at: k.created_at(),
                    expires_at: k.expires_at(),
                    last_check: check_of(&checks, &k),
                })
                .collect())
        })
        .await
    }

    /// Keeps the result of a check of the user's key for `provider` with
    /// the key, for [`key_summary`](Self::key_summary), the settings page
    /// and `byok list` to show; returns whether it was kept (`false` when
    /// the slot holds no key, or the store keeps no checks).
    ///
    /// The record is bound to the key read here: if the user replaces the
    /// key meanwhile, the record is not shown for the new one. Replacing a
    /// key clears its check; rotating the master key keeps it.
    ///
    /// ```
    /// # use byok_core::{Byok, ByokConfig, CheckRecord, Keyring, MasterKey, Ttl};
    /// # use std::sync::Arc;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> byok_core::Result<()> {
    /// # let store = Arc::new(byok_memory::MemoryStorage::new());
    /// # let byok = Byok::new(store, Keyring::new(1, MasterKey::generate()), ByokConfig::for_tests())?;
    /// byok.set_key("alice", "openai", "sk-proj-0123456789abcdef", Ttl::Never).await?;
    /// let record = CheckRecord::new("invalid", "OpenAI does not accept this key.")?;
    /// assert!(byok.record_check("alice", "openai", &record).await?);
    /// assert_eq!(byok.last_check("alice", "openai").await?, Some(record));
    /// // A new key starts unchecked.
    /// byok.set_key("alice", "openai", "sk-proj-fedcba9876543210", Ttl::Never).await?;
    /// assert_eq!(byok.last_check("alice", "openai").await?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn record_check(
        &self,
        user_id: &str,
        provider: &str,
        record: &CheckRecord,
    ) -> Result<bool> {
        observe::manager("record_check", async move {
            let Some(key) = self.inner.storage.retrieve(user_id, provider).await? else {
                return Ok(false);
            };
            self.inner
                .storage
                .store_check(user_id, provider, &record.encode(&key))
                .await
        })
        .await
    }

    /// The last check kept for the user's key for `provider`; `None` when
    /// there is no key, it was never checked, or it was replaced since.
    pub async fn last_check(&self, user_id: &str, provider: &str) -> Result<Option<CheckRecord>> {
        observe::manager("last_check", async move {
            let Some(key) = self.inner.storage.retrieve(user_id, provider).await? else {
                return Ok(None);
            };
            let checks = self.inner.storage.checks(user_id).await?;
            Ok(check_of(&checks, &key))
        })
        .await
    }

    /// A keyed fingerprint of an API key (see [`Keyring::keyed_fingerprint`]).
    pub fn keyed_fingerprint(&self, api_key: &str) -> String {
        self.inner.keys.current.load().keyed_fingerprint(api_key)
    }

    /// Re-encrypts every key that is not under the primary key id.
    ///
    /// It walks the store page by page and replaces each key with
    /// [`KeyStorage::compare_and_swap`], so a key that a user sets while the
    /// rotation runs is never overwritten. Keys that cannot be decrypted
    /// are counted and left alone. Running it again is harmless, and the
    /// report says per key id what was done: when
    /// [`is_complete`](RotationReport::is_complete), old master keys can be
    /// removed. Plaintext never leaves the process.
    pub async fn rotate(&self) -> Result<RotationReport> {
        observe::manager("rotate", async move {
            let mut total = RotationReport {
                primary_key_id: self.inner.keys.current.load().primary_id(),
                ..RotationReport::default()
            };
            let mut pages = store::pages(&*self.inner.storage, None, DEFAULT_ROTATION_PAGE);
            while let Some(page) = pages.next().await {
                let page = page?;
                total.merge(observe::manager("rotate_page", self.rotate_keys(page, true)).await?);
            }
            Ok(total)
        })
        .await
    }

    /// One page of a rotation, for operators who want to pace it or resume
    /// it after a restart: start with `None` and pass each report's
    /// `resume_from` until it is `None`.
    pub async fn rotate_page(
        &self,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<RotationReport> {
        observe::manager("rotate_page", self.rotate_from(cursor, limit, true)).await
    }

    /// What [`rotate_page`](Self::rotate_page) would do, writing nothing:
    /// each key is read and decrypted as the rotation would, `rotated`
    /// counts the keys it would re-encrypt and `failed` those it would
    /// leave; `changed_concurrently` stays 0. Walk it the same way, with
    /// `resume_from`.
    pub async fn plan_rotate_page(
        &self,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<RotationReport> {
        observe::manager("plan_rotate_page", self.rotate_from(cursor, limit, false)).await
    }

    /// The page of the walk from `cursor`, rotated (`write`) or planned.
    async fn rotate_from(
        &self,
        cursor: Option<&Cursor>,
        limit: usize,
        write: bool,
    ) -> Result<RotationReport> {
        let mut pages = store::pages(&*self.inner.storage, cursor.cloned(), limit);
        match pages.next().await {
            Some(page) => self.rotate_keys(page?, write).await,
            None => Ok(RotationReport::default()),
        }
    }

    /// Rotates the keys of one page (or, without `write`, counts what a
    /// rotation would do with them).
    async fn rotate_keys(&self, page: ScanPage, write: bool) -> Result<RotationReport> {
        // One keyring for the whole page, whatever reloads meanwhile.
        let ring = self.inner.keys.current.load_full();
        let primary = ring.primary_id();
        let mut report = RotationReport {
            primary_key_id: primary,
            resume_from: page.next,
            ..RotationReport::default()
        };
        for stored in page.keys {
            let key_id = match key_id_of(stored.encrypted_value()) {
                Ok(id) => id,
                Err(_) => {
                    report.malformed += 1;
                    continue;
                }
            };
            if key_id == primary {
                report.already_current += 1;
                continue;
            }
            let (user, provider) = (stored.user_id(), stored.provider());
            let plain: Zeroizing<Vec<u8>> = match ring.decrypt(
                user,
                provider,
                stored.encrypted_value(),
            ) {
                Ok(p) => p,
                Err(
                    EncryptionError::Malformed { .. } | EncryptionError::UnsupportedVersion { .. },
                ) => {
                    report.malformed += 1;
                    continue;
                }
                Err(e) => {
                    observe::decryption_failure();
                    tracing::warn!(user_id = user, provider, key_id, error = %e, "key not rotated");
                    *report.failed.entry(key_id).or_default() += 1;
                    continue;
                }
            };
            if !write {
                *report.rotated.entry(key_id).or_default() += 1;
                continue;
            }
            let ciphertext = ring.encrypt(user, provider, &plain)?;
            let rotated = stored.clone().with_encrypted_value(ciphertext);
            if self
                .inner
                .storage
                .compare_and_swap(&stored, &rotated)
                .await?
            {
                *report.rotated.entry(key_id).or_default() += 1;
            } else {
                report.changed_concurrently += 1;
            }
        }
        Ok(report)
    }

    /// Imports keys from environment variables named `<prefix><PROVIDER>`
    /// (`API_KEY_OPENAI` with the default prefix [`DEFAULT_ENV_PREFIX`]),
    /// with the default TTL ([`Ttl::Default`], 24 hours unless configured);
    /// returns what happened per provider.
    pub async fn import_from_env(
        &self,
        user_id: &str,
        providers: &[&str],
        prefix: Option<&str>,
    ) -> BTreeMap<String, ImportOutcome> {
        let prefix = prefix.unwrap_or(DEFAULT_ENV_PREFIX);
        let mut results = BTreeMap::new();
        for provider in providers {
            let var = format!("{prefix}{}", provider.to_uppercase());
            let outcome = match std::env::var(&var).map(Zeroizing::new) {
                Ok(value) if !value.is_empty() => {
                    match self.set_key(user_id, provider, &value, Ttl::Default).await {
                        Ok(()) => ImportOutcome::Imported,
                        Err(e) => ImportOutcome::Failed(e),
                    }
                }
                _ => ImportOutcome::NotSet,
            };
            results.insert((*provider).to_owned(), outcome);
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_conversions() {
        assert_eq!(Ttl::from(None), Ttl::Default);
        assert_eq!(
            Ttl::from(Some(Duration::from_secs(5))),
            Ttl::After(Duration::from_secs(5))
        );
        assert_eq!(
            Ttl::from(Duration::from_secs(5)),
            Ttl::After(Duration::from_secs(5))
        );
    }
}
