//! [`Layout::Fedify`](crate::stores::Layout::Fedify) for
//! [`PostgresKvStore`](super::PostgresKvStore): the table
//! `@fedify/postgres`'s `PostgresKvStore` reads and writes (checked against
//! 1.8.7, the version the npm registry serves).
//!
//! * Table `fedify_kv_v2` (see [`table`](super::PostgresKvStoreBuilder::table)),
//!   created when missing with Fedify's columns: `key text[] PRIMARY KEY,
//!   value jsonb NOT NULL, created timestamptz DEFAULT CURRENT_TIMESTAMP,
//!   ttl interval`. (Fedify 1.8 creates it `UNLOGGED`; kvtower creates a
//!   logged, crash-safe table, as Fedify does from 2.4 on. Either program
//!   uses a table the other created.)
//! * A row is live while `ttl IS NULL OR created + ttl > CURRENT_TIMESTAMP`,
//!   on the database server's clock, exactly Fedify's test. kvtower writes
//!   `created = CURRENT_TIMESTAMP` on every write (Fedify 1.8 keeps the old
//!   `created` on an overwrite, so an overwritten entry with a TTL expires
//!   early; Fedify 2 fixed that the same way) and the TTL as an interval
//!   with microsecond precision, rounded up. A TTL above 10,000 years is
//!   stored as no TTL (`created + ttl` would leave the timestamp range).
//! * `text` and `jsonb` cannot hold U+0000: a key part or a JSON string
//!   holding it is an [`InvalidKey`](ErrorKind::InvalidKey) or
//!   [`InvalidValue`](ErrorKind::InvalidValue) error before anything is
//!   sent (Fedify's own store fails on the server for the same values), and
//!   the store declares [`nul_in_text: false`](crate::Capabilities::nul_in_text).
//! * A key whose `text[]` takes more than 2,696 bytes (24, then 4 a part
//!   plus its UTF-8 rounded up to a multiple of 4) does not fit a btree
//!   index entry: a write of it is an [`InvalidKey`](ErrorKind::InvalidKey)
//!   error naming the limit, before anything is sent (Fedify's store fails
//!   on the server). Reads, deletes and listings take it and find nothing.
//! * `null`: Fedify's `set(key, null)` fails (its driver binds `null` as
//!   SQL `NULL`, which the `NOT NULL` column refuses). kvtower stores
//!   [`Value::Null`] as the `jsonb` `null`, which Fedify's `get` returns as
//!   `null` (present), not `undefined` (absent).
//! * `jsonb` keeps JSON's meaning but not its text: object keys come back
//!   sorted, duplicate keys collapse, and numbers are exact decimals
//!   (`1.0` reads back as `1.0`, a float as its shortest decimal).
//! * Double-encoded values: a Fedify store constructed with
//!   `initialized: true` (fedify#1031, fixed in 2.0.27) or an older driver
//!   wrote each value as the `jsonb` *string* of its JSON text. Fedify's own
//!   `get` returns that string. With
//!   [`decode_double_encoded`](super::PostgresKvStoreBuilder::decode_double_encoded)
//!   kvtower reads a string whose text is JSON as that JSON instead; it is
//!   off by default because it is ambiguous: a genuine string value such as
//!   `"42"` or `"{}"` then reads as `42` or `{}`.
//! * `list(prefix)` is `key[1:n] = prefix`, part-wise and literal, paged
//!   by key from the prefix up through the primary-key index.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use futures::future::try_join_all;
use futures::stream::{self, BoxStream, StreamExt};
use tokio_postgres::error::SqlState;

use super::bound::{run, Bounds};
use super::error::pg_error;
use super::prepare;
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{KvEntry, SetOptions, Value};
use crate::stores::sql::{self, parse_value, value_text};

/// The table Fedify's `PostgresKvStore` uses by default.
pub(crate) const DEFAULT_TABLE: &str = "fedify_kv_v2";

/// How many times `cas` goes around when concurrent inserts of an absent key
/// keep beating it (each round means another writer succeeded).
const CAS_ROUNDS: usize = 16;

/// TTLs above this are stored as no TTL: 10,000 years from now is still far
/// inside PostgreSQL's timestamp range (up to the year 294276).
const MAX_TTL_MICROS: i64 = 10_000 * 366 * 24 * 3600 * 1_000_000;

/// A TTL in whole microseconds (an interval's precision), rounded up.
fn ttl_micros(ttl: Option<Duration>) -> Option<i64> {
    let ttl = ttl?;
    let micros = ttl.as_micros() + u128::from(ttl.subsec_nanos() % 1_000 != 0);
    i64::try_from(micros)
        .ok()
        .filter(|&us| us <= MAX_TTL_MICROS)
}

/// The Fedify-layout half of a [`PostgresKvStore`](super::PostgresKvStore).
pub(super) struct FedifyPostgres {
    pool: Pool,
    bounds: Bounds,
    sql: Statements,
    decode_double_encoded: bool,
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
    list_all: String,
    list_prefix: String,
    sweep: String,
}

/// Fedify's liveness test.
const LIVE: &str = "(ttl IS NULL OR created + ttl > CURRENT_TIMESTAMP)";

impl Statements {
    fn new(table: &str) -> Self {
        // `table` is validated: an identifier without quotes, safe to quote.
        let t = format!("\"{table}\"");
        // `NULL * interval` is NULL: no TTL.
        let ttl = "($3::bigint * interval '1 microsecond')";
        Self {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 key text[] PRIMARY KEY, value jsonb NOT NULL, \
                 created timestamp with time zone DEFAULT CURRENT_TIMESTAMP, ttl interval)"
            ),
            // The remaining lifetime in whole ms, rounded down so a fill never
            // outlives the row (NULL: never expires).
            get: format!(
                "SELECT value::text, \
                 floor(extract(epoch from created + ttl - CURRENT_TIMESTAMP) * 1000)::bigint \
                 FROM {t} WHERE key = $1 AND {LIVE}"
            ),
            upsert: format!(
                "INSERT INTO {t} (key, value, created, ttl) \
                 VALUES ($1, $2::text::jsonb, CURRENT_TIMESTAMP, {ttl}) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, \
                 created = EXCLUDED.created, ttl = EXCLUDED.ttl"
            ),
            delete: format!("DELETE FROM {t} WHERE key = $1"),
            cas_select: format!("SELECT value::text, {LIVE} FROM {t} WHERE key = $1 FOR UPDATE"),
            cas_insert: format!(
                "INSERT INTO {t} (key, value, created, ttl) \
                 VALUES ($1, $2::text::jsonb, CURRENT_TIMESTAMP, {ttl}) \
                 ON CONFLICT (key) DO NOTHING"
            ),
            cas_update: format!(
                "UPDATE {t} SET value = $2::text::jsonb, created = CURRENT_TIMESTAMP, \
                 ttl = {ttl} WHERE key = $1"
            ),
            list_all: format!(
                "SELECT key, value::text FROM {t} \
                 WHERE ($1::text[] IS NULL OR key > $1) AND {LIVE} ORDER BY key LIMIT $2"
            ),
            // Every key under the prefix sorts at or above it (arrays compare
            // element by element, a shorter one first), so the scan starts
            // there; the slice test decides membership part-wise.
            list_prefix: format!(
                "SELECT key, value::text FROM {t} \
                 WHERE key >= $3 AND key[1:$4] = $3 AND ($1::text[] IS NULL OR key > $1) \
                 AND {LIVE} ORDER BY key LIMIT $2"
            ),
            sweep: format!(
                "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} \
                 WHERE ttl IS NOT NULL AND created + ttl < CURRENT_TIMESTAMP LIMIT $1)"
            ),
        }
    }
}

/// The parts of `key`, or an [`InvalidKey`](ErrorKind::InvalidKey) error
/// when one holds U+0000, which `text` cannot store.
fn key_parts(key: &KvKey) -> Result<&[String]> {
    if key.parts().iter().any(|p| p.contains('\0')) {
        return Err(Error::new(
            ErrorKind::InvalidKey,
            "a key part holds U+0000, which PostgreSQL text cannot store",
        )
        .with_key(key));
    }
    Ok(key.parts())
}

/// The longest key a write accepts in the Fedify layout, in bytes of its
/// `text[]` value (24 bytes of array header, then per part 4 bytes of
/// header and its UTF-8, padded to a multiple of 4): a btree index entry
/// holds at most 2,704 bytes with PostgreSQL's default 8 kB pages, 8 of them
/// the entry's header.
pub(super) const MAX_KEY_BYTES: usize = 2696;

/// The size of `parts` as a `text[]` value, uncompressed.
fn array_bytes(parts: &[String]) -> usize {
    24 + parts
        .iter()
        .map(|p| (4 + p.len()).next_multiple_of(4))
        .sum::<usize>()
}

/// The parts of `key` for a write: [`key_parts`], and an
/// [`InvalidKey`](ErrorKind::InvalidKey) error, before anything is sent,
/// for a key too long for the primary-key index. (Reads, deletes and
/// listings take a key of any length: none is stored.)
fn writable_parts(key: &KvKey) -> Result<&[String]> {
    let parts = key_parts(key)?;
    let size = array_bytes(parts);
    if size > MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidKey,
            format!(
                "the key is {size} bytes as a text[], a PostgreSQL primary-key entry holds at most {MAX_KEY_BYTES}"
            ),
        )
        .with_key(key));
    }
    Ok(parts)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The JSON text of `value`, or an [`InvalidValue`](ErrorKind::InvalidValue)
/// error when a string in it holds U+0000, which `jsonb` cannot store.
fn json_text(value: &Value, key: &KvKey) -> Result<String> {
    if has_nul(value) {
        return Err(Error::new(
            ErrorKind::InvalidValue,
            "a JSON string holds U+0000, which PostgreSQL jsonb cannot store",
        )
        .with_key(key));
    }
    Ok(value_text(value))
}

/// Reads a stored `key text[]`; an [`InvalidKey`](ErrorKind::InvalidKey)
/// error for an array Fedify never writes (empty, or with `NULL` parts).
fn read_key(row: &tokio_postgres::Row, operation: Operation) -> Result<(Vec<String>, KvKey)> {
    let parts: Vec<Option<String>> = row.try_get(0).map_err(pg_error)?;
    let parts: Option<Vec<String>> = parts.into_iter().collect();
    let parts = parts.ok_or_else(|| {
        Error::new(ErrorKind::InvalidKey, "stored key has a NULL part").with_operation(operation)
    })?;
    let key = KvKey::new(parts.clone()).map_err(|e| e.with_operation(operation))?;
    Ok((parts, key))
}

/// Starts the sweep task; it holds a `Weak` and ends with the store.
fn spawn_sweeper(store: Weak<FedifyPostgres>, every: Duration) {
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
            let Some(store) = store.upgrade() else { return };
            if let Err(e) = store.sweep_expired().await {
                tracing::warn!(error = %e, "kvtower: sweeping expired Postgres rows failed");
            }
        }
    });
}

impl FedifyPostgres {
    /// Creates the table when missing and starts the sweep.
    pub(super) async fn start(
        pool: Pool,
        bounds: Bounds,
        setup_bounds: Bounds,
        table: &str,
        decode_double_encoded: bool,
        sweep_interval: Option<Duration>,
    ) -> Result<Arc<Self>> {
        let sql = Statements::new(table);
        run(&pool, setup_bounds, Operation::Connect, async |client| {
            if let Err(e) = client.batch_execute(&sql.create).await {
                // Two processes creating the table at once: one loses the
                // race on the catalog's unique index, and the table exists.
                let raced = e.code().is_some_and(|c| {
                    *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE
                });
                if !raced {
                    return Err(pg_error(e));
                }
            }
            Ok(())
        })
        .await?;
        let store = Arc::new(Self {
            pool,
            bounds,
            sql,
            decode_double_encoded,
        });
        if let Some(every) = sweep_interval {
            spawn_sweeper(Arc::downgrade(&store), every);
        }
        Ok(store)
    }

    /// Runs `work` on a pooled connection within the per-operation timeout.
    async fn run<T>(
        &self,
        operation: Operation,
        work: impl AsyncFnOnce(&mut Object) -> Result<T>,
    ) -> Result<T> {
        run(&self.pool, self.bounds, operation, work).await
    }

    /// Parses a stored `value::text`, undoing a double encoding when asked.
    fn value(&self, text: &str, key: &KvKey, operation: Operation) -> Result<Value> {
        let value = parse_value(text, key, operation)?;
        if self.decode_double_encoded {
            if let Value::String(inner) = &value {
                if let Ok(decoded) = serde_json::from_str::<Value>(inner) {
                    return Ok(decoded);
                }
            }
        }
        Ok(value)
    }

    pub(super) async fn sweep_expired(&self) -> Result<u64> {
        let batch = i64::try_from(sql::SWEEP_BATCH).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            // Each batch is one operation, within the timeout.
            let deleted = self
                .run(Operation::Sweep, async |client| {
                    let stmt = prepare(client, &self.sql.sweep).await?;
                    client.execute(&stmt, &[&batch]).await.map_err(pg_error)
                })
                .await?;
            total += deleted;
            if deleted < sql::SWEEP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// The value and its remaining lifetime (`created + ttl`), in one query.
    pub(super) async fn get(
        &self,
        key: &KvKey,
        operation: Operation,
    ) -> Result<Option<(Value, Option<Duration>)>> {
        let parts = key_parts(key).map_err(|e| e.with_operation(operation))?;
        self.run(operation, async |client| {
            let stmt = prepare(client, &self.sql.get).await?;
            let row = client.query_opt(&stmt, &[&parts]).await.map_err(pg_error)?;
            row.map(|row| self.live_row(&row, key, operation))
                .transpose()
        })
        .await
    }

    /// A row of the `get` statement: the value and the ms it has left.
    fn live_row(
        &self,
        row: &tokio_postgres::Row,
        key: &KvKey,
        operation: Operation,
    ) -> Result<(Value, Option<Duration>)> {
        let text: &str = row.try_get(0).map_err(pg_error)?;
        let left: Option<i64> = row.try_get(1).map_err(pg_error)?;
        Ok((self.value(text, key, operation)?, sql::remaining(left, 0)))
    }

    pub(super) async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        if options.is_expired() {
            return self.delete(key).await;
        }
        let parts = writable_parts(key).map_err(|e| e.with_operation(Operation::Set))?;
        let text = json_text(&value, key).map_err(|e| e.with_operation(Operation::Set))?;
        let ttl = ttl_micros(options.ttl);
        self.run(Operation::Set, async |client| {
            let stmt = prepare(client, &self.sql.upsert).await?;
            client
                .execute(&stmt, &[&parts, &text, &ttl])
                .await
                .map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn delete(&self, key: &KvKey) -> Result<()> {
        let parts = key_parts(key).map_err(|e| e.with_operation(Operation::Delete))?;
        self.run(Operation::Delete, async |client| {
            let stmt = prepare(client, &self.sql.delete).await?;
            client.execute(&stmt, &[&parts]).await.map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let parts = key_parts(key).map_err(|e| e.with_operation(Operation::Cas))?;
        let new_text = match &new {
            Some(value) if !options.is_expired() => {
                Some(json_text(value, key).map_err(|e| e.with_operation(Operation::Cas))?)
            }
            _ => None,
        };
        if new_text.is_some() {
            writable_parts(key).map_err(|e| e.with_operation(Operation::Cas))?;
        }
        let ttl = ttl_micros(options.ttl);
        let sql = &self.sql;
        self.run(Operation::Cas, async |client| {
            let select = prepare(client, &sql.cas_select).await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            for _ in 0..CAS_ROUNDS {
                // Read committed: FOR UPDATE holds the row until commit, so no
                // writer (Fedify's included) changes it between the comparison
                // and the write.
                let row = tx.query_opt(&select, &[&parts]).await.map_err(pg_error)?;
                let current = match &row {
                    Some(row) => {
                        let live: bool = row.try_get(1).map_err(pg_error)?;
                        if live {
                            let text: &str = row.try_get(0).map_err(pg_error)?;
                            Some(self.value(text, key, Operation::Cas)?)
                        } else {
                            None
                        }
                    }
                    None => None,
                };
                // serde_json's equality is structural, like jsonb's.
                if current.as_ref() != expected {
                    return Ok(false); // dropping the transaction rolls back
                }
                let statement = match (&new_text, row.is_some()) {
                    (Some(_), true) => &sql.cas_update,
                    (Some(_), false) => &sql.cas_insert,
                    (None, true) => &sql.delete,
                    (None, false) => {
                        tx.commit().await.map_err(pg_error)?;
                        return Ok(true);
                    }
                };
                let stmt = tx.prepare_cached(statement).await.map_err(pg_error)?;
                let changed = match &new_text {
                    Some(text) => tx.execute(&stmt, &[&parts, text, &ttl]).await,
                    None => tx.execute(&stmt, &[&parts]).await,
                }
                .map_err(pg_error)?;
                if changed == 0 && row.is_none() {
                    // Another writer inserted the key after our SELECT (and
                    // committed: ON CONFLICT waited for it). Read and lock its
                    // row, and compare again.
                    continue;
                }
                tx.commit().await.map_err(pg_error)?;
                return Ok(true);
            }
            Err(Error::new(
                ErrorKind::Backend,
                "cas lost too many insert races in a row",
            )
            .with_operation(Operation::Cas)
            .with_retryable(true))
        })
        .await
    }

    /// One page of a listing after `after` (`None`: from the start).
    async fn list_page(
        &self,
        prefix: Option<&[String]>,
        after: Option<Vec<String>>,
    ) -> Result<(Vec<Result<KvEntry>>, Option<Vec<String>>)> {
        let limit = i64::try_from(sql::LIST_PAGE).unwrap_or(i64::MAX);
        let rows = self
            .run(Operation::List, async |client| {
                match prefix {
                    Some(prefix) => {
                        let stmt = prepare(client, &self.sql.list_prefix).await?;
                        let n = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
                        client.query(&stmt, &[&after, &limit, &prefix, &n]).await
                    }
                    None => {
                        let stmt = prepare(client, &self.sql.list_all).await?;
                        client.query(&stmt, &[&after, &limit]).await
                    }
                }
                .map_err(pg_error)
            })
            .await?;
        let full = rows.len() == sql::LIST_PAGE;
        let mut entries = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let (parts, entry) = match read_key(row, Operation::List) {
                Ok((parts, key)) => {
                    let entry = row
                        .try_get::<_, &str>(1)
                        .map_err(pg_error)
                        .and_then(|text| self.value(text, &key, Operation::List))
                        .map(|value| KvEntry { key, value });
                    (Some(parts), entry)
                }
                Err(e) => (None, Err(e)),
            };
            entries.push(entry);
            if parts.is_some() {
                last = parts;
            }
        }
        Ok((entries, if full { last } else { None }))
    }

    pub(super) fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        if let Some(prefix) = &prefix {
            if let Err(e) = key_parts(prefix) {
                // No stored key holds U+0000, so nothing is under this prefix.
                let _ = e;
                return stream::empty().boxed();
            }
        }
        // Keyset pagination by key: one short query per page.
        stream::unfold(Some(None), move |after: Option<Option<Vec<String>>>| {
            let prefix = prefix.clone();
            async move {
                let after = after?;
                let page = self
                    .list_page(prefix.as_ref().map(|p| p.parts()), after)
                    .await;
                Some(match page {
                    Ok((entries, next)) => (stream::iter(entries), next.map(Some)),
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
        let parts = keys
            .iter()
            .map(|k| key_parts(k).map_err(|e| e.with_operation(operation)))
            .collect::<Result<Vec<_>>>()?;
        let rows = self
            .run(operation, async |client| {
                let stmt = prepare(client, &self.sql.get).await?;
                // Ragged text[] keys do not fit one array parameter: the
                // queries are pipelined on one connection instead (one round
                // trip's wait).
                let (client, stmt) = (&*client, &stmt);
                try_join_all(
                    parts
                        .iter()
                        .map(|p| async move { client.query_opt(stmt, &[p]).await }),
                )
                .await
                .map_err(pg_error)
            })
            .await?;
        keys.iter()
            .zip(rows)
            .map(|(key, row)| {
                row.map(|row| self.live_row(&row, key, operation))
                    .transpose()
            })
            .collect()
    }

    pub(super) async fn set_many(
        &self,
        entries: Vec<(KvKey, Value)>,
        options: SetOptions,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if options.is_expired() {
            let keys: Vec<KvKey> = entries.into_iter().map(|(k, _)| k).collect();
            return self.delete_many(&keys).await;
        }
        // Fold duplicates, the last value winning like a loop of `set`.
        let mut index: HashMap<&KvKey, usize> = HashMap::with_capacity(entries.len());
        let mut rows: Vec<(&[String], String)> = Vec::with_capacity(entries.len());
        for (key, value) in &entries {
            let parts = writable_parts(key).map_err(|e| e.with_operation(Operation::SetMany))?;
            let text = json_text(value, key).map_err(|e| e.with_operation(Operation::SetMany))?;
            match index.get(key) {
                Some(&i) => rows[i].1 = text,
                None => {
                    index.insert(key, rows.len());
                    rows.push((parts, text));
                }
            }
        }
        let ttl = ttl_micros(options.ttl);
        self.run(Operation::SetMany, async |client| {
            let stmt = prepare(client, &self.sql.upsert).await?;
            // One transaction (all or nothing), its statements pipelined.
            let tx = client.transaction().await.map_err(pg_error)?;
            try_join_all(rows.iter().map(|(parts, text)| {
                let (tx, stmt, ttl) = (&tx, &stmt, &ttl);
                async move { tx.execute(stmt, &[parts, text, ttl]).await }
            }))
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)
        })
        .await
    }

    pub(super) async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let parts = keys
            .iter()
            .map(|k| key_parts(k).map_err(|e| e.with_operation(Operation::DeleteMany)))
            .collect::<Result<Vec<_>>>()?;
        self.run(Operation::DeleteMany, async |client| {
            let stmt = prepare(client, &self.sql.delete).await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let (txr, stmt) = (&tx, &stmt);
            try_join_all(
                parts
                    .iter()
                    .map(|p| async move { txr.execute(stmt, &[p]).await }),
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_microseconds() {
        assert_eq!(ttl_micros(None), None);
        assert_eq!(ttl_micros(Some(Duration::from_nanos(1))), Some(1));
        assert_eq!(
            ttl_micros(Some(Duration::from_millis(1500))),
            Some(1_500_000)
        );
        assert_eq!(ttl_micros(Some(Duration::MAX)), None);
    }

    #[test]
    fn array_size_is_postgres_s() {
        // Measured on PostgreSQL 15: one part of 2,668 bytes fits the
        // index, 2,669 do not; with a second part "ab", 2,660 and 2,661.
        let size =
            |parts: &[&str]| array_bytes(&parts.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        assert!(size(&[&"a".repeat(2668)]) <= MAX_KEY_BYTES);
        assert!(size(&[&"a".repeat(2669)]) > MAX_KEY_BYTES);
        assert!(size(&[&"a".repeat(2660), "ab"]) <= MAX_KEY_BYTES);
        assert!(size(&[&"a".repeat(2661), "ab"]) > MAX_KEY_BYTES);
    }

    #[test]
    fn nul_is_refused_before_the_server() {
        let key = crate::kvkey!["a\0"];
        assert_eq!(key_parts(&key).unwrap_err().kind(), ErrorKind::InvalidKey);
        let value = serde_json::json!({"k": ["x\0"]});
        let err = json_text(&value, &crate::kvkey!["a"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
    }
}
