//! [`StoreConfig`]: a store stack described as data, so environments differ in
//! configuration, not code (feature `config`).
//!
//! A configuration names a *backend* and an ordered list of *layers*, the
//! first being the outermost (the order of
//! [`tower::ServiceBuilder::layer`] calls).
//!
//! ```
//! use kvtower::config::StoreConfig;
//!
//! let config = StoreConfig::from_toml_str(r#"
//!     backend = "memory://"
//!
//!     [[layers]]
//!     type = "prefix"
//!     prefix = ["myapp"]
//!
//!     [[layers]]
//!     type = "default_ttl"
//!     ttl = "1h"
//! "#)?;
//! assert_eq!(config.layers.len(), 2);
//! # Ok::<(), kvtower::Error>(())
//! ```
//!
//! # Backends
//!
//! `backend` is a URL shorthand or a table with a `kind`:
//!
//! | URL | table | store |
//! |---|---|---|
//! | `memory://` | `kind = "memory"`, `max_entries`, `max_bytes` | [`MemoryKvStore`](crate::MemoryKvStore) |
//! | `sqlite:///abs/path.db`, `sqlite://rel/path.db`, `sqlite://:memory:` | `kind = "sqlite"`, `path`, `table` | `SqliteKvStore` (feature `sqlite`) |
//! | `redis://…`, `rediss://…`, `redis+unix://…` | `kind = "redis"`, `url`, `namespace`, `timeout` | `RedisKvStore` (feature `redis`) |
//! | `redis+cluster://host1:port1,host2:port2` | `kind = "redis_cluster"`, `urls`, `namespace`, `timeout` | `RedisKvStore` in cluster mode |
//! | `postgres://…`, `postgresql://…` | `kind = "postgres"`, `url`, `table` | `PostgresKvStore` (feature `postgres`) |
//! | `denokv:///abs/path`, `denokv://rel/path` | `kind = "denokv"`, `path`, `prefix` | `DenoKvStore` on a local file (feature `denokv`) |
//! | `denokv+https://:TOKEN@host/…`, `denokv+http://…` | `kind = "denokv"`, `url`, `access_token`, `prefix`, `timeout` | `DenoKvStore` over KV Connect |
//! | `cfworkers://:TOKEN@ACCOUNT_ID/NAMESPACE_ID` | `kind = "cfworkers"`, `account_id`, `namespace_id`, `api_token`, `base_url`, `timeout` | `WorkersKvStore` over the Cloudflare API (feature `cfworkers`) |
//!
//! Each backend is one file of `src/config/backends/` (its options, URL form,
//! validation and `build`), listed once in the table of
//! `src/config/backends/mod.rs`.
//!
//! # Layers
//!
//! | `type` | options | builds |
//! |---|---|---|
//! | `cache` | `capacity` (front entries, default 10,000) or `max_bytes`, `ttl` (front max TTL, default 60 s), `negative_ttl`, `name` (metrics label), `invalidation` | [`CacheLayer`](crate::layers::CacheLayer) with a [`MemoryKvStore`](crate::MemoryKvStore) front |
//! | `prefix` | `prefix` (array of key parts) | [`PrefixLayer`](crate::layers::PrefixLayer) |
//! | `default_ttl` | `ttl`, `jitter` (a fraction 0..=1 of `ttl`: writes get `ttl` plus up to `ttl × jitter`), `max_ttl` | [`DefaultTtlLayer`](crate::layers::DefaultTtlLayer) |
//! | `metrics` | `name` (the `store` label) | [`MetricsLayer`](crate::layers::MetricsLayer) |
//! | `tracing` | `name` (default: the backend kind) | [`TracingLayer`](crate::layers::TracingLayer) |
//! | `timeout` | `timeout` | tower's `Timeout` through the [bridge](crate::service); elapsed is [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) |
//! | `retry` | `attempts` (calls in all), `backoff` (default 10 ms, doubling) | tower's `Retry` with [`RetryPolicy`](crate::service::RetryPolicy) through the bridge |
//!
//! Durations are strings like `"250ms"`, `"30s"`, `"1h"`.
//!
//! # Building
//!
//! [`StoreConfig::build`] opens or connects the backend and wraps it in the
//! layers, each result boxed as a [`DynKvStore`](crate::DynKvStore):
//!
//! * **Order**: `layers[0]` is the *outermost* layer, the first to see a
//!   call, as with [`tower::ServiceBuilder`]. `[metrics, cache, prefix]`
//!   counts every call, then asks the cache, and prefixes only the keys that
//!   reach the backend (the order [`layers`](crate::layers#order)
//!   recommends: a front hit skips the key rewrite). `[retry, timeout]` retries each attempt that timed
//!   out; `[timeout, retry]` bounds all attempts together.
//! * **Invalidation bus**: a `cache` layer over a `redis` or `redis_cluster`
//!   backend connects a [`RedisInvalidationBus`](crate::invalidation::RedisInvalidationBus)
//!   by default, on the backend's Redis (a cluster's first seed URL) and the
//!   channel `<namespace>:invalidate` (namespace default `kvtower`), so
//!   every process built from the same configuration keeps its front tier
//!   coherent with the others'. `invalidation = { enabled = false }` turns it
//!   off (one process only); `invalidation = { url = "redis://…", channel =
//!   "…" }` picks another Redis or channel. Over any other backend the bus is
//!   off unless `invalidation.url` is given; an `invalidation` table without
//!   a `url` there is a `Config` error.
//! * **Features**: a backend whose cargo feature is not compiled in (`sqlite`,
//!   `redis` for both Redis kinds, `postgres`, `denokv`, `cfworkers`) is a
//!   `Config` error naming the feature ("backend `denokv` needs the cargo
//!   feature `denokv`"), and so is a bus without feature `redis`.
//!
//! `examples/tiers_per_env.rs` runs one application over the three
//! configurations of `examples/config/`: `dev.toml` (memory), `test.toml`
//! (SQLite in memory) and `prod.toml` (metrics + cache + prefix + Redis):
//!
//! ```toml
//! [backend]
//! kind = "redis"
//! url = "redis://127.0.0.1:6379"
//! namespace = "tiers-example"
//! timeout = "500ms"
//!
//! [[layers]]
//! type = "metrics"
//! name = "app"
//!
//! [[layers]]
//! type = "cache"
//! capacity = 10000
//! ttl = "30s"
//!
//! [[layers]]
//! type = "prefix"
//! prefix = ["app", "v1"]
//! ```
//!
//! ```
//! use kvtower::config::StoreConfig;
//! use kvtower::{kvkey, KvStore, SetOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! // APP_ENV picks the file; here the dev one, inline.
//! let store = StoreConfig::from_toml_str(r#"
//!     backend = "memory://"
//!     [[layers]]
//!     type = "retry"
//!     attempts = 3
//!     [[layers]]
//!     type = "timeout"
//!     timeout = "2s"
//! "#)?.build().await?;
//! store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
//! assert_eq!(store.get(&kvkey!["a"]).await?, Some(1.into()));
//! # Ok(())
//! # }
//! ```
//!
//! # Errors and secrets
//!
//! A bad configuration is an [`ErrorKind::Config`](crate::ErrorKind::Config)
//! error whose message names the field and the allowed values. Passwords and
//! tokens in URLs are redacted in errors and in `Debug` output
//! ([`SecretUrl`]); errors of [`build`](StoreConfig::build) (a refused
//! connection keeps its kind, `Unavailable` or `Timeout`) have them removed
//! from their message and their source chain too.

// One file per idea: the text formats (`parse`), secrets in URLs and tokens
// (`secrets`), the layers (`layers`), building a stack (`build`), and one
// file per backend under `backends/`, listed in the table of
// `backends/mod.rs`.
mod backends;
mod build;
mod layers;
mod parse;
mod secrets;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use self::backends::{
    BackendConfig, DenoKvConfig, MemoryConfig, PostgresConfig, RedisClusterConfig, RedisConfig,
    SqliteConfig, WorkersKvConfig, BACKEND_SCHEMES,
};
pub use self::layers::{
    CacheConfig, DefaultTtlConfig, InvalidationConfig, LayerConfig, MetricsConfig, PrefixConfig,
    RetryConfig, TimeoutConfig, TracingConfig,
};
pub use self::secrets::{redact_url, SecretString, SecretUrl};

/// A whole store stack: a backend and its layers, outermost first.
///
/// ```
/// use kvtower::config::{BackendConfig, LayerConfig, StoreConfig};
///
/// let config = StoreConfig::new(BackendConfig::from_url("memory://")?)
///     .layer(LayerConfig::Prefix(kvtower::config::PrefixConfig::new(["app"])));
/// assert_eq!(config.layers.len(), 1);
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the data lives.
    #[serde(deserialize_with = "parse::deserialize_backend")]
    pub backend: BackendConfig,
    /// The layers, the first one outermost.
    #[serde(default)]
    pub layers: Vec<LayerConfig>,
}

impl StoreConfig {
    /// A configuration of `backend` with no layers.
    pub fn new(backend: BackendConfig) -> Self {
        Self {
            backend,
            layers: Vec::new(),
        }
    }

    /// Adds `layer` inside the layers added so far.
    #[must_use]
    pub fn layer(mut self, layer: LayerConfig) -> Self {
        self.layers.push(layer);
        self
    }

    /// Checks what the types alone cannot (ranges, non-empty lists).
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the field.
    ///
    /// ```
    /// use kvtower::config::{BackendConfig, LayerConfig, PrefixConfig, StoreConfig};
    ///
    /// let config = StoreConfig::new(BackendConfig::from_url("memory://")?)
    ///     .layer(LayerConfig::Prefix(PrefixConfig::new(Vec::<String>::new())));
    /// assert!(config.validate().unwrap_err().message().starts_with("layers[0].prefix"));
    /// # Ok::<(), kvtower::Error>(())
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.backend.validate()?;
        for (i, layer) in self.layers.iter().enumerate() {
            layer
                .validate()
                .map_err(|e| Error::config(format!("layers[{i}].{}", e.message())))?;
        }
        Ok(())
    }
}
