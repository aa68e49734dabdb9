//! [`CacheAsideBuilder`]: the options of a [`CacheAside`], checked in
//! [`build`](CacheAsideBuilder::build).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::entry::Clock;
use super::flight::Flights;
use super::metrics::Instruments;
use super::options::EntryOptions;
use super::{CacheAside, Shared};
use crate::error::{Error, Result};
use crate::store::KvStore;

/// The default [`lease_ttl`](CacheAsideBuilder::lease_ttl).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// The default [`lease_poll_interval`](CacheAsideBuilder::lease_poll_interval).
pub const DEFAULT_LEASE_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Options of a [`CacheAside`], from [`CacheAside::builder`]: consuming
/// setters, checked by [`build`](Self::build).
///
/// ```
/// use kvtower::aside::{CacheAside, EntryOptions};
/// use kvtower::MemoryKvStore;
/// use std::time::Duration;
///
/// let aside = CacheAside::builder(MemoryKvStore::new())
///     .name("users")
///     .default_options(EntryOptions::new().ttl(Duration::from_secs(300)))
///     .lease_ttl(Duration::from_secs(10))
///     .build()?;
/// # let _ = aside;
/// # Ok::<(), kvtower::Error>(())
/// ```
#[must_use]
pub struct CacheAsideBuilder<S> {
    store: S,
    name: String,
    defaults: EntryOptions,
    lease: Option<Duration>,
    poll: Duration,
}

impl<S> fmt::Debug for CacheAsideBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAsideBuilder")
            .field("name", &self.name)
            .field("defaults", &self.defaults)
            .field("lease", &self.lease)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl<S: KvStore + 'static> CacheAsideBuilder<S> {
    pub(super) fn new(store: S) -> Self {
        Self {
            store,
            name: "aside".to_owned(),
            defaults: EntryOptions::new(),
            lease: Some(DEFAULT_LEASE_TTL),
            poll: DEFAULT_LEASE_POLL_INTERVAL,
        }
    }

    /// The `cache` label of the metrics (`"aside"` by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The options of calls that pass none of their own
    /// ([`CacheAside::options`] returns them).
    pub fn default_options(mut self, options: EntryOptions) -> Self {
        self.defaults = options;
        self
    }

    /// How long the fleet-wide lease of a loading key lives
    /// ([`DEFAULT_LEASE_TTL`] by default): a holder that crashed mid-load
    /// blocks the other processes for at most this long. It also bounds
    /// every loader run (a loader still running when its lease may have
    /// lapsed is stopped, so two loaders never run at once).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease = Some(ttl);
        self
    }

    /// No fleet-wide lease: a cold load costs one store round trip less, and
    /// each process loads on its own (still one loader per key per process).
    /// Loaders are then bounded by [`DEFAULT_LEASE_TTL`].
    pub fn no_lease(mut self) -> Self {
        self.lease = None;
        self
    }

    /// How often a process waiting on another's lease reads the store for
    /// the value ([`DEFAULT_LEASE_POLL_INTERVAL`] by default).
    pub fn lease_poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval;
        self
    }

    /// The facade.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error for invalid default
    /// options (see [`EntryOptions::validate`]), a zero lease TTL or poll
    /// interval, or a lease over a store whose `cas` is not atomic
    /// (use [`no_lease`](Self::no_lease) there).
    pub fn build(self) -> Result<CacheAside<S>> {
        self.defaults.validate()?;
        if self.lease == Some(Duration::ZERO) {
            return Err(Error::config("aside lease_ttl: must be above zero"));
        }
        if self.poll.is_zero() {
            return Err(Error::config(
                "aside lease_poll_interval: must be above zero",
            ));
        }
        if self.lease.is_some() && !self.store.capabilities().atomic_cas {
            return Err(Error::config(
                "aside lease: the store's cas is not atomic, so it cannot hold a lease; use no_lease()",
            ));
        }
        Ok(CacheAside {
            shared: Arc::new(Shared {
                store: self.store,
                defaults: self.defaults,
                lease: self.lease,
                load_bound: self.lease.unwrap_or(DEFAULT_LEASE_TTL),
                poll: self.poll,
                clock: Clock::new(),
                flights: Flights::default(),
                metrics: Instruments::new(&self.name),
                name: self.name,
                jitter: super::Jitter::new(),
            }),
        })
    }
}
