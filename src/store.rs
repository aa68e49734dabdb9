//! The [`KvStore`] trait, its typed helpers [`KvStoreExt`], and the types its
//! methods take and return.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::operation::Operation;

/// The value type: any JSON value. [`Value::Null`] is a stored value, distinct
/// from an absent key (`None`).
pub use serde_json::Value;

/// A shared, type-erased store: what configuration builds and what
/// applications usually hold.
///
/// ```
/// use kvtower::{DynKvStore, MemoryKvStore};
/// use std::sync::Arc;
///
/// let store: DynKvStore = Arc::new(MemoryKvStore::new());
/// let clone = store.clone(); // shares the same data
/// # let _ = clone;
/// ```
pub type DynKvStore = Arc<dyn KvStore>;

/// Options of a write.
///
/// ```
/// use kvtower::SetOptions;
/// use std::time::Duration;
///
/// assert_eq!(SetOptions::default().ttl, None); // lives until deleted
/// assert_eq!(SetOptions::ttl(Duration::from_secs(60)).ttl, Some(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SetOptions {
    /// How long the value lives. `None`: until deleted or overwritten. A TTL of
    /// zero means the value is already expired: the write leaves the key
    /// absent. Writing a value without a TTL clears any earlier TTL.
    pub ttl: Option<Duration>,
}

impl SetOptions {
    /// Options with the given time to live.
    pub fn ttl(ttl: Duration) -> Self {
        Self { ttl: Some(ttl) }
    }

    /// Whether a write with these options leaves nothing behind (TTL zero).
    ///
    /// ```
    /// # use kvtower::SetOptions;
    /// # use std::time::Duration;
    /// assert!(SetOptions::ttl(Duration::ZERO).is_expired());
    /// assert!(!SetOptions::default().is_expired());
    /// ```
    pub fn is_expired(&self) -> bool {
        self.ttl == Some(Duration::ZERO)
    }
}

/// One entry yielded by [`KvStore::list`].
///
/// ```
/// use kvtower::{kvkey, KvEntry};
/// let entry = KvEntry { key: kvkey!["a"], value: serde_json::json!(1) };
/// assert_eq!(entry.value, 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    /// The entry's key.
    pub key: KvKey,
    /// The entry's value.
    pub value: Value,
}

/// What a store can promise beyond the baseline contract. The conformance
/// suite checks each capability in the form the store declares: a quirk is a
/// documented capability, not a skipped test.
///
/// ```
/// use kvtower::Capabilities;
/// let caps = Capabilities::full();
/// assert!(caps.atomic_cas && caps.exact_expiry && caps.reports_ttl);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// `cas` is atomic. When false, `cas` returns an
    /// [`Unsupported`](crate::ErrorKind::Unsupported) error.
    pub atomic_cas: bool,
    /// Expired entries are never returned by `get`, `list` or `cas`. When
    /// false, an expired entry may still be seen for a short while.
    pub exact_expiry: bool,
    /// Key parts and JSON strings (values and object keys) may contain
    /// U+0000. When false (PostgreSQL's `text` and `jsonb` cannot hold it,
    /// so neither can a store in Fedify's PostgreSQL layout), writing such a
    /// key is an [`InvalidKey`](crate::ErrorKind::InvalidKey) error and
    /// such a value an [`InvalidValue`](crate::ErrorKind::InvalidValue)
    /// error, and nothing is written.
    pub nul_in_text: bool,
    /// [`KvStore::get_with_ttl`] and [`KvStore::get_many_with_ttl`] report
    /// the entry's remaining lifetime. When false they answer `None` for the
    /// lifetime because the store cannot tell (the trait's default
    /// implementations), and a cache in front of the store falls back to its
    /// own maximum TTL for what it fills.
    pub reports_ttl: bool,
}

impl Capabilities {
    /// Everything the contract describes.
    pub const fn full() -> Self {
        Self {
            atomic_cas: true,
            exact_expiry: true,
            nul_in_text: true,
            reports_ttl: true,
        }
    }

    /// These capabilities with `atomic_cas` set as given.
    ///
    /// ```
    /// # use kvtower::Capabilities;
    /// assert!(!Capabilities::full().with_atomic_cas(false).atomic_cas);
    /// ```
    #[must_use]
    pub const fn with_atomic_cas(mut self, atomic_cas: bool) -> Self {
        self.atomic_cas = atomic_cas;
        self
    }

    /// These capabilities with `reports_ttl` set as given: a store that keeps
    /// the trait's default `get_with_ttl` declares `false`.
    ///
    /// ```
    /// # use kvtower::Capabilities;
    /// assert!(!Capabilities::full().with_reports_ttl(false).reports_ttl);
    /// ```
    #[must_use]
    pub const fn with_reports_ttl(mut self, reports_ttl: bool) -> Self {
        self.reports_ttl = reports_ttl;
        self
    }

    /// These capabilities with `exact_expiry` set as given.
    ///
    /// ```
    /// # use kvtower::Capabilities;
    /// assert!(!Capabilities::full().with_exact_expiry(false).exact_expiry);
    /// ```
    #[must_use]
    pub const fn with_exact_expiry(mut self, exact_expiry: bool) -> Self {
        self.exact_expiry = exact_expiry;
        self
    }

    /// These capabilities with `nul_in_text` set as given.
    ///
    /// ```
    /// # use kvtower::Capabilities;
    /// assert!(!Capabilities::full().with_nul_in_text(false).nul_in_text);
    /// ```
    #[must_use]
    pub const fn with_nul_in_text(mut self, nul_in_text: bool) -> Self {
        self.nul_in_text = nul_in_text;
        self
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::full()
    }
}

/// What [`KvStore::get_shared`] answers: the shared value of a key, now or
/// later.
///
/// Ready at once when the store (or the front tier of a cache inside it)
/// answered from memory: then awaiting it allocates nothing and never waits.
/// Otherwise it holds the boxed rest of the read. Layers look at
/// [`into_ready`](Self::into_ready) to count or time only what did not
/// answer at once.
///
/// ```
/// use kvtower::{SharedGet, Value};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let now = SharedGet::ready(Ok(Some(Arc::new(Value::from(1)))));
/// assert!(now.is_ready());
/// let later = SharedGet::boxed(async { Ok(None) });
/// assert!(!later.is_ready());
/// assert_eq!(later.await?, None);
/// # Ok(())
/// # }
/// ```
#[must_use = "a SharedGet does nothing unless awaited"]
pub struct SharedGet<'a> {
    state: SharedGetState<'a>,
}

type SharedAnswer = Result<Option<Arc<Value>>>;

// Small on purpose (three words): a `SharedGet` is returned by value through
// every layer of a stack, and an inline `Error` would make each of those moves
// an 80-byte copy on the hit path.
enum SharedGetState<'a> {
    Found(Option<Arc<Value>>),
    Failed(Box<Error>),
    Pending(futures::future::BoxFuture<'a, SharedAnswer>),
    /// The answer was taken.
    Done,
}

impl<'a> SharedGet<'a> {
    /// An answer at hand.
    pub fn ready(answer: Result<Option<Arc<Value>>>) -> Self {
        let state = match answer {
            Ok(found) => SharedGetState::Found(found),
            Err(e) => SharedGetState::Failed(Box::new(e)),
        };
        Self { state }
    }

    /// An answer still to come from `future`.
    pub fn boxed(future: impl std::future::Future<Output = SharedAnswer> + Send + 'a) -> Self {
        Self {
            state: SharedGetState::Pending(Box::pin(future)),
        }
    }

    /// Whether the answer is at hand (awaiting it does not wait).
    pub fn is_ready(&self) -> bool {
        matches!(
            self.state,
            SharedGetState::Found(_) | SharedGetState::Failed(_)
        )
    }

    /// What the answer is when it is at hand (found or not, or the error),
    /// without taking it: a layer that only looks at a ready answer passes
    /// the read on unchanged instead of unwrapping and rewrapping it.
    pub(crate) fn peek(&self) -> Option<std::result::Result<bool, &Error>> {
        match &self.state {
            SharedGetState::Found(found) => Some(Ok(found.is_some())),
            SharedGetState::Failed(e) => Some(Err(&**e)),
            _ => None,
        }
    }

    /// The answer when it is at hand, else this read, unchanged.
    ///
    /// ```
    /// use kvtower::SharedGet;
    /// let read = SharedGet::ready(Ok(None));
    /// assert!(matches!(read.into_ready(), Ok(Ok(None))));
    /// ```
    pub fn into_ready(self) -> std::result::Result<Result<Option<Arc<Value>>>, Self> {
        match self.state {
            SharedGetState::Found(found) => Ok(Ok(found)),
            SharedGetState::Failed(e) => Ok(Err(*e)),
            state => Err(Self { state }),
        }
    }
}

impl std::future::Future for SharedGet<'_> {
    type Output = SharedAnswer;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<SharedAnswer> {
        if let SharedGetState::Pending(future) = &mut self.state {
            return future.as_mut().poll(cx);
        }
        match std::mem::replace(&mut self.state, SharedGetState::Done) {
            SharedGetState::Found(found) => std::task::Poll::Ready(Ok(found)),
            SharedGetState::Failed(e) => std::task::Poll::Ready(Err(*e)),
            _ => panic!("SharedGet polled after it completed"),
        }
    }
}

impl std::fmt::Debug for SharedGet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedGet")
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// A key–value store of JSON values: the one interface every backend and every
/// layer stack implements.
///
/// The trait is object safe (`Arc<dyn KvStore>` is [`DynKvStore`]) and is
/// implemented for `Arc<S>`, `Box<S>` (so `Box<dyn KvStore>`) and `&S`.
///
/// # Contract
///
/// * `get` returns `None` for an absent or expired key; [`Value::Null`] is a
///   value like any other.
/// * `set` upserts; a TTL of zero leaves the key absent; a write without a TTL
///   clears an earlier TTL.
/// * `delete` of an absent key succeeds.
/// * `cas` is atomic: it succeeds when the current value equals `expected`
///   (`None`: absent or expired), then stores `new` (`None`: deletes). JSON
///   equality is structural (object key order does not matter).
/// * `list` yields every live entry whose key starts with `prefix` part-wise,
///   the key equal to the prefix included; `None` lists everything; no order
///   is promised.
/// * The batch methods behave like their single-key loops, faster where the
///   backend has a native path.
/// * Values nest at most [`MAX_DEPTH`](crate::value::MAX_DEPTH) arrays and
///   objects: `set`, `set_many` and `cas` refuse a deeper one (new or
///   expected value) with [`InvalidValue`](crate::ErrorKind::InvalidValue),
///   checked with [`check_depth`](crate::value::check_depth) before anything
///   recursive touches it. Every value a store accepted reads back exactly
///   (floats bit for bit).
///
/// # Implementing
///
/// See the README's "Implementing your own KvStore" and run
/// `kvtower::conformance_suite!` (feature `testing`) on it.
///
/// # Examples
///
/// ```
/// use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let store = MemoryKvStore::new();
/// let key = kvkey!["user", "42"];
/// store.set(&key, json!({"name": "Ada"}), SetOptions::default()).await?;
/// assert_eq!(store.get(&key).await?, Some(json!({"name": "Ada"})));
/// assert!(store.cas(&key, Some(&json!({"name": "Ada"})), None, SetOptions::default()).await?);
/// assert_eq!(store.get(&key).await?, None);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait KvStore: Send + Sync {
    /// The value stored under `key`, or `None` when it is absent or expired.
    async fn get(&self, key: &KvKey) -> Result<Option<Value>>;

    /// Stores `value` under `key` (insert or overwrite) with `options`.
    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()>;

    /// Removes `key`. Removing an absent key succeeds.
    async fn delete(&self, key: &KvKey) -> Result<()>;

    /// Atomic compare-and-swap: when the current value of `key` equals
    /// `expected` (`None`: absent or expired), stores `new` with `options`
    /// (`None`: deletes the key) and returns `true`; otherwise changes nothing
    /// and returns `false`.
    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool>;

    /// Every live entry whose key starts with `prefix` part-wise (the key equal
    /// to `prefix` included), or every entry when `prefix` is `None`.
    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>>;

    /// The value stored under `key` with its remaining lifetime (`None` inside:
    /// it lives until deleted), or `None` when the key is absent or expired.
    ///
    /// A cache in front of the store fills with this, so that its copy never
    /// outlives the stored entry. The default answers from [`get`](Self::get)
    /// with an unknown lifetime; a store that keeps it declares
    /// [`reports_ttl: false`](Capabilities::reports_ttl).
    ///
    /// ```
    /// use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = MemoryKvStore::new();
    /// store.set(&kvkey!["a"], 1.into(), SetOptions::ttl(Duration::from_secs(60))).await?;
    /// let (value, ttl) = store.get_with_ttl(&kvkey!["a"]).await?.expect("just set");
    /// assert_eq!(value, 1);
    /// assert!(ttl.is_some_and(|ttl| ttl <= Duration::from_secs(60)));
    /// # Ok(())
    /// # }
    /// ```
    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        Ok(self.get(key).await?.map(|value| (value, None)))
    }

    /// The value stored under `key`, shared: a store that keeps decoded
    /// values behind an [`Arc`] (the memory store, the cache layer's front)
    /// answers without copying the value tree.
    ///
    /// This is the hit path of a stack. The returned [`SharedGet`] is ready at
    /// once when the answer came from memory (no allocation, no `.await` that
    /// waits); otherwise it boxes the rest of the read. Layers call the
    /// `get_shared` of the store they wrap and only box (or time) what is
    /// not ready, so a front hit through a whole stack allocates nothing.
    /// The default [`probe`](Self::probe)s, then falls back to
    /// [`get`](Self::get).
    ///
    /// Implement it by hand, not as an `async fn` under `#[async_trait]`:
    /// return [`SharedGet::ready`] when the answer is at hand and
    /// [`SharedGet::boxed`] around an `async` block otherwise.
    ///
    /// ```
    /// use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = MemoryKvStore::new();
    /// let key = kvkey!["a"];
    /// store.set(&key, 1.into(), SetOptions::default()).await?;
    /// let read = store.get_shared(&key);
    /// assert!(read.is_ready()); // answered from memory
    /// assert_eq!(read.await?.as_deref(), Some(&1.into()));
    /// # Ok(())
    /// # }
    /// ```
    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        match self.probe(key) {
            Some(value) => SharedGet::ready(Ok(Some(value))),
            None => SharedGet::boxed(async move { Ok(self.get(key).await?.map(Arc::new)) }),
        }
    }

    /// Stores a shared value: [`set`](Self::set) for a caller that holds
    /// the value behind an [`Arc`] (a cache filling its front with what it
    /// also returns). A store that keeps values behind an `Arc` (the memory
    /// store) keeps this one without copying the tree; the default copies it
    /// out (or unwraps it when nobody else holds it) and calls `set`.
    ///
    /// ```
    /// use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = MemoryKvStore::new();
    /// let value = Arc::new(serde_json::json!({"name": "Ada"}));
    /// store.set_shared(&kvkey!["a"], value.clone(), SetOptions::default()).await?;
    /// assert!(Arc::ptr_eq(&store.get_shared(&kvkey!["a"]).await?.unwrap(), &value));
    /// # Ok(())
    /// # }
    /// ```
    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        self.set(key, Arc::unwrap_or_clone(value), options).await
    }

    /// A synchronous read from memory: the value of `key` when this store (or
    /// the front tier of a cache inside it) holds it in memory right now and
    /// can answer without I/O or waiting; `None` means "ask
    /// [`get_shared`](Self::get_shared)", not "absent".
    ///
    /// The default [`get_shared`](Self::get_shared) answers a probe's value
    /// at once, without a boxed future; a layer that must rewrite the key
    /// first (a prefix) probes with the rewritten key before boxing anything.
    /// A probe never answers a value `get` would not (an expired entry, a key
    /// whose front copy may be stale). Layers forward it; stores that keep
    /// nothing in memory keep the default, which answers `None`.
    ///
    /// ```
    /// use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = MemoryKvStore::new();
    /// assert_eq!(store.probe(&kvkey!["a"]), None);
    /// store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
    /// assert_eq!(store.probe(&kvkey!["a"]).as_deref(), Some(&1.into()));
    /// # Ok(())
    /// # }
    /// ```
    fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
        let _ = key;
        None
    }

    /// The values of `keys`, in order (`None` for each absent key).
    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    /// The values of `keys` with their remaining lifetimes, in order, as
    /// [`get_with_ttl`](Self::get_with_ttl) answers each. The default answers
    /// from [`get_many`](Self::get_many) with unknown lifetimes.
    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        let values = self.get_many(keys).await?;
        Ok(values
            .into_iter()
            .map(|value| value.map(|value| (value, None)))
            .collect())
    }

    /// Stores every entry with the same `options`.
    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        for (key, value) in entries {
            self.set(&key, value, options).await?;
        }
        Ok(())
    }

    /// Removes every key in `keys`.
    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

    /// What this store promises beyond the baseline contract. Required, so a
    /// wrapper cannot forget to forward it and over-promise.
    fn capabilities(&self) -> Capabilities;
}

/// Forwards every method, so that wrappers of a store are stores too.
macro_rules! forward_kv_store {
    ($($generics:tt)*) => {
        #[async_trait]
        impl $($generics)* {
            async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
                (**self).get(key).await
            }
            async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
                (**self).set(key, value, options).await
            }
            async fn delete(&self, key: &KvKey) -> Result<()> {
                (**self).delete(key).await
            }
            async fn cas(
                &self,
                key: &KvKey,
                expected: Option<&Value>,
                new: Option<Value>,
                options: SetOptions,
            ) -> Result<bool> {
                (**self).cas(key, expected, new, options).await
            }
            fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
                (**self).list(prefix)
            }
            async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
                (**self).get_with_ttl(key).await
            }
            fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
                (**self).get_shared(key)
            }
            async fn set_shared(
                &self,
                key: &KvKey,
                value: Arc<Value>,
                options: SetOptions,
            ) -> Result<()> {
                (**self).set_shared(key, value, options).await
            }
            fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
                (**self).probe(key)
            }
            async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
                (**self).get_many(keys).await
            }
            async fn get_many_with_ttl(
                &self,
                keys: &[KvKey],
            ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
                (**self).get_many_with_ttl(keys).await
            }
            async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
                (**self).set_many(entries, options).await
            }
            async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
                (**self).delete_many(keys).await
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
        }
    };
}

forward_kv_store!(<S: KvStore + ?Sized> KvStore for Arc<S>);
forward_kv_store!(<S: KvStore + ?Sized> KvStore for Box<S>);
forward_kv_store!(<S: KvStore + ?Sized> KvStore for &S);

/// Typed helpers over any [`KvStore`], through serde.
///
/// ```
/// use kvtower::{kvkey, KvStoreExt, MemoryKvStore, SetOptions};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// struct User { name: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let store = MemoryKvStore::new();
/// let key = kvkey!["user", "42"];
/// store.set_as(&key, &User { name: "Ada".into() }, SetOptions::default()).await?;
/// let user: Option<User> = store.get_as(&key).await?;
/// assert_eq!(user, Some(User { name: "Ada".into() }));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait KvStoreExt: KvStore {
    /// [`get`](KvStore::get), deserialized into `T`.
    ///
    /// # Errors
    ///
    /// An [`InvalidValue`](crate::ErrorKind::InvalidValue) error naming the key
    /// when the stored value does not deserialize into `T`.
    ///
    /// Reads through [`get_shared`](KvStore::get_shared) and deserializes from
    /// the shared value, so a hit in a memory tier copies no value tree.
    async fn get_as<T: DeserializeOwned>(&self, key: &KvKey) -> Result<Option<T>> {
        match self.get_shared(key).await? {
            None => Ok(None),
            Some(value) => T::deserialize(&*value)
                .map(Some)
                .map_err(|e| Error::from(e).with_operation(Operation::Get).with_key(key)),
        }
    }

    /// [`set`](KvStore::set) of `value` serialized to JSON.
    ///
    /// # Errors
    ///
    /// An [`InvalidValue`](crate::ErrorKind::InvalidValue) error when `value`
    /// cannot be serialized (a map with non-string keys, for example).
    async fn set_as<T: Serialize + Sync + ?Sized>(
        &self,
        key: &KvKey,
        value: &T,
        options: SetOptions,
    ) -> Result<()> {
        let value = serde_json::to_value(value)
            .map_err(|e| Error::from(e).with_operation(Operation::Set).with_key(key))?;
        self.set(key, value, options).await
    }

    /// Every listed entry of the prefix, collected (for small listings).
    ///
    /// ```
    /// # use kvtower::{kvkey, KvStore, KvStoreExt, MemoryKvStore, SetOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = MemoryKvStore::new();
    /// store.set(&kvkey!["a", "1"], 1.into(), SetOptions::default()).await?;
    /// assert_eq!(store.list_all(Some(kvkey!["a"])).await?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    async fn list_all(&self, prefix: Option<KvKey>) -> Result<Vec<KvEntry>> {
        use futures::TryStreamExt;
        self.list(prefix).try_collect().await
    }
}

impl<S: KvStore + ?Sized> KvStoreExt for S {}
