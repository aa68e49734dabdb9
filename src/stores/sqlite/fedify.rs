//! [`Layout::Fedify`](crate::stores::Layout::Fedify) for
//! [`SqliteKvStore`](super::SqliteKvStore): the table `@fedify/sqlite`'s
//! `SqliteKvStore` reads and writes (checked against 1.8.7 and
//! 2.0.0-dev.279, the versions the npm registry serves).
//!
//! * Table `fedify_kv` (see [`table`](super::SqliteKvStoreBuilder::table)),
//!   created when missing exactly as Fedify creates it: `key TEXT PRIMARY
//!   KEY, value TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER`,
//!   plus the index `idx_<table>_expires`.
//! * `key` is `JSON.stringify` of the parts (`["user","42"]`), which is
//!   byte for byte what serde_json writes for an array of strings: both
//!   escape `"`, `\` and the control characters the same way (`\b`, `\f`,
//!   `\n`, `\r`, `\t`, else `\u00xx` in lower case) and write everything
//!   else, non-ASCII included, as it is. A lookup is one primary-key probe.
//! * `value` is JSON text; `created` and `expires` are milliseconds since
//!   the Unix epoch on the writer's clock (`expires` `NULL`: never). Like
//!   Fedify, an overwrite keeps `created` and replaces `expires`; a TTL is
//!   rounded up to a whole millisecond (Fedify writes a fractional one as a
//!   real number; both compare the same way).
//! * `list(prefix)` matches part-wise and literally: it is a range scan of
//!   the primary key over the text that starts with the prefix's JSON minus
//!   its closing `]` plus `,`, and the prefix's own key. (Fedify's `list`,
//!   from 2.0 on, uses `LIKE` without escaping `%` and `_`, so a prefix
//!   holding them can list keys that do not start with it.)
//! * Expired rows are invisible at once and swept like kvtower's own table.
//!
//! A key whose parts hold a lone surrogate cannot come from Rust (a `String`
//! is UTF-8); Fedify writes one as a `\udxxx` escape, which kvtower reports
//! as an [`InvalidKey`](ErrorKind::InvalidKey) error in a listing.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream, StreamExt};
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::{closed, live_row, read_value, sqlite_error};
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{KvEntry, SetOptions, Value};
use crate::stores::sql::{self, expires_at, now_ms, value_text};

/// The table Fedify's `SqliteKvStore` uses by default.
pub(crate) const DEFAULT_TABLE: &str = "fedify_kv";

/// A job for the connection thread.
type Job = Box<dyn FnOnce(&mut Connection, &Statements) + Send>;

/// The Fedify-layout half of a [`SqliteKvStore`](super::SqliteKvStore): its
/// own connection thread, like the kvtower layout's.
pub(super) struct FedifySqlite {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FedifySqlite {
    fn drop(&mut self) {
        // As for the kvtower layout: closing the channel ends the thread
        // after the queued jobs, and joining it closes the connection before
        // the last handle is gone, so the file can be reopened at once (by
        // Fedify too).
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The JSON text of a key's parts: Fedify's `JSON.stringify(key)`.
pub(crate) fn key_text(key: &KvKey) -> String {
    // Serializing strings cannot fail.
    serde_json::to_string(key.parts()).unwrap_or_default()
}

/// The key whose JSON text is `text`; an [`InvalidKey`](ErrorKind::InvalidKey)
/// error for anything but a non-empty array of strings.
pub(crate) fn parse_key_text(text: &str) -> Result<KvKey> {
    let parts: Vec<String> = serde_json::from_str(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidKey,
            "stored key is not a JSON array of strings",
        )
        .with_source(e)
    })?;
    KvKey::new(parts)
}

/// `(exact, low, high)`: the rows under `prefix` are the key `exact` and
/// the keys in `[low, high)`. A key under the prefix extends its JSON text
/// `["a","b"]` as `["a","b",...`, so it starts with `["a","b",`; `,` + 1 is
/// `-`, the least text above every such key.
fn prefix_bounds(prefix: &KvKey) -> (String, String, String) {
    let exact = key_text(prefix);
    let open = &exact[..exact.len() - 1];
    (exact.clone(), format!("{open},"), format!("{open}-"))
}

/// The SQL of one table, built once from the validated name.
struct Statements {
    create: String,
    get: String,
    upsert: String,
    delete: String,
    list_all: String,
    list_prefix: String,
    sweep: String,
}

impl Statements {
    fn new(table: &str) -> Self {
        // `table` is validated: an identifier without quotes, safe to quote.
        let t = format!("\"{table}\"");
        const LIVE: &str = "(expires IS NULL OR expires > ?2)";
        Self {
            // Fedify's own DDL, so either program may create the table.
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 key TEXT PRIMARY KEY, value TEXT NOT NULL, created INTEGER NOT NULL, \
                 expires INTEGER);\
                 CREATE INDEX IF NOT EXISTS \"idx_{table}_expires\" ON {t} (expires);"
            ),
            get: format!("SELECT value, expires FROM {t} WHERE key = ?1 AND {LIVE}"),
            // Fedify's upsert: an overwrite keeps `created`.
            upsert: format!(
                "INSERT INTO {t} (key, value, created, expires) VALUES (?1, ?2, ?4, ?3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires"
            ),
            delete: format!("DELETE FROM {t} WHERE key = ?1"),
            list_all: format!(
                "SELECT key, value FROM {t} WHERE key > ?1 AND {LIVE} ORDER BY key LIMIT ?3"
            ),
            list_prefix: format!(
                "SELECT key, value FROM {t} \
                 WHERE (key = ?4 OR (key >= ?5 AND key < ?6)) AND key > ?1 AND {LIVE} \
                 ORDER BY key LIMIT ?3"
            ),
            sweep: format!(
                "DELETE FROM {t} WHERE key IN \
                 (SELECT key FROM {t} WHERE expires IS NOT NULL AND expires <= ?1 LIMIT ?2)"
            ),
        }
    }
}

fn connect(path: Option<&Path>, synchronous: &str, statements: &Statements) -> Result<Connection> {
    let conn = match path {
        Some(path) => Connection::open(path),
        None => Connection::open_in_memory(),
    }
    .map_err(|e| {
        Error::new(ErrorKind::Unavailable, "cannot open the SQLite database")
            .with_source(e)
            .with_operation(Operation::Connect)
    })?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL suits a file shared with a Fedify process too: readers do not
        // block the writer. node:sqlite opens WAL databases as they are.
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))?;
        conn.execute_batch(&statements.create)
    };
    setup().map_err(sqlite_error)?;
    Ok(conn)
}

/// The connection thread: jobs in order, and the periodic sweep.
fn serve(
    mut conn: Connection,
    statements: Statements,
    jobs: mpsc::Receiver<Job>,
    sweep_interval: Option<Duration>,
) {
    let mut next_sweep = sweep_interval.map(|every| Instant::now() + every);
    loop {
        let job = match next_sweep {
            None => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            },
            Some(at) => match jobs.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if let Some(job) = job {
            job(&mut conn, &statements);
        }
        if let (Some(at), Some(every)) = (next_sweep, sweep_interval) {
            if Instant::now() >= at {
                let full = match sweep_batch(&conn, &statements) {
                    Ok(deleted) => deleted == sql::SWEEP_BATCH,
                    Err(e) => {
                        tracing::warn!(error = %e, "kvtower: sweeping expired SQLite rows failed");
                        false
                    }
                };
                let wait = if full {
                    Duration::from_millis(10)
                } else {
                    every
                };
                next_sweep = Some(Instant::now() + wait);
            }
        }
    }
}

fn sweep_batch(conn: &Connection, statements: &Statements) -> Result<usize> {
    let batch = i64::try_from(sql::SWEEP_BATCH).unwrap_or(i64::MAX);
    conn.prepare_cached(&statements.sweep)
        .and_then(|mut stmt| stmt.execute(params![now_ms(), batch]))
        .map_err(sqlite_error)
}

fn get_live(
    conn: &Connection,
    statements: &Statements,
    key: &KvKey,
    now: i64,
    operation: Operation,
) -> Result<Option<(Value, Option<Duration>)>> {
    let mut stmt = conn.prepare_cached(&statements.get).map_err(sqlite_error)?;
    let mut rows = stmt
        .query(params![key_text(key), now])
        .map_err(sqlite_error)?;
    match rows.next().map_err(sqlite_error)? {
        Some(row) => live_row(row, key, now, operation).map(Some),
        None => Ok(None),
    }
}

/// Writes `value` under `key`, or deletes it (`None`, or a TTL of zero).
fn write(
    conn: &Connection,
    statements: &Statements,
    key: &str,
    value: Option<&str>,
    options: SetOptions,
    now: i64,
) -> Result<()> {
    let result = match value {
        Some(text) if !options.is_expired() => conn
            .prepare_cached(&statements.upsert)
            .and_then(|mut s| s.execute(params![key, text, expires_at(now, options.ttl), now])),
        _ => conn
            .prepare_cached(&statements.delete)
            .and_then(|mut s| s.execute(params![key])),
    };
    result.map(|_| ()).map_err(sqlite_error)
}

impl FedifySqlite {
    /// Opens the database and creates Fedify's table when missing.
    pub(super) async fn start(
        path: Option<PathBuf>,
        table: &str,
        synchronous: &'static str,
        sweep_interval: Option<Duration>,
    ) -> Result<Self> {
        let statements = Statements::new(table);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (ready, opened) = oneshot::channel::<Result<()>>();
        let thread = thread::Builder::new()
            .name(format!("kvtower-sqlite-{table}"))
            .spawn(move || {
                let conn = match connect(path.as_deref(), synchronous, &statements) {
                    Ok(conn) => {
                        let _ = ready.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                serve(conn, statements, receiver, sweep_interval);
            })
            .map_err(|e| {
                Error::new(ErrorKind::Backend, "cannot start the SQLite thread")
                    .with_source(e)
                    .with_operation(Operation::Connect)
            })?;
        let store = Self {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        match opened.await {
            Ok(Ok(())) => Ok(store),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(closed(Operation::Connect)),
        }
    }

    /// Runs `f` on the connection thread and waits for its result.
    async fn run<T, F>(&self, operation: Operation, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Statements) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn, statements| {
            let _ = tx.send(f(conn, statements));
        });
        let jobs = self.jobs.as_ref().ok_or_else(|| closed(operation))?;
        jobs.send(job).map_err(|_| closed(operation))?;
        rx.await.map_err(|_| closed(operation))?
    }

    pub(super) async fn sweep_expired(&self) -> Result<u64> {
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

    /// The value and its remaining lifetime (`expires`), in one query.
    pub(super) async fn get(
        &self,
        key: &KvKey,
        operation: Operation,
    ) -> Result<Option<(Value, Option<Duration>)>> {
        let owned = key.clone();
        self.run(operation, move |conn, statements| {
            get_live(conn, statements, &owned, now_ms(), operation)
        })
        .await
        .map_err(|e| e.with_key(key))
    }

    pub(super) async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let text = key_text(key);
        let value = value_text(&value);
        self.run(Operation::Set, move |conn, statements| {
            write(conn, statements, &text, Some(&value), options, now_ms())
        })
        .await
        .map_err(|e| e.with_key(key))
    }

    pub(super) async fn delete(&self, key: &KvKey) -> Result<()> {
        let text = key_text(key);
        self.run(Operation::Delete, move |conn, statements| {
            write(conn, statements, &text, None, SetOptions::default(), 0)
        })
        .await
        .map_err(|e| e.with_key(key))
    }

    pub(super) async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let owned = key.clone();
        let expected = expected.cloned();
        let new = new.map(|v| value_text(&v));
        self.run(Operation::Cas, move |conn, statements| {
            // BEGIN IMMEDIATE, as Fedify's own cas does: the write lock is
            // taken before the read, so a Fedify process on the same file
            // cannot write between the comparison and the write.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let now = now_ms();
            let current = get_live(&tx, statements, &owned, now, Operation::Cas)?.map(|(v, _)| v);
            // serde_json's equality is structural, like Fedify's `isEqual`.
            if current != expected {
                return Ok(false);
            }
            let text = key_text(&owned);
            write(&tx, statements, &text, new.as_deref(), options, now)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(true)
        })
        .await
        .map_err(|e| e.with_key(key))
    }

    /// One page of a listing: entries after `after`, and where the next
    /// page starts, if any.
    async fn list_page(
        &self,
        after: String,
        bounds: Option<(String, String, String)>,
    ) -> Result<(Vec<Result<KvEntry>>, Option<String>)> {
        self.run(Operation::List, move |conn, statements| {
            let limit = i64::try_from(sql::LIST_PAGE).unwrap_or(i64::MAX);
            let now = now_ms();
            let (sql, bounds) = match &bounds {
                Some(b) => (&statements.list_prefix, Some(b)),
                None => (&statements.list_all, None),
            };
            let mut stmt = conn.prepare_cached(sql).map_err(sqlite_error)?;
            let mut rows = match bounds {
                Some((exact, low, high)) => {
                    stmt.query(params![after, now, limit, exact, low, high])
                }
                None => stmt.query(params![after, now, limit]),
            }
            .map_err(sqlite_error)?;
            let mut entries = Vec::new();
            let mut last = None;
            while let Some(row) = rows.next().map_err(sqlite_error)? {
                let text: String = row.get(0).map_err(sqlite_error)?;
                let entry = parse_key_text(&text)
                    .map_err(|e| e.with_operation(Operation::List))
                    .and_then(|key| {
                        let value = read_value(row, 1, &key, Operation::List)?;
                        Ok(KvEntry { key, value })
                    });
                entries.push(entry);
                last = Some(text);
            }
            let next = match last {
                Some(last) if entries.len() == sql::LIST_PAGE => Some(last),
                _ => None,
            };
            Ok((entries, next))
        })
        .await
    }

    pub(super) fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        // Keyset pagination on the key text, as in the kvtower layout. Every
        // key is a non-empty text, so all of them are above "".
        let bounds = prefix.as_ref().map(prefix_bounds);
        stream::unfold(Some(String::new()), move |after| {
            let bounds = bounds.clone();
            async move {
                let page = self.list_page(after?, bounds).await;
                Some(match page {
                    Ok((entries, next)) => (stream::iter(entries), next),
                    Err(e) => (stream::iter(vec![Err(e)]), None),
                })
            }
        })
        .flatten()
        .boxed()
    }

    pub(super) async fn get_many(
        &self,
        keys: &[KvKey],
        operation: Operation,
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.run(operation, move |conn, statements| {
            // One read transaction: every value from the same snapshot.
            let tx = conn.transaction().map_err(sqlite_error)?;
            let now = now_ms();
            let values = keys
                .iter()
                .map(|key| get_live(&tx, statements, key, now, operation))
                .collect::<Result<Vec<_>>>()?;
            tx.commit().map_err(sqlite_error)?;
            Ok(values)
        })
        .await
    }

    pub(super) async fn set_many(
        &self,
        entries: Vec<(KvKey, Value)>,
        options: SetOptions,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, String)> = entries
            .iter()
            .map(|(key, value)| (key_text(key), value_text(value)))
            .collect();
        self.run(Operation::SetMany, move |conn, statements| {
            // One transaction, in order, so the last duplicate wins.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let now = now_ms();
            for (key, text) in &rows {
                write(&tx, statements, key, Some(text), options, now)?;
            }
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    pub(super) async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = keys.iter().map(key_text).collect();
        self.run(Operation::DeleteMany, move |conn, statements| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            for key in &texts {
                write(&tx, statements, key, None, SetOptions::default(), 0)?;
            }
            tx.commit().map_err(sqlite_error)
        })
        .await
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::kvkey;
    use crate::testing::cases::tricky_keys;

    fn under(key: &KvKey, prefix: &KvKey) -> bool {
        let (exact, low, high) = prefix_bounds(prefix);
        let text = key_text(key);
        text == exact || (text >= low && text < high)
    }

    #[test]
    fn key_text_is_json_stringify() {
        assert_eq!(key_text(&kvkey!["a", "b"]), r#"["a","b"]"#);
        assert_eq!(
            key_text(&kvkey!["\"\\/\u{0}\u{8}\u{c}\n\r\t\u{1f}\u{7f}\u{2028}ü"]),
            "[\"\\\"\\\\/\\u0000\\b\\f\\n\\r\\t\\u001f\u{7f}\u{2028}ü\"]"
        );
    }

    #[test]
    fn prefix_bounds_are_part_wise() {
        let keys = tricky_keys();
        for a in &keys {
            assert_eq!(&parse_key_text(&key_text(a)).unwrap(), a);
            for b in &keys {
                assert_eq!(under(a, b), a.starts_with(b), "{a} under {b}");
            }
        }
        assert!(!under(&kvkey!["a%"], &kvkey!["a"]));
        assert!(!under(&kvkey!["ab", "c"], &kvkey!["a_", "c"]));
    }

    #[test]
    fn foreign_keys_are_invalid() {
        for text in ["", "[]", "[1]", "{\"a\":1}", "[\"a\",null]", "\"a\""] {
            let err = parse_key_text(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "{text}");
        }
    }
}
