//! The table: its SQL, built once per table name, and its creation and
//! migration at connect time.

use deadpool_postgres::Object;

use crate::stores::sql;

/// Creates the table and its indexes when missing, and moves a table an
/// older version created to the current layout, in one transaction.
pub(super) async fn setup(
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

/// The SQL of one table, built once from the validated name.
pub(super) struct Statements {
    pub(super) create: String,
    pub(super) get: String,
    pub(super) upsert: String,
    pub(super) delete: String,
    pub(super) cas_select: String,
    pub(super) cas_insert: String,
    pub(super) cas_update: String,
    pub(super) list: String,
    pub(super) get_many: String,
    pub(super) set_many: String,
    pub(super) delete_many: String,
    pub(super) sweep: String,
}

/// Now, in ms since the epoch, on the server's clock (fixed per statement).
const NOW: &str = "(extract(epoch from statement_timestamp()) * 1000)::bigint";

impl Statements {
    pub(super) fn new(table: &str) -> Self {
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
            // The remaining lifetime in ms on the server's clock, with the value
            // (one round trip for get_with_ttl; NULL: never expires).
            get: format!("SELECT value::text, expires_at - {NOW} FROM {t} WHERE key = $1 AND {live}"),
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
            get_many: format!(
                "SELECT key, value::text, expires_at - {NOW} FROM {t} WHERE key = ANY($1) AND {live}"
            ),
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
