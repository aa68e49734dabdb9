//! [`RedisKvStore`]: Redis and Redis Cluster behind the [`KvStore`] contract
//! (feature `redis`; `rediss://` TLS URLs need feature `redis-tls`).
//!
//! One implementation, two connection kinds: a standalone Redis through one
//! multiplexed connection that reconnects by itself (redis-rs
//! [`ConnectionManager`]), or a Redis Cluster through redis-rs's async
//! cluster client. Concurrent callers share the connection and their commands
//! are pipelined on it; no call opens a connection of its own.
//!
//! ```no_run
//! use kvtower::{kvkey, KvStore, RedisKvStore, SetOptions};
//! use serde_json::json;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let store = RedisKvStore::builder()
//!     .namespace("myapp")
//!     .timeout(Duration::from_millis(500))
//!     .connect("redis://127.0.0.1:6379")
//!     .await?;
//! let key = kvkey!["user", "42"];
//! store.set(&key, json!({"name": "Ada"}), SetOptions::ttl(Duration::from_secs(60))).await?;
//! assert_eq!(store.get(&key).await?, Some(json!({"name": "Ada"})));
//! // In redis-cli: GET myapp:user:42  ->  "{\"name\":\"Ada\"}"
//! assert_eq!(store.redis_key(&key), "myapp:user:42");
//!
//! // A cluster: any of its nodes, or a `redis+cluster://` URL.
//! let cluster = RedisKvStore::cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]).await?;
//! let same = RedisKvStore::connect("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").await?;
//! # let _ = (cluster, same);
//! # Ok(())
//! # }
//! ```
//!
//! # URLs
//!
//! | URL | connects to |
//! |---|---|
//! | `redis://[user:password@]host[:port][/db]` | a standalone Redis over TCP |
//! | `rediss://...` | the same over TLS (feature `redis-tls`, webpki roots) |
//! | `redis+unix:///path/to/redis.sock[?db=N]` (or `unix://`) | a standalone Redis over a Unix socket |
//! | `redis+cluster://[user:password@]host:port,host:port,...` | a Redis Cluster, from any of its nodes |
//! | `rediss+cluster://...` | the same over TLS |
//!
//! # Keys
//!
//! A Redis key is the namespace (default `kvtower`) and the key's parts joined
//! by `:`, with `%` written `%25` and `:` written `%3A` inside the namespace
//! and each part; nothing else is changed. So ordinary keys read naturally in
//! `redis-cli`:
//!
//! | `KvKey` | Redis key (namespace `kvtower`) |
//! |---|---|
//! | `["user", "42"]` | `kvtower:user:42` |
//! | `["a:b", "50%"]` | `kvtower:a%3Ab:50%25` |
//! | `["a", ""]` | `kvtower:a:` |
//!
//! The encoding is injective (two different keys, or the same key in two
//! different namespaces, never share a Redis key) and prefix-preserving
//! part-wise: `list(["a"])` is a `GET` of `kvtower:a` plus one
//! `SCAN MATCH kvtower:a:*`, with glob characters (`*?[]\`) of the namespace
//! and the parts escaped so that they match only themselves. `["ab"]` and
//! `["a:b"]` are never listed under `["a"]`.
//!
//! # Values
//!
//! Values are stored as Redis strings holding their JSON text, so
//! `SET kvtower:user:7 '{"name":"Grace"}'` in `redis-cli` is read back by
//! `get` as that JSON value. A value that is not valid JSON (written by
//! another program) makes `get`, `get_many` and `cas` of that key fail with an
//! [`InvalidValue`](ErrorKind::InvalidValue) error naming the key, never a
//! panic.
//!
//! `list` does not stop at such a value: it yields an `Err(InvalidValue)` item
//! naming the key and goes on with the other entries. The same holds for a
//! Redis key under the namespace that this encoding cannot have produced (an
//! `Err(InvalidKey)` item). A caller that wants the good entries anyway
//! filters the errors out (`list(..).filter_map(|r| async move { r.ok() })`);
//! [`list_all`](crate::KvStoreExt::list_all) stops at the first error. An
//! error of the connection itself ends the stream after its `Err` item.
//!
//! # Listing
//!
//! `list` streams pages: each is one `SCAN ... MATCH ... COUNT n` (default
//! `n` = 500, [`scan_count`](RedisKvStoreBuilder::scan_count)) and one `MGET`
//! of the keys it found, so a listing costs two round trips per page, never
//! one per key. Keys that expire or are deleted between the two are skipped.
//! `SCAN` may return a key twice; the stream remembers the Redis keys it has
//! yielded and yields each once, so its memory grows with the number of keys
//! listed (not their values).
//!
//! # TTLs
//!
//! TTLs are sent in milliseconds (`SET ... PX`), rounded up to a whole
//! millisecond, so sub-second TTLs work. A TTL of zero deletes the key. A TTL
//! beyond about 31,000 years is capped there.
//!
//! # Compare-and-swap
//!
//! [`cas`](KvStore::cas) runs a Lua script that compares the stored JSON text
//! with the expected one byte for byte and swaps (`SET` with `PX`, or `DEL`
//! for `new: None` or a TTL of zero) in the same atomic step. JSON equality
//! must be structural (object key order does not matter), which bytes cannot
//! decide, so when the bytes differ the script returns the current text and
//! the store compares the two structurally in Rust: not equal means `false`;
//! equal (the same value spelled differently, e.g. written by another program)
//! means the script runs again expecting exactly those bytes. A `false` is
//! therefore always decided by the script's atomic read, and a swap only ever
//! happens on the server, atomically: exact under contention from any number
//! of connections.
//!
//! # Failures
//!
//! Every operation is bounded by the per-operation
//! [`timeout`](RedisKvStoreBuilder::timeout) (default 2 s; for `list`, each
//! page: one `SCAN` and one `MGET`). A lost or refused connection gives a
//! retryable [`Unavailable`](ErrorKind::Unavailable) error and no answer in
//! time a retryable [`Timeout`](ErrorKind::Timeout) error; meanwhile the
//! connection reconnects in the background, and the same store works again
//! once the server is back.
//!
//! # Cluster
//!
//! `get_many` sends one `MGET`, which redis-rs splits by slot;
//! `set_many` sends one pipeline per slot; `delete_many` one `DEL`, split by
//! slot; `list` scans every master, one after the other. A listing taken while
//! slots migrate may miss or repeat keys that move.

pub(crate) mod encoding;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, RedisError, RedisFuture, RedisResult, Script, ServerErrorKind};

use self::encoding::KeyCodec;
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::store::{KvEntry, KvStore, SetOptions, Value};

/// The namespace of [`RedisKvStore::connect`] and of the builder by default.
pub const DEFAULT_NAMESPACE: &str = "kvtower";
/// The per-operation timeout by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The timeout of each connection attempt by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The `COUNT` hint of each `SCAN` of a listing by default.
pub const DEFAULT_SCAN_COUNT: usize = 500;

/// The longest TTL sent to Redis, in milliseconds (about 31,700 years): far
/// below where `now + ttl` would overflow Redis's 64-bit clock arithmetic.
const MAX_TTL_MS: u64 = 1_000_000_000_000_000;
/// How many times `cas` re-runs its script when the stored text equals the
/// expected value structurally but not byte for byte.
const MAX_CAS_ROUNDS: usize = 64;
/// The most keys sent in one `DEL` or one pipeline of a batch.
const BATCH_CHUNK: usize = 1_000;

/// The compare-and-swap script.
///
/// KEYS[1]: the key. ARGV[1]: `1` when a value is expected, `0` when the key
/// must be absent. ARGV[2]: the expected JSON text. ARGV[3]: the new JSON text,
/// or empty to delete (JSON text is never empty). ARGV[4]: the TTL in
/// milliseconds, or empty for none.
///
/// Returns `{1, false}` when it swapped, `{0, current}` when it did not
/// (`current` is nil when the key is absent).
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return {0, current} end
elseif current then
  return {0, current}
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return {1, false}
";

/// A [`KvStore`] on Redis or Redis Cluster.
///
/// Cheap to clone: clones share the connection. Build it with
/// [`connect`](Self::connect), [`cluster`](Self::cluster),
/// [`builder`](Self::builder), or from an existing redis-rs connection
/// ([`from_connection_manager`](Self::from_connection_manager),
/// [`from_cluster_connection`](Self::from_cluster_connection)). The module
/// docs describe the key encoding, values, TTLs, `cas` and failures.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let store = kvtower::RedisKvStore::connect("redis://127.0.0.1:6379").await?;
/// assert_eq!(store.namespace(), "kvtower");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisKvStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    codec: KeyCodec,
    namespace: String,
    timeout: Duration,
    scan_count: usize,
    /// Where the store connects, password redacted, for `Debug`.
    endpoint: String,
    cas_script: Script,
}

impl fmt::Debug for RedisKvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKvStore")
            .field("kind", &self.inner.conn.kind())
            .field("endpoint", &self.inner.endpoint)
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// The connection: one implementation, two kinds.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    fn kind(&self) -> &'static str {
        match self {
            Conn::Single(_) => "standalone",
            Conn::Cluster(_) => "cluster",
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Options of a [`RedisKvStore`], from [`RedisKvStore::builder`]; finish with
/// [`connect`](Self::connect), [`cluster`](Self::cluster) or one of the
/// `build_with_*` methods.
///
/// ```no_run
/// use kvtower::RedisKvStore;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let store = RedisKvStore::builder()
///     .namespace("sessions")
///     .timeout(Duration::from_millis(250))
///     .connect_timeout(Duration::from_secs(1))
///     .reconnect_max_delay(Duration::from_millis(500))
///     .scan_count(1_000)
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisKvStoreBuilder {
    namespace: String,
    timeout: Duration,
    connect_timeout: Duration,
    reconnect_max_delay: Duration,
    scan_count: usize,
}

impl Default for RedisKvStoreBuilder {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_max_delay: Duration::from_secs(1),
            scan_count: DEFAULT_SCAN_COUNT,
        }
    }
}

impl RedisKvStoreBuilder {
    /// The namespace every key is stored under (default `kvtower`): stores
    /// with different namespaces on one Redis never see each other's keys.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long one operation may take, waiting for a reconnection included
    /// (default 2 s). Past it the operation fails with a retryable
    /// [`Timeout`](ErrorKind::Timeout) error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest pause between two reconnection attempts of a standalone
    /// connection (default 1 s): after a server comes back, the store works
    /// again within about this long.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// The `COUNT` hint of each `SCAN` of a listing, which is also about how
    /// many values one `MGET` of a listing fetches (default 500, at least 1).
    pub fn scan_count(mut self, count: usize) -> Self {
        self.scan_count = count.max(1);
        self
    }

    /// Connects to the Redis or Redis Cluster at `url` (see the module docs
    /// for the URL forms).
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error for a malformed URL (or a TLS URL
    /// without feature `redis-tls`); an [`Unavailable`](ErrorKind::Unavailable)
    /// or [`Timeout`](ErrorKind::Timeout) error when the server cannot be
    /// reached.
    pub async fn connect(self, url: &str) -> Result<RedisKvStore> {
        if let Some(nodes) = cluster_nodes(url)? {
            return self.cluster(nodes).await;
        }
        check_tls(url)?;
        let client = redis::Client::open(url).map_err(|e| config_error(&redact(url), e))?;
        // No response timeout inside redis-rs: the store's own per-operation
        // timeout bounds every call (the wait for a reconnection included,
        // which redis-rs's would not), and one timer per call is cheaper
        // than two.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None)
            .set_max_delay(self.reconnect_max_delay);
        let manager = with_timeout(
            self.connect_timeout.saturating_add(self.timeout),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|e| e.with_operation("connect"))?;
        Ok(self.build(Conn::Single(manager), redact(url)))
    }

    /// Connects to the Redis Cluster that has the nodes at `urls` (`redis://`
    /// or `rediss://` URLs; one reachable node is enough to discover the
    /// others).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); also a [`Config`](ErrorKind::Config)
    /// error for an empty list.
    pub async fn cluster<I, S>(self, urls: I) -> Result<RedisKvStore>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls: Vec<String> = urls.into_iter().map(|u| u.as_ref().to_owned()).collect();
        if urls.is_empty() {
            return Err(Error::config("a Redis Cluster needs at least one node URL"));
        }
        for url in &urls {
            check_tls(url)?;
        }
        let endpoint = urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",");
        let client = ClusterClientBuilder::new(urls.iter().map(String::as_str))
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.timeout)
            .build()
            .map_err(|e| config_error(&endpoint, e))?;
        let conn = with_timeout(
            self.connect_timeout.saturating_add(self.timeout),
            client.get_async_connection(),
        )
        .await
        .map_err(|e| e.with_operation("connect"))?;
        Ok(self.build(Conn::Cluster(conn), endpoint))
    }

    /// A store on an existing standalone connection (its own reconnection and
    /// response-timeout settings apply; the per-operation timeout of this
    /// builder bounds every operation on top).
    pub fn build_with_manager(self, manager: ConnectionManager) -> RedisKvStore {
        self.build(Conn::Single(manager), "(existing connection)".to_owned())
    }

    /// A store on an existing async cluster connection.
    pub fn build_with_cluster(self, conn: ClusterConnection) -> RedisKvStore {
        self.build(
            Conn::Cluster(conn),
            "(existing cluster connection)".to_owned(),
        )
    }

    fn build(self, conn: Conn, endpoint: String) -> RedisKvStore {
        RedisKvStore {
            inner: Arc::new(Inner {
                conn,
                codec: KeyCodec::new(&self.namespace),
                namespace: self.namespace,
                timeout: self.timeout,
                scan_count: self.scan_count,
                endpoint,
                cas_script: Script::new(CAS_SCRIPT),
            }),
        }
    }
}

impl RedisKvStore {
    /// Connects with the default options (namespace `kvtower`, 2 s timeout);
    /// `url` as in [`RedisKvStoreBuilder::connect`].
    ///
    /// # Errors
    ///
    /// As [`RedisKvStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder().connect(url).await
    }

    /// Connects to a Redis Cluster with the default options; `urls` as in
    /// [`RedisKvStoreBuilder::cluster`].
    ///
    /// # Errors
    ///
    /// As [`RedisKvStoreBuilder::cluster`].
    pub async fn cluster<I, S>(urls: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::builder().cluster(urls).await
    }

    /// A builder for the namespace, timeouts and connection settings.
    pub fn builder() -> RedisKvStoreBuilder {
        RedisKvStoreBuilder::default()
    }

    /// A store with the default options on an existing redis-rs
    /// [`ConnectionManager`].
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let manager = redis::aio::ConnectionManager::new(client).await?;
    /// let store = kvtower::RedisKvStore::from_connection_manager(manager);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_connection_manager(manager: ConnectionManager) -> Self {
        Self::builder().build_with_manager(manager)
    }

    /// A store with the default options on an existing redis-rs async
    /// cluster connection.
    pub fn from_cluster_connection(conn: ClusterConnection) -> Self {
        Self::builder().build_with_cluster(conn)
    }

    /// The namespace of this store's keys.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The Redis key `key` is stored under, as `redis-cli` shows it (lossy
    /// only if the namespace is not UTF-8, which it always is).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// use kvtower::kvkey;
    /// let store = kvtower::RedisKvStore::connect("redis://127.0.0.1:6379").await?;
    /// assert_eq!(store.redis_key(&kvkey!["user", "42"]), "kvtower:user:42");
    /// assert_eq!(store.redis_key(&kvkey!["a:b"]), "kvtower:a%3Ab");
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis_key(&self, key: &KvKey) -> String {
        String::from_utf8_lossy(&self.inner.codec.encode(key)).into_owned()
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Runs `fut` within the per-operation timeout, mapping its errors.
    async fn run<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> Result<T> {
        with_timeout(self.inner.timeout, fut).await
    }

    async fn cas_inner(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let rkey = self.inner.codec.encode(key);
        let new_text = match new {
            Some(value) if !options.is_expired() => encode_value(&value)?,
            _ => Vec::new(), // the script deletes
        };
        let ttl = options
            .ttl
            .filter(|_| !new_text.is_empty())
            .map(|ttl| ttl_millis(ttl).to_string())
            .unwrap_or_default();
        // First guess at the stored text: our own serialization of `expected`,
        // which is what this store wrote if it wrote the value.
        let mut expected_text = expected.map(encode_value).transpose()?;
        let mut conn = self.conn();
        for _ in 0..MAX_CAS_ROUNDS {
            let (swapped, current): (i64, Option<Vec<u8>>) = self
                .inner
                .cas_script
                .key(&rkey)
                .arg(if expected_text.is_some() { "1" } else { "0" })
                .arg(expected_text.as_deref().unwrap_or_default())
                .arg(&new_text)
                .arg(&ttl)
                .invoke_async(&mut conn)
                .await
                .map_err(map_redis_error)?;
            if swapped == 1 {
                return Ok(true);
            }
            let (Some(expected), Some(current)) = (expected, current) else {
                // Absent expected but present, or expected but absent: the
                // script's atomic read decided it.
                return Ok(false);
            };
            if decode_value(&current)? != *expected {
                return Ok(false);
            }
            // Structurally equal, spelled differently: swap only if the value
            // is still exactly this text.
            expected_text = Some(current);
        }
        Err(Error::new(
            ErrorKind::Backend,
            format!("cas lost {MAX_CAS_ROUNDS} races to writers of equal values"),
        )
        .with_retryable(true))
    }

    /// The values of `raw_keys` in one `MGET` (split by slot in a cluster).
    async fn mget(conn: &mut Conn, raw_keys: &[Vec<u8>]) -> RedisResult<Vec<Option<Vec<u8>>>> {
        if raw_keys.is_empty() {
            return Ok(Vec::new());
        }
        redis::cmd("MGET").arg(raw_keys).query_async(conn).await
    }

    /// Where a listing scans: the one server, or one route per cluster master.
    async fn scan_targets(&self) -> Result<Vec<Option<Route>>> {
        let Conn::Cluster(mut conn) = self.conn() else {
            return Ok(vec![None]);
        };
        let slots: redis::Value = self
            .run(conn.route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            ))
            .await?;
        master_routes(slots).map(|routes| routes.into_iter().map(Some).collect())
    }

    /// One `SCAN` step on `target`: the next cursor and the keys found.
    async fn scan(
        &self,
        target: Option<&Route>,
        cursor: u64,
        pattern: &[u8],
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(self.inner.scan_count);
        match (self.conn(), target) {
            (Conn::Cluster(mut conn), Some(route)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(*route));
                let reply = self.run(conn.route_command(cmd, routing)).await?;
                redis::from_redis_value(reply).map_err(|e| map_redis_error(e.into()))
            }
            (mut conn, _) => self.run(cmd.query_async(&mut conn)).await,
        }
    }

    /// The next page of a listing, or `None` when it is over.
    async fn list_page(&self, mut state: ListState) -> Option<(Vec<Result<KvEntry>>, ListState)> {
        if state.done {
            return None;
        }
        let result = self.list_step(&mut state).await;
        match result {
            Ok(page) => Some((page, state)),
            Err(err) => {
                state.done = true;
                Some((vec![Err(err.with_operation("list"))], state))
            }
        }
    }

    async fn list_step(&self, state: &mut ListState) -> Result<Vec<Result<KvEntry>>> {
        if state.targets.is_none() {
            state.targets = Some(self.scan_targets().await?);
            return Ok(Vec::new());
        }
        if let Some(exact) = state.exact.take() {
            let mut conn = self.conn();
            let values = self
                .run(Self::mget(&mut conn, std::slice::from_ref(&exact)))
                .await?;
            state.seen.insert(exact.clone());
            return Ok(self.entries(vec![exact], values, state.prefix.as_ref()));
        }
        let target = match state.targets.as_ref().and_then(|t| t.get(state.target)) {
            Some(target) => *target,
            None => {
                state.done = true;
                return Ok(Vec::new());
            }
        };
        let (cursor, keys) = self
            .scan(target.as_ref(), state.cursor, &state.pattern)
            .await?;
        if cursor == 0 {
            state.target += 1;
        }
        state.cursor = cursor;
        // SCAN may return a key more than once; yield each once.
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| state.seen.insert(k.clone()))
            .collect();
        let mut conn = self.conn();
        let values = self.run(Self::mget(&mut conn, &keys)).await?;
        Ok(self.entries(keys, values, state.prefix.as_ref()))
    }

    /// Decodes a page of raw keys and values; absent values (deleted or
    /// expired since the scan) are skipped, undecodable ones become errors.
    fn entries(
        &self,
        keys: Vec<Vec<u8>>,
        values: Vec<Option<Vec<u8>>>,
        prefix: Option<&KvKey>,
    ) -> Vec<Result<KvEntry>> {
        keys.into_iter()
            .zip(values)
            .filter_map(|(raw_key, raw_value)| {
                let raw_value = raw_value?;
                let key = match self.inner.codec.decode(&raw_key) {
                    Ok(key) => key,
                    Err(why) => {
                        return Some(Err(Error::new(
                            ErrorKind::InvalidKey,
                            format!(
                                "Redis key {:?} is not a kvtower key: {why}",
                                String::from_utf8_lossy(&raw_key)
                            ),
                        )
                        .with_operation("list")));
                    }
                };
                // The pattern already guarantees it; a cheap second check.
                if prefix.is_some_and(|p| !key.starts_with(p)) {
                    return None;
                }
                Some(match decode_value(&raw_value) {
                    Ok(value) => Ok(KvEntry { key, value }),
                    Err(e) => Err(e.with_operation("list").with_key(&key)),
                })
            })
            .collect()
    }
}

/// Where a listing is.
struct ListState {
    prefix: Option<KvKey>,
    pattern: Vec<u8>,
    /// The Redis key equal to the prefix, still to be fetched.
    exact: Option<Vec<u8>>,
    /// Resolved on the first page.
    targets: Option<Vec<Option<Route>>>,
    target: usize,
    cursor: u64,
    /// The Redis keys yielded so far (SCAN may repeat a key).
    seen: HashSet<Vec<u8>>,
    done: bool,
}

#[async_trait]
impl KvStore for RedisKvStore {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        let rkey = self.inner.codec.encode(key);
        let mut conn = self.conn();
        let raw: Option<Vec<u8>> = self
            .run(redis::cmd("GET").arg(&rkey).query_async(&mut conn))
            .await
            .map_err(|e| e.with_operation("get").with_key(key))?;
        raw.map(|raw| decode_value(&raw))
            .transpose()
            .map_err(|e| e.with_operation("get").with_key(key))
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let rkey = self.inner.codec.encode(key);
        let cmd = if options.is_expired() {
            del_cmd(std::slice::from_ref(&rkey))
        } else {
            let text = encode_value(&value).map_err(|e| e.with_operation("set").with_key(key))?;
            set_cmd(&rkey, &text, options)
        };
        let mut conn = self.conn();
        self.run(cmd.query_async::<()>(&mut conn))
            .await
            .map_err(|e| e.with_operation("set").with_key(key))
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        let rkey = self.inner.codec.encode(key);
        let mut conn = self.conn();
        self.run(del_cmd(std::slice::from_ref(&rkey)).query_async::<()>(&mut conn))
            .await
            .map_err(|e| e.with_operation("delete").with_key(key))
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        match tokio::time::timeout(
            self.inner.timeout,
            self.cas_inner(key, expected, new, options),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(timeout_error(self.inner.timeout)),
        }
        .map_err(|e| e.with_operation("cas").with_key(key))
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        let codec = &self.inner.codec;
        let state = ListState {
            pattern: codec.descendants_pattern(prefix.as_ref()),
            exact: prefix.as_ref().map(|p| codec.encode(p)),
            prefix,
            targets: None,
            target: 0,
            cursor: 0,
            seen: HashSet::new(),
            done: false,
        };
        stream::unfold(state, move |state| self.list_page(state))
            .flat_map(stream::iter)
            .boxed()
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let raw_keys: Vec<Vec<u8>> = keys.iter().map(|k| self.inner.codec.encode(k)).collect();
        let mut conn = self.conn();
        let raw = self
            .run(Self::mget(&mut conn, &raw_keys))
            .await
            .map_err(|e| e.with_operation("get_many"))?;
        keys.iter()
            .zip(raw)
            .map(|(key, raw)| {
                raw.map(|raw| decode_value(&raw))
                    .transpose()
                    .map_err(|e| e.with_operation("get_many").with_key(key))
            })
            .collect()
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        // Encode everything first so that a bad value writes nothing.
        let mut encoded = Vec::with_capacity(entries.len());
        for (key, value) in &entries {
            let rkey = self.inner.codec.encode(key);
            let text = if options.is_expired() {
                Vec::new()
            } else {
                encode_value(value).map_err(|e| e.with_operation("set_many").with_key(key))?
            };
            encoded.push((rkey, text));
        }
        let command = |(rkey, text): &(Vec<u8>, Vec<u8>)| {
            if options.is_expired() {
                del_cmd(std::slice::from_ref(rkey))
            } else {
                set_cmd(rkey, text, options)
            }
        };
        let run = async {
            match self.conn() {
                Conn::Single(conn) => {
                    for chunk in encoded.chunks(BATCH_CHUNK) {
                        let mut pipe = redis::pipe();
                        for entry in chunk {
                            pipe.add_command(command(entry)).ignore();
                        }
                        pipe.query_async::<()>(&mut Conn::Single(conn.clone()))
                            .await?;
                    }
                    Ok(())
                }
                Conn::Cluster(conn) => {
                    // A cluster pipeline must stay within one slot: one per
                    // slot, in order within it (so the last duplicate wins),
                    // all slots at once.
                    let mut by_slot: HashMap<Slot, redis::Pipeline> = HashMap::new();
                    for entry in &encoded {
                        by_slot
                            .entry(Slot::for_key(&entry.0))
                            .or_insert_with(redis::pipe)
                            .add_command(command(entry))
                            .ignore();
                    }
                    let sends = by_slot.into_values().map(|pipe| {
                        let mut conn = conn.clone();
                        async move { pipe.query_async::<()>(&mut conn).await }
                    });
                    stream::iter(sends)
                        .buffer_unordered(64)
                        .collect::<Vec<RedisResult<()>>>()
                        .await
                        .into_iter()
                        .collect()
                }
            }
        };
        self.run(run)
            .await
            .map_err(|e| e.with_operation("set_many"))
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let raw_keys: Vec<Vec<u8>> = keys.iter().map(|k| self.inner.codec.encode(k)).collect();
        let mut conn = self.conn();
        let run = async {
            // One DEL per chunk (split by slot by redis-rs in a cluster).
            for chunk in raw_keys.chunks(BATCH_CHUNK) {
                del_cmd(chunk).query_async::<()>(&mut conn).await?;
            }
            Ok(())
        };
        self.run(run)
            .await
            .map_err(|e| e.with_operation("delete_many"))
    }
}

fn set_cmd(rkey: &[u8], text: &[u8], options: SetOptions) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(rkey).arg(text);
    if let Some(ttl) = options.ttl {
        cmd.arg("PX").arg(ttl_millis(ttl));
    }
    cmd
}

fn del_cmd(rkeys: &[Vec<u8>]) -> Cmd {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(rkeys);
    cmd
}

/// A non-zero TTL in whole milliseconds, rounded up (so 0.4 ms is 1 ms, not
/// the 0 that Redis rejects), capped at [`MAX_TTL_MS`].
fn ttl_millis(ttl: Duration) -> u64 {
    let millis = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis)
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

pub(crate) fn encode_value(value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::from)
}

pub(crate) fn decode_value(raw: &[u8]) -> Result<Value> {
    serde_json::from_slice(raw).map_err(|e| {
        Error::new(
            ErrorKind::InvalidValue,
            format!("the stored value is not JSON text: {e}"),
        )
        .with_source(e)
    })
}

async fn with_timeout<T>(
    timeout: Duration,
    fut: impl Future<Output = RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(map_redis_error),
        Err(_) => Err(timeout_error(timeout)),
    }
}

fn timeout_error(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("no answer from Redis within {timeout:?}"),
    )
}

/// The one place redis-rs errors become kvtower errors.
fn map_redis_error(err: RedisError) -> Error {
    use redis::ErrorKind as K;
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        ErrorKind::Unavailable
    } else {
        match err.kind() {
            K::Io | K::ClusterConnectionNotFound => ErrorKind::Unavailable,
            K::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask,
            ) => ErrorKind::Unavailable,
            K::AuthenticationFailed | K::InvalidClientConfig => ErrorKind::Config,
            _ if err.code() == Some("WRONGTYPE") => ErrorKind::InvalidValue,
            _ => ErrorKind::Backend,
        }
    };
    Error::new(kind, format!("Redis: {err}")).with_source(err)
}

fn config_error(url: &str, err: RedisError) -> Error {
    Error::config(format!("Redis URL {url}: {err}")).with_source(err)
}

/// Fails clearly for a TLS URL when TLS is not compiled in.
fn check_tls(url: &str) -> Result<()> {
    if cfg!(not(feature = "redis-tls")) && url.starts_with("rediss") {
        return Err(Error::config(format!(
            "Redis URL {}: rediss:// (TLS) needs the kvtower feature `redis-tls`",
            redact(url)
        )));
    }
    Ok(())
}

/// The node URLs of a `redis+cluster://` or `rediss+cluster://` URL, or
/// `None` for other URLs.
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return Ok(None);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{path}"))
        .collect();
    if nodes.is_empty() {
        return Err(Error::config(format!(
            "Redis URL {}: expected {scheme}+cluster://host:port[,host:port...]",
            redact(url)
        )));
    }
    Ok(Some(nodes))
}

/// `url` with the password, if any, replaced by `***`.
fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) else {
        return url.to_owned();
    };
    match url[start..at].find(':').map(|i| start + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// One route (the first slot of its first range) per master, from a
/// `CLUSTER SLOTS` reply.
fn master_routes(reply: redis::Value) -> Result<Vec<Route>> {
    let malformed = || Error::new(ErrorKind::Backend, "malformed CLUSTER SLOTS reply");
    let redis::Value::Array(ranges) = reply else {
        return Err(malformed());
    };
    let mut seen = HashSet::new();
    let mut routes = Vec::new();
    for range in ranges {
        let redis::Value::Array(items) = range else {
            return Err(malformed());
        };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Array(master))) =
            (items.first(), items.get(2))
        else {
            return Err(malformed());
        };
        let slot = u16::try_from(*start).map_err(|_| malformed())?;
        let address = format!("{:?}", master.iter().take(2).collect::<Vec<_>>());
        if seen.insert(address) {
            routes.push(Route::new(slot, SlotAddr::Master));
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(ttl_millis(Duration::from_millis(250)), 250);
        assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
    }

    #[test]
    fn cluster_urls_expand_to_nodes() {
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@a:1,b:2/0").unwrap(),
            Some(vec![
                "redis://u:p@a:1/0".to_owned(),
                "redis://u:p@b:2/0".to_owned()
            ])
        );
        assert_eq!(cluster_nodes("redis://a:1").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://").unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
