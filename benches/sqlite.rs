//! `SqliteKvStore` against raw rusqlite running the same statements on the
//! same kind of database (a WAL file, `synchronous = NORMAL`), in one run.
//!
//! Two raw baselines:
//! * `raw_thread`: a connection owned by its own thread, jobs sent over a
//!   channel and answered on a oneshot, which is what any async application
//!   must do to keep blocking SQLite calls off the executor, and what the
//!   store does. The overhead target is against this one.
//! * `raw_inline`: the statements called directly on the benchmark thread
//!   (blocking the executor), for scale.
//!
//! Both raw baselines serialize values to JSON text and parse them back, as
//! the store does.
//!
//! `cargo bench --bench sqlite -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kvtower::{kvkey, KvKey, KvStore, SetOptions, SqliteKvStore};
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use tokio::sync::oneshot;

fn value() -> Value {
    json!({"name": "Ada Lovelace", "id": 42, "tags": ["math", "engines"]})
}

/// The store's key encoding, for the raw side to use the same bytes (and
/// the same schema, below).
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

const GET: &str = "SELECT v FROM kvtower WHERE k = ?1 AND (expires_at IS NULL OR expires_at > ?2)";
const UPSERT: &str = "INSERT INTO kvtower (k, v, expires_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn raw_connection(path: &PathBuf) -> Connection {
    let conn = Connection::open(path).unwrap();
    let _: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;\
         CREATE TABLE IF NOT EXISTS kvtower (k BLOB PRIMARY KEY NOT NULL, v TEXT NOT NULL, \
         expires_at INTEGER) WITHOUT ROWID;\
         CREATE INDEX IF NOT EXISTS kvtower_expires_at ON kvtower (expires_at) \
         WHERE expires_at IS NOT NULL;",
    )
    .unwrap();
    conn
}

fn raw_get(conn: &Connection, key: &[u8]) -> Option<Value> {
    let mut stmt = conn.prepare_cached(GET).unwrap();
    let mut rows = stmt.query(params![key, now_ms()]).unwrap();
    rows.next()
        .unwrap()
        .map(|row| serde_json::from_str(row.get_ref(0).unwrap().as_str().unwrap()).unwrap())
}

fn raw_set(conn: &Connection, key: &[u8], value: &Value) {
    let text = serde_json::to_string(value).unwrap();
    conn.prepare_cached(UPSERT)
        .unwrap()
        .execute(params![key, text, None::<i64>])
        .unwrap();
}

fn raw_set_many(conn: &mut Connection, entries: &[(Vec<u8>, Value)]) {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    for (key, value) in entries {
        raw_set(&tx, key, value);
    }
    tx.commit().unwrap();
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Raw rusqlite on its own thread, answered over a oneshot.
struct RawThread {
    jobs: mpsc::Sender<Job>,
}

impl RawThread {
    fn new(path: PathBuf) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let mut conn = raw_connection(&path);
            while let Ok(job) = rx.recv() {
                job(&mut conn);
            }
        });
        Self { jobs }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .unwrap();
        rx.await.unwrap()
    }
}

fn sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("kvtower-bench-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = rt
        .block_on(SqliteKvStore::open(dir.join("store.db")))
        .unwrap();
    let raw_thread = RawThread::new(dir.join("raw_thread.db"));
    let mut inline = raw_connection(&dir.join("raw_inline.db"));

    let key = kvkey!["user", "42"];
    let enc = encode(&key);
    rt.block_on(async {
        store
            .set(&key, value(), SetOptions::default())
            .await
            .unwrap();
        let k = enc.clone();
        raw_thread.run(move |c| raw_set(c, &k, &value())).await;
    });
    raw_set(&inline, &enc, &value());

    let mut g = c.benchmark_group("sqlite/get");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get(&key).await.unwrap()) })
    });
    g.bench_function("raw_thread", |b| {
        b.to_async(&rt).iter(|| async {
            let k = enc.clone();
            black_box(raw_thread.run(move |c| raw_get(c, &k)).await)
        })
    });
    g.bench_function("raw_inline", |b| {
        b.iter(|| black_box(raw_get(&inline, &enc)))
    });
    g.finish();

    let mut g = c.benchmark_group("sqlite/set");
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .set(&key, value(), SetOptions::default())
                .await
                .unwrap()
        })
    });
    g.bench_function("raw_thread", |b| {
        b.to_async(&rt).iter(|| async {
            let k = enc.clone();
            let v = value();
            raw_thread.run(move |c| raw_set(c, &k, &v)).await
        })
    });
    g.bench_function("raw_inline", |b| {
        b.iter(|| raw_set(&inline, &enc, &value()))
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
    let mut g = c.benchmark_group("sqlite/set_many_1000");
    g.sample_size(20);
    g.bench_function("kvtower", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .set_many(batch.clone(), SetOptions::default())
                .await
                .unwrap()
        })
    });
    g.bench_function("raw_thread", |b| {
        b.to_async(&rt).iter(|| async {
            let entries = raw_batch.clone();
            raw_thread.run(move |c| raw_set_many(c, &entries)).await
        })
    });
    g.bench_function("raw_inline", |b| {
        b.iter(|| raw_set_many(&mut inline, &raw_batch))
    });
    g.finish();

    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = sqlite
}
criterion_main!(benches);
