//! [`StoreConfig`]: a store stack described as data, so environments differ in
//! configuration, not code (feature `config`).
//!
//! A configuration names a *backend* and an ordered list of *layers*, the
//! first being the outermost (the order of
//! [`tower::ServiceBuilder::layer`] calls).
//!
//! ```
//! use kvtower::config::StoreConfig;
//!
//! let config = StoreConfig::from_toml_str(r#"
//!     backend = "memory://"
//!
//!     [[layers]]
//!     type = "prefix"
//!     prefix = ["myapp"]
//!
//!     [[layers]]
//!     type = "default_ttl"
//!     ttl = "1h"
//! "#)?;
//! assert_eq!(config.layers.len(), 2);
//! # Ok::<(), kvtower::Error>(())
//! ```
//!
//! # Backends
//!
//! `backend` is a URL shorthand or a table with a `kind`:
//!
//! | URL | table | store |
//! |---|---|---|
//! | `memory://` | `kind = "memory"`, `max_entries`, `max_bytes` | [`MemoryKvStore`](crate::MemoryKvStore) |
//! | `sqlite:///abs/path.db`, `sqlite://rel/path.db`, `sqlite://:memory:` | `kind = "sqlite"`, `path`, `table` | `SqliteKvStore` (feature `sqlite`) |
//! | `redis://…`, `rediss://…`, `redis+unix://…` | `kind = "redis"`, `url`, `namespace`, `timeout` | `RedisKvStore` (feature `redis`) |
//! | `redis+cluster://host1:port1,host2:port2` | `kind = "redis_cluster"`, `urls`, `namespace`, `timeout` | `RedisKvStore` in cluster mode |
//! | `postgres://…`, `postgresql://…` | `kind = "postgres"`, `url`, `table` | `PostgresKvStore` (feature `postgres`) |
//!
//! # Layers
//!
//! | `type` | options |
//! |---|---|
//! | `cache` | `capacity` (entries), `max_bytes`, `ttl` (front max TTL), `negative_ttl`, `invalidation` |
//! | `prefix` | `prefix` (array of key parts) |
//! | `default_ttl` | `ttl`, `jitter` (fraction 0..=1), `max_ttl` |
//! | `metrics` | `name` |
//! | `tracing` | `name` |
//! | `timeout` | `timeout` |
//! | `retry` | `attempts`, `backoff` |
//!
//! Durations are strings like `"250ms"`, `"30s"`, `"1h"`.
//!
//! # Errors and secrets
//!
//! A bad configuration is an [`ErrorKind::Config`](crate::ErrorKind::Config)
//! error whose message names the field and the allowed values. Passwords and
//! tokens in URLs are redacted in errors and in `Debug` output
//! ([`SecretUrl`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The URL schemes a backend shorthand may use.
pub const BACKEND_SCHEMES: &str = "memory://, sqlite://, redis://, rediss://, redis+unix://, \
                                   redis+cluster://, postgres://, postgresql://";

/// A whole store stack: a backend and its layers, outermost first.
///
/// ```
/// use kvtower::config::{BackendConfig, LayerConfig, StoreConfig};
///
/// let config = StoreConfig::new(BackendConfig::from_url("memory://")?)
///     .layer(LayerConfig::Prefix(kvtower::config::PrefixConfig::new(["app"])));
/// assert_eq!(config.layers.len(), 1);
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the data lives.
    #[serde(deserialize_with = "deserialize_backend")]
    pub backend: BackendConfig,
    /// The layers, the first one outermost.
    #[serde(default)]
    pub layers: Vec<LayerConfig>,
}

impl StoreConfig {
    /// A configuration of `backend` with no layers.
    pub fn new(backend: BackendConfig) -> Self {
        Self {
            backend,
            layers: Vec::new(),
        }
    }

    /// Adds `layer` inside the layers added so far.
    #[must_use]
    pub fn layer(mut self, layer: LayerConfig) -> Self {
        self.layers.push(layer);
        self
    }

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
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read {}: {e}", path.display())).with_source(e)
        })?;
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

    /// Checks what the types alone cannot (ranges, non-empty lists).
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the field.
    pub fn validate(&self) -> Result<()> {
        self.backend.validate()?;
        for (i, layer) in self.layers.iter().enumerate() {
            layer
                .validate()
                .map_err(|e| Error::config(format!("layers[{i}].{}", e.message())))?;
        }
        Ok(())
    }
}

/// A URL that may hold a password or token: `Debug` and `Display` redact it;
/// [`expose`](SecretUrl::expose) gives the real URL to the driver.
///
/// ```
/// use kvtower::config::SecretUrl;
///
/// let url = SecretUrl::new("redis://app:hunter2@cache:6379/0");
/// assert_eq!(url.to_string(), "redis://app:***@cache:6379/0");
/// assert!(!format!("{url:?}").contains("hunter2"));
/// assert_eq!(url.expose(), "redis://app:hunter2@cache:6379/0");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its secrets, for the driver only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", redact_url(&self.0))
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretUrl)
    }
}

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "secret",
    "token",
    "access_token",
];

/// `url` with the password of its user info and the values of secret query
/// parameters replaced by `***`.
///
/// ```
/// use kvtower::config::redact_url;
/// assert_eq!(redact_url("postgres://u:p@h/db?password=x&sslmode=require"),
///            "postgres://u:***@h/db?password=***&sslmode=require");
/// assert_eq!(redact_url("redis://:token@h"), "redis://:***@h");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => format!("{userinfo}{host}"),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let (query, fragment) = match query.find('#') {
                Some(h) => query.split_at(h),
                None => (query, ""),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}{}{fragment}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
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
    let message = redact_secrets(&format!("{path}{sep}{message}{line}"));
    message
        .strip_prefix(": ")
        .map(str::to_owned)
        .unwrap_or(message)
}

/// Redacts every URL-looking word of a free text (an error message quoting a
/// configuration line, for example).
fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The URL starts after the last delimiter before the scheme separator.
        let start = rest[..i]
            .rfind(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '=' | ',' | '['))
            .map_or(0, |d| d + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ']'))
            .map_or(rest.len(), |e| i + e);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where the data lives. In TOML either a URL shorthand string or a table with
/// a `kind` (see the [module docs](self)).
///
/// ```
/// use kvtower::config::BackendConfig;
/// assert!(matches!(BackendConfig::from_url("sqlite:///tmp/kv.db")?, BackendConfig::Sqlite(_)));
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendConfig {
    /// [`MemoryKvStore`](crate::MemoryKvStore).
    Memory(MemoryConfig),
    /// SQLite: a file, or `:memory:`.
    Sqlite(SqliteConfig),
    /// A standalone Redis.
    Redis(RedisConfig),
    /// A Redis Cluster, from one or more seed nodes.
    RedisCluster(RedisClusterConfig),
    /// PostgreSQL.
    Postgres(PostgresConfig),
}

/// The backend kinds, for messages.
const BACKEND_KINDS: &str = "memory, sqlite, redis, redis_cluster, postgres";

/// Options of a memory backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Bound in entries (default 100,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u64>,
    /// Bound in bytes instead of entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// Options of a SQLite backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file (`:memory:` for a private in-memory database).
    pub path: PathBuf,
    /// The table name (default `kvtower`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// Options of a standalone Redis backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `redis+unix://` URL.
    pub url: SecretUrl,
    /// Key namespace (default `kvtower`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Per-operation timeout.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

/// Options of a Redis Cluster backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisClusterConfig {
    /// Seed node URLs.
    pub urls: Vec<SecretUrl>,
    /// Key namespace (default `kvtower`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Per-operation timeout.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

/// Options of a PostgreSQL backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://` URL.
    pub url: SecretUrl,
    /// The table name (default `kvtower`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl BackendConfig {
    /// Parses a backend URL shorthand.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the allowed schemes.
    ///
    /// ```
    /// use kvtower::config::BackendConfig;
    /// let err = BackendConfig::from_url("mysql://u:secret@db").unwrap_err();
    /// assert!(err.message().contains("redis://"));
    /// assert!(!err.to_string().contains("secret"));
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::config(format!(
                "backend: `{}` is not a URL; expected one of {BACKEND_SCHEMES}",
                redact_url(url)
            )));
        };
        let backend = match scheme.to_ascii_lowercase().as_str() {
            "memory" => BackendConfig::Memory(MemoryConfig::default()),
            "sqlite" => {
                if rest.is_empty() {
                    return Err(Error::config(
                        "backend: `sqlite://` needs a path, e.g. sqlite:///var/lib/app/kv.db or sqlite://:memory:",
                    ));
                }
                BackendConfig::Sqlite(SqliteConfig {
                    path: PathBuf::from(rest),
                    table: None,
                })
            }
            "redis" | "rediss" | "redis+unix" | "unix" => BackendConfig::Redis(RedisConfig {
                url: SecretUrl::new(url),
                namespace: None,
                timeout: None,
            }),
            "redis+cluster" => BackendConfig::RedisCluster(RedisClusterConfig {
                urls: rest
                    .split(',')
                    .filter(|node| !node.is_empty())
                    .map(|node| SecretUrl::new(format!("redis://{node}")))
                    .collect(),
                namespace: None,
                timeout: None,
            }),
            "postgres" | "postgresql" => BackendConfig::Postgres(PostgresConfig {
                url: SecretUrl::new(url),
                table: None,
            }),
            other => {
                return Err(Error::config(format!(
                "backend: unsupported URL scheme `{other}://`; expected one of {BACKEND_SCHEMES}"
            )))
            }
        };
        backend.validate()?;
        Ok(backend)
    }

    fn validate(&self) -> Result<()> {
        match self {
            BackendConfig::Memory(MemoryConfig {
                max_entries: Some(_),
                max_bytes: Some(_),
            }) => Err(Error::config(
                "backend: set one of max_entries and max_bytes, not both",
            )),
            BackendConfig::RedisCluster(c) if c.urls.is_empty() => Err(Error::config(
                "backend.urls: a Redis Cluster needs at least one seed node URL",
            )),
            _ => Ok(()),
        }
    }
}

/// Deserializes the options of one tagged variant from what is left of its
/// table, naming the offending field in errors (`.capacity: invalid type…`).
fn variant<'de, T: Deserialize<'de>, E: serde::de::Error>(
    what: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<T, E> {
    serde_path_to_error::deserialize(serde_json::Value::Object(fields)).map_err(|e| {
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
fn take_tag<E: serde::de::Error>(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    tag: &str,
    allowed: &str,
) -> std::result::Result<String, E> {
    match fields.remove(tag) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(other) => Err(E::custom(format_args!(
            ".{tag}: expected a string, one of {allowed}; found {other}"
        ))),
        None => Err(E::custom(format_args!(
            ".{tag}: missing; expected one of {allowed}"
        ))),
    }
}

impl<'de> Deserialize<'de> for BackendConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = serde_json::Map::deserialize(deserializer)?;
        let kind = take_tag::<D::Error>(&mut fields, "kind", BACKEND_KINDS)?;
        let backend = match kind.as_str() {
            "memory" => BackendConfig::Memory(variant(&kind, fields)?),
            "sqlite" => BackendConfig::Sqlite(variant(&kind, fields)?),
            "redis" => BackendConfig::Redis(variant(&kind, fields)?),
            "redis_cluster" => BackendConfig::RedisCluster(variant(&kind, fields)?),
            "postgres" => BackendConfig::Postgres(variant(&kind, fields)?),
            other => {
                return Err(D::Error::custom(format_args!(
                    ".kind: unknown backend `{other}`; expected one of {BACKEND_KINDS}"
                )))
            }
        };
        backend
            .validate()
            .map_err(|e| D::Error::custom(e.message()))?;
        Ok(backend)
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

fn deserialize_backend<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BackendConfig, D::Error> {
    BackendConfigOrUrl::deserialize(deserializer).map(|b| b.0)
}

/// One layer of the stack (see the [module docs](self) for the options).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LayerConfig {
    /// A moka front tier ([`CacheLayer`](crate::layers::CacheLayer)).
    Cache(CacheConfig),
    /// Key prefixing ([`PrefixLayer`](crate::layers::PrefixLayer)).
    Prefix(PrefixConfig),
    /// A default TTL ([`DefaultTtlLayer`](crate::layers::DefaultTtlLayer)).
    DefaultTtl(DefaultTtlConfig),
    /// Metrics ([`MetricsLayer`](crate::layers::MetricsLayer)).
    Metrics(MetricsConfig),
    /// Tracing spans ([`TracingLayer`](crate::layers::TracingLayer)).
    Tracing(TracingConfig),
    /// tower's timeout around the inner stack.
    Timeout(TimeoutConfig),
    /// Retries of retryable errors around the inner stack.
    Retry(RetryConfig),
}

/// The layer types, for messages.
const LAYER_TYPES: &str = "cache, prefix, default_ttl, metrics, tracing, timeout, retry";

impl<'de> Deserialize<'de> for LayerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = serde_json::Map::deserialize(deserializer)?;
        let ty = take_tag::<D::Error>(&mut fields, "type", LAYER_TYPES)?;
        Ok(match ty.as_str() {
            "cache" => LayerConfig::Cache(variant(&ty, fields)?),
            "prefix" => LayerConfig::Prefix(variant(&ty, fields)?),
            "default_ttl" => LayerConfig::DefaultTtl(variant(&ty, fields)?),
            "metrics" => LayerConfig::Metrics(variant(&ty, fields)?),
            "tracing" => LayerConfig::Tracing(variant(&ty, fields)?),
            "timeout" => LayerConfig::Timeout(variant(&ty, fields)?),
            "retry" => LayerConfig::Retry(variant(&ty, fields)?),
            other => {
                return Err(D::Error::custom(format_args!(
                    ".type: unknown layer `{other}`; expected one of {LAYER_TYPES}"
                )))
            }
        })
    }
}

/// Options of a cache layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Front-tier bound in entries (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// Front-tier bound in bytes instead of entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// The longest a front entry lives.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// Cache absent keys for this long (off when unset).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub negative_ttl: Option<Duration>,
    /// The cross-node invalidation bus (on by default over a Redis backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidation: Option<InvalidationConfig>,
}

/// Options of a prefix layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrefixConfig {
    /// The prefix's parts (at least one).
    pub prefix: Vec<String>,
}

impl PrefixConfig {
    /// A prefix of the given parts.
    ///
    /// ```
    /// let p = kvtower::config::PrefixConfig::new(["app", "v1"]);
    /// assert_eq!(p.prefix, ["app", "v1"]);
    /// ```
    pub fn new<I: IntoIterator<Item = P>, P: Into<String>>(parts: I) -> Self {
        Self {
            prefix: parts.into_iter().map(Into::into).collect(),
        }
    }
}

/// Options of a default-TTL layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DefaultTtlConfig {
    /// Applied to writes that give none.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Spread expiries by up to this fraction of the TTL (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Clamp every TTL to at most this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_ttl: Option<Duration>,
}

impl DefaultTtlConfig {
    /// A default TTL with no jitter and no clamp.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = kvtower::config::DefaultTtlConfig::new(Duration::from_secs(60));
    /// assert_eq!(c.jitter, None);
    /// ```
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            jitter: None,
            max_ttl: None,
        }
    }
}

/// Options of a metrics layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// The `store` label.
    pub name: String,
}

impl MetricsConfig {
    /// Metrics labelled `store = name`.
    ///
    /// ```
    /// assert_eq!(kvtower::config::MetricsConfig::new("app").name, "app");
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Options of a tracing layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TracingConfig {
    /// The store name in spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Options of a timeout layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// The deadline of each operation.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Options of a retry layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Total attempts, the first included (at least 1).
    pub attempts: u32,
    /// Pause before the first retry (default 10ms, doubling).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<Duration>,
}

impl LayerConfig {
    fn validate(&self) -> Result<()> {
        match self {
            LayerConfig::Prefix(p) if p.prefix.is_empty() => Err(Error::config(
                "prefix: needs at least one part, e.g. prefix = [\"myapp\"]",
            )),
            LayerConfig::Cache(CacheConfig {
                capacity: Some(_),
                max_bytes: Some(_),
                ..
            }) => Err(Error::config(
                "cache: set one of capacity and max_bytes, not both",
            )),
            LayerConfig::DefaultTtl(DefaultTtlConfig {
                jitter: Some(j), ..
            }) if !(0.0..=1.0).contains(j) => Err(Error::config(format!(
                "default_ttl.jitter: {j} is out of range; expected a fraction from 0 to 1"
            ))),
            LayerConfig::Retry(RetryConfig { attempts: 0, .. }) => Err(Error::config(
                "retry.attempts: must be at least 1 (the first attempt counts)",
            )),
            LayerConfig::Timeout(t) if t.timeout.is_zero() => {
                Err(Error::config("timeout.timeout: must be more than zero"))
            }
            _ => Ok(()),
        }
    }
}

/// The cross-node invalidation bus of a cache layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidationConfig {
    /// Whether the bus runs (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The Redis to publish on (default: the backend's Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretUrl>,
    /// The pub/sub channel (default `<namespace>:invalidate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

fn yes() -> bool {
    true
}
