//! [`FastTier`] for [`MemoryStorage`]: copies, leases and holds of a
//! `TieredStorage`, kept apart from the store's keys, under one lock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use byok_core::{ApiKey, Result, validate};
use byok_core::{FastTier, LeaseToken, Lookup};

use crate::MemoryStorage;

/// Every user's copies, leases and hold. One lock: each step is short and
/// touches one user.
#[derive(Default)]
pub(crate) struct Fills(Mutex<HashMap<String, UserFills>>);

#[derive(Default)]
struct UserFills {
    copies: HashMap<String, (ApiKey, Instant)>,
    leases: HashMap<String, (LeaseToken, Instant)>,
    hold: Option<(LeaseToken, Instant)>,
}

impl UserFills {
    fn held(&self, now: Instant) -> bool {
        self.hold.as_ref().is_some_and(|(_, until)| *until > now)
    }

    fn leased_to(&self, provider: &str, now: Instant) -> Option<&LeaseToken> {
        self.leases
            .get(provider)
            .filter(|(_, until)| *until > now)
            .map(|(token, _)| token)
    }

    fn is_empty(&self) -> bool {
        self.copies.is_empty() && self.leases.is_empty() && self.hold.is_none()
    }

    /// Drops what has ended.
    fn sweep(&mut self, now: Instant) {
        self.copies.retain(|_, (_, until)| *until > now);
        self.leases.retain(|_, (_, until)| *until > now);
        if !self.held(now) {
            self.hold = None;
        }
    }
}

impl Fills {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, UserFills>> {
        // Each step leaves the maps consistent; a panic cannot half-update.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops every copy, lease and hold that has ended.
    /// Drops every copy, lease and hold.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, user| {
            user.sweep(now);
            !user.is_empty()
        });
    }

    fn fill_or_settle(
        &self,
        user_id: &str,
        provider: &str,
        token: Option<&LeaseToken>,
        key: Option<&ApiKey>,
        ttl: Duration,
        settle: bool,
    ) -> bool {
        let now = Instant::now();
        let mut users = self.lock();
        let Some(user) = users.get_mut(user_id) else {
            return false;
        };
        let mine = token.is_some() && user.leased_to(provider, now) == token && !user.held(now);
        if mine {
            user.leases.remove(provider);
            if let Some(key) = key {
                user.copies
                    .insert(provider.to_owned(), (key.clone(), now + ttl));
            }
        } else if settle {
            user.copies.remove(provider);
            user.leases.remove(provider);
        }
        if user.is_empty() {
            users.remove(user_id);
        }
        mine && key.is_some()
    }
}

#[async_trait]
impl FastTier for MemoryStorage {
    async fn lookup(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> Result<Lookup> {
        validate::stored_slot(user_id, provider)?;
        let now = Instant::now();
        let mut users = self.inner.fills.lock();
        let user = users.entry(user_id.to_owned()).or_default();
        match user.copies.get(provider) {
            Some((key, until)) if *until > now => return Ok(Lookup::Hit(key.clone())),
            Some(_) => {
                user.copies.remove(provider);
            }
            None => {}
        }
        if user.held(now) || user.leased_to(provider, now).is_some() {
            return Ok(Lookup::Busy);
        }
        user.leases
            .insert(provider.to_owned(), (token.clone(), now + lease));
        Ok(Lookup::Leased)
    }

    async fn fill(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        key: Option<&ApiKey>,
        ttl: Duration,
    ) -> Result<bool> {
        validate::stored_slot(user_id, provider)?;
        Ok(self
            .inner
            .fills
            .fill_or_settle(user_id, provider, Some(token), key, ttl, false))
    }

    async fn hold(
        &self,
        user_id: &str,
        provider: &str,
        token: &LeaseToken,
        hold: Duration,
    ) -> Result<()> {
        validate::stored_slot(user_id, provider)?;
        let mut users = self.inner.fills.lock();
        let user = users.entry(user_id.to_owned()).or_default();
        user.copies.remove(provider);
        user.leases
            .insert(provider.to_owned(), (token.clone(), Instant::now() + hold));
        Ok(())
    }

    async fn settle(
        &self,
        user_id: &str,
        provider: &str,
        token: Option<&LeaseToken>,
        key: Option<&ApiKey>,
        ttl: Duration,
    ) -> Result<()> {
        validate::stored_slot(user_id, provider)?;
        self.inner
            .fills
            .fill_or_settle(user_id, provider, token, key, ttl, true);
        Ok(())
    }

    /// Drops the user's copies and leases outright: under one lock, no
    /// generation is needed.
    async fn hold_user(
        &self,
        user_id: &str,
        token: &LeaseToken,
        hold: Duration,
        _ttl: Duration,
    ) -> Result<()> {
        validate::stored_user_id(user_id)?;
        let mut users = self.inner.fills.lock();
        let user = users.entry(user_id.to_owned()).or_default();
        user.copies.clear();
        user.leases.clear();
        user.hold = Some((token.clone(), Instant::now() + hold));
        Ok(())
    }

    async fn settle_user(
        &self,
        user_id: &str,
        token: Option<&LeaseToken>,
        _ttl: Duration,
    ) -> Result<()> {
        validate::stored_user_id(user_id)?;
        let mut users = self.inner.fills.lock();
        if let Some(user) = users.get_mut(user_id) {
            user.copies.clear();
            user.leases.clear();
            if token.is_some() && user.hold.as_ref().map(|(t, _)| t) == token {
                user.hold = None;
            }
            if user.is_empty() {
                users.remove(user_id);
            }
        }
        Ok(())
    }
}
