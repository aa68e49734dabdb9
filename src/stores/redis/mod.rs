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
//! [`InvalidValue`](crate::ErrorKind::InvalidValue) error naming the key, never a
//! panic.
//!
//! A Redis key of another type (a list, a hash, a set... written by another
//! program) is an `InvalidValue` error naming its type on every read path
//! (`get`, `get_with_ttl`, the batch reads, `cas`; `list` yields it as an
//! error item), never "absent": `MGET` answers nil for it as for an absent
//! key, so the keys it finds nil are asked their `TYPE` (one more round
//! trip, for a batch with absent keys only).
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
//! beyond about 31,000 years is capped there. In the
//! [Fedify layout](crate::stores::Layout::Fedify) TTLs are rounded up to
//! whole seconds, as `@fedify/redis` writes them (`SETEX`), so the store
//! declares `exact_expiry: false`: an entry may outlive its TTL by up to a
//! second.
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
//! retryable [`Unavailable`](crate::ErrorKind::Unavailable) error and no answer in
//! time a retryable [`Timeout`](crate::ErrorKind::Timeout) error; meanwhile the
//! connection reconnects in the background, and the same store works again
//! once the server is back.
//!
//! # Cluster
//!
//! `get_many` sends one `MGET`, which redis-rs splits by slot;
//! `set_many` sends one pipeline per slot; `delete_many` one `DEL`, split by
//! slot; `list` scans every master, one after the other. A listing taken while
//! slots migrate may miss or repeat keys that move.

mod cas;
mod connection;
pub(crate) mod encoding;
mod error;
mod fedify;
mod list;
mod ttl_read;
mod wrong_type;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, RedisResult, Script};

use self::cas::CAS_SCRIPT;
use self::connection::{check_tls, cluster_nodes, redact, with_timeout, Conn};
use self::encoding::{decode_value, encode_value, KeyCodec};
use self::error::{config_error, timeout_error};
use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};
use crate::stores::layout::Layout;

/// The namespace of [`RedisKvStore::connect`] and of the builder by default.
pub const DEFAULT_NAMESPACE: &str = "kvtower";
/// The key prefix of [`Layout::Fedify`]: Fedify's default `keyPrefix`.
pub const DEFAULT_FEDIFY_KEY_PREFIX: &str = "fedify::";
/// The per-operation timeout by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The timeout of each connection attempt by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The `COUNT` hint of each `SCAN` of a listing by default.
pub const DEFAULT_SCAN_COUNT: usize = 500;

/// The longest TTL sent to Redis, in milliseconds (about 31,700 years): far
/// below where `now + ttl` would overflow Redis's 64-bit clock arithmetic.
const MAX_TTL_MS: u64 = 1_000_000_000_000_000;
/// The most keys sent in one `DEL` or one pipeline of a batch.
const BATCH_CHUNK: usize = 1_000;

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
    layout: Layout,
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
            .field("layout", &self.inner.layout)
            .field("timeout", &self.inner.timeout)
            .finish()
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
    layout: Layout,
    key_prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    reconnect_max_delay: Duration,
    scan_count: usize,
}

impl Default for RedisKvStoreBuilder {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            layout: Layout::Kvtower,
            key_prefix: DEFAULT_FEDIFY_KEY_PREFIX.to_owned(),
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

    /// The key format (default [`Layout::Kvtower`], keys under the
    /// [`namespace`](Self::namespace)). [`Layout::Fedify`] reads and writes
    /// the keys of `@fedify/redis`'s `RedisKvStore`, so a Fedify server and
    /// this store share data: the [`key_prefix`](Self::key_prefix) (default
    /// `fedify::`) then the parts, `:` written `_:`, joined by `::`. Values,
    /// TTLs, `cas` and listing work as in the kvtower layout; the keys
    /// Fedify's own `list` reads back differently are in the module docs
    /// ("Fedify layout"). Checked against `@fedify/redis` 1.8.7 by
    /// `tests/fedify.rs`.
    ///
    /// ```no_run
    /// use kvtower::{kvkey, RedisKvStore};
    /// use kvtower::stores::Layout;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = RedisKvStore::builder()
    ///     .layout(Layout::Fedify)
    ///     .connect("redis://127.0.0.1:6379")
    ///     .await?;
    /// assert_eq!(store.redis_key(&kvkey!["_fedify", "a:b"]), "fedify::_fedify::a_:b");
    /// # Ok(())
    /// # }
    /// ```
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Shorthand for [`layout(Layout::Fedify)`](Self::layout).
    pub fn fedify_layout(self) -> Self {
        self.layout(Layout::Fedify)
    }

    /// In [`Layout::Fedify`], the text every Redis key starts with, used as
    /// it is: Fedify's `keyPrefix` option (default `fedify::`). The kvtower
    /// layout does not use it (its keys start with the escaped
    /// [`namespace`](Self::namespace)).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long one operation may take, waiting for a reconnection included
    /// (default 2 s). Past it the operation fails with a retryable
    /// [`Timeout`](crate::ErrorKind::Timeout) error.
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
    /// A [`Config`](crate::ErrorKind::Config) error for a malformed URL (or a TLS URL
    /// without feature `redis-tls`); an [`Unavailable`](crate::ErrorKind::Unavailable)
    /// or [`Timeout`](crate::ErrorKind::Timeout) error when the server cannot be
    /// reached.
    pub async fn connect(self, url: &str) -> Result<RedisKvStore> {
        if let Some(nodes) = cluster_nodes(url)? {
            return self.cluster(nodes).await;
        }
        check_tls(url)?;
        let client = redis::Client::open(url).map_err(|e| config_error(&redact(url), e, [url]))?;
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
        .map_err(|e| crate::redact::scrub(e.with_operation(Operation::Connect), [url]))?;
        Ok(self.build(Conn::Single(manager), redact(url)))
    }

    /// Connects to the Redis Cluster that has the nodes at `urls` (`redis://`
    /// or `rediss://` URLs; one reachable node is enough to discover the
    /// others).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); also a [`Config`](crate::ErrorKind::Config)
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
            .map_err(|e| config_error(&endpoint, e, urls.iter().map(String::as_str)))?;
        let conn = with_timeout(
            self.connect_timeout.saturating_add(self.timeout),
            client.get_async_connection(),
        )
        .await
        .map_err(|e| e.with_operation(Operation::Connect))?;
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
                codec: match self.layout {
                    Layout::Fedify => KeyCodec::fedify(&self.key_prefix),
                    _ => KeyCodec::new(&self.namespace),
                },
                namespace: self.namespace,
                layout: self.layout,
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

    /// The namespace of this store's keys (in [`Layout::Kvtower`]).
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// How this store's keys become Redis keys (client tracking decodes the
    /// keys Redis reports with it).
    pub(crate) fn key_codec(&self) -> &KeyCodec {
        &self.inner.codec
    }

    /// The key format this store reads and writes.
    pub fn layout(&self) -> Layout {
        self.inner.layout
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

    /// `SET` (or `DEL`, for an expired write) of `value`, already checked.
    async fn set_encoded(&self, key: &KvKey, value: &Value, options: SetOptions) -> Result<()> {
        let rkey = self.inner.codec.encode(key);
        let cmd = if options.is_expired() {
            del_cmd(std::slice::from_ref(&rkey))
        } else {
            let text =
                encode_value(value).map_err(|e| e.with_operation(Operation::Set).with_key(key))?;
            set_cmd(&rkey, &text, options.ttl.map(|ttl| self.ttl_ms(ttl)))
        };
        let mut conn = self.conn();
        self.run(cmd.query_async::<()>(&mut conn))
            .await
            .map_err(|e| e.with_operation(Operation::Set).with_key(key))
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Runs `fut` within the per-operation timeout, mapping its errors.
    async fn run<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> Result<T> {
        with_timeout(self.inner.timeout, fut).await
    }

    /// The values of `raw_keys` in one `MGET` (split by slot in a cluster).
    async fn mget(conn: &mut Conn, raw_keys: &[Vec<u8>]) -> RedisResult<Vec<Option<Vec<u8>>>> {
        if raw_keys.is_empty() {
            return Ok(Vec::new());
        }
        redis::cmd("MGET").arg(raw_keys).query_async(conn).await
    }
}

impl RedisKvStore {
    /// `GET` and decode.
    async fn get_value(&self, key: &KvKey) -> Result<Option<Value>> {
        let rkey = self.inner.codec.encode(key);
        let mut conn = self.conn();
        let raw: Option<Vec<u8>> = match self
            .run(redis::cmd("GET").arg(&rkey).query_async(&mut conn))
            .await
        {
            Ok(raw) => raw,
            Err(e) => {
                let e = self.explain(e, std::slice::from_ref(key), std::slice::from_ref(&rkey));
                return Err(e.await.with_operation(Operation::Get).with_key(key));
            }
        };
        raw.map(|raw| decode_value(&raw))
            .transpose()
            .map_err(|e| e.with_operation(Operation::Get).with_key(key))
    }
}

#[async_trait]
impl KvStore for RedisKvStore {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        self.get_value(key).await
    }

    // One boxed future: the default would box a call of the boxed `get`.
    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        SharedGet::boxed(async move { Ok(self.get_value(key).await?.map(Arc::new)) })
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let value = crate::value::checked(value)
            .map_err(|e| e.with_operation(Operation::Set).with_key(key))?;
        self.set_encoded(key, &value, options).await
    }

    // Redis stores the JSON text: encoding reads the shared tree, no copy.
    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        let value = crate::value::checked_shared(value)
            .map_err(|e| e.with_operation(Operation::Set).with_key(key))?;
        self.set_encoded(key, &value, options).await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        let rkey = self.inner.codec.encode(key);
        let mut conn = self.conn();
        self.run(del_cmd(std::slice::from_ref(&rkey)).query_async::<()>(&mut conn))
            .await
            .map_err(|e| e.with_operation(Operation::Delete).with_key(key))
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let new = crate::value::checked_cas(expected, new)
            .map_err(|e| e.with_operation(Operation::Cas).with_key(key))?;
        let result = match tokio::time::timeout(
            self.inner.timeout,
            self.cas_inner(key, expected, new, options),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(timeout_error(self.inner.timeout)),
        };
        match result {
            Ok(swapped) => Ok(swapped),
            Err(e) => {
                let rkey = self.inner.codec.encode(key);
                let e = self.explain(e, std::slice::from_ref(key), std::slice::from_ref(&rkey));
                Err(e.await.with_operation(Operation::Cas).with_key(key))
            }
        }
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        self.list_stream(prefix)
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let raw_keys: Vec<Vec<u8>> = keys.iter().map(|k| self.inner.codec.encode(k)).collect();
        let mut conn = self.conn();
        let raw = self
            .run(Self::mget(&mut conn, &raw_keys))
            .await
            .map_err(|e| e.with_operation(Operation::GetMany))?;
        // MGET answers nil for a key of another type too.
        self.check_nils(keys, &raw_keys, &raw)
            .await
            .map_err(|e| e.with_operation(Operation::GetMany))?;
        keys.iter()
            .zip(raw)
            .map(|(key, raw)| {
                raw.map(|raw| decode_value(&raw))
                    .transpose()
                    .map_err(|e| e.with_operation(Operation::GetMany).with_key(key))
            })
            .collect()
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        // Encode everything first so that a bad value writes nothing.
        let entries = crate::value::checked_entries(entries)
            .map_err(|e| e.with_operation(Operation::SetMany))?;
        let mut encoded = Vec::with_capacity(entries.len());
        for (key, value) in &entries {
            let rkey = self.inner.codec.encode(key);
            let text = if options.is_expired() {
                Vec::new()
            } else {
                encode_value(value)
                    .map_err(|e| e.with_operation(Operation::SetMany).with_key(key))?
            };
            encoded.push((rkey, text));
        }
        let command = |(rkey, text): &(Vec<u8>, Vec<u8>)| {
            if options.is_expired() {
                del_cmd(std::slice::from_ref(rkey))
            } else {
                set_cmd(rkey, text, options.ttl.map(|ttl| self.ttl_ms(ttl)))
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
            .map_err(|e| e.with_operation(Operation::SetMany))
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
            .map_err(|e| e.with_operation(Operation::DeleteMany))
    }

    /// The value and its `PTTL`, read atomically by one script.
    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        self.get_with_ttl_inner(key).await
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        self.get_many_with_ttl_inner(keys).await
    }

    fn capabilities(&self) -> Capabilities {
        match self.inner.layout {
            // TTLs are rounded up to whole seconds, as Fedify writes them: an
            // entry may outlive the TTL asked for by up to a second.
            Layout::Fedify => Capabilities::full().with_exact_expiry(false),
            _ => Capabilities::full(),
        }
    }
}

fn set_cmd(rkey: &[u8], text: &[u8], ttl_ms: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(rkey).arg(text);
    if let Some(ttl_ms) = ttl_ms {
        cmd.arg("PX").arg(ttl_ms);
    }
    cmd
}

impl RedisKvStore {
    /// The `PX` argument for `ttl` in this store's layout: whole
    /// milliseconds, or in [`Layout::Fedify`] whole seconds (rounded up), as
    /// `@fedify/redis` writes them with `SETEX`, so a key kvtower writes
    /// expires when one Fedify wrote with the same TTL would.
    pub(super) fn ttl_ms(&self, ttl: Duration) -> u64 {
        match self.inner.layout {
            Layout::Fedify => ttl_millis(whole_seconds_up(ttl)),
            _ => ttl_millis(ttl),
        }
    }
}

/// `ttl` rounded up to a whole number of seconds, at least one.
fn whole_seconds_up(ttl: Duration) -> Duration {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    Duration::from_secs(secs.max(1))
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
    fn fedify_ttls_round_up_to_whole_seconds() {
        assert_eq!(
            whole_seconds_up(Duration::from_millis(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            whole_seconds_up(Duration::from_millis(1_000)),
            Duration::from_secs(1)
        );
        assert_eq!(
            whole_seconds_up(Duration::from_millis(1_001)),
            Duration::from_secs(2)
        );
        assert_eq!(
            whole_seconds_up(Duration::MAX),
            Duration::from_secs(u64::MAX)
        );
    }
}
