//! The one place tokio-postgres and pool errors become kvtower errors.
//!
//! The message names what failed in a few words, and for a server error the
//! server's reason and SQLSTATE ("postgres: lock not available (55P03)");
//! the driver's error is the source, carrying the server's full text. The
//! operation and key are added once, at the store's method boundary.

use std::time::Duration;

use deadpool_postgres::PoolError;
use tokio_postgres::error::{DbError, SqlState};

use crate::error::{Error, ErrorKind};

/// Maps a tokio-postgres error: lost connections are `Unavailable`,
/// serialization failures and deadlocks retryable `Backend` errors.
pub(super) fn pg_error(err: tokio_postgres::Error) -> Error {
    let io = std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>());
    let (kind, retryable, message) = if let Some(db) = err.as_db_error() {
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
        (kind, retryable, server_message(db))
    } else if err.is_closed() {
        let message = "postgres: the connection is closed".to_owned();
        (ErrorKind::Unavailable, true, message)
    } else if io {
        let message = "postgres: cannot talk to the server".to_owned();
        (ErrorKind::Unavailable, true, message)
    } else {
        let message = "postgres: the client failed".to_owned();
        (ErrorKind::Backend, false, message)
    };
    // tokio-postgres's own text repeats its source's ("db error: ERROR:
    // ..."): chain the source itself (the server's error, the I/O error), so
    // that printing the chain shows each text once.
    let error = Error::new(kind, message).with_retryable(retryable);
    match err.into_source() {
        Some(source) => error.with_source(source),
        None => error,
    }
}

/// "postgres: {reason} ({SQLSTATE})", plus the constraint when the server
/// names one: enough to tell a lock timeout from a full disk without the
/// source chain.
fn server_message(db: &DbError) -> String {
    let code = db.code();
    let reason = reason(code);
    match db.constraint() {
        Some(constraint) => format!(
            "postgres: {reason} on constraint {constraint} ({})",
            code.code()
        ),
        None => format!("postgres: {reason} ({})", code.code()),
    }
}

/// A short reason for a SQLSTATE: the common ones by name, the rest by
/// class (the first two characters).
fn reason(code: &SqlState) -> &'static str {
    let known = [
        (SqlState::LOCK_NOT_AVAILABLE, "lock not available"),
        (
            SqlState::QUERY_CANCELED,
            "statement canceled (statement timeout)",
        ),
        (SqlState::T_R_SERIALIZATION_FAILURE, "serialization failure"),
        (SqlState::T_R_DEADLOCK_DETECTED, "deadlock detected"),
        (SqlState::UNIQUE_VIOLATION, "unique violation"),
        (SqlState::NOT_NULL_VIOLATION, "not-null violation"),
        (SqlState::CHECK_VIOLATION, "check violation"),
        (SqlState::FOREIGN_KEY_VIOLATION, "foreign key violation"),
        (SqlState::PROGRAM_LIMIT_EXCEEDED, "program limit exceeded"),
        (SqlState::ADMIN_SHUTDOWN, "server shutting down"),
        (
            SqlState::CANNOT_CONNECT_NOW,
            "server not accepting connections yet",
        ),
        (SqlState::TOO_MANY_CONNECTIONS, "too many connections"),
        (SqlState::UNDEFINED_TABLE, "table missing"),
        (SqlState::UNDEFINED_COLUMN, "column missing"),
        (SqlState::INSUFFICIENT_PRIVILEGE, "permission denied"),
        (SqlState::READ_ONLY_SQL_TRANSACTION, "read-only transaction"),
        (SqlState::DISK_FULL, "disk full"),
        (
            SqlState::INVALID_TEXT_REPRESENTATION,
            "invalid text representation",
        ),
        (
            SqlState::UNTRANSLATABLE_CHARACTER,
            "untranslatable character",
        ),
        (
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            "character not in repertoire",
        ),
        (SqlState::INVALID_PASSWORD, "authentication failed"),
        (
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "authentication failed",
        ),
        (SqlState::INVALID_CATALOG_NAME, "database missing"),
    ];
    if let Some((_, reason)) = known.iter().find(|(c, _)| c == code) {
        return reason;
    }
    match code.code().get(..2) {
        Some("08") => "connection exception",
        Some("22") => "data exception",
        Some("23") => "integrity constraint violation",
        Some("25") => "invalid transaction state",
        Some("40") => "transaction rollback",
        Some("42") => "syntax error or access rule violation",
        Some("53") => "insufficient resources",
        Some("54") => "program limit exceeded",
        Some("55") => "object not in prerequisite state",
        Some("57") => "operator intervention",
        Some("58") => "system error",
        _ => "server error",
    }
}

/// The error of an operation that got no answer within `timeout`:
/// retryable, like every [`Timeout`](ErrorKind::Timeout).
pub(super) fn timeout_error(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("no answer from Postgres within {timeout:?}"),
    )
}

pub(super) fn pool_error(err: PoolError) -> Error {
    match err {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(_) => Error::new(
            ErrorKind::Timeout,
            "postgres pool: no connection free in time",
        )
        .with_source(err),
        other => {
            Error::new(ErrorKind::Unavailable, "postgres pool: no connection").with_source(other)
        }
    }
}
