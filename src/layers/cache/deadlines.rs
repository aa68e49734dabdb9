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

use std::time::{Duration, Instant};

use crate::key::KvKey;

/// The bound of the TTL memory, in keys.
const MAX_ENTRIES: u64 = 100_000;

/// Remembered inner lifetimes, by key: `Some(deadline)`, or `None` for an
/// entry that lives until deleted.
pub(super) struct Deadlines {
    map: moka::future::Cache<KvKey, Option<Instant>>,
}

impl Deadlines {
    pub(super) fn new() -> Self {
        Self {
            map: moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(DeadlineExpiry)
                .build(),
        }
    }

    /// The remembered lifetime of `key`, if any (`Some(None)`: lives until
    /// deleted).
    pub(super) async fn get(&self, key: &KvKey) -> Option<Option<Instant>> {
        self.map.get(key).await
    }

    /// Remembers that the inner entry of `key` dies at `deadline` (`None`:
    /// never), as a fill from a store that reports TTLs learned.
    pub(super) async fn record(&self, key: &KvKey, deadline: Option<Instant>) {
        self.map.insert(key.clone(), deadline).await
    }

    /// Forgets `key` (its inner entry is gone, or its lifetime unknown).
    pub(super) async fn forget(&self, key: &KvKey) {
        self.map.invalidate(key).await
    }

    /// Keeps the memory right after a write of `key` with `ttl`, started at
    /// `start`, that is known to have landed (`landed`) or may have.
    pub(super) async fn after_write(
        &self,
        key: &KvKey,
        start: Instant,
        landed: bool,
        ttl: Option<Duration>,
    ) {
        // A deadline too far to represent is no deadline.
        let deadline = ttl.and_then(|ttl| start.checked_add(ttl));
        match (deadline, landed) {
            (Some(deadline), true) => self.map.insert(key.clone(), Some(deadline)).await,
            // No TTL: the inner entry lives until deleted.
            (None, true) => self.map.insert(key.clone(), None).await,
            // Unknown outcome: the inner entry is the old one (old deadline)
            // or this write's (no earlier than `deadline`). The earlier of the
            // two is safe either way; an unknown old deadline means "none".
            (Some(deadline), false) => {
                let earliest = match self.map.get(key).await {
                    Some(Some(old)) => old.min(deadline),
                    _ => deadline,
                };
                self.map.insert(key.clone(), Some(earliest)).await
            }
            // Unknown outcome without a TTL: if it landed, the entry lives
            // forever, which the old deadline understates; keep it.
            (None, false) => {}
        }
    }
}

/// Drops a remembered deadline when it passes.
struct DeadlineExpiry;

impl moka::Expiry<KvKey, Option<Instant>> for DeadlineExpiry {
    fn expire_after_create(
        &self,
        _: &KvKey,
        deadline: &Option<Instant>,
        now: Instant,
    ) -> Option<Duration> {
        deadline.map(|d| d.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &KvKey,
        deadline: &Option<Instant>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        deadline.map(|d| d.saturating_duration_since(now))
    }
}
