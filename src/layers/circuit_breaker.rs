//! [`CircuitBreakerLayer`]: stops calling a store that keeps failing, and
//! fails fast instead.
//!
//! After [`failure_threshold`](CircuitBreakerLayerBuilder::failure_threshold)
//! consecutive retryable failures (an error whose
//! [`is_retryable`](crate::Error::is_retryable) is true: the backend
//! unreachable, or a timeout) the breaker **opens**: every call fails at
//! once with a retryable [`Unavailable`](crate::ErrorKind::Unavailable)
//! error, without reaching the store, for the
//! [`cooldown`](CircuitBreakerLayerBuilder::cooldown). Then one call is let
//! through as a probe (**half-open**; the others still fail fast): its
//! success **closes** the breaker, its retryable failure opens it for
//! another cooldown. A non-retryable error (a bad key, say) is an answer of a
//! working backend and counts as a success.
//!
//! Put it next to the slow or failing backend (inside the cache layer), so a
//! front hit never touches it and a cache over a dead Redis answers its
//! misses in microseconds instead of after a timeout each.
//!
//! ```
//! use kvtower::layers::{CacheLayer, CircuitBreakerLayer};
//! use kvtower::{kvkey, KvStore, MemoryKvStore};
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let breaker = CircuitBreakerLayer::builder("redis")
//!     .failure_threshold(5)
//!     .cooldown(Duration::from_secs(2))
//!     .build();
//! let store = ServiceBuilder::new()
//!     .layer(CacheLayer::new(MemoryKvStore::new()))
//!     .layer(breaker.clone())
//!     .service(MemoryKvStore::new()); // RedisKvStore in production
//! store.get(&kvkey!["k"]).await?;
//! assert_eq!(breaker.state(), kvtower::layers::BreakerState::Closed);
//! # Ok(())
//! # }
//! ```
//!
//! # Shared state
//!
//! The state lives in the layer: every store it wraps, and every clone,
//! share one breaker (like tower's `GlobalConcurrencyLimitLayer`). Build one
//! layer per backend.
//!
//! # Metrics and events
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `kvtower_circuit_breaker_state` | gauge | `breaker` | `0` closed, `1` open, `2` half-open |
//! | `kvtower_circuit_breaker_transitions_total` | counter | `breaker`, `state` | transitions, by the state entered |
//! | `kvtower_circuit_breaker_rejected_total` | counter | `breaker` | calls failed fast while open or half-open |
//!
//! Every transition is also a `warn` event (target
//! `kvtower::layers::circuit_breaker`) with the breaker's name and both
//! states.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use metrics::{Counter, Gauge};

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};

/// `kvtower_circuit_breaker_state`: `0` closed, `1` open, `2` half-open.
pub const BREAKER_STATE: &str = "kvtower_circuit_breaker_state";
/// `kvtower_circuit_breaker_transitions_total`: transitions by state entered.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "kvtower_circuit_breaker_transitions_total";
/// `kvtower_circuit_breaker_rejected_total`: calls failed fast.
pub const BREAKER_REJECTED_TOTAL: &str = "kvtower_circuit_breaker_rejected_total";
/// Label: the breaker's name.
pub const LABEL_BREAKER: &str = "breaker";
/// Label: the state a transition entered (`closed`, `open`, `half_open`).
pub const LABEL_STATE: &str = "state";

/// The default [`failure_threshold`](CircuitBreakerLayerBuilder::failure_threshold).
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// The default [`cooldown`](CircuitBreakerLayerBuilder::cooldown).
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);

/// The state of a circuit breaker.
///
/// ```
/// use kvtower::layers::BreakerState;
/// assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls reach the store.
    Closed,
    /// Calls fail fast until the cooldown has passed.
    Open,
    /// One probe call reaches the store; the others fail fast.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`: a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn from_u8(state: u8) -> Self {
        match state {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Options of a [`CircuitBreakerLayer`], from [`CircuitBreakerLayer::builder`].
///
/// ```
/// use kvtower::layers::CircuitBreakerLayer;
/// use std::time::Duration;
/// let layer = CircuitBreakerLayer::builder("redis")
///     .failure_threshold(3)
///     .cooldown(Duration::from_millis(500))
///     .build();
/// # let _ = layer;
/// ```
#[derive(Debug)]
#[must_use]
pub struct CircuitBreakerLayerBuilder {
    name: String,
    threshold: u32,
    cooldown: Duration,
}

impl CircuitBreakerLayerBuilder {
    /// Opens after this many consecutive retryable failures
    /// ([`DEFAULT_FAILURE_THRESHOLD`] by default; zero is taken as one).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.threshold = failures.max(1);
        self
    }

    /// How long the breaker stays open before a probe
    /// ([`DEFAULT_COOLDOWN`] by default).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// The layer. Registers its metric handles with the recorder installed now.
    pub fn build(self) -> CircuitBreakerLayer {
        let state_gauge = metrics::gauge!(BREAKER_STATE, LABEL_BREAKER => self.name.clone());
        state_gauge.set(f64::from(CLOSED));
        let transition = |state: BreakerState| {
            metrics::counter!(
                BREAKER_TRANSITIONS_TOTAL,
                LABEL_BREAKER => self.name.clone(),
                LABEL_STATE => state.as_str()
            )
        };
        CircuitBreakerLayer {
            breaker: Arc::new(Breaker {
                state: AtomicU8::new(CLOSED),
                failures: AtomicU32::new(0),
                opened_at: AtomicU64::new(0),
                base: tokio::time::Instant::now(),
                threshold: self.threshold,
                cooldown: self.cooldown,
                state_gauge,
                to_closed: transition(BreakerState::Closed),
                to_open: transition(BreakerState::Open),
                to_half_open: transition(BreakerState::HalfOpen),
                rejected: metrics::counter!(BREAKER_REJECTED_TOTAL, LABEL_BREAKER => self.name.clone()),
                name: self.name,
            }),
        }
    }
}

/// A [`tower::Layer`] that wraps a store in a [`CircuitBreaker`]. Cheap to
/// clone; clones (and every store they wrap) share one breaker.
///
/// ```
/// use kvtower::{layers::CircuitBreakerLayer, MemoryKvStore};
/// use tower::Layer;
/// let store = CircuitBreakerLayer::new("redis").layer(MemoryKvStore::new());
/// # let _ = store;
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<Breaker>,
}

impl CircuitBreakerLayer {
    /// A breaker named `name` (the `breaker` label) with the defaults.
    pub fn new(name: impl Into<String>) -> Self {
        Self::builder(name).build()
    }

    /// A builder for a breaker named `name`.
    pub fn builder(name: impl Into<String>) -> CircuitBreakerLayerBuilder {
        CircuitBreakerLayerBuilder {
            name: name.into(),
            threshold: DEFAULT_FAILURE_THRESHOLD,
            cooldown: DEFAULT_COOLDOWN,
        }
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }
}

impl<S> tower::Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// A store behind a circuit breaker. Built by [`CircuitBreakerLayer`]; see
/// the [module docs](self).
///
/// ```
/// use kvtower::{layers::{BreakerState, CircuitBreakerLayer}, MemoryKvStore};
/// use tower::Layer;
/// let store = CircuitBreakerLayer::new("redis").layer(MemoryKvStore::new());
/// assert_eq!(store.state(), BreakerState::Closed);
/// let _inner: &MemoryKvStore = store.inner();
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S> CircuitBreaker<S> {
    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }
}

#[derive(Debug)]
struct Breaker {
    name: String,
    state: AtomicU8,
    /// Consecutive retryable failures while closed.
    failures: AtomicU32,
    /// When the breaker last opened, in nanoseconds since `base` (tokio's
    /// clock, so tests can pause time).
    opened_at: AtomicU64,
    base: tokio::time::Instant,
    threshold: u32,
    cooldown: Duration,
    state_gauge: Gauge,
    to_closed: Counter,
    to_open: Counter,
    to_half_open: Counter,
    rejected: Counter,
}

/// The right to make one call, and what its outcome must be reported as.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn admit(&self, operation: Operation) -> Result<Permit<'_>> {
        let normal = Permit {
            breaker: self,
            probe: false,
            reported: false,
        };
        match self.state.load(Ordering::Acquire) {
            CLOSED => return Ok(normal),
            OPEN => {
                let opened = self.opened_at.load(Ordering::Acquire);
                let cooldown = u64::try_from(self.cooldown.as_nanos()).unwrap_or(u64::MAX);
                // Of the calls arriving after the cooldown, the one that wins
                // this exchange is the probe; the others still fail fast.
                if self.now_nanos().saturating_sub(opened) >= cooldown
                    && self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.transitioned(BreakerState::Open, BreakerState::HalfOpen);
                    return Ok(Permit {
                        probe: true,
                        ..normal
                    });
                }
            }
            _ => {}
        }
        self.rejected.increment(1);
        Err(Error::new(
            ErrorKind::Unavailable,
            format!("circuit breaker {:?} is open", self.name),
        )
        .with_operation(operation))
    }

    fn transitioned(&self, from: BreakerState, to: BreakerState) {
        self.state_gauge.set(f64::from(match to {
            BreakerState::Closed => CLOSED,
            BreakerState::Open => OPEN,
            BreakerState::HalfOpen => HALF_OPEN,
        }));
        match to {
            BreakerState::Closed => &self.to_closed,
            BreakerState::Open => &self.to_open,
            BreakerState::HalfOpen => &self.to_half_open,
        }
        .increment(1);
        tracing::warn!(
            breaker = %self.name,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker state changed"
        );
    }

    /// Opens from `from` (closed after the threshold, or a failed probe).
    fn open(&self, from: u8) {
        self.opened_at.store(self.now_nanos(), Ordering::Release);
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            self.transitioned(BreakerState::from_u8(from), BreakerState::Open);
        }
    }
}

impl Permit<'_> {
    fn report(mut self, error: Option<&Error>) {
        self.reported = true;
        let breaker = self.breaker;
        let failed = error.is_some_and(Error::is_retryable);
        match (self.probe, failed) {
            (false, false) => {
                // Read first: a store on every success would contend for
                // the cache line on the hot path.
                if breaker.failures.load(Ordering::Relaxed) != 0 {
                    breaker.failures.store(0, Ordering::Relaxed);
                }
            }
            (false, true) => {
                let failures = breaker.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures >= breaker.threshold {
                    breaker.open(CLOSED);
                }
            }
            (true, false) => {
                breaker.failures.store(0, Ordering::Relaxed);
                if breaker
                    .state
                    .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    breaker.transitioned(BreakerState::HalfOpen, BreakerState::Closed);
                }
            }
            (true, true) => breaker.open(HALF_OPEN),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A probe whose call was dropped before it answered tells nothing:
        // back to open with the cooldown already over, so the next call
        // probes instead of the breaker staying half-open forever.
        if self.probe && !self.reported {
            let breaker = self.breaker;
            breaker.opened_at.store(0, Ordering::Release);
            let _ = breaker.state.compare_exchange(
                HALF_OPEN,
                OPEN,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

impl<S> CircuitBreaker<S> {
    async fn call<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let permit = self.breaker.admit(operation)?;
        let result = call.await;
        permit.report(result.as_ref().err());
        result
    }
}

#[async_trait]
impl<S: KvStore> KvStore for CircuitBreaker<S> {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.call(Operation::Get, self.inner.get(key)).await
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        self.call(Operation::Set, self.inner.set(key, value, options))
            .await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.call(Operation::Delete, self.inner.delete(key)).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        self.call(Operation::Cas, self.inner.cas(key, expected, new, options))
            .await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        let permit = match self.breaker.admit(Operation::List) {
            Ok(permit) => permit,
            Err(e) => return stream::once(async move { Err(e) }).boxed(),
        };
        // The listing's outcome is its first error, or its end: reported
        // once, then the stream goes on as the inner one does.
        let state = (self.inner.list(prefix), Some(permit));
        stream::unfold(state, |(mut inner, mut permit)| async move {
            let item = inner.next().await;
            if let Some(permit) = permit.take_if(|_| !matches!(item, Some(Ok(_)))) {
                permit.report(item.as_ref().and_then(|r| r.as_ref().err()));
            }
            item.map(|item| (item, (inner, permit)))
        })
        .boxed()
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        self.call(Operation::GetWithTtl, self.inner.get_with_ttl(key))
            .await
    }

    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        SharedGet::boxed(self.call(Operation::GetShared, self.inner.get_shared(key)))
    }

    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        self.call(Operation::Set, self.inner.set_shared(key, value, options))
            .await
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        self.call(Operation::GetMany, self.inner.get_many(keys))
            .await
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        self.call(
            Operation::GetManyWithTtl,
            self.inner.get_many_with_ttl(keys),
        )
        .await
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        self.call(Operation::SetMany, self.inner.set_many(entries, options))
            .await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        self.call(Operation::DeleteMany, self.inner.delete_many(keys))
            .await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Error {
        Error::new(ErrorKind::Unavailable, "down")
    }

    #[tokio::test(start_paused = true)]
    async fn opens_fails_fast_half_opens_and_closes() {
        let layer = CircuitBreakerLayer::builder("t")
            .failure_threshold(3)
            .cooldown(Duration::from_secs(1))
            .build();
        let b = &layer.breaker;
        for _ in 0..2 {
            b.admit(Operation::Get).unwrap().report(Some(&failure()));
        }
        // A success resets the run.
        b.admit(Operation::Get).unwrap().report(None);
        for _ in 0..2 {
            b.admit(Operation::Get).unwrap().report(Some(&failure()));
        }
        assert_eq!(layer.state(), BreakerState::Closed);
        // A non-retryable error is an answer, not a failure.
        b.admit(Operation::Get)
            .unwrap()
            .report(Some(&Error::new(ErrorKind::InvalidKey, "bad")));
        for _ in 0..3 {
            b.admit(Operation::Get).unwrap().report(Some(&failure()));
        }
        assert_eq!(layer.state(), BreakerState::Open);
        let err = b.admit(Operation::Get).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());

        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.admit(Operation::Get).unwrap();
        assert_eq!(layer.state(), BreakerState::HalfOpen);
        assert!(b.admit(Operation::Get).is_err(), "one probe at a time");
        probe.report(Some(&failure()));
        assert_eq!(layer.state(), BreakerState::Open);
        assert!(
            b.admit(Operation::Get).is_err(),
            "a failed probe opens again"
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        // A dropped probe lets the next call probe at once.
        drop(b.admit(Operation::Get).unwrap());
        assert_eq!(layer.state(), BreakerState::Open);
        b.admit(Operation::Get).unwrap().report(None);
        assert_eq!(layer.state(), BreakerState::Closed);
    }
}
