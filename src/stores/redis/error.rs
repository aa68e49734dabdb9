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
    // A few words of ours; redis-rs's text (the server's reply) is the
    // source, so printing the chain shows it once.
    let what = match kind {
        ErrorKind::Timeout => "no answer in time",
        ErrorKind::Unavailable => "cannot reach the server",
        ErrorKind::Config => "the server refused the client's settings",
        ErrorKind::InvalidValue => "the key holds another type",
        _ => match err.code() {
            Some(_) => "the server answered with an error",
            None => "the client failed",
        },
    };
    let message = match err.code() {
        Some(code) => format!("Redis: {what} ({code})"),
        None => format!("Redis: {what}"),
    };
    Error::new(kind, message).with_source(err)
}

/// A malformed URL: the message shows `shown` (already redacted), and the
/// secrets of `urls` are scrubbed from the driver's text too.
pub(super) fn config_error<'a>(
    shown: &str,
    err: RedisError,
    urls: impl IntoIterator<Item = &'a str>,
) -> Error {
    crate::redact::scrub(
        Error::config(format!("Redis URL {shown}: not valid")).with_source(err),
        urls,
    )
}
