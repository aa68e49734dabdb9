//! [`DenoKvStore`]: a [Deno KV](https://docs.deno.com/deploy/kv/manual/)
//! database, shared with Deno and Node applications (feature `denokv`).
//!
//! Two ways in, one store type:
//!
//! * [`DenoKvStore::open`]: a database file, the format `Deno.openKv(path)`
//!   and Node's `@deno/kv` write, through the `denokv_sqlite` crate (the
//!   engine Deno itself uses).
//! * [`DenoKvStore::connect`]: a remote database over the KV Connect protocol
//!   (a self-hosted [`denokv`](https://github.com/denoland/denokv) server, or
//!   Deno Deploy), through the `denokv_remote` crate.
//!
//! ```
//! use kvtower::{kvkey, DenoKvStore, KvStore, SetOptions};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("kv.sqlite3");
//! // The keys a Fedify app on Deno writes as ["_fedify", ...].
//! let store = DenoKvStore::builder().prefix(["_fedify"]).open(&path)?;
//! store.set(&kvkey!["user", "42"], json!({"name": "Ada"}), SetOptions::default()).await?;
//! assert_eq!(store.get(&kvkey!["user", "42"]).await?, Some(json!({"name": "Ada"})));
//! # Ok(())
//! # }
//! ```
//!
//! # Keys
//!
//! Each [`KvKey`] part is a Deno *string* key part, after the store's prefix:
//! `kvkey!["a"]` under the prefix `["_fedify"]` is the Deno key
//! `["_fedify", "a"]`. Deno entries under the prefix whose key has a
//! non-string part (a number, a `Uint8Array`, ...) cannot be named by a
//! `KvKey`: `list` skips them. Encoded keys are limited to 2048 bytes, like in
//! Deno; a longer key is an [`InvalidKey`](crate::ErrorKind::InvalidKey)
//! error.
//!
//! # Values
//!
//! Values are V8-serialized, the way Deno stores a JavaScript value, so a
//! Deno program reads `{"name": "Ada"}` back as the object `{ name: "Ada" }`.
//! Numbers: integers within `i32` are written as V8 small integers, other
//! integers up to 2^53 as doubles (exact in JavaScript), and integers beyond
//! ±2^53 as `BigInt` so that no precision is lost (a JavaScript reader gets
//! a `bigint`). Reading, a double with an integral value reads as a JSON
//! integer (JavaScript has one number type: `2.0` written here reads back as
//! `2`), a `BigInt` within `i64`/`u64` as an integer, and a `Deno.KvU64` as an
//! integer. `undefined` reads as `null` (as an object property it is left
//! out, like `JSON.stringify` does). Values JSON cannot represent (`NaN`,
//! `Infinity`, bigger `BigInt`s, `Date`, `Map`, `Set`, `RegExp`, binary data,
//! `Error`, cyclic objects) are an [`InvalidValue`](crate::ErrorKind::InvalidValue)
//! error, never silently changed (in a listing, that entry is an error item
//! and the listing goes on). A serialized value is limited to 65,536
//! bytes, like in Deno: a bigger one is a
//! [`ValueTooLarge`](crate::ErrorKind::ValueTooLarge) error.
//!
//! # Expiry
//!
//! A TTL becomes Deno's `expireIn`. Deno deletes expired entries lazily (up
//! to a minute late) and its reads return them until then. Over a local file
//! this store meets the strict contract anyway: it reads through its own
//! read-only SQLite connection, which filters on the expiry the database
//! keeps next to each entry ([`Capabilities::exact_expiry`] is true). KV
//! Connect does not send the expiry with an entry, so a remote store declares
//! `exact_expiry: false`: an expired entry may be seen until the server
//! collects it.
//!
//! For the same reason [`get_with_ttl`](KvStore::get_with_ttl) reports the
//! remaining lifetime over a local file (from the stored expiry, in the same
//! read as the value) but not over KV Connect, which declares
//! [`reports_ttl: false`](Capabilities::reports_ttl): a
//! [`CacheLayer`](crate::layers::CacheLayer) over it keeps fills for its
//! `front_max_ttl`.
//!
//! # Compare-and-swap
//!
//! `cas` reads the current value and its versionstamp, compares the JSON
//! structurally, and commits an atomic write checked against that
//! versionstamp; when another writer won the race it reads again and retries.

mod encoding;
mod error;
mod remote;
pub(crate) mod v8;

use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use denokv_proto::{AtomicWrite, Check, KvValue, Mutation, MutationKind, ReadRange, Versionstamp};
use denokv_sqlite::{Sqlite, SqliteConfig, SqliteNotifier};
use futures::stream::{self, BoxStream, StreamExt};
use rusqlite::OptionalExtension;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, Value};

pub(crate) use self::encoding::*;
use self::error::*;
use self::remote::RemoteHandle;

/// Deno's limit on an encoded key.
const MAX_KEY_BYTES: usize = 2048;
/// Deno's limit on a serialized value.
pub const MAX_VALUE_BYTES: usize = 65_536;
/// Deno's limits on one atomic write.
const MAX_MUTATIONS: usize = 1000;
const MAX_MUTATION_BYTES: usize = 800 * 1024;
/// Deno's limits on one read.
const PAGE: u32 = 1000;
const MAX_RANGES: usize = 10;
/// How often `cas` retries after losing a race to another writer while the
/// value still matches.
const CAS_ATTEMPTS: usize = 1000;
/// The default bound on one remote call.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a local write runs again while the database is busy
/// (with a backoff of 1 ms doubling up to 64 ms: about 4 s in all).
const BUSY_ATTEMPTS: u32 = 70;

/// A store on a Deno KV database: a local file or a remote KV Connect server.
///
/// Cheap to clone: clones share the same database handle. See the
/// [module docs](self) for the key, value and expiry mapping.
///
/// ```
/// use kvtower::{kvkey, DenoKvStore, KvStore, SetOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = DenoKvStore::open(dir.path().join("kv.sqlite3"))?;
/// store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
/// assert!(store.cas(&kvkey!["a"], Some(&1.into()), Some(2.into()), SetOptions::default()).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DenoKvStore {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: Vec<String>,
    backend: Backend,
}

enum Backend {
    Local {
        /// Its worker thread ends by itself when the last clone is dropped
        /// (its request channel closes); `Sqlite::close` is not called
        /// because it panics if the worker thread had panicked.
        db: Sqlite,
        /// Reads go through this connection so that they can filter on
        /// `expiration_ms`, which `denokv_sqlite`'s reads neither return
        /// nor check.
        reader: Arc<Mutex<rusqlite::Connection>>,
        path: String,
    },
    Remote {
        handle: RemoteHandle,
        url: String,
        timeout: Duration,
    },
}

impl fmt::Debug for DenoKvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DenoKvStore");
        match &self.inner.backend {
            Backend::Local { path, .. } => d.field("path", path),
            // The URL carries no secret; the access token is never shown.
            Backend::Remote { url, .. } => d.field("url", url),
        };
        d.field("prefix", &self.inner.prefix).finish()
    }
}

/// Options of a [`DenoKvStore`], from [`DenoKvStore::builder`].
///
/// ```
/// use kvtower::DenoKvStore;
/// use std::time::Duration;
///
/// let builder = DenoKvStore::builder()
///     .prefix(["_fedify"])                 // Fedify's default key prefix
///     .timeout(Duration::from_secs(10));  // per remote call
/// # let _ = builder;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct DenoKvStoreBuilder {
    prefix: Vec<String>,
    timeout: Duration,
}

impl Default for DenoKvStoreBuilder {
    fn default() -> Self {
        Self {
            prefix: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl DenoKvStoreBuilder {
    /// The Deno key parts every key lives under (none by default).
    pub fn prefix<I, P>(mut self, parts: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.prefix = parts.into_iter().map(Into::into).collect();
        self
    }

    /// The bound on one remote call (30 seconds by default); a call that
    /// takes longer fails with a [`Timeout`](ErrorKind::Timeout) error.
    /// `denokv_remote` retries unreachable servers without end, so this is
    /// what turns an outage into an error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Opens (or creates) the database file at `path`.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error when the file cannot be opened
    /// as a Deno KV database.
    pub fn open(self, path: impl AsRef<Path>) -> Result<DenoKvStore> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let open_err = |e: rusqlite::Error| {
            Error::config(format!("cannot open the Deno KV database {shown}")).with_source(e)
        };
        let conn = rusqlite::Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        let mut first = Some(conn);
        let db = Sqlite::new(
            move || {
                let conn = first
                    .take()
                    .ok_or_else(|| deno_error::JsErrorBox::generic("one connection per store"))?;
                let rng: Box<dyn rand::RngCore + Send> =
                    Box::new(<rand::rngs::StdRng as rand::SeedableRng>::from_entropy());
                Ok((conn, rng))
            },
            SqliteNotifier::default(),
            SqliteConfig {
                num_workers: 1,
                batch_timeout: None,
            },
        )
        .map_err(|e| {
            Error::config(format!("cannot open the Deno KV database {shown}")).with_source(e)
        })?;
        // Opened after `Sqlite::new`, which has created the schema by now.
        let reader = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        reader
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        Ok(self.build(Backend::Local {
            db,
            reader: Arc::new(Mutex::new(reader)),
            path: shown,
        }))
    }

    /// Connects to a remote Deno KV over KV Connect: `url` is the database's
    /// metadata endpoint (`http://host:port` for a `denokv serve`, or
    /// `https://api.deno.com/databases/<id>/connect` on Deno Deploy), and
    /// `access_token` its token.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = kvtower::DenoKvStore::builder()
    ///     .prefix(["_fedify"])
    ///     .connect("http://127.0.0.1:4512", "my-token")?;
    /// # let _ = store; Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error when `url` is not a URL. The
    /// connection itself is made lazily: an unreachable server shows as a
    /// [`Timeout`](ErrorKind::Timeout) error on the first call.
    pub fn connect(self, url: &str, access_token: &str) -> Result<DenoKvStore> {
        let parsed =
            url::Url::parse(url).map_err(|e| Error::config("url: not a URL").with_source(e))?;
        let handle = RemoteHandle::spawn(parsed, access_token.to_owned())?;
        let timeout = self.timeout;
        Ok(self.build(Backend::Remote {
            handle,
            url: url.to_owned(),
            timeout,
        }))
    }

    fn build(self, backend: Backend) -> DenoKvStore {
        DenoKvStore {
            inner: Arc::new(Inner {
                prefix: self.prefix,
                backend,
            }),
        }
    }
}

/// One entry as read from the database.
struct Raw {
    key: Vec<u8>,
    value: KvValue,
    versionstamp: Versionstamp,
    /// Known to be past its expiry (only a local read can tell).
    expired: bool,
    /// What is left of its lifetime at the read (`None`: never expires, or
    /// unknown: KV Connect's `KvEntry` carries no expiry, so remote reads
    /// cannot tell and that backend declares `reports_ttl: false`).
    remaining: Option<Duration>,
}

impl DenoKvStore {
    /// A builder, to set a key prefix or a remote timeout.
    pub fn builder() -> DenoKvStoreBuilder {
        DenoKvStoreBuilder::default()
    }

    /// Opens (or creates) the database file at `path`, without a key prefix.
    ///
    /// # Errors
    ///
    /// See [`DenoKvStoreBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().open(path)
    }

    /// Connects to a remote Deno KV, without a key prefix.
    ///
    /// # Errors
    ///
    /// See [`DenoKvStoreBuilder::connect`].
    pub fn connect(url: &str, access_token: &str) -> Result<Self> {
        Self::builder().connect(url, access_token)
    }

    /// The key prefix, as Deno key parts.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = kvtower::DenoKvStore::builder().prefix(["app"]).open(dir.path().join("kv"))?;
    /// assert_eq!(store.prefix(), ["app"]);
    /// # Ok::<(), kvtower::Error>(())
    /// ```
    pub fn prefix(&self) -> &[String] {
        &self.inner.prefix
    }

    fn encode_parts<'a>(&'a self, parts: impl IntoIterator<Item = &'a String>) -> Result<Vec<u8>> {
        encode_parts_under(&self.inner.prefix, parts)
    }

    fn encode_key(&self, key: &KvKey) -> Result<Vec<u8>> {
        let bytes = self.encode_parts(key.parts())?;
        if bytes.len() > MAX_KEY_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                format!(
                    "the encoded key is {} bytes, Deno KV allows {MAX_KEY_BYTES}",
                    bytes.len()
                ),
            )
            .with_key(key));
        }
        Ok(bytes)
    }

    /// The `KvKey` of a stored key under the prefix, or `None` when it is not
    /// one (a non-string part, or the prefix itself).
    fn decode_key(&self, bytes: &[u8]) -> Option<KvKey> {
        decode_key_under(&self.inner.prefix, bytes)
    }

    /// Point reads, expired entries included (flagged) so that `cas` can
    /// check against their versionstamps.
    async fn read_points(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Raw>>> {
        match &self.inner.backend {
            Backend::Local { reader, .. } => {
                let reader = Arc::clone(reader);
                let now = Utc::now().timestamp_millis();
                tokio::task::spawn_blocking(move || {
                    let conn = reader.lock().map_err(|_| poisoned())?;
                    let mut stmt = conn
                        .prepare_cached(
                            "select v, v_encoding, version, expiration_ms from kv where k = ?",
                        )
                        .map_err(|e| backend_error("read", e))?;
                    keys.into_iter()
                        .map(|key| {
                            let row = stmt
                                .query_row([key.as_slice()], |row| {
                                    Ok((
                                        row.get::<_, Vec<u8>>(0)?,
                                        row.get::<_, i64>(1)?,
                                        row.get::<_, i64>(2)?,
                                        row.get::<_, i64>(3)?,
                                    ))
                                })
                                .optional()
                                .map_err(|e| backend_error("read", e))?;
                            row.map(|(v, encoding, version, expiration_ms)| {
                                Ok(Raw {
                                    value: decode_kv_value(v, encoding)?,
                                    versionstamp: version_to_versionstamp(version),
                                    expired: expiration_ms >= 0 && expiration_ms <= now,
                                    // Deno stores -1 for "never expires".
                                    remaining: (expiration_ms >= 0).then(|| {
                                        let left = expiration_ms.saturating_sub(now);
                                        Duration::from_millis(u64::try_from(left).unwrap_or(0))
                                    }),
                                    key,
                                })
                            })
                            .transpose()
                        })
                        .collect()
                })
                .await
                .map_err(|e| backend_error("read", e))?
            }
            Backend::Remote { .. } => {
                let mut out = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(MAX_RANGES) {
                    let ranges = chunk
                        .iter()
                        .map(|key| ReadRange {
                            start: key.clone(),
                            end: key.iter().copied().chain(Some(0)).collect(),
                            limit: NonZeroU32::MIN,
                            reverse: false,
                        })
                        .collect();
                    for entries in self.remote_read(ranges).await? {
                        out.push(entries.into_iter().next());
                    }
                }
                Ok(out)
            }
        }
    }

    /// The live entries of `keys` with their remaining lifetimes (see
    /// [`Raw::remaining`]), in one read; errors name `operation`.
    async fn read_live(
        &self,
        keys: &[KvKey],
        operation: Operation,
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        let mut bytes = Vec::with_capacity(keys.len());
        for key in keys {
            bytes.push(
                self.encode_key(key)
                    .map_err(|e| e.with_operation(operation).with_key(key))?,
            );
        }
        let raws = self
            .read_points(bytes)
            .await
            .map_err(|e| e.with_operation(operation))?;
        keys.iter()
            .zip(raws)
            .map(|(key, raw)| match raw {
                Some(raw) if !raw.expired => {
                    let remaining = raw.remaining;
                    self.decode_value(raw)
                        .map(|value| Some((value, remaining)))
                        .map_err(|e| e.with_operation(operation).with_key(key))
                }
                _ => Ok(None),
            })
            .collect()
    }

    /// Up to [`PAGE`] live entries in `[start, end)`.
    async fn read_page(&self, start: Vec<u8>, end: Vec<u8>) -> Result<Vec<Raw>> {
        match &self.inner.backend {
            Backend::Local { reader, .. } => {
                let reader = Arc::clone(reader);
                let now = Utc::now().timestamp_millis();
                tokio::task::spawn_blocking(move || {
                    let conn = reader.lock().map_err(|_| poisoned())?;
                    let mut stmt = conn
                        .prepare_cached(
                            "select k, v, v_encoding, version from kv \
                             where k >= ? and k < ? and (expiration_ms < 0 or expiration_ms > ?) \
                             order by k asc limit ?",
                        )
                        .map_err(|e| backend_error("list", e))?;
                    let rows = stmt
                        .query_map(rusqlite::params![start, end, now, PAGE], |row| {
                            Ok((
                                row.get::<_, Vec<u8>>(0)?,
                                row.get::<_, Vec<u8>>(1)?,
                                row.get::<_, i64>(2)?,
                                row.get::<_, i64>(3)?,
                            ))
                        })
                        .map_err(|e| backend_error("list", e))?;
                    rows.map(|row| {
                        let (key, v, encoding, version) =
                            row.map_err(|e| backend_error("list", e))?;
                        Ok(Raw {
                            key,
                            value: decode_kv_value(v, encoding)?,
                            versionstamp: version_to_versionstamp(version),
                            expired: false,
                            remaining: None,
                        })
                    })
                    .collect()
                })
                .await
                .map_err(|e| backend_error("list", e))?
            }
            Backend::Remote { .. } => {
                let range = ReadRange {
                    start,
                    end,
                    limit: NonZeroU32::new(PAGE).unwrap_or(NonZeroU32::MIN),
                    reverse: false,
                };
                Ok(self
                    .remote_read(vec![range])
                    .await?
                    .into_iter()
                    .flatten()
                    .collect())
            }
        }
    }

    async fn remote_read(&self, ranges: Vec<ReadRange>) -> Result<Vec<Vec<Raw>>> {
        let Backend::Remote {
            handle, timeout, ..
        } = &self.inner.backend
        else {
            return Err(Error::new(ErrorKind::Backend, "not a remote store"));
        };
        let outputs = handle.snapshot_read(ranges, *timeout).await?;
        Ok(outputs
            .into_iter()
            .map(|output| {
                output
                    .entries
                    .into_iter()
                    .map(|e| Raw {
                        key: e.key,
                        value: e.value,
                        versionstamp: e.versionstamp,
                        expired: false,
                        remaining: None,
                    })
                    .collect()
            })
            .collect())
    }

    /// Commits `write`; `false` when a check failed.
    async fn write(&self, write: AtomicWrite) -> Result<bool> {
        match &self.inner.backend {
            Backend::Local { db, .. } => {
                // denokv_sqlite retries a busy database around its
                // transaction, but not a statement inside it: a write whose
                // read snapshot another handle on the file (or Deno) has
                // moved past cannot become a write transaction
                // (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out).
                // Running the whole write again reads its checks afresh: a
                // lost race then answers `false`, and a busy database
                // commits once it is free. Nothing of the failed attempt is
                // written: its first write statement is the one refused.
                let mut write = write;
                let mut delay = Duration::from_millis(1);
                for _ in 1..BUSY_ATTEMPTS {
                    let Some(again) = copy_write(&write) else {
                        break;
                    };
                    match db.atomic_write(write).await {
                        Err(e) if is_busy(&e) => {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_millis(64));
                            write = again;
                        }
                        other => return local_outcome(other),
                    }
                }
                local_outcome(db.atomic_write(write).await)
            }
            Backend::Remote {
                handle, timeout, ..
            } => handle.atomic_write(write, *timeout).await,
        }
    }

    fn decode_value(&self, raw: Raw) -> Result<Value> {
        json_of(raw.value)
    }

    fn encode_value(value: &Value) -> Result<KvValue> {
        let bytes = v8::encode(value)?;
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(Error::new(
                ErrorKind::ValueTooLarge,
                format!(
                    "the serialized value is {} bytes, Deno KV allows {MAX_VALUE_BYTES}",
                    bytes.len()
                ),
            ));
        }
        Ok(KvValue::V8(bytes))
    }

    fn set_mutation(key: Vec<u8>, value: KvValue, options: SetOptions) -> Mutation {
        match options.ttl {
            Some(ttl) if ttl.is_zero() => Mutation {
                key,
                kind: MutationKind::Delete,
                expire_at: None,
            },
            ttl => Mutation {
                key,
                kind: MutationKind::Set(value),
                expire_at: ttl.map(expire_at),
            },
        }
    }

    async fn write_unchecked(&self, mutations: Vec<Mutation>) -> Result<()> {
        // Split to stay within Deno's per-write limits.
        let mut batch = Vec::new();
        let mut bytes = 0;
        for mutation in mutations {
            let size = mutation.key.len() + mutation_value_len(&mutation);
            if !batch.is_empty()
                && (batch.len() == MAX_MUTATIONS || bytes + size > MAX_MUTATION_BYTES)
            {
                self.commit_all(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += size;
            batch.push(mutation);
        }
        if !batch.is_empty() {
            self.commit_all(batch).await?;
        }
        Ok(())
    }

    async fn commit_all(&self, mutations: Vec<Mutation>) -> Result<()> {
        let committed = self
            .write(AtomicWrite {
                checks: Vec::new(),
                mutations,
                enqueues: Vec::new(),
            })
            .await?;
        if committed {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Backend,
                "an unchecked write was not committed",
            ))
        }
    }

    fn list_range(&self, prefix: Option<&KvKey>) -> Result<(Vec<u8>, Vec<u8>)> {
        let start = match prefix {
            Some(p) => self.encode_key(p)?,
            None => self.encode_parts(std::iter::empty())?,
        };
        // Every key starting with these bytes is the prefix itself or one of
        // its children: a string part ends with 0x00 and no part tag is 0xff.
        let mut end = start.clone();
        end.push(0xff);
        Ok((start, end))
    }
}

#[async_trait]
impl KvStore for DenoKvStore {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        let found = self
            .read_live(std::slice::from_ref(key), Operation::Get)
            .await
            .ctx(Operation::Get, key)?;
        Ok(found.into_iter().next().flatten().map(|(value, _)| value))
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        let found = self
            .read_live(std::slice::from_ref(key), Operation::GetWithTtl)
            .await
            .ctx(Operation::GetWithTtl, key)?;
        Ok(found.into_iter().next().flatten())
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        self.write_values(vec![(key.clone(), value)], options, Operation::Set)
            .await
            .map_err(|e| e.with_key(key))
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.delete_keys(std::slice::from_ref(key), Operation::Delete)
            .await
            .map_err(|e| e.with_key(key))
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let context = |e: Error| e.with_operation(Operation::Cas).with_key(key);
        let new = crate::value::checked_cas(expected, new).map_err(context)?;
        let bytes = self.encode_key(key).map_err(context)?;
        let new = match new {
            Some(value) if !options.is_expired() => {
                Some(Self::encode_value(&value).map_err(context)?)
            }
            _ => None,
        };
        for _ in 0..CAS_ATTEMPTS {
            let current = self
                .read_points(vec![bytes.clone()])
                .await
                .map_err(context)?
                .pop()
                .flatten();
            let versionstamp = current.as_ref().map(|raw| raw.versionstamp);
            let current = match current {
                Some(raw) if !raw.expired => Some(self.decode_value(raw).map_err(context)?),
                _ => None,
            };
            if current.as_ref() != expected {
                return Ok(false);
            }
            let mutation = match &new {
                Some(value) => Self::set_mutation(bytes.clone(), copy_value(value), options),
                None => Mutation {
                    key: bytes.clone(),
                    kind: MutationKind::Delete,
                    expire_at: None,
                },
            };
            // The check makes the comparison and the write one atomic step:
            // the write commits only if nobody wrote the key since our read
            // (an expired entry the read saw as absent is checked by its
            // versionstamp too, so it cannot be collected and recreated
            // unnoticed).
            let write = AtomicWrite {
                checks: vec![Check {
                    key: bytes.clone(),
                    versionstamp,
                }],
                mutations: vec![mutation],
                enqueues: Vec::new(),
            };
            if self.write(write).await.map_err(context)? {
                return Ok(true);
            }
            // Lost a race: read again; if the value still matches, retry.
            tokio::task::yield_now().await;
        }
        Err(context(
            Error::new(
                ErrorKind::Backend,
                format!("cas lost {CAS_ATTEMPTS} races in a row"),
            )
            .with_retryable(true),
        ))
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        let range = match self.list_range(prefix.as_ref()) {
            Ok(range) => range,
            Err(e) => {
                let e = e.with_operation(Operation::List);
                let e = match &prefix {
                    Some(p) => e.with_key(p),
                    None => e,
                };
                return stream::once(async move { Err(e) }).boxed();
            }
        };
        // Pages of up to 1000 entries, each read on demand.
        let pages = stream::try_unfold(Some(range), move |state| async move {
            let Some((start, end)) = state else {
                return Ok(None);
            };
            let page = self
                .read_page(start, end.clone())
                .await
                .map_err(|e| e.with_operation(Operation::List))?;
            let next = match page.last() {
                Some(last) if page.len() == PAGE as usize => {
                    let mut after = last.key.clone();
                    after.push(0);
                    Some((after, end))
                }
                _ => None,
            };
            let mut entries = Vec::with_capacity(page.len());
            for raw in page {
                let Some(key) = self.decode_key(&raw.key) else {
                    tracing::debug!("skipping a Deno KV entry whose key is not a KvKey");
                    continue;
                };
                // A value without a JSON form is an error item of its own;
                // the listing goes on with the next entry.
                entries.push(match self.decode_value(raw) {
                    Ok(value) => Ok(KvEntry { key, value }),
                    Err(e) => Err(e.with_operation(Operation::List).with_key(&key)),
                });
            }
            Ok(Some((stream::iter(entries), next)))
        });
        pages
            .map(|page: Result<_>| match page {
                Ok(entries) => entries.left_stream(),
                Err(e) => stream::once(async move { Err(e) }).right_stream(),
            })
            .flatten()
            .boxed()
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let found = self.read_live(keys, Operation::GetMany).await?;
        Ok(found
            .into_iter()
            .map(|e| e.map(|(value, _)| value))
            .collect())
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        self.read_live(keys, Operation::GetManyWithTtl).await
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        self.write_values(entries, options, Operation::SetMany)
            .await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        self.delete_keys(keys, Operation::DeleteMany).await
    }

    fn capabilities(&self) -> Capabilities {
        // A local file keeps `expiration_ms` beside the value, so get_with_ttl
        // reports it; KV Connect's read results carry no expiry (its
        // `KvEntry` is key, value, versionstamp), so the remote backend cannot.
        match self.inner.backend {
            Backend::Local { .. } => Capabilities::full(),
            Backend::Remote { .. } => Capabilities::full()
                .with_exact_expiry(false)
                .with_reports_ttl(false),
        }
    }
}

impl DenoKvStore {
    /// `set_many`, its errors naming `operation`.
    async fn write_values(
        &self,
        entries: Vec<(KvKey, Value)>,
        options: SetOptions,
        operation: Operation,
    ) -> Result<()> {
        // Encode everything first: a bad value rejects the batch before any
        // write.
        let entries =
            crate::value::checked_entries(entries).map_err(|e| e.with_operation(operation))?;
        let mut mutations = Vec::with_capacity(entries.len());
        for (key, value) in &entries {
            let context = |e: Error| e.with_operation(operation).with_key(key);
            let bytes = self.encode_key(key).map_err(context)?;
            let value = Self::encode_value(value).map_err(context)?;
            mutations.push(Self::set_mutation(bytes, value, options));
        }
        self.write_unchecked(mutations)
            .await
            .map_err(|e| e.with_operation(operation))
    }

    /// `delete_many`, its errors naming `operation`.
    async fn delete_keys(&self, keys: &[KvKey], operation: Operation) -> Result<()> {
        let mut mutations = Vec::with_capacity(keys.len());
        for key in keys {
            mutations.push(Mutation {
                key: self
                    .encode_key(key)
                    .map_err(|e| e.with_operation(operation).with_key(key))?,
                kind: MutationKind::Delete,
                expire_at: None,
            });
        }
        self.write_unchecked(mutations)
            .await
            .map_err(|e| e.with_operation(operation))
    }
}
