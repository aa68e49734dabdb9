//! The one place redis-rs errors become kvtower errors.

use std::time::Duration;

use redis::{RedisError, ServerErrorKind};

use crate::error::{Error, ErrorKind};

pub(super) fn timeout_error(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("no answer from Redis within {timeout:?}"),
    )
}

/// The one place redis-rs errors become kvtower errors.
pub(super) fn map_redis_error(err: RedisError) -> Error {
    use redis::ErrorKind as K;
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        ErrorKind::Unavailable
    } else {
        match err.kind() {
            K::Io | K::ClusterConnectionNotFound => ErrorKind::Unavailable,
            K::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask,
            ) => ErrorKind::Unavailable,
            K::AuthenticationFailed | K::InvalidClientConfig => ErrorKind::Config,
            _ if err.code() == Some("WRONGTYPE") => ErrorKind::InvalidValue,
            _ => ErrorKind::Backend,
        }
    };
    Error::new(kind, format!("Redis: {err}")).with_source(err)
}

/// A malformed URL: the message shows `shown` (already redacted), and the
/// secrets of `urls` are scrubbed from the driver's text too.
pub(super) fn config_error<'a>(
    shown: &str,
    err: RedisError,
    urls: impl IntoIterator<Item = &'a str>,
) -> Error {
    crate::redact::scrub(
        Error::config(format!("Redis URL {shown}: {err}")).with_source(err),
        urls,
    )
}
