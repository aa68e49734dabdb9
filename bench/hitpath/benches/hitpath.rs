//! Issue 14's benchmark: the kvtower stack against the hand-written floor
//! (moka `Cache<String, Arc<Value>>` over raw redis-rs) and two peers, side
//! by side in one run, on one private `redis-server` and a 2-worker runtime.
//!
//! ```sh
//! cargo bench -p kvtower-hitpath --bench hitpath -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Every iteration is one operation (criterion's throughput is operations per
//! second); "64 tasks" splits the iterations over 64 spawned tasks.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use kvtower::aside::CacheAside;
use kvtower::KvStore;
use kvtower_hitpath::{
    calls_between, preload, redis_calls, redis_store, run, stack, stack_plain_fills, value,
    Contender, Floor, Kv, MokaOnly, RedisServer, Workload, REDIS_TTL,
};
use rand_distr::Distribution;
use serde_json::Value;

#[path = "../peers/mod.rs"]
mod peers;

/// Keys in Redis for the miss and Zipf workloads (ten times the front).
const KEYS: usize = 100_000;
/// Keys the hit workload cycles over.
const HOT: usize = 1_000;

struct Contenders {
    floor: Arc<Floor>,
    stack: Arc<Kv<kvtower_hitpath::StackStore>>,
    /// The stack with `fill_without_inner_ttl` (fills are one plain GET).
    stack_plain_fills: Arc<Kv<kvtower_hitpath::StackStore>>,
    memory: Arc<Kv<kvtower::MemoryKvStore>>,
    /// `None` with `HITPATH_NO_AMALGAM=1`: once its front holds its capacity,
    /// each of its writes takes milliseconds (10,000 keys in 17-40 s, against
    /// 0.17 s below capacity; amalgam-cache 0.4.2, 2026-12-03), so its
    /// preload of 100,000 keys takes about 5 minutes.
    amalgam: Option<Arc<peers::Amalgam>>,
    multitier: Arc<peers::MultiTier>,
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group
}

fn bench<C: Contender>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    contender: &Arc<C>,
    tasks: usize,
    workload: &Workload,
) {
    group.bench_function(name, |b| {
        b.to_async(rt)
            .iter_custom(|iters| run(contender, tasks, iters, workload))
    });
}

fn all(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    c: &Contenders,
    tasks: usize,
    workload: &Workload,
    with_memory: bool,
) {
    bench(group, rt, "floor", &c.floor, tasks, workload);
    bench(group, rt, "kvtower_stack", &c.stack, tasks, workload);
    bench(
        group,
        rt,
        "kvtower_stack_plain_fills",
        &c.stack_plain_fills,
        tasks,
        workload,
    );
    if with_memory {
        bench(group, rt, "memory_get_shared", &c.memory, tasks, workload);
    }
    if let Some(amalgam) = &c.amalgam {
        bench(group, rt, "amalgam", amalgam, tasks, workload);
    }
    bench(group, rt, "multi_tier_cache", &c.multitier, tasks, workload);
}

fn hitpath(crit: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    let c = rt.block_on(async {
        let c = Contenders {
            floor: Arc::new(Floor::connect(&url, KEYS).await),
            stack: Arc::new(Kv::new(stack(redis_store(&url, "kv").await), KEYS)),
            // The same Redis keys, its own front.
            stack_plain_fills: Arc::new(Kv::new(
                stack_plain_fills(redis_store(&url, "kv").await),
                KEYS,
            )),
            // The front's settings with a bound past the run (the front
            // alone has nothing to refill from, and `FRONT_TTL` is shorter
            // than the other contenders' preloads on a loaded machine).
            memory: Arc::new(Kv::new(
                kvtower::MemoryKvStore::builder()
                    .max_entries(kvtower_hitpath::FRONT_CAPACITY)
                    .max_ttl(REDIS_TTL)
                    .build(),
                KEYS,
            )),
            amalgam: match std::env::var_os("HITPATH_NO_AMALGAM") {
                Some(_) => None,
                None => Some(Arc::new(peers::Amalgam::connect(&url, KEYS).await)),
            },
            multitier: Arc::new(peers::MultiTier::connect(&url, KEYS).await),
        };
        preload(&c.floor, KEYS).await;
        preload(&c.stack, KEYS).await;
        preload(&c.stack_plain_fills, HOT).await;
        preload(&c.memory, HOT).await;
        if let Some(amalgam) = &c.amalgam {
            preload(amalgam, KEYS).await;
        }
        preload(&c.multitier, KEYS).await;
        c
    });

    let hits = Workload::Hits { keys: HOT };
    for tasks in [1, 64] {
        let mut g = group(crit, &format!("hit/{tasks}_tasks"));
        all(&mut g, &rt, &c, tasks, &hits, true);
        g.finish();
    }

    // Zipf 1.0 over the keys (rank 1 the hottest), 95% reads, cache-aside.
    let zipf = rand_distr::Zipf::new(KEYS as f64, 1.0).expect("zipf");
    let mut rng = rand09::rng();
    let ranks: Arc<[u32]> = (0..1 << 20)
        .map(|_| zipf.sample(&mut rng) as u32 - 1)
        .collect();
    let mix = Workload::Mix {
        ranks,
        value: Arc::new(value(0)),
    };
    let mut g = group(crit, "zipf1.0_r95/64_tasks");
    all(&mut g, &rt, &c, 64, &mix, false);
    g.finish();
    // The same workload once more per contender, outside criterion, for the
    // front hit ratio each reached: reads Redis answered / reads made.
    rt.block_on(async {
        zipf_hit_ratio("floor", &c.floor, &mix, &url).await;
        zipf_hit_ratio("kvtower_stack", &c.stack, &mix, &url).await;
        zipf_hit_ratio(
            "kvtower_stack_plain_fills",
            &c.stack_plain_fills,
            &mix,
            &url,
        )
        .await;
        if let Some(amalgam) = &c.amalgam {
            zipf_hit_ratio("amalgam", amalgam, &mix, &url).await;
        }
        zipf_hit_ratio("multi_tier_cache", &c.multitier, &mix, &url).await;
    });

    for tasks in [1, 64] {
        let mut g = group(crit, &format!("miss/{tasks}_tasks"));
        all(&mut g, &rt, &c, tasks, &Workload::misses(KEYS), false);
        g.finish();
    }

    // Issue 13: a CacheAside hit against a get through the same stack and
    // moka's get_with on a hit.
    let aside = rt.block_on(async {
        let kv = Kv::new(stack(redis_store(&url, "aside").await), HOT);
        let aside = CacheAside::builder(kv.store).build().expect("aside");
        for (i, key) in kv.keys.iter().enumerate() {
            aside
                .get_or_set(key, aside.options().ttl(REDIS_TTL), move || async move {
                    Ok::<_, std::io::Error>(value(i))
                })
                .await
                .expect("get_or_set");
        }
        Arc::new(Aside {
            aside,
            keys: kv.keys,
        })
    });
    let moka_value = Arc::new(MokaGetWith(MokaOnly::<Value>::new(HOT)));
    let moka_arc = Arc::new(MokaGetWith(MokaOnly::<Arc<Value>>::new(HOT)));
    let stack_get = Arc::new(StackGet(c.stack.clone()));
    rt.block_on(async {
        for i in 0..HOT {
            moka_value.read(i).await;
            moka_arc.read(i).await;
        }
    });
    let mut g = group(crit, "aside_hit/1_task");
    bench(&mut g, &rt, "get_or_set", &aside, 1, &hits);
    bench(&mut g, &rt, "stack_get", &stack_get, 1, &hits);
    bench(&mut g, &rt, "stack_get_shared", &c.stack, 1, &hits);
    bench(&mut g, &rt, "moka_get_with_value", &moka_value, 1, &hits);
    bench(&mut g, &rt, "moka_get_with_arc", &moka_arc, 1, &hits);
    g.finish();
    drop(server);
}

/// Operations of the front hit ratio pass of the Zipf group.
const RATIO_OPS: u64 = 200_000;

/// Runs [`RATIO_OPS`] operations of `mix` from 64 tasks on `contender` and
/// prints its front hit ratio: 1 - (reads Redis served) / (reads made). The
/// reads Redis served are the count of the read command it received most of
/// (`GET`, `MGET`, `HGET`, `HMGET`, `HGETALL`): each contender sends one such
/// set per front miss (amalgam-cache a `GET` and an `HMGET` of its markers;
/// the kvtower stack's `EVALSHA` is counted by its inner `GET`), so a sum
/// would count one miss twice.
async fn zipf_hit_ratio<C: Contender>(name: &str, contender: &Arc<C>, mix: &Workload, url: &str) {
    let before = redis_calls(url).await;
    run(contender, 64, RATIO_OPS, mix).await;
    let after = redis_calls(url).await;
    let served: u64 = ["get", "mget", "hget", "hmget", "hgetall"]
        .iter()
        .map(|cmd| after.get(*cmd).copied().unwrap_or(0) - before.get(*cmd).copied().unwrap_or(0))
        .max()
        .unwrap_or(0);
    // One operation in 20 is a write (every key is in Redis: a read that
    // misses the front does not write).
    let reads = RATIO_OPS - RATIO_OPS / 20;
    let (_, calls) = calls_between(&before, &after);
    println!(
        "zipf1.0_r95 front hit ratio {name}: {:.3} ({served} of {reads} reads served by Redis; {calls})",
        1.0 - served as f64 / reads as f64
    );
}

/// `CacheAside::get_or_set` over the stack (the loader only runs on a miss).
struct Aside {
    aside: CacheAside<kvtower_hitpath::StackStore>,
    keys: Vec<kvtower::KvKey>,
}

impl Contender for Aside {
    async fn read(&self, i: usize) -> bool {
        let got = self
            .aside
            .get_or_set(
                &self.keys[i],
                self.aside.options().ttl(REDIS_TTL),
                move || async move { Ok::<_, std::io::Error>(value(i)) },
            )
            .await
            .expect("get_or_set");
        std::hint::black_box(got);
        true
    }
    async fn write(&self, _: usize, _: &Value) {
        unreachable!("read only")
    }
}

/// `KvStore::get` (a copy of the value) through the stack.
struct StackGet(Arc<Kv<kvtower_hitpath::StackStore>>);

impl Contender for StackGet {
    async fn read(&self, i: usize) -> bool {
        let found = self.0.store.get(&self.0.keys[i]).await.expect("get");
        std::hint::black_box(&found);
        found.is_some()
    }
    async fn write(&self, _: usize, _: &Value) {
        unreachable!("read only")
    }
}

/// moka's `get_with`, filling on the first call of each key.
struct MokaGetWith<V>(MokaOnly<V>);

trait FromValue {
    fn from_value(value: Value) -> Self;
}
impl FromValue for Value {
    fn from_value(value: Value) -> Self {
        value
    }
}
impl FromValue for Arc<Value> {
    fn from_value(value: Value) -> Self {
        Arc::new(value)
    }
}

impl<V: FromValue + Clone + Send + Sync + 'static> Contender for MokaGetWith<V> {
    async fn read(&self, i: usize) -> bool {
        std::hint::black_box(self.0.get_with(i, || V::from_value(value(i))).await);
        true
    }
    async fn write(&self, _: usize, _: &Value) {
        unreachable!("read only")
    }
}

criterion_group!(benches, hitpath);
criterion_main!(benches);
