//! `RedisKvStore` against real Redis: the conformance suite on the shared
//! standalone Redis (a fresh namespace per test) and on a private 3-master
//! cluster, plus faults, interop, contention and round-trip counts on private
//! servers.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use kvtower::{
    kvkey, Capabilities, ErrorKind, KvEntry, KvKey, KvStore, KvStoreExt, RedisKvStore, SetOptions,
};
use serde_json::{json, Value};
use support::{redis_url, unique_namespace};

async fn shared_store() -> RedisKvStore {
    RedisKvStore::builder()
        .namespace(unique_namespace())
        .connect(&redis_url())
        .await
        .expect("connect to the shared Redis")
}

/// A store on the shared Redis that removes its namespace's keys when
/// dropped, so test runs leave nothing behind on the Redis others use.
struct CleanedUp(RedisKvStore);

impl Drop for CleanedUp {
    fn drop(&mut self) {
        support::delete_namespace(&redis_url(), self.0.namespace());
    }
}

#[async_trait::async_trait]
impl KvStore for CleanedUp {
    async fn get(&self, key: &KvKey) -> kvtower::Result<Option<Value>> {
        self.0.get(key).await
    }
    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> kvtower::Result<()> {
        self.0.set(key, value, options).await
    }
    async fn delete(&self, key: &KvKey) -> kvtower::Result<()> {
        self.0.delete(key).await
    }
    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> kvtower::Result<bool> {
        self.0.cas(key, expected, new, options).await
    }
    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, kvtower::Result<KvEntry>> {
        self.0.list(prefix)
    }
    async fn get_many(&self, keys: &[KvKey]) -> kvtower::Result<Vec<Option<Value>>> {
        self.0.get_many(keys).await
    }
    async fn get_with_ttl(
        &self,
        key: &KvKey,
    ) -> kvtower::Result<Option<(Value, Option<std::time::Duration>)>> {
        self.0.get_with_ttl(key).await
    }
    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> kvtower::Result<Vec<Option<(Value, Option<std::time::Duration>)>>> {
        self.0.get_many_with_ttl(keys).await
    }
    async fn set_many(
        &self,
        entries: Vec<(KvKey, Value)>,
        options: SetOptions,
    ) -> kvtower::Result<()> {
        self.0.set_many(entries, options).await
    }
    async fn delete_many(&self, keys: &[KvKey]) -> kvtower::Result<()> {
        self.0.delete_many(keys).await
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
}

async fn cleaned_up_shared_store() -> CleanedUp {
    CleanedUp(shared_store().await)
}

mod standalone {
    kvtower::conformance_suite!(
        super::cleaned_up_shared_store,
        64,
        requires = crate::support::redis_available
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_passes_the_conformance_suite() {
    let Some(cluster) = support::redis_cluster(3) else {
        return;
    };
    let urls = cluster.urls();
    kvtower::testing::run_all(|| {
        let urls = urls.clone();
        async move {
            RedisKvStore::builder()
                .namespace(unique_namespace())
                .cluster(urls)
                .await
                .expect("connect to the cluster")
        }
    })
    .await;

    // The redis+cluster:// form reaches the same cluster; keys spread over
    // every master and list scans them all.
    let ports: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let namespace = unique_namespace();
    let store = RedisKvStore::builder()
        .namespace(&namespace)
        .connect(&format!("redis+cluster://{}", ports.join(",")))
        .await
        .expect("redis+cluster:// URL");
    let entries: Vec<_> = (0..300)
        .map(|i| (kvkey!["spread", i.to_string()], json!(i)))
        .collect();
    store
        .set_many(entries, SetOptions::default())
        .await
        .unwrap();
    for node in cluster.nodes() {
        let count = node.cli(&["DBSIZE"]);
        let count: u64 = count.trim().parse().unwrap();
        assert!(count > 0, "every master holds some keys");
    }
    assert_eq!(
        store.list_all(Some(kvkey!["spread"])).await.unwrap().len(),
        300
    );
    let keys: Vec<_> = (0..300).map(|i| kvkey!["spread", i.to_string()]).collect();
    let values = store.get_many(&keys).await.unwrap();
    assert_eq!(values[123], Some(json!(123)));
    assert!(values.iter().all(Option::is_some));
    store.delete_many(&keys).await.unwrap();
    assert!(store.list_all(None).await.unwrap().is_empty());

    contended_counter(|| {
        let urls = cluster.urls();
        let namespace = namespace.clone();
        async move {
            RedisKvStore::builder()
                .namespace(namespace)
                .cluster(urls)
                .await
                .unwrap()
        }
    })
    .await;
}

/// Many tasks on several stores (so several connections) cas-increment one
/// counter; it must end exact.
async fn contended_counter<F, Fut>(connect: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = RedisKvStore>,
{
    const STORES: usize = 4;
    const TASKS_PER_STORE: usize = 16;
    const INCREMENTS: u64 = 5;
    let mut stores = Vec::new();
    for _ in 0..STORES {
        stores.push(connect().await);
    }
    let key = kvkey!["contended", "counter"];
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..TASKS_PER_STORE {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    loop {
                        let current = store.get(&key).await.unwrap();
                        let n = current.as_ref().and_then(|v| v["n"].as_u64()).unwrap_or(0);
                        // Object values, so that structural equality matters.
                        let next = json!({"n": n + 1, "by": "task"});
                        let expected = current.as_ref();
                        if store
                            .cas(&key, expected, Some(next), SetOptions::default())
                            .await
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = stores[0].get(&key).await.unwrap().unwrap();
    assert_eq!(
        total["n"],
        json!(STORES as u64 * TASKS_PER_STORE as u64 * INCREMENTS)
    );
    stores[0].delete(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_is_exact_under_contention_across_connections() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    contended_counter(|| {
        let namespace = namespace.clone();
        async move {
            RedisKvStore::builder()
                .namespace(namespace)
                .connect(&redis_url())
                .await
                .unwrap()
        }
    })
    .await;
}

#[tokio::test]
async fn keys_and_values_interoperate_with_redis_cli_and_redis_rs() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let store = RedisKvStore::connect(&server.url()).await.unwrap();
    let key = kvkey!["user", "42"];
    assert_eq!(store.redis_key(&key), "kvtower:user:42");
    store
        .set(&key, json!({"name": "Ada"}), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        server.cli(&["GET", "kvtower:user:42"]).trim(),
        r#"{"name":"Ada"}"#
    );
    assert_eq!(
        server.cli(&["GET", "kvtower:a%3Ab:50%25"]).trim(),
        "",
        "absent before the write"
    );
    store
        .set(&kvkey!["a:b", "50%"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(server.cli(&["GET", "kvtower:a%3Ab:50%25"]).trim(), "1");

    // Written by redis-cli, read by the store.
    server.cli(&["SET", "kvtower:user:7", r#"{"b":[1,2],"a":null}"#]);
    assert_eq!(
        store.get(&kvkey!["user", "7"]).await.unwrap(),
        Some(json!({"a": null, "b": [1, 2]}))
    );
    // ... and cas compares it structurally, whatever its key order.
    assert!(store
        .cas(
            &kvkey!["user", "7"],
            Some(&json!({"a": null, "b": [1, 2]})),
            Some(json!("swapped")),
            SetOptions::default()
        )
        .await
        .unwrap());
    assert_eq!(
        server.cli(&["GET", "kvtower:user:7"]).trim(),
        r#""swapped""#
    );

    // Plain redis-rs sees the same.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let raw: Option<String> = redis::cmd("GET")
        .arg("kvtower:user:42")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(raw.as_deref(), Some(r#"{"name":"Ada"}"#));

    // Millisecond TTLs: PX, not seconds.
    store
        .set(
            &key,
            json!(1),
            SetOptions::ttl(Duration::from_millis(1_500)),
        )
        .await
        .unwrap();
    let pttl: i64 = server
        .cli(&["PTTL", "kvtower:user:42"])
        .trim()
        .parse()
        .unwrap();
    assert!((1..=1_500).contains(&pttl), "PTTL {pttl}");
    store
        .set(&key, json!(1), SetOptions::ttl(Duration::from_micros(300)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "a sub-millisecond TTL"
    );

    // An existing redis-rs connection works as well.
    let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
    let from_manager = RedisKvStore::from_connection_manager(manager);
    assert_eq!(
        from_manager.get(&kvkey!["user", "7"]).await.unwrap(),
        Some(json!("swapped"))
    );
}

#[tokio::test]
async fn values_that_are_not_json_are_errors_for_their_key_only() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let store = RedisKvStore::builder()
        .namespace("ns")
        .connect(&server.url())
        .await
        .unwrap();
    store
        .set_many(
            vec![(kvkey!["k", "1"], json!(1)), (kvkey!["k", "3"], json!(3))],
            SetOptions::default(),
        )
        .await
        .unwrap();
    server.cli(&["SET", "ns:k:2", "not json {"]);
    server.cli(&["SET", "ns:k:50%off", "1"]); // not an encoding kvtower writes

    let err = store.get(&kvkey!["k", "2"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(err.key(), Some(&kvkey!["k", "2"]));
    let err = store
        .get_many(&[kvkey!["k", "1"], kvkey!["k", "2"]])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    let err = store
        .cas(
            &kvkey!["k", "2"],
            Some(&json!(1)),
            None,
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);

    let items: Vec<_> = store.list(Some(kvkey!["k"])).collect().await;
    let mut good: Vec<_> = items
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    good.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        good,
        vec![(kvkey!["k", "1"], json!(1)), (kvkey!["k", "3"], json!(3))],
        "the other keys are still listed"
    );
    let mut kinds: Vec<_> = items
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.kind())
        .collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(kinds, vec![ErrorKind::InvalidKey, ErrorKind::InvalidValue]);
    let bad = items
        .iter()
        .filter_map(|r| r.as_ref().err())
        .find(|e| e.kind() == ErrorKind::InvalidValue)
        .unwrap();
    assert_eq!(bad.key(), Some(&kvkey!["k", "2"]));
    assert!(store.list_all(Some(kvkey!["k"])).await.is_err());
}

#[tokio::test]
async fn namespaces_isolate_and_glob_characters_do_not_widen_a_listing() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let a = RedisKvStore::builder()
        .namespace("a")
        .connect(&server.url())
        .await
        .unwrap();
    let ab = RedisKvStore::builder()
        .namespace("a:b")
        .connect(&server.url())
        .await
        .unwrap();
    let star = RedisKvStore::builder()
        .namespace("*")
        .connect(&server.url())
        .await
        .unwrap();
    ab.set(&kvkey!["x"], json!(1), SetOptions::default())
        .await
        .unwrap();
    a.set(&kvkey!["b", "x"], json!(2), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(a.list_all(None).await.unwrap().len(), 1);
    assert_eq!(ab.list_all(None).await.unwrap().len(), 1);
    assert!(
        star.list_all(None).await.unwrap().is_empty(),
        "`*` is literal"
    );
    assert_eq!(a.get(&kvkey!["x"]).await.unwrap(), None);

    for key in [
        kvkey!["a*"],
        kvkey!["a*", "1"],
        kvkey!["ab"],
        kvkey!["a?"],
        kvkey!["a["],
    ] {
        a.set(&key, json!(0), SetOptions::default()).await.unwrap();
    }
    let listed = a.list_all(Some(kvkey!["a*"])).await.unwrap();
    let mut keys: Vec<_> = listed.into_iter().map(|e| e.key).collect();
    keys.sort();
    assert_eq!(keys, vec![kvkey!["a*"], kvkey!["a*", "1"]]);
}

#[tokio::test]
async fn get_many_is_one_mget() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let store = RedisKvStore::connect(&server.url()).await.unwrap();
    let keys: Vec<_> = (0..100).map(|i| kvkey!["m", i.to_string()]).collect();
    store
        .set_many(
            keys.iter().map(|k| (k.clone(), json!(1))).collect(),
            SetOptions::default(),
        )
        .await
        .unwrap();
    server.cli(&["CONFIG", "RESETSTAT"]);
    let values = store.get_many(&keys).await.unwrap();
    assert_eq!(values.len(), 100);
    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_mget:calls=1,"), "{stats}");
    assert!(!stats.contains("cmdstat_get:"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_fails_fast_while_the_server_is_down_and_recovers() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let store = RedisKvStore::builder()
        .namespace("faults")
        .timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(200))
        .connect(&server.url())
        .await
        .unwrap();
    let key = kvkey!["k"];
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();

    server.kill();
    let bound = Duration::from_secs(5);
    macro_rules! fails {
        ($name:literal, $op:expr) => {{
            let started = Instant::now();
            let result = tokio::time::timeout(bound, $op)
                .await
                .unwrap_or_else(|_| panic!("{} hung while the server was down", $name));
            let err = result.expect_err($name);
            assert!(
                matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                "{}: {err}",
                $name
            );
            assert!(err.is_retryable(), "{}: {err}", $name);
            assert!(started.elapsed() < bound, "{}", $name);
        }};
    }
    for _ in 0..2 {
        fails!("get", store.get(&key));
        fails!("set", store.set(&key, json!(2), SetOptions::default()));
        fails!("delete", store.delete(&key));
        fails!(
            "cas",
            store.cas(&key, None, Some(json!(3)), SetOptions::default())
        );
        fails!("list", async {
            let items: Vec<_> = store.list(None).collect().await;
            assert_eq!(items.len(), 1, "one error item, then the end");
            items.into_iter().next().unwrap().map(|_| ())
        });
        fails!("get_many", store.get_many(&[key.clone(), kvkey!["other"]]));
        fails!(
            "set_many",
            store.set_many(vec![(key.clone(), json!(4))], SetOptions::default())
        );
        fails!("delete_many", store.delete_many(std::slice::from_ref(&key)));
    }

    server.restart();
    // The same store object reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.set(&key, json!(5), SetOptions::default()).await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(5)));
    assert!(store
        .cas(&key, Some(&json!(5)), Some(json!(6)), SetOptions::default())
        .await
        .unwrap());
    assert_eq!(store.list_all(None).await.unwrap().len(), 1);
    store.delete_many(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(store.get_many(&[key]).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn bad_urls_are_config_errors_and_a_dead_server_is_unavailable() {
    if support::redis().is_none() {
        return;
    }
    let err = RedisKvStore::connect("http://nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let url = server.url();
    server.kill();
    let err = RedisKvStore::builder()
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_millis(300))
        .connect(&url)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    let store = Arc::new(shared_store().await);
    assert!(format!("{store:?}").contains("standalone"));
}

#[tokio::test]
async fn unix_socket_urls_connect() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let url = format!("redis+unix://{}", server.socket_path().display());
    let store = RedisKvStore::connect(&url).await.unwrap();
    store
        .set(&kvkey!["via", "socket"], json!(true), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(server.cli(&["GET", "kvtower:via:socket"]).trim(), "true");
}

/// A TCP proxy in front of the shared Redis that, once armed, forwards the
/// next `EVALSHA`/`EVAL` (a `cas` script), waits for Redis's reply (so the
/// script has run) and then drops the connection instead of forwarding it:
/// a lost reply, which no mock store could show on the real wire.
struct LostReplyProxy {
    port: u16,
    armed: Arc<std::sync::atomic::AtomicBool>,
    dropped: Arc<std::sync::atomic::AtomicUsize>,
}

impl LostReplyProxy {
    async fn start() -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = redis_url()
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap_or("127.0.0.1:6379")
            .to_owned();
        let armed = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (armed2, dropped2) = (armed.clone(), dropped.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (armed, dropped) = (armed2.clone(), dropped2.clone());
                tokio::spawn(async move {
                    let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
                    let mut drop_reply = false;
                    loop {
                        tokio::select! {
                            n = client.read(&mut up) => {
                                let Ok(n) = n else { return };
                                if n == 0 { return }
                                let chunk = &up[..n];
                                let is_script = chunk.windows(4).any(|w| w.eq_ignore_ascii_case(b"EVAL"));
                                if is_script && armed.swap(false, Ordering::SeqCst) {
                                    drop_reply = true;
                                }
                                if server.write_all(chunk).await.is_err() { return }
                            }
                            n = server.read(&mut down) => {
                                let Ok(n) = n else { return };
                                if n == 0 { return }
                                if drop_reply {
                                    // The script ran; its reply is lost with
                                    // the connection (both streams drop here).
                                    dropped.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                if client.write_all(&down[..n]).await.is_err() { return }
                            }
                        }
                    }
                });
            }
        });
        Self {
            port,
            armed,
            dropped,
        }
    }
}

#[tokio::test]
async fn cas_is_not_replayed_after_its_reply_was_lost() {
    use kvtower::service::{KvServiceLayer, RetryPolicy, ServiceStoreLayer};
    use std::sync::atomic::Ordering;
    let proxy = LostReplyProxy::start().await;
    let store = RedisKvStore::builder()
        .namespace(unique_namespace())
        .connect(&format!("redis://127.0.0.1:{}", proxy.port))
        .await
        .expect("connect through the proxy");
    let _cleanup = CleanedUp(store.clone());
    let stack = tower::ServiceBuilder::new()
        .layer(ServiceStoreLayer)
        .retry(RetryPolicy::new(3, Duration::from_millis(10)))
        .layer(KvServiceLayer)
        .service(store.clone());
    let key = kvkey!["counter"];
    stack
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    // Loads the script, so that the armed call is one EVALSHA.
    assert!(stack
        .cas(&key, Some(&json!(1)), Some(json!(2)), SetOptions::default())
        .await
        .unwrap());

    proxy.armed.store(true, Ordering::SeqCst);
    let result = stack
        .cas(&key, Some(&json!(2)), Some(json!(3)), SetOptions::default())
        .await;
    assert_eq!(
        proxy.dropped.load(Ordering::SeqCst),
        1,
        "the reply was dropped"
    );
    // A replay would compare 3 with the expected 2 and answer Ok(false),
    // although this very call swapped.
    let err = result.expect_err("the cas's outcome is unknown: an error, not false");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!err.is_retryable(), "replaying it blindly is wrong: {err}");
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(3)), "it swapped");
}

#[tokio::test]
async fn a_listing_through_the_tower_bridge_goes_past_a_bad_entry() {
    use kvtower::service::{KvServiceLayer, RetryPolicy, ServiceStoreLayer};
    let Some(server) = support::private_redis() else {
        return;
    };
    let store = RedisKvStore::builder()
        .namespace("ns")
        .connect(&server.url())
        .await
        .unwrap();
    store
        .set_many(
            vec![(kvkey!["l", "1"], json!(1)), (kvkey!["l", "3"], json!(3))],
            SetOptions::default(),
        )
        .await
        .unwrap();
    server.cli(&["SET", "ns:l:2", "not json {"]);
    let stack = tower::ServiceBuilder::new()
        .layer(ServiceStoreLayer)
        .retry(RetryPolicy::default())
        .timeout(Duration::from_secs(5))
        .layer(KvServiceLayer)
        .service(store);
    let items: Vec<_> = stack.list(Some(kvkey!["l"])).collect().await;
    assert_eq!(items.len(), 3, "{items:?}");
    let mut good: Vec<_> = items
        .iter()
        .filter_map(|i| i.as_ref().ok().map(|e| e.value.clone()))
        .collect();
    good.sort_by_key(|v| v.as_i64());
    assert_eq!(
        good,
        vec![json!(1), json!(3)],
        "the good entries still arrive"
    );
    let bad: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].kind(), ErrorKind::InvalidValue);
}

/// `get_with_ttl` reads a value and its `PTTL` in one script call whose reply
/// is one bulk string (the `PTTL` in decimal, a space, the stored text): the
/// value is never cut at a space of its own, the longest TTL (10^15 ms, which
/// Lua would print as `1e+15`) is read back whole, text that is not JSON is
/// the key's `InvalidValue`, and a server that lost its scripts (`SCRIPT
/// FLUSH`, as after a restart or a failover) is sent the script again.
#[tokio::test]
async fn get_with_ttl_is_one_script_call_with_one_bulk_reply() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let store = RedisKvStore::builder()
        .namespace("ns")
        .connect(&server.url())
        .await
        .unwrap();
    let (plain, short, longest, absent) = (kvkey!["a"], kvkey!["b"], kvkey!["c"], kvkey!["d"]);
    let spaced = json!({" 12 ": " 3 4 ", "n": [1.5, -2]});
    store
        .set(&plain, json!("1 2 "), SetOptions::default())
        .await
        .unwrap();
    let ttl = SetOptions::ttl(Duration::from_secs(10));
    store.set(&short, spaced.clone(), ttl).await.unwrap();
    let forever = SetOptions::ttl(Duration::from_millis(1_000_000_000_000_000));
    store.set(&longest, json!(7), forever).await.unwrap();

    store.get_with_ttl(&absent).await.unwrap(); // loads the script
    server.cli(&["CONFIG", "RESETSTAT"]);
    let (value, left) = store.get_with_ttl(&short).await.unwrap().expect("set");
    assert_eq!(value, spaced);
    let left = left.expect("a TTL");
    assert!(
        left > Duration::from_secs(9) && left <= Duration::from_secs(10),
        "{left:?}"
    );
    let stats = server.cli(&["INFO", "commandstats"]);
    // One call from the client (the server counts the script's own GET and
    // PTTL too).
    assert!(stats.contains("cmdstat_evalsha:calls=1,"), "{stats}");
    assert!(!stats.contains("cmdstat_script"), "{stats}");

    assert_eq!(
        store.get_with_ttl(&plain).await.unwrap(),
        Some((json!("1 2 "), None))
    );
    let (value, left) = store.get_with_ttl(&longest).await.unwrap().expect("set");
    assert_eq!(value, json!(7));
    assert!(
        left.expect("a TTL") > Duration::from_millis(999_999_000_000_000),
        "{left:?}"
    );
    assert_eq!(store.get_with_ttl(&absent).await.unwrap(), None);

    // Text that only a split at the wrong space would make JSON.
    server.cli(&["SET", "ns:e", "5 5"]);
    let err = store.get_with_ttl(&kvkey!["e"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err}");
    assert_eq!(err.key(), Some(&kvkey!["e"]));

    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    assert_eq!(
        store.get_with_ttl(&plain).await.unwrap(),
        Some((json!("1 2 "), None))
    );
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    let many = store
        .get_many_with_ttl(&[
            plain.clone(),
            absent.clone(),
            short.clone(),
            longest.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(many[0], Some((json!("1 2 "), None)));
    assert_eq!(many[1], None);
    assert_eq!(many[2].as_ref().map(|(v, _)| v), Some(&spaced));
    assert!(many[2].as_ref().and_then(|(_, t)| *t).expect("a TTL") <= Duration::from_secs(10));
    assert!(
        many[3].as_ref().and_then(|(_, t)| *t).expect("a TTL")
            > Duration::from_millis(999_999_000_000_000)
    );
}
