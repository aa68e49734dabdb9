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
//! The store handle is cheap to clone; clones share the pool.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, Object, Pool, PoolError, Runtime};
use futures::stream::{self, BoxStream, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// The pool crate, re-exported for [`PostgresKvStore::from_pool`] (and its
/// `tokio_postgres`, as `deadpool_postgres::tokio_postgres`).
pub use deadpool_postgres;

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, Value};
use crate::stores::layout::Layout;
use crate::stores::sql::{
    self, after, decode_key, encode_key, parse_value, prefix_range, ttl_ms, value_text,
};
use crate::value::{checked, checked_cas, checked_entries};

mod fedify;

/// The default number of pooled connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// How many times `cas` goes around when concurrent inserts of an absent key
/// keep beating it (each round means another writer succeeded).
const CAS_ROUNDS: usize = 16;

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

struct Inner {
    pool: Pool,
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
}

impl Default for PostgresKvStoreBuilder {
    fn default() -> Self {
        Self {
            table: None,
            layout: Layout::Kvtower,
            decode_double_encoded: false,
            sweep_interval: Some(sql::DEFAULT_SWEEP_INTERVAL),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl PostgresKvStoreBuilder {
    /// The table to use (default `kvtower`): a letter or `_`, then up to 62
    /// letters, digits or `_`, case-sensitive. Any other name is a
    /// [`Config`](ErrorKind::Config) error; the name is never spliced into
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
    /// [`Config`](ErrorKind::Config) for an invalid URL, table name or pool
    /// size; [`Unavailable`](ErrorKind::Unavailable) when the server cannot be
    /// reached; [`Backend`](ErrorKind::Backend) when the table cannot be
    /// created.
    pub async fn connect(self, url: &str) -> Result<PostgresKvStore> {
        sql::validate_table(&self.table_name()).map_err(|e| e.with_operation("connect"))?;
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            // The message does not repeat the URL: it may hold a password.
            let err = Error::config(format!("url: not a PostgreSQL connection string ({e})"))
                .with_operation("connect");
            crate::redact::scrub(err, [url])
        })?;
        let manager = Manager::new(config, NoTls);
        let pool = Pool::builder(manager)
            .max_size(self.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| {
                Error::config(format!("max_connections: cannot build the pool ({e})"))
                    .with_operation("connect")
            })?;
        // A server's message may quote what it was given: no password of
        // `url` survives in the error.
        self.from_pool(pool)
            .await
            .map_err(|e| crate::redact::scrub(e, [url]))
    }

    /// Uses an existing pool (sharing it with the rest of the application)
    /// and creates the table when missing.
    ///
    /// # Errors
    ///
    /// As for [`connect`](Self::connect).
    pub async fn from_pool(self, pool: Pool) -> Result<PostgresKvStore> {
        let table = self.table_name();
        sql::validate_table(&table).map_err(|e| e.with_operation("connect"))?;
        let sql = Statements::new(&table);
        if self.layout == Layout::Fedify {
            let fedify = fedify::FedifyPostgres::start(
                pool.clone(),
                &table,
                self.decode_double_encoded,
                self.sweep_interval,
            )
            .await?;
            return Ok(PostgresKvStore {
                inner: Arc::new(Inner {
                    pool,
                    table,
                    sql,
                    fedify: Some(fedify),
                }),
            });
        }
        let mut client = pool.get().await.map_err(|e| pool_error(e, "connect"))?;
        let mut attempt = 0;
        while let Err(e) = setup(&mut client, &table, &sql).await {
            // Setups through this version take turns (an advisory lock), but
            // an older version creating the table at the same moment can
            // still win the race on the catalog's unique index: then the
            // table exists, and a second attempt finds it.
            let raced = e.code().is_some_and(|c| {
                *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE
            });
            attempt += 1;
            if !raced || attempt > 1 {
                return Err(pg_error(e, "connect"));
            }
        }
        drop(client);
        let store = PostgresKvStore {
            inner: Arc::new(Inner {
                pool,
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
}

/// Creates the table and its indexes when missing, and moves a table an
/// older version created to the current layout, in one transaction.
async fn setup(
    client: &mut Object,
    table: &str,
    sql: &Statements,
) -> std::result::Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Stores starting at once on one table take turns: `CREATE ... IF NOT
    // EXISTS` is not safe against itself, and a migration must run once.
    // The lock ends with the transaction.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("kvtower:{table}")],
    )
    .await?;
    tx.batch_execute(&sql.create).await?;
    // The expiry index used to be `{table}_expires_at`, a name another
    // kvtower table may need: drop it when it is this table's (its
    // replacement exists now). The name comes from the catalog, quoted by
    // the server.
    let legacy = tx
        .query_opt(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(i.relname) \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_namespace n ON n.oid = i.relnamespace \
             WHERE x.indrelid = to_regclass($1) AND i.relname = $2",
            &[&format!("\"{table}\""), &sql::legacy_expiry_index(table)],
        )
        .await?;
    if let Some(row) = legacy {
        let name: String = row.try_get(0)?;
        tx.batch_execute(&format!("DROP INDEX {name}")).await?;
    }
    tx.commit().await
}

/// Sweeps every `every` while the store lives: the task holds a `Weak`, so it
/// ends at the first tick after the last handle is dropped.
fn spawn_sweeper(store: Weak<Inner>, every: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("kvtower: no Tokio runtime, expired Postgres rows are not swept");
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        loop {
            tick.tick().await;
            let Some(inner) = store.upgrade() else { return };
            if let Err(e) = sweep_all(&inner).await {
                tracing::warn!(error = %e, "kvtower: sweeping expired Postgres rows failed");
            }
        }
    });
}

async fn sweep_all(inner: &Inner) -> Result<u64> {
    let client = inner.client("sweep").await?;
    let stmt = prepare(&client, &inner.sql.sweep, "sweep").await?;
    let batch = i64::try_from(sql::SWEEP_BATCH).unwrap_or(i64::MAX);
    let mut total = 0;
    loop {
        let deleted = client
            .execute(&stmt, &[&batch])
            .await
            .map_err(|e| pg_error(e, "sweep"))?;
        total += deleted;
        if deleted < sql::SWEEP_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// The SQL of one table, built once from the validated name.
struct Statements {
    create: String,
    get: String,
    upsert: String,
    delete: String,
    cas_select: String,
    cas_insert: String,
    cas_update: String,
    list: String,
    get_many: String,
    set_many: String,
    delete_many: String,
    sweep: String,
}

/// Now, in ms since the epoch, on the server's clock (fixed per statement).
const NOW: &str = "(extract(epoch from statement_timestamp()) * 1000)::bigint";

impl Statements {
    fn new(table: &str) -> Self {
        // `table` is validated: an identifier without quotes, safe to quote.
        let t = format!("\"{table}\"");
        let live = format!("(expires_at IS NULL OR expires_at > {NOW})");
        let index = sql::expiry_index(table);
        let upsert_tail = "ON CONFLICT (key) DO UPDATE \
                           SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at";
        Self {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 key bytea PRIMARY KEY, value json NOT NULL, expires_at bigint);\
                 CREATE INDEX IF NOT EXISTS \"{index}\" ON {t} (expires_at) \
                 WHERE expires_at IS NOT NULL;"
            ),
            get: format!("SELECT value::text FROM {t} WHERE key = $1 AND {live}"),
            // `NOW + NULL` is NULL: no TTL, never expires.
            upsert: format!(
                "INSERT INTO {t} (key, value, expires_at) \
                 VALUES ($1, $2::text::json, {NOW} + $3::bigint) {upsert_tail}"
            ),
            delete: format!("DELETE FROM {t} WHERE key = $1"),
            cas_select: format!(
                "SELECT value::text, {live} FROM {t} WHERE key = $1 FOR UPDATE"
            ),
            cas_insert: format!(
                "INSERT INTO {t} (key, value, expires_at) \
                 VALUES ($1, $2::text::json, {NOW} + $3::bigint) ON CONFLICT (key) DO NOTHING"
            ),
            cas_update: format!(
                "UPDATE {t} SET value = $2::text::json, expires_at = {NOW} + $3::bigint \
                 WHERE key = $1"
            ),
            list: format!(
                "SELECT key, value::text FROM {t} \
                 WHERE key >= $1 AND key < $2 AND {live} ORDER BY key LIMIT $3"
            ),
            get_many: format!("SELECT key, value::text FROM {t} WHERE key = ANY($1) AND {live}"),
            set_many: format!(
                "INSERT INTO {t} (key, value, expires_at) \
                 SELECT k, v::json, {NOW} + $3::bigint FROM unnest($1::bytea[], $2::text[]) AS u(k, v) \
                 {upsert_tail}"
            ),
            delete_many: format!("DELETE FROM {t} WHERE key = ANY($1)"),
            sweep: format!(
                "DELETE FROM {t} WHERE key IN \
                 (SELECT key FROM {t} WHERE expires_at <= {NOW} LIMIT $1)"
            ),
        }
    }
}

/// Maps a tokio-postgres error: lost connections are `Unavailable`,
/// serialization failures and deadlocks retryable `Backend` errors.
fn pg_error(err: tokio_postgres::Error, operation: &'static str) -> Error {
    let (kind, retryable) = if let Some(db) = err.as_db_error() {
        let code = db.code();
        let retryable = *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS;
        let kind = if *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
            ErrorKind::ValueTooLarge
        } else if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CANNOT_CONNECT_NOW {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Backend
        };
        (kind, retryable)
    } else if err.is_closed()
        || std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>())
    {
        (ErrorKind::Unavailable, true)
    } else {
        (ErrorKind::Backend, false)
    };
    Error::new(kind, format!("postgres: {err}"))
        .with_source(err)
        .with_operation(operation)
        .with_retryable(retryable)
}

fn pool_error(err: PoolError, operation: &'static str) -> Error {
    match err {
        PoolError::Backend(e) => pg_error(e, operation),
        PoolError::Timeout(_) => Error::new(ErrorKind::Timeout, format!("postgres pool: {err}"))
            .with_operation(operation),
        other => Error::new(ErrorKind::Unavailable, format!("postgres pool: {other}"))
            .with_source(other)
            .with_operation(operation),
    }
}

async fn prepare(
    client: &Object,
    query: &str,
    operation: &'static str,
) -> Result<tokio_postgres::Statement> {
    client
        .prepare_cached(query)
        .await
        .map_err(|e| pg_error(e, operation))
}

/// Reads a `(key, value::text)` row of a listing.
fn entry(row: &tokio_postgres::Row, operation: &'static str) -> Result<(Vec<u8>, Result<KvEntry>)> {
    let enc: Vec<u8> = row.try_get(0).map_err(|e| pg_error(e, operation))?;
    let entry = decode_key(&enc)
        .map_err(|e| e.with_operation(operation))
        .and_then(|key| {
            let text: &str = row.try_get(1).map_err(|e| pg_error(e, operation))?;
            let value = parse_value(text, &key, operation)?;
            Ok(KvEntry { key, value })
        });
    Ok((enc, entry))
}

impl Inner {
    async fn client(&self, operation: &'static str) -> Result<Object> {
        self.pool.get().await.map_err(|e| pool_error(e, operation))
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

    async fn list_page(
        &self,
        start: Vec<u8>,
        end: &[u8],
    ) -> Result<(Vec<Result<KvEntry>>, Option<Vec<u8>>)> {
        let client = self.inner.client("list").await?;
        let stmt = prepare(&client, &self.inner.sql.list, "list").await?;
        let limit = i64::try_from(sql::LIST_PAGE).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&start, &end, &limit])
            .await
            .map_err(|e| pg_error(e, "list"))?;
        let full = rows.len() == sql::LIST_PAGE;
        let mut entries = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let (enc, entry) = entry(row, "list")?;
            entries.push(entry);
            last = Some(enc);
        }
        let next = match last {
            Some(last) if full => Some(after(last)),
            _ => None,
        };
        Ok((entries, next))
    }

    async fn cas_inner(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let sql = &self.inner.sql;
        let mut client = self.inner.client("cas").await?;
        let select = prepare(&client, &sql.cas_select, "cas").await?;
        let tx = client.transaction().await.map_err(|e| pg_error(e, "cas"))?;
        let enc = encode_key(key);
        let new_text = match new {
            Some(value) if !options.is_expired() => Some(value_text(&value)),
            _ => None,
        };
        let ttl = ttl_ms(options.ttl);
        for _ in 0..CAS_ROUNDS {
            // Read committed: each statement sees the latest committed rows,
            // and FOR UPDATE holds the row until commit, so no writer can
            // change it between this comparison and the write below.
            let row = tx
                .query_opt(&select, &[&enc])
                .await
                .map_err(|e| pg_error(e, "cas"))?;
            let current = match &row {
                Some(row) => {
                    let live: bool = row.try_get(1).map_err(|e| pg_error(e, "cas"))?;
                    if live {
                        let text: &str = row.try_get(0).map_err(|e| pg_error(e, "cas"))?;
                        Some(parse_value(text, key, "cas")?)
                    } else {
                        None
                    }
                }
                None => None,
            };
            // serde_json's equality is structural: objects compare as maps.
            if current.as_ref() != expected {
                return Ok(false); // dropping the transaction rolls back
            }
            match (&new_text, row.is_some()) {
                (Some(text), true) => {
                    let stmt = tx
                        .prepare_cached(&sql.cas_update)
                        .await
                        .map_err(|e| pg_error(e, "cas"))?;
                    tx.execute(&stmt, &[&enc, text, &ttl])
                        .await
                        .map_err(|e| pg_error(e, "cas"))?;
                }
                (Some(text), false) => {
                    let stmt = tx
                        .prepare_cached(&sql.cas_insert)
                        .await
                        .map_err(|e| pg_error(e, "cas"))?;
                    let inserted = tx
                        .execute(&stmt, &[&enc, text, &ttl])
                        .await
                        .map_err(|e| pg_error(e, "cas"))?;
                    if inserted == 0 {
                        // Another writer inserted the key after our SELECT
                        // (and committed: ON CONFLICT waited for it). Read
                        // and lock its row, and compare again.
                        continue;
                    }
                }
                (None, true) => {
                    let stmt = tx
                        .prepare_cached(&sql.delete)
                        .await
                        .map_err(|e| pg_error(e, "cas"))?;
                    tx.execute(&stmt, &[&enc])
                        .await
                        .map_err(|e| pg_error(e, "cas"))?;
                }
                (None, false) => {}
            }
            tx.commit().await.map_err(|e| pg_error(e, "cas"))?;
            return Ok(true);
        }
        Err(Error::new(
            ErrorKind::Backend,
            "cas lost too many insert races in a row",
        )
        .with_operation("cas")
        .with_retryable(true))
    }
}

#[async_trait]
impl KvStore for PostgresKvStore {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.get(key).await.map_err(|e| e.with_key(key));
        }
        let with_key = |e: Error| e.with_key(key);
        let client = self.inner.client("get").await.map_err(with_key)?;
        let stmt = prepare(&client, &self.inner.sql.get, "get")
            .await
            .map_err(with_key)?;
        let row = client
            .query_opt(&stmt, &[&encode_key(key)])
            .await
            .map_err(|e| pg_error(e, "get").with_key(key))?;
        match row {
            Some(row) => {
                let text: &str = row
                    .try_get(0)
                    .map_err(|e| pg_error(e, "get").with_key(key))?;
                parse_value(text, key, "get").map(Some)
            }
            None => Ok(None),
        }
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let value = checked(value).map_err(|e| e.with_operation("set").with_key(key))?;
        if let Some(fedify) = &self.inner.fedify {
            return fedify
                .set(key, value, options)
                .await
                .map_err(|e| e.with_key(key));
        }
        if options.is_expired() {
            return self.delete(key).await;
        }
        let with_key = |e: Error| e.with_key(key);
        let client = self.inner.client("set").await.map_err(with_key)?;
        let stmt = prepare(&client, &self.inner.sql.upsert, "set")
            .await
            .map_err(with_key)?;
        client
            .execute(
                &stmt,
                &[&encode_key(key), &value_text(&value), &ttl_ms(options.ttl)],
            )
            .await
            .map_err(|e| pg_error(e, "set").with_key(key))?;
        Ok(())
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.delete(key).await.map_err(|e| e.with_key(key));
        }
        let with_key = |e: Error| e.with_key(key);
        let client = self.inner.client("delete").await.map_err(with_key)?;
        let stmt = prepare(&client, &self.inner.sql.delete, "delete")
            .await
            .map_err(with_key)?;
        client
            .execute(&stmt, &[&encode_key(key)])
            .await
            .map_err(|e| pg_error(e, "delete").with_key(key))?;
        Ok(())
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let new = checked_cas(expected, new).map_err(|e| e.with_operation("cas").with_key(key))?;
        if let Some(fedify) = &self.inner.fedify {
            return fedify
                .cas(key, expected, new, options)
                .await
                .map_err(|e| e.with_key(key));
        }
        self.cas_inner(key, expected, new, options)
            .await
            .map_err(|e| e.with_key(key))
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.list(prefix);
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
        .boxed()
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.get_many(keys).await;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let encoded: Vec<Vec<u8>> = keys.iter().map(encode_key).collect();
        let client = self.inner.client("get_many").await?;
        let stmt = prepare(&client, &self.inner.sql.get_many, "get_many").await?;
        let rows = client
            .query(&stmt, &[&encoded])
            .await
            .map_err(|e| pg_error(e, "get_many"))?;
        let mut found: HashMap<Vec<u8>, &str> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let enc: Vec<u8> = row.try_get(0).map_err(|e| pg_error(e, "get_many"))?;
            let text: &str = row.try_get(1).map_err(|e| pg_error(e, "get_many"))?;
            found.insert(enc, text);
        }
        keys.iter()
            .zip(&encoded)
            .map(|(key, enc)| match found.get(enc) {
                Some(text) => parse_value(text, key, "get_many").map(Some),
                None => Ok(None),
            })
            .collect()
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        // One nesting limit for every layout: check before handing off.
        let entries = checked_entries(entries).map_err(|e| e.with_operation("set_many"))?;
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
        let client = self.inner.client("set_many").await?;
        let stmt = prepare(&client, &self.inner.sql.set_many, "set_many").await?;
        client
            .execute(&stmt, &[&encoded, &texts, &ttl_ms(options.ttl)])
            .await
            .map_err(|e| pg_error(e, "set_many"))?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.delete_many(keys).await;
        }
        if keys.is_empty() {
            return Ok(());
        }
        let encoded: Vec<Vec<u8>> = keys.iter().map(encode_key).collect();
        let client = self.inner.client("delete_many").await?;
        let stmt = prepare(&client, &self.inner.sql.delete_many, "delete_many").await?;
        client
            .execute(&stmt, &[&encoded])
            .await
            .map_err(|e| pg_error(e, "delete_many"))?;
        Ok(())
    }

    // The trait's default get_with_ttl: the remaining lifetime is not read yet.
    fn capabilities(&self) -> Capabilities {
        if self.inner.fedify.is_some() {
            // text and jsonb cannot hold U+0000.
            return Capabilities::full()
                .with_reports_ttl(false)
                .with_nul_in_text(false);
        }
        Capabilities::full().with_reports_ttl(false)
    }
}
