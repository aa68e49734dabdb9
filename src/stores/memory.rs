//! [`MemoryKvStore`]: an in-process store on [`moka::future::Cache`].
//!
//! Bounded by an entry count or a byte budget, with per-entry TTLs. Use it in
//! tests, as a single process's store, or as the front tier of a
//! [`CacheLayer`](crate::layers::CacheLayer).
//!
//! ```
//! use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let store = MemoryKvStore::builder().max_entries(10_000).build();
//! store.set(&kvkey!["session", "s1"], "alice".into(), SetOptions::ttl(Duration::from_secs(60))).await?;
//! assert_eq!(store.get(&kvkey!["session", "s1"]).await?, Some("alice".into()));
//! # Ok(())
//! # }
//! ```

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use moka::future::Cache;
use moka::Expiry;
use std::future::Future;

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};
use crate::value::{checked, checked_cas, checked_entries};

/// How many entries one chunk of a listing holds at most.
const LIST_CHUNK: usize = 64;
/// How many entries one chunk of a listing scans at most.
const LIST_SCAN: usize = 4_096;

/// A listing in progress: see [`MemoryKvStore::list`](KvStore::list).
struct ListState<'a> {
    entries: moka::future::Iter<'a, KvKey, Stored>,
    prefix: Option<KvKey>,
    done: bool,
}

/// The default bound of [`MemoryKvStore::new`], in entries.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// An in-memory store on a moka cache.
///
/// Cheap to clone: clones share the same entries.
///
/// When the bound is reached, moka evicts the entries least likely to be used
/// again (TinyLFU), so this is a cache, not durable storage.
///
/// `get` and `list` take no lock; writes to one key are serialized by a
/// striped lock, which is what makes [`cas`](KvStore::cas) atomic against
/// concurrent `set`, `delete` and `cas` calls on the same key.
///
/// ```
/// use kvtower::MemoryKvStore;
/// let store = MemoryKvStore::new(); // at most 100,000 entries
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct MemoryKvStore {
    cache: Cache<KvKey, Stored, Hasher>,
    max_value_bytes: Option<usize>,
    /// [`MemoryKvStoreBuilder::max_ttl`]: moka holds entries for at most
    /// this long and the store checks each entry's own deadline on read.
    max_ttl: Option<Duration>,
    /// Striped write locks: see [`MemoryKvStore::write_lock`].
    locks: Arc<WriteLocks>,
}

/// The hasher of the cache and of the lock stripes: foldhash, seeded per
/// store from the process's random state. Hashing a key is a large part of a
/// cache hit, and SipHash (std's default, and moka's) costs about twice as
/// much for short keys; foldhash's per-instance random seed still keeps
/// colliding keys from being precomputed.
type Hasher = foldhash::fast::RandomState;

/// The number of write-lock stripes (a power of two).
const STRIPES: usize = 256;

struct WriteLocks {
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: Hasher,
}

impl std::fmt::Debug for MemoryKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKvStore")
            .field("entry_count", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .finish()
    }
}

/// A stored value and the instant it expires.
///
/// By default moka expires entries through [`StoredExpiry`]: its
/// housekeeping (which frees them) is lazy, but every read checks the
/// entry's expiry first, on the same clock (`std::time::Instant`), so a
/// `get` never returns an entry at or past `expires_at` and needs no clock
/// read of its own. With [`max_ttl`](MemoryKvStoreBuilder::max_ttl) moka
/// knows only the one global bound, and the store checks `expires_at`
/// itself (see [`MemoryKvStore::live`]).
///
/// The value is behind an [`Arc`]: moka hands out clones of what it stores,
/// and a clone of an `Arc` is a counter increment where a clone of the value
/// tree is an allocation per string, array and object.
#[derive(Clone)]
struct Stored {
    value: Arc<Value>,
    expires_at: Option<Instant>,
}

impl Stored {
    fn is_live(&self, now: impl FnOnce() -> Instant) -> bool {
        match self.expires_at {
            None => true,
            Some(at) => now() < at,
        }
    }
}

struct StoredExpiry;

impl Expiry<KvKey, Stored> for StoredExpiry {
    fn expire_after_create(
        &self,
        _: &KvKey,
        value: &Stored,
        created_at: Instant,
    ) -> Option<Duration> {
        value
            .expires_at
            .map(|at| at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &KvKey,
        value: &Stored,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        // The new value's TTL replaces the old one; no TTL means none at all.
        value
            .expires_at
            .map(|at| at.saturating_duration_since(updated_at))
    }
}

/// Options of a [`MemoryKvStore`], from [`MemoryKvStore::builder`].
///
/// ```
/// use kvtower::MemoryKvStore;
/// let store = MemoryKvStore::builder()
///     .max_bytes(64 * 1024 * 1024) // weigh entries by their JSON size
///     .max_value_bytes(1024 * 1024)
///     .build();
/// # let _ = store;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryKvStoreBuilder {
    bound: Bound,
    max_value_bytes: Option<usize>,
    max_ttl: Option<Duration>,
}

/// The longest global TTL moka accepts (its builder panics past 1,000 years).
const MOKA_MAX_TTL: Duration = Duration::from_secs(1_000 * 365 * 24 * 60 * 60);

#[derive(Debug, Clone, Copy)]
enum Bound {
    Entries(u64),
    Bytes(u64),
}

impl MemoryKvStoreBuilder {
    /// Bound the store at `max` entries (the default, with
    /// [`DEFAULT_MAX_ENTRIES`]).
    pub fn max_entries(mut self, max: u64) -> Self {
        self.bound = Bound::Entries(max);
        self
    }

    /// Bound the store at about `max` bytes of heap, weighing each entry by
    /// an estimate of what it really takes in memory: its key parts and the
    /// tree of its value (every node, string and map entry), plus moka's
    /// bookkeeping. The JSON text is no measure: `[0,0,…]` is 2 bytes of
    /// text per element but 32 bytes of heap. The weight is computed once per
    /// write, without recursion.
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.bound = Bound::Bytes(max);
        self
    }

    /// Reject values whose JSON text is longer than `max` bytes with a
    /// [`ValueTooLarge`](ErrorKind::ValueTooLarge) error.
    pub fn max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = Some(max);
        self
    }

    /// Keep every entry at most `max`: a write with a longer TTL, or with
    /// none, lives `max`. Meant for a front tier, whose entries all have a
    /// bound anyway (a [`CacheLayer`](crate::layers::CacheLayer) front gets
    /// at most its [`front_max_ttl`](crate::layers::CacheLayerBuilder::front_max_ttl)):
    /// give it that value.
    ///
    /// What it buys: moka then expires entries by one global TTL, as a
    /// hand-written `Cache::builder().time_to_live(max)` does, instead of a
    /// per-entry expiry policy that it consults on every read (about 250
    /// instructions of a ~1,700-instruction hit, measured with callgrind in
    /// `bench/hitpath`). The store checks an entry's own, shorter deadline
    /// on read with one clock read, so reads stay exact; but an entry whose
    /// TTL was shorter than `max` is freed only when `max` has passed since
    /// its write (or when evicted), not at its own deadline.
    ///
    /// ```
    /// use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let front = MemoryKvStore::builder()
    ///     .max_entries(10_000)
    ///     .max_ttl(Duration::from_secs(60))
    ///     .build();
    /// front.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
    /// let (_, ttl) = front.get_with_ttl(&kvkey!["a"]).await?.unwrap();
    /// assert!(ttl.unwrap() <= Duration::from_secs(60)); // capped
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_ttl(mut self, max: Duration) -> Self {
        self.max_ttl = Some(max.min(MOKA_MAX_TTL));
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryKvStore {
        let builder = match self.max_ttl {
            Some(max) => Cache::builder().time_to_live(max),
            None => Cache::builder().expire_after(StoredExpiry),
        };
        let cache = match self.bound {
            Bound::Entries(max) => builder
                .max_capacity(max)
                .build_with_hasher(Hasher::default()),
            Bound::Bytes(max) => builder
                .max_capacity(max)
                .weigher(|key: &KvKey, stored: &Stored| {
                    let weight = key_weight(key) + heap_size(&stored.value);
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
                .build_with_hasher(Hasher::default()),
        };
        MemoryKvStore {
            cache,
            max_value_bytes: self.max_value_bytes,
            max_ttl: self.max_ttl,
            locks: Arc::new(WriteLocks {
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                hasher: Hasher::default(),
            }),
        }
    }
}

/// moka's bookkeeping per entry, roughly: the `Arc`ed key and value entry,
/// the access-order and write-order deque nodes, the timer-wheel node and the
/// hash-table slot.
const ENTRY_OVERHEAD: usize = 160;

/// Bytes a key takes in memory, roughly: its parts and their headers, plus
/// the entry's bookkeeping.
fn key_weight(key: &KvKey) -> usize {
    key.parts()
        .iter()
        .map(|p| p.capacity() + std::mem::size_of::<String>())
        .sum::<usize>()
        + 2 * std::mem::size_of::<usize>() // the Arc<[String]>'s counts
        + ENTRY_OVERHEAD
}

/// The heap a value takes, estimated from its tree without recursion: the
/// value itself (a `Stored` holds it inline), every array slot
/// (`size_of::<Value>()` each, by capacity), every string's capacity, and
/// every map entry (a key `String` and a `Value` in a B-tree node, which is
/// about two thirds full on average).
pub(crate) fn heap_size(value: &Value) -> usize {
    const VALUE: usize = std::mem::size_of::<Value>();
    const MAP_ENTRY: usize = (std::mem::size_of::<String>() + VALUE) * 3 / 2;
    let mut total = VALUE;
    crate::value::for_each_node(value, |node| match node {
        Value::String(s) => total += s.capacity(),
        Value::Array(items) => total += items.capacity() * VALUE,
        Value::Object(map) => {
            total += map.keys().map(|k| MAP_ENTRY + k.capacity()).sum::<usize>();
        }
        _ => {}
    });
    total
}

/// The length of `value`'s JSON text, without building the text.
pub(crate) fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value into an infallible sink cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl Default for MemoryKvStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKvStore {
    /// A store bounded at [`DEFAULT_MAX_ENTRIES`] entries.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for the bound and limits.
    pub fn builder() -> MemoryKvStoreBuilder {
        MemoryKvStoreBuilder {
            bound: Bound::Entries(DEFAULT_MAX_ENTRIES),
            max_value_bytes: None,
            max_ttl: None,
        }
    }

    /// How many entries the store holds, approximately (moka updates the count
    /// lazily; expired entries may still be counted).
    ///
    /// ```
    /// # let store = kvtower::MemoryKvStore::new();
    /// assert_eq!(store.entry_count(), 0);
    /// ```
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The total weight of the entries: bytes with
    /// [`max_bytes`](MemoryKvStoreBuilder::max_bytes), else the entry count.
    /// Call [`run_pending_tasks`](Self::run_pending_tasks) first for an exact
    /// figure.
    ///
    /// ```
    /// # let store = kvtower::MemoryKvStore::new();
    /// assert_eq!(store.weighted_size(), 0);
    /// ```
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Runs moka's pending housekeeping (evictions, expirations) now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = kvtower::MemoryKvStore::new();
    /// store.run_pending_tasks().await;
    /// # }
    /// ```
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Removes every entry.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// # use kvtower::{kvkey, KvStore, SetOptions};
    /// let store = kvtower::MemoryKvStore::new();
    /// store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
    /// store.clear();
    /// assert_eq!(store.get(&kvkey!["a"]).await?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    fn stored(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<Stored> {
        self.stored_shared(key, Arc::new(value), options)
    }

    fn stored_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<Stored> {
        if let Some(max) = self.max_value_bytes {
            let len = json_len(&value);
            if len > max {
                return Err(Error::new(
                    ErrorKind::ValueTooLarge,
                    format!("value of {len} bytes exceeds the limit of {max} bytes"),
                )
                .with_key(key));
            }
        }
        let ttl = match (options.ttl, self.max_ttl) {
            (Some(ttl), Some(max)) => Some(ttl.min(max)),
            (ttl, max) => ttl.or(max),
        };
        // `checked_add` guards against a TTL so long the instant overflows: such
        // a value simply never expires.
        let expires_at = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        Ok(Stored { value, expires_at })
    }

    /// `set_shared` of a value already known to nest at most
    /// [`MAX_DEPTH`](crate::value::MAX_DEPTH). A cache tier installs only
    /// values it checked (a write through it) or read from its inner store
    /// (whose values the trait contract bounds), so a front fill skips the
    /// second walk of the tree (about 1,000 instructions for a ~200-byte
    /// object) and the boxed future of `set_shared`.
    pub(crate) async fn set_checked(
        &self,
        key: &KvKey,
        value: Arc<Value>,
        options: SetOptions,
    ) -> Result<()> {
        let stored = if options.is_expired() {
            None
        } else {
            Some(
                self.stored_shared(key, value, options)
                    .map_err(|e| e.with_operation(Operation::Set))?,
            )
        };
        let _guard = self.write_lock(key).await;
        self.apply(key, stored).await;
        Ok(())
    }

    /// The write lock of `key`'s stripe.
    ///
    /// Every write (`set`, `delete`, `cas`, batches) holds it, so a `cas`'s
    /// read and its write are one atomic step for all writers of the key.
    /// moka's own `and_compute_with` would serialize compute calls, but not
    /// plain inserts, and costs about twice an insert; a striped async mutex
    /// plus a plain insert is both correct and cheaper. Readers never wait.
    async fn write_lock(&self, key: &KvKey) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = &self.locks.stripes[self.locks.hasher.hash_one(key) as usize & (STRIPES - 1)];
        // Uncontended without building and polling the acquire future.
        match stripe.try_lock() {
            Ok(guard) => guard,
            Err(_) => stripe.lock().await,
        }
    }

    async fn apply(&self, key: &KvKey, stored: Option<Stored>) {
        match stored {
            Some(stored) => self.cache.insert(key.clone(), stored).await,
            None => self.cache.invalidate(key).await,
        }
    }

    /// The value of an entry moka returned, if live. By default moka
    /// checked `expires_at` against its clock (see [`Stored`]); with
    /// [`max_ttl`](MemoryKvStoreBuilder::max_ttl) it checked only the global
    /// bound, and the entry's own deadline is checked here.
    fn live(&self, stored: Option<Stored>) -> Option<Arc<Value>> {
        let stored = stored?;
        if self.max_ttl.is_some() && !stored.is_live(Instant::now) {
            return None;
        }
        Some(stored.value)
    }

    /// moka's read of `key` when it completes without waiting (`None`: its
    /// housekeeping is due and another task holds it). Polled once where it
    /// stands: moka's read future is large, and `now_or_never` would copy it.
    fn get_now(&self, key: &KvKey) -> Option<Option<Stored>> {
        let mut read = std::pin::pin!(self.cache.get(key));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match read.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(stored) => Some(stored),
            std::task::Poll::Pending => None,
        }
    }

    /// A live entry with what is left of its TTL.
    fn live_with_ttl(stored: Option<Stored>) -> Option<(Value, Option<Duration>)> {
        let now = Instant::now();
        let stored = stored.filter(|s| s.is_live(|| now))?;
        let left = stored
            .expires_at
            .map(|at| at.saturating_duration_since(now));
        Some((Arc::unwrap_or_clone(stored.value), left))
    }
}

#[async_trait]
impl KvStore for MemoryKvStore {
    /// Copies the value tree out of the store: [`get_shared`](Self::get_shared)
    /// does not.
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        Ok(self
            .live(self.cache.get(key).await)
            .map(Arc::unwrap_or_clone))
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        Ok(Self::live_with_ttl(self.cache.get(key).await))
    }

    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        // Absent is a definite answer here too: this store holds everything
        // it has in memory. Only moka's due housekeeping makes it wait.
        match self.get_now(key) {
            Some(stored) => SharedGet::ready(Ok(self.live(stored))),
            None => SharedGet::boxed(async move { Ok(self.live(self.cache.get(key).await)) }),
        }
    }

    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        let value = crate::value::checked_shared(value)
            .map_err(|e| e.with_operation(Operation::Set).with_key(key))?;
        self.set_checked(key, value, options).await
    }

    fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
        // moka's read completes without waiting unless its housekeeping is
        // due; then this answers "don't know" and the async path does it.
        self.live(self.get_now(key)?)
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let value = checked(value).map_err(|e| e.with_operation(Operation::Set).with_key(key))?;
        let stored = if options.is_expired() {
            None
        } else {
            Some(
                self.stored(key, value, options)
                    .map_err(|e| e.with_operation(Operation::Set))?,
            )
        };
        let _guard = self.write_lock(key).await;
        self.apply(key, stored).await;
        Ok(())
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        let _guard = self.write_lock(key).await;
        self.cache.invalidate(key).await;
        Ok(())
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let new = checked_cas(expected, new)
            .map_err(|e| e.with_operation(Operation::Cas).with_key(key))?;
        let replacement = match new {
            Some(value) if !options.is_expired() => Some(
                self.stored(key, value, options)
                    .map_err(|e| e.with_operation(Operation::Cas))?,
            ),
            _ => None,
        };
        let _guard = self.write_lock(key).await;
        let current = self.live(self.cache.get(key).await);
        // serde_json's equality is structural: objects compare as maps.
        if current.as_deref() != expected {
            return Ok(false);
        }
        self.apply(key, replacement).await;
        Ok(true)
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        // Lazily, in chunks: moka's iterator holds the keys of one of its
        // hash-table segments at a time (1/64 of the keys, as `Arc`s) and
        // clones a value only when it is reached; a chunk holds at most
        // LIST_CHUNK matching entries. No sort: no order is promised. Each
        // chunk also ends after LIST_SCAN entries scanned, and the task yields
        // before the next one, so a listing whose prefix matches few of many
        // entries does not hold a worker thread for the whole scan.
        let state = ListState {
            entries: self.cache.iter(),
            prefix,
            done: false,
        };
        stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let now = Instant::now();
            let mut chunk = Vec::new();
            for _ in 0..LIST_SCAN {
                let Some((key, stored)) = state.entries.next() else {
                    state.done = true;
                    break;
                };
                let wanted = state.prefix.as_ref().is_none_or(|p| key.starts_with(p));
                if wanted && stored.is_live(|| now) {
                    chunk.push(Ok(KvEntry {
                        key: KvKey::clone(&key),
                        value: Arc::unwrap_or_clone(stored.value),
                    }));
                    if chunk.len() == LIST_CHUNK {
                        break;
                    }
                }
            }
            if chunk.is_empty() && !state.done {
                tokio::task::yield_now().await;
            }
            Some((stream::iter(chunk), state))
        })
        .flatten()
        .boxed()
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(
                self.live(self.cache.get(key).await)
                    .map(Arc::unwrap_or_clone),
            );
        }
        Ok(values)
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(Self::live_with_ttl(self.cache.get(key).await));
        }
        Ok(values)
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        // Check every value first so that a rejected batch writes nothing.
        let entries = checked_entries(entries).map_err(|e| e.with_operation(Operation::SetMany))?;
        let mut prepared = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let stored = if options.is_expired() {
                None
            } else {
                Some(
                    self.stored(&key, value, options)
                        .map_err(|e| e.with_operation(Operation::SetMany))?,
                )
            };
            prepared.push((key, stored));
        }
        for (key, stored) in prepared {
            let _guard = self.write_lock(&key).await;
            self.apply(&key, stored).await;
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::full()
    }
}
