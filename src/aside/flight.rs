//! In-process single-flight: concurrent calls for one key share one load.
//!
//! A load runs in a task of its own, not in the caller's future, so that a
//! caller that stops waiting (a soft or hard timeout, or a dropped future)
//! does not cancel it: its result still lands in the store (background
//! completion), and every caller still waiting gets it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind};
use crate::key::KvKey;

/// What a load gives every caller of its flight.
#[derive(Debug, Clone)]
pub(crate) enum Landed {
    /// A value the loader produced (`None`: it said absent), or one that
    /// another node loaded while this one waited on the lease.
    Loaded(Option<Value>),
    /// The loader failed or passed its bound: each caller serves its stale
    /// value (fail-safe) or returns the error.
    Failed(SharedError),
}

/// An [`Error`] several callers share: each gets its own `Error` of the
/// same kind and message with the shared one as its source.
#[derive(Clone)]
pub(crate) struct SharedError(Arc<Error>);

impl SharedError {
    pub(crate) fn new(error: Error) -> Self {
        Self(Arc::new(error))
    }

    /// A fresh `Error` for one caller.
    pub(crate) fn to_error(&self) -> Error {
        let mut error = Error::new(self.0.kind(), self.0.message())
            .with_retryable(self.0.is_retryable())
            .with_source(self.clone());
        if let Some(op) = self.0.operation() {
            error = error.with_operation(op);
        }
        if let Some(key) = self.0.key() {
            error = error.with_key(key);
        }
        error
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The caller's copy already says kind and message; this link of the
        // chain stands for the shared error's source, so printing the chain
        // shows each error once.
        match std::error::Error::source(&*self.0) {
            Some(source) => fmt::Display::fmt(source, f),
            None => f.write_str("shared by the callers of one load"),
        }
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0).and_then(std::error::Error::source)
    }
}

/// One load in progress, joinable by any number of callers.
#[derive(Clone)]
pub(crate) struct Flight {
    landed: Shared<BoxFuture<'static, Landed>>,
    /// Set by a caller that stopped waiting: a result landing after that is
    /// a background completion (counted as such).
    abandoned: Arc<AtomicBool>,
}

impl fmt::Debug for Flight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight").finish_non_exhaustive()
    }
}

impl Flight {
    /// Waits for the load's result.
    pub(crate) fn landed(&self) -> Shared<BoxFuture<'static, Landed>> {
        self.landed.clone()
    }

    /// Marks that a caller stopped waiting.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

/// What a running load is told about its flight.
#[derive(Debug, Clone)]
pub(crate) struct FlightContext {
    abandoned: Arc<AtomicBool>,
}

impl FlightContext {
    /// Whether some caller stopped waiting before the result landed.
    pub(crate) fn was_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }
}

/// The flights in progress, by key. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub(crate) struct Flights {
    map: Arc<Mutex<HashMap<KvKey, (u64, Flight)>>>,
    next_id: Arc<AtomicU64>,
}

impl Flights {
    /// The flight of `key` if one is running, else one started from `load`
    /// (spawned on the current runtime). Returns whether this call started
    /// it (only then is `load` used).
    pub(crate) fn join_or_start<L, Fut>(&self, key: &KvKey, load: L) -> (Flight, bool)
    where
        L: FnOnce(FlightContext) -> Fut,
        Fut: Future<Output = Landed> + Send + 'static,
    {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, flight)) = map.get(key) {
            return (flight.clone(), false);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let abandoned = Arc::new(AtomicBool::new(false));
        let (tx, rx) = oneshot::channel();
        let future = load(FlightContext {
            abandoned: abandoned.clone(),
        });
        let landing = Landing {
            flights: self.clone(),
            key: key.clone(),
            id,
        };
        tokio::spawn(async move {
            let landed = future.await;
            // Leave the map before answering: a call that starts after the
            // answer then starts a new flight and reads what this one wrote,
            // instead of joining a finished flight. (On a panic the guard
            // drops during unwinding and leaves the map all the same.)
            drop(landing);
            let _ = tx.send(landed);
        });
        let landed = rx
            .map(|result| {
                result.unwrap_or_else(|_| {
                    Landed::Failed(SharedError::new(Error::new(
                        ErrorKind::Backend,
                        "the loader task panicked or was cancelled",
                    )))
                })
            })
            .boxed()
            .shared();
        let flight = Flight { landed, abandoned };
        map.insert(key.clone(), (id, flight.clone()));
        (flight, true)
    }

    /// Whether a flight of `key` is running.
    pub(crate) fn is_running(&self, key: &KvKey) -> bool {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }
}

/// Removes its flight from the map when dropped (also on panic).
struct Landing {
    flights: Flights,
    key: KvKey,
    id: u64,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only this flight: a newer one of the same key stays.
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}
