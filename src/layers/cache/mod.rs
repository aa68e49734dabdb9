//! [`CacheLayer`]: a front tier (an L1, typically a [`MemoryKvStore`]) in
//! front of the inner store.
//!
//! * **Read-through**: a `get` that misses the front reads the inner store
//!   and fills the front.
//! * **Write-through**: `set`, `cas` and `delete` go to the inner store
//!   first; the front is updated or invalidated only after the inner store
//!   answered, so a failed write never leaves the front claiming a value the
//!   inner store lacks.
//! * **TTL**: a front entry never outlives the inner entry: a write's front
//!   TTL is the smaller of its own TTL and the front's maximum
//!   ([`front_max_ttl`](CacheLayerBuilder::front_max_ttl)). A read-through
//!   fill cannot ask the inner store for the entry's remaining TTL: for keys
//!   written with a TTL through this layer, the layer remembers the deadline
//!   (in a bounded map) and a fill lives only what remains of it; any other
//!   fill lives the front maximum. That maximum bounds how long a change
//!   made *around* this layer (directly in the inner store, or by another
//!   process) stays invisible.
//! * **Single-flight**: concurrent misses of one key make one inner read; the
//!   other callers wait for its answer.
//! * **Negative caching** (off by default): absent keys are remembered for
//!   [`negative_ttl`](CacheLayerBuilder::negative_ttl).
//! * `list` is served by the inner store, `cas` is decided by it.
//!
//! Any [`KvStore`] can be the front, so tiers stack: memory in front of
//! SQLite in front of Redis is two `CacheLayer`s.
//!
//! ```
//! use kvtower::layers::CacheLayer;
//! use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
//! use std::time::{Duration, Instant};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let backing = MemoryKvStore::new(); // stands in for Redis
//! let cache = CacheLayer::builder(MemoryKvStore::builder().max_entries(10_000).build())
//!     .front_max_ttl(Duration::from_secs(30))
//!     .negative_ttl(Duration::from_secs(1))
//!     .name("users")
//!     .build();
//! let store = ServiceBuilder::new().layer(cache.clone()).service(backing);
//! store.set(&kvkey!["user", "1"], "Ada".into(), SetOptions::default()).await?;
//! assert_eq!(store.get(&kvkey!["user", "1"]).await?, Some("Ada".into())); // a front hit
//! cache.handle().invalidate(&kvkey!["user", "1"]).await?; // e.g. from an invalidation bus
//! assert_eq!(store.get(&kvkey!["user", "1"]).await?, Some("Ada".into())); // read through again
//! # Ok(())
//! # }
//! ```
//!
//! # Coherence
//!
//! A front tier learns of changes made elsewhere through [`Coherence`]
//! sources, added with [`CacheLayerBuilder::coherence`]: the Redis
//! invalidation bus ([`invalidation`](crate::invalidation), also through
//! `invalidation_bus`), Redis client tracking, or an application's own
//! source. A source drops entries through a [`CacheHandle`] (from
//! [`CacheLayer::handle`] or [`Cache::handle`]: `invalidate(key)` and
//! `clear()`), is told about this layer's writes, and while it may be
//! missing changes the front is bypassed. [`CacheLayerBuilder::on_write`]
//! turns a closure into a source that only hears this layer's writes.
//!
//! # Read-after-write
//!
//! A `get` that starts after a write or an invalidation of its key returned
//! never returns a value older than that write: it never joins a read of the
//! inner store that started before (see `flight`), and a fill that read
//! before the write is dropped (see `tier`).
//!
//! # Writes with an unknown outcome
//!
//! A write that fails with a [retryable](crate::Error::is_retryable) error
//! (a timeout, a lost connection) may still land later. Its key is then read
//! from the inner store only, without filling the front, for
//! [`unknown_outcome_window`](CacheLayerBuilder::unknown_outcome_window),
//! after which it is invalidated and announced once more.
//!
//! # Metrics
//!
//! Each lookup counts `kvtower_cache_requests_total{cache, tier, outcome}`:
//! `tier="front"` with `outcome="hit"|"miss"` for every `get` (a remembered
//! absent key counts as a front hit: it was answered without the inner
//! store), and `tier="inner"` with `outcome="hit"|"miss"` for every inner
//! read a miss caused (one per single-flight, so inner reads can be fewer
//! than front misses). The hit ratio of a tier is `hit / (hit + miss)`. See
//! [`layers::metrics`](crate::layers::metrics) for the full table.
//!
//! [`MemoryKvStore`]: crate::MemoryKvStore

mod builder;
mod coherence;
mod deadlines;
mod flight;
mod stale;
mod tier;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use builder::{CacheLayerBuilder, DEFAULT_FRONT_MAX_TTL, DEFAULT_UNKNOWN_OUTCOME_WINDOW};
pub use coherence::{CacheHandle, CacheId, Coherence, WeakCacheHandle};

use crate::error::Result;
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};
use flight::Role;
use tier::{InnerTtl, Outcome, Tier};

/// The deadline a read-through answers: what the inner store reported,
/// counted from before the call (`None` when it cannot tell).
fn deadline(ttl: InnerTtl) -> Option<Instant> {
    match ttl {
        InnerTtl::Reported {
            left: Some(left),
            start,
        } => start.checked_add(left),
        _ => None,
    }
}

/// A value with a deadline as a value (copied out) with its remaining
/// lifetime.
fn remaining((value, deadline): (Arc<Value>, Option<Instant>)) -> (Value, Option<Duration>) {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    (Arc::unwrap_or_clone(value), left)
}

/// A [`tower::Layer`] putting a front tier in front of a store: see the
/// [module docs](self). Cheap to clone; clones share the front tier, so use
/// one layer per inner store.
///
/// ```
/// use kvtower::{layers::CacheLayer, MemoryKvStore};
/// use tower::Layer;
/// let store = CacheLayer::new(MemoryKvStore::new()).layer(MemoryKvStore::new());
/// let _front: &MemoryKvStore = store.front();
/// ```
pub struct CacheLayer<F> {
    tier: Arc<Tier<F>>,
}

impl<F> Clone for CacheLayer<F> {
    fn clone(&self) -> Self {
        Self {
            tier: self.tier.clone(),
        }
    }
}

impl<F> fmt::Debug for CacheLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("tier", &self.tier)
            .finish()
    }
}

impl<F: KvStore + 'static> CacheLayer<F> {
    /// A layer with `front` as the front tier and default options.
    pub fn new(front: F) -> Self {
        Self::builder(front).build()
    }

    /// A builder for the options, with `front` as the front tier.
    pub fn builder(front: F) -> CacheLayerBuilder<F> {
        CacheLayerBuilder::new(front)
    }

    /// A handle that invalidates front entries from outside (see
    /// [`CacheHandle`]).
    pub fn handle(&self) -> CacheHandle {
        handle(&self.tier)
    }
}

impl<F> CacheLayer<F> {
    /// The front tier.
    pub fn front(&self) -> &F {
        &self.tier.front
    }
}

fn handle<F: KvStore + 'static>(tier: &Arc<Tier<F>>) -> CacheHandle {
    CacheHandle {
        origin: tier.id,
        tier: tier.clone(),
    }
}

impl<S, F> tower::Layer<S> for CacheLayer<F> {
    type Service = Cache<S, F>;

    fn layer(&self, inner: S) -> Cache<S, F> {
        Cache {
            inner,
            tier: self.tier.clone(),
        }
    }
}

/// A store with a front tier: see the [module docs](self). Built by
/// [`CacheLayer`].
///
/// ```
/// use kvtower::{layers::CacheLayer, MemoryKvStore};
/// use tower::Layer;
/// let store = CacheLayer::new(MemoryKvStore::new()).layer(MemoryKvStore::new());
/// let _inner: &MemoryKvStore = store.inner();
/// ```
pub struct Cache<S, F> {
    inner: S,
    tier: Arc<Tier<F>>,
}

impl<S: Clone, F> Clone for Cache<S, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            tier: self.tier.clone(),
        }
    }
}

impl<S: fmt::Debug, F> fmt::Debug for Cache<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("tier", &self.tier)
            .finish()
    }
}

impl<S, F> Cache<S, F> {
    /// The inner store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The front tier.
    pub fn front(&self) -> &F {
        &self.tier.front
    }
}

impl<S, F: KvStore + 'static> Cache<S, F> {
    /// A handle that invalidates front entries from outside (see
    /// [`CacheHandle`]).
    pub fn handle(&self) -> CacheHandle {
        handle(&self.tier)
    }
}

impl<S: KvStore, F: KvStore + 'static> Cache<S, F> {
    /// Reads `key` from the inner store, once for all concurrent callers
    /// that started at the same generation, and fills the front. The
    /// answer's deadline is read only when `with_ttl` or when fills use it
    /// (not with [`fill_without_inner_ttl`](CacheLayerBuilder::fill_without_inner_ttl)).
    async fn read_through(&self, key: &KvKey, with_ttl: bool) -> flight::Answer {
        let tier = &*self.tier;
        let with_ttl = with_ttl || !tier.fill_without_inner_ttl;
        loop {
            let generation = tier.generation(key);
            match tier.flights.join(key, generation, with_ttl) {
                Role::Follower(mut rx) => match rx.wait_for(Option::is_some).await {
                    Ok(outcome) => {
                        if let Some(outcome) = &*outcome {
                            return flight::copy_outcome(outcome);
                        }
                    }
                    // The leader was cancelled before it answered: try again
                    // (one of the waiters becomes the new leader).
                    Err(_) => continue,
                },
                Role::Leader(flight) => {
                    let result = if with_ttl {
                        self.read_with_ttl(key).await
                    } else {
                        // The value only: one plain read, a shared value.
                        let found = self.inner.get_shared(key).await;
                        found.map(|found| found.map(|value| (value, InnerTtl::Unknown)))
                    };
                    let result = result.inspect(|found| tier.count_inner(found.is_some()));
                    let answer = match result {
                        Ok(found) => {
                            let ttl = found.as_ref().map_or(InnerTtl::Unknown, |(_, ttl)| *ttl);
                            tier.fill(key, generation, found.as_ref().map(|(v, _)| v), ttl)
                                .await;
                            Ok(found.map(|(value, ttl)| (value, deadline(ttl))))
                        }
                        // Answered now with no lifetime left: it is stale.
                        Err(e) => match tier.stale_for(key, &e).await {
                            Some(value) => Ok(Some((value, Some(Instant::now())))),
                            None => Err(e),
                        },
                    };
                    flight.finish(&answer);
                    return answer;
                }
            }
        }
    }

    /// The inner store's value of `key` with what it knows of its lifetime.
    async fn read_with_ttl(&self, key: &KvKey) -> Result<Option<(Arc<Value>, InnerTtl)>> {
        // Measured before the call: the inner entry lives at least its
        // reported remaining lifetime from here.
        let start = Instant::now();
        let reports_ttl = self.inner.capabilities().reports_ttl;
        let found = self.inner.get_with_ttl(key).await?;
        Ok(found.map(|(value, left)| {
            let ttl = if reports_ttl {
                InnerTtl::Reported { left, start }
            } else {
                InnerTtl::Unknown
            };
            (Arc::new(value), ttl)
        }))
    }

    /// A stale copy of `key` for a read that failed with `error`
    /// ([`stale_if_error`](CacheLayerBuilder::stale_if_error)), else the
    /// error.
    async fn stale_or(&self, key: &KvKey, error: crate::Error) -> Result<Option<Arc<Value>>> {
        match self.tier.stale_for(key, &error).await {
            Some(value) => Ok(Some(value)),
            None => Err(error),
        }
    }

    /// The rest of a `get_shared` once the front answered `front` (not a
    /// hit): the negative cache, then a read-through.
    async fn shared_after_front(
        &self,
        key: &KvKey,
        front: Result<Option<Arc<Value>>>,
    ) -> Result<Option<Arc<Value>>> {
        match self.tier.after_front(key, front).await {
            Some(answer) => Ok(answer),
            None => Ok(self.read_through(key, false).await?.map(|(value, _)| value)),
        }
    }

    /// `get_with_ttl` and `get`, by the front when it can answer.
    async fn get_with_deadline(&self, key: &KvKey) -> flight::Answer {
        if !self.tier.serves(key) {
            let start = Instant::now();
            return match self.inner.get_with_ttl(key).await {
                Ok(found) => Ok(found
                    .map(|(value, ttl)| (Arc::new(value), ttl.and_then(|t| start.checked_add(t))))),
                Err(e) => match self.tier.stale_for(key, &e).await {
                    Some(value) => Ok(Some((value, Some(Instant::now())))),
                    None => Err(e),
                },
            };
        }
        match self.tier.lookup_with_deadline(key).await {
            Some(answer) => Ok(answer),
            None => self.read_through(key, true).await,
        }
    }

    /// A write of `key` whose inner call is `write`, holding the key's
    /// stripe lock across it: writers of a key then reach the inner store in
    /// the order they update the front, so each can put its value in front
    /// instead of invalidating it (which would cost the next reader a miss on
    /// every hot key under write load).
    async fn write_one<T>(
        &self,
        key: &KvKey,
        ttl: Option<Duration>,
        write: impl std::future::Future<Output = Result<T>>,
        update: impl FnOnce(&Result<T>) -> Option<Option<Arc<Value>>>,
    ) -> Result<T> {
        let tier = &*self.tier;
        let result = {
            let guard = tier.lock(key).await;
            let before = guard.generation();
            let start = Instant::now();
            let result = write.await;
            match update(&result) {
                Some(update) => {
                    tier.apply_write(&guard, Outcome::of(&result), update, ttl, start, before)
                        .await
                }
                // No change in the inner store (a `cas` that did not swap):
                // the caller's expectation came from a stale front, maybe.
                None => {
                    if let Err(e) = tier.invalidate_now(std::slice::from_ref(key)).await {
                        tier.front_failed(Operation::Delete, &e);
                    }
                    return result;
                }
            }
            result
        };
        tier.announce(key);
        result
    }

    /// The front's side of a batch write of `keys` whose inner call started
    /// at `start` with the keys' generations `before`.
    async fn after_batch<T>(
        &self,
        keys: &[KvKey],
        before: Vec<u64>,
        start: Instant,
        ttl: Option<Duration>,
        result: &Result<T>,
    ) {
        let tier = &*self.tier;
        let outcome = Outcome::of(result);
        for (key, before) in keys.iter().zip(before) {
            {
                let guard = tier.lock(key).await;
                tier.apply_write(&guard, outcome, None, ttl, start, before)
                    .await;
            }
            tier.announce(key);
        }
    }
}

#[async_trait]
impl<S: KvStore, F: KvStore + 'static> KvStore for Cache<S, F> {
    /// The value of `key`: from the front when it has it, else read through
    /// (and the front filled).
    ///
    /// # Concurrent calls on the same key
    ///
    /// Concurrent misses of a key share one inner read, except that a call
    /// started after a write or an invalidation of the key returned never
    /// joins a read started before it.
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        if !self.tier.serves(key) {
            return match self.inner.get(key).await {
                Err(e) => match self.tier.stale_for(key, &e).await {
                    Some(value) => Ok(Some(Value::clone(&value))),
                    None => Err(e),
                },
                found => found,
            };
        }
        match self.tier.lookup(key).await {
            Some(answer) => Ok(answer),
            None => Ok(self
                .read_through(key, false)
                .await?
                .map(|(value, _)| Arc::unwrap_or_clone(value))),
        }
    }

    /// [`get`](Self::get) with the inner entry's remaining lifetime: a front
    /// hit answers what remains of the lifetime this layer learned when it
    /// filled or wrote the entry (never more than the inner entry has left);
    /// a hit whose lifetime it does not remember is read through.
    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        if !self.inner.capabilities().reports_ttl {
            return Ok(self.get(key).await?.map(|value| (value, None)));
        }
        Ok(self.get_with_deadline(key).await?.map(remaining))
    }

    /// [`get`](Self::get) without copying the value: a front hit is ready at
    /// once (nothing boxed, nothing awaited); a miss reads through and
    /// shares the value it puts in front.
    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        let tier = &*self.tier;
        if !tier.serves(key) {
            return match self.inner.get_shared(key).into_ready() {
                Ok(Err(e)) => SharedGet::boxed(self.stale_or(key, e)),
                Ok(found) => SharedGet::ready(found),
                Err(pending) => SharedGet::boxed(async move {
                    match pending.await {
                        Err(e) => self.stale_or(key, e).await,
                        found => found,
                    }
                }),
            };
        }
        // One front lookup serves both the hit and the miss: a definite
        // "absent" goes straight to the negative cache and the inner store.
        let front = tier.front.get_shared(key);
        if let Some(Ok(true)) = front.peek() {
            tier.count_front_hit();
            return front;
        }
        match front.into_ready() {
            Ok(front) => SharedGet::boxed(self.shared_after_front(key, front)),
            Err(pending) => SharedGet::boxed(async move {
                let front = pending.await;
                self.shared_after_front(key, front).await
            }),
        }
    }

    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        let value = crate::value::checked_shared(value)
            .map_err(|e| e.with_operation(Operation::Set).with_key(key))?;
        let front_copy = value.clone();
        self.write_one(
            key,
            options.ttl,
            self.inner.set_shared(key, value, options),
            |_| Some(Some(front_copy)),
        )
        .await
    }

    fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
        self.tier.probe(key)
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        if !self.inner.capabilities().reports_ttl {
            let values = self.get_many(keys).await?;
            return Ok(values.into_iter().map(|v| v.map(|v| (v, None))).collect());
        }
        let tier = &*self.tier;
        let mut answers = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let hit = if tier.serves(key) {
                tier.lookup_with_deadline(key).await
            } else {
                None
            };
            match hit {
                Some(answer) => answers.push(answer.map(remaining)),
                None => {
                    answers.push(None);
                    missing.push((i, tier.serves(key)));
                }
            }
        }
        if missing.is_empty() {
            return Ok(answers);
        }
        let generations: Vec<u64> = missing
            .iter()
            .map(|&(i, _)| tier.generation(&keys[i]))
            .collect();
        let missing_keys: Vec<KvKey> = missing.iter().map(|&(i, _)| keys[i].clone()).collect();
        let start = Instant::now();
        let fetched = match self.inner.get_many_with_ttl(&missing_keys).await {
            Ok(fetched) => fetched,
            Err(e) => {
                let stale = tier.stale_batch(&missing_keys, e).await?;
                let now = Some(Duration::ZERO);
                for ((i, _), value) in missing.into_iter().zip(stale) {
                    answers[i] = Some((value, now));
                }
                return Ok(answers);
            }
        };
        for (((i, fill), generation), found) in missing.into_iter().zip(generations).zip(fetched) {
            if fill {
                tier.count_inner(found.is_some());
                let ttl = InnerTtl::Reported {
                    left: found.as_ref().and_then(|(_, ttl)| *ttl),
                    start,
                };
                let shared = found.as_ref().map(|(v, _)| Arc::new(v.clone()));
                tier.fill(&keys[i], generation, shared.as_ref(), ttl).await;
            }
            // Counted from before the call, like the fill.
            answers[i] = found.map(|(value, ttl)| {
                let deadline = ttl.and_then(|t| start.checked_add(t));
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                (value, left)
            });
        }
        Ok(answers)
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        // Inner first: the front may only claim what the inner store holds.
        // The depth check comes before the clone, which recurses per level.
        // The front and the inner store share one tree: a store that
        // encodes values (Redis) reads it through `set_shared` without a copy.
        let value = crate::value::checked(value)
            .map_err(|e| e.with_operation(Operation::Set).with_key(key))?;
        let value = Arc::new(value);
        let front_copy = value.clone();
        self.write_one(
            key,
            options.ttl,
            self.inner.set_shared(key, value, options),
            |_| Some(Some(front_copy)),
        )
        .await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.write_one(key, None, self.inner.delete(key), |_| Some(None))
            .await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        // The inner store decides: the front may be stale, and only the inner
        // store's compare-and-swap is atomic.
        let new = crate::value::checked_cas(expected, new)
            .map_err(|e| e.with_operation(Operation::Cas).with_key(key))?;
        let front_copy = new.clone().map(Arc::new);
        // A swap to `None` deletes the key: no TTL left to remember.
        let ttl = front_copy.as_ref().and(options.ttl);
        self.write_one(
            key,
            ttl,
            self.inner.cas(key, expected, new, options),
            |result| match result {
                Ok(true) => Some(front_copy),
                Ok(false) => None,
                // It may have landed: only ever invalidate.
                Err(_) => Some(None),
            },
        )
        .await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        // The front holds a subset: only the inner store can list.
        self.inner.list(prefix)
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let tier = &*self.tier;
        if !tier.serving() {
            return match self.inner.get_many(keys).await {
                Err(e) => Ok(tier
                    .stale_batch(keys, e)
                    .await?
                    .into_iter()
                    .map(Some)
                    .collect()),
                found => found,
            };
        }
        let mut values = Vec::with_capacity(keys.len());
        // The misses, and whether each may fill the front.
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if !tier.serves(key) {
                values.push(None);
                missing.push((i, false));
                continue;
            }
            match tier.lookup(key).await {
                Some(answer) => values.push(answer),
                None => {
                    values.push(None);
                    missing.push((i, true));
                }
            }
        }
        if missing.is_empty() {
            return Ok(values);
        }
        // One inner batch for all misses (not single-flighted per key).
        let generations: Vec<u64> = missing
            .iter()
            .map(|&(i, _)| tier.generation(&keys[i]))
            .collect();
        let missing_keys: Vec<KvKey> = missing.iter().map(|&(i, _)| keys[i].clone()).collect();
        let fetched = match self.inner.get_many(&missing_keys).await {
            Ok(fetched) => fetched,
            Err(e) => {
                let stale = tier.stale_batch(&missing_keys, e).await?;
                for ((i, _), value) in missing.into_iter().zip(stale) {
                    values[i] = Some(value);
                }
                return Ok(values);
            }
        };
        for (((i, fill), generation), value) in missing.into_iter().zip(generations).zip(fetched) {
            if fill {
                tier.count_inner(value.is_some());
                let shared = value.as_ref().map(|v| Arc::new(v.clone()));
                tier.fill(&keys[i], generation, shared.as_ref(), InnerTtl::Unknown)
                    .await;
            }
            values[i] = value;
        }
        Ok(values)
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        // Invalidate rather than update the front: no copy of every value,
        // and the next read of each key fills it.
        let keys: Vec<KvKey> = entries.iter().map(|(k, _)| k.clone()).collect();
        let before: Vec<u64> = keys.iter().map(|k| self.tier.generation(k)).collect();
        let start = Instant::now();
        let result = self.inner.set_many(entries, options).await;
        self.after_batch(&keys, before, start, options.ttl, &result)
            .await;
        result
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        let before: Vec<u64> = keys.iter().map(|k| self.tier.generation(k)).collect();
        let start = Instant::now();
        let result = self.inner.delete_many(keys).await;
        self.after_batch(keys, before, start, None, &result).await;
        result
    }

    fn capabilities(&self) -> Capabilities {
        // `reports_ttl` is the inner store's: a front hit answers a lifetime
        // only when it remembers one learned from the inner store.
        let inner = self.inner.capabilities();
        // A front that may return expired entries makes the stack inexact.
        inner.with_exact_expiry(inner.exact_expiry && self.tier.front.capabilities().exact_expiry)
    }
}
