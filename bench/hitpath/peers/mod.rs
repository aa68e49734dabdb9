//! The peer crates as [`Contender`]s (dev-dependencies of this crate only, so
//! the bench and the callgrind example include this file by path).

use std::hint::black_box;
use std::sync::Arc;

use kvtower_hitpath::{Contender, FRONT_CAPACITY, FRONT_TTL, REDIS_TTL};
use serde_json::Value;

/// A value shared like the floor's: amalgam clones `V` on every hit, so an
/// `Arc` keeps that a counter increment (its JSON form is the value's).
#[derive(Clone)]
pub struct Shared(pub Arc<Value>);

impl serde::Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Shared(Arc::new(v)))
    }
}

/// amalgam-cache 0.4 (FusionCache-style): its L1 bounded at the same entry
/// count, Redis as its distributed tier with its JSON serializer.
pub struct Amalgam {
    pub cache: amalgam::Cache<Shared>,
    pub keys: Vec<String>,
}

impl Amalgam {
    pub async fn connect(url: &str, keys: usize) -> Self {
        use amalgam::provider::{DistributedCache, DistributedSerializer, JsonSerializer};
        let l2 = amalgam::provider::RedisDistributedCache::connect(url.to_owned())
            .await
            .expect("amalgam: connect to redis");
        let cache = amalgam::Cache::builder()
            .max_capacity(FRONT_CAPACITY)
            .default_options(
                amalgam::EntryOptions::default()
                    .with_duration(REDIS_TTL)
                    .with_memory_duration(FRONT_TTL),
            )
            .distributed(Arc::new(l2) as Arc<dyn DistributedCache>)
            .serializer(Arc::new(JsonSerializer) as Arc<dyn DistributedSerializer<Shared>>)
            .try_build()
            .expect("amalgam: build");
        Self {
            cache,
            keys: (0..keys).map(|i| format!("amalgam:user:{i}")).collect(),
        }
    }
}

impl Contender for Amalgam {
    async fn read(&self, i: usize) -> bool {
        let found = self
            .cache
            .try_get(self.keys[i].as_str())
            .await
            .expect("amalgam: try_get");
        black_box(&found);
        found.is_some()
    }

    async fn write(&self, i: usize, value: &Value) {
        self.cache
            .set(self.keys[i].as_str(), Shared(Arc::new(value.clone())))
            .await
            .expect("amalgam: set");
    }
}

/// multi-tier-cache 0.6: its moka L1 at the same entry count and TTL over its
/// Redis L2; values are JSON bytes in both tiers, decoded by `get_typed`.
pub struct MultiTier {
    pub system: multi_tier_cache::CacheSystem,
    pub keys: Vec<String>,
}

impl MultiTier {
    pub async fn connect(url: &str, keys: usize) -> Self {
        use multi_tier_cache::{CacheSystemBuilder, MokaCacheConfig, RedisCache};
        let l2 = RedisCache::with_url(url)
            .await
            .expect("multi-tier-cache: connect to redis");
        let system = CacheSystemBuilder::new()
            .with_moka_config(MokaCacheConfig {
                max_capacity: FRONT_CAPACITY,
                time_to_live: FRONT_TTL,
                time_to_idle: FRONT_TTL,
            })
            .with_l2(Arc::new(l2))
            .build()
            .await
            .expect("multi-tier-cache: build");
        Self {
            system,
            keys: (0..keys).map(|i| format!("mtc:user:{i}")).collect(),
        }
    }
}

impl Contender for MultiTier {
    async fn read(&self, i: usize) -> bool {
        let found: Option<Value> = self
            .system
            .cache_manager()
            .get_typed(&self.keys[i])
            .await
            .expect("multi-tier-cache: get");
        black_box(&found);
        found.is_some()
    }

    async fn write(&self, i: usize, value: &Value) {
        let bytes = multi_tier_cache::Bytes::from(serde_json::to_vec(value).expect("JSON"));
        self.system
            .cache_manager()
            .set_with_strategy(
                &self.keys[i],
                bytes,
                multi_tier_cache::CacheStrategy::Custom(REDIS_TTL),
            )
            .await
            .expect("multi-tier-cache: set");
    }
}
