//! The invalidation bus against the real Redis on 127.0.0.1:6379 (unique
//! channels per test, so tests do not see each other).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvtower::invalidation::{InvalidationTarget, RedisInvalidationBus};
use kvtower::{kvkey, KvKey};

fn redis_url() -> String {
    std::env::var("KVTOWER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn channel(name: &str) -> String {
    format!(
        "kvtower-test:{name}:{}:{:?}",
        std::process::id(),
        Instant::now()
    )
}

#[derive(Default)]
struct Recorder {
    invalidated: Mutex<Vec<KvKey>>,
    clears: Mutex<u32>,
}

#[async_trait::async_trait]
impl InvalidationTarget for Recorder {
    async fn invalidate(&self, keys: &[KvKey]) {
        self.invalidated.lock().unwrap().extend_from_slice(keys);
    }
    async fn clear(&self) {
        *self.clears.lock().unwrap() += 1;
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn keys_reach_other_nodes_but_not_the_sender() {
    let channel = channel("basic");
    let a = RedisInvalidationBus::connect(&redis_url(), channel.clone())
        .await
        .unwrap();
    let b = RedisInvalidationBus::connect(&redis_url(), channel.clone())
        .await
        .unwrap();
    assert!(a.is_connected() && b.is_connected());
    assert_ne!(a.node_id(), b.node_id());
    let (ra, rb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    a.register(&ra);
    b.register(&rb);

    let odd = KvKey::new(["user", "42", "", "a:b*?[\\"]).unwrap();
    a.publish(&[kvkey!["user", "1"], odd.clone()]).await;
    eventually("b to see a's keys", || {
        rb.invalidated.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        *rb.invalidated.lock().unwrap(),
        vec![kvkey!["user", "1"], odd]
    );

    b.publish(&[kvkey!["from-b"]]).await;
    eventually("a to see b's key", || {
        ra.invalidated.lock().unwrap().len() == 1
    })
    .await;
    // Each node skipped its own message: a saw only b's key, b only a's two.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*ra.invalidated.lock().unwrap(), vec![kvkey!["from-b"]]);
    assert_eq!(rb.invalidated.lock().unwrap().len(), 2);

    a.publish_clear().await;
    eventually("b to clear", || *rb.clears.lock().unwrap() == 1).await;
    assert_eq!(*ra.clears.lock().unwrap(), 0);
}

#[tokio::test]
async fn other_channels_are_not_heard() {
    let a = RedisInvalidationBus::connect(&redis_url(), channel("one"))
        .await
        .unwrap();
    let b = RedisInvalidationBus::connect(&redis_url(), channel("two"))
        .await
        .unwrap();
    let rb = Arc::new(Recorder::default());
    b.register(&rb);
    a.publish(&[kvkey!["k"]]).await;
    // A message on b's channel sent after a's proves delivery order: if b
    // hears its sentinel but not a's key, a's key went elsewhere.
    let c = RedisInvalidationBus::connect(&redis_url(), b.channel().to_owned())
        .await
        .unwrap();
    c.publish(&[kvkey!["sentinel"]]).await;
    eventually("the sentinel", || {
        !rb.invalidated.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*rb.invalidated.lock().unwrap(), vec![kvkey!["sentinel"]]);
}

#[tokio::test]
async fn garbage_on_the_channel_is_ignored() {
    let channel = channel("garbage");
    let b = RedisInvalidationBus::connect(&redis_url(), channel.clone())
        .await
        .unwrap();
    let rb = Arc::new(Recorder::default());
    b.register(&rb);
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(r#"{"n":1,"k":[[]]}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    let a = RedisInvalidationBus::connect(&redis_url(), channel)
        .await
        .unwrap();
    a.publish(&[kvkey!["ok"]]).await;
    eventually("the valid message", || {
        !rb.invalidated.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*rb.invalidated.lock().unwrap(), vec![kvkey!["ok"]]);
    assert!(b.is_connected());
}

#[tokio::test]
async fn unreachable_redis_is_an_unavailable_error() {
    let err = RedisInvalidationBus::builder("redis://127.0.0.1:1")
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), kvtower::ErrorKind::Unavailable, "{err}");
    let err = RedisInvalidationBus::connect("nonsense://x", "c")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), kvtower::ErrorKind::Config, "{err}");
}
