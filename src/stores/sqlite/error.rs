//! The one place rusqlite errors become kvtower errors.

use rusqlite::ErrorCode;

use crate::error::{Error, ErrorKind};
use crate::operation::Operation;

/// Maps a rusqlite error: busy and locked databases are retryable. The
/// message names the failure in a few words; the driver's error is the
/// source (its text is not repeated here). The operation and key are added
/// at the store's method boundary.
pub(super) fn sqlite_error(err: rusqlite::Error) -> Error {
    let (kind, retryable, what) = match &err {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy => (ErrorKind::Backend, true, "database busy"),
            ErrorCode::DatabaseLocked => (ErrorKind::Backend, true, "database locked"),
            ErrorCode::CannotOpen => (ErrorKind::Unavailable, true, "cannot open the database"),
            ErrorCode::TooBig => (ErrorKind::ValueTooLarge, false, "value too large"),
            ErrorCode::ReadOnly => (ErrorKind::Backend, false, "database is read-only"),
            ErrorCode::DiskFull => (ErrorKind::Backend, false, "disk full"),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                (ErrorKind::Backend, false, "not a valid database file")
            }
            ErrorCode::SystemIoFailure => (ErrorKind::Backend, false, "I/O error"),
            ErrorCode::ConstraintViolation => (ErrorKind::Backend, false, "constraint violation"),
            _ => (ErrorKind::Backend, false, "statement failed"),
        },
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            (ErrorKind::InvalidValue, false, "unexpected column type")
        }
        _ => (ErrorKind::Backend, false, "call failed"),
    };
    let error = Error::new(kind, format!("sqlite: {what}")).with_retryable(retryable);
    match err {
        // rusqlite shows SQLite's message, and its source (the result code)
        // shows the code's generic text, often the same words: chain only
        // what adds something, so printing the chain shows each text once.
        rusqlite::Error::SqliteFailure(code, message)
            if message.as_ref().is_none_or(|m| *m == code.to_string()) =>
        {
            error.with_source(code)
        }
        other => error.with_source(other),
    }
}

pub(super) fn closed(operation: Operation) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the SQLite connection thread has stopped",
    )
    .with_operation(operation)
    .with_retryable(false)
}
