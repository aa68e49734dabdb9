//! `list`: keyset pagination, one short query per page (module docs).

use super::error::pg_error;
use super::{prepare, PostgresKvStore};
use crate::error::Result;
use crate::operation::Operation;
use crate::store::KvEntry;
use crate::stores::sql::{self, after, decode_key, parse_value};

/// Reads a `(key, value::text)` row of a listing.
fn entry(row: &tokio_postgres::Row, operation: Operation) -> Result<(Vec<u8>, Result<KvEntry>)> {
    let enc: Vec<u8> = row.try_get(0).map_err(pg_error)?;
    let entry = decode_key(&enc)
        .map_err(|e| e.with_operation(operation))
        .and_then(|key| {
            let text: &str = row.try_get(1).map_err(pg_error)?;
            let value = parse_value(text, &key, operation)?;
            Ok(KvEntry { key, value })
        });
    Ok((enc, entry))
}

impl PostgresKvStore {
    pub(super) async fn list_page(
        &self,
        start: Vec<u8>,
        end: &[u8],
    ) -> Result<(Vec<Result<KvEntry>>, Option<Vec<u8>>)> {
        let limit = i64::try_from(sql::LIST_PAGE).unwrap_or(i64::MAX);
        let rows = self
            .inner
            .run(Operation::List, async |client| {
                let stmt = prepare(client, &self.inner.sql.list).await?;
                client
                    .query(&stmt, &[&start, &end, &limit])
                    .await
                    .map_err(pg_error)
            })
            .await?;
        let full = rows.len() == sql::LIST_PAGE;
        let mut entries = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let (enc, entry) = entry(row, Operation::List)?;
            entries.push(entry);
            last = Some(enc);
        }
        let next = match last {
            Some(last) if full => Some(after(last)),
            _ => None,
        };
        Ok((entries, next))
    }
}
