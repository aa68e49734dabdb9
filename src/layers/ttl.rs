//! [`DefaultTtlLayer`]: gives every write a TTL.
//!
//! A write without a TTL gets the layer's default, optionally spread by a
//! random jitter so that entries written together do not all expire in the
//! same instant; an optional maximum clamps every TTL, explicit ones
//! included. A TTL of zero (already expired) always stays zero: neither the
//! jitter nor the clamp turns an expired write into a live one.
//!
//! ```
//! use kvtower::layers::DefaultTtlLayer;
//! use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let store = ServiceBuilder::new()
//!     .layer(
//!         DefaultTtlLayer::new(Duration::from_secs(300))
//!             .jitter(Duration::from_secs(30))
//!             .max_ttl(Duration::from_secs(3600)),
//!     )
//!     .service(MemoryKvStore::new());
//! store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?; // lives 300–330 s
//! # Ok(())
//! # }
//! ```

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::key::KvKey;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};

/// A [`tower::Layer`] that wraps a store in a [`DefaultTtl`]. Options are
/// consuming setters.
///
/// ```
/// use kvtower::layers::DefaultTtlLayer;
/// use kvtower::SetOptions;
/// use std::time::Duration;
///
/// let layer = DefaultTtlLayer::new(Duration::from_secs(60)).max_ttl(Duration::from_secs(120));
/// assert_eq!(layer.effective(SetOptions::default()).ttl, Some(Duration::from_secs(60)));
/// assert_eq!(layer.effective(SetOptions::ttl(Duration::from_secs(999))).ttl, Some(Duration::from_secs(120)));
/// assert_eq!(layer.effective(SetOptions::ttl(Duration::ZERO)).ttl, Some(Duration::ZERO));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct DefaultTtlLayer {
    policy: Arc<TtlPolicy>,
}

#[derive(Debug)]
struct TtlPolicy {
    default: Duration,
    jitter: Duration,
    max: Option<Duration>,
    /// Seeds the jitter: a per-layer random hasher over a counter is random
    /// enough to spread expiries, and needs no RNG dependency.
    random: RandomState,
    counter: AtomicU64,
}

impl TtlPolicy {
    fn effective(&self, options: SetOptions) -> SetOptions {
        let ttl = match options.ttl {
            // Already expired stays expired, whatever the jitter and clamp say.
            Some(Duration::ZERO) => return options,
            Some(ttl) => ttl,
            None => self.default.saturating_add(self.jitter_sample()),
        };
        let ttl = match self.max {
            Some(max) => ttl.min(max),
            None => ttl,
        };
        // A clamp of zero would turn a live write into a delete; a TTL of at
        // least one nanosecond keeps the write a write (max_ttl rejects zero).
        SetOptions::ttl(ttl)
    }

    fn jitter_sample(&self) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let random = self.random.hash_one(n);
        // Uniform in [0, jitter]: scale the random 64 bits onto the nanos.
        let nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        let sample = ((u128::from(random) * (u128::from(nanos) + 1)) >> 64) as u64;
        Duration::from_nanos(sample)
    }
}

impl DefaultTtlLayer {
    /// A layer giving `ttl` to every write that has none. A `ttl` of zero
    /// makes such writes expire at once (the key is left absent).
    pub fn new(ttl: Duration) -> Self {
        Self {
            policy: Arc::new(TtlPolicy {
                default: ttl,
                jitter: Duration::ZERO,
                max: None,
                random: RandomState::new(),
                counter: AtomicU64::new(0),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut TtlPolicy)) -> Self {
        let mut policy = Arc::try_unwrap(self.policy).unwrap_or_else(|shared| TtlPolicy {
            default: shared.default,
            jitter: shared.jitter,
            max: shared.max,
            random: RandomState::new(),
            counter: AtomicU64::new(0),
        });
        f(&mut policy);
        Self {
            policy: Arc::new(policy),
        }
    }

    /// Adds a uniformly random extra in `[0, jitter]` to each default TTL, so
    /// entries written together expire spread out. Explicit TTLs are kept.
    pub fn jitter(self, jitter: Duration) -> Self {
        self.with(|p| p.jitter = jitter)
    }

    /// Clamps every TTL (default or explicit) to at most `max`. A zero `max`
    /// is raised to one nanosecond so that a write never becomes a delete.
    pub fn max_ttl(self, max: Duration) -> Self {
        self.with(|p| p.max = Some(max.max(Duration::from_nanos(1))))
    }

    /// The options a write given `options` is stored with: what the layer
    /// does, as a function.
    pub fn effective(&self, options: SetOptions) -> SetOptions {
        self.policy.effective(options)
    }
}

impl<S> tower::Layer<S> for DefaultTtlLayer {
    type Service = DefaultTtl<S>;

    fn layer(&self, inner: S) -> DefaultTtl<S> {
        DefaultTtl {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// A store that gives writes without a TTL a default one. Built by
/// [`DefaultTtlLayer`].
///
/// ```
/// use kvtower::{layers::DefaultTtlLayer, MemoryKvStore};
/// use std::time::Duration;
/// use tower::Layer;
/// let store = DefaultTtlLayer::new(Duration::from_secs(60)).layer(MemoryKvStore::new());
/// let _inner: &MemoryKvStore = store.inner();
/// ```
#[derive(Debug, Clone)]
pub struct DefaultTtl<S> {
    inner: S,
    policy: Arc<TtlPolicy>,
}

impl<S> DefaultTtl<S> {
    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner store.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

#[async_trait]
impl<S: KvStore> KvStore for DefaultTtl<S> {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        self.inner
            .set(key, value, self.policy.effective(options))
            .await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        self.inner
            .cas(key, expected, new, self.policy.effective(options))
            .await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        self.inner.list(prefix)
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        self.inner.get_with_ttl(key).await
    }

    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        // Reads are the inner store's: no box of its own.
        self.inner.get_shared(key)
    }

    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        self.inner
            .set_shared(key, value, self.policy.effective(options))
            .await
    }

    fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
        self.inner.probe(key)
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        self.inner.get_many(keys).await
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        self.inner.get_many_with_ttl(keys).await
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        // One TTL for the batch, like the caller's one `options`.
        self.inner
            .set_many(entries, self.policy.effective(options))
            .await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        self.inner.delete_many(keys).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let layer = DefaultTtlLayer::new(Duration::from_secs(10)).jitter(Duration::from_secs(2));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let ttl = layer.effective(SetOptions::default()).ttl.unwrap();
            assert!(
                ttl >= Duration::from_secs(10) && ttl <= Duration::from_secs(12),
                "{ttl:?}"
            );
            seen.insert(ttl);
        }
        assert!(seen.len() > 900, "jitter spreads expiries: {}", seen.len());
        // Explicit TTLs keep their value.
        let explicit = SetOptions::ttl(Duration::from_secs(3));
        assert_eq!(layer.effective(explicit), explicit);
    }

    #[test]
    fn zero_stays_zero_and_clamp_applies() {
        let layer = DefaultTtlLayer::new(Duration::from_secs(10))
            .jitter(Duration::from_secs(5))
            .max_ttl(Duration::ZERO);
        assert_eq!(
            layer.effective(SetOptions::ttl(Duration::ZERO)).ttl,
            Some(Duration::ZERO)
        );
        assert_eq!(
            layer.effective(SetOptions::default()).ttl,
            Some(Duration::from_nanos(1))
        );
        let layer = DefaultTtlLayer::new(Duration::from_secs(10)).max_ttl(Duration::from_secs(4));
        assert_eq!(
            layer.effective(SetOptions::ttl(Duration::MAX)).ttl,
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            layer.effective(SetOptions::default()).ttl,
            Some(Duration::from_secs(4))
        );
    }
}
