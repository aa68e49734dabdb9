//! A front-tier hit through metrics + prefix + default TTL + cache layers,
//! against a raw moka get of the same value, the bare `MemoryKvStore` get, and
//! one raw Redis GET round trip, in one run.
//!
//! `cargo bench --bench layers`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kvtower::layers::{CacheLayer, DefaultTtlLayer, MetricsLayer, PrefixLayer};
use kvtower::{kvkey, KvKey, KvStore, MemoryKvStore, SetOptions};
use moka::future::Cache;
use serde_json::{json, Value};
use tower::ServiceBuilder;

/// The object of benches/memory.rs, and a small value whose clone is cheap,
/// so the layers' own cost shows.
fn values() -> [(&'static str, Value); 2] {
    [
        (
            "object",
            json!({"name": "Ada Lovelace", "id": 42, "tags": ["math", "engines"]}),
        ),
        ("small", json!(42)),
    ]
}

fn stack(name: &str) -> impl KvStore {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(name))
        .layer(PrefixLayer::new(kvkey!["app", "v1"]))
        .layer(DefaultTtlLayer::new(Duration::from_secs(3600)))
        .layer(CacheLayer::builder(MemoryKvStore::new()).name(name).build())
        .service(MemoryKvStore::new())
}

/// The same layers in the order `kvtower::layers` recommends for speed: the
/// prefix inside the cache, so a front hit skips rewriting the key.
fn stack_prefix_inside(name: &str) -> impl KvStore {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(name))
        .layer(DefaultTtlLayer::new(Duration::from_secs(3600)))
        .layer(CacheLayer::builder(MemoryKvStore::new()).name(name).build())
        .layer(PrefixLayer::new(kvkey!["app", "v1"]))
        .service(MemoryKvStore::new())
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = kvkey!["user", "42"];
    let prefixed = kvkey!["app", "v1", "user", "42"];

    // Without a recorder (metric handles are no-ops), then with the
    // Prometheus recorder installed (handles are real atomics).
    let stack_noop = stack("bench-noop");
    let inside_noop = stack_prefix_inside("bench-inside-noop");
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let stack_prometheus = stack("bench-prometheus");
    let inside_prometheus = stack_prefix_inside("bench-inside-prometheus");

    let url =
        std::env::var("KVTOWER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis_key = format!("kvtower:bench:layers:{}", std::process::id());
    let connection = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).ok()?;
        client.get_multiplexed_async_connection().await.ok()
    });
    if connection.is_none() {
        eprintln!("no Redis at {url}: raw_redis_get skipped");
    }

    for (label, value) in values() {
        let memory = MemoryKvStore::new();
        let raw: Cache<KvKey, Value> = Cache::builder().max_capacity(100_000).build();
        rt.block_on(async {
            for s in [
                &stack_noop as &dyn KvStore,
                &stack_prometheus,
                &inside_noop,
                &inside_prometheus,
            ] {
                s.set(&key, value.clone(), SetOptions::default())
                    .await
                    .unwrap();
                // A front hit from now on.
                assert_eq!(s.get(&key).await.unwrap(), Some(value.clone()));
            }
            memory
                .set(&prefixed, value.clone(), SetOptions::default())
                .await
                .unwrap();
            raw.insert(prefixed.clone(), value.clone()).await;
        });

        let mut g = c.benchmark_group(format!("layers/front_hit/{label}"));
        g.bench_function("raw_moka", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(raw.get(&prefixed).await) })
        });
        g.bench_function("memory_store", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(memory.get(&prefixed).await.unwrap()) })
        });
        g.bench_function("stack_no_recorder", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(stack_noop.get(&key).await.unwrap()) })
        });
        g.bench_function("stack_prometheus", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(stack_prometheus.get(&key).await.unwrap()) })
        });
        g.bench_function("stack_prefix_inside_no_recorder", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(inside_noop.get(&key).await.unwrap()) })
        });
        g.bench_function("stack_prefix_inside_prometheus", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(inside_prometheus.get(&key).await.unwrap()) })
        });
        // One Redis round trip: a raw redis-rs GET of the same value's JSON.
        if let Some(conn) = &connection {
            rt.block_on(async {
                let mut conn = conn.clone();
                let _: () = redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(value.to_string())
                    .arg("EX")
                    .arg(600)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            });
            g.bench_function("raw_redis_get", |b| {
                b.to_async(&rt).iter(|| {
                    let mut conn = conn.clone();
                    let redis_key = redis_key.clone();
                    async move {
                        let text: String = redis::cmd("GET")
                            .arg(&redis_key)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        black_box(text)
                    }
                })
            });
        }
        g.finish();
    }
    if let Some(conn) = &connection {
        rt.block_on(async {
            let mut conn = conn.clone();
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(&redis_key)
                .query_async(&mut conn)
                .await;
        });
    }
}

criterion_group!(benches, layers);
criterion_main!(benches);
