//! [`PostgresKvStore`]: a table in PostgreSQL (feature `postgres`), through
//! tokio-postgres and a deadpool connection pool. For teams that already run
//! Postgres and want one server less.
//!
//! ```no_run
//! use kvtower::{kvkey, KvStore, PostgresKvStore, SetOptions};
//! use serde_json::json;
//!
//! # #[tokio::main]
//! # async fn main() -> kvtower::Result<()> {
//! let store = PostgresKvStore::builder()
//!     .table("cache")
//!     .connect("postgres://postgres@127.0.0.1:5432/test")
//!     .await?;
//! store.set(&kvkey!["user", "42"], json!({"name": "Ada"}), SetOptions::default()).await?;
//! assert_eq!(store.get(&kvkey!["user", "42"]).await?, Some(json!({"name": "Ada"})));
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! * The table (`kvtower` by default, see [`PostgresKvStoreBuilder::table`])
//!   is created when missing: `key bytea PRIMARY KEY, value json NOT NULL,
//!   expires_at bigint`. Keys are stored in an order- and prefix-preserving
//!   encoding, and `bytea` compares bytewise whatever the database's
//!   collation, so `list(prefix)` is one range scan of the primary key.
//!   The partial index on `expires_at` is named `"{table}.expires_at"`, a
//!   name no table can have, so any two valid table names share a database.
//! * A btree index entry holds at most 2,704 bytes (with the default 8 kB
//!   pages), so a write of a key whose encoding is longer than
//!   [`MAX_KEY_BYTES`] (2,692 bytes: about the parts' UTF-8 plus 2 bytes a
//!   part) fails with [`InvalidKey`](crate::ErrorKind::InvalidKey) naming
//!   the limit, before anything is sent. Reads, deletes and listings take
//!   keys of any length (they find nothing). Indexing a hash of the key
//!   instead would lift the limit, but not for tables earlier versions
//!   created, which other processes may still be writing.
//! * Values are `json`, not `jsonb`: `jsonb` rejects the escape `\u0000`,
//!   which is a valid JSON string character the contract allows, and it
//!   rewrites numbers (`1.0` and `1` become equal). `json` is still checked
//!   by Postgres on every write (another program cannot store invalid JSON in
//!   it) and keeps the text exactly as serde_json wrote it.
//! * `expires_at` is in milliseconds since the Unix epoch on the *database
//!   server's* clock (`statement_timestamp()`), so application servers with
//!   skewed clocks agree on expiry; `NULL` means never. Every read, listing
//!   and `cas` treats expired rows as absent. A background task deletes
//!   expired rows every minute by default (at most 1,000 rows per statement);
//!   it holds only a weak reference and stops when the last handle is
//!   dropped. [`PostgresKvStore::sweep_expired`] sweeps on demand.
//! * `cas` runs in a transaction: `SELECT ... FOR UPDATE` locks the row, the
//!   comparison is serde_json's structural equality in Rust (the same as
//!   every other store), then `UPDATE`/`DELETE`. When the row is absent,
//!   `INSERT ... ON CONFLICT DO NOTHING` decides the race: if another writer
//!   inserted first, the transaction reads and locks its row and compares
//!   again.
//! * `get_many` is one `key = ANY($1)` query, `set_many` one
//!   `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE` (duplicate
//!   keys are folded first, the last one winning), `delete_many` one
//!   `DELETE ... = ANY($1)`.
//!
//! * Every operation is bounded by the per-operation
//!   [`timeout`](PostgresKvStoreBuilder::timeout) (default 30 s; for `list`,
//!   each page), waiting for a pooled connection included: past it, a
//!   retryable [`Timeout`](crate::ErrorKind::Timeout) error. A connection
//!   whose operation was interrupted (by that timeout, or by the caller
//!   dropping the future) never returns to the pool, and its statement is
//!   cancelled on the server, so a write stuck behind another session's row
//!   lock neither lands later nor blocks the next call.
//!
//! The store handle is cheap to clone; clones share the pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, Object, Pool, Runtime};
use futures::stream::{self, BoxStream, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// The pool crate, re-exported for [`PostgresKvStore::from_pool`] (and its
/// `tokio_postgres`, as `deadpool_postgres::tokio_postgres`).
pub use deadpool_postgres;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, Value};
use crate::stores::layout::Layout;
use crate::stores::sql::{self, encode_key, parse_value, prefix_range, ttl_ms, value_text};
use crate::value::{checked, checked_cas, checked_entries};

mod bound;
mod cas;
mod error;
mod fedify;
mod list;
mod schema;
mod sweep;

use self::bound::{run, Bounds};
use self::error::pg_error;
use self::schema::{setup, Statements};
use self::sweep::{spawn_sweeper, sweep_all};

/// The default number of pooled connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// The per-operation timeout by default (see
/// [`PostgresKvStoreBuilder::timeout`]). Longer than Redis's 2 s: one SQL
/// statement may legitimately write a 100 MB value or wait its turn in the
/// pool.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeout of each connection attempt by default (see
/// [`PostgresKvStoreBuilder::connect_timeout`]).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest key a write accepts in the kvtower layout, in bytes of its
/// encoding (each part's UTF-8 plus 2 bytes, plus 1 per U+0000): a btree
/// index entry holds at most 2,704 bytes with PostgreSQL's default 8 kB
/// pages, 12 of them the entry's and the `bytea`'s headers. A longer key
/// that compresses well may fit, but a limit that does not depend on the
/// key's content is one a caller can rely on.
pub const MAX_KEY_BYTES: usize = 2692;

/// Refuses, before anything is sent, a key too long to be written (see
/// [`MAX_KEY_BYTES`]). Reads, deletes and listings take a key of any length:
/// no stored key is that long, so they find nothing.
fn writable(enc: &[u8], key: &KvKey) -> Result<()> {
    if enc.len() > MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidKey,
            format!(
                "the encoded key is {} bytes, a PostgreSQL primary-key entry holds at most {MAX_KEY_BYTES}",
                enc.len()
            ),
        )
        .with_key(key));
    }
    Ok(())
}

/// A key–value store in a PostgreSQL table.
///
/// Cheap to clone: clones share the connection pool.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> kvtower::Result<()> {
/// let store = kvtower::PostgresKvStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresKvStore {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pool: Pool,
    bounds: Bounds,
    table: String,
    sql: Statements,
    /// `Some` in [`Layout::Fedify`]: every call goes there.
    fedify: Option<Arc<fedify::FedifyPostgres>>,
}

impl std::fmt::Debug for PostgresKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's configuration may hold a password: not shown.
        f.debug_struct("PostgresKvStore")
            .field("table", &self.inner.table)
            .field("layout", &self.layout())
            .field("pool_size", &self.inner.pool.status().size)
            .field("timeout", &self.inner.bounds.timeout)
            .finish()
    }
}

/// Options of a [`PostgresKvStore`], from [`PostgresKvStore::builder`].
///
/// ```no_run
/// use std::time::Duration;
///
/// # #[tokio::main]
/// # async fn main() -> kvtower::Result<()> {
/// let store = kvtower::PostgresKvStore::builder()
///     .table("sessions")
///     .max_connections(8)
///     .sweep_interval(Duration::from_secs(10))
///     .connect("postgres://postgres@127.0.0.1:5432/test")
///     .await?;
/// assert_eq!(store.table(), "sessions");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresKvStoreBuilder {
    /// `None`: the layout's default table.
    table: Option<String>,
    layout: Layout,
    decode_double_encoded: bool,
    sweep_interval: Option<Duration>,
    max_connections: usize,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Default for PostgresKvStoreBuilder {
    fn default() -> Self {
        Self {
            table: None,
            layout: Layout::Kvtower,
            decode_double_encoded: false,
            sweep_interval: Some(sql::DEFAULT_SWEEP_INTERVAL),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl PostgresKvStoreBuilder {
    /// The table to use (default `kvtower`): a letter or `_`, then up to 62
    /// letters, digits or `_`, case-sensitive. Any other name is a
    /// [`Config`](crate::ErrorKind::Config) error; the name is never spliced into
    /// SQL unchecked.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = Some(name.into());
        self
    }

    /// The data format (default [`Layout::Kvtower`]). [`Layout::Fedify`]
    /// reads and writes the table of `@fedify/postgres`'s `PostgresKvStore`,
    /// so a Fedify server can use the same table:
    ///
    /// * table `fedify_kv_v2` (unless [`table`](Self::table) says
    ///   otherwise): `key text[]`, `value jsonb`, `created`, `ttl interval`,
    ///   live while `created + ttl > CURRENT_TIMESTAMP`;
    /// * U+0000 in a key part or a JSON string is an error
    ///   (`text`/`jsonb` cannot hold it; Fedify fails on it too), declared
    ///   as [`nul_in_text: false`](crate::Capabilities::nul_in_text);
    /// * `cas` is atomic and `list` matches part-wise.
    ///
    /// Checked against `@fedify/postgres` 1.8.7 by `tests/fedify.rs`.
    ///
    /// ```no_run
    /// use kvtower::stores::Layout;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = kvtower::PostgresKvStore::builder()
    ///     .layout(Layout::Fedify)
    ///     .connect("postgres://postgres@127.0.0.1:5432/test")
    ///     .await?;
    /// assert_eq!(store.table(), "fedify_kv_v2");
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

    /// In [`Layout::Fedify`], read a `jsonb` string whose text is JSON as
    /// that JSON (default off). A Fedify store constructed with
    /// `initialized: true` (before Fedify 2.0.27) wrote every value that
    /// way, JSON-encoded twice; Fedify's own `get` returns such a value as a
    /// string. Turn this on for a table holding such rows, knowing that a
    /// genuine string value whose text is JSON (`"42"`, `"{}"`) then reads
    /// as the decoded value too. `cas` compares the decoded value. Without
    /// effect in [`Layout::Kvtower`].
    pub fn decode_double_encoded(mut self, decode: bool) -> Self {
        self.decode_double_encoded = decode;
        self
    }

    /// How often a background task deletes expired rows (default one
    /// minute). Expired rows are invisible either way.
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = Some(every);
        self
    }

    /// No background sweep; call [`PostgresKvStore::sweep_expired`] yourself.
    pub fn no_sweep(mut self) -> Self {
        self.sweep_interval = None;
        self
    }

    /// The pool size for [`connect`](Self::connect) (default
    /// [`DEFAULT_MAX_CONNECTIONS`]).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// How long one operation may take, from waiting for a pooled
    /// connection to the last reply (default [`DEFAULT_TIMEOUT`]; for
    /// `list`, each page of rows). Past it the operation fails with a
    /// retryable [`Timeout`](crate::ErrorKind::Timeout) error: a write
    /// waiting on a row another session holds locked, or a server that
    /// stopped answering, no longer leaves the call pending. The interrupted
    /// statement is cancelled on the server and its connection leaves the
    /// pool, so the store keeps working. Zero is a
    /// [`Config`](crate::ErrorKind::Config) error.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = kvtower::PostgresKvStore::builder()
    ///     .timeout(Duration::from_secs(2))
    ///     .connect_timeout(Duration::from_secs(1))
    ///     .connect("postgres://postgres@127.0.0.1:5432/test")
    ///     .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]), and a cancel request after a timeout.
    /// [`connect`](Self::connect) waits at most this plus the
    /// [`timeout`](Self::timeout). A `connect_timeout` in the URL takes
    /// precedence for the attempt itself. Zero is a
    /// [`Config`](crate::ErrorKind::Config) error.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The timeouts, checked.
    fn bounds(&self) -> Result<Bounds> {
        for (name, value) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(format!("{name}: must be more than zero"))
                    .with_operation(Operation::Connect));
            }
        }
        Ok(Bounds {
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
        })
    }

    /// The table: the one set, else the layout's default.
    fn table_name(&self) -> String {
        self.table.clone().unwrap_or_else(|| {
            match self.layout {
                Layout::Fedify => fedify::DEFAULT_TABLE,
                _ => sql::DEFAULT_TABLE,
            }
            .to_owned()
        })
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`, or
    /// the key–value form tokio-postgres accepts), without TLS, and creates
    /// the table when missing.
    ///
    /// # Errors
    ///
    /// [`Config`](crate::ErrorKind::Config) for an invalid URL, table name or pool
    /// size; [`Unavailable`](crate::ErrorKind::Unavailable) when the server cannot be
    /// reached; [`Backend`](crate::ErrorKind::Backend) when the table cannot be
    /// created.
    pub async fn connect(self, url: &str) -> Result<PostgresKvStore> {
        async {
            sql::validate_table(&self.table_name())?;
            let bounds = self.bounds()?;
            let mut config: tokio_postgres::Config =
                url.parse().map_err(|e: tokio_postgres::Error| {
                    // The message does not repeat the URL: it may hold a password.
                    let err =
                        Error::config(format!("url: not a PostgreSQL connection string ({e})"))
                            .with_operation(Operation::Connect);
                    crate::redact::scrub(err, [url])
                })?;
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(bounds.connect_timeout);
            }
            let manager = Manager::new(config, NoTls);
            // The operation's own timeout bounds the wait for a connection too;
            // these only keep the pool's own waits from outliving it.
            let pool = Pool::builder(manager)
                .max_size(self.max_connections)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(bounds.timeout))
                .create_timeout(Some(bounds.connect_timeout))
                .build()
                .map_err(|e| {
                    Error::config(format!("max_connections: cannot build the pool ({e})"))
                        .with_operation(Operation::Connect)
                })?;
            // A server's message may quote what it was given: no password of
            // `url` survives in the error.
            self.from_pool(pool)
                .await
                .map_err(|e| crate::redact::scrub(e, [url]))
        }
        .await
        .op(Operation::Connect)
    }

    /// Uses an existing pool (sharing it with the rest of the application)
    /// and creates the table when missing.
    ///
    /// # Errors
    ///
    /// As for [`connect`](Self::connect).
    pub async fn from_pool(self, pool: Pool) -> Result<PostgresKvStore> {
        async {
            let table = self.table_name();
            sql::validate_table(&table)?;
            let bounds = self.bounds()?;
            // Setting up may have to connect first.
            let setup_bounds = Bounds {
                timeout: bounds.timeout.saturating_add(bounds.connect_timeout),
                ..bounds
            };
            let sql = Statements::new(&table);
            if self.layout == Layout::Fedify {
                let fedify = fedify::FedifyPostgres::start(
                    pool.clone(),
                    bounds,
                    setup_bounds,
                    &table,
                    self.decode_double_encoded,
                    self.sweep_interval,
                )
                .await?;
                return Ok(PostgresKvStore {
                    inner: Arc::new(Inner {
                        pool,
                        bounds,
                        table,
                        sql,
                        fedify: Some(fedify),
                    }),
                });
            }
            run(&pool, setup_bounds, Operation::Connect, async |client| {
                let mut attempt = 0;
                while let Err(e) = setup(client, &table, &sql).await {
                    // Setups through this version take turns (an advisory lock),
                    // but an older version creating the table at the same moment
                    // can still win the race on the catalog's unique index: then
                    // the table exists, and a second attempt finds it.
                    let raced = e.code().is_some_and(|c| {
                        *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE
                    });
                    attempt += 1;
                    if !raced || attempt > 1 {
                        return Err(pg_error(e));
                    }
                }
                Ok(())
            })
            .await?;
            let store = PostgresKvStore {
                inner: Arc::new(Inner {
                    pool,
                    bounds,
                    table,
                    sql,
                    fedify: None,
                }),
            };
            if let Some(every) = self.sweep_interval {
                spawn_sweeper(Arc::downgrade(&store.inner), every);
            }
            Ok(store)
        }
        .await
        .op(Operation::Connect)
    }
}

pub(super) async fn prepare(client: &Object, query: &str) -> Result<tokio_postgres::Statement> {
    client.prepare_cached(query).await.map_err(pg_error)
}

impl Inner {
    /// Runs `work` on a pooled connection within the per-operation timeout.
    async fn run<T>(
        &self,
        operation: Operation,
        work: impl AsyncFnOnce(&mut Object) -> Result<T>,
    ) -> Result<T> {
        run(&self.pool, self.bounds, operation, work).await
    }
}

impl PostgresKvStore {
    /// Connects to `url` with the default options (table `kvtower`, 16
    /// connections, a sweep every minute).
    ///
    /// # Errors
    ///
    /// See [`PostgresKvStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder().connect(url).await
    }

    /// Uses an existing deadpool-postgres pool, with the default options.
    ///
    /// ```no_run
    /// use kvtower::stores::postgres::deadpool_postgres::{tokio_postgres, Manager, Pool};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> kvtower::Result<()> {
    /// let config: tokio_postgres::Config = "postgres://postgres@127.0.0.1/test".parse().unwrap();
    /// let pool = Pool::builder(Manager::new(config, tokio_postgres::NoTls)).build().unwrap();
    /// let store = kvtower::PostgresKvStore::from_pool(pool).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// See [`PostgresKvStoreBuilder::from_pool`].
    pub async fn from_pool(pool: Pool) -> Result<Self> {
        Self::builder().from_pool(pool).await
    }

    /// A builder for the table name, pool size and sweep interval.
    pub fn builder() -> PostgresKvStoreBuilder {
        PostgresKvStoreBuilder::default()
    }

    /// The table this store uses.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// The data format this store reads and writes.
    pub fn layout(&self) -> Layout {
        if self.inner.fedify.is_some() {
            Layout::Fedify
        } else {
            Layout::Kvtower
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Deletes every expired row now and returns how many it deleted. The
    /// background sweep does the same periodically.
    ///
    /// # Errors
    ///
    /// An error from the pool or the server.
    pub async fn sweep_expired(&self) -> Result<u64> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.sweep_expired().await;
        }
        sweep_all(&self.inner).await
    }
}

impl PostgresKvStore {
    /// `get` and `get_with_ttl`: the value and the ms it has left on the
    /// server's clock, in one query.
    async fn read_one(
        &self,
        key: &KvKey,
        operation: Operation,
    ) -> Result<Option<(Value, Option<Duration>)>> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.get(key, operation).await;
        }
        let enc = encode_key(key);
        self.inner
            .run(operation, async |client| {
                let stmt = prepare(client, &self.inner.sql.get).await?;
                let row = client.query_opt(&stmt, &[&enc]).await.map_err(pg_error)?;
                row.map(|row| live_row(&row, 0, key, operation)).transpose()
            })
            .await
    }

    /// `get_many` and `get_many_with_ttl`, in one query.
    async fn read_many(
        &self,
        keys: &[KvKey],
        operation: Operation,
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.get_many(keys, operation).await;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let encoded: Vec<Vec<u8>> = keys.iter().map(encode_key).collect();
        let rows = self
            .inner
            .run(operation, async |client| {
                let stmt = prepare(client, &self.inner.sql.get_many).await?;
                client.query(&stmt, &[&encoded]).await.map_err(pg_error)
            })
            .await?;
        let mut found: HashMap<Vec<u8>, &tokio_postgres::Row> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let enc: Vec<u8> = row.try_get(0).map_err(pg_error)?;
            found.insert(enc, row);
        }
        keys.iter()
            .zip(&encoded)
            .map(|(key, enc)| {
                found
                    .get(enc)
                    .map(|row| live_row(row, 1, key, operation))
                    .transpose()
            })
            .collect()
    }
}

/// The value (column `at`) and the ms it has left (column `at + 1`, `NULL`:
/// never expires) of a live row.
fn live_row(
    row: &tokio_postgres::Row,
    at: usize,
    key: &KvKey,
    operation: Operation,
) -> Result<(Value, Option<Duration>)> {
    let text: &str = row.try_get(at).map_err(pg_error)?;
    let left: Option<i64> = row.try_get(at + 1).map_err(pg_error)?;
    Ok((parse_value(text, key, operation)?, sql::remaining(left, 0)))
}

#[async_trait]
impl KvStore for PostgresKvStore {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        async {
            Ok(self
                .read_one(key, Operation::Get)
                .await?
                .map(|(value, _)| value))
        }
        .await
        .ctx(Operation::Get, key)
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        async { self.read_one(key, Operation::GetWithTtl).await }
            .await
            .ctx(Operation::GetWithTtl, key)
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        async {
            let value = checked(value)?;
            if let Some(fedify) = &self.inner.fedify {
                return fedify.set(key, value, options).await;
            }
            if options.is_expired() {
                return self.delete(key).await;
            }
            let (enc, text, ttl) = (encode_key(key), value_text(&value), ttl_ms(options.ttl));
            writable(&enc, key)?;
            self.inner
                .run(Operation::Set, async |client| {
                    let stmt = prepare(client, &self.inner.sql.upsert).await?;
                    client
                        .execute(&stmt, &[&enc, &text, &ttl])
                        .await
                        .map_err(pg_error)?;
                    Ok(())
                })
                .await
        }
        .await
        .ctx(Operation::Set, key)
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        async {
            if let Some(fedify) = &self.inner.fedify {
                return fedify.delete(key).await;
            }
            let enc = encode_key(key);
            self.inner
                .run(Operation::Delete, async |client| {
                    let stmt = prepare(client, &self.inner.sql.delete).await?;
                    client.execute(&stmt, &[&enc]).await.map_err(pg_error)?;
                    Ok(())
                })
                .await
        }
        .await
        .ctx(Operation::Delete, key)
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        async {
            let new = checked_cas(expected, new)?;
            if let Some(fedify) = &self.inner.fedify {
                return fedify.cas(key, expected, new, options).await;
            }
            self.cas_inner(key, expected, new, options).await
        }
        .await
        .ctx(Operation::Cas, key)
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify
                .list(prefix)
                .map(|entry| entry.op(Operation::List))
                .boxed();
        }
        // Keyset pagination: one short query per page, each starting just
        // after the last key seen, so no entry is listed twice and no
        // connection is held while the caller consumes the stream.
        let (start, end) = prefix_range(prefix.as_ref());
        stream::unfold(Some(start), move |start| {
            let end = end.clone();
            async move {
                let page = self.list_page(start?, &end).await;
                Some(match page {
                    Ok((entries, next)) => (stream::iter(entries), next),
                    Err(e) => (stream::iter(vec![Err(e)]), None),
                })
            }
        })
        .flatten()
        .map(|entry| entry.op(Operation::List))
        .boxed()
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        async {
            let found = self.read_many(keys, Operation::GetMany).await?;
            Ok(found
                .into_iter()
                .map(|e| e.map(|(value, _)| value))
                .collect())
        }
        .await
        .op(Operation::GetMany)
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        async { self.read_many(keys, Operation::GetManyWithTtl).await }
            .await
            .op(Operation::GetManyWithTtl)
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        async {
            // One nesting limit for every layout: check before handing off.
            let entries = checked_entries(entries)?;
            if let Some(fedify) = &self.inner.fedify {
                return fedify.set_many(entries, options).await;
            }
            if entries.is_empty() {
                return Ok(());
            }
            if options.is_expired() {
                let keys: Vec<KvKey> = entries.into_iter().map(|(k, _)| k).collect();
                return self.delete_many(&keys).await;
            }
            // One statement cannot upsert the same row twice: fold duplicates,
            // the last value winning like a loop of `set`.
            let mut index: HashMap<Vec<u8>, usize> = HashMap::with_capacity(entries.len());
            let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(entries.len());
            let mut texts: Vec<String> = Vec::with_capacity(entries.len());
            for (key, value) in &entries {
                let enc = encode_key(key);
                // Checked first: a key too long writes nothing of the batch.
                writable(&enc, key)?;
                let text = value_text(value);
                match index.get(&enc) {
                    Some(&i) => texts[i] = text,
                    None => {
                        index.insert(enc.clone(), encoded.len());
                        encoded.push(enc);
                        texts.push(text);
                    }
                }
            }
            let ttl = ttl_ms(options.ttl);
            self.inner
                .run(Operation::SetMany, async |client| {
                    let stmt = prepare(client, &self.inner.sql.set_many).await?;
                    client
                        .execute(&stmt, &[&encoded, &texts, &ttl])
                        .await
                        .map_err(pg_error)?;
                    Ok(())
                })
                .await
        }
        .await
        .op(Operation::SetMany)
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        async {
            if let Some(fedify) = &self.inner.fedify {
                return fedify.delete_many(keys).await;
            }
            if keys.is_empty() {
                return Ok(());
            }
            let encoded: Vec<Vec<u8>> = keys.iter().map(encode_key).collect();
            self.inner
                .run(Operation::DeleteMany, async |client| {
                    let stmt = prepare(client, &self.inner.sql.delete_many).await?;
                    client.execute(&stmt, &[&encoded]).await.map_err(pg_error)?;
                    Ok(())
                })
                .await
        }
        .await
        .op(Operation::DeleteMany)
    }

    // get_with_ttl reads the expiry with the value, in both layouts.
    fn capabilities(&self) -> Capabilities {
        if self.inner.fedify.is_some() {
            // text and jsonb cannot hold U+0000.
            return Capabilities::full().with_nul_in_text(false);
        }
        Capabilities::full()
    }
}
