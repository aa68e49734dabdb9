//! Tower-style layers: each is a [`tower::Layer`] whose service is a
//! [`KvStore`](crate::KvStore) when the inner one is, so stacks build with
//! [`tower::ServiceBuilder`] and every stack is itself a store (boxable as
//! [`DynKvStore`](crate::DynKvStore)).
//!
//! | layer | store | does |
//! |---|---|---|
//! | [`CacheLayer`] | [`Cache`] | a front tier (L1) with read-through, write-through, single-flight, negative caching |
//! | [`CircuitBreakerLayer`] | [`CircuitBreaker`] | fails fast with a retryable `Unavailable` while the inner store keeps failing, probes, recovers |
//! | [`PrefixLayer`] | [`Prefix`] | namespaces every key under a prefix |
//! | [`DefaultTtlLayer`] | [`DefaultTtl`] | a default TTL for writes without one, jitter, a maximum |
//! | [`MetricsLayer`] | [`Metrics`] | counts and latencies through the `metrics` facade ([names](metrics)) |
//! | [`TracingLayer`] | [`Tracing`] | a `tracing` span per operation |
//!
//! tower's own middleware (timeout, retry, rate limits, load shedding) joins
//! a stack through [`crate::service`].
//!
//! ```
//! use kvtower::layers::{CacheLayer, DefaultTtlLayer, MetricsLayer, PrefixLayer, TracingLayer};
//! use kvtower::{kvkey, DynKvStore, KvStore, MemoryKvStore, SetOptions};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let backing = MemoryKvStore::new(); // Redis, SQLite, ... in production
//! let store: DynKvStore = Arc::new(
//!     ServiceBuilder::new()
//!         .layer(TracingLayer::new("users"))
//!         .layer(MetricsLayer::new("users"))
//!         .layer(DefaultTtlLayer::new(Duration::from_secs(3600)))
//!         .layer(CacheLayer::new(MemoryKvStore::builder().max_entries(10_000).build()))
//!         .layer(PrefixLayer::new(kvkey!["myapp", "v1"])) // inside the cache: see "Order"
//!         .service(backing.clone()),
//! );
//! store.set(&kvkey!["user", "42"], "Ada".into(), SetOptions::default()).await?;
//! assert_eq!(store.get(&kvkey!["user", "42"]).await?, Some("Ada".into()));
//! // The inner store holds the key under the prefix (see `prefix` for the format).
//! assert_eq!(backing.get(&kvkey!["~myapp/v1", "user", "42"]).await?, Some("Ada".into()));
//! # Ok(())
//! # }
//! ```
//!
//! # Order
//!
//! [`ServiceBuilder`](tower::ServiceBuilder) applies layers top to bottom:
//! the first `.layer(..)` is the outermost, the one the caller talks to. The
//! order changes behaviour:
//!
//! * **Prefix inside the cache** (as above, and in every example of this
//!   crate): the front holds the caller's keys and only the inner store
//!   sees the prefix; two such stacks must not share a front tier, or they
//!   would see each other's cached values. With a front tier of its own (the
//!   usual case), **put the prefix inside the cache**: a front hit then skips
//!   rewriting the key, the costliest step of the hit path (one allocation
//!   per key part); see BENCHMARKS.md. **Prefix outside the cache**: the
//!   front tier holds the prefixed keys, so one front can be shared
//!   knowingly by stacks with different prefixes.
//! * **Metrics (or tracing) outside the cache**: counts and latencies are
//!   what callers experience, front hits included. **Inside the cache**
//!   (between the cache and the backend): they measure only the backend
//!   traffic, so misses and writes. Use both, with different names, to see
//!   both sides; the cache's own per-tier hit/miss counters are recorded
//!   wherever it sits.
//! * **Default TTL outside the cache**: the cache sees the TTL, so front
//!   entries written through it never outlive the inner ones. Inside, the
//!   front caps its entries at its own maximum TTL but does not know the
//!   inner TTL of writes.
//! * **tower timeout/retry** belong next to the backend (inside the cache),
//!   so a front hit never waits on them and only backend calls are retried.
//! * **Circuit breaker** next to the backend too (inside the cache, outside
//!   a retry): it sees each call's final outcome, and while it is open a
//!   cache miss fails in microseconds instead of after a timeout.

pub mod cache;
pub mod circuit_breaker;
pub mod metrics;
pub mod prefix;
pub mod tracing;
pub mod ttl;

pub use cache::{
    Cache, CacheHandle, CacheId, CacheLayer, CacheLayerBuilder, Coherence, WeakCacheHandle,
};
pub use circuit_breaker::{
    BreakerState, CircuitBreaker, CircuitBreakerLayer, CircuitBreakerLayerBuilder,
};
pub use metrics::{Metrics, MetricsLayer};
pub use prefix::{Prefix, PrefixLayer};
pub use tracing::{Tracing, TracingLayer};
pub use ttl::{DefaultTtl, DefaultTtlLayer};
