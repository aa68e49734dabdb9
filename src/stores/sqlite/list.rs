//! `list`: keyset pagination, one short query per page on a read
//! connection.

use rusqlite::params;

use super::error::sqlite_error;
use super::{read_value, SqliteKvStore};
use crate::error::Result;
use crate::operation::Operation;
use crate::store::KvEntry;
use crate::stores::sql::{self, after, decode_key, now_ms};

impl SqliteKvStore {
    /// One page of a listing: entries from `start` (inclusive) to `end`
    /// (exclusive), and where the next page starts, if any.
    pub(super) async fn list_page(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<(Vec<Result<KvEntry>>, Option<Vec<u8>>)> {
        self.read(Operation::List, move |conn, statements| {
            let limit = i64::try_from(sql::LIST_PAGE).unwrap_or(i64::MAX);
            let mut stmt = conn
                .prepare_cached(&statements.list)
                .map_err(sqlite_error)?;
            let mut rows = stmt
                .query(params![start, now_ms(), end, limit])
                .map_err(sqlite_error)?;
            let mut entries = Vec::new();
            let mut last: Option<Vec<u8>> = None;
            while let Some(row) = rows.next().map_err(sqlite_error)? {
                let enc: Vec<u8> = row.get(0).map_err(sqlite_error)?;
                let entry = decode_key(&enc)
                    .map_err(|e| e.with_operation(Operation::List))
                    .and_then(|key| {
                        let value = read_value(row, 1, &key, Operation::List)?;
                        Ok(KvEntry { key, value })
                    });
                entries.push(entry);
                last = Some(enc);
            }
            let next = match last {
                Some(last) if entries.len() == sql::LIST_PAGE => Some(after(last)),
                _ => None,
            };
            Ok((entries, next))
        })
        .await
    }
}
