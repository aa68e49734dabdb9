//! `sqlite://`: an `SqliteKvStore` on a file or in memory (feature `sqlite`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Backend;
use crate::error::{Error, Result};
use crate::store::DynKvStore;
use crate::stores::Layout;

/// Options of a SQLite backend.
///
/// URL forms: `sqlite:///abs/path.db`, `sqlite://rel/path.db`,
/// `sqlite://:memory:`.
///
/// ```
/// use kvtower::config::BackendConfig;
///
/// let BackendConfig::Sqlite(c) = BackendConfig::from_url("sqlite:///var/lib/app/kv.db")? else { panic!() };
/// assert_eq!(c.path.to_str(), Some("/var/lib/app/kv.db"));
///
/// // Fedify's `fedify_kv` table, shared with a Fedify server.
/// let config = kvtower::config::StoreConfig::from_toml_str(
///     "[backend]\nkind = \"sqlite\"\npath = \"fedify.db\"\nlayout = \"fedify\"",
/// )?;
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file (`:memory:` for a private in-memory database).
    pub path: PathBuf,
    /// The table name (default `kvtower`; `fedify_kv` in the Fedify layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The data format: `kvtower` (the default) or `fedify`, Fedify's own
    /// store's format for this backend, to share data with a Fedify server
    /// (see [`Layout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

impl Backend for SqliteConfig {
    fn from_url(url: &str) -> Result<Self> {
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        if rest.is_empty() {
            return Err(Error::config(
                "backend: `sqlite://` needs a path, e.g. sqlite:///var/lib/app/kv.db or sqlite://:memory:",
            ));
        }
        Ok(Self {
            path: PathBuf::from(rest),
            table: None,
            layout: None,
        })
    }

    async fn build(&self) -> Result<DynKvStore> {
        #[cfg(feature = "sqlite")]
        {
            let mut builder =
                crate::SqliteKvStore::builder().layout(self.layout.unwrap_or_default());
            if let Some(table) = &self.table {
                builder = builder.table(table.clone());
            }
            let store = if self.path.as_os_str() == ":memory:" {
                builder.memory().await?
            } else {
                builder.open(&self.path).await?
            };
            Ok(std::sync::Arc::new(store))
        }
        #[cfg(not(feature = "sqlite"))]
        Err(super::missing_feature("sqlite", "sqlite"))
    }
}
