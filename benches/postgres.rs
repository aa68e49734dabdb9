//! `PostgresKvStore` against raw tokio-postgres through a deadpool pool
//! running the same statements (prepared and cached the same way), in one
//! run, on the server at `KVTOWER_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). The raw side serializes values
//! to JSON text and parses them back, as the store does.
//!
//! `cargo bench --bench postgres --features postgres -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kvtower::stores::postgres::deadpool_postgres::{tokio_postgres, Manager, Pool};
use kvtower::{kvkey, KvKey, KvStore, PostgresKvStore, SetOptions};
use serde_json::{json, Value};

fn url() -> String {
    std::env::var("KVTOWER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn value() -> Value {
    json!({"name": "Ada Lovelace", "id": 42, "tags": ["math", "engines"]})
}

/// The store's key encoding, for the raw side to use the same bytes.
fn encode(key: &KvKey) -> Vec<u8> {
    let mut out = Vec::new();
    for part in key.parts() {
        for &b in part.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
        out.extend_from_slice(&[0, 1]);
    }
    out
}

const NOW: &str = "(extract(epoch from statement_timestamp()) * 1000)::bigint";

struct Raw {
    pool: Pool,
    get: String,
    upsert: String,
    set_many: String,
}

impl Raw {
    fn new(table: &str) -> Self {
        let config: tokio_postgres::Config = url().parse().unwrap();
        let pool = Pool::builder(Manager::new(config, tokio_postgres::NoTls))
            .max_size(16)
            .build()
            .unwrap();
        let t = format!("\"{table}\"");
        let tail = "ON CONFLICT (key) DO UPDATE \
                    SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at";
        Self {
            pool,
            get: format!(
                "SELECT value::text FROM {t} WHERE key = $1 \
                 AND (expires_at IS NULL OR expires_at > {NOW})"
            ),
            upsert: format!(
                "INSERT INTO {t} (key, value, expires_at) \
                 VALUES ($1, $2::text::json, {NOW} + $3::bigint) {tail}"
            ),
            set_many: format!(
                "INSERT INTO {t} (key, value, expires_at) \
                 SELECT k, v::json, {NOW} + $3::bigint FROM unnest($1::bytea[], $2::text[]) \
                 AS u(k, v) {tail}"
            ),
        }
    }

    async fn get(&self, key: &[u8]) -> Option<Value> {
        let client = self.pool.get().await.unwrap();
        let stmt = client.prepare_cached(&self.get).await.unwrap();
        let row = client.query_opt(&stmt, &[&key]).await.unwrap();
        row.map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
    }

    async fn set(&self, key: &[u8], value: &Value) {
        let client = self.pool.get().await.unwrap();
        let stmt = client.prepare_cached(&self.upsert).await.unwrap();
        let text = serde_json::to_string(value).unwrap();
        client
            .execute(&stmt, &[&key, &text, &None::<i64>])
            .await
            .unwrap();
    }

    async fn set_many(&self, entries: &[(Vec<u8>, Value)]) {
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
        let texts: Vec<String> = entries
            .iter()
            .map(|(_, v)| serde_json::to_string(v).unwrap())
            .collect();
        let client = self.pool.get().await.unwrap();
        let stmt = client.prepare_cached(&self.set_many).await.unwrap();
        client
            .execute(&stmt, &[&keys, &texts, &None::<i64>])
            .await
            .unwrap();
    }
}

fn postgres(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pid = std::process::id();
    let store_table = format!("kv_bench_store_{pid}");
    let raw_table = format!("kv_bench_raw_{pid}");
    // The raw side's table is created by a store with the same schema.
    let (store, raw) = rt.block_on(async {
        let store = PostgresKvStore::builder()
            .table(&store_table)
            .connect(&url())
            .await
            .unwrap();
        PostgresKvStore::builder()
            .table(&raw_table)
            .no_sweep()
            .connect(&url())
            .await
            .unwrap();
        (store, Raw::new(&raw_table))
    });

    let key = kvkey!["user", "42"];
    let enc = encode(&key);
    rt.block_on(async {
        store
            .set(&key, value(), SetOptions::default())
            .await
            .unwrap();
        raw.set(&enc, &value()).await;
    });

    let mut g = c.benchmark_group("postgres/get");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get(&key).await.unwrap()) })
    });
    g.bench_function("raw_tokio_postgres", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(raw.get(&enc).await) })
    });
    g.finish();

    let mut g = c.benchmark_group("postgres/set");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .set(&key, value(), SetOptions::default())
                .await
                .unwrap()
        })
    });
    g.bench_function("raw_tokio_postgres", |b| {
        b.to_async(&rt)
            .iter(|| async { raw.set(&enc, &value()).await })
    });
    g.finish();

    let batch: Vec<(KvKey, Value)> = (0..1_000)
        .map(|i| {
            (
                kvkey!["batch", format!("{i:04}")],
                json!({"i": i, "name": "Ada"}),
            )
        })
        .collect();
    let raw_batch: Vec<(Vec<u8>, Value)> =
        batch.iter().map(|(k, v)| (encode(k), v.clone())).collect();
    let mut g = c.benchmark_group("postgres/set_many_1000");
    g.sample_size(20);
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .set_many(batch.clone(), SetOptions::default())
                .await
                .unwrap()
        })
    });
    g.bench_function("raw_tokio_postgres", |b| {
        b.to_async(&rt).iter(|| async {
            let entries = raw_batch.clone();
            raw.set_many(&entries).await
        })
    });
    g.finish();

    rt.block_on(async {
        let client = raw.pool.get().await.unwrap();
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS \"{store_table}\"; DROP TABLE IF EXISTS \"{raw_table}\";"
            ))
            .await
            .unwrap();
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = postgres
}
criterion_main!(benches);
