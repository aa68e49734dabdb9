//! Driver errors (rusqlite, denokv_sqlite, KV Connect) as kvtower errors.

use crate::error::{Error, ErrorKind, Result};

pub(super) fn poisoned() -> Error {
    Error::new(ErrorKind::Backend, "the read connection's lock is poisoned")
}

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The answer of a local atomic write; a database still busy after
/// [`BUSY_ATTEMPTS`] is a retryable [`Unavailable`](ErrorKind::Unavailable).
pub(super) fn local_outcome(
    outcome: std::result::Result<
        denokv_proto::AtomicWriteOutcome,
        denokv_sqlite::SqliteBackendError,
    >,
) -> Result<bool> {
    match outcome {
        Ok(denokv_proto::AtomicWriteOutcome::Committed(_)) => Ok(true),
        Ok(denokv_proto::AtomicWriteOutcome::CheckFailed { .. }) => Ok(false),
        Err(e) if is_busy(&e) => Err(Error::new(
            ErrorKind::Unavailable,
            "the Deno KV database stayed locked by another connection",
        )
        .with_source(e)),
        Err(e) => Err(backend_error("write", e)),
    }
}

/// Whether SQLite refused `e`'s statement because another connection holds
/// the database (`SQLITE_BUSY`, `SQLITE_BUSY_SNAPSHOT` included).
pub(super) fn is_busy(e: &denokv_sqlite::SqliteBackendError) -> bool {
    matches!(e, denokv_sqlite::SqliteBackendError::SqliteError(e)
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy))
}

/// The one place a driver's error (rusqlite, KV Connect, a join) becomes a
/// kvtower error: the message says which step failed, the driver's error is
/// the source (not repeated in the message). The operation and key are the
/// caller's to add.
pub(super) fn backend_error(what: &'static str, e: impl Into<BoxError>) -> Error {
    Error::new(ErrorKind::Backend, format!("Deno KV {what} failed")).with_source(e)
}
