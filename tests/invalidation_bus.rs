//! The invalidation bus against the real Redis on 127.0.0.1:6379 (unique
//! channels per test, so tests do not see each other).

mod support;

use support::redis_url;

use std::time::{Duration, Instant};

use kvtower::invalidation::RedisInvalidationBus;
use kvtower::layers::CacheLayer;
use kvtower::{kvkey, KvKey, KvStore, MemoryKvStore, SetOptions};

fn channel(name: &str) -> String {
    format!(
        "kvtower-test:{name}:{}:{:?}",
        std::process::id(),
        Instant::now()
    )
}

/// A cache tier attached to a bus, whose front the test seeds directly and
/// watches: a key the bus invalidated is gone from it.
struct Probe {
    layer: CacheLayer<MemoryKvStore>,
}

impl Probe {
    fn on(bus: &RedisInvalidationBus) -> Self {
        Self {
            layer: CacheLayer::builder(MemoryKvStore::new())
                .coherence(bus.clone())
                .build(),
        }
    }

    async fn seed(&self, keys: &[KvKey]) {
        for key in keys {
            self.layer
                .front()
                .set(key, 1.into(), SetOptions::default())
                .await
                .unwrap();
        }
    }

    async fn has(&self, key: &KvKey) -> bool {
        self.layer.front().get(key).await.unwrap().is_some()
    }

    fn count(&self) -> u64 {
        self.layer.front().entry_count()
    }
}

/// Waits until `check` holds (it is re-evaluated every few milliseconds).
macro_rules! eventually {
    ($what:expr, $check:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(5);
        while !$check {
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }};
}

#[tokio::test]
async fn keys_reach_other_nodes_but_not_the_sender() {
    if support::redis().is_none() {
        return;
    }
    let channel = channel("basic");
    let a = RedisInvalidationBus::connect(&redis_url(), channel.clone())
        .await
        .unwrap();
    let b = RedisInvalidationBus::connect(&redis_url(), channel.clone())
        .await
        .unwrap();
    assert!(a.is_connected() && b.is_connected());
    assert_ne!(a.node_id(), b.node_id());
    let (pa, pb) = (Probe::on(&a), Probe::on(&b));

    let odd = KvKey::new(["user", "42", "", "a:b*?[\\"]).unwrap();
    let user = kvkey!["user", "1"];
    let from_b = kvkey!["from-b"];
    pa.seed(&[user.clone(), from_b.clone()]).await;
    pb.seed(&[user.clone(), odd.clone(), from_b.clone()]).await;
    a.publish(&[user.clone(), odd.clone()]).await;
    eventually!(
        "b to see a's keys",
        !pb.has(&user).await && !pb.has(&odd).await
    );

    b.publish(std::slice::from_ref(&from_b)).await;
    eventually!("a to see b's key", !pa.has(&from_b).await);
    // Each node skipped its own message: a kept the key it sent, b the key
    // it sent.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pa.has(&user).await);
    assert!(pb.has(&from_b).await);

    a.publish_clear().await;
    eventually!("b to clear", pb.count() == 0);
    assert!(pa.has(&user).await);
}

#[tokio::test]
async fn other_channels_are_not_heard() {
    if support::redis().is_none() {
        return;
    }
    let a = RedisInvalidationBus::connect(&redis_url(), channel("one"))
        .await
        .unwrap();
    let b = RedisInvalidationBus::connect(&redis_url(), channel("two"))
        .await
        .unwrap();
    let pb = Probe::on(&b);
    pb.seed(&[kvkey!["k"], kvkey!["sentinel"]]).await;
    a.publish(&[kvkey!["k"]]).await;
    // A message on b's channel sent after a's proves delivery order: if b
    // hears its sentinel but not a's key, a's key went elsewhere.
    let c = RedisInvalidationBus::connect(&redis_url(), b.channel().to_owned())
        .await
        .unwrap();
    c.publish(&[kvkey!["sentinel"]]).await;
    eventually!("the sentinel", !pb.has(&kvkey!["sentinel"]).await);
    assert!(pb.has(&kvkey!["k"]).await);
}

#[tokio::test]
async fn garbage_on_the_channel_is_ignored() {
    if support::redis().is_none() {
        return;
    }
    let channel = channel("garbage");
    let b = RedisInvalidationBus::connect(&redis_url(), channel.clone())
        .await
        .unwrap();
    let pb = Probe::on(&b);
    pb.seed(&[kvkey!["ok"], kvkey!["other"]]).await;
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
    eventually!("the valid message", !pb.has(&kvkey!["ok"]).await);
    assert!(pb.has(&kvkey!["other"]).await);
    assert!(b.is_connected());
}

/// One bus shared by two cache tiers of one node: a write through one must
/// reach the other (own messages are skipped per tier, not per bus).
#[tokio::test]
async fn two_tiers_on_one_bus_hear_each_other() {
    if support::redis().is_none() {
        return;
    }
    let bus = RedisInvalidationBus::connect(&redis_url(), channel("shared"))
        .await
        .unwrap();
    let one = Probe::on(&bus);
    let two = Probe::on(&bus);
    let key = kvkey!["k"];
    two.seed(std::slice::from_ref(&key)).await;
    let store = tower::Layer::layer(&one.layer, MemoryKvStore::new());
    store
        .set(&key, 2.into(), SetOptions::default())
        .await
        .unwrap();
    eventually!("the other tier to drop k", !two.has(&key).await);
    // The writing tier kept its own value.
    assert_eq!(one.layer.front().get(&key).await.unwrap(), Some(2.into()));
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

#[tokio::test]
async fn zero_settings_are_config_errors() {
    if support::redis().is_none() {
        return;
    }
    for builder in [
        RedisInvalidationBus::builder(redis_url()).heartbeat(Duration::ZERO),
        RedisInvalidationBus::builder(redis_url()).publish_timeout(Duration::ZERO),
        RedisInvalidationBus::builder(redis_url()).connect_timeout(Duration::ZERO),
        RedisInvalidationBus::builder(redis_url()).queue_capacity(0),
    ] {
        let err = builder.connect().await.unwrap_err();
        assert_eq!(err.kind(), kvtower::ErrorKind::Config, "{err}");
    }
}

/// The first publish after the bus's Redis restarted was lost (one attempt,
/// on a connection the restart had broken): it is retried now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publish_after_a_restart_is_delivered() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let channel = channel("restart");
    let builder = |url: String| {
        RedisInvalidationBus::builder(url)
            .channel(channel.clone())
            .heartbeat(Duration::from_millis(100))
    };
    let a = builder(server.url()).connect().await.unwrap();
    let b = builder(server.url()).connect().await.unwrap();
    let pb = Probe::on(&b);
    server.restart();
    // b has resubscribed (and cleared); a's publisher has not written since.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !b.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("b resubscribes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = kvkey!["after-restart"];
    pb.seed(std::slice::from_ref(&key)).await;
    a.publish(std::slice::from_ref(&key)).await;
    eventually!(
        "b to hear the first publish after the restart",
        !pb.has(&key).await
    );
}
