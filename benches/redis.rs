//! `RedisKvStore` against raw redis-rs doing the same commands on the same
//! kind of connection (a multiplexed `ConnectionManager`) to the same server,
//! in one run, so the store's overhead is a ratio.
//!
//! `cargo bench --features redis --bench redis -- --warm-up-time 1 --measurement-time 3`
//! (Redis at `KVTOWER_REDIS_URL`, default `redis://127.0.0.1:6379`; keys live
//! in the namespace `kvtower-bench`.)

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::future::join_all;
use kvtower::{kvkey, KvKey, KvStore, RedisKvStore, SetOptions};
use redis::aio::ConnectionManager;
use serde_json::{json, Value};

const TASKS: usize = 64;
const OPS_PER_TASK: usize = 16;
const BATCH: usize = 100;

fn value() -> Value {
    json!({"name": "Ada Lovelace", "id": 42, "tags": ["math", "engines"]})
}

fn redis_bench(c: &mut Criterion) {
    let url =
        std::env::var("KVTOWER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, raw) = rt.block_on(async {
        let store = RedisKvStore::builder()
            .namespace("kvtower-bench")
            .connect(&url)
            .await
            .unwrap();
        let client = redis::Client::open(url.as_str()).unwrap();
        let raw = ConnectionManager::new(client).await.unwrap();
        (store, raw)
    });
    let key = kvkey!["user", "42"];
    let raw_key = store.redis_key(&key);
    let text = serde_json::to_vec(&value()).unwrap();
    let batch: Vec<KvKey> = (0..BATCH).map(|i| kvkey!["batch", i.to_string()]).collect();
    let raw_batch: Vec<String> = batch.iter().map(|k| store.redis_key(k)).collect();
    rt.block_on(async {
        store
            .set(&key, value(), SetOptions::default())
            .await
            .unwrap();
        store
            .set_many(
                batch.iter().map(|k| (k.clone(), value())).collect(),
                SetOptions::default(),
            )
            .await
            .unwrap();
    });

    let mut g = c.benchmark_group("redis/get");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get(&key).await.unwrap()) })
    });
    g.bench_function("raw_redis", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = raw.clone();
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&raw_key)
                .query_async(&mut conn)
                .await
                .unwrap();
            black_box(v)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("redis/set");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .set(&key, value(), SetOptions::default())
                .await
                .unwrap()
        })
    });
    g.bench_function("raw_redis", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = raw.clone();
            redis::cmd("SET")
                .arg(&raw_key)
                .arg(&text)
                .query_async::<()>(&mut conn)
                .await
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("redis/get_64_tasks");
    g.throughput(Throughput::Elements((TASKS * OPS_PER_TASK) as u64));
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            let tasks = (0..TASKS).map(|_| {
                let store = store.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    for _ in 0..OPS_PER_TASK {
                        black_box(store.get(&key).await.unwrap());
                    }
                })
            });
            join_all(tasks).await
        })
    });
    g.bench_function("raw_redis", |b| {
        b.to_async(&rt).iter(|| async {
            let tasks = (0..TASKS).map(|_| {
                let mut conn = raw.clone();
                let raw_key = raw_key.clone();
                tokio::spawn(async move {
                    for _ in 0..OPS_PER_TASK {
                        let v: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(&raw_key)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        black_box(v);
                    }
                })
            });
            join_all(tasks).await
        })
    });
    // The same, plus the JSON decoding every kvtower get does: what is left
    // between this and `kvtower` is the store's own overhead.
    g.bench_function("raw_redis_plus_json_decode", |b| {
        b.to_async(&rt).iter(|| async {
            let tasks = (0..TASKS).map(|_| {
                let mut conn = raw.clone();
                let raw_key = raw_key.clone();
                tokio::spawn(async move {
                    for _ in 0..OPS_PER_TASK {
                        let v: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(&raw_key)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        let v: Option<Value> = v.map(|v| serde_json::from_slice(&v).unwrap());
                        black_box(v);
                    }
                })
            });
            join_all(tasks).await
        })
    });
    g.finish();

    let mut g = c.benchmark_group("redis/get_many_100");
    g.bench_function("kvtower_get_many", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get_many(&batch).await.unwrap()) })
    });
    g.bench_function("raw_mget", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = raw.clone();
            let v: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&raw_batch)
                .query_async(&mut conn)
                .await
                .unwrap();
            black_box(v)
        })
    });
    g.bench_function("raw_100_sequential_gets", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = raw.clone();
            for k in &raw_batch {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(k)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(v);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, redis_bench);
criterion_main!(benches);
