//! # kvtower
//!
//! Layered key–value caching: one [`KvStore`] trait over JSON values, stores
//! for each environment, and tower-style layers that stack into a store.
//!
//! ```
//! use kvtower::{kvkey, KvStore, KvStoreExt, MemoryKvStore, SetOptions};
//! use serde_json::json;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let store = MemoryKvStore::new();
//! let key = kvkey!["user", "42"];
//! store.set(&key, json!({"name": "Ada"}), SetOptions::ttl(Duration::from_secs(60))).await?;
//! assert_eq!(store.get(&key).await?, Some(json!({"name": "Ada"})));
//! assert!(store.cas(&key, Some(&json!({"name": "Ada"})), Some(json!({"name": "Grace"})), SetOptions::default()).await?);
//! assert_eq!(store.list_all(Some(kvkey!["user"])).await?.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`key`] | [`KvKey`], a non-empty sequence of string parts, and [`kvkey!`] |
//! | [`aside`] | cache-aside: [`CacheAside`](aside::CacheAside)`::get_or_set` with one loader per key across the fleet (a lease), fail-safe, soft/hard loader timeouts, eager refresh |
//! | [`store`] | the [`KvStore`] trait, [`KvStoreExt`] typed helpers, [`SetOptions`], [`KvEntry`] |
//! | [`error`] | [`Error`], [`ErrorKind`], [`Result`], and [`Operation`], the name of every call (in errors, metric labels, the tower bridge) |
//! | [`stores`] | one module per backend: [`MemoryKvStore`] (always on), `SqliteKvStore` (feature `sqlite`), `PostgresKvStore` (feature `postgres`), `RedisKvStore` (feature `redis`, Redis and Redis Cluster), `DenoKvStore` (feature `denokv`), `WorkersKvStore` (feature `cfworkers`); [`Layout`](stores::Layout) picks the data format (kvtower's own or Fedify's) |
//! | `invalidation` | the cross-node invalidation bus over Redis pub/sub and Redis client tracking for writes made around kvtower (feature `redis`) |
//! | `config` | `StoreConfig`: stacks from TOML, environment or code (feature `config`) |
//! | [`layers`] | tower-style layers: [`CacheLayer`](layers::CacheLayer), [`CircuitBreakerLayer`](layers::CircuitBreakerLayer), [`PrefixLayer`](layers::PrefixLayer), [`DefaultTtlLayer`](layers::DefaultTtlLayer), [`MetricsLayer`](layers::MetricsLayer), [`TracingLayer`](layers::TracingLayer); the recommended order is in [`layers`](layers#order) |
//! | [`service`] | the bridge to tower middleware: [`KvRequest`](service::KvRequest), [`KvService`](service::KvService), [`ServiceStore`](service::ServiceStore) |
//! | `testing` | the conformance suite every store passes (feature `testing`) |
//! | [`value`] | the limits on values every store enforces: [`MAX_DEPTH`](value::MAX_DEPTH) levels of nesting |
//!
//! # Cargo features
//!
//! | feature | enables |
//! |---|---|
//! | `testing` | `conformance_suite!` and the `testing` module |
//! | `config` | `config::StoreConfig`: stacks from TOML, environment or code |
//! | `sqlite` (default) | `SqliteKvStore`: a persistent store in one SQLite file, SQLite compiled in (rusqlite `bundled`) |
//! | `postgres` | `PostgresKvStore`: a table in PostgreSQL, through tokio-postgres and a deadpool pool |
//! | `redis` | `RedisKvStore`: Redis and Redis Cluster on redis-rs (tokio), without TLS |
//! | `redis-tls` | `rediss://` URLs for `RedisKvStore` (rustls, webpki roots) |
//! | `denokv` | `DenoKvStore`: Deno KV files and KV Connect servers, shared with Deno apps |
//! | `cfworkers` | `WorkersKvStore`: a Cloudflare Workers KV namespace over its HTTP API, in Fedify's layout |

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod aside;
#[cfg(feature = "config")]
pub mod config;
pub mod error;
// The internals the `cargo fuzz` targets in `fuzz/` drive; not a public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzzing.rs"]
pub mod __fuzz;
#[cfg(feature = "redis")]
pub mod invalidation;
pub mod key;
pub mod layers;
mod operation;
// Only the stores and the config that take URLs with credentials need it.
#[cfg(any(feature = "config", feature = "redis", feature = "postgres"))]
mod redact;
pub mod service;
pub mod store;
pub mod stores;
#[cfg(feature = "testing")]
pub mod testing;
pub mod value;

pub use error::{Error, ErrorKind, Result};
pub use key::KvKey;
pub use operation::Operation;
pub use store::{
    Capabilities, DynKvStore, KvEntry, KvStore, KvStoreExt, SetOptions, SharedGet, Value,
};
#[cfg(feature = "cfworkers")]
pub use stores::cfworkers::{WorkersKvStore, WorkersKvStoreBuilder};
#[cfg(feature = "denokv")]
pub use stores::denokv::{DenoKvStore, DenoKvStoreBuilder};
pub use stores::memory::{MemoryKvStore, MemoryKvStoreBuilder};
#[cfg(feature = "postgres")]
pub use stores::postgres::{PostgresKvStore, PostgresKvStoreBuilder};
#[cfg(feature = "redis")]
pub use stores::redis::{RedisKvStore, RedisKvStoreBuilder};
#[cfg(feature = "sqlite")]
pub use stores::sqlite::{SqliteKvStore, SqliteKvStoreBuilder};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
