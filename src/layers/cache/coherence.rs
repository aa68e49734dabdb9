//! Coherence: how a front tier learns that its entries went stale.
//!
//! One trait, [`Coherence`], for everything that keeps a front tier honest
//! about changes it did not make itself: an invalidation bus carrying other
//! nodes' writes, Redis client tracking reporting writes by other programs,
//! or an application hook told about this cache's own writes. The cache
//! layer only ever talks to this trait; it names no concrete bus.
//!
//! A source receives, at build time, a [`WeakCacheHandle`] of every cache it
//! is attached to (through [`Coherence::attach`]) and drops entries through
//! it; it is told about this cache's writes through [`Coherence::written`];
//! and while it cannot vouch for the front (a lost subscription), it says so
//! through [`Coherence::is_live`], and the cache serves every read from the
//! inner store until it is live again.

use std::fmt;
use std::sync::{Arc, Weak};

use async_trait::async_trait;

use crate::error::Result;
use crate::key::KvKey;

/// Identifies one cache tier (one [`CacheLayer`](super::CacheLayer) and its
/// clones) among all the tiers of all processes, so that a coherence source
/// can skip the tier a change came from, and only that one.
///
/// ```
/// use kvtower::{layers::CacheLayer, MemoryKvStore};
/// let a = CacheLayer::new(MemoryKvStore::new());
/// let b = CacheLayer::new(MemoryKvStore::new());
/// assert_ne!(a.handle().origin(), b.handle().origin());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheId(pub u64);

impl CacheId {
    /// A fresh id, random across processes.
    pub(crate) fn random() -> Self {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // RandomState is seeded from the OS per process; the time, the process
        // id and a counter make ids of one process differ too.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        Self(hasher.finish())
    }
}

impl fmt::Display for CacheId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Something that keeps a cache's front tier coherent with changes made
/// elsewhere, and may want to hear of the changes made here.
///
/// All methods have defaults, so a source implements only what it does:
///
/// * [`attach`](Self::attach): called once per cache it is given to, at
///   [`build`](super::CacheLayerBuilder::build), with a weak handle to drop
///   entries through (weak, so that the source does not keep the cache
///   alive).
/// * [`written`](Self::written): called after every write the cache sent to
///   its inner store, whether it succeeded or failed (a failed write may have
///   landed), and after a `cas` that swapped. It runs on the writer's task:
///   keep it quick (queue, don't send).
/// * [`is_live`](Self::is_live): while false, changes may be missed, so the
///   cache bypasses its front tier (the source clears it when it goes down
///   and again when it is back).
///
/// A closure `Fn(&KvKey)` given to
/// [`on_write`](super::CacheLayerBuilder::on_write) is a source that only
/// listens to writes.
///
/// ```
/// use kvtower::layers::{CacheId, CacheLayer, Coherence, WeakCacheHandle};
/// use kvtower::{kvkey, KvKey, KvStore, MemoryKvStore, SetOptions};
/// use std::sync::{Arc, Mutex};
/// use tower::Layer;
///
/// /// Drops from every attached cache the keys another part of the program
/// /// says it changed.
/// #[derive(Clone, Default)]
/// struct Local(Arc<Mutex<Vec<WeakCacheHandle>>>);
///
/// impl Coherence for Local {
///     fn attach(&self, cache: WeakCacheHandle) {
///         self.0.lock().unwrap().push(cache);
///     }
/// }
///
/// impl Local {
///     async fn changed(&self, key: &KvKey) {
///         let caches: Vec<_> = self.0.lock().unwrap().iter().filter_map(|c| c.upgrade()).collect();
///         for cache in caches {
///             cache.invalidate(key).await.ok();
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let local = Local::default();
/// let backing = MemoryKvStore::new();
/// let store = CacheLayer::builder(MemoryKvStore::new())
///     .coherence(local.clone())
///     .build()
///     .layer(backing.clone());
/// store.set(&kvkey!["k"], 1.into(), SetOptions::default()).await?;
/// backing.set(&kvkey!["k"], 2.into(), SetOptions::default()).await?; // around the cache
/// local.changed(&kvkey!["k"]).await;
/// assert_eq!(store.get(&kvkey!["k"]).await?, Some(2.into()));
/// # Ok(())
/// # }
/// ```
pub trait Coherence: Send + Sync + 'static {
    /// Connects this source to a cache tier, which it invalidates through
    /// `cache` from now on.
    fn attach(&self, cache: WeakCacheHandle) {
        let _ = cache;
    }

    /// The cache `origin` wrote `key` to its inner store (or tried to).
    fn written(&self, origin: CacheId, key: &KvKey) {
        let _ = (origin, key);
    }

    /// Whether this source currently hears every change it is meant to.
    fn is_live(&self) -> bool {
        true
    }
}

impl<C: Coherence + ?Sized> Coherence for Arc<C> {
    fn attach(&self, cache: WeakCacheHandle) {
        (**self).attach(cache)
    }
    fn written(&self, origin: CacheId, key: &KvKey) {
        (**self).written(origin, key)
    }
    fn is_live(&self) -> bool {
        (**self).is_live()
    }
}

/// The source [`on_write`](super::CacheLayerBuilder::on_write) makes of a
/// closure: it hears this cache's writes and nothing else.
pub(crate) struct OnWrite<H>(pub(crate) H);

impl<H: Fn(&KvKey) + Send + Sync + 'static> Coherence for OnWrite<H> {
    fn written(&self, _origin: CacheId, key: &KvKey) {
        (self.0)(key)
    }
}

/// What a handle can do to a tier, type-erased over the front's type.
#[async_trait]
pub(crate) trait FrontOps: Send + Sync {
    async fn invalidate(&self, keys: &[KvKey]) -> Result<()>;
    async fn clear(&self) -> Result<()>;
}

/// Invalidates a [`Cache`](super::Cache)'s front tier from outside: what a
/// coherence source calls when a key changed elsewhere. Cheap to clone.
///
/// Invalidation never waits for the cache's writers: it takes no lock, so a
/// slow write in progress does not delay it, and a write or fill that
/// overlaps it drops its own front update instead of installing a value the
/// invalidation may have made stale.
///
/// ```
/// use kvtower::{kvkey, layers::CacheLayer, MemoryKvStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let layer = CacheLayer::new(MemoryKvStore::new());
/// let handle = layer.handle();
/// handle.invalidate(&kvkey!["user", "1"]).await?;
/// handle.clear().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CacheHandle {
    pub(crate) tier: Arc<dyn FrontOps>,
    pub(crate) origin: CacheId,
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl CacheHandle {
    /// Drops `key` from the front (and from the negative cache), and makes
    /// any read-through fill of it that is in flight be discarded; a `get`
    /// that starts after this returns never joins a read that started before.
    ///
    /// # Errors
    ///
    /// The front tier's error when it could not delete the entry.
    pub async fn invalidate(&self, key: &KvKey) -> Result<()> {
        self.tier.invalidate(std::slice::from_ref(key)).await
    }

    /// [`invalidate`](Self::invalidate) for several keys.
    ///
    /// # Errors
    ///
    /// The front tier's error when it could not delete the entries.
    pub async fn invalidate_many(&self, keys: &[KvKey]) -> Result<()> {
        self.tier.invalidate(keys).await
    }

    /// Drops every front entry (the front tier is listed and emptied, so it
    /// must be dedicated to this cache) and discards every fill in flight.
    ///
    /// # Errors
    ///
    /// The front tier's error when it could not be listed or emptied.
    pub async fn clear(&self) -> Result<()> {
        self.tier.clear().await
    }

    /// The tier this handle reaches.
    pub fn origin(&self) -> CacheId {
        self.origin
    }

    /// A handle that does not keep the cache alive.
    pub fn downgrade(&self) -> WeakCacheHandle {
        WeakCacheHandle {
            tier: Arc::downgrade(&self.tier),
            origin: self.origin,
        }
    }
}

/// A [`CacheHandle`] that does not keep its cache alive: what a
/// [`Coherence`] source holds, so that dropping the cache stops it.
///
/// ```
/// use kvtower::{layers::CacheLayer, MemoryKvStore};
/// let layer = CacheLayer::new(MemoryKvStore::new());
/// let weak = layer.handle().downgrade();
/// assert!(weak.upgrade().is_some());
/// drop(layer);
/// assert!(weak.upgrade().is_none());
/// ```
#[derive(Clone)]
pub struct WeakCacheHandle {
    tier: Weak<dyn FrontOps>,
    origin: CacheId,
}

impl fmt::Debug for WeakCacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakCacheHandle")
            .field("origin", &self.origin)
            .field("alive", &(self.tier.strong_count() > 0))
            .finish()
    }
}

impl WeakCacheHandle {
    /// The handle, while the cache lives.
    pub fn upgrade(&self) -> Option<CacheHandle> {
        self.tier.upgrade().map(|tier| CacheHandle {
            tier,
            origin: self.origin,
        })
    }

    /// The tier this handle reaches.
    pub fn origin(&self) -> CacheId {
        self.origin
    }

    /// Whether the cache is gone.
    pub fn is_dropped(&self) -> bool {
        self.tier.strong_count() == 0
    }
}
