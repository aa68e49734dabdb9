//! The layers of a stack: [`LayerConfig`] and its options, their checks, and
//! how each wraps the store inside it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::backends::DEFAULT_NAMESPACE;
use super::parse::{take_tag, variant};
use super::BackendConfig;
use super::SecretUrl;
#[allow(unused_imports)] // only the Redis bus uses them
use super::{build::missing_feature, secrets::scrub};
use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::service::{KvService, RetryPolicy, ServiceStore};
use crate::store::DynKvStore;

/// The longest `ttl` or `negative_ttl` a cache layer takes: 100 years, the
/// bound `CacheLayerBuilder::negative_ttl` clamps to, well inside moka's
/// 1000-year limit (which panics).
const MAX_CACHE_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The front-tier bound of a cache layer when it names none, in entries.
const DEFAULT_CACHE_CAPACITY: u64 = 10_000;

/// One layer of the stack (see the [module docs](crate::config) for the options).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LayerConfig {
    /// A moka front tier ([`CacheLayer`](crate::layers::CacheLayer)).
    Cache(CacheConfig),
    /// Key prefixing ([`PrefixLayer`](crate::layers::PrefixLayer)).
    Prefix(PrefixConfig),
    /// A default TTL ([`DefaultTtlLayer`](crate::layers::DefaultTtlLayer)).
    DefaultTtl(DefaultTtlConfig),
    /// Metrics ([`MetricsLayer`](crate::layers::MetricsLayer)).
    Metrics(MetricsConfig),
    /// Tracing spans ([`TracingLayer`](crate::layers::TracingLayer)).
    Tracing(TracingConfig),
    /// tower's timeout around the inner stack.
    Timeout(TimeoutConfig),
    /// Retries of retryable errors around the inner stack.
    Retry(RetryConfig),
}

/// The layer types, for messages.
const LAYER_TYPES: &str = "cache, prefix, default_ttl, metrics, tracing, timeout, retry";

impl<'de> Deserialize<'de> for LayerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = toml::Table::deserialize(deserializer)?;
        let ty = take_tag::<D::Error>(&mut fields, "type", LAYER_TYPES)?;
        Ok(match ty.as_str() {
            "cache" => LayerConfig::Cache(variant(&ty, fields)?),
            "prefix" => LayerConfig::Prefix(variant(&ty, fields)?),
            "default_ttl" => LayerConfig::DefaultTtl(variant(&ty, fields)?),
            "metrics" => LayerConfig::Metrics(variant(&ty, fields)?),
            "tracing" => LayerConfig::Tracing(variant(&ty, fields)?),
            "timeout" => LayerConfig::Timeout(variant(&ty, fields)?),
            "retry" => LayerConfig::Retry(variant(&ty, fields)?),
            other => {
                return Err(D::Error::custom(format_args!(
                    ".type: unknown layer `{other}`; expected one of {LAYER_TYPES}"
                )))
            }
        })
    }
}

/// Options of a cache layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Front-tier bound in entries (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// Front-tier bound in bytes instead of entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// The longest a front entry lives.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// Cache absent keys for this long (off when unset).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub negative_ttl: Option<Duration>,
    /// Answer reads from a stale copy when the inner store fails, up to
    /// this long past the front entry's end
    /// (`CacheLayerBuilder::stale_if_error`; off when unset).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub stale_if_error: Option<Duration>,
    /// The cross-node invalidation bus (on by default over a Redis backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidation: Option<InvalidationConfig>,
    /// The `cache` label of the layer's metrics (default `cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Options of a prefix layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrefixConfig {
    /// The prefix's parts (at least one).
    pub prefix: Vec<String>,
}

impl PrefixConfig {
    /// A prefix of the given parts.
    ///
    /// ```
    /// let p = kvtower::config::PrefixConfig::new(["app", "v1"]);
    /// assert_eq!(p.prefix, ["app", "v1"]);
    /// ```
    pub fn new<I: IntoIterator<Item = P>, P: Into<String>>(parts: I) -> Self {
        Self {
            prefix: parts.into_iter().map(Into::into).collect(),
        }
    }
}

/// Options of a default-TTL layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DefaultTtlConfig {
    /// Applied to writes that give none.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Spread expiries by up to this fraction of the TTL (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Clamp every TTL to at most this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_ttl: Option<Duration>,
}

impl DefaultTtlConfig {
    /// A default TTL with no jitter and no clamp.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = kvtower::config::DefaultTtlConfig::new(Duration::from_secs(60));
    /// assert_eq!(c.jitter, None);
    /// ```
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            jitter: None,
            max_ttl: None,
        }
    }
}

/// Options of a metrics layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// The `store` label.
    pub name: String,
}

impl MetricsConfig {
    /// Metrics labelled `store = name`.
    ///
    /// ```
    /// assert_eq!(kvtower::config::MetricsConfig::new("app").name, "app");
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Options of a tracing layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TracingConfig {
    /// The store name in spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Options of a timeout layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// The deadline of each operation.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Options of a retry layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Total attempts, the first included (at least 1).
    pub attempts: u32,
    /// Pause before the first retry (default 10ms, doubling).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<Duration>,
}

impl LayerConfig {
    pub(super) fn validate(&self) -> Result<()> {
        match self {
            LayerConfig::Prefix(p) if p.prefix.is_empty() => Err(Error::config(
                "prefix: needs at least one part, e.g. prefix = [\"myapp\"]",
            )),
            LayerConfig::Cache(CacheConfig {
                capacity: Some(_),
                max_bytes: Some(_),
                ..
            }) => Err(Error::config(
                "cache: set one of capacity and max_bytes, not both",
            )),
            // NaN is in no range: refused here too.
            LayerConfig::DefaultTtl(DefaultTtlConfig {
                jitter: Some(j), ..
            }) if !(j.is_finite() && (0.0..=1.0).contains(j)) => Err(Error::config(format!(
                "default_ttl.jitter: {j} is out of range; expected a fraction from 0 to 1"
            ))),
            LayerConfig::Cache(c) => {
                for (field, ttl) in [
                    ("ttl", c.ttl),
                    ("negative_ttl", c.negative_ttl),
                    ("stale_if_error", c.stale_if_error),
                ] {
                    if let Some(ttl) = ttl.filter(|ttl| *ttl > MAX_CACHE_TTL) {
                        return Err(Error::config(format!(
                            "cache.{field}: {} is longer than the front tier can keep \
                             (at most {}; moka refuses more than 1000 years)",
                            humantime_serde::re::humantime::format_duration(ttl),
                            humantime_serde::re::humantime::format_duration(MAX_CACHE_TTL),
                        )));
                    }
                }
                Ok(())
            }
            LayerConfig::Retry(RetryConfig { attempts: 0, .. }) => Err(Error::config(
                "retry.attempts: must be at least 1 (the first attempt counts)",
            )),
            LayerConfig::Timeout(t) if t.timeout.is_zero() => {
                Err(Error::config("timeout.timeout: must be more than zero"))
            }
            _ => Ok(()),
        }
    }
}

/// The cross-node invalidation bus of a cache layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidationConfig {
    /// Whether the bus runs (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The Redis to publish on (default: the backend's Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretUrl>,
    /// The pub/sub channel (default `<namespace>:invalidate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

fn yes() -> bool {
    true
}

/// The invalidation buses of one stack being built, by URL and channel.
///
/// Cache layers of one stack on the same channel share one bus: its
/// subscriber then invalidates them in the order they were built, inner tier
/// first, so an outer tier is never refilled from an inner one that has not
/// heard the change yet (two buses would race, and L1 could be refilled from
/// a stale L2 for a whole front TTL).
#[derive(Default)]
pub(super) struct Buses {
    #[cfg(feature = "redis")]
    buses: Vec<(String, String, crate::invalidation::RedisInvalidationBus)>,
}

#[cfg(feature = "redis")]
impl Buses {
    async fn get_or_connect(
        &mut self,
        url: &SecretUrl,
        channel: String,
    ) -> Result<crate::invalidation::RedisInvalidationBus> {
        if let Some((_, _, bus)) = self
            .buses
            .iter()
            .find(|(u, c, _)| u == url.expose() && *c == channel)
        {
            return Ok(bus.clone());
        }
        let bus = crate::invalidation::RedisInvalidationBus::builder(url.expose())
            .channel(channel.clone())
            .connect()
            .await
            .map_err(|e| scrub(e, [url]))?;
        self.buses
            .push((url.expose().to_owned(), channel, bus.clone()));
        Ok(bus)
    }
}

impl LayerConfig {
    /// Wraps `inner` in this layer; `backend` decides the cache layer's
    /// invalidation default.
    pub(super) async fn wrap(
        &self,
        inner: DynKvStore,
        backend: &BackendConfig,
        buses: &mut Buses,
    ) -> Result<DynKvStore> {
        use tower::Layer as _;
        Ok(match self {
            LayerConfig::Cache(c) => c.wrap(inner, backend, buses).await?,
            LayerConfig::Prefix(c) => {
                let prefix = KvKey::new(c.prefix.iter().cloned()).map_err(|_| {
                    Error::config("prefix: needs at least one part, e.g. prefix = [\"myapp\"]")
                })?;
                Arc::new(crate::layers::PrefixLayer::new(prefix).layer(inner))
            }
            LayerConfig::DefaultTtl(c) => {
                let mut layer = crate::layers::DefaultTtlLayer::new(c.ttl);
                if let Some(fraction) = c.jitter {
                    // A fraction of at most 1 of a Duration fits a Duration;
                    // the f64 rounding near Duration::MAX is what may not.
                    let jitter = Duration::try_from_secs_f64(c.ttl.as_secs_f64() * fraction)
                        .unwrap_or(c.ttl);
                    layer = layer.jitter(jitter);
                }
                if let Some(max) = c.max_ttl {
                    layer = layer.max_ttl(max);
                }
                Arc::new(layer.layer(inner))
            }
            LayerConfig::Metrics(c) => {
                Arc::new(crate::layers::MetricsLayer::new(c.name.clone()).layer(inner))
            }
            LayerConfig::Tracing(c) => {
                let name = c.name.clone().unwrap_or_else(|| backend.kind().to_owned());
                Arc::new(crate::layers::TracingLayer::new(name).layer(inner))
            }
            LayerConfig::Timeout(c) => {
                let capabilities = inner.capabilities();
                let service = tower::timeout::Timeout::new(KvService::new(inner), c.timeout);
                Arc::new(ServiceStore::new(service).with_capabilities(capabilities))
            }
            LayerConfig::Retry(c) => {
                let capabilities = inner.capabilities();
                let policy = RetryPolicy::new(
                    c.attempts,
                    c.backoff.unwrap_or(RetryPolicy::DEFAULT_BACKOFF),
                );
                let service = tower::retry::Retry::new(policy, KvService::new(inner));
                Arc::new(ServiceStore::new(service).with_capabilities(capabilities))
            }
        })
    }
}

impl CacheConfig {
    /// The invalidation bus to connect, if any: its URL and channel.
    fn bus(&self, backend: &BackendConfig) -> Result<Option<(SecretUrl, String)>> {
        let endpoint = backend.redis_endpoint();
        let default_channel = |namespace: &str| format!("{namespace}:invalidate");
        match &self.invalidation {
            Some(InvalidationConfig { enabled: false, .. }) => Ok(None),
            Some(InvalidationConfig {
                url: Some(url),
                channel,
                ..
            }) => Ok(Some((
                url.clone(),
                channel.clone().unwrap_or_else(|| {
                    default_channel(endpoint.map_or(DEFAULT_NAMESPACE, |(_, ns)| ns))
                }),
            ))),
            Some(InvalidationConfig { channel, .. }) => match endpoint {
                Some((url, namespace)) => Ok(Some((
                    url.clone(),
                    channel
                        .clone()
                        .unwrap_or_else(|| default_channel(namespace)),
                ))),
                None => Err(Error::config(format!(
                    "cache.invalidation: a `{}` backend has no Redis to carry the bus; \
                     set invalidation.url = \"redis://…\", or enabled = false",
                    backend.kind()
                ))),
            },
            None => Ok(endpoint.map(|(url, namespace)| (url.clone(), default_channel(namespace)))),
        }
    }

    async fn wrap(
        &self,
        inner: DynKvStore,
        backend: &BackendConfig,
        buses: &mut Buses,
    ) -> Result<DynKvStore> {
        use tower::Layer as _;
        let front = match self.max_bytes {
            Some(max) => crate::MemoryKvStore::builder().max_bytes(max),
            None => crate::MemoryKvStore::builder()
                .max_entries(self.capacity.unwrap_or(DEFAULT_CACHE_CAPACITY)),
        }
        .build();
        let mut builder = crate::layers::CacheLayer::builder(front);
        if let Some(ttl) = self.ttl {
            builder = builder.front_max_ttl(ttl);
        }
        if let Some(ttl) = self.negative_ttl {
            builder = builder.negative_ttl(ttl);
        }
        if let Some(max) = self.stale_if_error {
            builder = builder.stale_if_error(max);
        }
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        if let Some((url, channel)) = self.bus(backend)? {
            #[cfg(feature = "redis")]
            {
                let bus = buses.get_or_connect(&url, channel).await?;
                builder = builder.invalidation_bus(bus);
            }
            #[cfg(not(feature = "redis"))]
            {
                let _ = (url, channel, buses);
                return Err(missing_feature("cache.invalidation (a Redis bus)", "redis"));
            }
        }
        Ok(Arc::new(builder.build().layer(inner)))
    }
}
