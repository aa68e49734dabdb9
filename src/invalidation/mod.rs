//! Cross-node invalidation of front tiers over Redis pub/sub (feature `redis`).
//!
//! Several processes, each with a moka front tier over one shared store: a
//! write on one node must not leave the others serving the old value from
//! their front tier. [`RedisInvalidationBus`] carries, for every write through
//! a cache layer, the written keys to every other node, which drops them from
//! its front tier.
//!
//! # The bus, and client tracking beside it
//!
//! The bus invalidates by [`KvKey`], so it works whatever the inner store is
//! (Redis, Redis Cluster, Postgres, SQLite on a shared volume), with layers
//! such as a prefix between the cache and the store, and on any Redis version
//! and in cluster mode (where `PUBLISH` reaches every node). The price is one
//! `PUBLISH` per write, pipelined on a multiplexed connection. It hears only
//! writes made through a cache layer: for writes made around kvtower on a
//! Redis-backed stack, add [`RedisClientTracking`] (Redis's RESP3
//! `CLIENT TRACKING` in `BCAST` mode) as a second source.
//!
//! # Losing the subscription
//!
//! When the subscription drops (Redis restarted, network cut, no answer to
//! the heartbeat), invalidations may have been missed. From that moment until
//! the node has subscribed again, the bus reports itself
//! [disconnected](RedisInvalidationBus::is_connected): attached cache tiers are
//! cleared at once and again when the subscription is back, and the cache layer
//! serves every read from the inner store meanwhile. The loss is counted in
//! `kvtower_invalidation_bus_disconnects_total`, visible in the
//! `kvtower_invalidation_bus_connected` gauge, and logged as a `warn` event.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kvtower_invalidation_bus_connected` | gauge (0 or 1) | `channel` |
//! | `kvtower_invalidation_bus_disconnects_total` | counter | `channel` |
//! | `kvtower_invalidation_messages_total` | counter | `channel`, `direction` (`sent`, `received`, `ignored`, `invalid`) |
//! | `kvtower_invalidation_publish_errors_total` | counter | `channel` |
//!
//! ```no_run
//! use kvtower::invalidation::RedisInvalidationBus;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let bus = RedisInvalidationBus::connect("redis://127.0.0.1:6379", "myapp:invalidate").await?;
//! assert!(bus.is_connected());
//! # Ok(())
//! # }
//! ```

mod targets;
mod tracking;

pub use self::tracking::{RedisClientTracking, RedisClientTrackingBuilder};

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::layers::{CacheId, CacheLayerBuilder, Coherence, WeakCacheHandle};

use self::targets::Targets;
use crate::store::KvStore;

/// The default pub/sub channel.
pub const DEFAULT_CHANNEL: &str = "kvtower:invalidate";

const CHANNEL_LABEL: &str = "channel";
const DIRECTION_LABEL: &str = "direction";

/// One message on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The sending node, so that nodes can skip their own messages.
    #[serde(rename = "n")]
    node: u64,
    /// The cache tier that wrote, so that only that tier skips the message
    /// (another tier of the same node, sharing the bus, must hear it).
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    origin: Option<u64>,
    /// The written keys; absent for "clear everything".
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<KvKey>>,
}

/// Options of a [`RedisInvalidationBus`].
///
/// ```no_run
/// use kvtower::invalidation::RedisInvalidationBus;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let bus = RedisInvalidationBus::builder("redis://127.0.0.1:6379")
///     .channel("myapp:invalidate")
///     .heartbeat(Duration::from_millis(500))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisInvalidationBusBuilder {
    url: String,
    channel: String,
    heartbeat: Duration,
    publish_timeout: Duration,
    publish_retry: Duration,
    connect_timeout: Duration,
    queue_capacity: usize,
    ignore_own: bool,
}

impl fmt::Debug for RedisInvalidationBusBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisInvalidationBusBuilder")
            .field("url", &redact(&self.url))
            .field("channel", &self.channel)
            .field("heartbeat", &self.heartbeat)
            .field("publish_timeout", &self.publish_timeout)
            .field("publish_retry", &self.publish_retry)
            .field("queue_capacity", &self.queue_capacity)
            .field("connect_timeout", &self.connect_timeout)
            .field("ignore_own", &self.ignore_own)
            .finish()
    }
}

/// The URL without its passwords, for `Debug` and errors.
fn redact(url: &str) -> String {
    crate::redact::redact_url(url)
}

impl RedisInvalidationBusBuilder {
    /// The pub/sub channel (default [`DEFAULT_CHANNEL`]); nodes that must see
    /// each other's writes use the same one.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// How often the subscription is checked with a `PING` (default 1 s). A
    /// heartbeat unanswered within the same interval counts as a lost
    /// subscription, which catches half-open connections that never close.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long a `PUBLISH` may take before it is given up (default 1 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How long a message is retried (with a short backoff) before it is
    /// given up (default 5 s). A message given up is not missed silently:
    /// the bus then tells every node to clear its front tiers, as soon as
    /// it can publish again.
    pub fn publish_retry(mut self, bound: Duration) -> Self {
        self.publish_retry = bound;
        self
    }

    /// How many written keys may wait to be published (default 100,000).
    /// When Redis stalls and the queue is full, further keys are dropped and
    /// replaced by one "clear everything" message, so memory stays bounded
    /// and no node misses the change.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// How long [`connect`](Self::connect) waits for the first subscription
    /// (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether a node skips its own messages (default true: the cache layer
    /// already updated its front tier after the write).
    pub fn ignore_own(mut self, ignore: bool) -> Self {
        self.ignore_own = ignore;
        self
    }

    /// Connects the publisher, subscribes, and returns once the subscription
    /// is live.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for a bad URL; [`Unavailable`](ErrorKind::Unavailable)
    /// when Redis cannot be reached within the connect timeout.
    pub async fn connect(self) -> Result<RedisInvalidationBus> {
        nonzero(
            "invalidation bus",
            &[
                ("heartbeat", self.heartbeat),
                ("publish_timeout", self.publish_timeout),
                ("connect_timeout", self.connect_timeout),
            ],
        )?;
        if self.queue_capacity == 0 {
            return Err(Error::config(
                "invalidation bus: queue_capacity must be greater than zero",
            ));
        }
        let client =
            redis::Client::open(connection_info("invalidation bus", &self.url)?).map_err(|e| {
                Error::config("invalidation bus: bad connection settings").with_source(e)
            })?;
        let publisher =
            tokio::time::timeout(self.connect_timeout, ConnectionManager::new(client.clone()))
                .await
                .map_err(|_| unavailable("connecting the publisher timed out"))?
                .map_err(|e| unavailable("cannot connect the publisher").with_source(e))?;
        let shared = Arc::new(Shared {
            node: random_node_id(),
            targets: Targets::new(self.channel.clone()),
            channel: self.channel,
            ignore_own: self.ignore_own,
            lost: AtomicBool::new(false),
        });
        let task = tokio::spawn(subscribe_loop(client, Arc::clone(&shared), self.heartbeat));
        let publisher = Publisher {
            shared: Arc::clone(&shared),
            connection: publisher,
            timeout: self.publish_timeout,
            retry: self.publish_retry,
        };
        let (queue, rx) = mpsc::channel(self.queue_capacity);
        let publisher_task = tokio::spawn(publish_loop(publisher.clone(), rx));
        let inner = Arc::new(Inner {
            shared,
            publisher,
            queue,
            task,
            publisher_task,
        });
        let bus = RedisInvalidationBus { inner };
        tokio::time::timeout(self.connect_timeout, bus.wait_connected())
            .await
            .map_err(|_| unavailable("subscribing timed out"))?;
        Ok(bus)
    }
}

/// Rejects zero durations: a zero interval would spin (tokio panics on a
/// zero `interval`) and a zero timeout would fail every call; both are
/// mistakes, said early.
fn nonzero(what: &str, settings: &[(&str, Duration)]) -> Result<()> {
    match settings.iter().find(|(_, value)| value.is_zero()) {
        Some((name, _)) => Err(Error::config(format!(
            "{what}: {name} must be greater than zero"
        ))),
        None => Ok(()),
    }
}

/// The connection settings of `url`; a `Config` error without the URL's
/// secrets when it is not a Redis URL.
fn connection_info(what: &str, url: &str) -> Result<redis::ConnectionInfo> {
    redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
        crate::redact::scrub(
            Error::config(format!("{what} url `{}`: {e}", redact(url))),
            [url],
        )
    })
}

/// The wait between reconnection attempts: doubling from 50 ms, at most 2 s.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
    }
}

fn unavailable(message: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("invalidation bus: {message}"),
    )
}

fn random_node_id() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; mix in the time and the
    // process id so that two buses in one process differ too.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A Redis pub/sub channel that carries written keys between nodes.
///
/// Cheap to clone: clones share the connections and the subscriber task,
/// which stops when the last clone is dropped.
#[derive(Clone)]
pub struct RedisInvalidationBus {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    publisher: Publisher,
    queue: mpsc::Sender<(Option<CacheId>, KvKey)>,
    task: JoinHandle<()>,
    publisher_task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
        self.publisher_task.abort();
    }
}

/// Sends messages on the channel.
#[derive(Clone)]
struct Publisher {
    shared: Arc<Shared>,
    connection: ConnectionManager,
    timeout: Duration,
    retry: Duration,
}

/// The most keys one queued message carries.
const MAX_KEYS_PER_MESSAGE: usize = 256;

/// Drains the queue of [`RedisInvalidationBus::publish_later`] in order,
/// batching the keys that are already waiting into one message.
async fn publish_loop(publisher: Publisher, mut queue: mpsc::Receiver<(Option<CacheId>, KvKey)>) {
    let mut batch = Vec::new();
    loop {
        if publisher.shared.lost.load(Ordering::SeqCst) {
            // Something was not delivered (given up, or dropped from a full
            // queue): every node must clear before trusting its front again.
            // Retry until it goes through, also when no write comes.
            if publisher.send_clear().await {
                publisher.shared.lost.store(false, Ordering::SeqCst);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        if queue.recv_many(&mut batch, MAX_KEYS_PER_MESSAGE).await == 0 {
            return;
        }
        // One message per run of keys from the same cache tier, in order.
        let mut drained = batch.drain(..).peekable();
        while let Some((origin, key)) = drained.next() {
            let mut keys = vec![key];
            while let Some((_, key)) = drained.next_if(|(o, _)| *o == origin) {
                keys.push(key);
            }
            publisher
                .send(Message {
                    node: publisher.shared.node,
                    origin: origin.map(|o| o.0),
                    keys: Some(keys),
                })
                .await;
        }
    }
}

/// What the subscriber task and the handles share.
struct Shared {
    node: u64,
    channel: String,
    targets: Targets,
    ignore_own: bool,
    /// A message was given up or dropped: a "clear" is owed to every node.
    lost: AtomicBool,
}

impl Shared {
    async fn set_connected(&self, connected: bool) {
        self.targets.set_connected(connected).await;
        if connected {
            tracing::info!(channel = %self.channel, "invalidation bus subscribed");
        } else {
            metrics::counter!("kvtower_invalidation_bus_disconnects_total", CHANNEL_LABEL => self.channel.clone())
                .increment(1);
            tracing::warn!(
                channel = %self.channel,
                "invalidation bus lost its subscription: front tiers cleared and bypassed until it is back"
            );
        }
        metrics::gauge!("kvtower_invalidation_bus_connected", CHANNEL_LABEL => self.channel.clone())
            .set(if connected { 1.0 } else { 0.0 });
    }

    async fn received(&self, payload: &[u8]) {
        let direction = match serde_json::from_slice::<Message>(payload) {
            Err(err) => {
                tracing::debug!(channel = %self.channel, %err, "ignoring an undecodable invalidation message");
                "invalid"
            }
            // A message of this bus without an origin tier (`publish`) is
            // this node's own.
            Ok(message)
                if self.ignore_own && message.origin.is_none() && message.node == self.node =>
            {
                "ignored"
            }
            Ok(message) => {
                for target in self.targets.live() {
                    // Only the tier that wrote already updated its front.
                    if self.ignore_own && message.origin == Some(target.origin().0) {
                        continue;
                    }
                    let result = match &message.keys {
                        Some(keys) => target.invalidate_many(keys).await,
                        None => target.clear().await,
                    };
                    if let Err(err) = result {
                        tracing::warn!(channel = %self.channel, error_kind = %err.kind(), "cannot invalidate a front tier");
                    }
                }
                "received"
            }
        };
        metrics::counter!(
            "kvtower_invalidation_messages_total",
            CHANNEL_LABEL => self.channel.clone(),
            DIRECTION_LABEL => direction
        )
        .increment(1);
    }
}

/// Subscribes, delivers messages, and resubscribes after every loss, with a
/// capped exponential backoff, until the bus is dropped.
async fn subscribe_loop(client: redis::Client, shared: Arc<Shared>, heartbeat: Duration) {
    let mut backoff = Backoff::new();
    loop {
        match subscribe(&client, &shared.channel, heartbeat).await {
            Ok((mut sink, mut stream)) => {
                backoff.reset();
                shared.set_connected(true).await;
                let mut ticker = tokio::time::interval(heartbeat);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await; // the first tick is immediate
                loop {
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(message) => shared.received(message.get_payload_bytes()).await,
                            None => break, // the connection closed
                        },
                        _ = ticker.tick() => {
                            let ping = tokio::time::timeout(heartbeat, sink.ping::<redis::Value>()).await;
                            if !matches!(ping, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                shared.set_connected(false).await;
            }
            Err(err) => {
                tracing::debug!(channel = %shared.channel, %err, "invalidation bus cannot subscribe yet");
                backoff.wait().await;
            }
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
    timeout: Duration,
) -> std::result::Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), Error> {
    let attempt = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    tokio::time::timeout(timeout.max(Duration::from_secs(1)), attempt)
        .await
        .map_err(|_| unavailable("subscribe timed out"))?
        .map_err(|e| unavailable("subscribe failed").with_source(e))
}

impl fmt::Debug for RedisInvalidationBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisInvalidationBus")
            .field("channel", &self.inner.shared.channel)
            .field("node", &format_args!("{:016x}", self.inner.shared.node))
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RedisInvalidationBus {
    /// A bus on `channel` of the Redis at `url`, with default options.
    ///
    /// # Errors
    ///
    /// See [`RedisInvalidationBusBuilder::connect`].
    pub async fn connect(url: &str, channel: impl Into<String>) -> Result<Self> {
        Self::builder(url).channel(channel).connect().await
    }

    /// A builder for the options.
    pub fn builder(url: impl Into<String>) -> RedisInvalidationBusBuilder {
        RedisInvalidationBusBuilder {
            url: url.into(),
            channel: DEFAULT_CHANNEL.to_owned(),
            heartbeat: Duration::from_secs(1),
            publish_timeout: Duration::from_secs(1),
            publish_retry: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            queue_capacity: 100_000,
            ignore_own: true,
        }
    }

    /// Whether the subscription is live: when false, invalidations may be
    /// missed and front tiers must not be served.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.targets.is_connected()
    }

    /// Waits until the subscription is live (for tests and start-up probes).
    pub async fn wait_connected(&self) {
        self.inner.shared.targets.wait_connected().await
    }

    /// This node's id in messages.
    pub fn node_id(&self) -> u64 {
        self.inner.shared.node
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.inner.shared.channel
    }

    /// Queues `key` for publishing and returns at once: the bus's publisher
    /// task sends queued keys in order, many per message when writes come
    /// faster than `PUBLISH` round trips. This is what a cache layer calls
    /// after each write, so writes never wait for the bus.
    pub fn publish_later(&self, key: &KvKey) {
        self.enqueue(None, key);
    }

    fn enqueue(&self, origin: Option<CacheId>, key: &KvKey) {
        // The receiver lives as long as `inner`, which `self` keeps alive, so
        // the only failure is a full queue: owe everyone a clear instead.
        if self.inner.queue.try_send((origin, key.clone())).is_err() {
            self.inner.shared.lost.store(true, Ordering::SeqCst);
        }
    }

    /// Tells every other node that `keys` were written. Best effort: a failed
    /// publish is logged and counted, not returned, because the write it
    /// follows has already succeeded; the other nodes' front TTL bounds the
    /// staleness it can cause.
    pub async fn publish(&self, keys: &[KvKey]) {
        if keys.is_empty() {
            return;
        }
        self.inner
            .publisher
            .send(Message {
                node: self.inner.shared.node,
                origin: None,
                keys: Some(keys.to_vec()),
            })
            .await;
    }

    /// Tells every other node to clear its front tier.
    pub async fn publish_clear(&self) {
        self.inner
            .publisher
            .send(Message {
                node: self.inner.shared.node,
                origin: None,
                keys: None,
            })
            .await;
    }
}

impl Publisher {
    /// Publishes `message`, retrying with a short backoff until it is
    /// delivered or the retry bound passed; then it is given up and a clear
    /// is owed to every node (see `publish_loop`). Whether it was delivered.
    async fn send(&self, message: Message) -> bool {
        let shared = &self.shared;
        let payload = match serde_json::to_vec(&message) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(%err, "cannot encode an invalidation message");
                shared.lost.store(true, Ordering::SeqCst);
                return false;
            }
        };
        let give_up = tokio::time::Instant::now() + self.retry;
        let mut backoff = Duration::from_millis(10);
        loop {
            let mut conn = self.connection.clone();
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(&shared.channel).arg(&payload);
            let publish = cmd.query_async::<i64>(&mut conn);
            let err = match tokio::time::timeout(self.timeout, publish).await {
                Ok(Ok(_)) => {
                    metrics::counter!(
                        "kvtower_invalidation_messages_total",
                        CHANNEL_LABEL => shared.channel.clone(),
                        DIRECTION_LABEL => "sent"
                    )
                    .increment(1);
                    return true;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            metrics::counter!("kvtower_invalidation_publish_errors_total", CHANNEL_LABEL => shared.channel.clone())
                .increment(1);
            if tokio::time::Instant::now() + backoff >= give_up {
                tracing::warn!(
                    channel = %shared.channel,
                    %err,
                    "invalidation given up after retrying; every node will be told to clear"
                );
                shared.lost.store(true, Ordering::SeqCst);
                return false;
            }
            tracing::debug!(channel = %shared.channel, %err, "cannot publish an invalidation yet");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Tells every other node to clear (what a lost message is replaced by).
    async fn send_clear(&self) -> bool {
        self.send(Message {
            node: self.shared.node,
            origin: None,
            keys: None,
        })
        .await
    }
}

/// The bus keeps every cache tier it is attached to coherent: it publishes
/// the tier's writes, drops other tiers' writes from it, and is live while
/// subscribed.
impl Coherence for RedisInvalidationBus {
    fn attach(&self, cache: WeakCacheHandle) {
        self.inner.shared.targets.attach(cache);
    }

    fn written(&self, origin: CacheId, key: &KvKey) {
        self.enqueue(Some(origin), key);
    }

    fn is_live(&self) -> bool {
        self.is_connected()
    }
}

impl<F: KvStore + 'static> CacheLayerBuilder<F> {
    /// Keeps this front tier coherent with other processes' through `bus`
    /// (feature `redis`; the same as [`coherence(bus)`](Self::coherence)):
    /// every write through this layer publishes its key on `bus`, and every
    /// key another cache tier publishes is dropped from this front tier.
    /// While the bus has lost its subscription the front tier is cleared and
    /// bypassed (every read goes to the inner store), because invalidations
    /// may be missed; see [`invalidation`](crate::invalidation).
    ///
    /// ```no_run
    /// use kvtower::invalidation::RedisInvalidationBus;
    /// use kvtower::{layers::CacheLayer, MemoryKvStore, RedisKvStore};
    /// use tower::ServiceBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let url = "redis://127.0.0.1:6379";
    /// let bus = RedisInvalidationBus::connect(url, "myapp:invalidate").await?;
    /// let store = ServiceBuilder::new()
    ///     .layer(CacheLayer::builder(MemoryKvStore::new()).invalidation_bus(bus).build())
    ///     .service(RedisKvStore::connect(url).await?);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn invalidation_bus(self, bus: RedisInvalidationBus) -> Self {
        self.coherence(bus)
    }
}
