//! The layers: the conformance suite through stacks and each layer alone,
//! and the behaviour each layer promises.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use kvtower::layers::{CacheLayer, DefaultTtlLayer, MetricsLayer, PrefixLayer, TracingLayer};
use kvtower::service::{KvServiceLayer, ServiceStoreLayer};
use kvtower::Operation;
use kvtower::{
    kvkey, DynKvStore, ErrorKind, KvKey, KvStore, KvStoreExt, MemoryKvStore, SetOptions,
};
use serde_json::json;
use support::{full_stack, Probe};
use tower::{Layer, ServiceBuilder};

/// metrics + prefix + default TTL + cache over memory. Over Redis once it
/// exists: `full_stack(redis_store)` in a factory like this one.
mod full_stack_over_memory {
    kvtower::conformance_suite!(|| async { super::full_stack(kvtower::MemoryKvStore::new()) });
}

mod cache_alone {
    use kvtower::layers::CacheLayer;
    use kvtower::MemoryKvStore;
    use tower::Layer;
    kvtower::conformance_suite!(|| async {
        CacheLayer::new(MemoryKvStore::new()).layer(MemoryKvStore::new())
    });
}

mod cache_with_negative_caching {
    use kvtower::layers::CacheLayer;
    use kvtower::MemoryKvStore;
    use std::time::Duration;
    use tower::Layer;
    kvtower::conformance_suite!(|| async {
        CacheLayer::builder(MemoryKvStore::new())
            .negative_ttl(Duration::from_secs(60))
            .build()
            .layer(MemoryKvStore::new())
    });
}

mod three_tiers {
    use kvtower::layers::CacheLayer;
    use kvtower::MemoryKvStore;
    use tower::ServiceBuilder;
    kvtower::conformance_suite!(|| async {
        ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryKvStore::new()))
            .layer(CacheLayer::new(MemoryKvStore::new()))
            .service(MemoryKvStore::new())
    });
}

mod prefix_alone {
    use kvtower::layers::PrefixLayer;
    use kvtower::{kvkey, MemoryKvStore};
    use tower::Layer;
    kvtower::conformance_suite!(|| async {
        PrefixLayer::new(kvkey!["p", ""]).layer(MemoryKvStore::new())
    });
}

mod default_ttl_alone {
    use kvtower::layers::DefaultTtlLayer;
    use kvtower::MemoryKvStore;
    use std::time::Duration;
    use tower::Layer;
    kvtower::conformance_suite!(|| async {
        DefaultTtlLayer::new(Duration::from_secs(3600))
            .jitter(Duration::from_secs(60))
            .layer(MemoryKvStore::new())
    });
}

mod metrics_alone {
    use kvtower::layers::MetricsLayer;
    use kvtower::MemoryKvStore;
    use tower::Layer;
    kvtower::conformance_suite!(|| async {
        MetricsLayer::new("alone").layer(MemoryKvStore::new())
    });
}

mod tracing_alone {
    use kvtower::layers::TracingLayer;
    use kvtower::MemoryKvStore;
    use tower::Layer;
    kvtower::conformance_suite!(|| async {
        TracingLayer::new("alone").layer(MemoryKvStore::new())
    });
}

/// A store through tower middleware and back: the bridge loses nothing.
mod service_bridge {
    use kvtower::layers::CacheLayer;
    use kvtower::service::{KvServiceLayer, ServiceStoreLayer};
    use kvtower::MemoryKvStore;
    use std::time::Duration;
    use tower::ServiceBuilder;
    kvtower::conformance_suite!(|| async {
        ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryKvStore::new()))
            .layer(ServiceStoreLayer)
            .timeout(Duration::from_secs(10))
            .concurrency_limit(64)
            .layer(KvServiceLayer)
            .service(MemoryKvStore::new())
    });
}

fn cache_over(
    probe: &Probe,
) -> (
    CacheLayer<MemoryKvStore>,
    kvtower::layers::Cache<Probe, MemoryKvStore>,
) {
    let layer = CacheLayer::new(MemoryKvStore::new());
    let store = layer.layer(probe.clone());
    (layer, store)
}

#[tokio::test]
async fn a_write_through_the_stack_is_read_back_and_fills_the_front() {
    let probe = Probe::new();
    let (layer, store) = cache_over(&probe);
    let key = kvkey!["user", "1"];
    store
        .set(&key, json!("Ada"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        layer.front().get(&key).await.unwrap(),
        Some(json!("Ada")),
        "write-through updates the front"
    );
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("Ada")));
    assert_eq!(probe.gets(), 0, "served by the front");
    assert_eq!(
        probe.store.get(&key).await.unwrap(),
        Some(json!("Ada")),
        "written to the inner store"
    );

    // Read-through: a value only the inner store has is read once, then served by the front.
    let other = kvkey!["user", "2"];
    probe
        .store
        .set(&other, json!("Grace"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&other).await.unwrap(), Some(json!("Grace")));
    assert_eq!(store.get(&other).await.unwrap(), Some(json!("Grace")));
    assert_eq!(probe.gets(), 1);
}

#[tokio::test]
async fn a_value_deleted_in_the_inner_store_disappears_after_the_front_ttl() {
    let probe = Probe::new();
    let store = CacheLayer::builder(MemoryKvStore::new())
        .front_max_ttl(Duration::from_millis(1000))
        .build()
        .layer(probe.clone());
    let key = kvkey!["k"];
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    probe.store.delete(&key).await.unwrap();
    // Within the front TTL the front may still answer (the documented bound)...
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(1)));
    // ...and after it, the key is absent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn the_front_never_outlives_the_write_ttl() {
    let probe = Probe::new();
    let (layer, store) = cache_over(&probe);
    let key = kvkey!["short"];
    store
        .set(&key, json!(1), SetOptions::ttl(Duration::from_millis(1000)))
        .await
        .unwrap();
    assert_eq!(layer.front().get(&key).await.unwrap(), Some(json!(1)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(layer.front().get(&key).await.unwrap(), None);
    assert_eq!(store.get(&key).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_misses_make_one_inner_read() {
    let probe = Probe::new();
    probe.delay_gets(Duration::from_millis(50));
    let (_, store) = cache_over(&probe);
    let key = kvkey!["missing"];
    let answers = join_all((0..1000).map(|_| store.get(&key))).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(None))));
    assert_eq!(
        probe.gets(),
        1,
        "one inner read for 1,000 concurrent misses"
    );

    // The same for a present key, and the next read is a front hit.
    let present = kvkey!["present"];
    probe
        .store
        .set(&present, json!("v"), SetOptions::default())
        .await
        .unwrap();
    let answers = join_all((0..1000).map(|_| store.get(&present))).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(Some(v)) if v == "v")));
    assert_eq!(probe.gets(), 2);
    store.get(&present).await.unwrap();
    assert_eq!(probe.gets(), 2);
}

#[tokio::test(start_paused = true)]
async fn followers_share_the_leaders_error_and_a_cancelled_leader_is_replaced() {
    let probe = Probe::new();
    probe.delay_gets(Duration::from_millis(50));
    let (_, store) = cache_over(&probe);
    let store = Arc::new(store);
    let key = kvkey!["k"];
    probe.fail_reads(true);
    let answers = join_all((0..10).map(|_| store.get(&key))).await;
    for answer in &answers {
        let err = answer.as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());
    }
    assert_eq!(probe.gets(), 1);
    probe.fail_reads(false);

    // A leader cancelled mid-read: its followers still get an answer.
    probe
        .store
        .set(&key, json!(7), SetOptions::default())
        .await
        .unwrap();
    let leader = {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move { store.get(&key).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await; // the leader is now reading
    let follower = {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move { store.get(&key).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    let answer = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.unwrap(), Some(json!(7)));
}

#[tokio::test(start_paused = true)]
async fn a_write_racing_an_inflight_fill_wins() {
    let probe = Probe::new();
    probe.delay_gets(Duration::from_millis(100)); // the read's answer arrives late
    let (layer, store) = cache_over(&probe);
    let store = Arc::new(store);
    let key = kvkey!["raced"];
    probe
        .store
        .set(&key, json!("old"), SetOptions::default())
        .await
        .unwrap();
    let reader = {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move { store.get(&key).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await; // the reader has read "old"
    store
        .set(&key, json!("new"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        reader.await.unwrap().unwrap(),
        Some(json!("old")),
        "concurrent with the write"
    );
    assert_eq!(
        layer.front().get(&key).await.unwrap(),
        Some(json!("new")),
        "the stale fill was dropped"
    );
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("new")));
}

#[tokio::test]
async fn a_failing_inner_write_never_leaves_the_new_value_in_front() {
    let probe = Probe::new();
    let (layer, store) = cache_over(&probe);
    let key = kvkey!["k"];
    store
        .set(&key, json!("old"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("old")));
    probe.fail_writes(true);

    let err = store
        .set(&key, json!("new"), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_ne!(layer.front().get(&key).await.unwrap(), Some(json!("new")));
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("old")));

    assert!(store
        .cas(
            &key,
            Some(&json!("old")),
            Some(json!("new")),
            SetOptions::default()
        )
        .await
        .is_err());
    assert_ne!(layer.front().get(&key).await.unwrap(), Some(json!("new")));
    assert!(store.delete(&key).await.is_err());
    assert!(store
        .set_many(vec![(key.clone(), json!("new"))], SetOptions::default())
        .await
        .is_err());
    assert!(store.delete_many(std::slice::from_ref(&key)).await.is_err());
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(json!("old")),
        "the inner value is what is read"
    );
    assert_ne!(layer.front().get(&key).await.unwrap(), Some(json!("new")));
}

#[tokio::test]
async fn a_failing_front_never_fails_a_read() {
    let front = Probe::new();
    let inner = MemoryKvStore::new();
    let store = CacheLayer::new(front.clone()).layer(inner.clone());
    inner
        .set(&kvkey!["k"], json!(1), SetOptions::default())
        .await
        .unwrap();
    front.fail_reads(true);
    front.fail_writes(true);
    assert_eq!(store.get(&kvkey!["k"]).await.unwrap(), Some(json!(1)));
    store
        .set(&kvkey!["k"], json!(2), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["k"]).await.unwrap(), Some(json!(2)));
    assert_eq!(
        store.get_many(&[kvkey!["k"]]).await.unwrap(),
        vec![Some(json!(2))]
    );
}

#[tokio::test]
async fn cas_is_decided_by_the_inner_store_and_refreshes_a_stale_front() {
    let probe = Probe::new();
    let (layer, store) = cache_over(&probe);
    let key = kvkey!["c"];
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    probe
        .store
        .set(&key, json!(2), SetOptions::default())
        .await
        .unwrap(); // around the cache
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(json!(1)),
        "the front is stale"
    );
    assert!(!store
        .cas(&key, Some(&json!(1)), Some(json!(3)), SetOptions::default())
        .await
        .unwrap());
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(json!(2)),
        "a failed cas invalidated the front"
    );
    assert!(store
        .cas(&key, Some(&json!(2)), Some(json!(3)), SetOptions::default())
        .await
        .unwrap());
    assert_eq!(layer.front().get(&key).await.unwrap(), Some(json!(3)));
    assert!(store
        .cas(&key, Some(&json!(3)), None, SetOptions::default())
        .await
        .unwrap());
    assert_eq!(layer.front().get(&key).await.unwrap(), None);
    assert_eq!(store.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn get_many_serves_hits_from_front_and_fetches_misses_in_one_batch() {
    let probe = Probe::new();
    let (_, store) = cache_over(&probe);
    store
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    probe
        .store
        .set(&kvkey!["b"], json!(2), SetOptions::default())
        .await
        .unwrap();
    let keys = [kvkey!["a"], kvkey!["b"], kvkey!["c"]];
    assert_eq!(
        store.get_many(&keys).await.unwrap(),
        vec![Some(json!(1)), Some(json!(2)), None]
    );
    assert_eq!(
        probe
            .control
            .get_manys
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(probe.gets(), 0);
    // "b" is now in front: only "c" is fetched.
    assert_eq!(store.get(&kvkey!["b"]).await.unwrap(), Some(json!(2)));
    assert_eq!(probe.gets(), 0);
}

#[tokio::test]
async fn negative_caching_remembers_absent_keys_until_a_write() {
    let probe = Probe::new();
    let store = CacheLayer::builder(MemoryKvStore::new())
        .negative_ttl(Duration::from_millis(1000))
        .build()
        .layer(probe.clone());
    let key = kvkey!["n"];
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(
        probe.gets(),
        1,
        "the second miss was answered from the negative cache"
    );
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(json!(1)),
        "a write forgets the absence"
    );

    // A key created around the cache stays hidden for at most the negative TTL.
    let other = kvkey!["m"];
    assert_eq!(store.get(&other).await.unwrap(), None);
    probe
        .store
        .set(&other, json!(2), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&other).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.get(&other).await.unwrap(), Some(json!(2)));
}

#[tokio::test]
async fn the_handle_invalidates_and_clears_and_the_hook_sees_writes() {
    let written: Arc<Mutex<Vec<KvKey>>> = Arc::default();
    let probe = Probe::new();
    let layer = {
        let written = written.clone();
        CacheLayer::builder(MemoryKvStore::new())
            .on_write(move |key: &KvKey| written.lock().unwrap().push(key.clone()))
            .build()
    };
    let store = layer.layer(probe.clone());
    let handle = store.handle();
    store
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    store
        .set(&kvkey!["b"], json!(1), SetOptions::default())
        .await
        .unwrap();
    store.delete(&kvkey!["c"]).await.unwrap();
    assert!(!store
        .cas(&kvkey!["z"], Some(&json!(1)), None, SetOptions::default())
        .await
        .unwrap());
    assert_eq!(
        *written.lock().unwrap(),
        vec![kvkey!["a"], kvkey!["b"], kvkey!["c"]]
    );

    probe
        .store
        .set(&kvkey!["a"], json!(2), SetOptions::default())
        .await
        .unwrap();
    probe
        .store
        .set(&kvkey!["b"], json!(2), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["a"]).await.unwrap(), Some(json!(1)));
    handle.invalidate(&kvkey!["a"]).await.unwrap();
    assert_eq!(store.get(&kvkey!["a"]).await.unwrap(), Some(json!(2)));
    assert_eq!(store.get(&kvkey!["b"]).await.unwrap(), Some(json!(1)));
    layer.handle().clear().await.unwrap();
    assert_eq!(store.get(&kvkey!["b"]).await.unwrap(), Some(json!(2)));
    assert!(layer.front().list_all(None).await.unwrap().len() <= 2);
}

#[tokio::test]
async fn three_tiers_fill_each_front() {
    let l1 = CacheLayer::new(MemoryKvStore::new());
    let l2 = CacheLayer::new(MemoryKvStore::new());
    let backing = MemoryKvStore::new();
    let store = ServiceBuilder::new()
        .layer(l1.clone())
        .layer(l2.clone())
        .service(backing.clone());
    backing
        .set(&kvkey!["k"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["k"]).await.unwrap(), Some(json!(1)));
    assert_eq!(l1.front().get(&kvkey!["k"]).await.unwrap(), Some(json!(1)));
    assert_eq!(l2.front().get(&kvkey!["k"]).await.unwrap(), Some(json!(1)));
    store.delete(&kvkey!["k"]).await.unwrap();
    assert_eq!(l1.front().get(&kvkey!["k"]).await.unwrap(), None);
    assert_eq!(l2.front().get(&kvkey!["k"]).await.unwrap(), None);
}

#[tokio::test]
async fn prefixes_isolate_stacks_over_one_store() {
    let shared = Arc::new(MemoryKvStore::new());
    let a = PrefixLayer::new(kvkey!["a"]).layer(shared.clone());
    let b = PrefixLayer::new(kvkey!["b"]).layer(shared.clone());
    let key = kvkey!["user", "1"];
    a.set(&key, json!("a"), SetOptions::default())
        .await
        .unwrap();
    b.set(&key, json!("b"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(a.get(&key).await.unwrap(), Some(json!("a")));
    assert_eq!(b.get(&key).await.unwrap(), Some(json!("b")));
    a.set_many(vec![(kvkey!["x"], json!(1))], SetOptions::default())
        .await
        .unwrap();
    assert_eq!(b.get_many(&[kvkey!["x"]]).await.unwrap(), vec![None]);
    assert_eq!(
        shared.get(&kvkey!["~a", "x"]).await.unwrap(),
        Some(json!(1))
    );
    b.delete_many(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(a.get(&key).await.unwrap(), Some(json!("a")));
    // The key equal to the prefix is not reachable through the layer.
    shared
        .set(&kvkey!["~a"], json!("bare"), SetOptions::default())
        .await
        .unwrap();
    let listed: Vec<KvKey> = a
        .list_all(None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&key) && listed.contains(&kvkey!["x"]));
    assert!(b.list_all(None).await.unwrap().is_empty());
    assert!(!a
        .cas(&key, Some(&json!("b")), None, SetOptions::default())
        .await
        .unwrap());
}

#[tokio::test]
async fn default_ttl_applies_to_writes_without_one() {
    let inner = MemoryKvStore::new();
    let store = DefaultTtlLayer::new(Duration::from_millis(1000))
        .max_ttl(Duration::from_millis(1200))
        .layer(inner.clone());
    store
        .set(&kvkey!["default"], json!(1), SetOptions::default())
        .await
        .unwrap();
    store
        .set(
            &kvkey!["clamped"],
            json!(1),
            SetOptions::ttl(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    store
        .cas(&kvkey!["cas"], None, Some(json!(1)), SetOptions::default())
        .await
        .unwrap();
    store
        .set_many(vec![(kvkey!["many"], json!(1))], SetOptions::default())
        .await
        .unwrap();
    store
        .set(&kvkey!["zero"], json!(1), SetOptions::ttl(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        store.get(&kvkey!["zero"]).await.unwrap(),
        None,
        "TTL zero stays expired"
    );
    assert_eq!(store.list_all(None).await.unwrap().len(), 4);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        inner.list_all(None).await.unwrap().is_empty(),
        "every write got a TTL"
    );
}

#[tokio::test]
async fn tower_timeout_and_load_shed_errors_map_to_kvtower_errors() {
    let probe = Probe::new();
    probe.delay_gets(Duration::from_millis(500));
    let store = ServiceBuilder::new()
        .layer(ServiceStoreLayer)
        .timeout(Duration::from_millis(50))
        .layer(KvServiceLayer)
        .service(probe.clone());
    let err = store.get(&kvkey!["slow"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_retryable());
    assert_eq!(err.operation(), Some(Operation::Get));

    // One slot, shed when busy: the second concurrent call is refused.
    let store = Arc::new(
        ServiceBuilder::new()
            .layer(ServiceStoreLayer)
            .load_shed()
            .concurrency_limit(1)
            .layer(KvServiceLayer)
            .service(probe.clone()),
    );
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.get(&kvkey!["a"]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = store.get(&kvkey!["b"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert_eq!(first.await.unwrap().unwrap(), None);

    // Errors of the store pass through the bridge unchanged.
    probe.fail_writes(true);
    let err = store
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.message(), "injected write failure");
}

#[tokio::test]
async fn any_stack_boxes_as_dyn_kv_store() {
    let stack: DynKvStore = Arc::new(
        ServiceBuilder::new()
            .layer(TracingLayer::new("dyn"))
            .layer(MetricsLayer::new("dyn"))
            .service(full_stack(MemoryKvStore::new())),
    );
    stack
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(stack.get_as::<i32>(&kvkey!["a"]).await.unwrap(), Some(1));
}

#[path = "../examples/tower_middleware.rs"]
mod tower_example;

#[tokio::test]
async fn tower_timeout_and_retry_hide_a_flaky_backend() {
    let calls = tower_example::run().await.unwrap();
    // 20 writes reach the backend; reads are front hits; failures were retried.
    assert!(calls > 20, "{calls}");
}
