//! `MemoryKvStore` against raw `moka::future::Cache` doing the same work, in
//! one run, so the store's overhead is a ratio.
//!
//! `cargo bench --bench memory`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
use moka::future::Cache;
use moka::ops::compute::Op;
use serde_json::{json, Value};

fn value() -> Value {
    json!({"name": "Ada Lovelace", "id": 42, "tags": ["math", "engines"]})
}

fn memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryKvStore::new();
    let raw: Cache<String, Value> = Cache::builder().max_capacity(100_000).build();
    let key = kvkey!["user", "42"];
    let raw_key = String::from("user:42");
    let missing = kvkey!["user", "missing"];
    let raw_missing = String::from("user:missing");
    rt.block_on(async {
        store
            .set(&key, value(), SetOptions::default())
            .await
            .unwrap();
        raw.insert(raw_key.clone(), value()).await;
    });

    let mut g = c.benchmark_group("memory/get_hit");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get(&key).await.unwrap()) })
    });
    g.bench_function("raw_moka", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(raw.get(&raw_key).await) })
    });
    g.finish();

    let mut g = c.benchmark_group("memory/get_miss");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get(&missing).await.unwrap()) })
    });
    g.bench_function("raw_moka", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(raw.get(&raw_missing).await) })
    });
    g.finish();

    let mut g = c.benchmark_group("memory/set");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .set(&key, value(), SetOptions::default())
                .await
                .unwrap()
        })
    });
    g.bench_function("raw_moka_insert", |b| {
        b.to_async(&rt)
            .iter(|| async { raw.insert(raw_key.clone(), value()).await })
    });
    g.bench_function("raw_moka_compute", |b| {
        b.to_async(&rt).iter(|| async {
            let v = value();
            raw.entry_by_ref(&raw_key)
                .and_compute_with(|_| std::future::ready(Op::Put(v)))
                .await
        })
    });
    g.finish();

    let mut g = c.benchmark_group("memory/cas");
    let v = value();
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                store
                    .cas(&key, Some(&v), Some(value()), SetOptions::default())
                    .await
                    .unwrap(),
            )
        })
    });
    g.bench_function("raw_moka_compute", |b| {
        b.to_async(&rt).iter(|| async {
            let new = value();
            raw.entry_by_ref(&raw_key)
                .and_compute_with(|e| {
                    let op = match e {
                        Some(e) if *e.value() == v => Op::Put(new),
                        _ => Op::Nop,
                    };
                    std::future::ready(op)
                })
                .await
        })
    });
    g.finish();
}

criterion_group!(benches, memory);
criterion_main!(benches);
