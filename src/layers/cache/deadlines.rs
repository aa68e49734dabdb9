//! TTL memory: when the inner entry of a key expires, as far as this layer
//! knows.
//!
//! Two users:
//!
//! * A store whose [`Capabilities::reports_ttl`](crate::Capabilities) is
//!   false answers `get_with_ttl` without the remaining lifetime, so a
//!   read-through fill would not know when the inner entry dies. For keys
//!   written with a TTL through this layer the deadline is remembered here
//!   (in a bounded map) and a fill lives only what remains of it; any other
//!   fill lives the front maximum.
//! * A cache's own `get_with_ttl` answers a front hit with what remains of
//!   the remembered lifetime (fills from a store that reports TTLs record
//!   it); a key without a remembered lifetime is read through.
//!
//! Every deadline is measured from *before* the write's inner call: the inner
//! entry expires no earlier than `start + ttl`, so the front never outlives
//! it, however long the call took. A write whose outcome is unknown only ever
//! shortens a remembered deadline, never lengthens it.
//!
//! Every miss that fills the front records here, so the map is plain hash
//! maps behind striped mutexes (a lock, a probe, an insert: a few hundred
//! instructions), not a moka cache (about 3,600 per insert with its
//! frequency sketch, write channel and timer wheel). Passed deadlines are
//! dropped when read; a full stripe first drops its passed deadlines, then
//! a quarter of its entries, whichever they are. A forgotten deadline only
//! costs what no deadline costs: a fill from a store that does not report
//! TTLs lives the front maximum, and a `get_with_ttl` front hit reads
//! through.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::key::KvKey;

/// The bound of the TTL memory, in keys.
const MAX_ENTRIES: usize = 100_000;

/// Lock stripes (a power of two): a fill holds one for a map insert only.
const SHARDS: usize = 64;

/// The bound of one stripe.
const SHARD_MAX: usize = MAX_ENTRIES / SHARDS;

type Shard = HashMap<KvKey, Option<Instant>, foldhash::fast::RandomState>;

/// Remembered inner lifetimes, by key: `Some(deadline)`, or `None` for an
/// entry that lives until deleted.
pub(super) struct Deadlines {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
}

impl Deadlines {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, key: &KvKey) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize & (SHARDS - 1);
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The remembered lifetime of `key`, if any and not yet passed
    /// (`Some(None)`: lives until deleted).
    pub(super) fn get(&self, key: &KvKey) -> Option<Option<Instant>> {
        let mut shard = self.shard(key);
        match shard.get(key).copied()? {
            Some(deadline) if deadline <= Instant::now() => {
                shard.remove(key);
                None
            }
            remembered => Some(remembered),
        }
    }

    /// Remembers that the inner entry of `key` dies at `deadline` (`None`:
    /// never), as a fill from a store that reports TTLs learned.
    pub(super) fn record(&self, key: &KvKey, deadline: Option<Instant>) {
        let mut shard = self.shard(key);
        if shard.len() >= SHARD_MAX && !shard.contains_key(key) {
            make_room(&mut shard);
        }
        shard.insert(key.clone(), deadline);
    }

    /// Forgets `key` (its inner entry is gone, or its lifetime unknown).
    pub(super) fn forget(&self, key: &KvKey) {
        self.shard(key).remove(key);
    }

    /// Keeps the memory right after a write of `key` with `ttl`, started at
    /// `start`, that is known to have landed (`landed`) or may have.
    pub(super) fn after_write(
        &self,
        key: &KvKey,
        start: Instant,
        landed: bool,
        ttl: Option<Duration>,
    ) {
        // A deadline too far to represent is no deadline.
        let deadline = ttl.and_then(|ttl| start.checked_add(ttl));
        match (deadline, landed) {
            (Some(deadline), true) => self.record(key, Some(deadline)),
            // No TTL: the inner entry lives until deleted.
            (None, true) => self.record(key, None),
            // Unknown outcome: the inner entry is the old one (old deadline)
            // or this write's (no earlier than `deadline`). The earlier of the
            // two is safe either way; an unknown old deadline means "none".
            (Some(deadline), false) => {
                let earliest = match self.get(key) {
                    Some(Some(old)) => old.min(deadline),
                    _ => deadline,
                };
                self.record(key, Some(earliest));
            }
            // Unknown outcome without a TTL: if it landed, the entry lives
            // forever, which the old deadline understates; keep it.
            (None, false) => {}
        }
    }
}

/// Frees room in a full stripe: its passed deadlines, else a quarter of its
/// entries (so that a stripe full of live deadlines is scanned once per
/// quarter of its size, not once per insert).
fn make_room(shard: &mut Shard) {
    let now = Instant::now();
    shard.retain(|_, deadline| deadline.is_none_or(|d| d > now));
    if shard.len() >= SHARD_MAX {
        let excess = shard.len() - SHARD_MAX * 3 / 4;
        let dropped: Vec<KvKey> = shard.keys().take(excess).cloned().collect();
        for key in dropped {
            shard.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> KvKey {
        crate::kvkey!["k", i.to_string()]
    }

    #[test]
    fn remembers_forgets_and_drops_passed_deadlines() {
        let deadlines = Deadlines::new();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert_eq!(deadlines.get(&key(1)), None);
        deadlines.record(&key(1), Some(later));
        deadlines.record(&key(2), None);
        deadlines.record(&key(3), Some(now));
        assert_eq!(deadlines.get(&key(1)), Some(Some(later)));
        assert_eq!(deadlines.get(&key(2)), Some(None));
        assert_eq!(deadlines.get(&key(3)), None, "a passed deadline is gone");
        deadlines.forget(&key(1));
        assert_eq!(deadlines.get(&key(1)), None);
    }

    #[test]
    fn an_unknown_outcome_only_shortens() {
        let deadlines = Deadlines::new();
        let start = Instant::now();
        deadlines.after_write(&key(1), start, true, Some(Duration::from_secs(10)));
        deadlines.after_write(&key(1), start, false, Some(Duration::from_secs(60)));
        assert_eq!(
            deadlines.get(&key(1)),
            Some(Some(start + Duration::from_secs(10)))
        );
        deadlines.after_write(&key(1), start, false, Some(Duration::from_secs(5)));
        assert_eq!(
            deadlines.get(&key(1)),
            Some(Some(start + Duration::from_secs(5)))
        );
        deadlines.after_write(&key(2), start, false, None);
        assert_eq!(deadlines.get(&key(2)), None, "nothing to vouch for");
    }

    #[test]
    fn stays_bounded() {
        let deadlines = Deadlines::new();
        let later = Some(Instant::now() + Duration::from_secs(60));
        for i in 0..3 * MAX_ENTRIES {
            deadlines.record(&key(i), later);
        }
        let held: usize = deadlines
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum();
        assert!(held <= MAX_ENTRIES, "{held} entries");
        assert!(held >= MAX_ENTRIES / 2, "{held} entries");
        // The latest write is always kept.
        assert_eq!(deadlines.get(&key(3 * MAX_ENTRIES - 1)), Some(later));
    }
}
