//! The Zipf read-heavy workload mix (Zipf 1.1 over 100k keys, 90% cache-aside
//! reads, 100-byte JSON values, one task) on every contender of
//! `bench/loadgen`, as criterion benches against one private
//! `redis-server` (never the shared one on 6379).
//!
//! `cargo bench -p kvtower-loadgen --bench workload -- --warm-up-time 1 --measurement-time 3`
//!
//! The load generator (`bench/loadgen`) is the main tool: it covers the
//! whole matrix, concurrency, latency percentiles, hit ratios and memory.
//! This bench is the same mix under criterion's statistics.

#[path = "../src/contenders.rs"]
#[allow(dead_code)]
mod contenders;
#[path = "../src/server.rs"]
#[allow(dead_code)]
mod server;
#[path = "../src/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rand09::rngs::SmallRng;
use rand09::SeedableRng;

use contenders::{Front, Setup, CONTENDERS};
use workload::{Cell, Dist, Keys};

fn workload(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = server::RedisServer::start().unwrap();
    let cell = Cell {
        dist: Dist::Zipf(1.1),
        keys: 100_000,
        read_pct: 90,
        value_bytes: 100,
        concurrency: 1,
    };
    let setup = Setup {
        redis_url: server.url(),
        front: Front::Entries(cell.keys / 10),
    };
    let keys = Keys::new(cell.dist, cell.keys).unwrap();
    let template = workload::template(cell.value_bytes);

    let mut g = c.benchmark_group("workload/zipf1.1-100k-r90-100B");
    for entry in CONTENDERS {
        let contender = rt.block_on(contenders::build(entry.name, &setup)).unwrap();
        // Fill the shared tier and the front the way the workload does.
        rt.block_on(workload::run(
            contender.clone(),
            Cell {
                concurrency: 8,
                ..cell
            },
            Duration::ZERO,
            Duration::from_millis(500),
            7,
        ))
        .unwrap();
        let mut seed = 0u64;
        g.bench_function(entry.name, |b| {
            seed += 1;
            let mut rng = SmallRng::seed_from_u64(seed);
            b.to_async(&rt).iter_custom(|iters| {
                let contender = contender.clone();
                let keys = keys.clone();
                let template = template.clone();
                let mut task_rng = SmallRng::from_rng(&mut rng);
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        workload::one_op(
                            &*contender,
                            &keys,
                            cell.read_pct,
                            &template,
                            &mut task_rng,
                        )
                        .await
                        .unwrap();
                    }
                    start.elapsed()
                }
            })
        });
    }
    g.finish();
    drop(server);
}

/// The front tiers alone: a hit on a Zipf 1.1 mix of 10k cached keys, and an
/// insert that evicts. What one front operation costs in CPU bounds
/// throughput once the machine is saturated.
fn front_tiers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 10_000u64;
    let value = workload::template(100);
    let moka: moka::future::Cache<String, serde_json::Value> = moka::future::Cache::builder()
        .max_capacity(2 * n)
        .time_to_live(contenders::FRONT_TTL)
        .build();
    let lru = cached::stores::ShardedLruTtlCache::<String, serde_json::Value>::builder()
        .max_size(2 * n as usize)
        .ttl(contenders::FRONT_TTL)
        .build()
        .unwrap();
    rt.block_on(async {
        for id in 0..n {
            moka.insert(id.to_string(), value.clone()).await;
            lru.set(id.to_string(), value.clone());
        }
        moka.run_pending_tasks().await;
    });
    let keys = Keys::new(Dist::Zipf(1.1), n).unwrap();
    let mut rng = SmallRng::seed_from_u64(1);
    let ids: Vec<String> = (0..4096)
        .map(|_| keys.sample(&mut rng).to_string())
        .collect();

    let mut g = c.benchmark_group("front/get_hit_zipf1.1");
    g.bench_function("moka_future", |b| {
        let mut i = 0;
        b.to_async(&rt).iter(|| {
            i = (i + 1) % ids.len();
            let key = &ids[i];
            let moka = &moka;
            async move { moka.get(key).await.unwrap() }
        })
    });
    g.bench_function("cached_sharded_lru_ttl", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ids.len();
            lru.get(&ids[i]).unwrap()
        })
    });
    g.finish();

    // Inserts over 100k distinct keys into fronts of 10k: every insert evicts.
    let mut g = c.benchmark_group("front/insert_evicting");
    g.bench_function("moka_future", |b| {
        let mut i = 0u64;
        b.to_async(&rt).iter(|| {
            i = (i + 1) % 100_000;
            let moka = &moka;
            let value = value.clone();
            async move { moka.insert(i.to_string(), value).await }
        })
    });
    g.bench_function("cached_sharded_lru_ttl", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % 100_000;
            lru.set(i.to_string(), value.clone())
        })
    });
    g.finish();
}

criterion_group!(benches, workload, front_tiers);
criterion_main!(benches);
