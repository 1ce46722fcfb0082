//! Mapping driver errors to byok's storage errors.

use std::time::Duration;

use byok_core::ByokError;
use byok_core::error::{StorageError, StorageErrorKind};
use redis::{ErrorKind, RedisError, ServerErrorKind};

pub(crate) const BACKEND: &str = "redis";

pub(crate) fn corrupt(message: &'static str) -> ByokError {
    StorageError::new(BACKEND, StorageErrorKind::Corrupt, message).into()
}

/// A command or a connection cut off by this crate's own deadline; the
/// timer's error is its source.
pub(crate) fn timeout_error(deadline: Duration, elapsed: tokio::time::error::Elapsed) -> ByokError {
    StorageError::new(
        BACKEND,
        StorageErrorKind::Timeout,
        format!("no answer from Redis within {deadline:?}"),
    )
    .with_source(elapsed)
    .into()
}

/// Maps a driver error to a storage error of the right kind.
pub(crate) fn storage_error(e: RedisError, what: &'static str) -> ByokError {
    // BUSY: another client's script has run past the server's time limit;
    // the server answers again once it ends or is killed.
    let kind = if e.is_timeout() || e.code() == Some("BUSY") {
        StorageErrorKind::Timeout
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
    {
        StorageErrorKind::Unavailable
    } else {
        // MOVED, ASK, TRYAGAIN and CLUSTERDOWN are cluster errors, above.
        match e.kind() {
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly,
            )
            | ErrorKind::ClusterConnectionNotFound => StorageErrorKind::Unavailable,
            ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::Server(ServerErrorKind::NoPerm | ServerErrorKind::CrossSlot) => {
                StorageErrorKind::Rejected
            }
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StorageErrorKind::Corrupt,
            _ if is_wrong_type(&e) => StorageErrorKind::Corrupt,
            _ if e.code() == Some("OOM") => StorageErrorKind::Rejected,
            _ => StorageErrorKind::Other,
        }
    };
    let message = if kind == StorageErrorKind::Corrupt {
        "a value at a byok key is not of the byok format"
    } else {
        what
    };
    StorageError::new(BACKEND, kind, message)
        .with_source(e)
        .into()
}

/// `WRONGTYPE`, directly or raised inside a script.
fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
        || e.detail().is_some_and(|d| d.contains("WRONGTYPE"))
        || e.to_string().contains("WRONGTYPE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_map_to_kinds() {
        let kind_of = |e: RedisError| {
            let err = storage_error(e, "test");
            err.as_storage().map(|s| (s.kind, s.is_retryable()))
        };
        let busy = redis::make_extension_error(
            "BUSY".to_owned(),
            Some("Redis is busy running a script.".to_owned()),
        );
        assert_eq!(kind_of(busy), Some((StorageErrorKind::Timeout, true)));
        let loading = RedisError::from((ServerErrorKind::BusyLoading.into(), "loading"));
        assert_eq!(
            kind_of(loading),
            Some((StorageErrorKind::Unavailable, true))
        );
        let no_perm = RedisError::from((ServerErrorKind::NoPerm.into(), "no permission"));
        assert_eq!(kind_of(no_perm), Some((StorageErrorKind::Rejected, false)));
        for cluster in [
            ServerErrorKind::Moved,
            ServerErrorKind::Ask,
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
        ] {
            let e = RedisError::from((cluster.into(), "cluster"));
            assert_eq!(kind_of(e), Some((StorageErrorKind::Unavailable, true)));
        }
        let cross = RedisError::from((ServerErrorKind::CrossSlot.into(), "cross slot"));
        assert_eq!(kind_of(cross), Some((StorageErrorKind::Rejected, false)));
        let oom = redis::make_extension_error("OOM".to_owned(), None);
        assert_eq!(kind_of(oom), Some((StorageErrorKind::Rejected, false)));
        let other = redis::make_extension_error("SOMETHING".to_owned(), None);
        assert_eq!(kind_of(other), Some((StorageErrorKind::Other, false)));
    }
}
