//! Redis client tracking as a second invalidation source (issue 11, "writes
//! made around kvtower"): a value changed by another Redis client (raw
//! commands, as `redis-cli` or a Node app would send) leaves the front tier,
//! in both key layouts and through a prefix layer; a killed tracking
//! connection or a restarted Redis clears and bypasses the front until
//! tracking is back. Each test runs its own `redis-server` (tests/support),
//! so no other test's tracking clients or writes are involved.

use std::time::{Duration, Instant};

use kvtower::invalidation::RedisClientTracking;
use kvtower::layers::{CacheLayer, Prefix, PrefixLayer};
use kvtower::stores::layout::Layout;
use kvtower::{kvkey, KvKey, KvStore, MemoryKvStore, RedisKvStore, SetOptions};
use serde_json::{json, Value};
use tower::{Layer, ServiceBuilder};

mod support;
use support::RedisServer;

/// Generous: a bound on a healthy machine is milliseconds; this only keeps a
/// broken build from hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// Reads `key` through `store` until it returns `want`; how long that took.
async fn until_reads(store: &dyn KvStore, key: &KvKey, want: Option<Value>) -> Duration {
    let start = Instant::now();
    loop {
        if store.get(key).await.ok() == Some(want.clone()) {
            return start.elapsed();
        }
        assert!(start.elapsed() < PATIENCE, "{key} never read as {want:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads `key` until the front tier keeps it (a fill can race the
/// invalidation Redis pushes for the write that created it).
async fn until_cached(store: &dyn KvStore, front: &MemoryKvStore, key: &KvKey) {
    let start = Instant::now();
    loop {
        store.get(key).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if front.get(key).await.unwrap().is_some() {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{key} never stayed in front");
    }
}

/// The id of the server's one tracking client (`flags` holds `t`).
fn tracking_client(server: &RedisServer) -> Option<String> {
    server.cli(&["CLIENT", "LIST"]).lines().find_map(|line| {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(name).map(str::to_owned))
        };
        field("flags=")
            .filter(|flags| flags.contains('t'))
            .and_then(|_| field("id="))
    })
}

async fn a_foreign_write_leaves_the_front(layout: Layout) {
    let Some(server) = support::private_redis() else {
        return;
    };
    let url = server.url();
    let redis = RedisKvStore::builder()
        .layout(layout)
        .connect(&url)
        .await
        .unwrap();
    let tracking = RedisClientTracking::builder(&url, &redis)
        .prefix(kvkey!["app"])
        .connect()
        .await
        .unwrap();
    let front = MemoryKvStore::new();
    let stack = ServiceBuilder::new()
        .layer(
            CacheLayer::builder(front.clone())
                .front_max_ttl(Duration::from_secs(3600))
                .coherence(tracking.clone())
                .build(),
        )
        .layer(PrefixLayer::new(kvkey!["app"]))
        .service(redis.clone());
    let key = kvkey!["user", "1"];
    let name = redis.redis_key(&Prefix::new((), kvkey!["app"]).inner_key(&key));

    stack
        .set(&key, json!("v1"), SetOptions::default())
        .await
        .unwrap();
    until_cached(&stack, &front, &key).await;

    // Another program overwrites, then deletes, the key.
    server.cli(&["SET", &name, "\"v2\""]);
    let took = until_reads(&stack, &key, Some(json!("v2"))).await;
    println!("{layout:?}: a foreign SET left the front after {took:?}");
    until_cached(&stack, &front, &key).await;
    server.cli(&["DEL", &name]);
    until_reads(&stack, &key, None).await;

    // A key outside the prefix layer is not the cache's: ignored, no panic.
    server.cli(&["SET", &redis.redis_key(&kvkey!["elsewhere"]), "1"]);
    // A flush drops everything.
    stack
        .set(&kvkey!["other"], json!(1), SetOptions::default())
        .await
        .unwrap();
    until_cached(&stack, &front, &kvkey!["other"]).await;
    server.cli(&["FLUSHALL"]);
    until_reads(&stack, &kvkey!["other"], None).await;
    assert!(tracking.is_connected());
}

#[tokio::test]
async fn a_foreign_write_leaves_the_front_in_the_kvtower_layout() {
    a_foreign_write_leaves_the_front(Layout::Kvtower).await;
}

#[tokio::test]
async fn a_foreign_write_leaves_the_front_in_the_fedify_layout() {
    a_foreign_write_leaves_the_front(Layout::Fedify).await;
}

#[tokio::test]
async fn a_killed_tracking_connection_clears_the_front_and_recovers() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let url = server.url();
    let redis = RedisKvStore::connect(&url).await.unwrap();
    let tracking = RedisClientTracking::connect(&url, &redis).await.unwrap();
    let front = MemoryKvStore::new();
    let stack = CacheLayer::builder(front.clone())
        .front_max_ttl(Duration::from_secs(3600))
        .coherence(tracking.clone())
        .build()
        .layer(redis.clone());
    let key = kvkey!["k"];
    let name = redis.redis_key(&key);
    server.cli(&["SET", &name, "1"]);
    until_cached(&stack, &front, &key).await;

    let killed = tracking_client(&server).expect("a tracking client");
    server.cli(&["CLIENT", "KILL", "ID", &killed]);
    // Back on a new connection, with the front cleared (changes made while
    // it was down were never pushed).
    let start = Instant::now();
    while tracking_client(&server).is_none_or(|id| id == killed) || !tracking.is_connected() {
        assert!(start.elapsed() < PATIENCE, "tracking never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(front.get(&key).await.unwrap(), None);
    // And it tracks again.
    until_cached(&stack, &front, &key).await;
    server.cli(&["SET", &name, "2"]);
    until_reads(&stack, &key, Some(json!(2))).await;
}

#[tokio::test]
async fn while_redis_is_down_the_front_is_bypassed() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let url = server.url();
    let redis = RedisKvStore::connect(&url).await.unwrap();
    let tracking = RedisClientTracking::builder(&url, &redis)
        .heartbeat(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let front = MemoryKvStore::new();
    let stack = CacheLayer::builder(front.clone())
        .front_max_ttl(Duration::from_secs(3600))
        .coherence(tracking.clone())
        .build()
        .layer(redis.clone());
    let key = kvkey!["k"];
    server.cli(&["SET", &redis.redis_key(&key), "1"]);
    until_cached(&stack, &front, &key).await;

    server.kill();
    let start = Instant::now();
    while tracking.is_connected() {
        assert!(start.elapsed() < PATIENCE, "the loss was never noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Not served from the front, which may be stale: the inner store is
    // down, so the read fails instead.
    assert!(stack.get(&key).await.is_err());
    assert_eq!(front.get(&key).await.unwrap(), None);

    server.restart();
    tokio::time::timeout(PATIENCE, tracking.wait_connected())
        .await
        .expect("tracking is back");
    server.cli(&["SET", &redis.redis_key(&key), "3"]);
    until_reads(&stack, &key, Some(json!(3))).await;
}

#[tokio::test]
async fn zero_settings_and_bad_urls_are_config_errors() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let redis = RedisKvStore::connect(&server.url()).await.unwrap();
    let err = RedisClientTracking::builder(server.url(), &redis)
        .heartbeat(Duration::ZERO)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), kvtower::ErrorKind::Config, "{err}");
    let err = RedisClientTracking::connect("redis://user:s3cret@[bad", &redis)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), kvtower::ErrorKind::Config, "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
}

/// The staleness bound of tracking, measured next to the bus's
/// (tests/coherence.rs): how long after another client's `SET` returned the
/// cache first reads the new value, over 200 writes. Printed; the assertion
/// is only a generous ceiling for a loaded machine (BENCHMARKS.md records
/// the figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_after_a_foreign_write() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let url = server.url();
    let redis = RedisKvStore::connect(&url).await.unwrap();
    let tracking = RedisClientTracking::connect(&url, &redis).await.unwrap();
    let front = MemoryKvStore::new();
    let stack = CacheLayer::builder(front.clone())
        .front_max_ttl(Duration::from_secs(300))
        .coherence(tracking)
        .build()
        .layer(redis.clone());
    let key = kvkey!["user", "42"];
    let name = redis.redis_key(&key);
    let other = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let set = |i: i32| {
        let cmd = redis::cmd("SET").arg(&name).arg(i.to_string()).clone();
        let mut conn = other.clone();
        async move { cmd.query_async::<()>(&mut conn).await.unwrap() }
    };
    set(0).await;
    until_cached(&stack, &front, &key).await;
    let mut lags = Vec::new();
    for i in 1..=200 {
        // The front holds the previous value (read last round).
        set(i).await;
        lags.push(until_reads(&stack, &key, Some(json!(i))).await);
    }
    lags.sort();
    let at = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
    let (p50, p99, max) = (at(0.5), at(0.99), lags[lags.len() - 1]);
    eprintln!(
        "client tracking staleness over {} foreign writes: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        lags.len()
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
}
