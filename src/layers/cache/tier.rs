//! The front tier and every change to it.
//!
//! # The race this guards against (mini-redis style)
//!
//! ```text
//! reader: misses the front, reads the inner store: old value
//! writer: writes the inner store: new value; updates the front: new value
//! reader: fills the front: old value         <- stale until the front TTL
//! ```
//!
//! Every key belongs to a stripe, which has a lock and a generation. Every
//! write and every invalidation of a key bumps its stripe's generation after
//! its inner call returned. A fill remembers the generation *before* its
//! inner read and installs only if it is unchanged, so a fill that may have
//! read an older value than a concurrent write is dropped.
//!
//! Writers and fills of a key *install* front entries under the stripe's
//! lock (a [`KeyGuard`] proves it), so the single-key writers of a key reach
//! the inner store in the order they change the front, and each may put its
//! value in front. Invalidations (from another node, from client tracking,
//! from [`CacheHandle`](super::CacheHandle)) take no lock, so a slow local
//! write never delays them: they bump the generation, then delete. An
//! installer therefore writes the front and *then* checks the generation once
//! more, deleting what it wrote if an invalidation came in between: an
//! invalidation's delete always follows its bump, so either the installer
//! sees the bump or the delete comes after the install.
//!
//! Batch writes cannot hold many stripes at once without risking lock-order
//! deadlocks: they remember the generation before their inner write and only
//! ever invalidate. Stripes are shared by keys, which only ever makes this
//! more conservative.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt;

use super::coherence::{CacheId, Coherence, FrontOps};
use super::deadlines::Deadlines;
use super::flight::Flights;
use super::stale::StaleCopies;
use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{KvStore, SetOptions, Value};

/// Generation stripes (a power of two): enough that unrelated keys rarely
/// share one (a write to one key of a stripe makes concurrent fills of the
/// others drop their result, so false sharing costs hit ratio under write
/// load: 256 stripes lost 15 points on a Zipf workload with 64 writers), few
/// enough to stay small (about 40 bytes each).
const STRIPES: usize = 4096;

/// The most keys remembered as having a write of unknown outcome; past it,
/// the whole front is bypassed for the window instead.
const UNCERTAIN_MAX_KEYS: usize = 10_000;

#[derive(Default)]
struct Stripe {
    /// Serializes the installs of front entries for the keys of this stripe.
    lock: tokio::sync::Mutex<()>,
    /// Bumped by every write and invalidation of a key of this stripe.
    generation: AtomicU64,
}

/// Proof that the caller holds `key`'s stripe lock: what every install of a
/// front entry takes.
pub(super) struct KeyGuard<'a> {
    key: &'a KvKey,
    stripe: &'a Stripe,
    _lock: tokio::sync::MutexGuard<'a, ()>,
}

impl KeyGuard<'_> {
    /// The key's generation now.
    pub(super) fn generation(&self) -> u64 {
        self.stripe.generation.load(Ordering::SeqCst)
    }
}

/// What a write's inner call told about its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It succeeded: the inner store holds what was written.
    Landed,
    /// It failed in a way that means it did not land (a bad value, a bad
    /// key): the front only invalidates, to be safe.
    Failed,
    /// It failed in a way that may still land later (a timeout, a lost
    /// connection): the key's state is unknown for a while.
    Unknown,
}

impl Outcome {
    pub(super) fn of<T>(result: &Result<T>) -> Self {
        match result {
            Ok(_) => Self::Landed,
            Err(e) if e.is_retryable() => Self::Unknown,
            Err(_) => Self::Failed,
        }
    }
}

/// What a fill knows about the inner entry's lifetime.
#[derive(Debug, Clone, Copy)]
pub(super) enum InnerTtl {
    /// The inner store reported what was `left` (`None`: lives until
    /// deleted) to a read started at `start`.
    Reported {
        left: Option<Duration>,
        start: Instant,
    },
    /// The inner store cannot tell, or was not asked
    /// ([`fill_without_inner_ttl`](super::CacheLayerBuilder::fill_without_inner_ttl)).
    Unknown,
}

/// Keys whose last write has an unknown outcome, until when.
#[derive(Default)]
struct Uncertain {
    /// Fast path: false when nothing is uncertain.
    any: AtomicBool,
    state: Mutex<UncertainState>,
}

#[derive(Default)]
struct UncertainState {
    keys: HashMap<KvKey, Instant>,
    /// Too many keys: everything is uncertain until then.
    all_until: Option<Instant>,
}

impl Uncertain {
    fn contains(&self, key: &KvKey) -> bool {
        if !self.any.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.all_until.is_some_and(|until| until > now) {
            return true;
        }
        state.all_until = None;
        match state.keys.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                state.keys.remove(key);
                self.any.store(!state.keys.is_empty(), Ordering::SeqCst);
                false
            }
            None => false,
        }
    }

    fn insert(&self, key: &KvKey, until: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if state.keys.len() >= UNCERTAIN_MAX_KEYS {
            state.keys.retain(|_, u| *u > now);
        }
        if state.keys.len() >= UNCERTAIN_MAX_KEYS {
            state.all_until = Some(state.all_until.map_or(until, |u| u.max(until)));
        } else {
            let entry = state.keys.entry(key.clone()).or_insert(until);
            *entry = (*entry).max(until);
        }
        self.any.store(true, Ordering::SeqCst);
    }
}

pub(super) struct Counters {
    pub(super) front_hit: metrics::Counter,
    pub(super) front_miss: metrics::Counter,
    pub(super) inner_hit: metrics::Counter,
    pub(super) inner_miss: metrics::Counter,
    /// Reads answered by a stale copy (`stale_if_error`).
    pub(super) stale_served: metrics::Counter,
}

/// The settings of a tier, from the builder.
pub(super) struct Settings {
    pub(super) name: String,
    pub(super) front_max_ttl: Duration,
    pub(super) fill_without_inner_ttl: bool,
    pub(super) negative_ttl: Option<Duration>,
    pub(super) unknown_outcome_window: Duration,
    pub(super) stale_if_error: Option<Duration>,
    pub(super) sources: Vec<Arc<dyn Coherence>>,
    pub(super) counters: Counters,
}

/// The default bound of the negative cache, in keys.
const NEGATIVE_MAX_ENTRIES: u64 = 100_000;

/// The front tier and everything that changes it. All front mutations are
/// methods of this type.
pub(super) struct Tier<F> {
    pub(super) front: F,
    pub(super) id: CacheId,
    name: String,
    front_max_ttl: Duration,
    /// Fills read the value only, not its remaining lifetime.
    pub(super) fill_without_inner_ttl: bool,
    negative: Option<moka::future::Cache<KvKey, ()>>,
    deadlines: Deadlines,
    stripes: Box<[Stripe]>,
    /// foldhash: a key hashes to its kept `u64` (see `KvKey`).
    hasher: foldhash::fast::RandomState,
    pub(super) flights: Flights,
    counters: Counters,
    sources: Vec<Arc<dyn Coherence>>,
    uncertain: Uncertain,
    unknown_outcome_window: Duration,
    /// Last values put in front, for reads whose inner store fails.
    stale: Option<StaleCopies>,
    /// Itself, for the task that ends an unknown-outcome window.
    this: Weak<Self>,
}

impl<F> fmt::Debug for Tier<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tier")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("front_max_ttl", &self.front_max_ttl)
            .field("negative", &self.negative.as_ref().map(|_| "on"))
            .field("coherence_sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl<F> Tier<F> {
    pub(super) fn new(front: F, settings: Settings) -> Arc<Self> {
        let negative = settings.negative_ttl.map(|ttl| {
            moka::future::Cache::builder()
                .max_capacity(NEGATIVE_MAX_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        Arc::new_cyclic(|this| Tier {
            front,
            id: CacheId::random(),
            name: settings.name,
            front_max_ttl: settings.front_max_ttl,
            fill_without_inner_ttl: settings.fill_without_inner_ttl,
            negative,
            deadlines: Deadlines::new(),
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            flights: Flights::default(),
            counters: settings.counters,
            sources: settings.sources,
            uncertain: Uncertain::default(),
            unknown_outcome_window: settings.unknown_outcome_window,
            stale: settings
                .stale_if_error
                .map(|max| StaleCopies::new(max, settings.front_max_ttl)),
            this: this.clone(),
        })
    }

    fn stripe(&self, key: &KvKey) -> &Stripe {
        let hash = self.hasher.hash_one(key) as usize;
        &self.stripes[hash & (STRIPES - 1)]
    }

    /// The generation of `key` now.
    pub(super) fn generation(&self, key: &KvKey) -> u64 {
        self.stripe(key).generation.load(Ordering::SeqCst)
    }

    /// Takes `key`'s stripe lock.
    pub(super) async fn lock<'a>(&'a self, key: &'a KvKey) -> KeyGuard<'a> {
        let stripe = self.stripe(key);
        // Uncontended (the common case) without building and polling the
        // semaphore's acquire future: about 150 instructions per fill.
        let lock = match stripe.lock.try_lock() {
            Ok(lock) => lock,
            Err(_) => stripe.lock.lock().await,
        };
        KeyGuard {
            key,
            stripe,
            _lock: lock,
        }
    }

    /// Whether the front may answer reads of `key` (and be filled with it):
    /// not while a coherence source may be missing changes, nor while a
    /// write of `key` with an unknown outcome may still land.
    pub(super) fn serves(&self, key: &KvKey) -> bool {
        self.sources.iter().all(|s| s.is_live()) && !self.uncertain.contains(key)
    }

    /// Whether the front may answer reads at all (see [`serves`](Self::serves)).
    pub(super) fn serving(&self) -> bool {
        self.sources.iter().all(|s| s.is_live())
    }

    /// Tells every coherence source that `key` was written.
    pub(super) fn announce(&self, key: &KvKey) {
        for source in &self.sources {
            source.written(self.id, key);
        }
    }

    pub(super) fn front_failed(&self, operation: Operation, error: &Error) {
        // No key here: key parts can hold user data.
        tracing::warn!(
            cache = %self.name,
            operation = operation.as_str(),
            error_kind = %error.kind(),
            "front tier operation failed; the inner store stays authoritative"
        );
    }

    /// The stale copy of `key` to answer instead of `error`, the inner
    /// store's: only with `stale_if_error`, for a retryable error, and never
    /// for a key whose last write has an unknown outcome (its value is not
    /// known to be the copy's).
    pub(super) async fn stale_for(&self, key: &KvKey, error: &Error) -> Option<Arc<Value>> {
        let stale = self.stale.as_ref()?;
        if !error.is_retryable() || self.uncertain.contains(key) {
            return None;
        }
        let value = stale.get(key).await?;
        self.counters.stale_served.increment(1);
        // No key here: key parts can hold user data.
        tracing::debug!(
            cache = %self.name,
            error_kind = %error.kind(),
            "inner store failed; answering a stale copy (stale_if_error)"
        );
        Some(value)
    }

    /// [`stale_for`](Self::stale_for) every key of a batch, or `error` when
    /// any has no stale copy (an absent answer would be a guess).
    pub(super) async fn stale_batch(&self, keys: &[KvKey], error: Error) -> Result<Vec<Value>> {
        let Some(stale) = self.stale.as_ref().filter(|_| error.is_retryable()) else {
            return Err(error);
        };
        let mut copies = Vec::with_capacity(keys.len());
        for key in keys {
            match stale.get(key).await {
                Some(value) if !self.uncertain.contains(key) => copies.push(value),
                _ => return Err(error),
            }
        }
        self.counters.stale_served.increment(copies.len() as u64);
        tracing::debug!(
            cache = %self.name,
            error_kind = %error.kind(),
            keys = copies.len(),
            "inner store failed; answering stale copies (stale_if_error)"
        );
        Ok(copies.iter().map(|value| Value::clone(value)).collect())
    }

    pub(super) fn count_inner(&self, found: bool) {
        if found {
            self.counters.inner_hit.increment(1);
        } else {
            self.counters.inner_miss.increment(1);
        }
    }

    /// The front TTL of an entry whose inner entry dies at `deadline`
    /// (`None`: never), from now: never longer than the front maximum. `None`
    /// when the entry is already dead.
    fn front_ttl(&self, deadline: Option<Instant>) -> Option<SetOptions> {
        let ttl = match deadline {
            Some(deadline) => deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())?
                .min(self.front_max_ttl),
            None => self.front_max_ttl,
        };
        (!ttl.is_zero()).then(|| SetOptions::ttl(ttl))
    }
}

impl<F: KvStore + 'static> Tier<F> {
    /// The hit path: the front's value of `key` when the front may answer it
    /// and holds it in memory now (see [`KvStore::probe`]). `None` is not a
    /// miss, only "take the async path", so it counts nothing.
    pub(super) fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
        if !self.serves(key) {
            return None;
        }
        let value = self.front.probe(key)?;
        self.count_front_hit();
        Some(value)
    }

    pub(super) fn count_front_hit(&self) {
        self.counters.front_hit.increment(1);
    }

    /// A front lookup (a copy of the value): `Some(answer)` when the front
    /// (or the negative cache) answers. A front error is a miss: the inner
    /// store can serve it.
    pub(super) async fn lookup(&self, key: &KvKey) -> Option<Option<Value>> {
        let found = self.lookup_shared(key).await?;
        Some(found.map(Arc::unwrap_or_clone))
    }

    /// [`lookup`](Self::lookup), sharing the front's value.
    async fn lookup_shared(&self, key: &KvKey) -> Option<Option<Arc<Value>>> {
        let front = self.front.get_shared(key).await;
        self.after_front(key, front).await
    }

    /// A lookup once the front answered `front`: the front's value, else the
    /// negative cache's "absent", else `None` (a miss, counted).
    pub(super) async fn after_front(
        &self,
        key: &KvKey,
        front: Result<Option<Arc<Value>>>,
    ) -> Option<Option<Arc<Value>>> {
        match front {
            Ok(Some(value)) => {
                self.count_front_hit();
                return Some(Some(value));
            }
            Ok(None) => {}
            Err(e) => self.front_failed(Operation::Get, &e),
        }
        if let Some(negative) = &self.negative {
            if negative.get(key).await.is_some() {
                self.count_front_hit();
                return Some(None);
            }
        }
        self.counters.front_miss.increment(1);
        None
    }

    /// A front lookup that also answers the inner entry's deadline (`None`
    /// inside: lives until deleted), for `get_with_ttl`: a front hit whose
    /// lifetime this layer does not remember is a miss.
    pub(super) async fn lookup_with_deadline(
        &self,
        key: &KvKey,
    ) -> Option<Option<(Arc<Value>, Option<Instant>)>> {
        match self.lookup_shared(key).await? {
            None => Some(None),
            Some(value) => match self.deadlines.get(key) {
                Some(Some(deadline)) if deadline > Instant::now() => {
                    Some(Some((value, Some(deadline))))
                }
                Some(None) => Some(Some((value, None))),
                _ => None,
            },
        }
    }

    /// Puts `value` in front for `key` with `options` unless the key's
    /// generation is no longer `generation`: set, then check again, so that a
    /// lock-free invalidation in between is never undone (see the module
    /// docs).
    async fn install(
        &self,
        guard: &KeyGuard<'_>,
        value: Arc<Value>,
        options: SetOptions,
        generation: u64,
    ) {
        if guard.generation() != generation {
            return;
        }
        if let Err(e) = self.set_front(guard.key, value, options).await {
            self.front_failed(Operation::Set, &e);
            // The old front entry may still be there: drop it.
            self.delete_front(guard.key).await;
            return;
        }
        if guard.generation() != generation {
            self.delete_front(guard.key).await;
            return;
        }
        if let Some(stale) = &self.stale {
            // The front's own shared copy where it keeps one (a memory
            // front): no second copy of the value.
            match self.front.get_shared(guard.key).await {
                Ok(Some(value)) => {
                    let ttl = options.ttl.unwrap_or(self.front_max_ttl);
                    stale.keep(guard.key, value, ttl).await;
                }
                _ => stale.forget(guard.key).await,
            }
        }
    }

    /// Writes a front entry. A [`MemoryKvStore`](crate::MemoryKvStore)
    /// front (the type is known here, so the check costs nothing) takes the
    /// value without checking its depth again: see
    /// [`set_checked`](crate::MemoryKvStore::set_checked).
    async fn set_front(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        match (&self.front as &dyn std::any::Any).downcast_ref::<crate::MemoryKvStore>() {
            Some(memory) => memory.set_checked(key, value, options).await,
            None => self.front.set_shared(key, value, options).await,
        }
    }

    async fn delete_front(&self, key: &KvKey) {
        if let Some(stale) = &self.stale {
            stale.forget(key).await;
        }
        if let Err(e) = self.front.delete(key).await {
            self.front_failed(Operation::Delete, &e);
        }
    }

    /// Installs a read-through fill of `key` (`None`: absent, for the
    /// negative cache) read at `generation`, unless a write or invalidation
    /// of the key happened since.
    pub(super) async fn fill(
        &self,
        key: &KvKey,
        generation: u64,
        value: Option<&Arc<Value>>,
        ttl: InnerTtl,
    ) {
        if value.is_none() && self.negative.is_none() {
            return; // nothing to remember about an absent key
        }
        let guard = self.lock(key).await;
        if guard.generation() != generation {
            return;
        }
        match value {
            Some(value) => {
                // The inner entry dies no earlier than `start` + what it had
                // left when read (the read happened after `start`).
                let deadline = match ttl {
                    InnerTtl::Reported { left, start } => {
                        let deadline = left.and_then(|left| start.checked_add(left));
                        self.deadlines.record(key, deadline);
                        deadline
                    }
                    InnerTtl::Unknown => self.deadlines.get(key).flatten(),
                };
                let Some(options) = self.front_ttl(deadline) else {
                    return;
                };
                self.install(&guard, value.clone(), options, generation)
                    .await;
            }
            None => {
                if let Some(negative) = &self.negative {
                    negative.insert(key.clone(), ()).await;
                    if guard.generation() != generation {
                        negative.invalidate(key).await;
                    }
                }
            }
        }
    }

    /// The front's side of a write of `guard`'s key whose inner call started
    /// at `start`, when the key's generation was `before`, and returned
    /// `outcome`: `update` is the value the inner store now holds when the
    /// front may take it (`None`: drop the front entry), `ttl` the write's.
    /// A write that did not land for sure only ever invalidates.
    pub(super) async fn apply_write(
        &self,
        guard: &KeyGuard<'_>,
        outcome: Outcome,
        update: Option<Arc<Value>>,
        ttl: Option<Duration>,
        start: Instant,
        before: u64,
    ) {
        let key = guard.key;
        // Anything that changed the key since `before` (an invalidation, a
        // batch write) may be ordered after this write in the inner store.
        let unchanged = guard.generation() == before;
        let generation = guard.stripe.generation.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(negative) = &self.negative {
            negative.invalidate(key).await;
        }
        if outcome == Outcome::Landed && update.is_none() && ttl.is_none() {
            // Deleted (or written without a TTL and not put in front): no
            // lifetime to vouch for.
            self.deadlines.forget(key);
        } else {
            self.deadlines
                .after_write(key, start, outcome == Outcome::Landed, ttl);
        }
        if outcome == Outcome::Unknown {
            self.begin_unknown(key);
        }
        let update = update.filter(|_| {
            unchanged
                && outcome == Outcome::Landed
                && ttl != Some(Duration::ZERO)
                && !self.uncertain.contains(key)
        });
        let options = update
            .as_ref()
            .and_then(|_| self.front_ttl(ttl.and_then(|ttl| start.checked_add(ttl))));
        match (update, options) {
            (Some(value), Some(options)) => self.install(guard, value, options, generation).await,
            _ => self.delete_front(key).await,
        }
    }

    /// Drops `keys` from the front and the negative cache and makes fills in
    /// flight discard their result. Takes no lock (see the module docs).
    pub(super) async fn invalidate_now(&self, keys: &[KvKey]) -> Result<()> {
        let mut first_error = None;
        for key in keys {
            // Bump before deleting: an installer that misses the bump
            // installed before this delete.
            self.stripe(key).generation.fetch_add(1, Ordering::SeqCst);
            if let Some(negative) = &self.negative {
                negative.invalidate(key).await;
            }
            if let Some(stale) = &self.stale {
                stale.forget(key).await;
            }
            if let Err(e) = self.front.delete(key).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Drops every front entry and discards every fill in flight. Stale
    /// copies stay (see `stale`): a source clears when it may have missed
    /// changes, typically while the shared tier is down.
    pub(super) async fn clear_now(&self) -> Result<()> {
        // Bump every stripe first: fills in flight then find their generation
        // changed and do not install what they read before the clear.
        for stripe in self.stripes.iter() {
            stripe.generation.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(negative) = &self.negative {
            negative.invalidate_all();
        }
        let keys: Vec<KvKey> = self
            .front
            .list(None)
            .map_ok(|entry| entry.key)
            .try_collect()
            .await?;
        self.front.delete_many(&keys).await
    }

    /// A write of `key` may land later: bypass the front for it for the
    /// window, then invalidate it here and everywhere once more, so that a
    /// late landing is read afresh.
    fn begin_unknown(&self, key: &KvKey) {
        let window = self.unknown_outcome_window;
        let Some(until) = Instant::now().checked_add(window) else {
            return;
        };
        self.uncertain.insert(key, until);
        let (Some(tier), Ok(runtime)) =
            (self.this.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let weak = Arc::downgrade(&tier);
        drop(tier);
        let key = key.clone();
        runtime.spawn(
            EndUnknown {
                tier: weak,
                key,
                window,
            }
            .run(),
        );
    }
}

/// The end of a write's unknown-outcome window (see `begin_unknown`).
struct EndUnknown<F> {
    tier: Weak<Tier<F>>,
    key: KvKey,
    window: Duration,
}

impl<F: KvStore + 'static> EndUnknown<F> {
    async fn run(self) {
        tokio::time::sleep(self.window).await;
        let Some(tier) = self.tier.upgrade() else {
            return;
        };
        if let Err(e) = tier.invalidate_now(std::slice::from_ref(&self.key)).await {
            tier.front_failed(Operation::Delete, &e);
        }
        tier.announce(&self.key);
    }
}

#[async_trait]
impl<F: KvStore + 'static> FrontOps for Tier<F> {
    async fn invalidate(&self, keys: &[KvKey]) -> Result<()> {
        self.invalidate_now(keys).await
    }

    async fn clear(&self) -> Result<()> {
        self.clear_now().await
    }
}
