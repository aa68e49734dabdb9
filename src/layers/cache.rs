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
//! # For an invalidation bus
//!
//! Every change of the front goes through one place (the private `Tier`),
//! which a [`CacheHandle`] (from [`CacheLayer::handle`] or
//! [`Cache::handle`]) reaches from outside: `invalidate(key)` and `clear()`.
//! [`CacheLayerBuilder::on_write`] registers a [`WriteHook`] called with the
//! key after every write this layer sent to the inner store, which is what a
//! bus publishes to the other processes.
//! [`CacheLayerBuilder::invalidation_bus`] (feature `redis`) does all of this
//! with a [`RedisInvalidationBus`](crate::invalidation::RedisInvalidationBus).
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

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use tokio::sync::watch;

use super::metrics::{
    CACHE_REQUESTS_TOTAL, LABEL_CACHE, LABEL_OUTCOME, LABEL_TIER, OUTCOME_HIT, OUTCOME_MISS,
    TIER_FRONT, TIER_INNER,
};
use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, Value};

/// The default [`front_max_ttl`](CacheLayerBuilder::front_max_ttl).
pub const DEFAULT_FRONT_MAX_TTL: Duration = Duration::from_secs(60);
/// The default bound of the negative cache, in keys.
const NEGATIVE_MAX_ENTRIES: u64 = 100_000;
/// The bound of the TTL memory (see `Tier::deadlines`), in keys.
const DEADLINE_MAX_ENTRIES: u64 = 100_000;
/// Generation stripes (a power of two): enough that unrelated keys rarely
/// share one (a write to one key of a stripe makes concurrent fills of the
/// others drop their result, so false sharing costs hit ratio under write
/// load: 256 stripes lost 15 points on a Zipf workload with 64 writers), few
/// enough to stay small (about 40 bytes each).
const STRIPES: usize = 4096;

/// Something told about every write a [`Cache`] sends to its inner store:
/// the hook an invalidation bus publishes from. Closures `Fn(&KvKey)` are
/// hooks.
///
/// ```
/// use kvtower::{layers::CacheLayer, MemoryKvStore};
/// let layer = CacheLayer::builder(MemoryKvStore::new())
///     .on_write(|key: &kvtower::KvKey| println!("changed: {key}"))
///     .build();
/// # let _ = layer;
/// ```
pub trait WriteHook: Send + Sync + 'static {
    /// Called with the key after a write to the inner store returned, whether
    /// it succeeded or failed (a failed write may still have landed), and
    /// after a `cas` that swapped. Not called for a `cas` that did not swap.
    /// Keep it quick: it runs on the writer's task.
    fn written(&self, key: &KvKey);
}

impl<T: Fn(&KvKey) + Send + Sync + 'static> WriteHook for T {
    fn written(&self, key: &KvKey) {
        self(key)
    }
}

/// Options of a [`CacheLayer`], from [`CacheLayer::builder`].
///
/// ```
/// use kvtower::{layers::CacheLayer, MemoryKvStore};
/// use std::time::{Duration, Instant};
/// let layer = CacheLayer::builder(MemoryKvStore::new())
///     .front_max_ttl(Duration::from_secs(10))
///     .build();
/// # let _ = layer;
/// ```
#[must_use]
pub struct CacheLayerBuilder<F> {
    front: F,
    name: String,
    front_max_ttl: Duration,
    negative_ttl: Option<Duration>,
    hook: Option<Arc<dyn WriteHook>>,
    #[cfg(feature = "redis")]
    bus: Option<crate::invalidation::RedisInvalidationBus>,
    /// Registers the built tier on the bus (needs `F: 'static`, which only
    /// `invalidation_bus` requires).
    #[cfg(feature = "redis")]
    register: Option<Registrar<F>>,
}

/// Registers a built tier on an invalidation bus.
#[cfg(feature = "redis")]
type Registrar<F> = Box<dyn FnOnce(&Arc<Tier<F>>) + Send + Sync>;

impl<F> fmt::Debug for CacheLayerBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("name", &self.name)
            .field("front_max_ttl", &self.front_max_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("hook", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: KvStore> CacheLayerBuilder<F> {
    /// The longest a front entry lives ([`DEFAULT_FRONT_MAX_TTL`] by
    /// default). Writes with a shorter TTL keep theirs in the front; fills
    /// from the inner store always get this one. A zero TTL disables the
    /// front (nothing is ever stored there).
    pub fn front_max_ttl(mut self, ttl: Duration) -> Self {
        self.front_max_ttl = ttl;
        self
    }

    /// Remember absent keys for `ttl`, so repeated reads of a missing key do
    /// not reach the inner store. Off by default. Writes through this layer
    /// forget the key at once; a key created around the layer stays hidden for
    /// up to `ttl`.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// The `cache` label of this layer's metrics (`"cache"` by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Calls `hook` with the key after every write sent to the inner store.
    pub fn on_write(mut self, hook: impl WriteHook) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Keeps this front tier coherent with other processes' (feature
    /// `redis`): every write through this layer publishes its key on `bus`,
    /// and every key another node publishes is dropped from this front tier.
    /// While the bus has lost its subscription the front tier is cleared and
    /// bypassed (every read goes to the inner store), because invalidations
    /// may be missed; see [`invalidation`](crate::invalidation).
    ///
    /// ```no_run
    /// use kvtower::invalidation::RedisInvalidationBus;
    /// use kvtower::{layers::CacheLayer, MemoryKvStore, RedisKvStore};
    /// use tower::ServiceBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let url = "redis://127.0.0.1:6379";
    /// let bus = RedisInvalidationBus::connect(url, "myapp:invalidate").await?;
    /// let store = ServiceBuilder::new()
    ///     .layer(CacheLayer::builder(MemoryKvStore::new()).invalidation_bus(bus).build())
    ///     .service(RedisKvStore::connect(url).await?);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn invalidation_bus(mut self, bus: crate::invalidation::RedisInvalidationBus) -> Self
    where
        F: 'static,
    {
        let registrar = bus.clone();
        self.register = Some(Box::new(move |tier: &Arc<Tier<F>>| {
            registrar.register(tier)
        }));
        self.bus = Some(bus);
        self
    }

    /// Builds the layer. Metric handles are registered now, with the
    /// recorder installed at this point.
    pub fn build(self) -> CacheLayer<F> {
        let counter = |tier: &'static str, outcome: &'static str| {
            metrics::counter!(
                CACHE_REQUESTS_TOTAL,
                LABEL_CACHE => self.name.clone(),
                LABEL_TIER => tier,
                LABEL_OUTCOME => outcome
            )
        };
        let counters = Counters {
            front_hit: counter(TIER_FRONT, OUTCOME_HIT),
            front_miss: counter(TIER_FRONT, OUTCOME_MISS),
            inner_hit: counter(TIER_INNER, OUTCOME_HIT),
            inner_miss: counter(TIER_INNER, OUTCOME_MISS),
        };
        let negative = self.negative_ttl.map(|ttl| {
            moka::future::Cache::builder()
                .max_capacity(NEGATIVE_MAX_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        let tier = Arc::new(Tier {
            front: self.front,
            name: self.name,
            front_max_ttl: self.front_max_ttl,
            negative,
            deadlines: moka::future::Cache::builder()
                .max_capacity(DEADLINE_MAX_ENTRIES)
                .expire_after(DeadlineExpiry)
                .build(),
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hasher: RandomState::new(),
            inflight: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            counters,
            hook: self.hook,
            #[cfg(feature = "redis")]
            bus: self.bus,
        });
        #[cfg(feature = "redis")]
        if let Some(register) = self.register {
            register(&tier);
        }
        CacheLayer { tier }
    }
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

impl<F: KvStore> CacheLayer<F> {
    /// A layer with `front` as the front tier and default options.
    pub fn new(front: F) -> Self {
        Self::builder(front).build()
    }

    /// A builder for the options, with `front` as the front tier.
    pub fn builder(front: F) -> CacheLayerBuilder<F> {
        CacheLayerBuilder {
            front,
            name: "cache".to_owned(),
            front_max_ttl: DEFAULT_FRONT_MAX_TTL,
            negative_ttl: None,
            hook: None,
            #[cfg(feature = "redis")]
            bus: None,
            #[cfg(feature = "redis")]
            register: None,
        }
    }

    /// The front tier.
    pub fn front(&self) -> &F {
        &self.tier.front
    }
}

impl<F: KvStore + 'static> CacheLayer<F> {
    /// A handle that invalidates front entries from outside (see
    /// [`CacheHandle`]).
    pub fn handle(&self) -> CacheHandle {
        CacheHandle {
            tier: self.tier.clone(),
        }
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
        CacheHandle {
            tier: self.tier.clone(),
        }
    }
}

/// Invalidates a [`Cache`]'s front tier from outside: what a cross-process
/// invalidation bus calls when another process wrote a key. Cheap to clone.
///
/// ```
/// use kvtower::{kvkey, layers::CacheLayer, MemoryKvStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let layer = CacheLayer::new(MemoryKvStore::new());
/// let handle = layer.handle();
/// handle.invalidate(&kvkey!["user", "1"]).await?;
/// handle.clear().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CacheHandle {
    tier: Arc<dyn FrontControl>,
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle").finish_non_exhaustive()
    }
}

impl CacheHandle {
    /// Drops `key` from the front (and from the negative cache), and makes
    /// any read-through fill of it that is in flight be discarded.
    ///
    /// # Errors
    ///
    /// The front tier's error when it could not delete the entry.
    pub async fn invalidate(&self, key: &KvKey) -> Result<()> {
        self.tier.invalidate(key).await
    }

    /// Drops every front entry (the front tier is listed and emptied, so it
    /// must be dedicated to this cache) and discards every fill in flight.
    ///
    /// # Errors
    ///
    /// The front tier's error when it could not be listed or emptied.
    pub async fn clear(&self) -> Result<()> {
        self.tier.clear().await
    }
}

#[async_trait]
trait FrontControl: Send + Sync {
    async fn invalidate(&self, key: &KvKey) -> Result<()>;
    async fn clear(&self) -> Result<()>;
}

#[async_trait]
impl<F: KvStore> FrontControl for Tier<F> {
    async fn invalidate(&self, key: &KvKey) -> Result<()> {
        let _guard = self.stripe(key).lock.lock().await;
        self.invalidate_locked(key).await
    }

    async fn clear(&self) -> Result<()> {
        // Bump every stripe first: fills in flight then find their generation
        // changed and do not install what they read before the clear.
        for stripe in self.stripes.iter() {
            let _guard = stripe.lock.lock().await;
            stripe.generation.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(negative) = &self.negative {
            negative.invalidate_all();
        }
        let keys: Vec<KvKey> = self
            .front
            .list(None)
            .map_ok(|entry| entry.key)
            .try_collect()
            .await?;
        self.front.delete_many(&keys).await
    }
}

/// Drops a remembered deadline when it passes.
struct DeadlineExpiry;

impl moka::Expiry<KvKey, Instant> for DeadlineExpiry {
    fn expire_after_create(&self, _: &KvKey, deadline: &Instant, now: Instant) -> Option<Duration> {
        Some(deadline.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &KvKey,
        deadline: &Instant,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(deadline.saturating_duration_since(now))
    }
}

struct Counters {
    front_hit: metrics::Counter,
    front_miss: metrics::Counter,
    inner_hit: metrics::Counter,
    inner_miss: metrics::Counter,
}

#[derive(Default)]
struct Stripe {
    /// Serializes every change of the front for the keys of this stripe.
    lock: tokio::sync::Mutex<()>,
    /// Bumped (under `lock`) by every write and invalidation of a key of
    /// this stripe. Read without the lock to remember "before".
    generation: AtomicU64,
}

/// What a single-flight leader shares with the callers waiting on it.
type Outcome = Option<Result<Option<Value>>>;

/// The front tier and everything that changes it. All front mutations are
/// methods of this type.
struct Tier<F> {
    front: F,
    name: String,
    front_max_ttl: Duration,
    negative: Option<moka::future::Cache<KvKey, ()>>,
    /// When the inner entry of a key written with a TTL through this layer
    /// expires, so that a later read-through fill of it (which cannot ask the
    /// inner store) does not outlive it. Bounded; a key evicted from here
    /// falls back to the front maximum TTL.
    deadlines: moka::future::Cache<KvKey, Instant>,
    stripes: Box<[Stripe]>,
    hasher: RandomState,
    /// The reads of the inner store in flight, by key, with an id so a leader
    /// only ever removes its own entry.
    inflight: Mutex<HashMap<KvKey, (u64, watch::Receiver<Outcome>)>>,
    next_flight: AtomicU64,
    counters: Counters,
    hook: Option<Arc<dyn WriteHook>>,
    /// The cross-node invalidation bus, if any (see `serving`).
    #[cfg(feature = "redis")]
    bus: Option<crate::invalidation::RedisInvalidationBus>,
}

/// The bus delivers other nodes' writes and subscription losses here.
#[cfg(feature = "redis")]
#[async_trait]
impl<F: KvStore + 'static> crate::invalidation::InvalidationTarget for Tier<F> {
    async fn invalidate(&self, keys: &[KvKey]) {
        for key in keys {
            if let Err(e) = FrontControl::invalidate(self, key).await {
                self.front_failed("delete", &e);
            }
        }
    }

    async fn clear(&self) {
        if let Err(e) = FrontControl::clear(self).await {
            self.front_failed("clear", &e);
        }
    }
}

impl<F> fmt::Debug for Tier<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tier")
            .field("name", &self.name)
            .field("front_max_ttl", &self.front_max_ttl)
            .field("negative", &self.negative.as_ref().map(|_| "on"))
            .finish_non_exhaustive()
    }
}

// The race this guards against (mini-redis style):
//
//   reader: misses the front, reads the inner store: old value
//   writer: writes the inner store: new value; updates the front: new value
//   reader: fills the front: old value         <- stale until the front TTL
//
// Every change of a key's front entry happens under its stripe's lock, and
// every write or invalidation bumps the stripe's generation under that lock.
// A fill remembers the generation *before* its inner read and installs only
// if it is unchanged, so a fill that may have read an older value than a
// concurrent write is dropped. A single-key writer (`set`, `delete`, `cas`)
// holds the stripe's lock across its inner write, so the writers of a key
// reach the inner store in the order they change the front, and each may put
// its value in front. Batch writes cannot hold many stripes at once without
// risking lock-order deadlocks: they remember the generation before their
// inner write and, if another write to the stripe finished in between (their
// inner order is unknown), invalidate instead of updating. Stripes are shared
// by keys, which only ever makes this more conservative.
impl<F: KvStore> Tier<F> {
    fn stripe(&self, key: &KvKey) -> &Stripe {
        let hash = self.hasher.hash_one(key) as usize;
        &self.stripes[hash & (STRIPES - 1)]
    }

    fn generation(&self, key: &KvKey) -> u64 {
        self.stripe(key).generation.load(Ordering::SeqCst)
    }

    /// The front TTL for a write with `options`: never longer than the inner
    /// entry lives, never longer than the front maximum.
    fn front_options(&self, options: SetOptions) -> SetOptions {
        let ttl = match options.ttl {
            Some(ttl) => ttl.min(self.front_max_ttl),
            None => self.front_max_ttl,
        };
        SetOptions::ttl(ttl)
    }

    /// Installs a read-through fill (`None`: absent, for the negative cache)
    /// unless a write or invalidation of the stripe happened since
    /// `generation` was read.
    async fn fill(&self, key: &KvKey, generation: u64, value: Option<&Value>) {
        if value.is_none() && self.negative.is_none() {
            return; // nothing to remember about an absent key
        }
        let stripe = self.stripe(key);
        let _guard = stripe.lock.lock().await;
        if stripe.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        match value {
            Some(value) => {
                // A key written with a TTL through this layer: the front entry
                // must not outlive what remains of it.
                let options = match self.deadlines.get(key).await {
                    Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => self.front_options(SetOptions::ttl(left)),
                        _ => return,
                    },
                    None => self.front_options(SetOptions::default()),
                };
                if let Err(e) = self.front.set(key, value.clone(), options).await {
                    self.front_failed("fill", &e);
                }
            }
            None => {
                if let Some(negative) = &self.negative {
                    negative.insert(key.clone(), ()).await;
                }
            }
        }
    }

    /// After a write of `key` to the inner store returned: `landed` when it
    /// is known to have succeeded, with `update` the value the inner store
    /// now holds when the front may take it (`None`: drop the front entry).
    /// A failed write may still have landed, so it only ever invalidates.
    async fn after_write(
        &self,
        key: &KvKey,
        before: u64,
        landed: bool,
        update: Option<Value>,
        options: SetOptions,
    ) {
        {
            let stripe = self.stripe(key);
            let _guard = stripe.lock.lock().await;
            // Only the sole writer of the stripe since `before` knows its
            // value is the latest: anyone else invalidates.
            let current = stripe.generation.load(Ordering::SeqCst);
            let update = update.filter(|_| current == before);
            self.apply_write(key, landed, update, options).await;
        }
        self.announce(key);
    }

    /// The front's side of a write of `key` that the inner store answered
    /// (see `after_write`). The caller holds the key's stripe lock.
    async fn apply_write(
        &self,
        key: &KvKey,
        landed: bool,
        update: Option<Value>,
        options: SetOptions,
    ) {
        self.stripe(key).generation.fetch_add(1, Ordering::SeqCst);
        if let Some(negative) = &self.negative {
            negative.invalidate(key).await;
        }
        self.remember_ttl(key, landed, options).await;
        let update = update.filter(|_| landed && !options.is_expired());
        let result = match update {
            Some(value) => {
                let result = self
                    .front
                    .set(key, value, self.front_options(options))
                    .await;
                if let Err(e) = &result {
                    self.front_failed("set", e);
                    // The old front entry may still be there: drop it.
                    self.front.delete(key).await
                } else {
                    result
                }
            }
            None => self.front.delete(key).await,
        };
        if let Err(e) = result {
            self.front_failed("delete", &e);
        }
    }

    /// Tells the write hook and the invalidation bus that `key` was written.
    fn announce(&self, key: &KvKey) {
        if let Some(hook) = &self.hook {
            hook.written(key);
        }
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus {
            bus.publish_later(key);
        }
    }

    /// Drops `key` from the front and the negative cache and makes fills in
    /// flight discard their result. The caller holds the key's stripe lock.
    async fn invalidate_locked(&self, key: &KvKey) -> Result<()> {
        self.stripe(key).generation.fetch_add(1, Ordering::SeqCst);
        if let Some(negative) = &self.negative {
            negative.invalidate(key).await;
        }
        self.front.delete(key).await
    }

    /// Whether the front may answer reads: not while an invalidation bus has
    /// lost its subscription (it may have missed invalidations; it clears the
    /// front when the subscription is lost and again when it is back).
    fn serving(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus {
            return bus.is_connected();
        }
        true
    }

    /// Keeps `deadlines` right after a write with `options` that is known to
    /// have landed (`landed`) or may have. A write that may have landed with
    /// a TTL is remembered as if it did: at worst a later fill is cached for
    /// less time than it could be.
    async fn remember_ttl(&self, key: &KvKey, landed: bool, options: SetOptions) {
        match options.ttl.and_then(|ttl| Instant::now().checked_add(ttl)) {
            Some(deadline) => self.deadlines.insert(key.clone(), deadline).await,
            // No TTL (or one too long to matter): the inner entry lives until
            // deleted, unless the write failed and the old TTL still holds.
            None if landed => self.deadlines.invalidate(key).await,
            None => {}
        }
    }

    fn front_failed(&self, operation: &'static str, error: &Error) {
        // No key here: key parts can hold user data.
        tracing::warn!(
            cache = %self.name,
            operation,
            error_kind = %error.kind(),
            "front tier operation failed; the inner store stays authoritative"
        );
    }

    /// A front lookup: `Some(answer)` when the front (or the negative cache)
    /// answers. A front error is a miss: the inner store can serve it.
    async fn lookup(&self, key: &KvKey) -> Option<Option<Value>> {
        match self.front.get(key).await {
            Ok(Some(value)) => {
                self.counters.front_hit.increment(1);
                return Some(Some(value));
            }
            Ok(None) => {}
            Err(e) => self.front_failed("get", &e),
        }
        if let Some(negative) = &self.negative {
            if negative.get(key).await.is_some() {
                self.counters.front_hit.increment(1);
                return Some(None);
            }
        }
        self.counters.front_miss.increment(1);
        None
    }

    fn count_inner(&self, found: bool) {
        if found {
            self.counters.inner_hit.increment(1);
        } else {
            self.counters.inner_miss.increment(1);
        }
    }
}

/// A single-flight leader's registration: removes itself from the in-flight
/// map when dropped, so a cancelled leader's waiters retry instead of
/// waiting forever (its sender is dropped, which wakes them).
struct Flight<'a, F> {
    tier: &'a Tier<F>,
    key: &'a KvKey,
    id: u64,
    tx: watch::Sender<Outcome>,
}

impl<F> Flight<'_, F> {
    fn unregister(&self) {
        let mut inflight = self
            .tier
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if inflight.get(self.key).is_some_and(|(id, _)| *id == self.id) {
            inflight.remove(self.key);
        }
    }
}

impl<F> Drop for Flight<'_, F> {
    fn drop(&mut self) {
        self.unregister();
    }
}

enum Role<'a, F> {
    Leader(Flight<'a, F>),
    Follower(watch::Receiver<Outcome>),
}

/// A copy of a leader's error for its followers (`Error` is not `Clone`: the
/// source cannot be copied, the rest is).
fn copy_error(error: &Error) -> Error {
    let mut copy = Error::new(error.kind(), error.message()).with_retryable(error.is_retryable());
    if let Some(operation) = error.operation() {
        copy = copy.with_operation(operation);
    }
    if let Some(key) = error.key() {
        copy = copy.with_key(key);
    }
    copy
}

fn copy_outcome(outcome: &Result<Option<Value>>) -> Result<Option<Value>> {
    match outcome {
        Ok(value) => Ok(value.clone()),
        Err(e) => Err(copy_error(e)),
    }
}

impl<S: KvStore, F: KvStore> Cache<S, F> {
    /// Reads `key` from the inner store, once for all concurrent callers,
    /// and fills the front.
    async fn read_through(&self, key: &KvKey) -> Result<Option<Value>> {
        let tier = &*self.tier;
        loop {
            let role = {
                let mut inflight = tier.inflight.lock().unwrap_or_else(PoisonError::into_inner);
                match inflight.get(key) {
                    Some((_, rx)) => Role::Follower(rx.clone()),
                    None => {
                        let id = tier.next_flight.fetch_add(1, Ordering::Relaxed);
                        let (tx, rx) = watch::channel(None);
                        inflight.insert(key.clone(), (id, rx));
                        Role::Leader(Flight { tier, key, id, tx })
                    }
                }
            };
            match role {
                Role::Follower(mut rx) => match rx.wait_for(Option::is_some).await {
                    Ok(outcome) => {
                        if let Some(outcome) = &*outcome {
                            return copy_outcome(outcome);
                        }
                    }
                    // The leader was cancelled before it answered: try again
                    // (one of the waiters becomes the new leader).
                    Err(_) => continue,
                },
                Role::Leader(flight) => {
                    let generation = tier.generation(key);
                    let result = self.inner.get(key).await;
                    if let Ok(value) = &result {
                        tier.count_inner(value.is_some());
                        tier.fill(key, generation, value.as_ref()).await;
                    }
                    // Unregister before answering: later callers find the
                    // filled front or lead a fresh read, never a stale flight.
                    flight.unregister();
                    if flight.tx.receiver_count() > 0 {
                        flight.tx.send_replace(Some(copy_outcome(&result)));
                    }
                    return result;
                }
            }
        }
    }
}

#[async_trait]
impl<S: KvStore, F: KvStore> KvStore for Cache<S, F> {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        if !self.tier.serving() {
            return self.inner.get(key).await;
        }
        match self.tier.lookup(key).await {
            Some(answer) => Ok(answer),
            None => self.read_through(key).await,
        }
    }

    // The front does not keep the inner entry's remaining lifetime yet, so a
    // read that asks for it goes to the inner store, which knows.
    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        self.inner.get_with_ttl(key).await
    }

    async fn get_shared(&self, key: &KvKey) -> Result<Option<Arc<Value>>> {
        Ok(self.get(key).await?.map(Arc::new))
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        self.inner.get_many_with_ttl(keys).await
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        // Inner first: the front may only claim what the inner store holds.
        // The key's stripe lock is held across the inner write, so writers of
        // a key reach the inner store in the order they update the front: each
        // can put its value in front instead of invalidating it (which would
        // cost the next reader a miss on every hot key under write load).
        let front_copy = value.clone();
        let result = {
            let _guard = self.tier.stripe(key).lock.lock().await;
            let result = self.inner.set(key, value, options).await;
            self.tier
                .apply_write(key, result.is_ok(), Some(front_copy), options)
                .await;
            result
        };
        self.tier.announce(key);
        result
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        let result = {
            let _guard = self.tier.stripe(key).lock.lock().await;
            let result = self.inner.delete(key).await;
            self.tier
                .apply_write(key, result.is_ok(), None, SetOptions::default())
                .await;
            result
        };
        self.tier.announce(key);
        result
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        // The inner store decides: the front may be stale, and only the inner
        // store's compare-and-swap is atomic. The stripe lock orders this write
        // with the others of the key, as in `set`.
        let front_copy = new.clone();
        // A swap to `None` deletes the key: no TTL left to remember.
        let ttl_options = if front_copy.is_some() {
            options
        } else {
            SetOptions::default()
        };
        let result = {
            let _guard = self.tier.stripe(key).lock.lock().await;
            let result = self.inner.cas(key, expected, new, options).await;
            match &result {
                Ok(true) => {
                    self.tier
                        .apply_write(key, true, front_copy, ttl_options)
                        .await
                }
                // No swap: the caller's `expected` differs from the inner
                // value, so the front entry it read from is likely stale.
                Ok(false) => {
                    if let Err(e) = self.tier.invalidate_locked(key).await {
                        self.tier.front_failed("delete", &e);
                    }
                }
                // It may have landed: only ever invalidate.
                Err(_) => self.tier.apply_write(key, false, None, ttl_options).await,
            }
            result
        };
        if !matches!(result, Ok(false)) {
            self.tier.announce(key);
        }
        result
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        // The front holds a subset: only the inner store can list.
        self.inner.list(prefix)
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let tier = &*self.tier;
        if !tier.serving() {
            return self.inner.get_many(keys).await;
        }
        let mut values = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match tier.lookup(key).await {
                Some(answer) => values.push(answer),
                None => {
                    values.push(None);
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(values);
        }
        // One inner batch for all misses (not single-flighted per key).
        let generations: Vec<u64> = missing.iter().map(|&i| tier.generation(&keys[i])).collect();
        let missing_keys: Vec<KvKey> = missing.iter().map(|&i| keys[i].clone()).collect();
        let fetched = self.inner.get_many(&missing_keys).await?;
        for ((i, generation), value) in missing.into_iter().zip(generations).zip(fetched) {
            tier.count_inner(value.is_some());
            tier.fill(&keys[i], generation, value.as_ref()).await;
            values[i] = value;
        }
        Ok(values)
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        // Invalidate rather than update the front: no copy of every value,
        // and the next read of each key fills it.
        let keys: Vec<KvKey> = entries.iter().map(|(k, _)| k.clone()).collect();
        let generations: Vec<u64> = keys.iter().map(|k| self.tier.generation(k)).collect();
        let result = self.inner.set_many(entries, options).await;
        for (key, before) in keys.iter().zip(generations) {
            self.tier
                .after_write(key, before, result.is_ok(), None, options)
                .await;
        }
        result
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        let generations: Vec<u64> = keys.iter().map(|k| self.tier.generation(k)).collect();
        let result = self.inner.delete_many(keys).await;
        for (key, before) in keys.iter().zip(generations) {
            self.tier
                .after_write(key, before, result.is_ok(), None, SetOptions::default())
                .await;
        }
        result
    }

    fn capabilities(&self) -> Capabilities {
        let inner = self.inner.capabilities();
        // A front that may return expired entries makes the stack inexact.
        inner.with_exact_expiry(inner.exact_expiry && self.tier.front.capabilities().exact_expiry)
    }
}
