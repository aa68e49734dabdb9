//! [`MetricsLayer`]: counts and times every operation through the
//! [`metrics`] facade; install any recorder (Prometheus, StatsD, ...) to
//! export them.
//!
//! ```
//! use kvtower::layers::MetricsLayer;
//! use kvtower::{kvkey, KvStore, MemoryKvStore};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! // Install a recorder first (e.g. metrics-exporter-prometheus): handles are
//! // registered when the layer is built.
//! let store = ServiceBuilder::new()
//!     .layer(MetricsLayer::new("sessions"))
//!     .service(MemoryKvStore::new());
//! store.get(&kvkey!["s", "1"]).await?; // kvtower_operations_total{store="sessions",operation="get",outcome="miss"} += 1
//! # Ok(())
//! # }
//! ```
//!
//! # Metric names and labels
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `kvtower_operations_total` | counter | `store`, `operation`, `outcome` | one per call; `outcome` is `hit` or `miss` for `get`, `ok` for the other operations, `error` on failure |
//! | `kvtower_operation_errors_total` | counter | `store`, `operation`, `error_kind` | one per failed call; `error_kind` is [`ErrorKind::as_str`](crate::ErrorKind::as_str) |
//! | `kvtower_operation_duration_seconds` | histogram | `store`, `operation` | latency of each call (for `list`: until the stream ends) |
//! | `kvtower_cache_requests_total` | counter | `cache`, `tier`, `outcome` | recorded by [`CacheLayer`](super::CacheLayer): `tier` is `front` or `inner`, `outcome` is `hit` or `miss`; the hit ratio of a tier is `hit / (hit + miss)` |
//! | `kvtower_cache_stale_served_total` | counter | `cache` | reads a [`CacheLayer`](super::CacheLayer) answered from a stale copy because the inner store failed ([`stale_if_error`](super::CacheLayerBuilder::stale_if_error)) |
//! | `kvtower_circuit_breaker_state` | gauge | `breaker` | recorded by [`CircuitBreakerLayer`](super::CircuitBreakerLayer): `0` closed, `1` open, `2` half-open |
//! | `kvtower_circuit_breaker_transitions_total` | counter | `breaker`, `state` | breaker transitions, by the state entered |
//! | `kvtower_circuit_breaker_rejected_total` | counter | `breaker` | calls failed fast by an open breaker |
//!
//! [`CacheAside`](crate::aside::CacheAside) records its own
//! (`kvtower_aside_*`), listed in [`aside`](crate::aside#metrics).
//!
//! `operation` is one of `get`, `set`, `delete`, `cas`, `list`, `get_many`,
//! `set_many`, `delete_many`. `store` and `cache` are the names given to the
//! layers. Labels are low-cardinality by design: a key is never a label.
//!
//! Handles are registered once, when the layer is built, with the recorder
//! installed at that point; each call then costs two clock reads and a few
//! atomic increments. A read answered from memory at once (a front hit
//! through [`KvStore::get_shared`]) reads no clock: it is recorded with a
//! duration of zero, below the first bucket of any latency histogram.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};

/// `kvtower_operations_total`: calls by store, operation and outcome.
pub const OPERATIONS_TOTAL: &str = "kvtower_operations_total";
/// `kvtower_operation_errors_total`: failed calls by store, operation and
/// error kind.
pub const OPERATION_ERRORS_TOTAL: &str = "kvtower_operation_errors_total";
/// `kvtower_operation_duration_seconds`: call latency by store and operation.
pub const OPERATION_DURATION_SECONDS: &str = "kvtower_operation_duration_seconds";
/// `kvtower_cache_requests_total`: [`CacheLayer`](super::CacheLayer) lookups
/// by cache, tier and outcome.
pub const CACHE_REQUESTS_TOTAL: &str = "kvtower_cache_requests_total";
/// `kvtower_cache_stale_served_total`: reads a
/// [`CacheLayer`](super::CacheLayer) answered from a stale copy
/// ([`stale_if_error`](super::CacheLayerBuilder::stale_if_error)).
pub const CACHE_STALE_SERVED_TOTAL: &str = "kvtower_cache_stale_served_total";

/// Label: the store name given to [`MetricsLayer::new`].
pub const LABEL_STORE: &str = "store";
/// Label: the operation (`get`, `set`, ...).
pub const LABEL_OPERATION: &str = "operation";
/// Label: `hit`, `miss`, `ok` or `error`.
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: the [`ErrorKind`](crate::ErrorKind) of a failure.
pub const LABEL_ERROR_KIND: &str = "error_kind";
/// Label: the cache name given to
/// [`CacheLayerBuilder::name`](super::CacheLayerBuilder::name).
pub const LABEL_CACHE: &str = "cache";
/// Label: the cache tier, `front` or `inner`.
pub const LABEL_TIER: &str = "tier";

/// Outcome: a `get` found a value.
pub const OUTCOME_HIT: &str = "hit";
/// Outcome: a `get` found nothing.
pub const OUTCOME_MISS: &str = "miss";
/// Outcome: any other successful call.
pub const OUTCOME_OK: &str = "ok";
/// Outcome: the call failed.
pub const OUTCOME_ERROR: &str = "error";
/// Tier: the cache's front tier.
pub const TIER_FRONT: &str = "front";
/// Tier: the store behind the cache.
pub const TIER_INNER: &str = "inner";

/// The operations that have series of their own, in the order of
/// `Instruments::ops`. The read variants (`get_with_ttl`, `get_shared`,
/// `get_many_with_ttl`) are counted under `get` and `get_many`.
const RECORDED: [Operation; 8] = [
    Operation::Get,
    Operation::Set,
    Operation::Delete,
    Operation::Cas,
    Operation::List,
    Operation::GetMany,
    Operation::SetMany,
    Operation::DeleteMany,
];

/// The index of `op`'s instruments in `Instruments::ops` (see [`RECORDED`]).
fn slot(op: Operation) -> usize {
    match op {
        Operation::Get | Operation::GetWithTtl | Operation::GetShared => 0,
        Operation::Set => 1,
        Operation::Delete => 2,
        Operation::Cas => 3,
        Operation::List => 4,
        Operation::GetMany | Operation::GetManyWithTtl => 5,
        Operation::SetMany => 6,
        Operation::DeleteMany => 7,
        // Not a call of this layer; never recorded.
        Operation::Connect | Operation::Sweep | Operation::GetOrSet => 0,
    }
}

/// A [`tower::Layer`] that wraps a store in [`Metrics`]. Cheap to clone;
/// clones share the metric handles.
///
/// ```
/// use kvtower::{layers::MetricsLayer, MemoryKvStore};
/// use tower::Layer;
/// let store = MetricsLayer::new("users").layer(MemoryKvStore::new());
/// # let _ = store;
/// ```
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    instruments: std::sync::Arc<Instruments>,
}

impl MetricsLayer {
    /// A layer recording under the `store` label `name`. Registers the metric
    /// handles with the recorder installed now.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            instruments: std::sync::Arc::new(Instruments::new(name.into())),
        }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            instruments: self.instruments.clone(),
        }
    }
}

#[derive(Debug)]
struct OpInstruments {
    op: Operation,
    ok: metrics::Counter,
    hit: metrics::Counter,
    miss: metrics::Counter,
    error: metrics::Counter,
    duration: metrics::Histogram,
}

#[derive(Debug)]
struct Instruments {
    name: String,
    ops: Vec<OpInstruments>,
}

impl Instruments {
    fn new(name: String) -> Self {
        let counter = |op: Operation, outcome: &'static str| {
            metrics::counter!(
                OPERATIONS_TOTAL,
                LABEL_STORE => name.clone(),
                LABEL_OPERATION => op.as_str(),
                LABEL_OUTCOME => outcome
            )
        };
        let ops = RECORDED
            .iter()
            .map(|&op| {
                // Only `get` has hits and misses; other operations get no-op
                // handles so that no empty series is exported for them.
                let (hit, miss, ok) = if op == Operation::Get {
                    let noop = metrics::Counter::noop();
                    (counter(op, OUTCOME_HIT), counter(op, OUTCOME_MISS), noop)
                } else {
                    (
                        metrics::Counter::noop(),
                        metrics::Counter::noop(),
                        counter(op, OUTCOME_OK),
                    )
                };
                OpInstruments {
                    op,
                    ok,
                    hit,
                    miss,
                    error: counter(op, OUTCOME_ERROR),
                    duration: metrics::histogram!(
                        OPERATION_DURATION_SECONDS,
                        LABEL_STORE => name.clone(),
                        LABEL_OPERATION => op.as_str()
                    ),
                }
            })
            .collect();
        Self { name, ops }
    }

    fn op(&self, op: Operation) -> &OpInstruments {
        &self.ops[slot(op)]
    }

    fn record_error(&self, op: &OpInstruments, error: &Error) {
        op.error.increment(1);
        // Errors are the slow path: register the kind's handle on demand.
        metrics::counter!(
            OPERATION_ERRORS_TOTAL,
            LABEL_STORE => self.name.clone(),
            LABEL_OPERATION => op.op.as_str(),
            LABEL_ERROR_KIND => error.kind().as_str()
        )
        .increment(1);
    }

    /// Records a `get` answered from memory without waiting (a front hit):
    /// counted like any other, with a duration of zero. It took well under a
    /// microsecond, below the first bucket of any latency histogram, and
    /// timing it would cost two clock reads, about as much as the hit itself.
    fn answered_in_memory(&self, found: std::result::Result<bool, &Error>) {
        let instruments = self.op(Operation::Get);
        instruments.duration.record(0.0);
        match found {
            Ok(true) => instruments.hit.increment(1),
            Ok(false) => instruments.miss.increment(1),
            Err(e) => self.record_error(instruments, e),
        }
    }

    async fn observe<T>(
        &self,
        op: Operation,
        call: impl Future<Output = Result<T>>,
        outcome: impl FnOnce(&OpInstruments, &T),
    ) -> Result<T> {
        let instruments = self.op(op);
        let start = Instant::now();
        let result = call.await;
        instruments.duration.record(start.elapsed().as_secs_f64());
        match &result {
            Ok(value) => outcome(instruments, value),
            Err(e) => self.record_error(instruments, e),
        }
        result
    }
}

/// Counts a read's hit or miss: anything that answered a value is a hit.
fn hit_or_miss<T>(op: &OpInstruments, value: &Option<T>) {
    if value.is_some() {
        op.hit.increment(1);
    } else {
        op.miss.increment(1);
    }
}

fn ok<T>(op: &OpInstruments, _: &T) {
    op.ok.increment(1);
}

/// A store whose operations are counted and timed. Built by
/// [`MetricsLayer`]; see the [module docs](self) for the metrics.
///
/// ```
/// use kvtower::{layers::MetricsLayer, MemoryKvStore};
/// use tower::Layer;
/// let store = MetricsLayer::new("users").layer(MemoryKvStore::new());
/// let _inner: &MemoryKvStore = store.inner();
/// ```
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    instruments: std::sync::Arc<Instruments>,
}

impl<S> Metrics<S> {
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
impl<S: KvStore> KvStore for Metrics<S> {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        let call = self.inner.get(key);
        self.instruments
            .observe(Operation::Get, call, hit_or_miss)
            .await
    }

    // The two other single-key reads are gets to a dashboard: same label, same
    // hit/miss counters.
    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        let call = self.inner.get_with_ttl(key);
        self.instruments
            .observe(Operation::Get, call, hit_or_miss)
            .await
    }

    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        let read = self.inner.get_shared(key);
        match read.peek() {
            Some(found) => {
                self.instruments.answered_in_memory(found);
                read
            }
            None => SharedGet::boxed(self.instruments.observe(Operation::Get, read, hit_or_miss)),
        }
    }

    fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
        let value = self.inner.probe(key)?;
        self.instruments.answered_in_memory(Ok(true));
        Some(value)
    }

    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        let call = self.inner.set_shared(key, value, options);
        self.instruments.observe(Operation::Set, call, ok).await
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let call = self.inner.set(key, value, options);
        self.instruments.observe(Operation::Set, call, ok).await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        let call = self.inner.delete(key);
        self.instruments.observe(Operation::Delete, call, ok).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let call = self.inner.cas(key, expected, new, options);
        self.instruments.observe(Operation::Cas, call, ok).await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        ObservedList {
            inner: self.inner.list(prefix),
            instruments: &self.instruments,
            start: Instant::now(),
            done: false,
        }
        .boxed()
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let call = self.inner.get_many(keys);
        self.instruments.observe(Operation::GetMany, call, ok).await
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        let call = self.inner.get_many_with_ttl(keys);
        self.instruments.observe(Operation::GetMany, call, ok).await
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        let call = self.inner.set_many(entries, options);
        self.instruments.observe(Operation::SetMany, call, ok).await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        let call = self.inner.delete_many(keys);
        self.instruments
            .observe(Operation::DeleteMany, call, ok)
            .await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// A listing that records its metrics when it ends or first fails.
struct ObservedList<'a> {
    inner: BoxStream<'a, Result<KvEntry>>,
    instruments: &'a Instruments,
    start: Instant,
    done: bool,
}

impl Stream for ObservedList<'_> {
    type Item = Result<KvEntry>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = futures::ready!(self.inner.poll_next_unpin(cx));
        if !self.done {
            let op = self.instruments.op(Operation::List);
            match &item {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.done = true;
                    op.duration.record(self.start.elapsed().as_secs_f64());
                    self.instruments.record_error(op, e);
                }
                None => {
                    self.done = true;
                    op.duration.record(self.start.elapsed().as_secs_f64());
                    op.ok.increment(1);
                }
            }
        }
        Poll::Ready(item)
    }
}
