//! `cfworkers://`: a `WorkersKvStore` on a Cloudflare Workers KV namespace,
//! through the Cloudflare API (feature `cfworkers`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Backend;
use crate::config::secrets::{percent_decode, userinfo_secret};
use crate::config::SecretString;
use crate::error::{Error, Result};
use crate::store::DynKvStore;

/// Options of a Workers KV backend: the namespace `namespace_id` of the
/// account `account_id`, with an API token allowed to read and write it.
///
/// URL form: `cfworkers://:API_TOKEN@ACCOUNT_ID/NAMESPACE_ID`.
///
/// ```
/// use kvtower::config::{BackendConfig, StoreConfig};
///
/// let config = StoreConfig::from_toml_str(r#"
///     [backend]
///     kind = "cfworkers"
///     account_id = "0123456789abcdef0123456789abcdef"
///     namespace_id = "fedcba9876543210fedcba9876543210"
///     api_token = "cf-secret"
///     timeout = "5s"
/// "#)?;
/// assert!(!format!("{config:?}").contains("cf-secret"));
/// assert_eq!(config.backend.kind(), "cfworkers");
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkersKvConfig {
    /// The Cloudflare account id.
    pub account_id: String,
    /// The KV namespace id.
    pub namespace_id: String,
    /// An API token allowed to read and write the namespace.
    pub api_token: SecretString,
    /// The API's base URL (default `https://api.cloudflare.com/client/v4`;
    /// another one for an emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The bound on one HTTP request (default 30 s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

const URL_FORM: &str = "cfworkers://:API_TOKEN@ACCOUNT_ID/NAMESPACE_ID";

impl Backend for WorkersKvConfig {
    fn from_url(url: &str) -> Result<Self> {
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        let (token, address) = userinfo_secret(rest);
        let (account_id, namespace_id) = address.split_once('/').unwrap_or((address.as_str(), ""));
        let namespace_id = namespace_id.strip_suffix('/').unwrap_or(namespace_id);
        let Some(token) = token else {
            return Err(Error::config(format!(
                "backend: a `cfworkers://` URL needs the API token as its password: {URL_FORM}"
            )));
        };
        Ok(Self {
            account_id: account_id.to_owned(),
            namespace_id: namespace_id.to_owned(),
            api_token: SecretString::new(percent_decode(token).unwrap_or_else(|| token.to_owned())),
            base_url: None,
            timeout: None,
        })
    }

    fn validate(&self) -> Result<()> {
        for (field, id) in [
            ("account_id", &self.account_id),
            ("namespace_id", &self.namespace_id),
        ] {
            if id.is_empty() {
                return Err(Error::config(format!(
                    "backend.{field}: must not be empty ({URL_FORM})"
                )));
            }
            if !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(Error::config(format!(
                    "backend.{field}: `{id}` is not an id (letters, digits, `-`, `_` and `.` only)"
                )));
            }
        }
        if self.api_token.expose().is_empty() {
            return Err(Error::config("backend.api_token: must not be empty"));
        }
        if let Some(base) = &self.base_url {
            let lower = base.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return Err(Error::config(format!(
                    "backend.base_url: `{}` is not an http:// or https:// URL",
                    crate::config::redact_url(base)
                )));
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::config("backend.timeout: must be more than zero"));
        }
        Ok(())
    }

    async fn build(&self) -> Result<DynKvStore> {
        #[cfg(feature = "cfworkers")]
        {
            let mut builder = crate::WorkersKvStore::builder(
                self.account_id.as_str(),
                self.namespace_id.as_str(),
                self.api_token.expose(),
            );
            if let Some(base) = &self.base_url {
                builder = builder.base_url(base.as_str());
            }
            if let Some(timeout) = self.timeout {
                builder = builder.timeout(timeout);
            }
            let store = builder.build().map_err(|e| {
                crate::config::secrets::scrub_secrets(e, [self.api_token.expose().to_owned()])
            })?;
            Ok(std::sync::Arc::new(store))
        }
        #[cfg(not(feature = "cfworkers"))]
        Err(super::missing_feature("cfworkers", "cfworkers"))
    }
}
