//! The backends a configuration can name: one file each (its options, URL
//! form, checks and `build`), and [the table](backends) below that lists
//! them. Adding a backend is one new file implementing [`Backend`] and one
//! line in that table.

mod denokv;
mod memory;
mod postgres;
mod redis;
mod sqlite;
mod workers;

use serde::{Deserialize, Deserializer, Serialize};

use super::parse::{take_tag, variant};
use super::SecretUrl;
use crate::error::{Error, Result};
use crate::store::DynKvStore;
use crate::stores::Layout;

pub use self::denokv::DenoKvConfig;
pub use self::memory::MemoryConfig;
pub use self::postgres::PostgresConfig;
pub use self::redis::{RedisClusterConfig, RedisConfig};
pub use self::sqlite::SqliteConfig;
pub use self::workers::WorkersKvConfig;

/// The Redis namespace (and so the invalidation channel's prefix) when a
/// configuration names none; the same as `RedisKvStore`'s default.
pub(super) const DEFAULT_NAMESPACE: &str = "kvtower";

/// What the options of one backend know: how to read its URL shorthand,
/// what to check beyond the types, and how to open the store.
///
/// Messages of [`from_url`](Backend::from_url) and
/// [`validate`](Backend::validate) start with the field they are about
/// (`backend.urls: …`, or `backend: …` for the URL as a whole).
pub(crate) trait Backend: Sized {
    /// Parses a URL whose scheme is one of this backend's in the table.
    fn from_url(url: &str) -> Result<Self>;

    /// Checks what the types alone cannot.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Opens or connects the store. Without the backend's cargo feature, a
    /// [`missing_feature`] error.
    async fn build(&self) -> Result<DynKvStore>;

    /// The Redis this backend runs on and its namespace, where a cache
    /// layer's invalidation bus goes by default.
    fn redis_endpoint(&self) -> Option<(&SecretUrl, &str)> {
        None
    }
}

/// The error for a backend whose cargo feature is off:
/// "backend `denokv` needs the cargo feature `denokv` …".
#[allow(dead_code)] // with every feature on, nothing is missing
pub(super) fn missing_feature(kind: &str, feature: &str) -> Error {
    super::build::missing_feature(&format!("backend `{kind}`"), feature)
}

/// A `Config` error when `field` is set but only means something in the
/// Fedify layout, which `layout` is not.
fn fedify_only(layout: Option<Layout>, field: &str, set: bool) -> Result<()> {
    if set && layout != Some(Layout::Fedify) {
        return Err(Error::config(format!(
            "backend.{field}: only used with layout = \"fedify\""
        )));
    }
    Ok(())
}

/// `"a, b, "` without its last separator, for the lists the table makes.
const fn without_last_separator(list: &'static str) -> &'static str {
    let (head, _) = list.as_bytes().split_at(list.len() - 2);
    match std::str::from_utf8(head) {
        Ok(head) => head,
        Err(_) => panic!("the separator is ASCII"),
    }
}

/// Declares [`BackendConfig`] from the table of backends, and everything that
/// goes through every backend: the kind and scheme lists of messages, the URL
/// and table dispatch, checks and building.
macro_rules! backends {
    ($(
        $(#[$doc:meta])*
        $kind:literal [$($scheme:literal),+] => $variant:ident($options:ty),
    )+) => {
        /// Where the data lives. In TOML either a URL shorthand string or a
        /// table with a `kind` (see the [module docs](crate::config)).
        ///
        /// ```
        /// use kvtower::config::BackendConfig;
        /// assert!(matches!(BackendConfig::from_url("sqlite:///tmp/kv.db")?, BackendConfig::Sqlite(_)));
        /// # Ok::<(), kvtower::Error>(())
        /// ```
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "kind")]
        #[non_exhaustive]
        pub enum BackendConfig {
            $(
                $(#[$doc])*
                #[serde(rename = $kind)]
                $variant($options),
            )+
        }

        /// The backend kinds, for messages.
        pub(super) const BACKEND_KINDS: &str = without_last_separator(concat!($($kind, ", "),+));

        /// The URL schemes a backend shorthand may use.
        pub const BACKEND_SCHEMES: &str =
            without_last_separator(concat!($($($scheme, "://, "),+),+));

        $(
            impl From<$options> for BackendConfig {
                fn from(options: $options) -> Self {
                    BackendConfig::$variant(options)
                }
            }
        )+

        impl BackendConfig {
            /// The backend's kind, as in the `kind` field (`"memory"`, `"redis"`...).
            ///
            /// ```
            /// use kvtower::config::BackendConfig;
            /// assert_eq!(BackendConfig::from_url("redis://h")?.kind(), "redis");
            /// # Ok::<(), kvtower::Error>(())
            /// ```
            pub fn kind(&self) -> &'static str {
                match self {
                    $(BackendConfig::$variant(_) => $kind,)+
                }
            }

            /// The backend whose scheme `scheme` is (lowercase), parsed from `url`.
            fn from_scheme(scheme: &str, url: &str) -> Option<Result<Self>> {
                $(
                    if [$($scheme),+].contains(&scheme) {
                        return Some(<$options as Backend>::from_url(url).map(BackendConfig::$variant));
                    }
                )+
                None
            }

            /// The backend of kind `kind`, from the rest of its table.
            fn from_table<E: serde::de::Error>(
                kind: &str,
                fields: toml::Table,
            ) -> Option<std::result::Result<Self, E>> {
                $(
                    if kind == $kind {
                        return Some(variant::<$options, E>(kind, fields).map(BackendConfig::$variant));
                    }
                )+
                None
            }

            pub(super) fn validate(&self) -> Result<()> {
                match self {
                    $(BackendConfig::$variant(options) => options.validate(),)+
                }
            }

            async fn build_backend(&self) -> Result<DynKvStore> {
                match self {
                    $(BackendConfig::$variant(options) => options.build().await,)+
                }
            }

            /// The Redis URL and namespace of a Redis backend (a cluster's
            /// first seed node), for the invalidation bus.
            pub(super) fn redis_endpoint(&self) -> Option<(&SecretUrl, &str)> {
                match self {
                    $(BackendConfig::$variant(options) => options.redis_endpoint(),)+
                }
            }
        }
    };
}

// The table: kind (the `kind` of the TOML table), URL schemes, options.
backends! {
    /// [`MemoryKvStore`](crate::MemoryKvStore).
    "memory" ["memory"] => Memory(MemoryConfig),
    /// SQLite: a file, or `:memory:`.
    "sqlite" ["sqlite"] => Sqlite(SqliteConfig),
    /// A standalone Redis.
    "redis" ["redis", "rediss", "redis+unix", "unix"] => Redis(RedisConfig),
    /// A Redis Cluster, from one or more seed nodes.
    "redis_cluster" ["redis+cluster"] => RedisCluster(RedisClusterConfig),
    /// PostgreSQL.
    "postgres" ["postgres", "postgresql"] => Postgres(PostgresConfig),
    /// Deno KV: a local database file or a KV Connect server.
    "denokv" ["denokv", "denokv+http", "denokv+https"] => DenoKv(DenoKvConfig),
    /// Cloudflare Workers KV, through the Cloudflare API.
    "cfworkers" ["cfworkers"] => WorkersKv(WorkersKvConfig),
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
        // A scheme as RFC 3986 spells one, else this is no URL: text such as
        // libpq's `host=… password='a://b'` must never be echoed as a
        // "scheme", password included (found by the url_redact fuzz target).
        let is_scheme = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        };
        let Some((scheme, _)) = url
            .split_once("://")
            .filter(|(scheme, _)| is_scheme(scheme))
        else {
            return Err(Error::config(format!(
                "backend: `{}` is not a URL; expected one of {BACKEND_SCHEMES}",
                super::redact_url(url)
            )));
        };
        let scheme = scheme.to_ascii_lowercase();
        let backend = Self::from_scheme(&scheme, url).unwrap_or_else(|| {
            Err(Error::config(format!(
                "backend: unsupported URL scheme `{scheme}://`; expected one of {BACKEND_SCHEMES}"
            )))
        })?;
        backend.validate()?;
        Ok(backend)
    }

    /// Opens or connects the backend store alone, without layers.
    ///
    /// # Errors
    ///
    /// As [`StoreConfig::build`](super::StoreConfig::build).
    ///
    /// ```
    /// use kvtower::config::BackendConfig;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = BackendConfig::from_url("memory://")?.build().await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build(&self) -> Result<DynKvStore> {
        self.validate()?;
        self.build_backend().await
    }
}

impl<'de> Deserialize<'de> for BackendConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = toml::Table::deserialize(deserializer)?;
        let kind = take_tag::<D::Error>(&mut fields, "kind", BACKEND_KINDS)?;
        let backend = Self::from_table(&kind, fields).unwrap_or_else(|| {
            Err(D::Error::custom(format_args!(
                ".kind: unknown backend `{kind}`; expected one of {BACKEND_KINDS}"
            )))
        })?;
        backend
            .validate()
            .map_err(|e| D::Error::custom(e.message()))?;
        Ok(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_makes_the_lists_of_messages() {
        assert_eq!(
            BACKEND_KINDS,
            "memory, sqlite, redis, redis_cluster, postgres, denokv, cfworkers"
        );
        assert!(BACKEND_SCHEMES.starts_with("memory://, sqlite://, redis://"));
        assert!(BACKEND_SCHEMES.ends_with("denokv+https://, cfworkers://"));
    }
}
