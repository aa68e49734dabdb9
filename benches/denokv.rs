//! `DenoKvStore` on a database file against raw `denokv_sqlite` doing the
//! same reads and writes, in one run, so the store's overhead is a ratio.
//! The raw side skips what the store adds: key and V8 value encoding, the
//! expiry filter, and (for `get`) the read through its own connection.
//!
//! `cargo bench --bench denokv --features denokv`

use std::hint::black_box;
use std::num::NonZeroU32;

use criterion::{criterion_group, criterion_main, Criterion};
use denokv_proto::{
    AtomicWrite, Consistency, Key, KeyPart, KvValue, Mutation, MutationKind, ReadRange,
    SnapshotReadOptions,
};
use denokv_sqlite::{Sqlite, SqliteConfig, SqliteNotifier};
use kvtower::{kvkey, DenoKvStore, KvStore, SetOptions};
use rand::SeedableRng;
use serde_json::{json, Value};

fn value() -> Value {
    json!({"name": "Ada Lovelace", "id": 42, "tags": ["math", "engines"]})
}

fn raw_key(part: &str) -> Vec<u8> {
    denokv_proto::encode_key(&Key(vec![
        KeyPart::String("user".into()),
        KeyPart::String(part.into()),
    ]))
    .unwrap()
}

fn denokv(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, raw) = rt.block_on(async {
        let store = DenoKvStore::open(dir.path().join("store.sqlite3")).unwrap();
        let path = dir.path().join("raw.sqlite3");
        let raw = Sqlite::new(
            move || {
                let conn = rusqlite::Connection::open(&path).unwrap();
                let rng: Box<dyn rand::RngCore + Send> =
                    Box::new(rand::rngs::StdRng::from_entropy());
                Ok((conn, rng))
            },
            SqliteNotifier::default(),
            SqliteConfig {
                num_workers: 1,
                batch_timeout: None,
            },
        )
        .unwrap();
        (store, raw)
    });
    // The V8 bytes of the same value, encoded once for the raw side.
    let v8 = v8_bytes();
    let raw_set = |key: Vec<u8>| {
        let bytes = v8.clone();
        let raw = raw.clone();
        async move {
            raw.atomic_write(AtomicWrite {
                checks: vec![],
                mutations: vec![Mutation {
                    key,
                    kind: MutationKind::Set(KvValue::V8(bytes)),
                    expire_at: None,
                }],
                enqueues: vec![],
            })
            .await
            .unwrap()
        }
    };
    let key = kvkey!["user", "42"];
    rt.block_on(async {
        store
            .set(&key, value(), SetOptions::default())
            .await
            .unwrap();
        raw_set(raw_key("42")).await;
    });
    let read = |key: Vec<u8>| ReadRange {
        end: key.iter().copied().chain(Some(0)).collect(),
        start: key,
        limit: NonZeroU32::MIN,
        reverse: false,
    };
    let options = SnapshotReadOptions {
        consistency: Consistency::Strong,
    };

    let mut g = c.benchmark_group("denokv/get_hit");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get(&key).await.unwrap()) })
    });
    g.bench_function("raw_denokv_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                raw.snapshot_read(vec![read(raw_key("42"))], options.clone())
                    .await
                    .unwrap(),
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("denokv/set");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .set(&key, black_box(value()), SetOptions::default())
                .await
                .unwrap()
        })
    });
    g.bench_function("raw_denokv_sqlite", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(raw_set(raw_key("42")).await) })
    });
    g.finish();
}

/// The V8 serialization of [`value`], as V8 itself writes it (version 15).
fn v8_bytes() -> Vec<u8> {
    use v8_valueserializer::{
        DenseArray, Heap, HeapValue, Object, PropertyKey, StringValue, Value as V8, ValueSerializer,
    };
    let mut heap = Heap::default();
    let s = |t: &str| StringValue::new(t.to_owned());
    let tags = heap.insert(HeapValue::DenseArray(DenseArray {
        elements: vec![Some(V8::String(s("math"))), Some(V8::String(s("engines")))],
        properties: vec![],
    }));
    let object = heap.insert(HeapValue::Object(Object {
        properties: vec![
            (
                PropertyKey::String(s("name")),
                V8::String(s("Ada Lovelace")),
            ),
            (PropertyKey::String(s("id")), V8::I32(42)),
            (PropertyKey::String(s("tags")), V8::HeapReference(tags)),
        ],
    }));
    ValueSerializer::default()
        .finish(&heap, &V8::HeapReference(object))
        .unwrap()
}

criterion_group!(benches, denokv);
criterion_main!(benches);
