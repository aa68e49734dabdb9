//! The callgrind driver of `bench/callgrind.sh`: one contender doing `n`
//! operations of one kind on a single-threaded runtime, so that
//! `(Ir(2n) - Ir(n)) / n` is the instructions of one operation (setup, warm-up
//! and the runtime's start cancel out).
//!
//! ```text
//! callgrind prepare URL                 # write the keys every contender reads (run natively, once)
//! callgrind run URL CONTENDER OP N      # OP: hit | miss | redis
//! callgrind rounds URL                  # Redis commands per cold CacheAside::get_or_set
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
        _ => {
            eprintln!("usage: callgrind prepare URL | run URL CONTENDER OP N | rounds URL");
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
    let keys = HOT.max(COLD);
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

/// Redis commands served for one cold `get_or_set` over the stack, with and
/// without the fleet-wide lease.
async fn rounds(url: &str) {
    for lease in [true, false] {
        let redis = redis_store(url, if lease { "rounds-lease" } else { "rounds" }).await;
        let builder = CacheAside::builder(stack(redis));
        let aside = if lease { builder } else { builder.no_lease() }
            .build()
            .expect("aside");
        // A key no earlier run wrote.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = kvtower::kvkey!["cold", nanos.to_string()];
        let before = redis_calls(url).await;
        aside
            .get_or_set(&key, aside.options(), || async {
                Ok::<_, std::io::Error>(value(1))
            })
            .await
            .expect("get_or_set");
        let after = redis_calls(url).await;
        let (total, which) = calls_between(&before, &after);
        println!(
            "cold get_or_set, lease {}: {total} Redis commands ({which})",
            if lease { "on" } else { "off" },
        );
    }
}
