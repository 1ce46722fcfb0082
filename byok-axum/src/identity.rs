//! Who the user of a request is: the [`Identify`] trait and its built-in
//! adapters.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::HeaderName;
use axum::http::request::Parts;
use byok_core::Byok;
use byok_core::error::BoxError;
use tower_sessions::Session;

/// The user a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserIdentity {
    /// The user id keys are stored under.
    pub user_id: String,
    /// How long keys this user sets may live at most; `None` leaves it to
    /// the manager's default TTL. Session-scoped keys use the time left in
    /// the session.
    pub key_ttl: Option<Duration>,
}

impl UserIdentity {
    /// A user whose keys follow the manager's default TTL.
    pub fn new(user_id: impl Into<String>) -> Self {
        UserIdentity {
            user_id: user_id.into(),
            key_ttl: None,
        }
    }

    /// Caps the lifetime of the keys this user sets.
    pub fn with_key_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = Some(ttl);
        self
    }
}

/// How the application tells byok who the user of a request is.
///
/// Return `Ok(None)` for an anonymous request (answered with
/// `401 Unauthorized`), `Err` of an [`IdentityRefused`] for a request whose
/// claim to be a user cannot be believed (`400`), and any other `Err` when
/// finding out failed (`500`, and logged). An implementation can run the application's own
/// extractors on `parts`:
///
/// ```
/// use byok_axum::async_trait;
/// use byok_axum::axum::http::request::Parts;
/// use byok_axum::{Identify, UserIdentity};
/// use byok_core::error::BoxError;
///
/// /// Whatever the application's login puts on the request.
/// #[derive(Clone)]
/// struct LoggedIn(String);
///
/// #[derive(Debug)]
/// struct FromLogin;
///
/// #[async_trait]
/// impl Identify for FromLogin {
///     async fn identify(&self, parts: &mut Parts) -> Result<Option<UserIdentity>, BoxError> {
///         Ok(parts.extensions.get::<LoggedIn>().map(|u| UserIdentity::new(u.0.clone())))
///     }
/// }
/// ```
#[async_trait]
pub trait Identify: fmt::Debug + Send + Sync + 'static {
    /// The user of the request whose head is `parts`.
    async fn identify(&self, parts: &mut Parts) -> Result<Option<UserIdentity>, BoxError>;
}

/// Identifies users by a request header that a trusted component in front
/// of the application sets, such as an authenticating proxy
/// (`X-Forwarded-User`, `X-Auth-Request-User`).
///
/// Use it only where every request passes that component and the component
/// overwrites the header: anyone who can reach the application directly can
/// send any header. A request with the header twice (a proxy that appends
/// its value to the client's) or with a value that is not visible ASCII is
/// refused with `400` ([`IdentityRefused`]), never taken to be either user.
#[derive(Debug, Clone)]
pub struct TrustedHeader {
    name: HeaderName,
}

impl TrustedHeader {
    /// Reads the user id from the header `name`.
    pub fn new(name: HeaderName) -> Self {
        TrustedHeader { name }
    }
}

#[async_trait]
impl Identify for TrustedHeader {
    async fn identify(&self, parts: &mut Parts) -> Result<Option<UserIdentity>, BoxError> {
        let mut values = parts.headers.get_all(&self.name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        // A proxy that appends instead of replacing leaves the client's own
        // header beside its own: neither can be trusted.
        if values.next().is_some() {
            return Err(IdentityRefused("the identity header is repeated").into());
        }
        let value = value
            .to_str()
            .map_err(|_| IdentityRefused("the identity header is not visible ASCII"))?;
        if value.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(UserIdentity::new(value)))
    }
}

/// The error of an [`Identify`] that refuses a request's claim to be a
/// user, such as a [`TrustedHeader`] that is repeated or not ASCII:
/// answered with `400 Bad Request` (not `500`), and logged as a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRefused(pub &'static str);

impl IdentityRefused {
    /// Why the identity was refused (shown to the client).
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for IdentityRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for IdentityRefused {}

/// An [`Identify`] made from a closure over the request head; see
/// [`identify_with`].
pub struct FnIdentity<F> {
    f: F,
}

impl<F> fmt::Debug for FnIdentity<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnIdentity")
    }
}

/// Identifies users with a closure over the request head, for an
/// application whose login middleware leaves the user in the request's
/// extensions or headers.
///
/// ```
/// use byok_axum::identify_with;
/// # #[derive(Clone)] struct CurrentUser { id: u64 }
/// let identity = identify_with(|parts| {
///     parts.extensions.get::<CurrentUser>().map(|u| u.id.to_string())
/// });
/// # let _ = identity;
/// ```
pub fn identify_with<F>(f: F) -> FnIdentity<F>
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    FnIdentity { f }
}

#[async_trait]
impl<F> Identify for FnIdentity<F>
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    async fn identify(&self, parts: &mut Parts) -> Result<Option<UserIdentity>, BoxError> {
        Ok((self.f)(parts).map(UserIdentity::new))
    }
}

/// The session entry that holds the byok user id of a session.
pub const SESSION_USER_KEY: &str = "byok.user_id";

/// Session-scoped keys (the Python library's SESSION backend): every
/// `tower-sessions` session is a user of its own, whose keys live at most
/// as long as the session and are unreachable once it ends.
///
/// Needs a [`SessionManagerLayer`](tower_sessions::SessionManagerLayer)
/// around the routes. The user id is a random id kept in the session's
/// data under [`SESSION_USER_KEY`], not the session id itself: the session
/// id is the cookie's secret and must not sit in the key store, and the
/// keys survive [`Session::cycle_id`] at login. Each key is stored with
/// the time left in the session as its TTL, so it expires with the session
/// (with an inactivity expiry, it lives as long as the session would if
/// the user were idle from the moment the key was set; with
/// `Expiry::OnSessionEnd`, whose end the server cannot see, it lives for
/// tower-sessions' default of two weeks). When the user
/// logs out, [`SessionKeys::end`] deletes their keys at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionKeys;

impl SessionKeys {
    /// Deletes every key of the session's user and deletes the session.
    pub async fn end(session: &Session, byok: &Byok) -> Result<u64, BoxError> {
        let removed = match session.get::<String>(SESSION_USER_KEY).await? {
            Some(user) => byok.clear_keys(&user).await?,
            None => 0,
        };
        session.flush().await?;
        Ok(removed)
    }
}

#[async_trait]
impl Identify for SessionKeys {
    async fn identify(&self, parts: &mut Parts) -> Result<Option<UserIdentity>, BoxError> {
        let session = Session::from_request_parts(parts, &())
            .await
            .map_err(|(_, why)| {
                format!("no session on the request ({why}); add a SessionManagerLayer")
            })?;
        let user = match session.get::<String>(SESSION_USER_KEY).await? {
            Some(user) => user,
            None => {
                let user = format!("session:{}", tower_sessions::session::Id::default());
                session.insert(SESSION_USER_KEY, &user).await?;
                user
            }
        };
        let left = session.expiry_age().unsigned_abs();
        Ok(Some(UserIdentity::new(user).with_key_ttl(left)))
    }
}
