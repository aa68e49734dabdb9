//! `cas`: a transaction that locks the row, compares in Rust and writes
//! (module docs, "Design").

use super::error::pg_error;
use super::{prepare, writable, PostgresKvStore};
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{SetOptions, Value};
use crate::stores::sql::{encode_key, parse_value, ttl_ms, value_text};

/// How many times `cas` goes around when concurrent inserts of an absent key
/// keep beating it (each round means another writer succeeded).
const CAS_ROUNDS: usize = 16;

impl PostgresKvStore {
    pub(super) async fn cas_inner(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let sql = &self.inner.sql;
        let enc = encode_key(key);
        let new_text = match new {
            Some(value) if !options.is_expired() => Some(value_text(&value)),
            _ => None,
        };
        if new_text.is_some() {
            writable(&enc, key).map_err(|e| e.with_operation(Operation::Cas))?;
        }
        let ttl = ttl_ms(options.ttl);
        self.inner
            .run(Operation::Cas, async |client| {
                let select = prepare(client, &sql.cas_select).await?;
                let tx = client.transaction().await.map_err(pg_error)?;
                for _ in 0..CAS_ROUNDS {
                    // Read committed: each statement sees the latest committed rows,
                    // and FOR UPDATE holds the row until commit, so no writer can
                    // change it between this comparison and the write below.
                    let row = tx.query_opt(&select, &[&enc]).await.map_err(pg_error)?;
                    let current = match &row {
                        Some(row) => {
                            let live: bool = row.try_get(1).map_err(pg_error)?;
                            if live {
                                let text: &str = row.try_get(0).map_err(pg_error)?;
                                Some(parse_value(text, key, Operation::Cas)?)
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
                            let stmt =
                                tx.prepare_cached(&sql.cas_update).await.map_err(pg_error)?;
                            tx.execute(&stmt, &[&enc, text, &ttl])
                                .await
                                .map_err(pg_error)?;
                        }
                        (Some(text), false) => {
                            let stmt =
                                tx.prepare_cached(&sql.cas_insert).await.map_err(pg_error)?;
                            let inserted = tx
                                .execute(&stmt, &[&enc, text, &ttl])
                                .await
                                .map_err(pg_error)?;
                            if inserted == 0 {
                                // Another writer inserted the key after our SELECT
                                // (and committed: ON CONFLICT waited for it). Read
                                // and lock its row, and compare again.
                                continue;
                            }
                        }
                        (None, true) => {
                            let stmt = tx.prepare_cached(&sql.delete).await.map_err(pg_error)?;
                            tx.execute(&stmt, &[&enc]).await.map_err(pg_error)?;
                        }
                        (None, false) => {}
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
}
