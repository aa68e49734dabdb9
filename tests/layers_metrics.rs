//! MetricsLayer and the cache's per-tier counters, recorded by a real
//! recorder (metrics-util's debugging recorder, installed globally for this
//! test binary: keep one test here).

mod support;

use std::collections::HashMap;

use kvtower::layers::metrics::{
    CACHE_REQUESTS_TOTAL, OPERATIONS_TOTAL, OPERATION_DURATION_SECONDS, OPERATION_ERRORS_TOTAL,
};
use kvtower::layers::{CacheLayer, MetricsLayer};
use kvtower::{kvkey, KvStore, KvStoreExt, MemoryKvStore, SetOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use serde_json::json;
use support::Probe;
use tower::ServiceBuilder;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    labels
}

#[tokio::test]
async fn operations_and_tiers_are_counted_and_timed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let probe = Probe::new();
    // Metrics outside and inside the cache: callers' view and backend traffic.
    let store = ServiceBuilder::new()
        .layer(MetricsLayer::new("outer"))
        .layer(
            CacheLayer::builder(MemoryKvStore::new())
                .name("users")
                .build(),
        )
        .layer(MetricsLayer::new("backend"))
        .service(probe.clone());

    store
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    probe
        .store
        .set(&kvkey!["c"], json!(3), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["a"]).await.unwrap(), Some(json!(1))); // front hit
    assert_eq!(store.get(&kvkey!["b"]).await.unwrap(), None); // front miss, inner miss
    assert_eq!(store.get(&kvkey!["c"]).await.unwrap(), Some(json!(3))); // front miss, inner hit
    assert_eq!(store.get(&kvkey!["c"]).await.unwrap(), Some(json!(3))); // front hit
    assert_eq!(store.list_all(None).await.unwrap().len(), 2);
    store.get_many(&[kvkey!["a"], kvkey!["d"]]).await.unwrap(); // front hit + miss, inner miss
    probe.fail_writes(true);
    assert!(store
        .set(&kvkey!["a"], json!(2), SetOptions::default())
        .await
        .is_err());

    let mut counters: HashMap<(String, Labels), u64> = HashMap::new();
    let mut histograms: HashMap<(String, Labels), usize> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_string();
        let mut l: Labels = key
            .key()
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        l.sort();
        assert!(
            !l.iter().any(|(_, v)| v == "a" || v == "b" || v == "c"),
            "a key leaked into labels: {name} {l:?}"
        );
        match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                counters.insert((name, l), n);
            }
            (MetricKind::Histogram, DebugValue::Histogram(samples)) => {
                histograms.insert((name, l), samples.len());
            }
            other => panic!("unexpected metric {name}: {other:?}"),
        }
    }
    let counter = |name: &str, pairs: &[(&str, &str)]| {
        counters
            .get(&(name.to_string(), labels(pairs)))
            .copied()
            .unwrap_or(0)
    };

    let op = |store: &str, operation: &str, outcome: &str| {
        counter(
            OPERATIONS_TOTAL,
            &[
                ("store", store),
                ("operation", operation),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(op("outer", "get", "hit"), 3);
    assert_eq!(op("outer", "get", "miss"), 1);
    assert_eq!(op("outer", "set", "ok"), 1);
    assert_eq!(op("outer", "set", "error"), 1);
    assert_eq!(op("outer", "list", "ok"), 1);
    assert_eq!(op("outer", "get_many", "ok"), 1);
    assert_eq!(
        counter(
            OPERATION_ERRORS_TOTAL,
            &[
                ("store", "outer"),
                ("operation", "set"),
                ("error_kind", "unavailable")
            ]
        ),
        1
    );
    // Inside the cache only the backend traffic is seen.
    assert_eq!(op("backend", "get", "hit"), 1);
    assert_eq!(op("backend", "get", "miss"), 1);
    assert_eq!(op("backend", "get_many", "ok"), 1);
    assert_eq!(op("backend", "set", "error"), 1);

    let tier = |tier: &str, outcome: &str| {
        counter(
            CACHE_REQUESTS_TOTAL,
            &[("cache", "users"), ("tier", tier), ("outcome", outcome)],
        )
    };
    assert_eq!(tier("front", "hit"), 3);
    assert_eq!(tier("front", "miss"), 3);
    assert_eq!(tier("inner", "hit"), 1);
    assert_eq!(tier("inner", "miss"), 2);

    assert_eq!(
        histograms[&(
            OPERATION_DURATION_SECONDS.to_string(),
            labels(&[("store", "outer"), ("operation", "get")])
        )],
        4
    );
    assert_eq!(
        histograms[&(
            OPERATION_DURATION_SECONDS.to_string(),
            labels(&[("store", "backend"), ("operation", "get")])
        )],
        2
    );
}
