//! Stale copies for [`stale_if_error`](super::CacheLayerBuilder::stale_if_error):
//! the last value this layer put in front for a key, kept past the front
//! entry's lifetime, to answer a read whose inner store fails.
//!
//! A copy is taken when an entry is installed in front (a fill or a write
//! that landed) and dropped when this layer learns the key changed: a write
//! through it that did not put a value in front (a delete, a failed or
//! unknown-outcome write) or an invalidation of the key. A front `clear` (what
//! a coherence source does when it may have missed changes, typically because
//! the shared tier is down) keeps the copies: that is when they are needed.
//! They are served only for a read whose inner call failed with a
//! [retryable](crate::Error::is_retryable) error, never for a key with a write
//! of unknown outcome, and never more than `max` past the front entry's own
//! end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::key::KvKey;
use crate::store::Value;

/// The most stale copies kept; past it, moka evicts the least useful.
const MAX_COPIES: u64 = 100_000;

/// The longest a copy is kept, whatever the settings: moka panics past
/// 1,000 years.
const MAX_KEEP: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

#[derive(Clone)]
struct StaleCopy {
    value: Arc<Value>,
    /// Past this, the copy is not served.
    until: Instant,
}

/// The stale copies of one cache layer.
pub(super) struct StaleCopies {
    copies: moka::future::Cache<KvKey, StaleCopy>,
    max: Duration,
}

impl StaleCopies {
    /// Copies served up to `max` past their front entry's end; none kept
    /// longer than `front_max_ttl + max`.
    pub(super) fn new(max: Duration, front_max_ttl: Duration) -> Self {
        let keep = front_max_ttl.saturating_add(max).min(MAX_KEEP);
        Self {
            copies: moka::future::Cache::builder()
                .max_capacity(MAX_COPIES)
                .time_to_live(keep.max(Duration::from_millis(1)))
                .build(),
            max,
        }
    }

    /// Remembers `value` for `key`, whose front entry lives `front_ttl`.
    pub(super) async fn keep(&self, key: &KvKey, value: Arc<Value>, front_ttl: Duration) {
        let Some(until) = Instant::now().checked_add(front_ttl.saturating_add(self.max)) else {
            return;
        };
        self.copies
            .insert(key.clone(), StaleCopy { value, until })
            .await;
    }

    /// Forgets `key`'s copy: this layer learned that the key changed.
    pub(super) async fn forget(&self, key: &KvKey) {
        self.copies.invalidate(key).await;
    }

    /// The copy of `key` still within its bound.
    pub(super) async fn get(&self, key: &KvKey) -> Option<Arc<Value>> {
        let copy = self.copies.get(key).await?;
        (copy.until > Instant::now()).then_some(copy.value)
    }
}
