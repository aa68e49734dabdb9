//! The contenders: kvtower stacks and what a user would pick instead, behind
//! one small interface so that every one runs the same workload.
//!
//! Every contender stores the same JSON values under keys derived from the
//! same ids, sets the same shared-tier TTL ([`REDIS_TTL`]) and, where it has a
//! front tier, bounds it the same way ([`Front`]) with the same front TTL
//! ([`FRONT_TTL`]). Each keeps its own key encoding and value format (that is
//! part of what is compared).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TTL of every write to the shared tier (Redis).
pub const REDIS_TTL: Duration = Duration::from_secs(3600);
/// TTL of front-tier entries.
pub const FRONT_TTL: Duration = Duration::from_secs(60);

/// How the front tier (where there is one) is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Front {
    /// At most this many entries.
    Entries(u64),
    /// At most this many bytes (kvtower's byte-weighted front only).
    Bytes(u64),
}

/// What every contender can do: read and write a JSON value by numeric id.
#[async_trait]
pub trait Contender: Send + Sync {
    /// The value under `id`, `None` when absent.
    async fn get(&self, id: u64) -> Result<Option<Value>, BoxError>;
    /// Writes `value` under `id` (with [`REDIS_TTL`] in the shared tier).
    async fn set(&self, id: u64, value: Value) -> Result<(), BoxError>;
    /// Front-tier lookups so far, when the contender has a front tier it can
    /// count.
    fn front_counts(&self) -> Option<Counts> {
        None
    }
    /// The front tier's weighted size in bytes, when it is byte-bounded.
    async fn front_weighted_bytes(&self) -> Option<u64> {
        None
    }
}

/// Front-tier lookups: hits and misses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub hits: u64,
    pub misses: u64,
}

impl Counts {
    /// The counts since `earlier`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            hits: self.hits - earlier.hits,
            misses: self.misses - earlier.misses,
        }
    }

    /// hits / (hits + misses), `None` without lookups.
    pub fn ratio(self) -> Option<f64> {
        let total = self.hits + self.misses;
        (total > 0).then(|| self.hits as f64 / total as f64)
    }
}

/// Counts front-tier lookups (one relaxed atomic add per lookup, the same
/// cost for every contender that counts).
#[derive(Debug, Default)]
pub struct Counter {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Counter {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
    pub fn counts(&self) -> Counts {
        Counts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// What a contender is built with.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The private Redis of this run.
    pub redis_url: String,
    /// The front-tier bound.
    pub front: Front,
}

/// One registered contender.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its name in the CSV, the tables and the plots.
    pub name: &'static str,
    /// Whether it has a front tier.
    pub tiered: bool,
    /// One line for the tables.
    pub what: &'static str,
}

/// Every contender, in report order.
pub const CONTENDERS: &[Entry] = &[
    Entry {
        name: "kvtower_redis",
        tiered: false,
        what: "kvtower::RedisKvStore alone",
    },
    Entry {
        name: "kvtower_stack",
        tiered: true,
        what: "kvtower: MetricsLayer + PrefixLayer + DefaultTtlLayer + CacheLayer(MemoryKvStore) over RedisKvStore",
    },
    Entry {
        name: "raw_floor",
        tiered: true,
        what: "hand-written: raw moka::future::Cache in front of a raw redis ConnectionManager",
    },
    Entry {
        name: "cached_redis",
        tiered: false,
        what: "cached::AsyncRedisCache alone",
    },
    Entry {
        name: "cached_two_tier",
        tiered: true,
        what: "cached::ShardedLruTtlCache in front of cached::AsyncRedisCache, by hand",
    },
    Entry {
        name: "opendal_redis",
        tiered: false,
        what: "opendal::Operator on services::Redis",
    },
    Entry {
        name: "opendal_foyer",
        tiered: true,
        what: "opendal::Operator on services::Redis with layers::FoyerLayer (memory-only foyer)",
    },
];

/// The contenders whose front tier can be bounded in bytes ([`Front::Bytes`]).
pub const BYTE_FRONTS: &[&str] = &["kvtower_stack"];

/// Looks a contender up by name.
pub fn entry(name: &str) -> Option<Entry> {
    CONTENDERS.iter().copied().find(|e| e.name == name)
}

/// Builds the contender called `name`.
pub async fn build(name: &str, setup: &Setup) -> Result<Arc<dyn Contender>, BoxError> {
    Ok(match name {
        "kvtower_redis" => Arc::new(KvtowerRedis::new(setup).await?),
        "kvtower_stack" => kvtower_stack(setup).await?,
        "raw_floor" => Arc::new(RawFloor::new(setup).await?),
        "cached_redis" => Arc::new(CachedRedis::new(setup).await?),
        "cached_two_tier" => Arc::new(CachedTwoTier::new(setup).await?),
        "opendal_redis" => Arc::new(OpendalRedis::new(setup, false).await?),
        "opendal_foyer" => Arc::new(OpendalRedis::new(setup, true).await?),
        other => return Err(format!("unknown contender {other:?}").into()),
    })
}

fn front_entries(setup: &Setup, name: &str) -> Result<u64, BoxError> {
    match setup.front {
        Front::Entries(n) => Ok(n),
        Front::Bytes(_) => Err(format!("{name} has no byte-bounded front tier").into()),
    }
}

// ---------------------------------------------------------------------------
// kvtower.

use futures::stream::BoxStream;
use kvtower::layers::{CacheLayer, DefaultTtlLayer, MetricsLayer, PrefixLayer};
use kvtower::{KvEntry, KvKey, KvStore, MemoryKvStore, RedisKvStore, SetOptions};

/// `RedisKvStore` alone, every write with [`REDIS_TTL`].
struct KvtowerRedis {
    store: RedisKvStore,
}

impl KvtowerRedis {
    async fn new(setup: &Setup) -> Result<Self, BoxError> {
        Ok(Self {
            store: RedisKvStore::connect(&setup.redis_url).await?,
        })
    }
}

fn bench_key(id: u64) -> Result<KvKey, BoxError> {
    Ok(KvKey::new(["bench".to_string(), id.to_string()])?)
}

#[async_trait]
impl Contender for KvtowerRedis {
    async fn get(&self, id: u64) -> Result<Option<Value>, BoxError> {
        Ok(self.store.get(&bench_key(id)?).await?)
    }

    async fn set(&self, id: u64, value: Value) -> Result<(), BoxError> {
        let key = bench_key(id)?;
        Ok(self
            .store
            .set(&key, value, SetOptions::ttl(REDIS_TTL))
            .await?)
    }
}

/// The front tier of the full stack, counting its lookups: one relaxed atomic
/// add per `get`, as in the floor. Every other method forwards.
#[derive(Debug, Clone)]
struct CountingFront {
    inner: MemoryKvStore,
    counter: Arc<Counter>,
}

#[async_trait]
impl KvStore for CountingFront {
    async fn get(&self, key: &KvKey) -> kvtower::Result<Option<Value>> {
        let value = self.inner.get(key).await?;
        if value.is_some() {
            self.counter.hit();
        } else {
            self.counter.miss();
        }
        Ok(value)
    }
    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> kvtower::Result<()> {
        self.inner.set(key, value, options).await
    }
    async fn delete(&self, key: &KvKey) -> kvtower::Result<()> {
        self.inner.delete(key).await
    }
    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> kvtower::Result<bool> {
        self.inner.cas(key, expected, new, options).await
    }
    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, kvtower::Result<KvEntry>> {
        self.inner.list(prefix)
    }
    async fn get_many(&self, keys: &[KvKey]) -> kvtower::Result<Vec<Option<Value>>> {
        self.inner.get_many(keys).await
    }
    async fn set_many(
        &self,
        entries: Vec<(KvKey, Value)>,
        options: SetOptions,
    ) -> kvtower::Result<()> {
        self.inner.set_many(entries, options).await
    }
    async fn delete_many(&self, keys: &[KvKey]) -> kvtower::Result<()> {
        self.inner.delete_many(keys).await
    }

    fn capabilities(&self) -> kvtower::Capabilities {
        self.inner.capabilities().with_reports_ttl(false)
    }
}

/// The full stack: metrics, prefix, default TTL, and a `MemoryKvStore` front
/// (moka) over `RedisKvStore`:
///
/// ```text
/// ServiceBuilder::new()
///     .layer(MetricsLayer::new("bench"))
///     .layer(PrefixLayer::new(kvkey!["bench"]))
///     .layer(DefaultTtlLayer::new(REDIS_TTL))
///     .layer(CacheLayer::builder(front).front_max_ttl(FRONT_TTL).build())
///     .service(redis)
/// ```
///
/// No `metrics` recorder is installed: the layer does its own work (timing,
/// labels) and the facade drops the values, as in an application without an
/// exporter.
struct KvtowerStack<S> {
    store: S,
    front: MemoryKvStore,
    counter: Arc<Counter>,
    byte_bounded: bool,
}

async fn kvtower_stack(setup: &Setup) -> Result<Arc<dyn Contender>, BoxError> {
    let redis = RedisKvStore::connect(&setup.redis_url).await?;
    let (front, byte_bounded) = match setup.front {
        Front::Entries(n) => (MemoryKvStore::builder().max_entries(n).build(), false),
        Front::Bytes(n) => (MemoryKvStore::builder().max_bytes(n).build(), true),
    };
    let counter = Arc::new(Counter::default());
    let cache = CacheLayer::builder(CountingFront {
        inner: front.clone(),
        counter: counter.clone(),
    })
    .front_max_ttl(FRONT_TTL)
    .build();
    let store = tower::ServiceBuilder::new()
        .layer(MetricsLayer::new("bench"))
        .layer(PrefixLayer::new(kvtower::kvkey!["bench"]))
        .layer(DefaultTtlLayer::new(REDIS_TTL))
        .layer(cache)
        .service(redis);
    Ok(Arc::new(KvtowerStack {
        store,
        front,
        counter,
        byte_bounded,
    }))
}

#[async_trait]
impl<S: KvStore> Contender for KvtowerStack<S> {
    async fn get(&self, id: u64) -> Result<Option<Value>, BoxError> {
        Ok(self.store.get(&KvKey::new([id.to_string()])?).await?)
    }

    async fn set(&self, id: u64, value: Value) -> Result<(), BoxError> {
        let key = KvKey::new([id.to_string()])?;
        Ok(self.store.set(&key, value, SetOptions::default()).await?)
    }

    fn front_counts(&self) -> Option<Counts> {
        Some(self.counter.counts())
    }

    async fn front_weighted_bytes(&self) -> Option<u64> {
        if !self.byte_bounded {
            return None;
        }
        self.front.run_pending_tasks().await;
        Some(self.front.weighted_size())
    }
}

// ---------------------------------------------------------------------------
// The floor: what a careful user writes by hand with moka and redis.

/// Read-through on a front miss (moka's `try_get_with`, which also makes
/// concurrent misses of one key share one Redis read), write-through on set:
/// Redis first, then the front.
struct RawFloor {
    front: moka::future::Cache<String, Value>,
    redis: redis::aio::ConnectionManager,
    counter: Counter,
}

/// A front miss that Redis does not have either: not an error, but moka's
/// `try_get_with` must not cache it.
#[derive(Debug)]
enum FillError {
    Absent,
    Failed(BoxError),
}

impl RawFloor {
    async fn new(setup: &Setup) -> Result<Self, BoxError> {
        let client = redis::Client::open(setup.redis_url.as_str())?;
        let redis = redis::aio::ConnectionManager::new(client).await?;
        let front = moka::future::Cache::builder()
            .max_capacity(front_entries(setup, "raw_floor")?)
            .time_to_live(FRONT_TTL)
            .build();
        Ok(Self {
            front,
            redis,
            counter: Counter::default(),
        })
    }
}

#[async_trait]
impl Contender for RawFloor {
    async fn get(&self, id: u64) -> Result<Option<Value>, BoxError> {
        let key = format!("bench:{id}");
        if let Some(value) = self.front.get(&key).await {
            self.counter.hit();
            return Ok(Some(value));
        }
        self.counter.miss();
        let mut redis = self.redis.clone();
        let fill = async {
            let bytes: Option<Vec<u8>> = redis::AsyncCommands::get(&mut redis, &key)
                .await
                .map_err(|e| FillError::Failed(e.into()))?;
            match bytes {
                None => Err(FillError::Absent),
                Some(bytes) => {
                    serde_json::from_slice::<Value>(&bytes).map_err(|e| FillError::Failed(e.into()))
                }
            }
        };
        match self.front.try_get_with_by_ref(&key, fill).await {
            Ok(value) => Ok(Some(value)),
            Err(e) => match &*e {
                FillError::Absent => Ok(None),
                FillError::Failed(e) => Err(e.to_string().into()),
            },
        }
    }

    async fn set(&self, id: u64, value: Value) -> Result<(), BoxError> {
        let key = format!("bench:{id}");
        let bytes = serde_json::to_vec(&value)?;
        let mut redis = self.redis.clone();
        let () = redis::AsyncCommands::set_ex(&mut redis, &key, bytes, REDIS_TTL.as_secs()).await?;
        self.front.insert(key, value).await;
        Ok(())
    }

    fn front_counts(&self) -> Option<Counts> {
        Some(self.counter.counts())
    }
}

// ---------------------------------------------------------------------------
// The `cached` crate.

use cached::ConcurrentCachedAsync as _;

async fn cached_redis(setup: &Setup) -> Result<cached::AsyncRedisCache<String, Value>, BoxError> {
    Ok(cached::AsyncRedisCache::builder("bench")
        .connection_string(&setup.redis_url)
        .ttl(REDIS_TTL)
        .connection_manager(true)
        .build()
        .await?)
}

/// `cached::AsyncRedisCache` alone. Its `async_cache_set` pipelines a `GET` of
/// the old value with the `PSETEX` (it returns the value it replaced), and it
/// stores values as MessagePack.
struct CachedRedis {
    redis: cached::AsyncRedisCache<String, Value>,
}

impl CachedRedis {
    async fn new(setup: &Setup) -> Result<Self, BoxError> {
        Ok(Self {
            redis: cached_redis(setup).await?,
        })
    }
}

#[async_trait]
impl Contender for CachedRedis {
    async fn get(&self, id: u64) -> Result<Option<Value>, BoxError> {
        Ok(self.redis.async_cache_get(&id.to_string()).await?)
    }

    async fn set(&self, id: u64, value: Value) -> Result<(), BoxError> {
        self.redis.async_cache_set(id.to_string(), value).await?;
        Ok(())
    }
}

/// `cached`'s concurrent in-memory cache in front of its Redis cache, combined
/// by hand (`cached` has no two-tier type and no moka-backed store; its bounded
/// concurrent store is a sharded LRU with TTL).
struct CachedTwoTier {
    front: cached::stores::ShardedLruTtlCache<String, Value>,
    redis: cached::AsyncRedisCache<String, Value>,
    counter: Counter,
}

impl CachedTwoTier {
    async fn new(setup: &Setup) -> Result<Self, BoxError> {
        let capacity = usize::try_from(front_entries(setup, "cached_two_tier")?)?;
        let front = cached::stores::ShardedLruTtlCache::builder()
            .max_size(capacity)
            .ttl(FRONT_TTL)
            .build()?;
        Ok(Self {
            front,
            redis: cached_redis(setup).await?,
            counter: Counter::default(),
        })
    }
}

#[async_trait]
impl Contender for CachedTwoTier {
    async fn get(&self, id: u64) -> Result<Option<Value>, BoxError> {
        let key = id.to_string();
        if let Some(value) = self.front.get(&key) {
            self.counter.hit();
            return Ok(Some(value));
        }
        self.counter.miss();
        let value = self.redis.async_cache_get(&key).await?;
        if let Some(value) = &value {
            self.front.set(key, value.clone());
        }
        Ok(value)
    }

    async fn set(&self, id: u64, value: Value) -> Result<(), BoxError> {
        let key = id.to_string();
        self.redis
            .async_cache_set(key.clone(), value.clone())
            .await?;
        self.front.set(key, value);
        Ok(())
    }

    fn front_counts(&self) -> Option<Counts> {
        Some(self.counter.counts())
    }
}

// ---------------------------------------------------------------------------
// Apache OpenDAL.

/// An `Operator` on the Redis service, optionally with OpenDAL's cache layer
/// (`FoyerLayer`, a foyer hybrid cache used here memory-only, bounded in
/// entries, with foyer's default eviction policy). Values are JSON bytes.
/// The foyer layer fills on a miss with a `stat` and then a `read` of the
/// service: two Redis round trips.
struct OpendalRedis {
    op: opendal::Operator,
}

impl OpendalRedis {
    async fn new(setup: &Setup, foyer: bool) -> Result<Self, BoxError> {
        let builder = opendal::services::Redis::default()
            .endpoint(&setup.redis_url)
            .default_ttl(REDIS_TTL);
        let mut op = opendal::Operator::new(builder)?;
        if foyer {
            let capacity = usize::try_from(front_entries(setup, "opendal_foyer")?)?;
            let cache = foyer::HybridCacheBuilder::<
                opendal::layers::FoyerKey,
                opendal::layers::FoyerValue,
            >::new()
            .memory(capacity)
            .storage()
            .build()
            .await?;
            op = op.layer(opendal::layers::FoyerLayer::new(cache));
        }
        Ok(Self { op })
    }
}

#[async_trait]
impl Contender for OpendalRedis {
    async fn get(&self, id: u64) -> Result<Option<Value>, BoxError> {
        match self.op.read(&format!("bench/{id}")).await {
            Ok(buffer) => Ok(Some(serde_json::from_slice(&buffer.to_vec())?)),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn set(&self, id: u64, value: Value) -> Result<(), BoxError> {
        self.op
            .write(&format!("bench/{id}"), serde_json::to_vec(&value)?)
            .await?;
        Ok(())
    }
}
