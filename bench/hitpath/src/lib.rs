//! The contenders and workloads of the hit-path benchmark (issue 14), shared by
//! the criterion bench (`benches/hitpath.rs`) and the callgrind driver
//! (`examples/callgrind.rs`). The peers live in `peers/mod.rs`: they are
//! dev-dependencies, so only the bench and the example can see them.
//!
//! Every contender does the same cache-aside work on the same values: a read
//! asks the front tier, and on a miss reads Redis, decodes the JSON and fills
//! the front; a write goes to Redis (with a TTL), then to the front. Keys are
//! built before the measured loop, so no contender formats a key per call.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtower::layers::{CacheLayer, DefaultTtlLayer, MetricsLayer, PrefixLayer};
use kvtower::{kvkey, KvKey, KvStore, MemoryKvStore, RedisKvStore, SetOptions};
use serde_json::{json, Value};
use tower::ServiceBuilder;

#[path = "../../loadgen/src/server.rs"]
mod server;
pub use server::RedisServer;

/// Entries a front tier holds, for every contender.
pub const FRONT_CAPACITY: u64 = 10_000;
/// How long a front entry lives, for every contender (kvtower's default
/// `front_max_ttl`).
pub const FRONT_TTL: Duration = Duration::from_secs(60);
/// The TTL of every Redis write.
pub const REDIS_TTL: Duration = Duration::from_secs(3600);

/// The value of key `i`: a JSON object of about 200 bytes of text.
pub fn value(i: usize) -> Value {
    json!({
        "id": i,
        "name": "Ada Lovelace",
        "email": "ada.lovelace@example.com",
        "roles": ["admin", "dev", "ops"],
        "active": true,
        "score": 97.25,
        "address": {"street": "12 St James's Square", "city": "London", "zip": "SW1Y 4JH"},
        "bio": "Mathematician; wrote the first program.",
    })
}

/// One way to run a two-tier cache.
pub trait Contender: Send + Sync + 'static {
    /// A cache-aside read of key `i`: the front, else Redis (and fill the
    /// front). Whether a value was found.
    fn read(&self, i: usize) -> impl Future<Output = bool> + Send;
    /// A write of key `i` through both tiers.
    fn write(&self, i: usize, value: &Value) -> impl Future<Output = ()> + Send;
}

/// The hand-written floor: a `moka::future::Cache<String, Arc<Value>>` in
/// front of raw redis-rs on one multiplexed connection, get-then-fill.
pub struct Floor {
    pub front: moka::future::Cache<String, Arc<Value>>,
    pub conn: redis::aio::MultiplexedConnection,
    pub keys: Vec<String>,
}

impl Floor {
    pub async fn connect(url: &str, keys: usize) -> Self {
        let client = redis::Client::open(url).expect("redis url");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        Self {
            front: moka::future::Cache::builder()
                .max_capacity(FRONT_CAPACITY)
                .time_to_live(FRONT_TTL)
                .build(),
            conn,
            keys: (0..keys).map(|i| format!("floor:user:{i}")).collect(),
        }
    }

    /// The Redis half alone: `GET` and `serde_json::from_slice`.
    pub async fn redis_get(&self, i: usize) -> Option<Value> {
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&self.keys[i])
            .query_async(&mut conn)
            .await
            .expect("GET");
        raw.map(|raw| serde_json::from_slice(&raw).expect("JSON"))
    }
}

impl Contender for Floor {
    async fn read(&self, i: usize) -> bool {
        let key = &self.keys[i];
        if let Some(value) = self.front.get(key).await {
            black_box(&value);
            return true;
        }
        let Some(value) = self.redis_get(i).await else {
            return false;
        };
        let value = Arc::new(value);
        self.front.insert(key.clone(), value.clone()).await;
        black_box(&value);
        true
    }

    async fn write(&self, i: usize, value: &Value) {
        let key = &self.keys[i];
        let text = serde_json::to_vec(value).expect("JSON");
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(key)
            .arg(text)
            .arg("EX")
            .arg(REDIS_TTL.as_secs())
            .query_async(&mut conn)
            .await
            .expect("SET");
        self.front
            .insert(key.clone(), Arc::new(value.clone()))
            .await;
    }
}

/// Any kvtower store, read with `get_shared`.
pub struct Kv<S> {
    pub store: S,
    pub keys: Vec<KvKey>,
}

impl<S> Kv<S> {
    pub fn new(store: S, keys: usize) -> Self {
        Self {
            store,
            keys: (0..keys).map(|i| kvkey!["user", i.to_string()]).collect(),
        }
    }
}

impl<S: KvStore + 'static> Contender for Kv<S> {
    async fn read(&self, i: usize) -> bool {
        let found = self.store.get_shared(&self.keys[i]).await.expect("get");
        black_box(&found);
        found.is_some()
    }

    async fn write(&self, i: usize, value: &Value) {
        self.store
            .set(&self.keys[i], value.clone(), SetOptions::ttl(REDIS_TTL))
            .await
            .expect("set");
    }
}

/// The stack of issue 14: metrics, default TTL, cache (prefix inside it),
/// over Redis.
pub type StackStore = kvtower::layers::Metrics<
    kvtower::layers::DefaultTtl<
        kvtower::layers::Cache<kvtower::layers::Prefix<RedisKvStore>, MemoryKvStore>,
    >,
>;

/// The front tier every kvtower contender uses, as the README recommends
/// one: bounded like the floor's, and with the cache's `front_max_ttl` as its
/// `max_ttl` (one global moka TTL, as the floor has, instead of a per-entry
/// expiry policy).
pub fn front() -> MemoryKvStore {
    MemoryKvStore::builder()
        .max_entries(FRONT_CAPACITY)
        .max_ttl(FRONT_TTL)
        .build()
}

/// The front tier with moka's per-entry expiry (`MemoryKvStore`'s default),
/// for the rows that show what `max_ttl` saves.
pub fn front_per_entry_expiry() -> MemoryKvStore {
    MemoryKvStore::builder().max_entries(FRONT_CAPACITY).build()
}

/// The Redis store of the kvtower contenders, in its own namespace.
pub async fn redis_store(url: &str, namespace: &str) -> RedisKvStore {
    RedisKvStore::builder()
        .namespace(namespace)
        .connect(url)
        .await
        .expect("connect to redis")
}

/// The four-layer stack, built with `ServiceBuilder` as the README shows it.
/// Its fills read the value and its Redis TTL (`GET` + `PTTL`): a front
/// entry never outlives the Redis one.
pub fn stack(redis: RedisKvStore) -> StackStore {
    stack_with(redis, front(), false)
}

/// [`stack`] with `fill_without_inner_ttl`: fills are one plain `GET` and
/// live `FRONT_TTL`, as the floor's do.
pub fn stack_plain_fills(redis: RedisKvStore) -> StackStore {
    stack_with(redis, front(), true)
}

/// [`stack`] over a front with moka's per-entry expiry (the stack before
/// `max_ttl`).
pub fn stack_per_entry_expiry(redis: RedisKvStore) -> StackStore {
    stack_with(redis, front_per_entry_expiry(), false)
}

fn stack_with(redis: RedisKvStore, front: MemoryKvStore, plain_fills: bool) -> StackStore {
    let cache = CacheLayer::builder(front)
        .front_max_ttl(FRONT_TTL)
        .name("hitpath");
    let cache = if plain_fills {
        cache.fill_without_inner_ttl()
    } else {
        cache
    };
    ServiceBuilder::new()
        .layer(MetricsLayer::new("hitpath"))
        .layer(DefaultTtlLayer::new(REDIS_TTL))
        .layer(cache.build())
        .layer(PrefixLayer::new(kvkey!["app"]))
        .service(redis)
}

/// Raw moka front alone (no Redis), for the hit-path reference numbers.
pub struct MokaOnly<V> {
    pub front: moka::future::Cache<String, V>,
    pub keys: Vec<String>,
}

impl<V: Clone + Send + Sync + 'static> MokaOnly<V> {
    pub fn new(keys: usize) -> Self {
        Self {
            front: moka::future::Cache::builder()
                .max_capacity(FRONT_CAPACITY)
                .time_to_live(FRONT_TTL)
                .build(),
            keys: (0..keys).map(|i| format!("user:{i}")).collect(),
        }
    }

    /// moka's `get_with` on a key it holds (the loader is not called).
    pub async fn get_with(&self, i: usize, make: impl FnOnce() -> V) -> V {
        let key = &self.keys[i];
        self.front
            .get_with_by_ref(key.as_str(), async move { make() })
            .await
    }
}

/// Runs `ops` operations of `workload` on `contender` from `tasks` spawned
/// tasks (on the current runtime) and returns the elapsed time.
pub async fn run<C: Contender>(
    contender: &Arc<C>,
    tasks: usize,
    ops: u64,
    workload: &Workload,
) -> Duration {
    let per_task = ops.div_ceil(tasks as u64);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let contender = contender.clone();
            let workload = workload.clone();
            tokio::spawn(async move {
                for j in 0..per_task {
                    workload.step(&*contender, t, j).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("task");
    }
    start.elapsed()
}

/// What each operation of a run does.
#[derive(Clone)]
pub enum Workload {
    /// Reads of `keys` keys that all sit in the front.
    Hits { keys: usize },
    /// Reads walking `keys` keys in order (far more than the front holds):
    /// front misses that Redis answers.
    Misses {
        keys: usize,
        cursor: Arc<std::sync::atomic::AtomicUsize>,
    },
    /// Reads (and one write in 20) of the precomputed key ranks.
    Mix {
        ranks: Arc<[u32]>,
        value: Arc<Value>,
    },
}

impl Workload {
    pub fn misses(keys: usize) -> Self {
        Self::Misses {
            keys,
            cursor: Arc::default(),
        }
    }

    async fn step<C: Contender>(&self, contender: &C, task: usize, j: u64) {
        match self {
            Workload::Hits { keys } => {
                let i = (task * 7919 + j as usize) % keys;
                assert!(contender.read(i).await, "a hit");
            }
            Workload::Misses { keys, cursor } => {
                let i = cursor.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % keys;
                assert!(contender.read(i).await, "Redis holds every key");
            }
            Workload::Mix { ranks, value } => {
                let at = (task * 15_485_863 + j as usize) % ranks.len();
                let i = ranks[at] as usize;
                if j % 20 == 19 {
                    contender.write(i, value).await;
                } else if !contender.read(i).await {
                    // Cache-aside: the application loads and fills.
                    contender.write(i, value).await;
                }
            }
        }
    }
}

/// Writes keys `0..keys` through `contender`, 64 at a time.
pub async fn preload<C: Contender>(contender: &Arc<C>, keys: usize) {
    let tasks = 64;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let contender = contender.clone();
            tokio::spawn(async move {
                for i in (t..keys).step_by(tasks) {
                    contender.write(i, &value(i)).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("preload task");
    }
}

/// Redis's own count of commands served so far (`INFO commandstats`), by
/// command (`INFO` itself left out).
pub async fn redis_calls(url: &str) -> std::collections::BTreeMap<String, u64> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    // cmdstat_get:calls=12,usec=...
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            (name != "info").then(|| (name.to_owned(), calls))
        })
        .collect()
}

/// The commands served between two [`redis_calls`], as `GET x1, SET x1`.
pub fn calls_between(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> (u64, String) {
    let mut total = 0;
    let mut parts = Vec::new();
    for (name, calls) in after {
        let delta = calls - before.get(name).copied().unwrap_or(0);
        if delta > 0 {
            total += delta;
            parts.push(format!("{} x{delta}", name.to_uppercase()));
        }
    }
    (total, parts.join(", "))
}
