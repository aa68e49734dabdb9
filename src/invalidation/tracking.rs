//! [`RedisClientTracking`]: Redis client-side caching (`CLIENT TRACKING`) as
//! a coherence source, for writes made around kvtower.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::targets::Targets;
use super::{connection_info, nonzero, redact, unavailable, Backoff};
use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::layers::{Coherence, WeakCacheHandle};
use crate::stores::redis::encoding::KeyCodec;
use crate::RedisKvStore;

const PREFIX_LABEL: &str = "prefix";
const OUTCOME_LABEL: &str = "outcome";
/// Pushed messages waiting to be applied; more means the task fell behind,
/// which is handled as a lost connection.
const QUEUE_CAPACITY: usize = 10_000;

/// Builds a [`RedisClientTracking`] (see there for what it does).
#[must_use]
pub struct RedisClientTrackingBuilder {
    url: String,
    codec: KeyCodec,
    /// The stored first parts of the prefix layers, cache side first.
    prefixes: Vec<KvKey>,
    heartbeat: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for RedisClientTrackingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClientTrackingBuilder")
            .field("url", &redact(&self.url))
            .field(
                "prefix",
                &String::from_utf8_lossy(self.codec.namespace_prefix()),
            )
            .field("heartbeat", &self.heartbeat)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisClientTrackingBuilder {
    /// The cache sits above `PrefixLayer::new(prefix)` (call once per prefix
    /// layer, in the order they are stacked from the cache down): pushed keys
    /// are mapped back through it, and keys outside it are ignored.
    pub fn prefix(mut self, prefix: KvKey) -> Self {
        self.prefixes
            .push(crate::layers::prefix::stored_part(&prefix));
        self
    }

    /// How often the tracking connection is checked with a `PING`, and how
    /// long an answer may take before the connection counts as lost (1 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long [`connect`](Self::connect) waits for tracking to be on (5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Opens the tracking connection and waits until tracking is on; a task
    /// keeps it on (reconnecting with a capped backoff) until the last clone
    /// is dropped.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error for a bad URL or a zero
    /// duration; [`Unavailable`](crate::ErrorKind::Unavailable) when tracking
    /// is not on within `connect_timeout`.
    pub async fn connect(self) -> Result<RedisClientTracking> {
        nonzero(
            "client tracking",
            &[
                ("heartbeat", self.heartbeat),
                ("connect_timeout", self.connect_timeout),
            ],
        )?;
        let info = connection_info("client tracking", &self.url)?;
        // Push messages need RESP3, whatever the URL asks for.
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(redis_settings)).map_err(|e| {
            Error::config("client tracking: bad connection settings").with_source(e)
        })?;
        let prefix = self.codec.namespace_prefix().to_vec();
        let shared = Arc::new(Shared {
            targets: Targets::new(String::from_utf8_lossy(&prefix).into_owned()),
            codec: self.codec,
            head: head_of(&self.prefixes),
        });
        let task = tokio::spawn(track_loop(
            client,
            prefix,
            Arc::clone(&shared),
            self.heartbeat,
        ));
        let tracking = RedisClientTracking {
            inner: Arc::new(Inner { shared, task }),
        };
        tokio::time::timeout(self.connect_timeout, tracking.wait_connected())
            .await
            .map_err(|_| unavailable("client tracking: turning tracking on timed out"))?;
        Ok(tracking)
    }
}

/// The stored key parts every key of the cache starts with: the prefix
/// layers' parts, the one nearest the store first.
fn head_of(prefixes: &[KvKey]) -> Option<KvKey> {
    let parts: Vec<String> = prefixes
        .iter()
        .rev()
        .flat_map(|p| p.parts().iter().cloned())
        .collect();
    KvKey::new(parts).ok()
}

/// A [`Coherence`] source that drops from its front tiers every key Redis
/// reports changed under a [`RedisKvStore`]'s namespace, by any client:
/// writes made around kvtower (`redis-cli`, a Node app, a Fedify server on
/// the same Redis) invalidate the front tier too.
///
///
/// The [bus](super::RedisInvalidationBus) carries only writes made through a
/// cache layer. Redis's server-assisted client-side caching reports every
/// change, whoever made it: one RESP3 connection runs
/// `CLIENT TRACKING ON BCAST PREFIX <the store's namespace>`, and Redis pushes
/// an `invalidate` message with the names of the keys under that prefix that
/// were written, deleted, expired or evicted (`FLUSHDB`/`FLUSHALL`: all of
/// them). Each name is decoded back to the [`KvKey`] the cache knows, with the
/// store's own key encoding (either [`Layout`](crate::stores::layout::Layout))
/// and without the [`PrefixLayer`](crate::layers::PrefixLayer)s between the
/// cache and the store ([`prefix`](RedisClientTrackingBuilder::prefix)), and
/// dropped from every attached front tier.
///
/// Use it *with* the bus, not instead: the bus works over any store and
/// through any layers, tracking sees writes the bus never hears of. Both are
/// [`Coherence`] sources; a cache serves from its front only while both are
/// live.
///
/// # Losing the tracking connection
///
/// Invalidations pushed while the connection is down are lost (Redis keeps no
/// backlog), so the same rule as the bus's applies: when the connection drops
/// (Redis restarted, `CLIENT KILL`, a heartbeat `PING` unanswered within
/// `heartbeat`), or the bounded queue of pushed messages overflows, attached
/// front tiers are cleared and bypassed (every read goes to the inner store)
/// until tracking is on again on a new connection, when they are cleared once
/// more.
///
/// Limits: one standalone Redis (in a cluster each node tracks only its own
/// slots: not supported); writes through kvtower arrive too (its writes use
/// another connection), so each costs one extra miss on the node that made
/// it; a key of the namespace that does not decode, or lies outside the
/// configured prefixes, is ignored.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `kvtower_client_tracking_connected` | gauge (0 or 1) | `prefix` |
/// | `kvtower_client_tracking_disconnects_total` | counter | `prefix` |
/// | `kvtower_client_tracking_invalidations_total` | counter | `prefix`, `outcome` (`applied`, `ignored`, `flush`) |
///
/// ```no_run
/// use kvtower::invalidation::{RedisClientTracking, RedisInvalidationBus};
/// use kvtower::layers::{CacheLayer, PrefixLayer};
/// use kvtower::{kvkey, MemoryKvStore, RedisKvStore};
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let url = "redis://127.0.0.1:6379";
/// let redis = RedisKvStore::builder().namespace("myapp").connect(url).await?;
/// let bus = RedisInvalidationBus::connect(url, "myapp:invalidate").await?;
/// let tracking = RedisClientTracking::builder(url, &redis)
///     .prefix(kvkey!["v1"]) // the PrefixLayer below the cache
///     .connect()
///     .await?;
/// let store = ServiceBuilder::new()
///     .layer(CacheLayer::builder(MemoryKvStore::new()).invalidation_bus(bus).coherence(tracking).build())
///     .layer(PrefixLayer::new(kvkey!["v1"]))
///     .service(redis);
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
///
/// Cheap to clone: clones share the connection and its task, which stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct RedisClientTracking {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    targets: Targets,
    codec: KeyCodec,
    head: Option<KvKey>,
}

impl fmt::Debug for RedisClientTracking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClientTracking")
            .field("prefix", &self.inner.shared.targets.name())
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RedisClientTracking {
    /// Tracking of `store`'s namespace on the Redis at `url` (the store's
    /// own Redis), with default options.
    ///
    /// # Errors
    ///
    /// See [`RedisClientTrackingBuilder::connect`].
    pub async fn connect(url: &str, store: &RedisKvStore) -> Result<Self> {
        Self::builder(url, store).connect().await
    }

    /// A builder for tracking of `store`'s namespace (its key prefix, in the
    /// store's layout) on the Redis at `url`.
    ///
    /// ```no_run
    /// use kvtower::invalidation::RedisClientTracking;
    /// use kvtower::RedisKvStore;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let url = "redis://127.0.0.1:6379";
    /// let store = RedisKvStore::connect(url).await?;
    /// let tracking = RedisClientTracking::builder(url, &store)
    ///     .heartbeat(Duration::from_millis(500))
    ///     .connect()
    ///     .await?;
    /// assert!(tracking.is_connected());
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(url: impl Into<String>, store: &RedisKvStore) -> RedisClientTrackingBuilder {
        RedisClientTrackingBuilder {
            url: url.into(),
            codec: store.key_codec().clone(),
            prefixes: Vec::new(),
            heartbeat: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Whether tracking is on: when false, changes may be missed and front
    /// tiers are bypassed.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.targets.is_connected()
    }

    /// Waits until tracking is on (for tests and start-up probes).
    pub async fn wait_connected(&self) {
        self.inner.shared.targets.wait_connected().await
    }
}

/// Tracking drops other clients' changes from every attached tier and is
/// live while its connection tracks.
impl Coherence for RedisClientTracking {
    fn attach(&self, cache: WeakCacheHandle) {
        self.inner.shared.targets.attach(cache);
    }

    fn is_live(&self) -> bool {
        self.is_connected()
    }
}

impl Shared {
    fn count(&self, outcome: &'static str, n: usize) {
        metrics::counter!(
            "kvtower_client_tracking_invalidations_total",
            PREFIX_LABEL => self.targets.name().to_owned(),
            OUTCOME_LABEL => outcome
        )
        .increment(n as u64);
    }

    /// The cache's key for a pushed Redis key name, if it is one.
    fn key_of(&self, name: &[u8]) -> Option<KvKey> {
        let key = self.codec.decode(name).ok()?;
        match &self.head {
            Some(head) => key.strip_prefix(head),
            None => Some(key),
        }
    }

    /// Applies one `invalidate` push: its data is an array of key names, or
    /// nil after a flush.
    async fn invalidated(&self, data: Vec<redis::Value>) {
        let names = match data.into_iter().next() {
            Some(redis::Value::Array(names)) => names,
            _ => {
                self.targets.clear().await;
                self.count("flush", 1);
                return;
            }
        };
        let total = names.len();
        let keys: Vec<KvKey> = names
            .iter()
            .filter_map(|name| match name {
                redis::Value::BulkString(name) => self.key_of(name),
                _ => None,
            })
            .collect();
        if !keys.is_empty() {
            self.targets.invalidate(&keys).await;
        }
        self.count("applied", keys.len());
        self.count("ignored", total - keys.len());
    }

    async fn set_connected(&self, connected: bool) {
        self.targets.set_connected(connected).await;
        let prefix = self.targets.name().to_owned();
        if connected {
            tracing::info!(%prefix, "client tracking on");
        } else {
            metrics::counter!("kvtower_client_tracking_disconnects_total", PREFIX_LABEL => prefix.clone())
                .increment(1);
            tracing::warn!(
                %prefix,
                "client tracking lost its connection: front tiers cleared and bypassed until it is back"
            );
        }
        metrics::gauge!("kvtower_client_tracking_connected", PREFIX_LABEL => prefix)
            .set(if connected { 1.0 } else { 0.0 });
    }
}

/// Turns tracking on, applies pushes, and starts over after every loss, with
/// a capped exponential backoff, until the source is dropped.
async fn track_loop(
    client: redis::Client,
    prefix: Vec<u8>,
    shared: Arc<Shared>,
    heartbeat: Duration,
) {
    let mut backoff = Backoff::new();
    loop {
        let (tx, mut rx) = mpsc::channel::<PushInfo>(QUEUE_CAPACITY);
        let overflowed = Arc::new(AtomicBool::new(false));
        let sender = {
            let overflowed = Arc::clone(&overflowed);
            // The connection's reader must never block: a full queue is
            // recorded and handled like a lost connection.
            move |push: PushInfo| {
                if tx.try_send(push).is_err() {
                    overflowed.store(true, Ordering::SeqCst);
                }
                Ok::<(), ()>(())
            }
        };
        match track(&client, &prefix, sender, heartbeat).await {
            Ok(mut connection) => {
                backoff.reset();
                shared.set_connected(true).await;
                let mut ticker = tokio::time::interval(heartbeat);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await; // the first tick is immediate
                loop {
                    if overflowed.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::select! {
                        push = rx.recv() => match push {
                            Some(PushInfo { kind: PushKind::Invalidate, data }) => {
                                shared.invalidated(data).await;
                            }
                            Some(PushInfo { kind: PushKind::Disconnection, .. }) | None => break,
                            Some(_) => {}
                        },
                        _ = ticker.tick() => {
                            let ping = redis::cmd("PING");
                            let pong = ping.query_async::<redis::Value>(&mut connection);
                            if !matches!(tokio::time::timeout(heartbeat, pong).await, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                shared.set_connected(false).await;
            }
            Err(err) => {
                tracing::debug!(prefix = %shared.targets.name(), %err, "client tracking cannot start yet");
                backoff.wait().await;
            }
        }
    }
}

/// A RESP3 connection with `CLIENT TRACKING ON BCAST PREFIX prefix`.
async fn track(
    client: &redis::Client,
    prefix: &[u8],
    sender: impl redis::aio::AsyncPushSender,
    timeout: Duration,
) -> std::result::Result<MultiplexedConnection, Error> {
    let attempt = async {
        let config = AsyncConnectionConfig::new().set_push_sender(sender);
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(prefix)
            .query_async::<()>(&mut connection)
            .await?;
        Ok::<_, redis::RedisError>(connection)
    };
    tokio::time::timeout(timeout.max(Duration::from_secs(1)), attempt)
        .await
        .map_err(|_| unavailable("client tracking: CLIENT TRACKING timed out"))?
        .map_err(|e| unavailable("client tracking: CLIENT TRACKING failed").with_source(e))
}
