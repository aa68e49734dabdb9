//! Helpers shared by the store tests.

use async_trait::async_trait;
use futures::stream::BoxStream;
use kvtower::{KvEntry, KvKey, KvStore, Result, SetOptions, Value};

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
}
