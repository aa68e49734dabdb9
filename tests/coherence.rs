//! Several nodes, one truth: front tiers over one Redis stay coherent through
//! the invalidation bus, across restarts of Redis, in one process and across
//! OS processes.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kvtower::invalidation::RedisInvalidationBus;
use kvtower::layers::CacheLayer;
use kvtower::{kvkey, DynKvStore, KvKey, KvStore, MemoryKvStore, RedisKvStore, SetOptions, Value};
use serde_json::json;
use support::{redis_url, unique_namespace};
use tower::ServiceBuilder;

/// A long front TTL: without the bus, a node would serve a stale value for
/// this long, so a test that passes proves the bus did the work.
const FRONT_TTL: Duration = Duration::from_secs(300);

struct Node {
    store: DynKvStore,
    bus: Option<RedisInvalidationBus>,
}

async fn node(url: &str, namespace: &str, with_bus: bool) -> Node {
    let redis = RedisKvStore::builder()
        .namespace(namespace)
        .timeout(Duration::from_millis(300))
        .connect(url)
        .await
        .unwrap();
    let mut cache = CacheLayer::builder(MemoryKvStore::new()).front_max_ttl(FRONT_TTL);
    let bus = if with_bus {
        let bus = RedisInvalidationBus::builder(url)
            .channel(format!("{namespace}:invalidate"))
            .heartbeat(Duration::from_millis(200))
            .connect()
            .await
            .unwrap();
        cache = cache.invalidation_bus(bus.clone());
        Some(bus)
    } else {
        None
    };
    let store: DynKvStore =
        std::sync::Arc::new(ServiceBuilder::new().layer(cache.build()).service(redis));
    Node { store, bus }
}

/// Polls `store` until `key` reads `want`; returns how long that took.
async fn until_reads(store: &DynKvStore, key: &KvKey, want: &Value, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if store.get(key).await.ok().flatten().as_ref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "{key} did not read {want} within {bound:?}"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_reaches_the_other_front_tier() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let a = node(&redis_url(), &namespace, true).await;
    let b = node(&redis_url(), &namespace, true).await;
    let control = node(&redis_url(), &namespace, false).await;
    let key = kvkey!["user", "42"];

    a.store
        .set(&key, json!(0), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(b.store.get(&key).await.unwrap(), Some(json!(0)));
    assert_eq!(control.store.get(&key).await.unwrap(), Some(json!(0)));

    let mut lags = Vec::new();
    for i in 1..=200 {
        // b holds the previous value in its front tier (it read it last round).
        a.store
            .set(&key, json!(i), SetOptions::default())
            .await
            .unwrap();
        lags.push(until_reads(&b.store, &key, &json!(i), Duration::from_secs(2)).await);
    }
    lags.sort();
    let (p50, p99, max) = (
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags[lags.len() - 1],
    );
    eprintln!(
        "cross-node staleness over {} writes: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        lags.len()
    );
    // The goal is 100 ms; the bound is generous for a loaded 2-core machine.
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");

    // Deletes and cas travel the bus too.
    a.store.delete(&key).await.unwrap();
    let start = Instant::now();
    while b.store.get(&key).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "delete did not reach b"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    b.store
        .set(&key, json!("b"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(a.store.get(&key).await.unwrap(), Some(json!("b")));
    assert!(b
        .store
        .cas(
            &key,
            Some(&json!("b")),
            Some(json!("c")),
            SetOptions::default()
        )
        .await
        .unwrap());
    until_reads(&a.store, &key, &json!("c"), Duration::from_secs(2)).await;

    // Without the bus, a node keeps serving what its front tier holds.
    assert_eq!(
        control.store.get(&key).await.unwrap(),
        Some(json!(0)),
        "control node has no bus"
    );
    assert!(a.bus.as_ref().unwrap().is_connected() && b.bus.as_ref().unwrap().is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_value_after_redis_restarts() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let url = server.url();
    let namespace = unique_namespace();
    let a = node(&url, &namespace, true).await;
    let b = node(&url, &namespace, true).await;
    let b_bus = b.bus.clone().unwrap();
    let key = kvkey!["config", "flag"];
    a.store
        .set(&key, json!("old"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        b.store.get(&key).await.unwrap(),
        Some(json!("old")),
        "b's front holds the old value"
    );

    server.kill();
    let start = Instant::now();
    while b_bus.is_connected() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "b never noticed the lost subscription"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Invalidations may be missed now: b must not answer from its front tier.
    let during = b.store.get(&key).await;
    assert!(during.is_err(), "served {during:?} while Redis was down");

    // Redis comes back (empty: it does not persist), and another writer sets
    // a new value before b has resubscribed: b never hears of that write.
    server.restart();
    let writer = RedisKvStore::builder()
        .namespace(namespace.as_str())
        .connect(&url)
        .await
        .unwrap();
    writer
        .set(&key, json!("new"), SetOptions::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reconnected_at = None;
    loop {
        match b.store.get(&key).await {
            Ok(value) => assert_eq!(
                value,
                Some(json!("new")),
                "b served a value overwritten during the outage"
            ),
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
        if b_bus.is_connected() {
            let at = *reconnected_at.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_millis(500) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the bus did not come back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And the bus works again: a's next write reaches b.
    assert_eq!(b.store.get(&key).await.unwrap(), Some(json!("new")));
    // a's connection died with the server: its first write may fail
    // (retryably) while it reconnects.
    let start = Instant::now();
    while let Err(e) = a
        .store
        .set(&key, json!("newer"), SetOptions::default())
        .await
    {
        assert!(
            e.is_retryable() && start.elapsed() < Duration::from_secs(5),
            "{e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_reads(&b.store, &key, &json!("newer"), Duration::from_secs(2)).await;
}

/// A node process of `examples/coherence_node.rs`.
struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NodeProcess {
    fn spawn(namespace: &str) -> Self {
        // Integration tests live in target/<profile>/deps; cargo builds the
        // examples of the package next to them, in target/<profile>/examples.
        let exe = std::env::current_exe().unwrap();
        let path = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples")
            .join("coherence_node");
        assert!(
            path.exists(),
            "{} is not built: `cargo test --all-features` builds it, or run \
             `cargo build --example coherence_node --features redis` first",
            path.display()
        );
        let mut child = Command::new(path)
            .env("KVTOWER_REDIS_URL", redis_url())
            .env("NODE_NAMESPACE", namespace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_os_processes_stay_coherent() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let mut a = NodeProcess::spawn(&namespace);
    let mut b = NodeProcess::spawn(&namespace);
    assert_eq!(a.send("set k 1"), "ok");
    assert_eq!(b.send("get k"), "value 1"); // now in b's front tier
    let mut lags = Vec::new();
    for i in 2..=51 {
        assert_eq!(a.send(&format!("set k {i}")), "ok");
        let start = Instant::now();
        while b.send("get k") != format!("value {i}") {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "b kept a stale value"
            );
        }
        lags.push(start.elapsed());
    }
    lags.sort();
    eprintln!(
        "cross-process staleness over {} writes: p50 {:?}, p99 {:?}",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99)
    );
}
