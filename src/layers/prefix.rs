//! [`PrefixLayer`]: namespaces every key under a fixed prefix.
//!
//! Two stacks with different prefixes over one store never see each other's
//! keys, whether the prefixes are nested (`["app"]` and `["app", "v2"]`) or
//! not: every key gets one extra first part that encodes the whole prefix on
//! the way in, and [`list`](KvStore::list) strips it on the way out (and only
//! ever asks the inner store for keys under it).
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
//! let app = ServiceBuilder::new().layer(PrefixLayer::new(kvkey!["app"])).service(shared.clone());
//! let v2 = ServiceBuilder::new().layer(PrefixLayer::new(kvkey!["app", "v2"])).service(shared.clone());
//! app.set(&kvkey!["v2", "user", "1"], 1.into(), SetOptions::default()).await?;
//! v2.set(&kvkey!["user", "1"], 2.into(), SetOptions::default()).await?;
//! assert_eq!(app.get(&kvkey!["v2", "user", "1"]).await?, Some(1.into()));
//! assert_eq!(v2.get(&kvkey!["user", "1"]).await?, Some(2.into()));
//! assert_eq!(app.list_all(None).await?.len(), 1); // never v2's key
//! // What the inner store holds:
//! assert_eq!(shared.get(&kvkey!["~app", "v2", "user", "1"]).await?, Some(1.into()));
//! assert_eq!(shared.get(&kvkey!["~app/v2", "user", "1"]).await?, Some(2.into()));
//! # Ok(())
//! # }
//! ```
//!
//! # Key format in the inner store
//!
//! The key `k` under the prefix `[p1, …, pn]` is stored as
//! `["~" + e(p1) + "/" + … + "/" + e(pn), k…]`, where `e` writes `%` as `%25`
//! and `/` as `%2F` and leaves everything else as it is. The first part is
//! injective (splitting it on `/` and unescaping gives the prefix back), so:
//!
//! * two different prefixes never share a stored key, nested or not: under
//!   `["app"]` the key `["v2", "x"]` is `["~app", "v2", "x"]`, under
//!   `["app", "v2"]` the key `["x"]` is `["~app/v2", "x"]`;
//! * `list` under a prefix asks the inner store for keys starting with its
//!   one part, so it never yields a key of a longer (or any other) prefix;
//! * nested layers compose: `PrefixLayer::new(["a"])` inside
//!   `PrefixLayer::new(["b"])` stores `["~b", "~a", k…]`, a namespace of its own.
//!
//! Keys written to the store without a `PrefixLayer` live beside them; they
//! never collide with prefixed keys unless their first part starts with `~`
//! (keep such keys out of a store that prefixed stacks share).
//! [`Prefix::inner_key`] shows the stored key of any key.
//!
//! ## Data written before this format
//!
//! Earlier versions stored the prefix's parts as they were (`["app", "v2",
//! k…]`), which is what let nested prefixes collide. Data written that way is
//! not visible through the layer any more; copy it over once, for example:
//!
//! ```
//! use futures::TryStreamExt;
//! use kvtower::layers::Prefix;
//! use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let shared = MemoryKvStore::new();
//! shared.set(&kvkey!["app", "v2", "user"], 1.into(), SetOptions::default()).await?; // the old format
//! let old_prefix = kvkey!["app", "v2"];
//! let store = Prefix::new(shared.clone(), old_prefix.clone());
//! let old: Vec<_> = shared.list(Some(old_prefix.clone())).try_collect().await?;
//! for entry in old {
//!     if let Some(key) = entry.key.strip_prefix(&old_prefix) {
//!         // (Entries with a TTL: carry it over with `get_with_ttl`.)
//!         store.set(&key, entry.value, SetOptions::default()).await?;
//!         shared.delete(&entry.key).await?;
//!     }
//! }
//! assert_eq!(store.get(&kvkey!["user"]).await?, Some(1.into()));
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
    /// A layer that puts every key under `prefix` (one encoded first part:
    /// see the module docs).
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
    /// The one-part key that encodes `prefix` (see the module docs), built
    /// once: every inner key starts with it.
    stored: KvKey,
}

/// The marker that starts the stored first part of every prefixed key.
const MARKER: char = '~';
/// The separator of the prefix's parts inside that first part.
const SEPARATOR: char = '/';

/// The one part that encodes `prefix` injectively: `~` then the parts with `%`
/// and `/` percent-escaped, joined by `/`. No escaped part holds a raw `/`, so
/// splitting on `/` recovers the parts and no two prefixes share an encoding.
fn encode(prefix: &KvKey) -> String {
    let mut out =
        String::with_capacity(1 + prefix.parts().iter().map(|p| p.len() + 1).sum::<usize>());
    out.push(MARKER);
    for (i, part) in prefix.parts().iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        for c in part.chars() {
            match c {
                '%' => out.push_str("%25"),
                SEPARATOR => out.push_str("%2F"),
                c => out.push(c),
            }
        }
    }
    out
}

/// The one-part key every inner key of a `Prefix` over `prefix` starts with.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // client tracking maps keys back with it
pub(crate) fn stored_part(prefix: &KvKey) -> KvKey {
    crate::kvkey![encode(prefix)]
}

impl<S> Prefix<S> {
    /// Wraps `inner` so every key goes under `prefix`.
    pub fn new(inner: S, prefix: KvKey) -> Self {
        let stored = stored_part(&prefix);
        Self {
            inner,
            prefix,
            stored,
        }
    }

    /// The key the inner store holds for `key` (see the module docs' "Key
    /// format in the inner store").
    ///
    /// ```
    /// use kvtower::{kvkey, layers::Prefix, MemoryKvStore};
    /// let store = Prefix::new(MemoryKvStore::new(), kvkey!["app", "a/b"]);
    /// assert_eq!(store.inner_key(&kvkey!["user", "1"]), kvkey!["~app/a%2Fb", "user", "1"]);
    /// ```
    pub fn inner_key(&self, key: &KvKey) -> KvKey {
        self.full(key)
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
        self.stored.join(key)
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
            None => self.stored.clone(),
        };
        self.inner
            .list(Some(full))
            .filter_map(move |entry| {
                let mapped = match entry {
                    // The key equal to the prefix has no key of ours: skip it.
                    Ok(KvEntry { key, value }) => key
                        .strip_prefix(&self.stored)
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
