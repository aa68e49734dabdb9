//! The cache layer's promises about time and order, one regression test per
//! defect of issue 11: TTLs measured from before the inner call, failed
//! writes that never lengthen a deadline, read-after-write, late-landing
//! writes, invalidations that never wait on local writes, and durations a
//! dependency cannot take.
//!
//! The inner store is a real `MemoryKvStore` behind [`Faulty`], a wrapper
//! that injects only latency and failures (the timing races cannot be
//! provoked reliably otherwise). moka keeps its own clock, so expiry is
//! tested with short real sleeps.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use kvtower::layers::CacheLayer;
use kvtower::Operation;
use kvtower::{
    kvkey, Capabilities, Error, ErrorKind, KvEntry, KvKey, KvStore, MemoryKvStore, Result,
    SetOptions, Value,
};
use serde_json::json;
use tower::Layer;

/// What [`Faulty`] injects, switchable during a test.
#[derive(Debug, Default)]
struct Faults {
    /// Milliseconds a `get` waits after reading (its answer is stale by then).
    get_delay_ms: AtomicU64,
    /// Milliseconds a write waits after it landed, before it returns.
    write_delay_ms: AtomicU64,
    /// Writes return a timeout at once and land this many milliseconds later
    /// (0: off).
    late_landing_ms: AtomicU64,
    /// Writes fail without landing, with a non-retryable error.
    reject_writes: AtomicBool,
}

/// A real `MemoryKvStore` with injected latency and failures. It keeps the
/// default `KvStore` methods it does not need, so it is also a third-party
/// store that cannot report TTLs.
#[derive(Debug, Clone, Default)]
struct Faulty {
    store: MemoryKvStore,
    faults: Arc<Faults>,
}

impl Faulty {
    fn ms(field: &AtomicU64) -> Option<Duration> {
        match field.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Runs a write with the faults switched on now.
    async fn write<T: Send + 'static>(
        &self,
        op: Operation,
        write: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        if self.faults.reject_writes.load(Ordering::SeqCst) {
            return Err(
                Error::new(ErrorKind::InvalidValue, "injected rejection").with_operation(op)
            );
        }
        if let Some(late) = Self::ms(&self.faults.late_landing_ms) {
            tokio::spawn(async move {
                tokio::time::sleep(late).await;
                let _ = write.await;
            });
            return Err(Error::new(ErrorKind::Timeout, "injected timeout").with_operation(op));
        }
        let result = write.await;
        if let Some(delay) = Self::ms(&self.faults.write_delay_ms) {
            tokio::time::sleep(delay).await;
        }
        result
    }
}

#[async_trait]
impl KvStore for Faulty {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        let result = self.store.get(key).await;
        if let Some(delay) = Self::ms(&self.faults.get_delay_ms) {
            tokio::time::sleep(delay).await;
        }
        result
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let (store, key) = (self.store.clone(), key.clone());
        self.write(Operation::Set, async move {
            store.set(&key, value, options).await
        })
        .await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        let (store, key) = (self.store.clone(), key.clone());
        self.write(Operation::Delete, async move { store.delete(&key).await })
            .await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let (store, key, expected) = (self.store.clone(), key.clone(), expected.cloned());
        self.write(Operation::Cas, async move {
            store.cas(&key, expected.as_ref(), new, options).await
        })
        .await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        self.store.list(prefix)
    }

    fn capabilities(&self) -> Capabilities {
        // The trait's default get_with_ttl: it cannot tell.
        Capabilities::full().with_reports_ttl(false)
    }
}

fn stack(inner: &Faulty) -> (CacheLayer<MemoryKvStore>, impl KvStore) {
    let layer = CacheLayer::builder(MemoryKvStore::new())
        .front_max_ttl(Duration::from_secs(60))
        .unknown_outcome_window(Duration::from_millis(400))
        .build();
    let store = layer.layer(inner.clone());
    (layer, store)
}

/// Defect 3: a `get` started after a `delete` returned joined the read that
/// was in flight before it, and returned the deleted value.
#[tokio::test(start_paused = true)]
async fn a_get_after_a_write_never_joins_an_older_read() {
    let inner = Faulty::default();
    let (_layer, store) = stack(&inner);
    let store = Arc::new(store);
    let key = kvkey!["raw"];
    inner
        .store
        .set(&key, json!("old"), SetOptions::default())
        .await
        .unwrap();
    inner.faults.get_delay_ms.store(100, Ordering::SeqCst);
    let slow_read = {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move { store.get(&key).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await; // it has read "old"
    store.delete(&key).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None, "after the delete");
    assert_eq!(slow_read.await.unwrap().unwrap(), Some(json!("old")));

    // The same after `set_many` and after an invalidation from outside.
    for how in ["set_many", "invalidate"] {
        inner
            .store
            .set(&key, json!("old"), SetOptions::default())
            .await
            .unwrap();
        _layer.handle().invalidate(&key).await.unwrap();
        let slow_read = {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.get(&key).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        match how {
            "set_many" => store
                .set_many(vec![(key.clone(), json!("new"))], SetOptions::default())
                .await
                .unwrap(),
            _ => {
                inner
                    .store
                    .set(&key, json!("new"), SetOptions::default())
                    .await
                    .unwrap();
                _layer.handle().invalidate(&key).await.unwrap();
            }
        }
        assert_eq!(store.get(&key).await.unwrap(), Some(json!("new")), "{how}");
        slow_read.await.unwrap().unwrap();
    }
}

/// Defect 2: a write's front TTL started when the inner call returned, so a
/// slow write made the front outlive the inner entry.
#[tokio::test]
async fn a_slow_write_never_makes_the_front_outlive_the_inner_entry() {
    let inner = Faulty::default();
    let (layer, store) = stack(&inner);
    let key = kvkey!["slow"];
    inner.faults.write_delay_ms.store(400, Ordering::SeqCst);
    let start = Instant::now();
    store
        .set(&key, json!(1), SetOptions::ttl(Duration::from_millis(800)))
        .await
        .unwrap();
    inner.faults.write_delay_ms.store(0, Ordering::SeqCst);
    // The inner entry expires 800 ms after it landed, which was before the
    // write's 400 ms of latency.
    tokio::time::sleep(Duration::from_millis(900).saturating_sub(start.elapsed())).await;
    assert_eq!(inner.store.get(&key).await.unwrap(), None);
    layer.front().run_pending_tasks().await;
    assert_eq!(layer.front().get(&key).await.unwrap(), None, "front");
    assert_eq!(store.get(&key).await.unwrap(), None, "through the cache");
}

/// Defect 2: a failed write with a longer TTL replaced the remembered
/// deadline, so a later fill outlived the inner entry.
#[tokio::test]
async fn a_failed_write_never_lengthens_a_remembered_deadline() {
    let inner = Faulty::default();
    let (layer, store) = stack(&inner);
    let key = kvkey!["short"];
    store
        .set(&key, json!(1), SetOptions::ttl(Duration::from_millis(500)))
        .await
        .unwrap();
    inner.faults.reject_writes.store(true, Ordering::SeqCst);
    store
        .set(&key, json!(2), SetOptions::ttl(Duration::from_secs(60)))
        .await
        .unwrap_err();
    inner.faults.reject_writes.store(false, Ordering::SeqCst);
    // A fill: the inner store (a third-party one) cannot tell the TTL.
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(1)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(inner.store.get(&key).await.unwrap(), None);
    layer.front().run_pending_tasks().await;
    assert_eq!(store.get(&key).await.unwrap(), None);
}

/// Defect 4: a write that timed out but landed later was invalidated once;
/// a read in between refilled the old value, which then stayed for the
/// whole front TTL.
#[tokio::test]
async fn a_write_that_lands_late_is_never_hidden_by_a_refill() {
    let inner = Faulty::default();
    let (layer, store) = stack(&inner);
    let key = kvkey!["late"];
    store
        .set(&key, json!("old"), SetOptions::default())
        .await
        .unwrap();
    inner.faults.late_landing_ms.store(150, Ordering::SeqCst);
    let err = store
        .set(&key, json!("new"), SetOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    inner.faults.late_landing_ms.store(0, Ordering::SeqCst);
    // Before it lands: the inner value is read, but the front keeps nothing.
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("old")));
    assert_eq!(layer.front().get(&key).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(inner.store.get(&key).await.unwrap(), Some(json!("new")));
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("new")), "landed");
    // After the window the key is cached again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("new")));
    assert_eq!(layer.front().get(&key).await.unwrap(), Some(json!("new")));
}

/// Defect 5 (the local half): an invalidation from outside waited for the
/// key's stripe lock, so one slow local write stalled it.
#[tokio::test]
async fn an_invalidation_never_waits_for_a_slow_local_write() {
    let inner = Faulty::default();
    let (layer, store) = stack(&inner);
    let store = Arc::new(store);
    let key = kvkey!["busy"];
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    inner.faults.write_delay_ms.store(2_000, Ordering::SeqCst);
    let writer = {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move { store.set(&key, json!(2), SetOptions::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await; // the writer holds the lock
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(1), layer.handle().invalidate(&key))
        .await
        .expect("the invalidation waited for the write")
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    writer.await.unwrap().unwrap();
    // The write overlapped an invalidation: it does not install its value
    // (the invalidation may stand for a later write elsewhere).
    assert_eq!(layer.front().get(&key).await.unwrap(), None);
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(2)));
}

/// Defect 7: `negative_ttl(Duration::MAX)` panicked in `build()` (moka
/// takes at most 1,000 years).
#[tokio::test]
async fn an_endless_negative_ttl_is_taken() {
    let layer = CacheLayer::builder(MemoryKvStore::new())
        .negative_ttl(Duration::MAX)
        .build();
    let store = layer.layer(MemoryKvStore::new());
    assert_eq!(store.get(&kvkey!["absent"]).await.unwrap(), None);
    store
        .set(&kvkey!["absent"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["absent"]).await.unwrap(), Some(json!(1)));
}
