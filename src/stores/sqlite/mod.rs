//! [`SqliteKvStore`]: a persistent store in one SQLite file (feature
//! `sqlite`, on by default), with SQLite itself compiled in (rusqlite's
//! `bundled`): no server and no system library.
//!
//! ```
//! use kvtower::{kvkey, KvStore, SetOptions, SqliteKvStore};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("kvtower-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("cache.db");
//! let store = SqliteKvStore::open(&path).await?;
//! store.set(&kvkey!["user", "42"], json!({"name": "Ada"}), SetOptions::default()).await?;
//! drop(store);
//!
//! // The data survives the process: reopen the file and it is there.
//! let store = SqliteKvStore::open(&path).await?;
//! assert_eq!(store.get(&kvkey!["user", "42"]).await?, Some(json!({"name": "Ada"})));
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! * One write connection, owned by a dedicated thread that runs the store's
//!   writes in order: blocking SQLite calls never run on the async executor,
//!   and since every write of this store goes through that one connection,
//!   each (a `cas`, a batch) is atomic with respect to the others. `cas` and
//!   the batch writes also run in a transaction (`BEGIN IMMEDIATE` for `cas`),
//!   so they stay atomic against other processes using the same file.
//! * Reads (`get`, `get_many`, `list`) of a database file run on their own
//!   connections, each on its own thread
//!   ([`SqliteKvStoreBuilder::read_connections`], 2 by default): in WAL mode a
//!   read needs no lock, so reads keep answering while a write waits for
//!   another process's write lock (up to the 5 s busy timeout). A read starts
//!   after the writes that returned before it and sees them. A private
//!   in-memory database has one connection for everything.
//! * The database is in WAL mode with `synchronous = NORMAL`: a committed
//!   write survives a crash of the process; the last transactions may be lost
//!   on a power failure (use [`SqliteKvStoreBuilder::synchronous_full`] to
//!   sync on every commit).
//! * Table `kvtower` by default (see [`SqliteKvStoreBuilder::table`]), created
//!   when missing: `k BLOB PRIMARY KEY, v TEXT, expires_at INTEGER`
//!   (`WITHOUT ROWID`). Keys are stored in an order- and prefix-preserving
//!   encoding, so that `list(prefix)` is one range scan of the primary key;
//!   values are JSON text; `expires_at` is in milliseconds since the Unix
//!   epoch (`NULL`: never), checked by every read, listing and `cas`. The
//!   partial index on `expires_at` is named `"{table}.expires_at"`, a name no
//!   table can have, so any two valid table names share a file.
//! * Expired rows are invisible at once and deleted by a periodic sweep on the
//!   store's thread (every minute by default, at most 1,000 rows per
//!   statement), or on demand with [`SqliteKvStore::sweep_expired`].
//! * A value that is not valid JSON (written by another program) is an
//!   [`InvalidValue`](crate::ErrorKind::InvalidValue) error for that key.
//!
//! A store handle is cheap to clone; clones share the connections. The
//! threads end, and the connections close, when the last clone is dropped.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, TransactionBehavior};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, Value};
use crate::stores::layout::Layout;
use crate::stores::sql::{
    self, encode_key, expires_at, now_ms, parse_value, prefix_range, value_text,
};
use crate::value::{checked, checked_cas, checked_entries};

mod connection;
mod error;
mod fedify;
mod list;
mod schema;

use self::connection::{
    connect, connect_reader, serve, serve_reads, spawn_connection, sweep_batch, wait_opened, Job,
};
use self::error::{closed, sqlite_error};
use self::schema::Statements;

/// The number of read connections of a database file by default.
pub const DEFAULT_READ_CONNECTIONS: usize = 2;

/// A persistent key–value store in a SQLite database file.
///
/// Cheap to clone: clones share the connections and their threads.
///
/// ```
/// use kvtower::{kvkey, KvStore, SetOptions, SqliteKvStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let store = SqliteKvStore::memory().await?; // a private in-memory database
/// store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
/// assert_eq!(store.get(&kvkey!["a"]).await?, Some(1.into()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteKvStore {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// The write connection's queue.
    jobs: Option<mpsc::Sender<Job>>,
    /// The read connections' shared queue; `None` when reads go to the write
    /// connection (an in-memory database, or no read connections).
    reads: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    table: String,
    path: Option<PathBuf>,
    /// `Some` in [`Layout::Fedify`]: every call goes there (with its own
    /// connection thread; `jobs` and `thread` are then `None`).
    fedify: Option<fedify::FedifySqlite>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has run the queued
        // jobs; joining it means the connection is closed (and the WAL
        // checkpointed) when the last handle is gone, so that the file can be
        // reopened or copied right away.
        self.jobs.take();
        self.reads.take();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl std::fmt::Debug for SqliteKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKvStore")
            .field("path", &self.inner.path)
            .field("table", &self.inner.table)
            .field("layout", &self.layout())
            .finish()
    }
}

/// Options of a [`SqliteKvStore`], from [`SqliteKvStore::builder`].
///
/// ```
/// use kvtower::SqliteKvStore;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let store = SqliteKvStore::builder()
///     .table("sessions")
///     .sweep_interval(Duration::from_secs(10))
///     .memory()
///     .await?;
/// assert_eq!(store.table(), "sessions");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteKvStoreBuilder {
    /// `None`: the layout's default table.
    table: Option<String>,
    layout: Layout,
    sweep_interval: Option<Duration>,
    synchronous_full: bool,
    read_connections: usize,
}

impl SqliteKvStoreBuilder {
    /// The table to use (default `kvtower`, or `fedify_kv` in
    /// [`Layout::Fedify`]): a letter or `_`, then up to 62 letters, digits
    /// or `_`. Any other name is a [`Config`](ErrorKind::Config) error when
    /// the store opens; the name is never spliced into SQL unchecked.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = Some(name.into());
        self
    }

    /// The data format (default [`Layout::Kvtower`]). [`Layout::Fedify`]
    /// reads and writes the table of `@fedify/sqlite`'s `SqliteKvStore`, so a
    /// Fedify server can open the same file:
    ///
    /// * table `fedify_kv` (unless [`table`](Self::table) says otherwise),
    ///   created when missing with Fedify's own DDL;
    /// * `key` the JSON text of the parts, exactly as `JSON.stringify`
    ///   writes it; `value` JSON text; `expires` in ms since the epoch;
    /// * `list` matches the prefix part-wise and literally (Fedify's own
    ///   `list` treats `%` and `_` in a prefix as `LIKE` wildcards).
    ///
    /// Checked against `@fedify/sqlite` 1.8.7 and 2.0.0-dev.279 by
    /// `tests/fedify_interop.rs`.
    ///
    /// ```
    /// use kvtower::{kvkey, KvStore, SetOptions, SqliteKvStore};
    /// use kvtower::stores::Layout;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = SqliteKvStore::builder().layout(Layout::Fedify).memory().await?;
    /// store.set(&kvkey!["_fedify", "a:b"], 1.into(), SetOptions::default()).await?;
    /// assert_eq!(store.table(), "fedify_kv");
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

    /// How often the store's thread deletes expired rows (default one
    /// minute). Expired rows are invisible either way; the sweep keeps the
    /// file from growing.
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = Some(every);
        self
    }

    /// Never sweep in the background; call
    /// [`SqliteKvStore::sweep_expired`] yourself.
    pub fn no_sweep(mut self) -> Self {
        self.sweep_interval = None;
        self
    }

    /// `synchronous = FULL`: sync the WAL on every commit, so that committed
    /// writes also survive a power failure (slower writes).
    pub fn synchronous_full(mut self) -> Self {
        self.synchronous_full = true;
        self
    }

    /// How many connections of a database file serve reads (default
    /// [`DEFAULT_READ_CONNECTIONS`]), each on its own thread; `0` runs reads
    /// on the write connection, in line with the writes. An in-memory
    /// database always has only the one connection.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("kvtower-doc-rc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let store = kvtower::SqliteKvStore::builder()
    ///     .read_connections(4)
    ///     .open(dir.join("cache.db"))
    ///     .await?;
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_connections(mut self, n: usize) -> Self {
        self.read_connections = n;
        self
    }

    /// Opens (or creates) the database file at `path`.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for an invalid table name;
    /// [`Unavailable`](ErrorKind::Unavailable) when the file cannot be opened;
    /// [`Backend`](ErrorKind::Backend) when it is not a database or the table
    /// cannot be created.
    pub async fn open(self, path: impl AsRef<Path>) -> Result<SqliteKvStore> {
        self.start(Some(path.as_ref().to_path_buf())).await
    }

    /// Opens a private in-memory database, gone when the store is dropped.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for an invalid table name.
    pub async fn memory(self) -> Result<SqliteKvStore> {
        self.start(None).await
    }

    async fn start(self, path: Option<PathBuf>) -> Result<SqliteKvStore> {
        async {
            let table = self.table.clone().unwrap_or_else(|| {
                match self.layout {
                    Layout::Fedify => fedify::DEFAULT_TABLE,
                    _ => sql::DEFAULT_TABLE,
                }
                .to_owned()
            });
            sql::validate_table(&table)?;
            let synchronous = if self.synchronous_full {
                "FULL"
            } else {
                "NORMAL"
            };
            if self.layout == Layout::Fedify {
                let store = fedify::FedifySqlite::start(
                    path.clone(),
                    &table,
                    synchronous,
                    self.sweep_interval,
                )
                .await?;
                return Ok(SqliteKvStore {
                    inner: Arc::new(Inner {
                        jobs: None,
                        reads: None,
                        threads: Vec::new(),
                        table,
                        path,
                        fedify: Some(store),
                    }),
                });
            }
            let (jobs, receiver) = mpsc::channel::<Job>();
            let sweep_interval = self.sweep_interval;
            let mut inner = Inner {
                jobs: Some(jobs),
                reads: None,
                threads: Vec::new(),
                table,
                path,
                fedify: None,
            };
            // From here on, dropping `inner` on an error closes the queues and
            // joins the threads started so far.
            let writer_path = inner.path.clone();
            let table = inner.table.clone();
            let (thread, opened) = spawn_connection(
                format!("kvtower-sqlite-{}", inner.table),
                move || {
                    let statements = Statements::new(&table);
                    let conn = connect(writer_path.as_deref(), synchronous, &statements)?;
                    Ok((conn, statements))
                },
                move |conn, statements| serve(conn, statements, receiver, sweep_interval),
            )?;
            inner.threads.push(thread);
            wait_opened(opened).await?;

            // The readers open the file after the writer has created the table
            // and switched the file to WAL.
            if let Some(path) = inner.path.clone().filter(|_| self.read_connections > 0) {
                let (reads, receiver) = mpsc::channel::<Job>();
                let receiver = Arc::new(Mutex::new(receiver));
                inner.reads = Some(reads);
                let mut pending = Vec::with_capacity(self.read_connections);
                for i in 0..self.read_connections {
                    let (path, table, receiver) =
                        (path.clone(), inner.table.clone(), receiver.clone());
                    let (thread, opened) = spawn_connection(
                        format!("kvtower-sqlite-{}-read-{i}", inner.table),
                        move || Ok((connect_reader(&path)?, Statements::new(&table))),
                        move |conn, statements| serve_reads(conn, statements, &receiver),
                    )?;
                    inner.threads.push(thread);
                    pending.push(opened);
                }
                for opened in pending {
                    wait_opened(opened).await?;
                }
            }
            Ok(SqliteKvStore {
                inner: Arc::new(inner),
            })
        }
        .await
        .op(Operation::Connect)
    }
}

/// Reads column `i` as a stored value; anything but valid JSON text is an
/// [`InvalidValue`](ErrorKind::InvalidValue) error for `key`.
fn read_value(
    row: &rusqlite::Row<'_>,
    i: usize,
    key: &KvKey,
    operation: Operation,
) -> Result<Value> {
    match row.get_ref(i).map_err(sqlite_error)? {
        ValueRef::Text(text) => text_value(text, key, operation),
        other => Err(Error::new(
            ErrorKind::InvalidValue,
            format!(
                "stored value is a SQLite {} instead of JSON text",
                other.data_type()
            ),
        )
        .with_operation(operation)
        .with_key(key)),
    }
}

/// The value (column 0) and remaining lifetime (column 1: the expiry in ms
/// since the epoch, `NULL` for none) of a live row read at `now`: one query
/// gives both, so `get_with_ttl` costs what `get` does.
pub(crate) fn live_row(
    row: &rusqlite::Row<'_>,
    key: &KvKey,
    now: i64,
    operation: Operation,
) -> Result<(Value, Option<Duration>)> {
    let value = read_value(row, 0, key, operation)?;
    let expires: Option<i64> = row.get(1).map_err(sqlite_error)?;
    Ok((value, sql::remaining(expires, now)))
}

/// The value of a stored `TEXT` cell: its bytes are whatever another program
/// wrote, so neither UTF-8 nor JSON is assumed.
pub(crate) fn text_value(text: &[u8], key: &KvKey, operation: Operation) -> Result<Value> {
    match std::str::from_utf8(text) {
        Ok(text) => parse_value(text, key, operation),
        Err(e) => Err(
            Error::new(ErrorKind::InvalidValue, "stored value is not UTF-8 text")
                .with_source(e)
                .with_operation(operation)
                .with_key(key),
        ),
    }
}

fn get_live(
    conn: &Connection,
    statements: &Statements,
    key: &KvKey,
    enc: &[u8],
    now: i64,
    operation: Operation,
) -> Result<Option<(Value, Option<Duration>)>> {
    let mut stmt = conn.prepare_cached(&statements.get).map_err(sqlite_error)?;
    let mut rows = stmt.query(params![enc, now]).map_err(sqlite_error)?;
    match rows.next().map_err(sqlite_error)? {
        Some(row) => live_row(row, key, now, operation).map(Some),
        None => Ok(None),
    }
}

/// Writes `value` under `enc`, or deletes it (`None`, or a TTL of zero).
fn write(
    conn: &Connection,
    statements: &Statements,
    enc: &[u8],
    value: Option<&str>,
    options: SetOptions,
    now: i64,
) -> Result<()> {
    let result = match value {
        Some(text) if !options.is_expired() => conn
            .prepare_cached(&statements.upsert)
            .and_then(|mut s| s.execute(params![enc, text, expires_at(now, options.ttl)])),
        _ => conn
            .prepare_cached(&statements.delete)
            .and_then(|mut s| s.execute(params![enc])),
    };
    result.map(|_| ()).map_err(sqlite_error)
}

impl Default for SqliteKvStoreBuilder {
    fn default() -> Self {
        Self {
            table: None,
            layout: Layout::Kvtower,
            sweep_interval: Some(sql::DEFAULT_SWEEP_INTERVAL),
            synchronous_full: false,
            read_connections: DEFAULT_READ_CONNECTIONS,
        }
    }
}

impl SqliteKvStore {
    /// Opens (or creates) the database file at `path`, with the default
    /// options (table `kvtower`, a sweep every minute).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = kvtower::SqliteKvStore::open("cache.db").await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// See [`SqliteKvStoreBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().open(path).await
    }

    /// A private in-memory database, with the default options.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = kvtower::SqliteKvStore::memory().await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// See [`SqliteKvStoreBuilder::memory`].
    pub async fn memory() -> Result<Self> {
        Self::builder().memory().await
    }

    /// A builder for the table name, sweep interval and durability.
    pub fn builder() -> SqliteKvStoreBuilder {
        SqliteKvStoreBuilder::default()
    }

    /// The table this store uses.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// assert_eq!(kvtower::SqliteKvStore::memory().await?.table(), "kvtower");
    /// # Ok(())
    /// # }
    /// ```
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// The data format this store reads and writes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = kvtower::SqliteKvStore::memory().await?;
    /// assert_eq!(store.layout(), kvtower::stores::Layout::Kvtower);
    /// # Ok(())
    /// # }
    /// ```
    pub fn layout(&self) -> Layout {
        if self.inner.fedify.is_some() {
            Layout::Fedify
        } else {
            Layout::Kvtower
        }
    }

    /// Deletes every expired row now and returns how many it deleted. The
    /// background sweep does the same periodically.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = kvtower::SqliteKvStore::memory().await?;
    /// assert_eq!(store.sweep_expired().await?, 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`Backend`](ErrorKind::Backend) error from SQLite.
    pub async fn sweep_expired(&self) -> Result<u64> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.sweep_expired().await;
        }
        self.run(Operation::Sweep, |conn, statements| {
            let mut total = 0u64;
            loop {
                let deleted = sweep_batch(conn, statements)?;
                total += deleted as u64;
                if deleted < sql::SWEEP_BATCH {
                    return Ok(total);
                }
            }
        })
        .await
    }

    /// `get` and `get_with_ttl`: the value and its remaining lifetime, in one
    /// query.
    async fn read_one(
        &self,
        key: &KvKey,
        operation: Operation,
    ) -> Result<Option<(Value, Option<Duration>)>> {
        if let Some(fedify) = &self.inner.fedify {
            return fedify.get(key, operation).await;
        }
        let owned = key.clone();
        self.read(operation, move |conn, statements| {
            get_live(
                conn,
                statements,
                &owned,
                &encode_key(&owned),
                now_ms(),
                operation,
            )
        })
        .await
    }

    /// `get_many` and `get_many_with_ttl`, from one read snapshot.
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
        let keys = keys.to_vec();
        self.read(operation, move |conn, statements| {
            // One read transaction: every value from the same snapshot.
            let tx = conn.transaction().map_err(sqlite_error)?;
            let now = now_ms();
            let values = keys
                .iter()
                .map(|key| get_live(&tx, statements, key, &encode_key(key), now, operation))
                .collect::<Result<Vec<_>>>()?;
            tx.commit().map_err(sqlite_error)?;
            Ok(values)
        })
        .await
    }
}

#[async_trait]
impl KvStore for SqliteKvStore {
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
            let enc = encode_key(key);
            let text = value_text(&value);
            self.run(Operation::Set, move |conn, statements| {
                write(conn, statements, &enc, Some(&text), options, now_ms())
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
            self.run(Operation::Delete, move |conn, statements| {
                write(conn, statements, &enc, None, SetOptions::default(), 0)
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
            let owned = key.clone();
            let expected = expected.cloned();
            let new = new.map(|v| value_text(&v));
            self.run(Operation::Cas, move |conn, statements| {
                // The connection thread already serializes this store's jobs;
                // BEGIN IMMEDIATE takes the write lock up front so that another
                // process cannot write between the read and the write either.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sqlite_error)?;
                let enc = encode_key(&owned);
                let now = now_ms();
                let current =
                    get_live(&tx, statements, &owned, &enc, now, Operation::Cas)?.map(|(v, _)| v);
                // serde_json's equality is structural: objects compare as maps.
                if current != expected {
                    return Ok(false);
                }
                write(&tx, statements, &enc, new.as_deref(), options, now)?;
                tx.commit().map_err(sqlite_error)?;
                Ok(true)
            })
            .await
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
        // Keyset pagination: each page is one short query, the next starts
        // just after the last key seen, so no entry is listed twice and no
        // transaction is held open while the caller consumes the stream.
        let (start, end) = prefix_range(prefix.as_ref());
        stream::unfold(Some(start), move |start| {
            let end = end.clone();
            async move {
                let page = self.list_page(start?, end).await;
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
            let rows: Vec<(Vec<u8>, String)> = entries
                .iter()
                .map(|(key, value)| (encode_key(key), value_text(value)))
                .collect();
            self.run(Operation::SetMany, move |conn, statements| {
                // One transaction: all or nothing, and one commit (one fsync)
                // instead of one per entry. In order, so the last duplicate wins.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sqlite_error)?;
                let now = now_ms();
                for (enc, text) in &rows {
                    write(&tx, statements, enc, Some(text), options, now)?;
                }
                tx.commit().map_err(sqlite_error)
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
            self.run(Operation::DeleteMany, move |conn, statements| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sqlite_error)?;
                for enc in &encoded {
                    write(&tx, statements, enc, None, SetOptions::default(), 0)?;
                }
                tx.commit().map_err(sqlite_error)
            })
            .await
        }
        .await
        .op(Operation::DeleteMany)
    }

    // get_with_ttl reads the expiry column with the value.
    fn capabilities(&self) -> Capabilities {
        Capabilities::full()
    }
}
