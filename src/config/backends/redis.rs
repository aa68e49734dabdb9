//! `redis://`, `rediss://`, `redis+unix://` and `redis+cluster://`: a
//! `RedisKvStore` on one server or a cluster (feature `redis`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Backend, DEFAULT_NAMESPACE};
use crate::config::SecretUrl;
use crate::error::{Error, Result};
use crate::store::DynKvStore;
use crate::stores::Layout;

/// Options of a standalone Redis backend.
///
/// ```
/// use kvtower::config::BackendConfig;
///
/// let BackendConfig::Redis(c) = BackendConfig::from_url("redis://:pw@cache:6379/0")? else { panic!() };
/// assert_eq!(c.url.to_string(), "redis://:***@cache:6379/0");
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `redis+unix://` URL.
    pub url: SecretUrl,
    /// Key namespace (default `kvtower`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Per-operation timeout.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The data format: `kvtower` (the default) or `fedify`, Fedify's own
    /// store's format for this backend, to share data with a Fedify server
    /// (see [`Layout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// In the Fedify layout, the text every Redis key starts with (Fedify's
    /// `keyPrefix`, default `fedify::`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// Options of a Redis Cluster backend.
///
/// The URL form `redis+cluster://host1:port1,host2:port2` lists the seed
/// nodes.
///
/// ```
/// use kvtower::config::BackendConfig;
///
/// let BackendConfig::RedisCluster(c) = BackendConfig::from_url("redis+cluster://a:7000,b:7001")? else { panic!() };
/// assert_eq!(c.urls.len(), 2);
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisClusterConfig {
    /// Seed node URLs.
    pub urls: Vec<SecretUrl>,
    /// Key namespace (default `kvtower`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Per-operation timeout.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The data format: `kvtower` (the default) or `fedify`, Fedify's own
    /// store's format for this backend, to share data with a Fedify server
    /// (see [`Layout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// In the Fedify layout, the text every Redis key starts with (Fedify's
    /// `keyPrefix`, default `fedify::`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

impl Backend for RedisConfig {
    fn from_url(url: &str) -> Result<Self> {
        Ok(Self {
            url: SecretUrl::new(url),
            namespace: None,
            timeout: None,
            layout: None,
            key_prefix: None,
        })
    }

    fn validate(&self) -> Result<()> {
        super::fedify_only(self.layout, "key_prefix", self.key_prefix.is_some())
    }

    async fn build(&self) -> Result<DynKvStore> {
        #[cfg(feature = "redis")]
        {
            let store = redis_builder(
                self.namespace.as_deref(),
                self.timeout,
                self.layout,
                self.key_prefix.as_deref(),
            )
            .connect(self.url.expose())
            .await
            .map_err(|e| crate::config::secrets::scrub(e, [&self.url]))?;
            Ok(std::sync::Arc::new(store))
        }
        #[cfg(not(feature = "redis"))]
        Err(super::missing_feature("redis", "redis"))
    }

    fn redis_endpoint(&self) -> Option<(&SecretUrl, &str)> {
        Some((
            &self.url,
            self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        ))
    }
}

impl Backend for RedisClusterConfig {
    fn from_url(url: &str) -> Result<Self> {
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        Ok(Self {
            urls: rest
                .split(',')
                .filter(|node| !node.is_empty())
                .map(|node| SecretUrl::new(format!("redis://{node}")))
                .collect(),
            namespace: None,
            timeout: None,
            layout: None,
            key_prefix: None,
        })
    }

    fn validate(&self) -> Result<()> {
        if self.urls.is_empty() {
            return Err(Error::config(
                "backend.urls: a Redis Cluster needs at least one seed node URL",
            ));
        }
        super::fedify_only(self.layout, "key_prefix", self.key_prefix.is_some())
    }

    async fn build(&self) -> Result<DynKvStore> {
        #[cfg(feature = "redis")]
        {
            let store = redis_builder(
                self.namespace.as_deref(),
                self.timeout,
                self.layout,
                self.key_prefix.as_deref(),
            )
            .cluster(self.urls.iter().map(SecretUrl::expose))
            .await
            .map_err(|e| crate::config::secrets::scrub(e, &self.urls))?;
            Ok(std::sync::Arc::new(store))
        }
        #[cfg(not(feature = "redis"))]
        Err(super::missing_feature("redis_cluster", "redis"))
    }

    fn redis_endpoint(&self) -> Option<(&SecretUrl, &str)> {
        Some((
            self.urls.first()?,
            self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        ))
    }
}

#[cfg(feature = "redis")]
fn redis_builder(
    namespace: Option<&str>,
    timeout: Option<Duration>,
    layout: Option<Layout>,
    key_prefix: Option<&str>,
) -> crate::RedisKvStoreBuilder {
    let mut builder = crate::RedisKvStore::builder().layout(layout.unwrap_or_default());
    if let Some(key_prefix) = key_prefix {
        builder = builder.key_prefix(key_prefix);
    }
    if let Some(namespace) = namespace {
        builder = builder.namespace(namespace);
    }
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder
}
