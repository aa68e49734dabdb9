//! The table: its SQL, built once per table name, and the migration of a
//! table an older version created.

use rusqlite::{params, Connection, OptionalExtension};

use crate::stores::sql;

/// The SQL of one table, built once from the validated name.
pub(super) struct Statements {
    pub(super) create: String,
    /// The expiry index name of older versions, dropped when found on this
    /// table (see [`sql::legacy_expiry_index`]).
    pub(super) legacy_index: String,
    pub(super) table: String,
    pub(super) get: String,
    pub(super) upsert: String,
    pub(super) delete: String,
    pub(super) list: String,
    pub(super) sweep: String,
}

impl Statements {
    pub(super) fn new(table: &str) -> Self {
        // `table` is validated: an identifier without quotes, safe to quote.
        let t = format!("\"{table}\"");
        const LIVE: &str = "(expires_at IS NULL OR expires_at > ?2)";
        let index = sql::expiry_index(table);
        Self {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 k BLOB PRIMARY KEY NOT NULL, v TEXT NOT NULL, expires_at INTEGER\
                 ) WITHOUT ROWID;\
                 CREATE INDEX IF NOT EXISTS \"{index}\" ON {t} (expires_at) \
                 WHERE expires_at IS NOT NULL;"
            ),
            legacy_index: sql::legacy_expiry_index(table),
            table: table.to_owned(),
            get: format!("SELECT v, expires_at FROM {t} WHERE k = ?1 AND {LIVE}"),
            upsert: format!(
                "INSERT INTO {t} (k, v, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at"
            ),
            delete: format!("DELETE FROM {t} WHERE k = ?1"),
            list: format!(
                "SELECT k, v FROM {t} WHERE k >= ?1 AND k < ?3 AND {LIVE} ORDER BY k LIMIT ?4"
            ),
            sweep: format!(
                "DELETE FROM {t} WHERE k IN \
                 (SELECT k FROM {t} WHERE expires_at <= ?1 LIMIT ?2)"
            ),
        }
    }
}

/// Drops the expiry index an older version created under the name
/// `{table}_expires_at` (a name another table may want), if it is this
/// table's: its replacement is already in place.
pub(super) fn drop_legacy_index(
    conn: &Connection,
    statements: &Statements,
) -> rusqlite::Result<()> {
    // SQLite names are case-insensitive (ASCII), hence NOCASE.
    let found: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'index' \
             AND name = ?1 COLLATE NOCASE AND tbl_name = ?2 COLLATE NOCASE",
            params![statements.legacy_index, statements.table],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(name) = found {
        // `name` is the validated table name plus `_expires_at`: no quote.
        conn.execute_batch(&format!("DROP INDEX IF EXISTS \"{name}\""))?;
    }
    Ok(())
}
