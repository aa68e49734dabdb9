//! Cache-aside with a loader: [`CacheAside::get_or_set`] gives the cached
//! value of a key, or computes it once (in this process and across every
//! process sharing the store) and caches it, and keeps answering with the
//! last good value when the loader or the store fails.
//!
//! `CacheAside` is a facade over any [`KvStore`], typically the full stack (a
//! [`CacheLayer`](crate::layers::CacheLayer) front tier over Redis, with the
//! invalidation bus, and a
//! [`CircuitBreakerLayer`](crate::layers::CircuitBreakerLayer) next to Redis).
//!
//! ```
//! use kvtower::aside::{CacheAside, EntryOptions};
//! use kvtower::{kvkey, MemoryKvStore};
//! use serde_json::json;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let aside = CacheAside::builder(MemoryKvStore::new()) // the stack over Redis in production
//!     .default_options(
//!         EntryOptions::new()
//!             .ttl(Duration::from_secs(60))
//!             .fail_safe(Duration::from_secs(3600), Duration::from_secs(30)),
//!     )
//!     .build()?;
//! let key = kvkey!["user", "42"];
//! let user = aside
//!     .get_or_set(&key, aside.options(), || async {
//!         Ok::<_, std::io::Error>(json!({"name": "Ada"})) // the database query
//!     })
//!     .await?;
//! assert_eq!(user, json!({"name": "Ada"}));
//! # Ok(())
//! # }
//! ```
//!
//! # What a call does
//!
//! 1. It reads the key from the store. A fresh entry is the answer (and,
//!    past the [eager refresh](EntryOptions::eager_refresh) threshold, one
//!    background refresh starts).
//! 2. Otherwise it joins the key's load in this process, or starts one
//!    ([single-flight](flight)). The load takes the key's fleet-wide
//!    [`lease`] (one `cas`): if another process holds it, the load
//!    polls the store until that process's value lands, or until the lease
//!    lapses and it can take it over.
//! 3. The loader runs (in a task of its own, so a caller that stops waiting
//!    does not cancel it), its value is written with its logical expiry,
//!    the callers get it, and the lease is released (no caller waits for
//!    the release). With
//!    [`background_write`](EntryOptions::background_write) the callers get
//!    the value before the write too.
//!
//! A cold call over a remote store therefore waits for two round trips
//! plus the loader (the read and the write), three with the lease (its
//! `cas`); with `background_write`, one and two.
//! 4. If the loader fails (or passes its bound) and
//!    [fail-safe](EntryOptions::fail_safe) holds a stale value, that value
//!    is served and re-written fresh for the throttle duration, so the
//!    loader is not hammered while it is failing. Without fail-safe the
//!    caller gets the loader's error, as the source of a kvtower [`Error`].
//!
//! A store that fails (Redis down) never fails a call the loader can
//! answer: a failed read is a miss, a failed write is counted and logged,
//! and the loaded value is returned. A failed lease (the store cannot take
//! it) lets the load go on without it: availability wins over the
//! fleet-wide single loader while the store is down.
//!
//! # Stored format
//!
//! An entry is one JSON object, `{"value": …, "kvtower_aside": {"created_ms",
//! "expires_ms", "stale_until_ms"}}` (Unix milliseconds), stored with the
//! store's TTL ending at `stale_until_ms`: see [`entry`] for the details. A
//! plain `get` through the [`KvStore`] sees that object; a value written
//! around `CacheAside` in any other shape is read as a fresh value.
//!
//! Times are the wall clock read when the facade was built, advanced by
//! tokio's monotonic clock (so tests can pause time); nodes whose clocks
//! disagree by `d` see entries expire up to `d` early or late.
//!
//! # With a front tier
//!
//! Over a [`CacheLayer`](crate::layers::CacheLayer), the front holds the
//! entries too. Give it the invalidation bus: a process that loads a key
//! then invalidates the others' fronts, so their lease waiters see the new
//! value at once and their eager refreshes see the refreshed entry; without
//! the bus, a front holding the old entry can make another process refresh
//! or load again once the lease is released.
//!
//! # Metrics
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `kvtower_aside_requests_total` | counter | `cache`, `outcome` | `get_or_set` calls: `hit` (a fresh entry), `miss` (a load joined or started) |
//! | `kvtower_aside_loader_calls_total` | counter | `cache`, `outcome` | loader runs: `ok`, `error`, `timeout` (ran past the lease TTL and was stopped) |
//! | `kvtower_aside_loader_duration_seconds` | histogram | `cache` | how long each loader ran |
//! | `kvtower_aside_stale_served_total` | counter | `cache`, `reason` | stale values served by fail-safe: `loader_error`, `soft_timeout`, `hard_timeout` |
//! | `kvtower_aside_timeouts_total` | counter | `cache`, `timeout` | calls that stopped waiting: `soft`, `hard` |
//! | `kvtower_aside_background_completions_total` | counter | `cache`, `outcome` | loads that landed (`ok`) or failed (`error`) after a caller stopped waiting |
//! | `kvtower_aside_refreshes_total` | counter | `cache`, `outcome` | eager refreshes: `started` (each one begun here), `busy` (of those, the ones that found another process holding the lease and stopped) |
//! | `kvtower_aside_lease_total` | counter | `cache`, `outcome` | lease attempts: `acquired`, `busy` (a load waits for another process), `takeover` (taken after waiting: the holder left no value), `error` (the store failed; loading without the lease) |
//! | `kvtower_aside_store_errors_total` | counter | `cache`, `operation` | store calls that failed and were survived: `get`, `set` |
//!
//! `cache` is the [`name`](CacheAsideBuilder::name). A key is never a label.
//! Loader runs are `tracing` spans named `kvtower.aside.load` (fields
//! `cache`, `refresh`), with a `debug` event naming the key.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{KvStore, SetOptions, Value};

mod builder;
pub mod entry;
pub mod flight;
pub mod lease;
pub mod metrics;
mod options;

pub use builder::{CacheAsideBuilder, DEFAULT_LEASE_POLL_INTERVAL, DEFAULT_LEASE_TTL};
pub use options::{EntryOptions, DEFAULT_TTL};

use entry::{add_ms, Clock, Entry};
use flight::{FlightContext, Flights, Landed, SharedError};
use lease::{Acquire, Lease};
use metrics::Instruments;

/// The cache-aside facade over a store: `get_or_set` with one loader per key
/// (in-process and fleet-wide), fail-safe, loader timeouts and eager
/// refresh. Cheap to clone (an `Arc` inside; clones share everything),
/// `Send + Sync`. See the [module docs](self).
///
/// ```
/// use kvtower::aside::CacheAside;
/// use kvtower::MemoryKvStore;
/// let aside = CacheAside::builder(MemoryKvStore::new()).build()?;
/// let clone = aside.clone(); // the same flights, leases and metrics
/// # let _ = clone;
/// # Ok::<(), kvtower::Error>(())
/// ```
pub struct CacheAside<S> {
    shared: Arc<Shared<S>>,
}

pub(crate) struct Shared<S> {
    pub(crate) store: S,
    pub(crate) defaults: EntryOptions,
    pub(crate) lease: Option<Duration>,
    /// The longest a loader may run (the lease TTL).
    pub(crate) load_bound: Duration,
    pub(crate) poll: Duration,
    pub(crate) clock: Clock,
    pub(crate) flights: Flights,
    pub(crate) metrics: Instruments,
    pub(crate) name: String,
    pub(crate) jitter: Jitter,
}

impl<S> Clone for CacheAside<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for CacheAside<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAside")
            .field("name", &self.shared.name)
            .field("defaults", &self.shared.defaults)
            .field("lease", &self.shared.lease)
            .finish_non_exhaustive()
    }
}

/// Random TTL jitter without an RNG dependency: a per-facade random hasher
/// over a counter.
#[derive(Debug)]
pub(crate) struct Jitter {
    random: RandomState,
    counter: AtomicU64,
}

impl Jitter {
    pub(crate) fn new() -> Self {
        Self {
            random: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// Uniform in `[0, max]`.
    fn sample(&self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let random = self
            .random
            .hash_one(self.counter.fetch_add(1, Ordering::Relaxed));
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(((u128::from(random) * (u128::from(nanos) + 1)) >> 64) as u64)
    }
}

/// A loader's error as a kvtower [`Error`]: one that is already a kvtower
/// error keeps its kind; any other becomes the source of a `Backend` error.
fn loader_error<E: std::error::Error + Send + Sync + 'static>(e: E, key: &KvKey) -> Error {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    match boxed.downcast::<Error>() {
        Ok(e) => e.with_key(key),
        Err(other) => Error::new(ErrorKind::Backend, "the loader failed")
            .with_operation(Operation::GetOrSet)
            .with_key(key)
            .with_source(other),
    }
}

/// The error of a typed loader: its own, or its value failed to serialize.
#[derive(Debug, thiserror::Error)]
enum TypedLoadError<E> {
    #[error(transparent)]
    Loader(E),
    #[error("the loaded value does not serialize to JSON")]
    Serialize(#[source] serde_json::Error),
}

/// What the fleet-wide lease gave a load.
enum LeaseOutcome {
    /// The lease, and the latest instant it may still be ours (its TTL
    /// counted from before the `cas` that took it).
    Held(Lease, tokio::time::Instant),
    /// Another process loaded the key while this one waited.
    Landed(Option<Value>),
    /// Another process holds it and this load is a refresh: skip it.
    Busy,
    /// The store could not take the lease: load without it.
    Unavailable,
}

impl<S: KvStore + 'static> CacheAside<S> {
    /// A builder over `store` (see [`CacheAsideBuilder`]).
    pub fn builder(store: S) -> CacheAsideBuilder<S> {
        CacheAsideBuilder::new(store)
    }

    /// The store behind the facade.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// The builder's default options, to pass as they are or changed:
    /// `aside.options().ttl(Duration::from_secs(5))`.
    pub fn options(&self) -> EntryOptions {
        self.shared.defaults
    }

    /// The value of `key`, or the value of `loader` (run once for all
    /// concurrent callers, here and in every process sharing the store),
    /// cached with `options`.
    ///
    /// # Concurrent calls on the same key
    ///
    /// Callers in this process share one load; only the first caller's
    /// `loader` runs, the others' are dropped unused. Across processes the
    /// load of the lease holder runs and the others wait for its value (by
    /// polling the store every
    /// [`lease_poll_interval`](CacheAsideBuilder::lease_poll_interval)), or
    /// load themselves once the lease lapsed. The load runs in its own task:
    /// a caller that stops waiting (soft or hard timeout, or its future
    /// dropped) does not cancel it, and its value still lands in the store.
    ///
    /// # Errors
    ///
    /// The loader's error, as the source of a kvtower [`Error`] (a loader
    /// returning a kvtower `Error` keeps its kind), when no stale value can
    /// be served; a [`Timeout`](ErrorKind::Timeout) error past the hard
    /// timeout; a [`Config`](ErrorKind::Config) error for invalid options.
    ///
    /// ```
    /// use kvtower::aside::CacheAside;
    /// use kvtower::{kvkey, MemoryKvStore};
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let aside = CacheAside::builder(MemoryKvStore::new()).build()?;
    /// let key = kvkey!["answer"];
    /// let load = || async { Ok::<_, std::io::Error>(json!(42)) };
    /// assert_eq!(aside.get_or_set(&key, aside.options(), load).await?, json!(42));
    /// // Cached now: this loader is not called.
    /// let fail = || async { Err::<serde_json::Value, _>(std::io::Error::other("db down")) };
    /// assert_eq!(aside.get_or_set(&key, aside.options(), fail).await?, json!(42));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_set<F, Fut, E>(
        &self,
        key: &KvKey,
        options: EntryOptions,
        loader: F,
    ) -> Result<Value>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Value, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let loader = move || async move { loader().await.map(Some) };
        match self.fetch(key, options, loader, false).await? {
            Some(value) => Ok(value),
            // Only when this call joined the load of a `get_or_set_optional`
            // on the same key whose loader said absent.
            None => Err(Error::new(
                ErrorKind::Backend,
                "a concurrent get_or_set_optional of the key loaded nothing",
            )
            .with_operation(Operation::GetOrSet)
            .with_key(key)),
        }
    }

    /// [`get_or_set`](Self::get_or_set) for a loader that may say "absent"
    /// (`Ok(None)`): with [`negative_ttl`](EntryOptions::negative_ttl), that
    /// answer is cached too, so a missing row is not reloaded on every call.
    ///
    /// ```
    /// use kvtower::aside::CacheAside;
    /// use kvtower::{kvkey, MemoryKvStore};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let aside = CacheAside::builder(MemoryKvStore::new()).build()?;
    /// let options = aside.options().negative_ttl(Duration::from_secs(10));
    /// let missing = || async { Ok::<_, std::io::Error>(None) };
    /// assert_eq!(aside.get_or_set_optional(&kvkey!["user", "0"], options, missing).await?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_set_optional<F, Fut, E>(
        &self,
        key: &KvKey,
        options: EntryOptions,
        loader: F,
    ) -> Result<Option<Value>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<Value>, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.fetch(key, options, loader, true).await
    }

    /// [`get_or_set`](Self::get_or_set) of a typed value, through serde.
    ///
    /// # Errors
    ///
    /// Those of `get_or_set`, and an
    /// [`InvalidValue`](ErrorKind::InvalidValue) error when the cached value
    /// does not deserialize into `T`.
    ///
    /// ```
    /// use kvtower::aside::CacheAside;
    /// use kvtower::{kvkey, MemoryKvStore};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct User { name: String }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let aside = CacheAside::builder(MemoryKvStore::new()).build()?;
    /// let user: User = aside
    ///     .get_or_set_as(&kvkey!["user", "1"], aside.options(), || async {
    ///         Ok::<_, std::io::Error>(User { name: "Ada".into() })
    ///     })
    ///     .await?;
    /// assert_eq!(user.name, "Ada");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_set_as<T, F, Fut, E>(
        &self,
        key: &KvKey,
        options: EntryOptions,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let loader = move || async move {
            let typed = loader().await.map_err(TypedLoadError::Loader)?;
            serde_json::to_value(typed).map_err(TypedLoadError::Serialize)
        };
        let value = self.get_or_set(key, options, loader).await?;
        serde_json::from_value(value).map_err(|e| {
            Error::from(e)
                .with_operation(Operation::GetOrSet)
                .with_key(key)
        })
    }

    /// The fresh cached value of `key`, if any (no loader, no stale value).
    ///
    /// # Errors
    ///
    /// The store's error.
    ///
    /// ```
    /// use kvtower::aside::CacheAside;
    /// use kvtower::{kvkey, MemoryKvStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let aside = CacheAside::builder(MemoryKvStore::new()).build()?;
    /// aside.set(&kvkey!["k"], 1.into(), aside.options()).await?;
    /// assert_eq!(aside.get(&kvkey!["k"]).await?, Some(1.into()));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.after_pending_write(key).await;
        let now = self.shared.clock.now_ms();
        Ok(self
            .shared
            .store
            .get(key)
            .await?
            .map(Entry::from_stored)
            .filter(|entry| entry.is_fresh(now))
            .and_then(|entry| entry.value))
    }

    /// Caches `value` for `key` with `options` (its TTL, fail-safe).
    ///
    /// # Errors
    ///
    /// The store's error, or a [`Config`](ErrorKind::Config) error for
    /// invalid options.
    pub async fn set(&self, key: &KvKey, value: Value, options: EntryOptions) -> Result<()> {
        options.validate()?;
        self.after_pending_write(key).await;
        self.write(key, Some(value), &options).await
    }

    /// Removes `key` (the value is gone, fail-safe cannot serve it).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn remove(&self, key: &KvKey) -> Result<()> {
        self.after_pending_write(key).await;
        self.shared.store.delete(key).await
    }

    /// Expires `key` logically now, keeping its value for fail-safe: the next
    /// `get_or_set` reloads it, and serves this value if the loader fails.
    /// A value without fail-safe time left is removed.
    ///
    /// # Errors
    ///
    /// The store's error.
    ///
    /// ```
    /// use kvtower::aside::CacheAside;
    /// use kvtower::{kvkey, MemoryKvStore};
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let aside = CacheAside::builder(MemoryKvStore::new()).build()?;
    /// let options = aside.options().fail_safe(Duration::from_secs(600), Duration::from_secs(10));
    /// aside.set(&kvkey!["k"], 1.into(), options).await?;
    /// aside.expire(&kvkey!["k"]).await?;
    /// assert_eq!(aside.get(&kvkey!["k"]).await?, None); // not fresh
    /// let fail = || async { Err::<serde_json::Value, _>(std::io::Error::other("db down")) };
    /// assert_eq!(aside.get_or_set(&kvkey!["k"], options, fail).await?, serde_json::json!(1)); // fail-safe
    /// # Ok(())
    /// # }
    /// ```
    pub async fn expire(&self, key: &KvKey) -> Result<()> {
        self.after_pending_write(key).await;
        let s = &self.shared;
        let Some(mut entry) = s.store.get(key).await?.map(Entry::from_stored) else {
            return Ok(());
        };
        let now = s.clock.now_ms();
        if entry.stale_until_ms == u64::MAX {
            // A foreign value: keep it as long as the default fail-safe would.
            match s.defaults.fail_safe {
                Some(fs) => {
                    entry.created_ms = now;
                    entry.stale_until_ms = add_ms(now, fs.max);
                }
                None => return s.store.delete(key).await,
            }
        }
        entry.expires_ms = entry.expires_ms.min(now);
        match entry.store_ttl(now) {
            Some(ttl) => {
                s.store
                    .set(key, entry.into_stored(), set_options(ttl))
                    .await
            }
            None => s.store.delete(key).await,
        }
    }

    /// Waits while a load of `key` that has answered its callers is still
    /// writing (see [`EntryOptions::background_write`]), so this process's
    /// operations on the key are ordered after what its callers were told.
    async fn after_pending_write(&self, key: &KvKey) {
        if let Some(written) = self.shared.flights.pending_write(key) {
            written.await;
        }
    }

    async fn fetch<L, Fut, E>(
        &self,
        key: &KvKey,
        options: EntryOptions,
        loader: L,
        accept_absent: bool,
    ) -> Result<Option<Value>>
    where
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<Value>, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        options.validate()?;
        let s = &self.shared;
        // Shared: a front hit copies only the entry's value, and answers
        // without a boxed future (see `KvStore::get_shared`).
        let entry = match s.store.get_shared(key).await {
            Ok(stored) => stored
                .map(|stored| Entry::from_shared(&stored))
                // A remembered "absent" answers only loaders that may say so.
                .filter(|entry| accept_absent || entry.value.is_some()),
            Err(e) => {
                // A failing store is a miss: the loader may still answer.
                s.metrics.store_get_error.increment(1);
                tracing::debug!(cache = %s.name, error = %e, "aside: store read failed, loading");
                None
            }
        };
        let now = s.clock.now_ms();
        let entry = match entry {
            Some(entry) if entry.is_fresh(now) => {
                s.metrics.hit.increment(1);
                if let Some(threshold) = options.eager_refresh {
                    if entry.wants_refresh(now, threshold) {
                        self.refresh(key, options, loader, entry.clone());
                    }
                }
                return Ok(entry.value);
            }
            other => other,
        };
        s.metrics.miss.increment(1);
        let stale = entry.filter(|e| options.fail_safe.is_some() && e.is_servable_stale(now));
        // With a stale value at hand, wait at most the soft timeout; the hard
        // one bounds the wait in any case (soft <= hard, checked by validate).
        let start = tokio::time::Instant::now();
        let soft_at = options
            .soft_timeout
            .filter(|_| stale.is_some())
            .map(|t| start + t);
        let hard = options.hard_timeout.map(|t| (start + t, t));
        let (mut loader, mut retries) = (loader, 0);
        loop {
            let (flight, unused) = s.flights.join_or_start(key, loader, |ctx, loader| {
                self.clone()
                    .load(key.clone(), options, loader, stale.clone(), ctx, false)
            });
            let landed = match self.wait(key, &flight, soft_at, hard, stale.as_ref()).await {
                Ok(landed) => landed,
                Err(answer) => return answer,
            };
            match (landed, unused) {
                // Joined the load of a `get_or_set_optional` whose loader
                // said absent, which this call cannot answer with: once that
                // load is done, load with this call's own loader.
                (Landed::Loaded(None), Some(unused)) if !accept_absent && retries < 2 => {
                    flight.settled().await;
                    (loader, retries) = (unused, retries + 1);
                }
                (landed, _) => return self.answer(landed, stale),
            }
        }
    }

    /// Waits for `flight` to land, within the call's soft and hard
    /// deadlines; `Err` is the call's answer when a deadline passed first
    /// (the stale value, or a `Timeout` error).
    async fn wait(
        &self,
        key: &KvKey,
        flight: &flight::Flight,
        soft_at: Option<tokio::time::Instant>,
        hard: Option<(tokio::time::Instant, Duration)>,
        stale: Option<&Entry>,
    ) -> std::result::Result<Landed, Result<Option<Value>>> {
        let s = &self.shared;
        let mut landed = pin!(flight.landed());
        let hard_at = hard.map(|(at, _)| at);
        for (deadline, is_hard) in [(soft_at, false), (hard_at, true)] {
            let Some(deadline) = deadline else { continue };
            if let Ok(landed) = tokio::time::timeout_at(deadline, &mut landed).await {
                return Ok(landed);
            }
            // The load goes on in its task and lands for later calls.
            flight.abandon();
            let m = &s.metrics;
            if is_hard {
                &m.timeout_hard
            } else {
                &m.timeout_soft
            }
            .increment(1);
            if let Some(stale) = stale {
                if is_hard {
                    &m.stale_hard_timeout
                } else {
                    &m.stale_soft_timeout
                }
                .increment(1);
                return Err(Ok(stale.value.clone()));
            }
            if let (true, Some((_, timeout))) = (is_hard, hard) {
                return Err(Err(Error::new(
                    ErrorKind::Timeout,
                    format!("the loader gave no value within {timeout:?}"),
                )
                .with_operation(Operation::GetOrSet)
                .with_key(key)));
            }
        }
        Ok(landed.await)
    }

    /// The caller's answer from its flight's result and its own stale value.
    fn answer(&self, landed: Landed, stale: Option<Entry>) -> Result<Option<Value>> {
        match (landed, stale) {
            (Landed::Loaded(value), _) => Ok(value),
            (Landed::Failed(_), Some(stale)) => {
                self.shared.metrics.stale_loader_error.increment(1);
                Ok(stale.value)
            }
            (Landed::Failed(error), None) => Err(error.to_error()),
        }
    }

    /// Starts one background refresh of `key` unless one runs already.
    fn refresh<L, Fut, E>(&self, key: &KvKey, options: EntryOptions, loader: L, current: Entry)
    where
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<Value>, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let s = &self.shared;
        if s.flights.is_running(key) {
            return;
        }
        let (_, unused) = s.flights.join_or_start(key, loader, |ctx, loader| {
            self.clone()
                .load(key.clone(), options, loader, Some(current), ctx, true)
        });
        if unused.is_none() {
            s.metrics.refresh_started.increment(1);
        }
    }

    /// One load of `key`, in its own task: the lease, the loader, the write.
    async fn load<L, Fut, E>(
        self,
        key: KvKey,
        options: EntryOptions,
        loader: L,
        stale: Option<Entry>,
        mut ctx: FlightContext,
        refresh: bool,
    ) -> FlightContext
    where
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<Value>, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let s = &self.shared;
        let mut deadline = tokio::time::Instant::now() + s.load_bound;
        // Whether the store failed during this load (it could not take the
        // lease): a fail-safe throttle write is then skipped, see `failed`.
        let mut store_down = false;
        let lease = match s.lease {
            None => None,
            Some(ttl) => match self.take_lease(&key, ttl, refresh).await {
                LeaseOutcome::Held(lease, until) => {
                    deadline = until;
                    Some(lease)
                }
                LeaseOutcome::Landed(value) => {
                    ctx.answer(Landed::Loaded(value));
                    return ctx;
                }
                LeaseOutcome::Busy => {
                    s.metrics.refresh_busy.increment(1);
                    ctx.answer(Landed::Loaded(stale.and_then(|e| e.value)));
                    return ctx;
                }
                LeaseOutcome::Unavailable => {
                    store_down = true;
                    None
                }
            },
        };

        let span = tracing::info_span!("kvtower.aside.load", cache = %s.name, refresh);
        let started = tokio::time::Instant::now();
        let result = async {
            tracing::debug!(key = %key, "aside: loading");
            // Stopped when the lease may lapse: past it another process may
            // take the lease and load, and two loaders must never run at
            // once. (The store starts the TTL after our clock read before
            // the `cas`, so the lease outlives this deadline.)
            tokio::time::timeout_at(deadline, loader()).await
        }
        .instrument(span)
        .await;
        s.metrics
            .loader_duration
            .record(started.elapsed().as_secs_f64());

        let landed = match result {
            Ok(Ok(value)) => {
                s.metrics.loader_ok.increment(1);
                if options.background_write {
                    // The callers' wait ends here; the write and the lease
                    // release follow, the flight joinable until they land.
                    ctx.answer(Landed::Loaded(value.clone()));
                }
                let written = match (&value, options.negative_ttl) {
                    (Some(_), _) => self.write(&key, value.clone(), &options).await,
                    (None, Some(negative_ttl)) => {
                        let options = options.ttl(negative_ttl).jitter(Duration::ZERO);
                        self.write(&key, None, &options).await
                    }
                    // Absent and not to be remembered: drop any stale entry.
                    (None, None) => s.store.delete(&key).await,
                };
                if let Err(e) = written {
                    s.metrics.store_set_error.increment(1);
                    tracing::warn!(cache = %s.name, error = %e, "aside: the loaded value was not cached");
                }
                Landed::Loaded(value)
            }
            Ok(Err(e)) => {
                s.metrics.loader_error.increment(1);
                let throttle = !refresh && !store_down;
                self.failed(&key, loader_error(e, &key), stale, &options, throttle)
                    .await
            }
            Err(_) => {
                s.metrics.loader_timeout.increment(1);
                let error = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the loader ran past the lease TTL ({:?}) and was stopped",
                        s.load_bound
                    ),
                )
                .with_operation(Operation::GetOrSet)
                .with_key(&key);
                let throttle = !refresh && !store_down;
                self.failed(&key, error, stale, &options, throttle).await
            }
        };
        if ctx.was_abandoned() {
            match &landed {
                Landed::Loaded(_) => s.metrics.background_ok.increment(1),
                Landed::Failed(_) => s.metrics.background_error.increment(1),
            }
        }
        // Before the release: the lease only keeps other processes' loaders
        // out, and they find the value written above when they poll, so no
        // caller waits for this round trip.
        ctx.answer(landed);
        // After the write: a process polling for the value sees it before it
        // could take the lease and load again.
        if let Some(lease) = lease {
            if let Err(e) = lease.release(&s.store).await {
                // It lapses on its own after its TTL.
                tracing::debug!(cache = %s.name, error = %e, "aside: lease release failed");
            }
        }
        ctx
    }

    /// A failed load: with a stale value (fail-safe) and `throttle`, re-write
    /// it fresh for the throttle duration so the loader is not retried on
    /// every call.
    ///
    /// Not for a refresh: it leaves the still-fresh entry alone (it must not
    /// shorten it). Not while the store is failing: a write that fails makes
    /// a cache layer in the stack drop its front copy (a failed write never
    /// leaves the front claiming a value), and that copy is the stale value
    /// the next call serves.
    async fn failed(
        &self,
        key: &KvKey,
        error: Error,
        stale: Option<Entry>,
        options: &EntryOptions,
        throttle: bool,
    ) -> Landed {
        let s = &self.shared;
        tracing::debug!(cache = %s.name, error = %error, "aside: loader failed");
        if let (Some(mut stale), Some(fs), true) = (stale, options.fail_safe, throttle) {
            let now = s.clock.now_ms();
            stale.expires_ms = add_ms(now, fs.throttle).min(stale.stale_until_ms);
            if let Some(ttl) = stale.store_ttl(now) {
                if let Err(e) = s
                    .store
                    .set(key, stale.into_stored(), set_options(ttl))
                    .await
                {
                    s.metrics.store_set_error.increment(1);
                    tracing::debug!(cache = %s.name, error = %e, "aside: throttle write failed");
                }
            }
        }
        Landed::Failed(SharedError::new(error))
    }

    /// Takes the key's lease, waiting while another process holds it.
    async fn take_lease(&self, key: &KvKey, ttl: Duration, refresh: bool) -> LeaseOutcome {
        let s = &self.shared;
        let mut waited = false;
        loop {
            let until = tokio::time::Instant::now() + ttl;
            match Lease::try_acquire(&s.store, key, ttl).await {
                Ok(Acquire::Held(lease)) => {
                    if !waited {
                        s.metrics.lease_acquired.increment(1);
                        return LeaseOutcome::Held(lease, until);
                    }
                    // The holder released or lapsed: a value it wrote just
                    // before releasing is the answer, not a second load.
                    if let Some(value) = self.fresh(key).await {
                        if let Err(e) = lease.release(&s.store).await {
                            tracing::debug!(cache = %s.name, error = %e, "aside: lease release failed");
                        }
                        return LeaseOutcome::Landed(value);
                    }
                    s.metrics.lease_takeover.increment(1);
                    return LeaseOutcome::Held(lease, until);
                }
                Ok(Acquire::Busy) if refresh => return LeaseOutcome::Busy,
                Ok(Acquire::Busy) => {
                    if !waited {
                        s.metrics.lease_busy.increment(1);
                        waited = true;
                    }
                    tokio::time::sleep(s.poll).await;
                    if let Some(value) = self.fresh(key).await {
                        return LeaseOutcome::Landed(value);
                    }
                }
                Err(e) => {
                    s.metrics.lease_error.increment(1);
                    tracing::debug!(cache = %s.name, error = %e, "aside: lease failed, loading without it");
                    return LeaseOutcome::Unavailable;
                }
            }
        }
    }

    /// The fresh value of `key` in the store, if any (errors: none).
    async fn fresh(&self, key: &KvKey) -> Option<Option<Value>> {
        let s = &self.shared;
        let entry = Entry::from_stored(s.store.get(key).await.ok()??);
        entry.is_fresh(s.clock.now_ms()).then_some(entry.value)
    }

    /// Writes an entry loaded now with `options`.
    async fn write(&self, key: &KvKey, value: Option<Value>, options: &EntryOptions) -> Result<()> {
        let s = &self.shared;
        let now = s.clock.now_ms();
        let ttl = options.ttl.saturating_add(s.jitter.sample(options.jitter));
        let expires_ms = add_ms(now, ttl);
        let stale_until_ms = match options.fail_safe {
            Some(fs) => add_ms(expires_ms, fs.max),
            None => expires_ms,
        };
        let entry = Entry {
            value,
            created_ms: now,
            expires_ms,
            stale_until_ms,
        };
        match entry.store_ttl(now) {
            Some(ttl) => {
                s.store
                    .set(key, entry.into_stored(), set_options(ttl))
                    .await
            }
            None => Ok(()),
        }
    }
}

/// The store's TTL of an entry: none for one that never ends.
fn set_options(ttl: Duration) -> SetOptions {
    if ttl >= Duration::from_millis(u64::MAX) {
        SetOptions::default()
    } else {
        SetOptions::ttl(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kvkey, MemoryKvStore};

    /// Jitter lengthens each entry's TTL by a random amount within the
    /// bound, and not by the same amount for every key (what spreads the
    /// reloads of keys loaded together).
    #[tokio::test]
    async fn jitter_spreads_logical_expiries_within_its_bound() {
        let aside = CacheAside::builder(MemoryKvStore::new()).build().unwrap();
        let (ttl, jitter) = (Duration::from_secs(60), Duration::from_secs(10));
        let options = aside.options().ttl(ttl).jitter(jitter);
        let mut extras = std::collections::BTreeSet::new();
        for i in 0..50 {
            let key = kvkey!["j", i.to_string()];
            aside.set(&key, i.into(), options).await.unwrap();
            let stored = aside.store().get(&key).await.unwrap().unwrap();
            let entry = Entry::from_stored(stored);
            let lived = entry.expires_ms - entry.created_ms;
            let extra = lived
                .checked_sub(60_000)
                .expect("jitter never shortens the TTL");
            assert!(extra <= 10_000, "jitter {extra} ms past its 10 s bound");
            extras.insert(extra);
        }
        assert!(extras.len() > 10, "jitter barely varies: {extras:?}");
    }
}
