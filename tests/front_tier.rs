//! The two front-tier settings of issue 14's hit and miss paths:
//! `MemoryKvStoreBuilder::max_ttl` (one global moka TTL, each entry's own
//! deadline checked on read) and `CacheLayerBuilder::fill_without_inner_ttl`
//! (fills read the value only). moka keeps its own clock, so expiry is tested
//! with short real sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use kvtower::layers::CacheLayer;
use kvtower::{
    kvkey, Capabilities, KvEntry, KvKey, KvStore, MemoryKvStore, Result, SetOptions, Value,
};
use serde_json::json;
use tower::Layer;

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

mod memory_with_max_ttl {
    // A bound far past every TTL the suite writes: the store's own deadline
    // check does all the expiring.
    kvtower::conformance_suite!(|| async {
        kvtower::MemoryKvStore::builder()
            .max_ttl(super::TEN_YEARS)
            .build()
    });
}

mod cache_with_value_only_fills {
    // The bench's recommended front over a store that reports TTLs.
    kvtower::conformance_suite!(|| async {
        let front = kvtower::MemoryKvStore::builder()
            .max_entries(10_000)
            .max_ttl(std::time::Duration::from_secs(60))
            .build();
        let layer = kvtower::layers::CacheLayer::builder(front)
            .front_max_ttl(std::time::Duration::from_secs(60))
            .fill_without_inner_ttl()
            .build();
        tower::Layer::layer(&layer, kvtower::MemoryKvStore::new())
    });
}

#[tokio::test]
async fn max_ttl_caps_writes_without_a_ttl_or_with_a_longer_one() {
    let max = Duration::from_millis(300);
    let store = MemoryKvStore::builder().max_ttl(max).build();
    store
        .set(&kvkey!["none"], json!(1), SetOptions::default())
        .await
        .unwrap();
    store
        .set(&kvkey!["long"], json!(2), SetOptions::ttl(TEN_YEARS))
        .await
        .unwrap();
    for key in [kvkey!["none"], kvkey!["long"]] {
        let (_, ttl) = store.get_with_ttl(&key).await.unwrap().expect("held");
        assert!(ttl.expect("capped") <= max, "{key}: {ttl:?}");
    }
    tokio::time::sleep(max + Duration::from_millis(100)).await;
    for key in [kvkey!["none"], kvkey!["long"]] {
        assert_eq!(store.get(&key).await.unwrap(), None, "{key}");
    }
    // moka's global TTL frees them (its timer wheel is lazy: poll a while).
    for _ in 0..50 {
        store.run_pending_tasks().await;
        if store.entry_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expired entries still held: {}", store.entry_count());
}

#[tokio::test]
async fn max_ttl_hides_a_shorter_ttl_at_its_own_deadline_on_every_read() {
    let store = MemoryKvStore::builder()
        .max_ttl(Duration::from_secs(60))
        .build();
    let key = kvkey!["short"];
    store
        .set(&key, json!("s"), SetOptions::ttl(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(store.probe(&key).is_some());
    tokio::time::sleep(Duration::from_millis(120)).await;
    // moka still holds the entry (its bound is 60 s): every read checks the
    // entry's own deadline.
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(store.get_shared(&key).await.unwrap(), None);
    assert_eq!(store.probe(&key), None);
    assert_eq!(store.get_with_ttl(&key).await.unwrap(), None);
    let one = std::slice::from_ref(&key);
    assert_eq!(store.get_many(one).await.unwrap(), vec![None]);
    assert_eq!(store.list(None).count().await, 0);
    let swapped = store
        .cas(
            &key,
            Some(&json!("s")),
            Some(json!("t")),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert!(!swapped, "an expired entry is absent for cas");
    let swapped = store
        .cas(&key, None, Some(json!("t")), SetOptions::default())
        .await
        .unwrap();
    assert!(swapped);
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("t")));
}

/// A `MemoryKvStore` that counts which read its callers used, and can make
/// reads slow.
#[derive(Debug, Clone, Default)]
struct Counting {
    store: MemoryKvStore,
    gets: Arc<AtomicUsize>,
    ttl_reads: Arc<AtomicUsize>,
    delay: Option<Duration>,
}

impl Counting {
    async fn pause(&self) {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
    }
}

#[async_trait]
impl KvStore for Counting {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let found = self.store.get(key).await;
        self.pause().await;
        found
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        self.ttl_reads.fetch_add(1, Ordering::SeqCst);
        let found = self.store.get_with_ttl(key).await;
        self.pause().await;
        found
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        self.store.set(key, value, options).await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.store.delete(key).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        self.store.cas(key, expected, new, options).await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        self.store.list(prefix)
    }

    fn capabilities(&self) -> Capabilities {
        // `get_with_ttl` above reports what the memory store has left.
        self.store.capabilities()
    }
}

fn layer(value_only: bool) -> CacheLayer<MemoryKvStore> {
    let builder = CacheLayer::builder(MemoryKvStore::new()).front_max_ttl(Duration::from_secs(60));
    if value_only {
        builder.fill_without_inner_ttl()
    } else {
        builder
    }
    .build()
}

#[tokio::test]
async fn value_only_fills_read_the_value_and_never_its_lifetime() {
    for value_only in [false, true] {
        let inner = Counting::default();
        let key = kvkey!["k"];
        inner
            .store
            .set(&key, json!(1), SetOptions::ttl(Duration::from_secs(30)))
            .await
            .unwrap();
        let store = layer(value_only).layer(inner.clone());
        assert_eq!(
            store.get_shared(&key).await.unwrap().as_deref(),
            Some(&json!(1))
        );
        assert_eq!(
            store.get(&key).await.unwrap(),
            Some(json!(1)),
            "a front hit"
        );
        let (gets, ttl_reads) = (
            inner.gets.load(Ordering::SeqCst),
            inner.ttl_reads.load(Ordering::SeqCst),
        );
        if value_only {
            assert_eq!((gets, ttl_reads), (1, 0));
        } else {
            assert_eq!((gets, ttl_reads), (0, 1));
        }
    }
}

#[tokio::test]
async fn value_only_fills_still_answer_lifetimes_to_get_with_ttl() {
    let inner = Counting::default();
    let key = kvkey!["k"];
    // Written around the layer: only the inner store knows the lifetime.
    inner
        .store
        .set(&key, json!(1), SetOptions::ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let store = layer(true).layer(inner.clone());
    let (value, ttl) = store.get_with_ttl(&key).await.unwrap().expect("held");
    assert_eq!(value, json!(1));
    let ttl = ttl.expect("the inner store reports it");
    assert!(
        ttl <= Duration::from_secs(30) && ttl > Duration::from_secs(20),
        "{ttl:?}"
    );
}

/// A `get_with_ttl` that starts while a value-only read of its key is in
/// flight must not take that read's answer, which carries no lifetime.
#[tokio::test(start_paused = true)]
async fn a_lifetime_read_never_joins_a_value_only_read() {
    let inner = Counting {
        delay: Some(Duration::from_millis(200)),
        ..Counting::default()
    };
    let key = kvkey!["k"];
    inner
        .store
        .set(&key, json!(1), SetOptions::ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let store = Arc::new(layer(true).layer(inner.clone()));
    let plain = tokio::spawn({
        let (store, key) = (store.clone(), key.clone());
        async move { store.get(&key).await }
    });
    // Let the plain read lead its flight and wait in the inner store.
    while inner.gets.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let (value, ttl) = store.get_with_ttl(&key).await.unwrap().expect("held");
    assert_eq!(value, json!(1));
    assert!(ttl.is_some(), "a lifetime, not the value-only read's none");
    assert_eq!(plain.await.unwrap().unwrap(), Some(json!(1)));
    assert_eq!(inner.ttl_reads.load(Ordering::SeqCst), 1);
}

/// With value-only fills, a key written through the layer with a TTL shorter
/// than the front's maximum is refilled for what is left of it (the TTL
/// memory), never for the front's maximum.
#[tokio::test]
async fn value_only_fills_keep_a_lifetime_written_through_the_layer() {
    let inner = Counting::default();
    let cache = layer(true);
    let store = cache.layer(inner.clone());
    let key = kvkey!["k"];
    store
        .set(&key, json!(1), SetOptions::ttl(Duration::from_millis(150)))
        .await
        .unwrap();
    // Drop the front entry: the next read fills from the inner store.
    cache.handle().invalidate(&key).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(1)));
    assert_eq!(inner.gets.load(Ordering::SeqCst), 1, "a fill");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.get(&key).await.unwrap(), None);
}
