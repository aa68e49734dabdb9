//! The stored format of an entry: the value plus its logical expiry and
//! creation time, as one JSON object, so that every store (and a plain `get`
//! through any [`KvStore`](crate::KvStore)) can hold and read it.
//!
//! ```json
//! {"value": <the value>, "kvtower_aside": {"created_ms": 1767225600000, "expires_ms": 1767225660000, "stale_until_ms": 1767229260000}}
//! ```
//!
//! * `created_ms`: when the value was loaded (Unix milliseconds);
//! * `expires_ms`: its logical expiry: fresh before, stale after;
//! * `stale_until_ms`: how long it may be served stale by fail-safe (equal to
//!   `expires_ms` without fail-safe); the store's own TTL of the key ends
//!   there, so nothing outlives it.
//!
//! A remembered absent result (negative caching) is the same object without
//! `value`. A value in any other shape (written around `CacheAside`) is read
//! as a fresh value of unknown age.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// The metadata field of a stored entry.
pub(crate) const META: &str = "kvtower_aside";
const VALUE: &str = "value";
const CREATED: &str = "created_ms";
const EXPIRES: &str = "expires_ms";
const STALE_UNTIL: &str = "stale_until_ms";

/// An entry as `CacheAside` reads and writes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// `None`: the loader said absent (negative caching).
    pub(crate) value: Option<Value>,
    pub(crate) created_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) stale_until_ms: u64,
}

impl Entry {
    /// A value of unknown age and expiry: written around `CacheAside`.
    fn foreign(value: Value) -> Self {
        Self {
            value: Some(value),
            created_ms: 0,
            expires_ms: u64::MAX,
            stale_until_ms: u64::MAX,
        }
    }

    /// Reads a stored value: an entry object, or any other value as a fresh
    /// foreign one.
    pub(crate) fn from_stored(stored: Value) -> Self {
        match &stored {
            Value::Object(map) => match Self::times(map) {
                Some((created_ms, expires_ms, stale_until_ms)) => {
                    let Value::Object(mut map) = stored else {
                        unreachable!("matched an object above")
                    };
                    Self {
                        value: map.remove(VALUE),
                        created_ms,
                        expires_ms,
                        stale_until_ms,
                    }
                }
                None => Self::foreign(stored),
            },
            _ => Self::foreign(stored),
        }
    }

    /// [`from_stored`](Self::from_stored) of a shared value: copies only
    /// the entry's value out (what a hit returns), not the whole object.
    pub(crate) fn from_shared(stored: &Value) -> Self {
        match stored {
            Value::Object(map) => match Self::times(map) {
                Some((created_ms, expires_ms, stale_until_ms)) => Self {
                    value: map.get(VALUE).cloned(),
                    created_ms,
                    expires_ms,
                    stale_until_ms,
                },
                None => Self::foreign(stored.clone()),
            },
            _ => Self::foreign(stored.clone()),
        }
    }

    /// The times of a stored entry object, or `None` when `map` is not one
    /// (a foreign value).
    fn times(map: &Map<String, Value>) -> Option<(u64, u64, u64)> {
        let meta = match map.get(META) {
            Some(Value::Object(meta)) if map.len() <= 2 => meta,
            _ => return None,
        };
        let field = |name| meta.get(name).and_then(Value::as_u64);
        let times = (field(CREATED)?, field(EXPIRES)?, field(STALE_UNTIL)?);
        if map.len() == 2 && !map.contains_key(VALUE) {
            return None;
        }
        Some(times)
    }

    /// The stored form (see the module docs).
    pub(crate) fn into_stored(self) -> Value {
        let mut meta = Map::with_capacity(3);
        meta.insert(CREATED.into(), self.created_ms.into());
        meta.insert(EXPIRES.into(), self.expires_ms.into());
        meta.insert(STALE_UNTIL.into(), self.stale_until_ms.into());
        let mut map = Map::with_capacity(2);
        if let Some(value) = self.value {
            map.insert(VALUE.into(), value);
        }
        map.insert(META.into(), Value::Object(meta));
        Value::Object(map)
    }

    pub(crate) fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }

    /// Whether fail-safe may still serve it.
    pub(crate) fn is_servable_stale(&self, now_ms: u64) -> bool {
        now_ms < self.stale_until_ms
    }

    /// Whether a read now is past `threshold` of the entry's TTL.
    pub(crate) fn wants_refresh(&self, now_ms: u64, threshold: f64) -> bool {
        if self.expires_ms == u64::MAX || self.expires_ms <= self.created_ms {
            return false;
        }
        let ttl = (self.expires_ms - self.created_ms) as f64;
        now_ms.saturating_sub(self.created_ms) as f64 >= ttl * threshold
    }

    /// The TTL the store keeps the key for: until `stale_until_ms`. `None`
    /// when that has passed (nothing to write).
    pub(crate) fn store_ttl(&self, now_ms: u64) -> Option<Duration> {
        if self.stale_until_ms == u64::MAX {
            return Some(Duration::MAX);
        }
        let left = self.stale_until_ms.checked_sub(now_ms)?;
        (left > 0).then(|| Duration::from_millis(left))
    }
}

/// The clock of entries: the wall clock read once at build, advanced by
/// tokio's monotonic clock. Entries are shared across processes, so their
/// times must be wall-clock times; advancing by tokio's clock keeps them
/// monotonic within a process and lets tests pause time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// `at + d` in milliseconds, saturating (a TTL of `Duration::MAX` never ends).
pub(crate) fn add_ms(at: u64, d: Duration) -> u64 {
    at.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_reads_foreign_values() {
        let entry = Entry {
            value: Some(json!({"name": "Ada"})),
            created_ms: 10,
            expires_ms: 20,
            stale_until_ms: 30,
        };
        assert_eq!(Entry::from_stored(entry.clone().into_stored()), entry);
        let absent = Entry {
            value: None,
            ..entry.clone()
        };
        assert_eq!(Entry::from_stored(absent.clone().into_stored()), absent);
        // Anything else is a fresh value of unknown age.
        for foreign in [
            json!(1),
            json!({"value": 1}),
            json!({"kvtower_aside": 1, "value": 2}),
            json!({"kvtower_aside": {"created_ms": 1}, "value": 2}),
            json!({"kvtower_aside": {"created_ms": 1, "expires_ms": 2, "stale_until_ms": 3}, "x": 2}),
        ] {
            let read = Entry::from_stored(foreign.clone());
            assert_eq!(read.value, Some(foreign));
            assert!(read.is_fresh(u64::MAX - 1));
            assert!(!read.wants_refresh(u64::MAX - 1, 0.5));
        }
    }

    #[test]
    fn refresh_threshold_and_store_ttl() {
        let entry = Entry {
            value: Some(json!(1)),
            created_ms: 1_000,
            expires_ms: 2_000,
            stale_until_ms: 5_000,
        };
        assert!(!entry.wants_refresh(1_700, 0.8));
        assert!(entry.wants_refresh(1_800, 0.8));
        assert_eq!(entry.store_ttl(4_000), Some(Duration::from_secs(1)));
        assert_eq!(entry.store_ttl(5_000), None);
        assert!(entry.is_servable_stale(4_999) && !entry.is_fresh(2_000));
    }
}
