//! A `CacheAside::get_or_set` that hits the front tier, side by side with a
//! plain `get` through the same stack and moka's own `get_with` on a hit, in
//! one run.
//!
//! `cargo bench --bench aside -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kvtower::aside::{CacheAside, EntryOptions};
use kvtower::layers::CacheLayer;
use kvtower::{kvkey, DynKvStore, KvKey, KvStore, MemoryKvStore};
use moka::future::Cache;
use serde_json::{json, Value};
use tower::ServiceBuilder;

fn aside(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let value = json!({"name": "Ada Lovelace", "id": 42, "tags": ["math", "engines"]});
    let key = kvkey!["user", "42"];
    // The stack: a memory front tier over a memory inner store (over Redis
    // in production; a hit never reaches it).
    let stack: DynKvStore = std::sync::Arc::new(
        ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryKvStore::new()))
            .service(MemoryKvStore::new()),
    );
    let facade = CacheAside::builder(stack.clone())
        .default_options(EntryOptions::new().ttl(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let options = facade.options();
    let moka: Cache<KvKey, Value> = Cache::builder().max_capacity(100_000).build();
    rt.block_on(async {
        let v = value.clone();
        facade
            .get_or_set(
                &key,
                options,
                move || async move { Ok::<_, std::io::Error>(v) },
            )
            .await
            .unwrap();
        moka.insert(key.clone(), value.clone()).await;
    });
    assert!(rt.block_on(stack.get(&key)).unwrap().is_some());

    let mut group = c.benchmark_group("aside_hit");
    group.bench_function("get_or_set", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                facade
                    .get_or_set(&key, options, || async {
                        Ok::<_, std::io::Error>(Value::Null)
                    })
                    .await
                    .unwrap(),
            )
        })
    });
    group.bench_function("stack_get", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(stack.get(&key).await.unwrap()) })
    });
    group.bench_function("moka_get_with", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(moka.get_with(key.clone(), async { Value::Null }).await) })
    });
    group.finish();
}

criterion_group!(benches, aside);
criterion_main!(benches);
