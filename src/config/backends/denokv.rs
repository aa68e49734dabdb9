//! `denokv://` and `denokv+https://`: a `DenoKvStore` on a local database
//! file or a KV Connect server (feature `denokv`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Backend;
use crate::config::secrets::{percent_decode, userinfo_secret};
use crate::config::{SecretString, SecretUrl};
use crate::error::{Error, Result};
use crate::store::DynKvStore;

/// Options of a Deno KV backend: a local database file (`path`, the file
/// `Deno.openKv(path)` opens) or a KV Connect server (`url` and
/// `access_token`, e.g. a `denokv serve` or Deno Deploy).
///
/// URL forms: `denokv:///abs/path.sqlite3` and `denokv://rel/path.sqlite3`
/// for a file; `denokv+https://:TOKEN@host/path` (or `denokv+http://` for a
/// local server) for KV Connect, the token in the password of the URL.
///
/// ```
/// use kvtower::config::{BackendConfig, StoreConfig};
///
/// let BackendConfig::DenoKv(c) = BackendConfig::from_url("denokv:///var/lib/app/kv.sqlite3")? else { panic!() };
/// assert_eq!(c.path.as_deref().and_then(|p| p.to_str()), Some("/var/lib/app/kv.sqlite3"));
///
/// let config = StoreConfig::from_toml_str(r#"
///     [backend]
///     kind = "denokv"
///     url = "https://api.deno.com/databases/0000/connect"
///     access_token = "ddp_secret"
///     prefix = ["_fedify"]
///     timeout = "5s"
/// "#)?;
/// assert!(!format!("{config:?}").contains("ddp_secret"));
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DenoKvConfig {
    /// The database file of a local Deno KV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The KV Connect metadata endpoint (`http://host:4512` for a `denokv
    /// serve`, `https://api.deno.com/databases/<id>/connect` on Deno Deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretUrl>,
    /// The KV Connect access token (with `url` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<SecretString>,
    /// The Deno key parts every key lives under (none by default; Fedify
    /// uses `["_fedify"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix: Vec<String>,
    /// The bound on one remote call (default 30 s; with `url` only).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

const URL_FORMS: &str = "denokv:///path/to/kv.sqlite3 or denokv+https://:TOKEN@host/…";

impl Backend for DenoKvConfig {
    fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").unwrap_or((url, ""));
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "denokv" {
            if rest.is_empty() {
                return Err(Error::config(format!(
                    "backend: `denokv://` needs a path, e.g. {URL_FORMS}"
                )));
            }
            return Ok(Self {
                path: Some(PathBuf::from(rest)),
                ..Self::default()
            });
        }
        // denokv+http(s)://[user:token@]host…: the token leaves the URL the
        // store connects to.
        let transport = scheme.trim_start_matches("denokv+");
        let (token, address) = userinfo_secret(rest);
        Ok(Self {
            url: Some(SecretUrl::new(format!("{transport}://{address}"))),
            access_token: token
                .map(|t| SecretString::new(percent_decode(t).unwrap_or_else(|| t.to_owned()))),
            ..Self::default()
        })
    }

    fn validate(&self) -> Result<()> {
        match (&self.path, &self.url) {
            (Some(_), Some(_)) => Err(Error::config(
                "backend: a `denokv` backend has a `path` (a local file) or a `url` (KV Connect), not both",
            )),
            (None, None) => Err(Error::config(format!(
                "backend: a `denokv` backend needs a `path` (a local file) or a `url` (KV Connect): {URL_FORMS}"
            ))),
            (Some(path), None) => {
                if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
                    return Err(Error::config(
                        "backend.path: Deno KV needs a database file (`:memory:` is not supported: \
                         the store reads through a second connection); use a temporary file",
                    ));
                }
                if self.access_token.is_some() {
                    return Err(Error::config(
                        "backend.access_token: only for a KV Connect `url`, not a local `path`",
                    ));
                }
                if self.timeout.is_some() {
                    return Err(Error::config(
                        "backend.timeout: only for a KV Connect `url` (a local file has no remote calls)",
                    ));
                }
                Ok(())
            }
            (None, Some(url)) => {
                let lower = url.expose().to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    return Err(Error::config(format!(
                        "backend.url: `{url}` is not an http:// or https:// KV Connect URL"
                    )));
                }
                if self.access_token.as_ref().is_none_or(|t| t.expose().is_empty()) {
                    return Err(Error::config(
                        "backend.access_token: KV Connect needs an access token \
                         (access_token = \"…\", or denokv+https://:TOKEN@host/…)",
                    ));
                }
                if self.timeout.is_some_and(|t| t.is_zero()) {
                    return Err(Error::config("backend.timeout: must be more than zero"));
                }
                Ok(())
            }
        }
    }

    async fn build(&self) -> Result<DynKvStore> {
        #[cfg(feature = "denokv")]
        {
            let mut builder = crate::DenoKvStore::builder().prefix(self.prefix.iter().cloned());
            if let Some(timeout) = self.timeout {
                builder = builder.timeout(timeout);
            }
            let store = match (&self.path, &self.url, &self.access_token) {
                (Some(path), _, _) => builder.open(path)?,
                (None, Some(url), Some(token)) => {
                    builder.connect(url.expose(), token.expose()).map_err(|e| {
                        let mut secrets = crate::config::secrets::url_secrets(url.expose());
                        secrets.push(token.expose().to_owned());
                        crate::config::secrets::scrub_secrets(e, secrets)
                    })?
                }
                // `validate` ran first.
                _ => return Err(Error::config("backend: invalid `denokv` backend")),
            };
            Ok(std::sync::Arc::new(store))
        }
        #[cfg(not(feature = "denokv"))]
        Err(super::missing_feature("denokv", "denokv"))
    }
}
