//! `CacheLayerBuilder::stale_if_error`: a read whose inner store fails is
//! answered from the last value the layer put in front, within the bound,
//! against a private `redis-server` that the tests kill (no mock: the outage
//! is a real dead server).

#![cfg(feature = "redis")]

mod support;

use std::time::Duration;

use kvtower::layers::{Cache, CacheLayer, CircuitBreakerLayer};
use kvtower::{kvkey, ErrorKind, KvStore, MemoryKvStore, RedisKvStore, SetOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;
use support::RedisServer;
use tower::{Layer, ServiceBuilder};

const FRONT_TTL: Duration = Duration::from_millis(200);

async fn redis(server: &RedisServer) -> RedisKvStore {
    RedisKvStore::builder()
        .timeout(Duration::from_millis(500))
        .connect(&server.url())
        .await
        .unwrap()
}

/// A cache over `server` whose front entries live [`FRONT_TTL`], with stale
/// copies served up to `stale` past it (none when `None`).
async fn stack(
    server: &RedisServer,
    stale: Option<Duration>,
) -> Cache<RedisKvStore, MemoryKvStore> {
    let mut builder = CacheLayer::builder(MemoryKvStore::new()).front_max_ttl(FRONT_TTL);
    if let Some(max) = stale {
        builder = builder.stale_if_error(max);
    }
    builder.build().layer(redis(server).await)
}

#[tokio::test]
async fn a_dead_inner_store_is_answered_from_stale_copies_within_the_bound() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || {
        CacheLayer::builder(MemoryKvStore::new())
            .front_max_ttl(FRONT_TTL)
            .stale_if_error(Duration::from_secs(30))
            .name("stale-test")
            .build()
    });
    let store = layer.layer(redis(&server).await);
    let (written, filled, never) = (kvkey!["written"], kvkey!["filled"], kvkey!["never"]);
    store
        .set(&written, json!({"v": 1}), SetOptions::default())
        .await
        .unwrap();
    store
        .inner()
        .set(&filled, json!(2), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&filled).await.unwrap(), Some(json!(2))); // a fill
    tokio::time::sleep(FRONT_TTL * 2).await; // both front entries are gone
    server.kill();

    assert_eq!(store.get(&written).await.unwrap(), Some(json!({"v": 1})));
    assert_eq!(store.get(&filled).await.unwrap(), Some(json!(2)));
    let (value, ttl) = store.get_with_ttl(&filled).await.unwrap().unwrap();
    assert_eq!(
        (value, ttl),
        (json!(2), Some(Duration::ZERO)),
        "stale: no lifetime left"
    );
    assert_eq!(
        store
            .get_many(&[written.clone(), filled.clone()])
            .await
            .unwrap(),
        vec![Some(json!({"v": 1})), Some(json!(2))]
    );
    // A key with no copy: the inner store's error, not a guessed "absent".
    let err = store.get(&never).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let err = store
        .get_many(&[written.clone(), never.clone()])
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // Writes fail and leave nothing in front claiming they landed.
    let err = store
        .set(&written, json!("new"), SetOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(store.front().get(&written).await.unwrap(), None);

    let served: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "kvtower_cache_stale_served_total")
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
        .sum();
    // get ×2, get_with_ttl, get_many of two keys.
    assert_eq!(served, 5);
}

#[tokio::test]
async fn a_failed_write_drops_the_stale_copy() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let store = stack(&server, Some(Duration::from_secs(30))).await;
    let key = kvkey!["k"];
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    server.kill();
    assert!(store
        .set(&key, json!(2), SetOptions::default())
        .await
        .is_err());
    tokio::time::sleep(FRONT_TTL * 2).await;
    let err = store.get(&key).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn deletes_and_invalidations_drop_copies_and_clear_keeps_them() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let store = stack(&server, Some(Duration::from_secs(30))).await;
    let (deleted, invalidated, cleared) =
        (kvkey!["deleted"], kvkey!["invalidated"], kvkey!["cleared"]);
    for key in [&deleted, &invalidated, &cleared] {
        store
            .set(key, json!("v"), SetOptions::default())
            .await
            .unwrap();
    }
    store.delete(&deleted).await.unwrap();
    store.handle().invalidate(&invalidated).await.unwrap();
    // What a coherence source does when it may have missed changes.
    store.handle().clear().await.unwrap();
    server.kill();
    // A deleted value never comes back, whatever fails.
    assert!(store.get(&deleted).await.is_err());
    assert!(store.get(&invalidated).await.is_err());
    assert_eq!(store.get(&cleared).await.unwrap(), Some(json!("v")));
}

#[tokio::test]
async fn copies_are_served_only_within_the_bound_and_only_when_enabled() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let bounded = stack(&server, Some(Duration::from_millis(300))).await;
    let off = stack(&server, None).await;
    let key = kvkey!["k"];
    bounded
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    off.set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(FRONT_TTL + Duration::from_millis(50)).await;
    server.kill();
    assert_eq!(bounded.get(&key).await.unwrap(), Some(json!(1)));
    let err = off.get(&key).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // Past the front TTL plus the bound.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(bounded.get(&key).await.is_err());
}

#[tokio::test]
async fn a_non_retryable_error_is_never_masked() {
    let Some(server) = support::private_redis() else {
        return;
    };
    let store = stack(&server, Some(Duration::from_secs(30))).await;
    let key = kvkey!["k"];
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(FRONT_TTL * 2).await;
    // Another program overwrote the key with something that is not JSON.
    server.cli(&["SET", &store.inner().redis_key(&key), "not json"]);
    let err = store.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err}");
}

#[tokio::test]
async fn an_open_circuit_breaker_is_answered_from_stale_copies() {
    let Some(mut server) = support::private_redis() else {
        return;
    };
    let store = ServiceBuilder::new()
        .layer(
            CacheLayer::builder(MemoryKvStore::new())
                .front_max_ttl(FRONT_TTL)
                .stale_if_error(Duration::from_secs(30))
                .build(),
        )
        .layer(
            CircuitBreakerLayer::builder("redis")
                .failure_threshold(2)
                .cooldown(Duration::from_secs(60))
                .build(),
        )
        .service(redis(&server).await);
    let key = kvkey!["k"];
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(FRONT_TTL * 2).await;
    server.kill();
    for _ in 0..4 {
        assert_eq!(store.get(&key).await.unwrap(), Some(json!(1)));
    }
    let err = store.get(&kvkey!["other"]).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Unavailable,
        "the breaker is open: {err}"
    );
}
