//! The history checker: several cache stacks (nodes) over one private Redis
//! with the invalidation bus do random writes and reads on a small key space
//! while faults are injected (the bus connections killed with `CLIENT KILL`,
//! Redis restarted, and some single-key writes reported as timed out while they
//! land up to 300 ms later, through [`LateWrites`]). Every operation is recorded with its start and end
//! time, and the history is checked afterwards:
//!
//! 1. no read returns a value that a *later* successful write (one that
//!    started after the value's write ended) had replaced more than
//!    [`STALENESS_BOUND`] before the read started;
//! 2. no read returns a value past its TTL, plus [`CLOCK_TOLERANCE`];
//! 3. a node's own writes are visible to its own later reads at once (1 with
//!    a bound of zero for writes of the same node).
//!
//! Values are unique per write, so a read names the write it saw. A write
//! that failed may still have landed: its value may be read, but it is never
//! taken as proof that an older value was replaced.
//!
//! `KVTOWER_HISTORY_SECS` sets the run's length (default 8 s); BENCHMARKS.md
//! has the long run and the staleness it observed.
//!
//! A second run puts the nodes in two OS processes (this test binary run
//! again as a child, see [`history_child_node`]), each with its own cache
//! layer and bus over the same Redis: the children report their operations
//! with wall-clock times, which the parent maps onto its own clock (one
//! machine, one system clock; [`CLOCK_TOLERANCE`] covers the mapping) and
//! checks the same way.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvtower::invalidation::RedisInvalidationBus;
use kvtower::layers::CacheLayer;
use kvtower::{
    kvkey, Capabilities, DynKvStore, ErrorKind, KvEntry, KvKey, KvStore, MemoryKvStore,
    RedisKvStore, SetOptions, Value,
};
use serde_json::json;
use tower::ServiceBuilder;

/// How stale a read on another node may be: far above the bus's measured
/// delay (milliseconds), far below the front TTL (which would be the
/// staleness without the bus).
const STALENESS_BOUND: Duration = Duration::from_millis(500);
/// Slack for the TTL check: the front and Redis use different clocks.
const CLOCK_TOLERANCE: Duration = Duration::from_millis(50);
const FRONT_TTL: Duration = Duration::from_secs(120);
const KEYS: u64 = 6;
const NODES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Wrote `value` (`None`: deleted) with `ttl`.
    Write {
        key: u64,
        value: Option<u64>,
        ttl: Option<Duration>,
        ok: bool,
    },
    Read {
        key: u64,
        value: Option<u64>,
    },
}

#[derive(Debug, Clone)]
struct Event {
    node: usize,
    start: Instant,
    end: Instant,
    op: Op,
}

/// A small xorshift, so the test needs no random-number crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn node(url: &str, namespace: &str) -> DynKvStore {
    let bus = RedisInvalidationBus::builder(url)
        .channel(format!("{namespace}:invalidate"))
        .heartbeat(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let redis = RedisKvStore::builder()
        .namespace(namespace)
        .timeout(Duration::from_millis(500))
        .connect(url)
        .await
        .unwrap();
    let redis = LateWrites {
        inner: Arc::new(redis),
        count: Arc::new(AtomicU64::new(0)),
    };
    Arc::new(
        ServiceBuilder::new()
            .layer(
                CacheLayer::builder(MemoryKvStore::new())
                    .front_max_ttl(FRONT_TTL)
                    .invalidation_bus(bus)
                    .build(),
            )
            .service(redis),
    )
}

/// A fault-injecting wrapper around the real Redis store, for the race the
/// real server cannot be made to lose on demand: every 15th `set` or
/// `delete` answers a retryable `Timeout` at once while the write itself
/// lands 50–300 ms later (a write whose reply was lost, landing after the
/// caller gave up). Everything else is the Redis store's own answer.
struct LateWrites {
    inner: Arc<RedisKvStore>,
    count: Arc<AtomicU64>,
}

impl LateWrites {
    /// `Some(delay)` when this write should land late.
    fn late(&self) -> Option<Duration> {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        (n % 15 == 14).then(|| Duration::from_millis(50 + (n * 37) % 250))
    }

    fn timed_out() -> kvtower::Error {
        kvtower::Error::new(ErrorKind::Timeout, "injected: the reply was lost").with_retryable(true)
    }
}

#[async_trait::async_trait]
impl KvStore for LateWrites {
    async fn get(&self, key: &KvKey) -> kvtower::Result<Option<Value>> {
        self.inner.get(key).await
    }

    async fn get_with_ttl(
        &self,
        key: &KvKey,
    ) -> kvtower::Result<Option<(Value, Option<Duration>)>> {
        self.inner.get_with_ttl(key).await
    }

    async fn get_many(&self, keys: &[KvKey]) -> kvtower::Result<Vec<Option<Value>>> {
        self.inner.get_many(keys).await
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> kvtower::Result<Vec<Option<(Value, Option<Duration>)>>> {
        self.inner.get_many_with_ttl(keys).await
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> kvtower::Result<()> {
        let Some(delay) = self.late() else {
            return self.inner.set(key, value, options).await;
        };
        let (inner, key) = (self.inner.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inner.set(&key, value, options).await;
        });
        Err(Self::timed_out())
    }

    async fn delete(&self, key: &KvKey) -> kvtower::Result<()> {
        let Some(delay) = self.late() else {
            return self.inner.delete(key).await;
        };
        let (inner, key) = (self.inner.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inner.delete(&key).await;
        });
        Err(Self::timed_out())
    }

    async fn set_many(
        &self,
        entries: Vec<(KvKey, Value)>,
        options: SetOptions,
    ) -> kvtower::Result<()> {
        self.inner.set_many(entries, options).await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> kvtower::Result<()> {
        self.inner.delete_many(keys).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> kvtower::Result<bool> {
        self.inner.cas(key, expected, new, options).await
    }

    fn list(
        &self,
        prefix: Option<KvKey>,
    ) -> futures::stream::BoxStream<'_, kvtower::Result<KvEntry>> {
        self.inner.list(prefix)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

fn key(k: u64) -> KvKey {
    kvkey!["h", k.to_string()]
}

async fn run_node(
    store: DynKvStore,
    node: usize,
    until: Instant,
    next_value: Arc<Mutex<u64>>,
    log: Arc<Mutex<Vec<Event>>>,
) {
    run_node_with(store, node, until, next_value, |event| {
        log.lock().unwrap().push(event)
    })
    .await
}

/// [`run_node`], handing each event to `record`.
async fn run_node_with(
    store: DynKvStore,
    node: usize,
    until: Instant,
    next_value: Arc<Mutex<u64>>,
    mut record: impl FnMut(Event),
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (node as u64 + 1));
    while Instant::now() < until {
        let k = rng.next() % KEYS;
        let choice = rng.next() % 10;
        let start = Instant::now();
        let op = if choice < 5 {
            let value = store
                .get(&key(k))
                .await
                .ok()
                .map(|v| v.and_then(|v| v.as_u64()));
            // A failed read says nothing.
            value.map(|value| Op::Read { key: k, value })
        } else {
            let value = {
                let mut next = next_value.lock().unwrap();
                *next += 1;
                *next
            };
            let ttl = (choice == 9).then(|| Duration::from_millis(300 + rng.next() % 400));
            let options = ttl.map(SetOptions::ttl).unwrap_or_default();
            let (value, ok) = match choice {
                5 => (None, store.delete(&key(k)).await.is_ok()),
                6 => (
                    Some(value),
                    store
                        .set_many(vec![(key(k), json!(value))], options)
                        .await
                        .is_ok(),
                ),
                _ => (
                    Some(value),
                    store.set(&key(k), json!(value), options).await.is_ok(),
                ),
            };
            Some(Op::Write {
                key: k,
                value,
                ttl,
                ok,
            })
        };
        let end = Instant::now();
        if let Some(op) = op {
            record(Event {
                node,
                start,
                end,
                op,
            });
        }
        tokio::time::sleep(Duration::from_micros(200 + rng.next() % 800)).await;
    }
}

/// Checks the three properties; returns the largest staleness seen (how
/// long before a read started its value had been replaced on another node).
fn check(history: &[Event]) -> Duration {
    let mut writes_by_value: HashMap<u64, &Event> = HashMap::new();
    for event in history {
        if let Op::Write { value: Some(v), .. } = event.op {
            writes_by_value.insert(v, event);
        }
    }
    let mut max_staleness = Duration::ZERO;
    for read in history {
        let Op::Read {
            key: k,
            value: Some(v),
        } = read.op
        else {
            continue;
        };
        let write = writes_by_value
            .get(&v)
            .unwrap_or_else(|| panic!("read {v} that nobody wrote"));
        let Op::Write {
            key: wk, ttl, ok, ..
        } = write.op
        else {
            unreachable!()
        };
        assert_eq!(wk, k, "read {v} under the wrong key");
        if !ok {
            continue; // it may have landed whenever
        }
        if let Some(ttl) = ttl {
            assert!(
                read.start < write.end + ttl + CLOCK_TOLERANCE,
                "node {} read {v} {:?} after its write ended, past its TTL {ttl:?}",
                read.node,
                read.start - write.end
            );
        }
        // Every successful write of the key that started after `write`
        // ended replaced it, at the latest when it returned.
        for later in history {
            let Op::Write {
                key: lk, ok: true, ..
            } = later.op
            else {
                continue;
            };
            if lk != k || later.start <= write.end || later.end >= read.start {
                continue;
            }
            let staleness = read.start - later.end;
            if later.node == read.node {
                panic!(
                    "node {} read {v} although its own later write ended {staleness:?} before",
                    read.node
                );
            }
            max_staleness = max_staleness.max(staleness);
            assert!(
                staleness <= STALENESS_BOUND,
                "node {} read {v}, replaced on node {} {staleness:?} before the read started",
                read.node,
                later.node
            );
        }
    }
    max_staleness
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_faults_keep_the_three_properties() {
    let secs = std::env::var("KVTOWER_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let url = server.url();
    let namespace = support::unique_namespace();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(node(&url, &namespace).await);
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let next_value = Arc::new(Mutex::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = nodes
        .into_iter()
        .enumerate()
        .map(|(i, store)| tokio::spawn(run_node(store, i, until, next_value.clone(), log.clone())))
        .collect();
    // Faults: kill the bus connections every second; restart Redis once.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut restarted = false;
    while Instant::now() + Duration::from_secs(1) < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !restarted && Instant::now() + Duration::from_secs(secs / 2) >= until {
            server.restart();
            restarted = true;
            continue;
        }
        kill_bus_connections(&client).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let history = log.lock().unwrap().clone();
    let reads = history
        .iter()
        .filter(|e| matches!(e.op, Op::Read { .. }))
        .count();
    assert!(reads > 100, "only {reads} reads in {secs} s");
    let max = check(&history);
    println!(
        "history: {} operations, {reads} reads, max staleness observed {max:?} (bound {STALENESS_BOUND:?})",
        history.len()
    );
}

/// The fault of both runs: every bus (pub/sub) connection killed.
async fn kill_bus_connections(client: &redis::Client) {
    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
        let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await;
    }
}

/// Wall-clock microseconds since the Unix epoch.
fn unix_micros(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        .try_into()
        .unwrap()
}

/// The environment variable that makes [`history_child_node`] a node:
/// `url namespace node until_unix_micros`.
const CHILD_ENV: &str = "KVTOWER_HISTORY_CHILD";

/// Not a test of its own: the node of the two-process run when started by
/// [`histories_of_two_processes_keep_the_three_properties`] (with
/// [`CHILD_ENV`] set); otherwise it returns at once. It prints one line per
/// operation: `EV node start_us end_us r|w key value|- ttl_ms|- ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_child_node() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [url, namespace, node, until] = parts[..] else {
        panic!("{CHILD_ENV}={spec:?}");
    };
    let node: usize = node.parse().unwrap();
    let until_us: u64 = until.parse().unwrap();
    let now_us = unix_micros(std::time::SystemTime::now());
    let until = Instant::now() + Duration::from_micros(until_us.saturating_sub(now_us));
    let store = self::node(url, namespace).await;
    // Values unique across processes: each node counts in its own range.
    let next_value = Arc::new(Mutex::new((node as u64) << 40));
    // Instants of this process as wall-clock times.
    let (base, base_us) = (Instant::now(), unix_micros(std::time::SystemTime::now()));
    let wall = |at: Instant| base_us + (at - base).as_micros() as u64;
    let mut lines = Vec::new();
    run_node_with(store, node, until, next_value, |event| {
        let show = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let (kind, key, value, ttl, ok) = match event.op {
            Op::Read { key, value } => ("r", key, show(value), "-".to_owned(), true),
            Op::Write {
                key,
                value,
                ttl,
                ok,
            } => (
                "w",
                key,
                show(value),
                show(ttl.map(|t| t.as_millis() as u64)),
                ok,
            ),
        };
        lines.push(format!(
            "EV {} {} {} {kind} {key} {value} {ttl} {ok}",
            event.node,
            wall(event.start),
            wall(event.end),
        ));
    })
    .await;
    println!("{}", lines.join("\n"));
}

/// Parses a child's `EV` lines, mapping wall-clock times onto this
/// process's clock through (`base`, `base_us`).
fn parse_events(out: &str, base: Instant, base_us: u64) -> Vec<Event> {
    let at = |us: u64| {
        if us >= base_us {
            base + Duration::from_micros(us - base_us)
        } else {
            base - Duration::from_micros(base_us - us)
        }
    };
    let opt = |s: &str| (s != "-").then(|| s.parse::<u64>().unwrap());
    out.lines()
        .filter_map(|line| line.strip_prefix("EV "))
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let [node, start, end, kind, key, value, ttl, ok] = f[..] else {
                panic!("bad event line {line:?}");
            };
            let key = key.parse().unwrap();
            let value = opt(value);
            let op = match kind {
                "r" => Op::Read { key, value },
                _ => Op::Write {
                    key,
                    value,
                    ttl: opt(ttl).map(Duration::from_millis),
                    ok: ok == "true",
                },
            };
            Event {
                node: node.parse().unwrap(),
                start: at(start.parse().unwrap()),
                end: at(end.parse().unwrap()),
                op,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_of_two_processes_keep_the_three_properties() {
    if std::env::var(CHILD_ENV).is_ok() {
        return; // a child runs only its node
    }
    let secs: u64 = std::env::var("KVTOWER_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let Some(server) = support::private_redis() else {
        return;
    };
    let url = server.url();
    let namespace = support::unique_namespace();
    // The children start in about a second; give them the whole run after.
    let until_us = unix_micros(std::time::SystemTime::now()) + (secs + 1) * 1_000_000;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|node| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "history_child_node",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, format!("{url} {namespace} {node} {until_us}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    // Faults: the children's bus connections killed every second.
    let client = redis::Client::open(url.as_str()).unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() + Duration::from_secs(1) < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        kill_bus_connections(&client).await;
    }
    let (base, base_us) = (Instant::now(), unix_micros(std::time::SystemTime::now()));
    let mut history = Vec::new();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "a child node failed: {:?}",
            out.status
        );
        history.extend(parse_events(
            &String::from_utf8_lossy(&out.stdout),
            base,
            base_us,
        ));
    }
    let nodes: std::collections::HashSet<usize> = history.iter().map(|e| e.node).collect();
    assert_eq!(nodes.len(), 2, "both processes reported operations");
    let reads = history
        .iter()
        .filter(|e| matches!(e.op, Op::Read { .. }))
        .count();
    assert!(reads > 100, "only {reads} reads in {secs} s");
    let max = check(&history);
    println!(
        "two processes: {} operations, {reads} reads, max staleness observed {max:?} (bound {STALENESS_BOUND:?})",
        history.len()
    );
}
