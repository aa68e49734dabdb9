//! `postgres://`: a `PostgresKvStore` (feature `postgres`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Backend;
use crate::config::SecretUrl;
use crate::error::{Error, Result};
use crate::store::DynKvStore;
use crate::stores::Layout;

/// Options of a PostgreSQL backend.
///
/// URL forms: `postgres://…` and `postgresql://…`, as tokio-postgres reads
/// them; in the table form, `url` may also be libpq's key-value form
/// (`host=… user=… password=…`).
///
/// ```
/// use kvtower::config::BackendConfig;
///
/// let BackendConfig::Postgres(c) = BackendConfig::from_url("postgres://app:pw@db/test")? else { panic!() };
/// assert_eq!(c.url.to_string(), "postgres://app:***@db/test");
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://` URL.
    pub url: SecretUrl,
    /// The table name (default `kvtower`; `fedify_kv_v2` in the Fedify
    /// layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The data format: `kvtower` (the default) or `fedify`, Fedify's own
    /// store's format for this backend, to share data with a Fedify server
    /// (see [`Layout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// In the Fedify layout, read the twice-encoded values older Fedify
    /// versions wrote (`PostgresKvStoreBuilder::decode_double_encoded`;
    /// default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_double_encoded: Option<bool>,
    /// Per-operation timeout (default 30 s), a duration like `"500ms"`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Timeout of each connection attempt (default 10 s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<Duration>,
}

impl Backend for PostgresConfig {
    fn from_url(url: &str) -> Result<Self> {
        Ok(Self {
            url: SecretUrl::new(url),
            table: None,
            layout: None,
            decode_double_encoded: None,
            timeout: None,
            connect_timeout: None,
        })
    }

    fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_some_and(|t| t.is_zero()) {
                return Err(Error::config(format!(
                    "backend.{name}: must be more than zero"
                )));
            }
        }
        super::fedify_only(
            self.layout,
            "decode_double_encoded",
            self.decode_double_encoded.is_some(),
        )
    }

    async fn build(&self) -> Result<DynKvStore> {
        #[cfg(feature = "postgres")]
        {
            let mut builder = crate::PostgresKvStore::builder()
                .layout(self.layout.unwrap_or_default())
                .decode_double_encoded(self.decode_double_encoded.unwrap_or(false));
            if let Some(table) = &self.table {
                builder = builder.table(table.clone());
            }
            if let Some(timeout) = self.timeout {
                builder = builder.timeout(timeout);
            }
            if let Some(timeout) = self.connect_timeout {
                builder = builder.connect_timeout(timeout);
            }
            let store = builder
                .connect(self.url.expose())
                .await
                .map_err(|e| crate::config::secrets::scrub(e, [&self.url]))?;
            Ok(std::sync::Arc::new(store))
        }
        #[cfg(not(feature = "postgres"))]
        Err(super::missing_feature("postgres", "postgres"))
    }
}
