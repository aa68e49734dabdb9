//! The one place rusqlite errors become kvtower errors.

use rusqlite::ErrorCode;

use crate::error::{Error, ErrorKind};
use crate::operation::Operation;

/// Maps a rusqlite error: busy and locked databases are retryable.
pub(super) fn sqlite_error(err: rusqlite::Error, operation: Operation) -> Error {
    let (kind, retryable) = match &err {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => (ErrorKind::Backend, true),
            ErrorCode::CannotOpen => (ErrorKind::Unavailable, true),
            ErrorCode::TooBig => (ErrorKind::ValueTooLarge, false),
            _ => (ErrorKind::Backend, false),
        },
        _ => (ErrorKind::Backend, false),
    };
    Error::new(kind, format!("sqlite: {err}"))
        .with_source(err)
        .with_operation(operation)
        .with_retryable(retryable)
}

pub(super) fn closed(operation: Operation) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the SQLite connection thread has stopped",
    )
    .with_operation(operation)
    .with_retryable(false)
}
