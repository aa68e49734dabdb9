//! In-process single-flight: concurrent calls for one key share one load.
//!
//! A load runs in a task of its own, not in the caller's future, so that a
//! caller that stops waiting (a soft or hard timeout, or a dropped future)
//! does not cancel it: its result still lands in the store (background
//! completion), and every caller still waiting gets it.
//!
//! A load may answer its callers before it is done (with
//! [`background_write`](super::EntryOptions::background_write), before the
//! store write; always before the lease release): until it is done, its
//! flight stays in the map, so a call starting in that window joins it and
//! gets the answer instead of reading a store the write has not reached yet
//! and loading again, and the flight map lets the facade's own
//! `get`, `set`, `remove` and `expire` wait for the write to land first.

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
    /// The callers have their answer; the load is still writing it (or
    /// releasing its lease).
    answered: Arc<AtomicBool>,
    /// Resolves when the load's task is done.
    settled: Shared<BoxFuture<'static, ()>>,
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

    /// Resolves when the load's task is done (written, lease released).
    pub(crate) fn settled(&self) -> Shared<BoxFuture<'static, ()>> {
        self.settled.clone()
    }

    /// Marks that a caller stopped waiting.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

/// What a running load is told about its flight, and how it answers.
#[derive(Debug)]
pub(crate) struct FlightContext {
    abandoned: Arc<AtomicBool>,
    answered: Arc<AtomicBool>,
    answer: Option<oneshot::Sender<Landed>>,
}

impl FlightContext {
    /// Whether some caller stopped waiting before the result landed.
    pub(crate) fn was_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Gives every caller of the flight its answer; the load may go on
    /// (writing, releasing its lease) with its flight still joinable until
    /// it returns this context. Only the first answer counts.
    pub(crate) fn answer(&mut self, landed: Landed) {
        if let Some(tx) = self.answer.take() {
            // Before the send: a caller that has its answer and calls `set`
            // at once must find the write still pending.
            self.answered.store(true, Ordering::Release);
            let _ = tx.send(landed);
        }
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
    /// and `input` (spawned on the current runtime). `input` (the loader)
    /// comes back when this call joined a flight instead of starting one,
    /// so a caller that cannot use that flight's answer can start its own
    /// once it has settled. The load answers through its [`FlightContext`]
    /// and returns it when it is done.
    pub(crate) fn join_or_start<T, L, Fut>(
        &self,
        key: &KvKey,
        input: T,
        load: L,
    ) -> (Flight, Option<T>)
    where
        L: FnOnce(FlightContext, T) -> Fut,
        Fut: Future<Output = FlightContext> + Send + 'static,
    {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, flight)) = map.get(key) {
            return (flight.clone(), Some(input));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let abandoned = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicBool::new(false));
        let (tx, rx) = oneshot::channel();
        let (settle, settled) = oneshot::channel::<()>();
        let future = load(
            FlightContext {
                abandoned: abandoned.clone(),
                answered: answered.clone(),
                answer: Some(tx),
            },
            input,
        );
        let landing = Landing {
            flights: self.clone(),
            key: key.clone(),
            id,
        };
        tokio::spawn(async move {
            let ctx = future.await;
            // Leave the map, then settle. A load answers before it returns
            // (see `FlightContext::answer`); one that did not (it panicked:
            // the guard and the context drop during unwinding all the same)
            // leaves its callers a "panicked" error through the dropped
            // sender.
            drop(landing);
            drop(ctx);
            drop(settle);
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
        let settled = settled.map(drop).boxed().shared();
        let flight = Flight {
            landed,
            abandoned,
            answered,
            settled,
        };
        map.insert(key.clone(), (id, flight.clone()));
        (flight, None)
    }

    /// The end of `key`'s flight if it has answered its callers and is
    /// still writing (or releasing its lease), so that a caller can order
    /// its own operation on the key after that write.
    pub(crate) fn pending_write(&self, key: &KvKey) -> Option<Shared<BoxFuture<'static, ()>>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, flight) = map.get(key)?;
        flight
            .answered
            .load(Ordering::Acquire)
            .then(|| flight.settled.clone())
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
