//! [`PrefixLayer`]: namespaces every key under a fixed prefix.
//!
//! Two stacks with different prefixes over one store never see each other's
//! keys: every key gets the prefix parts in front of it on the way in, and
//! [`list`](KvStore::list) strips them on the way out (and only ever asks the
//! inner store for keys under the prefix).
//!
//! ```
//! use kvtower::layers::PrefixLayer;
//! use kvtower::{kvkey, KvStore, KvStoreExt, MemoryKvStore, SetOptions};
//! use std::sync::Arc;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let shared = Arc::new(MemoryKvStore::new());
//! let app_a = ServiceBuilder::new().layer(PrefixLayer::new(kvkey!["a"])).service(shared.clone());
//! let app_b = ServiceBuilder::new().layer(PrefixLayer::new(kvkey!["b"])).service(shared.clone());
//! app_a.set(&kvkey!["user", "1"], 1.into(), SetOptions::default()).await?;
//! assert_eq!(app_b.get(&kvkey!["user", "1"]).await?, None);
//! assert_eq!(shared.get(&kvkey!["a", "user", "1"]).await?, Some(1.into()));
//! assert_eq!(app_a.list_all(None).await?[0].key, kvkey!["user", "1"]);
//! # Ok(())
//! # }
//! ```
//!
//! The key equal to the prefix itself is not reachable through the layer (a
//! key has at least one part after the prefix), so `list` skips it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};

use crate::error::Result;
use crate::key::KvKey;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};

/// A [`tower::Layer`] that wraps a store in a [`Prefix`].
///
/// ```
/// use kvtower::{kvkey, layers::PrefixLayer, MemoryKvStore};
/// use tower::Layer;
/// let store = PrefixLayer::new(kvkey!["tenant", "7"]).layer(MemoryKvStore::new());
/// assert_eq!(store.prefix(), &kvkey!["tenant", "7"]);
/// ```
#[derive(Debug, Clone)]
pub struct PrefixLayer {
    prefix: KvKey,
}

impl PrefixLayer {
    /// A layer that puts `prefix`'s parts in front of every key.
    pub fn new(prefix: KvKey) -> Self {
        Self { prefix }
    }
}

impl<S> tower::Layer<S> for PrefixLayer {
    type Service = Prefix<S>;

    fn layer(&self, inner: S) -> Prefix<S> {
        Prefix::new(inner, self.prefix.clone())
    }
}

/// A store whose keys live under a prefix of the inner store's keys. Built
/// by [`PrefixLayer`].
///
/// ```
/// use kvtower::{kvkey, layers::Prefix, MemoryKvStore};
/// let store = Prefix::new(MemoryKvStore::new(), kvkey!["app"]);
/// let _inner: &MemoryKvStore = store.inner();
/// ```
#[derive(Debug, Clone)]
pub struct Prefix<S> {
    inner: S,
    prefix: KvKey,
}

impl<S> Prefix<S> {
    /// Wraps `inner` so every key goes under `prefix`.
    pub fn new(inner: S, prefix: KvKey) -> Self {
        Self { inner, prefix }
    }

    /// The prefix.
    pub fn prefix(&self) -> &KvKey {
        &self.prefix
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The inner store's key for `key` (one new key, built once).
    fn full(&self, key: &KvKey) -> KvKey {
        self.prefix.join(key)
    }

    fn full_all(&self, keys: &[KvKey]) -> Vec<KvKey> {
        keys.iter().map(|k| self.full(k)).collect()
    }
}

#[async_trait]
impl<S: KvStore> KvStore for Prefix<S> {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.inner.get(&self.full(key)).await
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        self.inner.set(&self.full(key), value, options).await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.inner.delete(&self.full(key)).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        self.inner
            .cas(&self.full(key), expected, new, options)
            .await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        let full = match &prefix {
            Some(p) => self.full(p),
            None => self.prefix.clone(),
        };
        self.inner
            .list(Some(full))
            .filter_map(move |entry| {
                let mapped = match entry {
                    // The key equal to the prefix has no key of ours: skip it.
                    Ok(KvEntry { key, value }) => key
                        .strip_prefix(&self.prefix)
                        .map(|key| Ok(KvEntry { key, value })),
                    Err(e) => Some(Err(e)),
                };
                std::future::ready(mapped)
            })
            .boxed()
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        self.inner.get_with_ttl(&self.full(key)).await
    }

    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        // The rewritten key is this call's own, so what is not answered from
        // memory at once is boxed with it.
        let key = self.full(key);
        if let Some(value) = self.inner.probe(&key) {
            return SharedGet::ready(Ok(Some(value)));
        }
        SharedGet::boxed(async move { self.inner.get_shared(&key).await })
    }

    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        self.inner.set_shared(&self.full(key), value, options).await
    }

    // Rewriting the key costs an allocation, which is why the recommended
    // order puts the prefix inside the cache: a front hit then never gets here.
    fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
        self.inner.probe(&self.full(key))
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        self.inner.get_many(&self.full_all(keys)).await
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        self.inner.get_many_with_ttl(&self.full_all(keys)).await
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        let entries = entries
            .into_iter()
            .map(|(k, v)| (self.full(&k), v))
            .collect();
        self.inner.set_many(entries, options).await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        self.inner.delete_many(&self.full_all(keys)).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}
