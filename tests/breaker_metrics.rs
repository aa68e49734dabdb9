//! CircuitBreakerLayer's metrics (issue 13: "state as a metrics gauge"):
//! the state gauge and the transition and rejection counters, read from a
//! real recorder (metrics-util's debugging recorder, installed globally for
//! this test binary: keep one test here).

mod support;

use std::time::Duration;

use kvtower::layers::circuit_breaker::{
    BREAKER_REJECTED_TOTAL, BREAKER_STATE, BREAKER_TRANSITIONS_TOTAL, LABEL_BREAKER, LABEL_STATE,
};
use kvtower::layers::CircuitBreakerLayer;
use kvtower::{kvkey, ErrorKind, KvStore};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::Probe;
use tower::Layer;

/// Counter totals and gauge values so far: the debugging recorder's
/// snapshot drains counters, so counters are summed across snapshots here.
#[derive(Default)]
struct Totals(std::cell::RefCell<Vec<Seen>>);

/// A metric name, its sorted labels, and its value so far.
type Seen = (String, Vec<(String, String)>, f64);

impl Totals {
    fn value(&self, snapshotter: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut seen = self.0.borrow_mut();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut key_labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            key_labels.sort();
            let slot = match seen
                .iter_mut()
                .position(|(n, l, _)| n == key.name() && *l == key_labels)
            {
                Some(i) => &mut seen[i].2,
                None => {
                    seen.push((key.name().to_owned(), key_labels, 0.0));
                    &mut seen.last_mut().unwrap().2
                }
            };
            match value {
                DebugValue::Counter(n) => *slot += n as f64,
                DebugValue::Gauge(g) => *slot = g.into_inner(),
                DebugValue::Histogram(h) => *slot += h.len() as f64,
            }
        }
        seen.iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
    }
}

#[tokio::test(start_paused = true)]
async fn state_gauge_and_transitions_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let totals = Totals::default();
    let value = |snapshotter: &Snapshotter, name: &str, labels: &[(&str, &str)]| {
        totals.value(snapshotter, name, labels)
    };

    let probe = Probe::new();
    let store = CircuitBreakerLayer::builder("redis")
        .failure_threshold(2)
        .cooldown(Duration::from_secs(1))
        .build()
        .layer(probe.clone());
    let key = kvkey!["k"];
    let breaker = [(LABEL_BREAKER, "redis")];
    let transitions = |state: &str| {
        value(
            &snapshotter,
            BREAKER_TRANSITIONS_TOTAL,
            &[(LABEL_BREAKER, "redis"), (LABEL_STATE, state)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(value(&snapshotter, BREAKER_STATE, &breaker), Some(0.0));

    probe.fail_reads(true);
    for _ in 0..2 {
        assert!(store.get(&key).await.is_err());
    }
    assert_eq!(value(&snapshotter, BREAKER_STATE, &breaker), Some(1.0));
    assert_eq!(transitions("open"), 1.0);
    // Open: the store is not called, the call fails fast and is counted.
    let gets = probe.gets();
    let err = store.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(probe.gets(), gets);
    assert_eq!(
        value(&snapshotter, BREAKER_REJECTED_TOTAL, &breaker),
        Some(1.0)
    );

    // After the cooldown a probe goes through; its success closes the breaker.
    tokio::time::advance(Duration::from_millis(1_100)).await;
    probe.fail_reads(false);
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(transitions("half_open"), 1.0);
    assert_eq!(transitions("closed"), 1.0);
    assert_eq!(value(&snapshotter, BREAKER_STATE, &breaker), Some(0.0));
}
