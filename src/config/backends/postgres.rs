//! `postgres://`: a `PostgresKvStore` (feature `postgres`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Backend;
use crate::config::SecretUrl;
use crate::error::{Error, Result};
use crate::store::DynKvStore;

/// Options of a PostgreSQL backend.
///
/// URL forms: `postgres://…` and `postgresql://…`, as tokio-postgres reads
/// them; in the table form, `url` may also be libpq's key-value form
/// (`host=… user=… password=…`). `timeout` and `connect_timeout` are
/// durations like `"500ms"` or `"30s"` (defaults 30 s and 10 s, see
/// `PostgresKvStoreBuilder::timeout`); zero is an error.
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
    /// The table name (default `kvtower`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Per-operation timeout.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Timeout of each connection attempt.
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
        Ok(())
    }

    async fn build(&self) -> Result<DynKvStore> {
        #[cfg(feature = "postgres")]
        {
            let mut builder = crate::PostgresKvStore::builder();
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
