//! [`CacheLayerBuilder`]: the options of a [`CacheLayer`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::coherence::{CacheHandle, Coherence, OnWrite};
use super::tier::{Counters, Settings, Tier};
use super::CacheLayer;
use crate::key::KvKey;
use crate::layers::metrics::{
    CACHE_REQUESTS_TOTAL, CACHE_STALE_SERVED_TOTAL, LABEL_CACHE, LABEL_OUTCOME, LABEL_TIER,
    OUTCOME_HIT, OUTCOME_MISS, TIER_FRONT, TIER_INNER,
};
use crate::store::KvStore;

/// The default [`front_max_ttl`](CacheLayerBuilder::front_max_ttl).
pub const DEFAULT_FRONT_MAX_TTL: Duration = Duration::from_secs(60);

/// The default [`unknown_outcome_window`](CacheLayerBuilder::unknown_outcome_window).
pub const DEFAULT_UNKNOWN_OUTCOME_WINDOW: Duration = Duration::from_secs(5);

/// The longest TTL the negative cache takes: moka panics past 1,000 years,
/// and anything this long means "until invalidated" anyway.
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Options of a [`CacheLayer`], from [`CacheLayer::builder`].
///
/// ```
/// use kvtower::{layers::CacheLayer, MemoryKvStore};
/// use std::time::Duration;
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
    fill_without_inner_ttl: bool,
    negative_ttl: Option<Duration>,
    unknown_outcome_window: Duration,
    stale_if_error: Option<Duration>,
    sources: Vec<Arc<dyn Coherence>>,
}

impl<F> fmt::Debug for CacheLayerBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("name", &self.name)
            .field("front_max_ttl", &self.front_max_ttl)
            .field("fill_without_inner_ttl", &self.fill_without_inner_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("unknown_outcome_window", &self.unknown_outcome_window)
            .field("stale_if_error", &self.stale_if_error)
            .field("coherence_sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl<F: KvStore + 'static> CacheLayerBuilder<F> {
    pub(super) fn new(front: F) -> Self {
        Self {
            front,
            name: "cache".to_owned(),
            front_max_ttl: DEFAULT_FRONT_MAX_TTL,
            fill_without_inner_ttl: false,
            negative_ttl: None,
            unknown_outcome_window: DEFAULT_UNKNOWN_OUTCOME_WINDOW,
            stale_if_error: None,
            sources: Vec::new(),
        }
    }

    /// The longest a front entry lives ([`DEFAULT_FRONT_MAX_TTL`] by
    /// default). An entry never outlives the inner one either: a write keeps
    /// its own TTL when shorter, and a fill lives what the inner entry has
    /// left (when the inner store cannot tell, what a write through this
    /// layer left, else this maximum). A zero TTL disables the front (nothing
    /// is ever stored there).
    ///
    /// This maximum bounds how long a change made *around* this layer, and
    /// heard by no [coherence source](Self::coherence), stays invisible.
    pub fn front_max_ttl(mut self, ttl: Duration) -> Self {
        self.front_max_ttl = ttl;
        self
    }

    /// Read-through fills ask the inner store for the value only, not for
    /// its remaining lifetime: a plain read (for Redis one `GET`, where the
    /// default reads the value and its `PTTL` with one script: about 1,700
    /// client instructions more per miss, 4% of it, and on the server a Lua
    /// call of about 3 µs against 0.2 µs for a `GET`). A fill then lives
    /// what a write through this layer left (the TTL memory), else
    /// [`front_max_ttl`](Self::front_max_ttl), as for an inner store that
    /// cannot report lifetimes.
    ///
    /// The price: an entry written *around* this layer with a TTL shorter
    /// than `front_max_ttl` may be answered from the front for up to
    /// `front_max_ttl` after it expired in the inner store (the default
    /// never lets a front entry outlive the inner one). That is what a
    /// hand-written moka cache in front of Redis does; choose it when every
    /// writer goes through this layer, or when `front_max_ttl` is short
    /// enough to be served stale for. `get_with_ttl` still reads the
    /// lifetime.
    ///
    /// ```
    /// use kvtower::{layers::CacheLayer, MemoryKvStore};
    /// use std::time::Duration;
    /// let layer = CacheLayer::builder(MemoryKvStore::new())
    ///     .front_max_ttl(Duration::from_secs(5))
    ///     .fill_without_inner_ttl()
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn fill_without_inner_ttl(mut self) -> Self {
        self.fill_without_inner_ttl = true;
        self
    }

    /// Remember absent keys for `ttl`, so repeated reads of a missing key do
    /// not reach the inner store. Off by default. Writes through this layer
    /// forget the key at once; a key created around the layer stays hidden for
    /// up to `ttl`. A TTL longer than 100 years is taken as 100 years.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl.min(MAX_NEGATIVE_TTL));
        self
    }

    /// How long a key whose write failed with an unknown outcome (a timeout,
    /// a lost connection: a [retryable](crate::Error::is_retryable) error) is
    /// served from the inner store only (default
    /// [`DEFAULT_UNKNOWN_OUTCOME_WINDOW`]). Such a write may still land after
    /// the caller saw the error; when the window ends the key is invalidated
    /// here and announced to the coherence sources once more, so a late
    /// landing is read afresh. Make it longer than the inner store's timeout.
    pub fn unknown_outcome_window(mut self, window: Duration) -> Self {
        self.unknown_outcome_window = window;
        self
    }

    /// Answer a read whose inner store fails with a
    /// [retryable](crate::Error::is_retryable) error (down, timed out, a
    /// [`CircuitBreakerLayer`](crate::layers::CircuitBreakerLayer) open) from
    /// the last value this layer put in front for the key, even past the
    /// front entry's lifetime, up to `max` past it. Off by default.
    ///
    /// A copy is dropped when this layer learns that its key changed: a
    /// delete or a failed write through it, an invalidation of the key
    /// (from a coherence source or [`CacheHandle::invalidate`]); a front
    /// [`clear`](CacheHandle::clear) keeps them (a source clears when it may
    /// have missed changes, typically while the shared tier is down: that is
    /// when they are needed). A key whose last write had an unknown outcome is
    /// never answered stale. Writes still fail with the inner store's error
    /// and leave nothing in front. Each stale answer counts
    /// `kvtower_cache_stale_served_total{cache}`. With a memory front the copy
    /// is the front's own shared value (no second copy); at most 100,000
    /// copies are kept.
    ///
    /// ```
    /// use kvtower::{layers::CacheLayer, MemoryKvStore};
    /// use std::time::Duration;
    /// let layer = CacheLayer::builder(MemoryKvStore::new())
    ///     .front_max_ttl(Duration::from_secs(30))
    ///     .stale_if_error(Duration::from_secs(300)) // ride out a 5-minute outage
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn stale_if_error(mut self, max: Duration) -> Self {
        self.stale_if_error = Some(max);
        self
    }

    /// The `cache` label of this layer's metrics (`"cache"` by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Calls `hook` with the key after every write sent to the inner store,
    /// whether it succeeded or failed (a failed write may have landed), and
    /// after a `cas` that swapped. Keep it quick: it runs on the writer's
    /// task.
    ///
    /// ```
    /// use kvtower::{layers::CacheLayer, MemoryKvStore};
    /// let layer = CacheLayer::builder(MemoryKvStore::new())
    ///     .on_write(|key: &kvtower::KvKey| println!("changed: {key}"))
    ///     .build();
    /// # let _ = layer;
    /// ```
    pub fn on_write(self, hook: impl Fn(&KvKey) + Send + Sync + 'static) -> Self {
        self.coherence(OnWrite(hook))
    }

    /// Keeps this front tier coherent through `source` (an invalidation bus,
    /// client tracking, an application's own hook; see [`Coherence`]): the
    /// source is attached to this tier at [`build`](Self::build), told of
    /// every write, and while it is not live the front tier is bypassed.
    /// Several sources may be added; the front serves only while all are
    /// live.
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
    ///     .layer(CacheLayer::builder(MemoryKvStore::new()).coherence(bus).build())
    ///     .service(RedisKvStore::connect(url).await?);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn coherence(mut self, source: impl Coherence) -> Self {
        self.sources.push(Arc::new(source));
        self
    }

    /// Builds the layer and attaches it to its coherence sources. Metric
    /// handles are registered now, with the recorder installed at this point.
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
            stale_served: metrics::counter!(CACHE_STALE_SERVED_TOTAL, LABEL_CACHE => self.name.clone()),
        };
        let sources = self.sources;
        let tier = Tier::new(
            self.front,
            Settings {
                name: self.name,
                front_max_ttl: self.front_max_ttl,
                fill_without_inner_ttl: self.fill_without_inner_ttl,
                negative_ttl: self.negative_ttl,
                unknown_outcome_window: self.unknown_outcome_window,
                stale_if_error: self.stale_if_error,
                sources: sources.clone(),
                counters,
            },
        );
        let handle = CacheHandle {
            origin: tier.id,
            tier: tier.clone(),
        };
        for source in &sources {
            source.attach(handle.downgrade());
        }
        CacheLayer { tier }
    }
}
