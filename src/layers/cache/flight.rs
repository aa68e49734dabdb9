//! Single-flight: concurrent misses of one key make one inner read.
//!
//! A flight is registered with the key's generation at its start (see
//! `tier`). A caller joins a flight only while the key's generation is still
//! that one: after a write or an invalidation of the key returned, a new
//! `get` never joins a read that started before it (and so may have read the
//! value the write replaced); it leads a fresh read instead.
//!
//! A leader alone (the common miss) costs one map insert and one removal:
//! the channel that hands its answer to followers is made by the first
//! follower, not by the leader.

use std::collections::hash_map::{self, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::store::Value;

/// What a read-through answers: the value and when the inner entry dies
/// (`None` inside: never, or the inner store cannot tell). A deadline rather
/// than a duration, so a follower that waited reports what is left *now*.
/// The value is shared with the front and with every follower: handing it
/// out costs a counter increment, not a copy of the tree.
pub(super) type Answer = Result<Option<(Arc<Value>, Option<Instant>)>>;

/// What a leader shares with the callers waiting on it.
pub(super) type Outcome = Option<Answer>;

struct Entry {
    id: u64,
    generation: u64,
    /// The leader reads the inner entry's lifetime too (a leader that does
    /// not answers no deadline, which a caller that wants one cannot use).
    with_ttl: bool,
    /// The leader's answer goes here; made by the first follower. Dropping
    /// it (the leader was cancelled, or a newer flight replaced this entry)
    /// wakes the followers, which then try again.
    tx: Option<watch::Sender<Outcome>>,
}

/// The reads of the inner store in flight, by key.
#[derive(Default)]
pub(super) struct Flights {
    // foldhash: a key hashes to its kept `u64` (see `KvKey`), and SipHash of
    // that alone is dearer than the rest of the map operation.
    inflight: Mutex<HashMap<KvKey, Entry, foldhash::fast::RandomState>>,
    next_id: AtomicU64,
}

/// What a caller of [`Flights::join`] is.
pub(super) enum Role<'a> {
    /// Reads the inner store and answers the followers.
    Leader(Flight<'a>),
    /// Waits for the leader's answer.
    Follower(watch::Receiver<Outcome>),
}

impl Flights {
    /// Joins the flight of `key` started at `generation` (the key's current
    /// one) that reads the lifetime too if `with_ttl`, or starts one.
    pub(super) fn join<'a>(&'a self, key: &'a KvKey, generation: u64, with_ttl: bool) -> Role<'a> {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            id,
            generation,
            with_ttl,
            tx: None,
        };
        // One probe of the map for the lookup and the insert (a key clone is
        // a counter increment).
        match inflight.entry(key.clone()) {
            // A flight of an older generation may have read what a write
            // since replaced: never join it (its entry is replaced below, so
            // its followers try again and join the new one; its fill is
            // dropped by the generation check). A caller that needs the
            // lifetime does not join a flight that does not read it either.
            hash_map::Entry::Occupied(mut occupied)
                if occupied.get().generation == generation
                    && (occupied.get().with_ttl || !with_ttl) =>
            {
                let current = occupied.get_mut();
                let rx = match &current.tx {
                    Some(tx) => tx.subscribe(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        current.tx = Some(tx);
                        rx
                    }
                };
                return Role::Follower(rx);
            }
            // Replaced: the old flight's followers wake (its sender drops).
            hash_map::Entry::Occupied(mut occupied) => drop(occupied.insert(entry)),
            hash_map::Entry::Vacant(vacant) => drop(vacant.insert(entry)),
        }
        Role::Leader(Flight {
            flights: self,
            key,
            id,
            done: false,
        })
    }
}

/// A leader's registration: removes itself from the map when dropped, so a
/// cancelled leader's followers retry instead of waiting forever (its sender
/// is dropped, which wakes them).
pub(super) struct Flight<'a> {
    flights: &'a Flights,
    key: &'a KvKey,
    id: u64,
    /// Unregistered already (by `finish`).
    done: bool,
}

impl Flight<'_> {
    /// Leaves the map (only if this flight is still the key's entry) and
    /// returns the followers' channel, if any came.
    fn unregister(&mut self) -> Option<watch::Sender<Outcome>> {
        self.done = true;
        let mut inflight = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match inflight.entry(self.key.clone()) {
            hash_map::Entry::Occupied(entry) if entry.get().id == self.id => entry.remove().tx,
            _ => None,
        }
    }

    /// Leaves the map, then answers the followers. Unregistering first means
    /// later callers find the filled front or lead a fresh read, never a
    /// finished flight; the followers are answered outside the map's lock.
    pub(super) fn finish(mut self, outcome: &Answer) {
        if let Some(tx) = self.unregister() {
            tx.send_replace(Some(copy_outcome(outcome)));
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Dropped outside the lock: waking the followers takes none.
            drop(self.unregister());
        }
    }
}

/// A copy of a leader's error for its followers (`Error` is not `Clone`: the
/// source cannot be copied, the rest is).
pub(super) fn copy_error(error: &Error) -> Error {
    let mut copy = Error::new(error.kind(), error.message()).with_retryable(error.is_retryable());
    if let Some(operation) = error.operation() {
        copy = copy.with_operation(operation);
    }
    if let Some(key) = error.key() {
        copy = copy.with_key(key);
    }
    copy
}

pub(super) fn copy_outcome(outcome: &Answer) -> Answer {
    match outcome {
        Ok(value) => Ok(value.clone()),
        Err(e) => Err(copy_error(e)),
    }
}
