//! The callgrind driver of `bench/callgrind.sh`: one contender doing `n`
//! operations of one kind on a single-threaded runtime, so that
//! `(Ir(2n) - Ir(n)) / n` is the instructions of one operation (setup, warm-up
//! and the runtime's start cancel out).
//!
//! ```text
//! callgrind prepare URL                 # write the keys every contender reads (run natively, once)
//! callgrind run URL CONTENDER OP N      # OP: hit | miss | redis
//! callgrind rounds URL                  # round trips and Redis commands per cold CacheAside::get_or_set
//! callgrind breaker URL                 # latency of a call while the circuit breaker is open
//! ```

use std::hint::black_box;
use std::sync::Arc;

use kvtower::aside::CacheAside;
use kvtower::{KvStore, MemoryKvStore};
use kvtower_hitpath::{
    calls_between, front, preload, redis_calls, redis_store, stack, stack_per_entry_expiry,
    stack_plain_fills, value, Contender, Floor, Kv, MokaOnly, REDIS_TTL,
};
use serde_json::Value;

#[path = "../peers/mod.rs"]
mod peers;

/// Keys every hit run cycles over (all in the front after the warm-up).
const HOT: usize = 1_000;
/// Keys prepared in Redis for the miss runs (each read once: N + 2N at most).
const COLD: usize = 6_000;
/// Keys written before a `hit_full` run: more than a front holds.
const FULL: usize = 12_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["prepare", url] => runtime.block_on(prepare(url)),
        ["run", url, contender, op, n] => {
            let n: usize = n.parse().expect("N");
            runtime.block_on(run(url, contender, op, n));
        }
        ["rounds", url] => runtime.block_on(rounds(url)),
        ["breaker", url] => runtime.block_on(breaker(url)),
        _ => {
            eprintln!(
                "usage: callgrind prepare URL | run URL CONTENDER OP N | rounds URL | breaker URL"
            );
            std::process::exit(2);
        }
    }
}

async fn prepare(url: &str) {
    let keys = HOT.max(COLD);
    preload(&Arc::new(Floor::connect(url, keys).await), keys).await;
    preload(
        &Arc::new(Kv::new(stack(redis_store(url, "kv").await), keys)),
        keys,
    )
    .await;
    preload(&Arc::new(peers::Amalgam::connect(url, keys).await), keys).await;
    preload(&Arc::new(peers::MultiTier::connect(url, keys).await), keys).await;
    // CacheAside's entries, so that a measured run only reads them.
    let kv = Kv::new(stack(redis_store(url, "aside").await), HOT);
    let aside = CacheAside::builder(kv.store).build().expect("aside");
    for (i, key) in kv.keys.iter().enumerate() {
        aside
            .get_or_set(key, aside.options().ttl(REDIS_TTL), move || async move {
                Ok::<_, std::io::Error>(value(i))
            })
            .await
            .expect("get_or_set");
    }
}

/// Reads `n` keys: the hot ones cyclically (hits), or each cold key once
/// (front misses), after one warm-up pass over the hot keys.
async fn reads<C: Contender>(contender: C, op: &str, n: usize) {
    match op {
        "hit" => {
            for i in 0..HOT {
                assert!(contender.read(i).await);
            }
            for j in 0..n {
                assert!(contender.read(j % HOT).await);
            }
        }
        // Hits on a full front: every contender's front is first filled past
        // its capacity by writes, as in the criterion bench, whose preload
        // writes ten times what a front holds.
        "hit_full" => {
            for i in 0..FULL {
                contender.write(i, &value(i)).await;
            }
            for i in 0..HOT {
                assert!(contender.read(i).await);
            }
            for j in 0..n {
                assert!(contender.read(j % HOT).await);
            }
        }
        "miss" => {
            assert!(n <= COLD);
            for i in 0..n {
                assert!(contender.read(i).await);
            }
        }
        _ => panic!("unknown op {op}"),
    }
}

/// A contender that only has a front (nothing behind it): filled before the
/// run.
async fn front_hits<C: Contender>(contender: C, n: usize) {
    for i in 0..HOT {
        contender.write(i, &value(i)).await;
    }
    for i in 0..HOT {
        assert!(contender.read(i).await);
    }
    for j in 0..n {
        assert!(contender.read(j % HOT).await);
    }
}

/// `moka::future::Cache::get_with` of a key it holds.
async fn moka_get_with<V: Clone + Send + Sync + 'static>(wrap: fn(Value) -> V, n: usize) {
    let moka = MokaOnly::<V>::new(HOT);
    for i in 0..HOT {
        black_box(moka.get_with(i, || wrap(value(i))).await);
    }
    for j in 0..n {
        black_box(moka.get_with(j % HOT, || unreachable!("a hit")).await);
    }
}

async fn run(url: &str, contender: &str, op: &str, n: usize) {
    let keys = HOT.max(COLD).max(FULL);
    match (contender, op) {
        ("floor", _) => reads(Floor::connect(url, keys).await, op, n).await,
        ("stack", _) => reads(Kv::new(stack(redis_store(url, "kv").await), keys), op, n).await,
        ("stack_plain_fills", _) => {
            let store = stack_plain_fills(redis_store(url, "kv").await);
            reads(Kv::new(store, keys), op, n).await;
        }
        ("stack_per_entry_expiry", _) => {
            let store = stack_per_entry_expiry(redis_store(url, "kv").await);
            reads(Kv::new(store, keys), op, n).await;
        }
        ("amalgam", _) => reads(peers::Amalgam::connect(url, keys).await, op, n).await,
        ("multitier", _) => reads(peers::MultiTier::connect(url, keys).await, op, n).await,
        // The stack read with the deep-copying `get` instead of `get_shared`.
        ("stack_get", "hit") => {
            let kv = Kv::new(stack(redis_store(url, "kv").await), keys);
            for i in 0..HOT {
                assert!(kv.read(i).await);
            }
            for j in 0..n {
                black_box(kv.store.get(&kv.keys[j % HOT]).await.expect("get"));
            }
        }
        ("memory", "hit") => front_hits(Kv::new(MemoryKvStore::new(), HOT), n).await,
        // The bench's front: `max_ttl`, a global moka TTL as the floor's.
        ("memory_front", "hit") => front_hits(Kv::new(front(), HOT), n).await,
        ("moka_arc", "hit") => front_hits(MokaArc(MokaOnly::new(HOT)), n).await,
        ("moka_value", "hit") => front_hits(MokaValue(MokaOnly::new(HOT)), n).await,
        ("moka_get_with_arc", "hit") => moka_get_with(Arc::new, n).await,
        ("moka_get_with_value", "hit") => moka_get_with(|v| v, n).await,
        ("aside", "hit") => {
            let kv = Kv::new(stack(redis_store(url, "aside").await), HOT);
            let aside = CacheAside::builder(kv.store).build().expect("aside");
            let options = aside.options().ttl(REDIS_TTL);
            for round in 0..=1 {
                let count = if round == 0 { HOT } else { n };
                for j in 0..count {
                    let i = j % HOT;
                    let got = aside
                        .get_or_set(&kv.keys[i], options, move || async move {
                            Ok::<_, std::io::Error>(value(i))
                        })
                        .await
                        .expect("get_or_set");
                    black_box(got);
                }
            }
        }
        ("raw", "redis") => {
            let floor = Floor::connect(url, keys).await;
            for j in 0..n {
                black_box(floor.redis_get(j % HOT).await.expect("held"));
            }
        }
        ("kvtower", "redis") | ("kvtower_shared", "redis") | ("kvtower_ttl", "redis") => {
            // The stack's keys as the Redis store alone sees them (the
            // prefix layer's stored form, `["~app", "user", i]`).
            let redis = redis_store(url, "kv").await;
            let prefix = kvtower::layers::Prefix::new((), kvtower::kvkey!["app"]);
            let keys: Vec<_> = (0..HOT)
                .map(|i| prefix.inner_key(&kvtower::kvkey!["user", i.to_string()]))
                .collect();
            for j in 0..n {
                let key = &keys[j % HOT];
                match contender {
                    "kvtower" => {
                        black_box(redis.get(key).await.expect("get").expect("held"));
                    }
                    "kvtower_ttl" => {
                        let found = redis.get_with_ttl(key).await.expect("get_with_ttl");
                        black_box(found.expect("held"));
                    }
                    _ => {
                        black_box(redis.get_shared(key).await.expect("get").expect("held"));
                    }
                }
            }
        }
        _ => panic!("unknown contender/op {contender} {op}"),
    }
}

/// Raw moka of `Arc<Value>` as a front-only contender.
struct MokaArc(MokaOnly<Arc<Value>>);

impl Contender for MokaArc {
    async fn read(&self, i: usize) -> bool {
        let found = self.0.front.get(&self.0.keys[i]).await;
        black_box(&found);
        found.is_some()
    }
    async fn write(&self, i: usize, value: &Value) {
        self.0
            .front
            .insert(self.0.keys[i].clone(), Arc::new(value.clone()))
            .await;
    }
}

/// Raw moka of `Value` (a deep clone per hit) as a front-only contender.
struct MokaValue(MokaOnly<Value>);

impl Contender for MokaValue {
    async fn read(&self, i: usize) -> bool {
        let found = self.0.front.get(&self.0.keys[i]).await;
        black_box(&found);
        found.is_some()
    }
    async fn write(&self, i: usize, value: &Value) {
        self.0
            .front
            .insert(self.0.keys[i].clone(), value.clone())
            .await;
    }
}

/// One-way delay the `rounds` proxy adds to every chunk it forwards.
const HOP: std::time::Duration = std::time::Duration::from_millis(25);

/// Round trips a cold `get_or_set` over the stack waits for, and the Redis
/// commands it causes in all, with and without the fleet-wide lease and
/// `background_write`. The stack talks to Redis through a proxy that delays
/// every chunk by `HOP` each way, so a call waiting for `k` round trips
/// takes about `k * 2 * HOP` (loopback and the work itself are well under
/// a millisecond); commands are `INFO commandstats` deltas read directly
/// from Redis once the load is done.
async fn rounds(url: &str) {
    let proxy = proxy(url, HOP, Arc::default()).await;
    for (lease, background) in [(false, false), (true, false), (false, true), (true, true)] {
        let namespace = format!("rounds-{lease}-{background}");
        let redis = redis_store(&proxy, &namespace).await;
        let builder = CacheAside::builder(stack(redis));
        let aside = if lease { builder } else { builder.no_lease() }
            .build()
            .expect("aside");
        let options = aside.options().background_write(background);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Warm: the connection is up and every script is loaded.
        for warm in ["warm-a", "warm-b"] {
            let key = kvtower::kvkey![warm, nanos.to_string()];
            aside
                .get_or_set(&key, options, || async {
                    Ok::<_, std::io::Error>(value(0))
                })
                .await
                .expect("warm-up");
        }
        tokio::time::sleep(8 * HOP).await;
        // A key no earlier run wrote.
        let key = kvtower::kvkey!["cold", nanos.to_string()];
        let before = redis_calls(url).await;
        let start = std::time::Instant::now();
        aside
            .get_or_set(&key, options, || async {
                Ok::<_, std::io::Error>(value(1))
            })
            .await
            .expect("get_or_set");
        let waited = start.elapsed();
        // Let a background write and the release land before counting.
        tokio::time::sleep(8 * HOP).await;
        let after = redis_calls(url).await;
        let (total, which) = calls_between(&before, &after);
        println!(
            "cold get_or_set, lease {}, background_write {}: waited {:.1} round trips ({waited:.1?} at {:?} each); \
             {total} Redis commands in all ({which})",
            if lease { "on" } else { "off" },
            if background { "on" } else { "off" },
            waited.as_secs_f64() / (2 * HOP).as_secs_f64(),
            2 * HOP,
        );
    }
}

/// Calls timed while the breaker is open.
const OPEN_CALLS: usize = 100_000;

/// The latency of a `get` through `CircuitBreakerLayer` over Redis while the
/// breaker is open: Redis stops answering (the proxy drops everything, as a
/// paused or partitioned server would), the store's 100 ms timeouts open
/// the breaker, then `OPEN_CALLS` calls are timed one by one.
async fn breaker(url: &str) {
    use kvtower::layers::{BreakerState, CircuitBreakerLayer};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let black_hole = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let proxy = proxy(url, Duration::ZERO, black_hole.clone()).await;
    let redis = kvtower::RedisKvStore::builder()
        .namespace("breaker")
        .timeout(Duration::from_millis(100))
        .connect(&proxy)
        .await
        .expect("connect to redis");
    let layer = CircuitBreakerLayer::builder("redis")
        .failure_threshold(3)
        .cooldown(Duration::from_secs(600))
        .build();
    let store = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(redis);
    let key = kvtower::kvkey!["k"];
    store.get(&key).await.expect("Redis answers");
    black_hole.store(true, Ordering::SeqCst);
    let mut failed = 0;
    while layer.state() != BreakerState::Open {
        assert!(store.get(&key).await.is_err(), "a call reached Redis");
        failed += 1;
    }
    let mut took = Vec::with_capacity(OPEN_CALLS);
    for _ in 0..OPEN_CALLS {
        let start = Instant::now();
        let result = store.get(black_box(&key)).await;
        took.push(start.elapsed());
        let err = result.expect_err("open: fails fast");
        assert_eq!(err.kind(), kvtower::ErrorKind::Unavailable);
    }
    took.sort();
    let at = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
    println!(
        "breaker open after {failed} timed-out calls; {OPEN_CALLS} calls while open: \
         p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0),
    );
}

/// A TCP proxy in front of the Redis at `url` that holds every chunk for
/// `hop` before forwarding it, in both directions, and drops every chunk
/// while `black_hole` is set. Returns its URL.
async fn proxy(
    url: &str,
    hop: std::time::Duration,
    black_hole: Arc<std::sync::atomic::AtomicBool>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = url
        .strip_prefix("redis://")
        .expect("a redis:// URL")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        hop: std::time::Duration,
        black_hole: Arc<std::sync::atomic::AtomicBool>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if black_hole.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            if !hop.is_zero() {
                tokio::time::sleep(hop).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    }
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, black_hole) = (target.clone(), black_hole.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, hop, black_hole.clone()));
                pipe(server_read, client_write, hop, black_hole).await;
            });
        }
    });
    format!("redis://{addr}")
}
