//! [`EntryOptions`]: how one entry is cached, loaded and served when loading
//! fails.

use std::time::Duration;

use crate::error::{Error, Result};

/// How an entry is cached and loaded: its TTL (and jitter), fail-safe,
/// loader timeouts, eager refresh and negative caching. The builder's
/// [`default_options`](super::CacheAsideBuilder::default_options) apply to
/// every call; a call may pass its own (start from
/// [`CacheAside::options`](super::CacheAside::options) to change only a field).
///
/// Defaults: TTL 60 s, no jitter, no fail-safe, no timeouts, no eager
/// refresh, absent results not cached, the caller waits for the store write.
///
/// ```
/// use kvtower::aside::EntryOptions;
/// use std::time::Duration;
///
/// let options = EntryOptions::new()
///     .ttl(Duration::from_secs(300))
///     .jitter(Duration::from_secs(30))
///     .fail_safe(Duration::from_secs(3600), Duration::from_secs(30))
///     .soft_timeout(Duration::from_millis(100))
///     .hard_timeout(Duration::from_secs(2))
///     .eager_refresh(0.8)
///     .negative_ttl(Duration::from_secs(10));
/// assert_eq!(options.get_ttl(), Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct EntryOptions {
    pub(crate) ttl: Duration,
    pub(crate) jitter: Duration,
    pub(crate) fail_safe: Option<FailSafe>,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    pub(crate) eager_refresh: Option<f64>,
    pub(crate) negative_ttl: Option<Duration>,
    pub(crate) background_write: bool,
}

/// Fail-safe settings: how long past its TTL an entry is kept to be served
/// when loading fails, and how long a served stale value is re-served before
/// the loader is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FailSafe {
    pub(crate) max: Duration,
    pub(crate) throttle: Duration,
}

/// The default TTL of an entry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

impl Default for EntryOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryOptions {
    /// The defaults: TTL 60 s and nothing else.
    pub const fn new() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            jitter: Duration::ZERO,
            fail_safe: None,
            soft_timeout: None,
            hard_timeout: None,
            eager_refresh: None,
            negative_ttl: None,
            background_write: false,
        }
    }

    /// How long a loaded value is fresh (its *logical* expiry). Without
    /// fail-safe it is also how long the store keeps it.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Adds a random extra in `[0, jitter]` to each TTL, so entries loaded
    /// together do not all expire (and reload) in the same instant.
    pub const fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Fail-safe: keep an entry in the store up to `max` past its TTL, and
    /// when the loader fails (or passes the hard timeout) serve that stale
    /// value instead of the error; it is then re-served for `throttle`
    /// before the loader is tried again.
    pub const fn fail_safe(mut self, max: Duration, throttle: Duration) -> Self {
        self.fail_safe = Some(FailSafe { max, throttle });
        self
    }

    /// No fail-safe: the loader's error reaches the caller.
    pub const fn no_fail_safe(mut self) -> Self {
        self.fail_safe = None;
        self
    }

    /// With a stale value at hand (fail-safe on), a loader slower than this
    /// makes the call return the stale value; the loader keeps running in the
    /// background and its result updates the store when it lands.
    pub const fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// The longest a call waits for the loader, stale value or not: past it
    /// the call returns the stale value (fail-safe on and one at hand) or a
    /// [`Timeout`](crate::ErrorKind::Timeout) error. The loader keeps running
    /// in the background.
    pub const fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = Some(timeout);
        self
    }

    /// A read after `threshold` (a fraction in `(0, 1)`) of the TTL has
    /// passed returns the cached value at once and starts one background
    /// refresh of the key (one per key at a time, fleet-wide through the
    /// lease). `0.8` refreshes in the last fifth of the TTL.
    pub const fn eager_refresh(mut self, threshold: f64) -> Self {
        self.eager_refresh = Some(threshold);
        self
    }

    /// For loaders of `Option<Value>`
    /// ([`get_or_set_optional`](super::CacheAside::get_or_set_optional)):
    /// remember "absent" for `ttl`, so a missing row is not reloaded on every
    /// call. Off by default (an absent result is not stored).
    pub const fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Answer a call as soon as its loader returns, and write the value to
    /// the store (and release the lease) after the call has returned, as
    /// FusionCache's background distributed-cache operations do. Off by
    /// default.
    ///
    /// A cold call then waits for one store round trip (the read) plus the
    /// loader, plus one for the lease when the fleet-wide lease is on;
    /// without it, the caller also waits for the write. The price is
    /// read-your-writes for anyone but this facade: until the write lands
    /// (about one round trip later), a plain [`KvStore`](crate::KvStore) read,
    /// here or on another node, may still miss (another node's
    /// [`get_or_set`](super::CacheAside::get_or_set) waits on the lease and
    /// finds the value). In this process, a `get_or_set` of the key in that
    /// window joins the load and gets its value, and the facade's
    /// [`get`](super::CacheAside::get), [`set`](super::CacheAside::set),
    /// [`remove`](super::CacheAside::remove) and
    /// [`expire`](super::CacheAside::expire) wait for the write first, so
    /// they are ordered after it. A write that fails cannot fail the call:
    /// it is counted in `kvtower_aside_store_errors_total{operation="set"}`
    /// and logged, as a failed write is in the default mode.
    ///
    /// ```
    /// use kvtower::aside::EntryOptions;
    ///
    /// let options = EntryOptions::new().background_write(true);
    /// assert!(options.is_background_write());
    /// ```
    pub const fn background_write(mut self, on: bool) -> Self {
        self.background_write = on;
        self
    }

    /// Whether the store write follows the answer (see
    /// [`background_write`](Self::background_write)).
    pub const fn is_background_write(&self) -> bool {
        self.background_write
    }

    /// The TTL (without jitter).
    pub const fn get_ttl(&self) -> Duration {
        self.ttl
    }

    /// Checks the options: a TTL above zero, an eager refresh threshold in
    /// `(0, 1)`, timeouts above zero, a soft timeout not above the hard one.
    ///
    /// ```
    /// use kvtower::aside::EntryOptions;
    /// assert!(EntryOptions::new().eager_refresh(1.5).validate().is_err());
    /// assert!(EntryOptions::new().validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.ttl.is_zero() {
            return Err(Error::config("aside ttl: must be above zero"));
        }
        if let Some(t) = self.eager_refresh {
            // `!(t > 0 && t < 1)` also rejects NaN.
            if !(t > 0.0 && t < 1.0) {
                return Err(Error::config(format!(
                    "aside eager_refresh: the threshold must be a fraction in (0, 1), got {t}"
                )));
            }
        }
        for (name, timeout) in [
            ("soft_timeout", self.soft_timeout),
            ("hard_timeout", self.hard_timeout),
        ] {
            if timeout == Some(Duration::ZERO) {
                return Err(Error::config(format!("aside {name}: must be above zero")));
            }
        }
        if let (Some(soft), Some(hard)) = (self.soft_timeout, self.hard_timeout) {
            if soft > hard {
                return Err(Error::config(
                    "aside soft_timeout: must not be above hard_timeout",
                ));
            }
        }
        if let Some(fs) = self.fail_safe {
            if fs.throttle.is_zero() {
                return Err(Error::config(
                    "aside fail_safe throttle: must be above zero (else a failing loader runs on every call)",
                ));
            }
        }
        Ok(())
    }
}
