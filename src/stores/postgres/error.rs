//! The one place tokio-postgres and pool errors become kvtower errors.

use std::time::Duration;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::error::{Error, ErrorKind};
use crate::operation::Operation;

/// Maps a tokio-postgres error: lost connections are `Unavailable`,
/// serialization failures and deadlocks retryable `Backend` errors.
pub(super) fn pg_error(err: tokio_postgres::Error, operation: Operation) -> Error {
    let (kind, retryable) = if let Some(db) = err.as_db_error() {
        let code = db.code();
        let retryable = *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS;
        let kind = if *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
            ErrorKind::ValueTooLarge
        } else if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CANNOT_CONNECT_NOW {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Backend
        };
        (kind, retryable)
    } else if err.is_closed()
        || std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>())
    {
        (ErrorKind::Unavailable, true)
    } else {
        (ErrorKind::Backend, false)
    };
    Error::new(kind, format!("postgres: {err}"))
        .with_source(err)
        .with_operation(operation)
        .with_retryable(retryable)
}

/// The error of an operation that got no answer within `timeout`:
/// retryable, like every [`Timeout`](ErrorKind::Timeout).
pub(super) fn timeout_error(timeout: Duration, operation: Operation) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("no answer from Postgres within {timeout:?}"),
    )
    .with_operation(operation)
}

pub(super) fn pool_error(err: PoolError, operation: Operation) -> Error {
    match err {
        PoolError::Backend(e) => pg_error(e, operation),
        PoolError::Timeout(_) => Error::new(ErrorKind::Timeout, format!("postgres pool: {err}"))
            .with_operation(operation),
        other => Error::new(ErrorKind::Unavailable, format!("postgres pool: {other}"))
            .with_source(other)
            .with_operation(operation),
    }
}
