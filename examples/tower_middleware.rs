//! tower's own middleware inside a kvtower stack: a timeout per attempt and
//! retries of retryable errors around the backend, a cache in front.
//!
//! ```sh
//! cargo run --example tower_middleware
//! ```
//!
//! The backend here is a `MemoryKvStore` behind a deliberately flaky wrapper
//! (every third call fails, every fifth is too slow), so the example runs
//! anywhere. Around Redis: `examples/redis_middleware.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use kvtower::layers::CacheLayer;
use kvtower::service::{KvServiceLayer, RetryPolicy, ServiceStoreLayer};
use kvtower::Operation;
use kvtower::{
    kvkey, Error, ErrorKind, KvEntry, KvKey, KvStore, MemoryKvStore, Result, SetOptions, Value,
};
use serde_json::json;
use tower::ServiceBuilder;

/// The store the stack wraps. With Redis: `RedisKvStore::connect(url).await?`.
pub fn backend() -> Flaky<MemoryKvStore> {
    Flaky::new(MemoryKvStore::new())
}

/// Cache in front; retry of a timed-out or failed backend call behind it.
pub fn stack<S: KvStore + 'static>(backend: S) -> impl KvStore {
    ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryKvStore::new())) // front hits never wait on what is below
        .layer(ServiceStoreLayer) // back to a KvStore
        .retry(RetryPolicy::new(4, Duration::from_millis(10))) // 4 calls at most, 10 ms apart and doubling
        .timeout(Duration::from_millis(50)) // per attempt
        .layer(KvServiceLayer) // the store as a tower::Service<KvRequest>
        .service(backend)
}

/// A store that fails every third call with a retryable error and answers
/// every fifth call too slowly: a stand-in for a backend having a bad day.
#[derive(Debug, Clone)]
pub struct Flaky<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S> Flaky<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            calls: Arc::default(),
        }
    }

    /// How many calls reached the wrapper.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn trouble(&self, operation: Operation) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n.is_multiple_of(5) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if n.is_multiple_of(3) {
            return Err(
                Error::new(ErrorKind::Unavailable, "connection reset").with_operation(operation)
            );
        }
        Ok(())
    }
}

#[async_trait]
impl<S: KvStore> KvStore for Flaky<S> {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.trouble(Operation::Get).await?;
        self.inner.get(key).await
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        self.trouble(Operation::Set).await?;
        self.inner.set(key, value, options).await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.trouble(Operation::Delete).await?;
        self.inner.delete(key).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        self.trouble(Operation::Cas).await?;
        self.inner.cas(key, expected, new, options).await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        self.inner.list(prefix)
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        self.trouble(Operation::GetMany).await?;
        self.inner.get_many(keys).await
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        self.trouble(Operation::SetMany).await?;
        self.inner.set_many(entries, options).await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        self.trouble(Operation::DeleteMany).await?;
        self.inner.delete_many(keys).await
    }

    fn capabilities(&self) -> kvtower::Capabilities {
        self.inner.capabilities().with_reports_ttl(false)
    }
}

/// Writes and reads 20 keys through the stack; returns how many backend
/// calls that took (more than the 40 operations: the retries).
pub async fn run() -> Result<usize> {
    let backend = backend();
    let store = stack(backend.clone());
    for i in 0..20 {
        store
            .set(&kvkey!["k", i.to_string()], json!(i), SetOptions::default())
            .await?;
    }
    for i in 0..20 {
        assert_eq!(
            store.get(&kvkey!["k", i.to_string()]).await?,
            Some(json!(i))
        );
    }
    Ok(backend.calls())
}

#[allow(dead_code)] // tests/layers.rs includes this file and calls `run`
#[tokio::main]
async fn main() -> Result<()> {
    let calls = run().await?;
    println!("20 writes and 20 reads succeeded with {calls} backend calls (timeouts and failures retried)");
    Ok(())
}
