//! The per-operation bound of a [`PostgresKvStore`](super::PostgresKvStore),
//! and the rule that keeps an interrupted connection out of the pool.
//!
//! Every operation (pool checkout, statements, commit) runs within
//! [`Bounds::timeout`]. A connection whose operation did not finish (it timed
//! out, or the caller dropped the future) may be mid-query: a statement
//! waiting on another session's row lock, or a TCP connection nobody answers
//! on. Returned to the pool, it would make the next operation queue behind
//! that statement. So it leaves the pool (its connection task ends with it),
//! and the statement is cancelled on the server with the connection's cancel
//! token, which also releases the locks its transaction took.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::NoTls;

use super::error::{pool_error, timeout_error};
use crate::error::{Error, ErrorKind, Result};
use crate::operation::Operation;

/// How long an operation and a connection attempt may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// One operation, from the pool checkout to the last reply.
    pub(super) timeout: Duration,
    /// One connection attempt (and one cancel request).
    pub(super) connect_timeout: Duration,
}

/// A pooled connection checked out for one operation. Dropped before
/// [`finish`](Self::finish), the operation was interrupted: see the module
/// docs.
struct Checkout {
    /// `Some` until `finish` or `drop` takes it.
    object: Option<Object>,
    cancel_within: Duration,
}

impl Checkout {
    fn client(&mut self) -> Option<&mut Object> {
        self.object.as_mut()
    }

    /// The operation is over, with or without an error: no statement is in
    /// flight, and the connection goes back to the pool.
    fn finish(mut self) {
        drop(self.object.take());
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        let token = object.cancel_token();
        // Detached from the pool; dropping it ends the connection task.
        drop(deadpool_postgres::Object::take(object));
        let within = self.cancel_within;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // A server that cannot be reached keeps its statement until it
                // notices the closed socket: nothing more to do here.
                let _ = tokio::time::timeout(within, token.cancel_query(NoTls)).await;
            });
        }
    }
}

/// Runs `work` on a pooled connection within `bounds.timeout`.
pub(super) async fn run<T>(
    pool: &Pool,
    bounds: Bounds,
    operation: Operation,
    work: impl AsyncFnOnce(&mut Object) -> Result<T>,
) -> Result<T> {
    let bounded = async {
        let object = pool.get().await.map_err(pool_error)?;
        let mut checkout = Checkout {
            object: Some(object),
            cancel_within: bounds.connect_timeout,
        };
        let Some(client) = checkout.client() else {
            return Err(
                Error::new(ErrorKind::Backend, "no pooled connection").with_operation(operation)
            );
        };
        let result = work(client).await;
        checkout.finish();
        result
    };
    match tokio::time::timeout(bounds.timeout, bounded).await {
        Ok(result) => result,
        Err(_) => Err(timeout_error(bounds.timeout)),
    }
}
