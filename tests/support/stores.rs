//! Store wrappers for the layer tests: around a real `MemoryKvStore`, they
//! count calls, slow reads down, or fail on demand (no mock: only the
//! failure or delay is injected); [`WithGuard`] keeps a cleanup guard with a
//! store; [`full_stack`] is the conformance stack.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use kvtower::layers::{CacheLayer, DefaultTtlLayer, MetricsLayer, PrefixLayer};
use kvtower::Operation;
use kvtower::{
    kvkey, Error, ErrorKind, KvEntry, KvKey, KvStore, MemoryKvStore, Result, SetOptions, Value,
};
use tower::ServiceBuilder;

/// The full stack of the issue, over any inner store: metrics + prefix +
/// default TTL + cache. The Redis variant is `full_stack(redis_store)`.
pub fn full_stack<S: KvStore + 'static>(inner: S) -> impl KvStore {
    ServiceBuilder::new()
        .layer(MetricsLayer::new("conformance"))
        .layer(PrefixLayer::new(kvkey!["conformance", "stack"]))
        .layer(DefaultTtlLayer::new(Duration::from_secs(3600)))
        .layer(CacheLayer::new(MemoryKvStore::new()))
        .service(inner)
}

/// A shared view of a [`Probe`]'s switches and counters.
#[derive(Debug, Default)]
pub struct Control {
    pub gets: AtomicUsize,
    pub get_manys: AtomicUsize,
    pub writes: AtomicUsize,
    pub fail_writes: AtomicBool,
    pub fail_reads: AtomicBool,
    /// Milliseconds a `get` waits *after* reading (the answer is then stale
    /// by the time it arrives): tokio time, so paused clocks apply.
    pub get_delay_ms: AtomicUsize,
}

/// A real `MemoryKvStore` with counters, a read delay and failure switches.
#[derive(Debug, Clone)]
pub struct Probe {
    pub store: MemoryKvStore,
    pub control: Arc<Control>,
}

impl Probe {
    pub fn new() -> Self {
        Self {
            store: MemoryKvStore::new(),
            control: Arc::new(Control::default()),
        }
    }

    pub fn gets(&self) -> usize {
        self.control.gets.load(Ordering::SeqCst)
    }

    pub fn fail_writes(&self, fail: bool) {
        self.control.fail_writes.store(fail, Ordering::SeqCst);
    }

    pub fn fail_reads(&self, fail: bool) {
        self.control.fail_reads.store(fail, Ordering::SeqCst);
    }

    pub fn delay_gets(&self, delay: Duration) {
        self.control
            .get_delay_ms
            .store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    fn write(&self, op: Operation) -> Result<()> {
        self.control.writes.fetch_add(1, Ordering::SeqCst);
        if self.control.fail_writes.load(Ordering::SeqCst) {
            return Err(
                Error::new(ErrorKind::Unavailable, "injected write failure").with_operation(op)
            );
        }
        Ok(())
    }

    fn read(&self, op: Operation) -> Result<()> {
        if self.control.fail_reads.load(Ordering::SeqCst) {
            return Err(
                Error::new(ErrorKind::Unavailable, "injected read failure").with_operation(op)
            );
        }
        Ok(())
    }
}

#[async_trait]
impl KvStore for Probe {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.control.gets.fetch_add(1, Ordering::SeqCst);
        let result = match self.read(Operation::Get) {
            Ok(()) => self.store.get(key).await,
            Err(e) => Err(e),
        };
        let delay = self.control.get_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        result
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        self.write(Operation::Set)?;
        self.store.set(key, value, options).await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.write(Operation::Delete)?;
        self.store.delete(key).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        self.write(Operation::Cas)?;
        self.store.cas(key, expected, new, options).await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        self.store.list(prefix)
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        self.control.get_manys.fetch_add(1, Ordering::SeqCst);
        self.read(Operation::GetMany)?;
        self.store.get_many(keys).await
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        self.write(Operation::SetMany)?;
        self.store.set_many(entries, options).await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        self.write(Operation::DeleteMany)?;
        self.store.delete_many(keys).await
    }

    fn capabilities(&self) -> kvtower::Capabilities {
        kvtower::Capabilities::full().with_reports_ttl(false)
    }
}

/// A store together with a guard that cleans up after it (a temporary
/// directory, a test table). The store is dropped first, then the guard.
pub struct WithGuard<S, G> {
    pub store: S,
    pub _guard: G,
}

#[async_trait]
impl<S: KvStore, G: Send + Sync> KvStore for WithGuard<S, G> {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.store.get(key).await
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
    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        self.store.get_many(keys).await
    }
    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        self.store.set_many(entries, options).await
    }
    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        self.store.delete_many(keys).await
    }

    fn capabilities(&self) -> kvtower::Capabilities {
        self.store.capabilities().with_reports_ttl(false)
    }
}
