//! `CacheAside` against real Redis (the shared one, in a namespace of its
//! own, and private `redis-server`s that tests kill), and over the memory
//! store with a paused clock where only the timing logic is under test.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtower::aside::{CacheAside, EntryOptions};
use kvtower::layers::{BreakerState, CacheLayer, CircuitBreakerLayer};
use kvtower::{kvkey, DynKvStore, ErrorKind, KvStore, MemoryKvStore, RedisKvStore, Value};
use serde_json::json;
use support::{redis_url, unique_namespace, NamespaceGuard};
use tower::ServiceBuilder;

async fn redis_at(url: &str, namespace: &str) -> RedisKvStore {
    RedisKvStore::builder()
        .namespace(namespace)
        .timeout(Duration::from_millis(500))
        .connect(url)
        .await
        .expect("connect to Redis")
}

/// A stack as an application would build it: a front tier over Redis.
async fn stack(url: &str, namespace: &str) -> DynKvStore {
    Arc::new(
        ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryKvStore::new()))
            .service(redis_at(url, namespace).await),
    )
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A loader that counts its calls and the most that ran at once.
#[derive(Clone, Default)]
struct Loads {
    calls: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Loads {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn loader(
        &self,
        delay: Duration,
        value: Value,
    ) -> impl FnOnce() -> futures::future::BoxFuture<'static, Result<Value, std::io::Error>>
           + Send
           + 'static {
        let me = self.clone();
        move || {
            Box::pin(async move {
                me.calls.fetch_add(1, Ordering::SeqCst);
                let now = me.running.fetch_add(1, Ordering::SeqCst) + 1;
                me.max_running.fetch_max(now, Ordering::SeqCst);
                // Counts down also when the load is stopped (dropped).
                let _running = Running(me.running.clone());
                tokio::time::sleep(delay).await;
                Ok(value)
            })
        }
    }

    fn failing(
        &self,
    ) -> impl FnOnce() -> futures::future::BoxFuture<'static, Result<Value, std::io::Error>>
           + Send
           + 'static {
        let me = self.clone();
        move || {
            Box::pin(async move {
                me.calls.fetch_add(1, Ordering::SeqCst);
                Err(std::io::Error::other("the database is down"))
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_calls_run_one_loader() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    let aside = CacheAside::builder(stack(&redis_url(), &namespace).await)
        .build()
        .unwrap();
    let loads = Loads::default();
    let key = kvkey!["user", "1"];
    let calls: Vec<_> = (0..1_000)
        .map(|_| {
            let (aside, key, loader) = (
                aside.clone(),
                key.clone(),
                loads.loader(Duration::from_millis(200), json!("Ada")),
            );
            tokio::spawn(async move { aside.get_or_set(&key, aside.options(), loader).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), json!("Ada"));
    }
    assert_eq!(loads.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stacks_sharing_one_redis_run_one_loader() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(
            CacheAside::builder(stack(&redis_url(), &namespace).await)
                .lease_poll_interval(Duration::from_millis(10))
                .build()
                .unwrap(),
        );
    }
    let loads = Loads::default();
    let key = kvkey!["report", "daily"];
    let calls: Vec<_> = (0..1_000)
        .map(|i| {
            let aside = nodes[i % 4].clone();
            let (key, loader) = (
                key.clone(),
                loads.loader(Duration::from_millis(300), json!(i)),
            );
            tokio::spawn(async move { aside.get_or_set(&key, aside.options(), loader).await })
        })
        .collect();
    let mut values = std::collections::BTreeSet::new();
    for call in calls {
        values.insert(call.await.unwrap().unwrap().to_string());
    }
    assert_eq!(loads.calls(), 1, "one loader across the four stacks");
    assert_eq!(values.len(), 1, "every caller got the one loaded value");
}

/// A node process of `examples/aside_node.rs`.
struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NodeProcess {
    fn spawn(namespace: &str, id: &str, envs: &[(&str, &str)]) -> Self {
        // Integration tests live in target/<profile>/deps; cargo builds the
        // examples of the package next to them, in target/<profile>/examples.
        let exe = std::env::current_exe().unwrap();
        let path = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples")
            .join("aside_node");
        assert!(
            path.exists(),
            "{} is not built: `cargo test --all-features` builds it, or run \
             `cargo build --example aside_node --features redis` first",
            path.display()
        );
        let mut child = Command::new(path)
            .env("KVTOWER_REDIS_URL", redis_url())
            .env("NODE_NAMESPACE", namespace)
            .env("NODE_ID", id)
            .envs(envs.iter().copied())
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

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// Reads lines until `done <loads> <value>`; returns both.
    fn done(&mut self) -> (usize, String) {
        loop {
            let line = self.line();
            if let Some(rest) = line.strip_prefix("done ") {
                let (loads, value) = rest.split_once(' ').unwrap();
                return (loads.parse().unwrap(), value.to_owned());
            }
            assert!(line == "loading", "unexpected line {line:?}");
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_os_processes_run_one_loader() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    let mut a = NodeProcess::spawn(&namespace, "a", &[]);
    let mut b = NodeProcess::spawn(&namespace, "b", &[]);
    a.send("load k 200");
    b.send("load k 200");
    let (a_loads, a_value) = a.done();
    let (b_loads, b_value) = b.done();
    assert_eq!(a_loads + b_loads, 1, "one loader across the two processes");
    assert_eq!(a_value, b_value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_blocks_others_only_for_the_lease_ttl() {
    if support::redis().is_none() {
        return;
    }
    const LEASE: Duration = Duration::from_millis(1_500);
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    let mut holder = NodeProcess::spawn(
        &namespace,
        "holder",
        &[("LEASE_MS", "1500"), ("LOADER_MS", "60000")],
    );
    holder.send("load k 1");
    assert_eq!(holder.line(), "loading");
    let loading_seen = Instant::now();
    drop(holder); // SIGKILL mid-load: its lease stays until the TTL

    let aside = CacheAside::builder(stack(&redis_url(), &namespace).await)
        .lease_ttl(LEASE)
        .lease_poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let loads = Loads::default();
    let started = Arc::new(std::sync::Mutex::new(None));
    let loader = {
        let (started, inner) = (
            started.clone(),
            loads.loader(Duration::from_millis(50), json!("second")),
        );
        move || {
            *started.lock().unwrap() = Some(Instant::now());
            inner()
        }
    };
    let value = aside
        .get_or_set(&kvkey!["k"], aside.options(), loader)
        .await
        .unwrap();
    assert_eq!(value, json!("second"));
    let waited = started.lock().unwrap().unwrap() - loading_seen;
    eprintln!("the second node loaded {waited:?} after the holder started");
    // The holder took the lease just before it printed "loading".
    assert!(
        waited >= LEASE - Duration::from_millis(300),
        "loaded after {waited:?}, while the dead holder's lease was live"
    );
    assert!(waited < LEASE * 3, "waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_holder_is_stopped_at_its_lease_ttl_and_never_two_load_at_once() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    let build = |store| {
        CacheAside::builder(store)
            .lease_ttl(Duration::from_millis(500))
            .lease_poll_interval(Duration::from_millis(10))
            .build()
            .unwrap()
    };
    let a = build(stack(&redis_url(), &namespace).await);
    let b = build(stack(&redis_url(), &namespace).await);
    let loads = Loads::default();
    let key = kvkey!["slow"];
    let slow = loads.loader(Duration::from_secs(5), json!("slow"));
    let first = tokio::spawn({
        let (a, key) = (a.clone(), key.clone());
        async move { a.get_or_set(&key, a.options(), slow).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fast = loads.loader(Duration::from_millis(50), json!("fast"));
    let second = b.get_or_set(&key, b.options(), fast).await.unwrap();
    assert_eq!(second, json!("fast"));
    let first = first.await.unwrap().unwrap_err();
    assert_eq!(first.kind(), ErrorKind::Timeout, "{first}");
    assert_eq!(loads.calls(), 2);
    assert_eq!(loads.max_running.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn fail_safe_serves_stale_and_throttles_the_loader() {
    let aside = CacheAside::builder(MemoryKvStore::new()).build().unwrap();
    let options = EntryOptions::new()
        .ttl(Duration::from_secs(10))
        .fail_safe(Duration::from_secs(3600), Duration::from_secs(5));
    let key = kvkey!["config"];
    let loads = Loads::default();
    let v1 = aside
        .get_or_set(&key, options, loads.loader(Duration::ZERO, json!(1)))
        .await
        .unwrap();
    assert_eq!(v1, json!(1));

    tokio::time::advance(Duration::from_secs(11)).await;
    let failing = Loads::default();
    for _ in 0..5 {
        let value = aside
            .get_or_set(&key, options, failing.failing())
            .await
            .unwrap();
        assert_eq!(value, json!(1), "the stale value");
    }
    assert_eq!(failing.calls(), 1, "not called again within the throttle");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        aside
            .get_or_set(&key, options, failing.failing())
            .await
            .unwrap(),
        json!(1)
    );
    assert_eq!(failing.calls(), 2, "tried again after the throttle");
    // Past the fail-safe maximum nothing stale is left to serve.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(aside
        .get_or_set(&key, options, failing.failing())
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn without_fail_safe_the_loader_error_reaches_the_caller() {
    let aside = CacheAside::builder(MemoryKvStore::new()).build().unwrap();
    let options = EntryOptions::new().ttl(Duration::from_secs(10));
    let key = kvkey!["config"];
    let loads = Loads::default();
    aside
        .get_or_set(&key, options, loads.loader(Duration::ZERO, json!(1)))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    let err = aside
        .get_or_set(&key, options, loads.failing())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    assert!(
        chain.iter().any(|m| m == "the database is down"),
        "the loader's error is in the chain: {chain:?}"
    );
    assert_eq!(
        chain.iter().filter(|m| m.contains("database")).count(),
        1,
        "printed once: {chain:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hard_timeout_bounds_the_wait_and_the_load_completes_in_the_background() {
    let aside = CacheAside::builder(MemoryKvStore::new()).build().unwrap();
    let options = EntryOptions::new().hard_timeout(Duration::from_millis(200));
    let key = kvkey!["slow"];
    let loads = Loads::default();
    let start = tokio::time::Instant::now();
    let err = aside
        .get_or_set(
            &key,
            options,
            loads.loader(Duration::from_secs(2), json!(7)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(aside.get(&key).await.unwrap(), Some(json!(7)));
    assert_eq!(loads.calls(), 1);

    // With a stale value (fail-safe) the hard timeout serves it.
    let options = options.fail_safe(Duration::from_secs(600), Duration::from_secs(1));
    aside.set(&key, json!(8), options).await.unwrap();
    aside.expire(&key).await.unwrap();
    let value = aside
        .get_or_set(
            &key,
            options,
            loads.loader(Duration::from_secs(2), json!(9)),
        )
        .await
        .unwrap();
    assert_eq!(value, json!(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_timeout_returns_stale_and_the_result_lands_in_every_tier() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    let cache = CacheLayer::new(MemoryKvStore::new());
    let store = ServiceBuilder::new()
        .layer(cache.clone())
        .service(redis_at(&redis_url(), &namespace).await);
    let aside = CacheAside::builder(store).build().unwrap();
    let options = EntryOptions::new()
        .fail_safe(Duration::from_secs(600), Duration::from_secs(10))
        .soft_timeout(Duration::from_millis(100));
    let key = kvkey!["price"];
    let loads = Loads::default();
    aside
        .get_or_set(&key, options, loads.loader(Duration::ZERO, json!("old")))
        .await
        .unwrap();
    aside.expire(&key).await.unwrap();

    let start = Instant::now();
    let value = aside
        .get_or_set(
            &key,
            options,
            loads.loader(Duration::from_millis(600), json!("new")),
        )
        .await
        .unwrap();
    let took = start.elapsed();
    eprintln!("soft timeout answered in {took:?}");
    assert_eq!(value, json!("old"));
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(500),
        "{took:?}"
    );

    tokio::time::sleep(Duration::from_millis(900)).await;
    let value_of = |stored: Option<Value>| stored.and_then(|e| e.get("value").cloned());
    let raw = redis_at(&redis_url(), &namespace).await;
    assert_eq!(value_of(raw.get(&key).await.unwrap()), Some(json!("new")));
    assert_eq!(
        value_of(cache.front().get(&key).await.unwrap()),
        Some(json!("new")),
        "the front tier holds the background result"
    );
    assert_eq!(aside.get(&key).await.unwrap(), Some(json!("new")));
    assert_eq!(loads.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_refresh_runs_once_under_concurrent_reads_and_skips_unread_keys() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    let nodes = [
        CacheAside::builder(stack(&redis_url(), &namespace).await)
            .build()
            .unwrap(),
        CacheAside::builder(stack(&redis_url(), &namespace).await)
            .build()
            .unwrap(),
    ];
    let options = EntryOptions::new()
        .ttl(Duration::from_secs(4))
        .eager_refresh(0.5);
    let (read, unread) = (kvkey!["read"], kvkey!["unread"]);
    let (read_loads, unread_loads) = (Loads::default(), Loads::default());
    for (key, loads) in [(&read, &read_loads), (&unread, &unread_loads)] {
        nodes[0]
            .get_or_set(key, options, loads.loader(Duration::ZERO, json!(1)))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let calls: Vec<_> = (0..100)
        .map(|i| {
            let aside = nodes[i % 2].clone();
            let (key, loader) = (
                read.clone(),
                read_loads.loader(Duration::from_secs(1), json!(2)),
            );
            tokio::spawn(async move {
                let start = Instant::now();
                let value = aside.get_or_set(&key, options, loader).await.unwrap();
                (value, start.elapsed())
            })
        })
        .collect();
    for call in calls {
        let (value, took) = call.await.unwrap();
        assert_eq!(value, json!(1), "the cached value, at once");
        assert!(
            took < Duration::from_millis(800),
            "not waiting on the refresh: {took:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(read_loads.calls(), 2, "the load and one refresh");
    assert_eq!(unread_loads.calls(), 1, "an unread key is not refreshed");
    // Whichever node refreshed, the store holds the new value (a node's own
    // front may hold the old one: these stacks have no invalidation bus).
    let reader = CacheAside::builder(redis_at(&redis_url(), &namespace).await)
        .build()
        .unwrap();
    assert_eq!(reader.get(&read).await.unwrap(), Some(json!(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_never_hangs_a_call_for_a_key_in_the_front() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let namespace = unique_namespace();
    let breaker = CircuitBreakerLayer::builder("redis")
        .failure_threshold(2)
        .cooldown(Duration::from_secs(30))
        .build();
    let store = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryKvStore::new()))
        .layer(breaker.clone())
        .service(redis_at(&server.url(), &namespace).await);
    let aside = CacheAside::builder(store).build().unwrap();
    let options = EntryOptions::new()
        .ttl(Duration::from_millis(300))
        .fail_safe(Duration::from_secs(600), Duration::from_secs(5))
        .soft_timeout(Duration::from_millis(100));
    let (fresh, stale) = (kvkey!["fresh"], kvkey!["stale"]);
    let loads = Loads::default();
    aside
        .get_or_set(&stale, options, loads.loader(Duration::ZERO, json!("s")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await; // logically expired
    aside
        .get_or_set(
            &fresh,
            options.ttl(Duration::from_secs(60)),
            loads.loader(Duration::ZERO, json!("f")),
        )
        .await
        .unwrap();

    server.kill();
    for round in 0..5 {
        let start = Instant::now();
        let value = aside
            .get_or_set(
                &fresh,
                options.ttl(Duration::from_secs(60)),
                loads.loader(Duration::ZERO, json!("x")),
            )
            .await
            .unwrap();
        assert_eq!(value, json!("f"));
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // The loader hangs (its database is slow too): the stale value in
        // the front is served within the soft timeout.
        let start = Instant::now();
        let value = aside
            .get_or_set(
                &stale,
                options,
                loads.loader(Duration::from_secs(30), json!("x")),
            )
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(value, json!("s"), "round {round}");
        assert!(took < Duration::from_millis(600), "round {round}: {took:?}");
    }
    drop(breaker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_half_opens_and_recovers() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let namespace = unique_namespace();
    let breaker = CircuitBreakerLayer::builder("redis")
        .failure_threshold(3)
        .cooldown(Duration::from_millis(300))
        .build();
    let store = ServiceBuilder::new()
        .layer(breaker.clone())
        .service(redis_at(&server.url(), &namespace).await);
    let key = kvkey!["k"];
    store.get(&key).await.unwrap();
    server.kill();
    let start = Instant::now();
    while breaker.state() != BreakerState::Open {
        let err = store.get(&key).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10), "never opened");
    }

    // Open: calls fail at once with `Unavailable`, the breaker's own error,
    // instead of the store's timeout. (How fast: BENCHMARKS.md, "breaker
    // open", a benchmark rather than a timed test.)
    for _ in 0..1_000 {
        let err = store.get(&key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());
    }

    // After the cooldown a probe goes through; with Redis still down it
    // fails and the breaker opens again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(store.get(&key).await.is_err());
    assert_eq!(breaker.state(), BreakerState::Open);

    server.restart();
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if store.get(&key).await.is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never recovered");
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    store
        .set(&key, json!(1), kvtower::SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_caching_remembers_absent_for_its_ttl() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    let aside = CacheAside::builder(stack(&redis_url(), &namespace).await)
        .build()
        .unwrap();
    let options = aside.options().negative_ttl(Duration::from_millis(300));
    let calls = Arc::new(AtomicUsize::new(0));
    let missing = || {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(None)
        }
    };
    let key = kvkey!["user", "0"];
    for _ in 0..3 {
        assert_eq!(
            aside
                .get_or_set_optional(&key, options, missing())
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    aside
        .get_or_set_optional(&key, options, missing())
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A plain get_or_set does not take a remembered absent for a value.
    let value = aside
        .get_or_set(&key, options, || async {
            Ok::<_, std::io::Error>(json!(5))
        })
        .await
        .unwrap();
    assert_eq!(value, json!(5));
    // Typed: through serde.
    let typed: u32 = aside
        .get_or_set_as(&key, options, || async { Ok::<_, std::io::Error>(6u32) })
        .await
        .unwrap();
    assert_eq!(typed, 5);
    let err = aside
        .get_or_set_as::<String, _, _, std::io::Error>(&key, options, || async {
            Ok("x".to_owned())
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
}

#[allow(dead_code)] // its main() is the example's
#[path = "../examples/cache_aside.rs"]
mod cache_aside;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_aside_example_serves_through_an_outage() {
    let served = cache_aside::run().await.unwrap();
    let prices: Vec<&Value> = served.iter().map(|(_, value, _)| value).collect();
    assert_eq!(
        prices,
        vec![&json!({"price": 10}); 5],
        "the loaded value, cached, then served stale through the outage"
    );
    for (what, _, took) in &served[2..] {
        assert!(*took < Duration::from_secs(1), "{what}: {took:?}");
    }
}

/// Every event of the facade is counted in its metric (handles registered
/// at `build`, so a local recorder around it sees them all).
#[tokio::test(start_paused = true)]
async fn every_event_is_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let aside = metrics::with_local_recorder(&recorder, || {
        CacheAside::builder(MemoryKvStore::new())
            .name("events")
            .build()
            .unwrap()
    });
    let ttl = EntryOptions::new().ttl(Duration::from_secs(10));
    let safe = ttl.fail_safe(Duration::from_secs(3600), Duration::from_secs(5));
    let loads = Loads::default();
    let (a, b) = (kvkey!["a"], kvkey!["b"]);

    // A miss that loads, then a hit.
    aside
        .get_or_set(&a, safe, loads.loader(Duration::ZERO, json!(1)))
        .await
        .unwrap();
    aside
        .get_or_set(&a, safe, loads.loader(Duration::ZERO, json!(2)))
        .await
        .unwrap();
    // Expired, the loader fails: the stale value is served.
    tokio::time::advance(Duration::from_secs(11)).await;
    let value = aside.get_or_set(&a, safe, loads.failing()).await.unwrap();
    assert_eq!(value, json!(1));
    // A hard timeout without a stale value; the load completes later.
    let hard = ttl.hard_timeout(Duration::from_millis(100));
    let err = aside
        .get_or_set(&b, hard, loads.loader(Duration::from_secs(1), json!(3)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut seen = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .filter(|l| l.key() != "cache")
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        assert!(key
            .key()
            .labels()
            .any(|l| l.key() == "cache" && l.value() == "events"));
        let n = match value {
            DebugValue::Counter(n) => n,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => continue,
        };
        seen.insert(format!("{}{{{}}}", key.key().name(), labels.join(",")), n);
    }
    let count = |name: &str| seen.get(name).copied().unwrap_or(0);
    assert_eq!(
        count("kvtower_aside_requests_total{outcome=hit}"),
        1,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_loader_calls_total{outcome=ok}"),
        2,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_loader_calls_total{outcome=error}"),
        1,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_loader_duration_seconds{}"),
        3,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_stale_served_total{reason=loader_error}"),
        1,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_timeouts_total{timeout=hard}"),
        1,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_background_completions_total{outcome=ok}"),
        1,
        "{seen:#?}"
    );
    assert!(
        count("kvtower_aside_lease_total{outcome=acquired}") >= 2,
        "{seen:#?}"
    );
    assert_eq!(loads.calls(), 3);
}

/// A store that holds the writes it is told to hold until the test opens
/// its gate. Fault injection: which round trips a caller waits for cannot be
/// observed against a real server that answers at once, so the test holds
/// one and checks whether the call still returns. Everything else goes to
/// real Redis.
struct HeldWrites {
    inner: RedisKvStore,
    holds: Arc<Holds>,
}

struct Holds {
    sets: std::sync::atomic::AtomicBool,
    releases: std::sync::atomic::AtomicBool,
    gate: tokio::sync::Semaphore,
    held: AtomicUsize,
    arrived: tokio::sync::Notify,
}

impl Holds {
    fn new() -> Self {
        Self {
            sets: false.into(),
            releases: false.into(),
            gate: tokio::sync::Semaphore::new(0),
            held: AtomicUsize::new(0),
            arrived: tokio::sync::Notify::new(),
        }
    }

    async fn pass(&self, hold: bool) {
        if !hold {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_waiters();
        self.gate.acquire().await.expect("gate").forget();
    }

    /// Waits until `n` writes wait at the gate.
    async fn until_held(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let arrived = self.arrived.notified();
                if self.held.load(Ordering::SeqCst) >= n {
                    return;
                }
                arrived.await;
            }
        })
        .await
        .expect("the write reaches the gate");
    }

    fn open(&self) {
        self.gate.add_permits(1_000);
    }
}

#[async_trait::async_trait]
impl KvStore for HeldWrites {
    async fn get(&self, key: &kvtower::KvKey) -> kvtower::Result<Option<Value>> {
        self.inner.get(key).await
    }

    async fn set(
        &self,
        key: &kvtower::KvKey,
        value: Value,
        options: kvtower::SetOptions,
    ) -> kvtower::Result<()> {
        self.holds
            .pass(self.holds.sets.load(Ordering::SeqCst))
            .await;
        self.inner.set(key, value, options).await
    }

    async fn delete(&self, key: &kvtower::KvKey) -> kvtower::Result<()> {
        self.inner.delete(key).await
    }

    async fn cas(
        &self,
        key: &kvtower::KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: kvtower::SetOptions,
    ) -> kvtower::Result<bool> {
        // A lease release is a compare-and-delete.
        let release = expected.is_some() && new.is_none();
        self.holds
            .pass(release && self.holds.releases.load(Ordering::SeqCst))
            .await;
        self.inner.cas(key, expected, new, options).await
    }

    fn list(
        &self,
        prefix: Option<kvtower::KvKey>,
    ) -> futures::stream::BoxStream<'_, kvtower::Result<kvtower::KvEntry>> {
        self.inner.list(prefix)
    }

    fn capabilities(&self) -> kvtower::Capabilities {
        self.inner.capabilities()
    }
}

/// A facade over real Redis whose writes (or lease releases) can be held,
/// and a plain store on the same namespace to look at what landed.
async fn held(
    lease: bool,
) -> Option<(
    CacheAside<HeldWrites>,
    Arc<Holds>,
    RedisKvStore,
    NamespaceGuard,
)> {
    support::redis()?;
    let namespace = unique_namespace();
    let guard = NamespaceGuard(namespace.clone());
    let holds = Arc::new(Holds::new());
    let store = HeldWrites {
        inner: redis_at(&redis_url(), &namespace).await,
        holds: holds.clone(),
    };
    let builder = CacheAside::builder(store);
    let aside = if lease { builder } else { builder.no_lease() }
        .build()
        .unwrap();
    Some((
        aside,
        holds,
        redis_at(&redis_url(), &namespace).await,
        guard,
    ))
}

/// Within the bound, or the call waited for the held write (a failure, not
/// a hang).
async fn answered<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call answers while its write is held")
}

/// Whether the task is still waiting a while after it was started. (Only
/// a "still waiting" is asserted: a slow machine cannot make it fail.)
async fn still_waiting<T>(task: &tokio::task::JoinHandle<T>) -> bool {
    tokio::time::sleep(Duration::from_millis(100)).await;
    !task.is_finished()
}

/// A cold `get_or_set` of `key` with `options` (`background_write`) that
/// answers while its store write waits at the gate.
async fn answered_with_the_write_held(
    aside: &CacheAside<HeldWrites>,
    holds: &Holds,
    loads: &Loads,
    key: &kvtower::KvKey,
    options: EntryOptions,
) {
    holds.sets.store(true, Ordering::SeqCst);
    let value =
        answered(aside.get_or_set(key, options, loads.loader(Duration::ZERO, json!("Ada"))))
            .await
            .unwrap();
    assert_eq!(value, json!("Ada"));
    holds.until_held(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_call_waits_for_the_write_but_not_for_the_lease_release() {
    let Some((aside, holds, redis, _guard)) = held(true).await else {
        return;
    };
    let key = kvkey!["user", "1"];
    let loads = Loads::default();

    holds.sets.store(true, Ordering::SeqCst);
    let call = tokio::spawn({
        let (aside, key, loader) = (
            aside.clone(),
            key.clone(),
            loads.loader(Duration::ZERO, json!("Ada")),
        );
        async move { aside.get_or_set(&key, aside.options(), loader).await }
    });
    holds.until_held(1).await;
    assert!(
        still_waiting(&call).await,
        "the call returned before its write landed"
    );
    holds.sets.store(false, Ordering::SeqCst);
    holds.releases.store(true, Ordering::SeqCst);
    holds.open();
    assert_eq!(answered(call).await.unwrap().unwrap(), json!("Ada"));

    // A second cold key: the call returns while its lease release is held.
    let other = kvkey!["user", "2"];
    let value = answered(aside.get_or_set(
        &other,
        aside.options(),
        loads.loader(Duration::ZERO, json!("Bob")),
    ))
    .await
    .unwrap();
    assert_eq!(value, json!("Bob"));
    // (The gate has permits left from the first open: the release may have
    // passed already; either way the value landed before the answer.)
    let stored = redis
        .get(&other)
        .await
        .unwrap()
        .expect("written before the answer");
    assert_eq!(stored["value"], json!("Bob"));
    // The facade's own read is ordered after the release.
    assert_eq!(
        answered(aside.get(&other)).await.unwrap(),
        Some(json!("Bob"))
    );
    assert_eq!(
        redis
            .get(&kvkey!["__kvtower_lease", "user", "2"])
            .await
            .unwrap(),
        None
    );
    assert_eq!(loads.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_release_does_not_hold_the_caller() {
    let Some((aside, holds, redis, _guard)) = held(true).await else {
        return;
    };
    let key = kvkey!["user", "1"];
    let loads = Loads::default();
    holds.releases.store(true, Ordering::SeqCst);
    let value = answered(aside.get_or_set(
        &key,
        aside.options(),
        loads.loader(Duration::ZERO, json!("Ada")),
    ))
    .await
    .unwrap();
    assert_eq!(value, json!("Ada"));
    holds.until_held(1).await;
    let lease = kvkey!["__kvtower_lease", "user", "1"];
    assert!(
        redis.get(&lease).await.unwrap().is_some(),
        "the release is held"
    );
    assert_eq!(
        redis.get(&key).await.unwrap().unwrap()["value"],
        json!("Ada")
    );
    holds.open();
    assert_eq!(answered(aside.get(&key)).await.unwrap(), Some(json!("Ada")));
    assert_eq!(
        redis.get(&lease).await.unwrap(),
        None,
        "released after the answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_write_answers_before_the_write_and_orders_this_process_after_it() {
    let Some((aside, holds, redis, _guard)) = held(true).await else {
        return;
    };
    let key = kvkey!["user", "1"];
    let lease = kvkey!["__kvtower_lease", "user", "1"];
    let loads = Loads::default();
    let options = aside.options().background_write(true);
    answered_with_the_write_held(&aside, &holds, &loads, &key, options).await;
    assert_eq!(redis.get(&key).await.unwrap(), None, "the write is held");
    assert!(
        redis.get(&lease).await.unwrap().is_some(),
        "the lease is kept until the write lands"
    );

    // A call in the window joins the load instead of loading again.
    let again =
        answered(aside.get_or_set(&key, options, loads.loader(Duration::ZERO, json!("Bob"))))
            .await
            .unwrap();
    assert_eq!(again, json!("Ada"));
    assert_eq!(loads.calls(), 1);

    // The facade's own read waits for the write, then sees it.
    let read = tokio::spawn({
        let (aside, key) = (aside.clone(), key.clone());
        async move { aside.get(&key).await }
    });
    assert!(
        still_waiting(&read).await,
        "get did not wait for the pending write"
    );
    holds.open();
    assert_eq!(answered(read).await.unwrap().unwrap(), Some(json!("Ada")));
    assert_eq!(
        redis.get(&key).await.unwrap().unwrap()["value"],
        json!("Ada")
    );
    assert_eq!(redis.get(&lease).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_after_a_background_write_is_not_undone_by_it() {
    let Some((aside, holds, redis, _guard)) = held(false).await else {
        return;
    };
    let key = kvkey!["user", "1"];
    let loads = Loads::default();
    let options = aside.options().background_write(true);
    answered_with_the_write_held(&aside, &holds, &loads, &key, options).await;
    let remove = tokio::spawn({
        let (aside, key) = (aside.clone(), key.clone());
        async move { aside.remove(&key).await }
    });
    assert!(
        still_waiting(&remove).await,
        "remove did not wait for the pending write"
    );
    holds.open();
    answered(remove).await.unwrap().unwrap();
    assert_eq!(
        redis.get(&key).await.unwrap(),
        None,
        "the held write resurrected the key"
    );
    assert_eq!(answered(aside.get(&key)).await.unwrap(), None);
}

/// Counters of a local recorder, by `name{label=value,...}` without the
/// `cache` label (summed over snapshots: a snapshot drains counters).
fn counters(
    snapshotter: &metrics_util::debugging::Snapshotter,
    seen: &mut std::collections::BTreeMap<String, u64>,
) {
    use metrics_util::debugging::DebugValue;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let DebugValue::Counter(n) = value else {
            continue;
        };
        let labels: Vec<String> = key
            .key()
            .labels()
            .filter(|l| l.key() != "cache")
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        *seen
            .entry(format!("{}{{{}}}", key.key().name(), labels.join(",")))
            .or_default() += n;
    }
}

#[tokio::test(start_paused = true)]
async fn eager_refreshes_are_counted_started_and_busy() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let store = Arc::new(MemoryKvStore::new());
    let aside = metrics::with_local_recorder(&recorder, || {
        CacheAside::builder(store.clone())
            .name("refresh")
            .build()
            .unwrap()
    });
    let options = EntryOptions::new()
        .ttl(Duration::from_secs(10))
        .eager_refresh(0.5);
    let loads = Loads::default();
    let (a, b) = (kvkey!["a"], kvkey!["b"]);
    for key in [&a, &b] {
        aside
            .get_or_set(key, options, loads.loader(Duration::ZERO, json!(1)))
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(6)).await;
    // `a` past the threshold: one refresh starts and takes the lease.
    let value = aside
        .get_or_set(&a, options, loads.loader(Duration::ZERO, json!(2)))
        .await
        .unwrap();
    assert_eq!(value, json!(1), "the cached value at once");
    // `b`'s lease is held by another process: its refresh is busy.
    let lease = kvkey!["__kvtower_lease", "b"];
    assert!(store
        .cas(
            &lease,
            None,
            Some(json!("another process")),
            kvtower::SetOptions::ttl(Duration::from_secs(60))
        )
        .await
        .unwrap());
    aside
        .get_or_set(&b, options, loads.loader(Duration::ZERO, json!(2)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;

    let mut seen = Default::default();
    counters(&snapshotter, &mut seen);
    let count = |name: &str| seen.get(name).copied().unwrap_or(0);
    assert_eq!(
        count("kvtower_aside_refreshes_total{outcome=started}"),
        2,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_refreshes_total{outcome=busy}"),
        1,
        "{seen:#?}"
    );
    assert_eq!(loads.calls(), 3, "two loads and the refresh of `a`");
    assert_eq!(aside.get(&a).await.unwrap(), Some(json!(2)), "refreshed");
    assert_eq!(
        aside.get(&b).await.unwrap(),
        Some(json!(1)),
        "not refreshed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_survived_are_counted_by_operation() {
    use metrics_util::debugging::DebuggingRecorder;
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let store = redis_at(&server.url(), &unique_namespace()).await;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let aside = metrics::with_local_recorder(&recorder, || {
        CacheAside::builder(store).name("down").build().unwrap()
    });
    server.kill();
    let loads = Loads::default();
    let value = aside
        .get_or_set(
            &kvkey!["k"],
            aside.options(),
            loads.loader(Duration::ZERO, json!(7)),
        )
        .await
        .unwrap();
    assert_eq!(value, json!(7), "the loader answers while Redis is down");

    let mut seen = Default::default();
    counters(&snapshotter, &mut seen);
    let count = |name: &str| seen.get(name).copied().unwrap_or(0);
    assert_eq!(
        count("kvtower_aside_store_errors_total{operation=get}"),
        1,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_store_errors_total{operation=set}"),
        1,
        "{seen:#?}"
    );
    assert_eq!(
        count("kvtower_aside_lease_total{outcome=error}"),
        1,
        "{seen:#?}"
    );
}

/// A `get_or_set` that joins the load of a `get_or_set_optional` whose
/// loader says absent runs its own loader once that load is done, instead
/// of failing.
#[tokio::test(start_paused = true)]
async fn a_plain_call_joining_an_absent_load_loads_its_own_value() {
    let aside = CacheAside::builder(MemoryKvStore::new()).build().unwrap();
    let key = kvkey!["user", "9"];
    let options = aside.options().negative_ttl(Duration::from_secs(60));
    let optional = tokio::spawn({
        let (aside, key) = (aside.clone(), key.clone());
        async move {
            aside
                .get_or_set_optional(&key, options, || async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, std::io::Error>(None)
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let value = aside
        .get_or_set(&key, options, || async {
            Ok::<_, std::io::Error>(json!(5))
        })
        .await
        .unwrap();
    assert_eq!(value, json!(5));
    assert_eq!(optional.await.unwrap().unwrap(), None);
}
