//! Reading a [`StoreConfig`] from TOML and the environment, and the serde
//! plumbing that makes every error name its field and line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::secrets::redact_text;
use super::{BackendConfig, StoreConfig, BACKEND_SCHEMES};
use crate::error::{Error, Result};

impl StoreConfig {
    /// Parses a TOML document.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the line, the field
    /// and the allowed values.
    ///
    /// ```
    /// use kvtower::{config::StoreConfig, ErrorKind};
    ///
    /// let err = StoreConfig::from_toml_str("backend = \"mysql://db\"").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Config);
    /// assert!(err.message().contains("redis://"), "{err}");
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let syntax = |e: toml::de::Error| Error::config(describe_toml_error(text, "", &e));
        let deserializer = toml::Deserializer::parse(text).map_err(syntax)?;
        let config: StoreConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Error::config(describe_toml_error(text, &path, e.inner()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error when the file cannot be
    /// read or is not a valid configuration (the message names the file).
    ///
    /// ```no_run
    /// let config = kvtower::config::StoreConfig::from_toml_file("config/prod.toml")?;
    /// # Ok::<(), kvtower::Error>(())
    /// ```
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}", path.display())).with_source(e))?;
        Self::from_toml_str(&text)
            .map_err(|e| Error::config(format!("{}: {}", path.display(), e.message())))
    }

    /// A configuration from the environment:
    ///
    /// * `KVTOWER_CONFIG=path/to/file.toml`: the whole configuration from a file;
    /// * else `KVTOWER_URL=redis://…` (any backend shorthand): that backend, no
    ///   layers.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error when neither variable is
    /// set or the value is invalid.
    ///
    /// ```
    /// std::env::set_var("KVTOWER_URL", "memory://");
    /// let config = kvtower::config::StoreConfig::from_env()?;
    /// assert_eq!(config.layers.len(), 0);
    /// # std::env::remove_var("KVTOWER_URL");
    /// # Ok::<(), kvtower::Error>(())
    /// ```
    pub fn from_env() -> Result<Self> {
        if let Some(path) = std::env::var_os("KVTOWER_CONFIG") {
            return Self::from_toml_file(PathBuf::from(path));
        }
        match std::env::var("KVTOWER_URL") {
            Ok(url) => Ok(Self::new(BackendConfig::from_url(&url).map_err(|e| {
                Error::config(format!("KVTOWER_URL: {}", e.message()))
            })?)),
            Err(std::env::VarError::NotPresent) => Err(Error::config(
                "neither KVTOWER_CONFIG (a TOML file) nor KVTOWER_URL (a backend URL) is set",
            )),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::config("KVTOWER_URL: not valid UTF-8"))
            }
        }
    }
}

/// `path: message (line N)`, with secrets redacted: the message may quote a
/// URL from the document.
fn describe_toml_error(text: &str, path: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    let sep = if path.is_empty() || message.starts_with(['.', ':', ' ', '(']) {
        ""
    } else {
        ": "
    };
    let line = err
        .span()
        .map(|span| {
            format!(
                " (line {})",
                text[..span.start.min(text.len())].matches('\n').count() + 1
            )
        })
        .unwrap_or_default();
    let message = redact_text(&format!("{path}{sep}{message}{line}"));
    message
        .strip_prefix(": ")
        .map(str::to_owned)
        .unwrap_or(message)
}

/// Deserializes the options of one tagged variant from what is left of its
/// table (held as TOML values, which keep `nan` and `inf` for the checks to
/// refuse, where JSON values would turn them into absent fields), naming the offending field in errors (`.capacity: invalid type…`).
pub(super) fn variant<'de, T: Deserialize<'de>, E: serde::de::Error>(
    what: &str,
    fields: toml::Table,
) -> std::result::Result<T, E> {
    serde_path_to_error::deserialize(toml::Value::Table(fields)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            E::custom(format_args!("({what}) {inner}"))
        } else {
            E::custom(format_args!(".{path} ({what}): {inner}"))
        }
    })
}

/// Removes the tag field from a variant's table.
pub(super) fn take_tag<E: serde::de::Error>(
    fields: &mut toml::Table,
    tag: &str,
    allowed: &str,
) -> std::result::Result<String, E> {
    match fields.remove(tag) {
        Some(toml::Value::String(s)) => Ok(s),
        Some(other) => Err(E::custom(format_args!(
            ".{tag}: expected a string, one of {allowed}; found {other}"
        ))),
        None => Err(E::custom(format_args!(
            ".{tag}: missing; expected one of {allowed}"
        ))),
    }
}

/// The URL shorthand or the table form.
impl<'de> Deserialize<'de> for BackendConfigOrUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BackendConfigOrUrl;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a backend URL ({BACKEND_SCHEMES}) or a table with a `kind`"
                )
            }
            fn visit_str<E: serde::de::Error>(
                self,
                url: &str,
            ) -> std::result::Result<Self::Value, E> {
                BackendConfig::from_url(url)
                    .map(BackendConfigOrUrl)
                    .map_err(|e| {
                        let message = e.message();
                        E::custom(format_args!(
                            ": {}",
                            message.strip_prefix("backend: ").unwrap_or(message)
                        ))
                    })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                BackendConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(BackendConfigOrUrl)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Helper so `backend = "redis://…"` and `[backend] kind = "redis"` both parse.
struct BackendConfigOrUrl(BackendConfig);

pub(super) fn deserialize_backend<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BackendConfig, D::Error> {
    BackendConfigOrUrl::deserialize(deserializer).map(|b| b.0)
}
