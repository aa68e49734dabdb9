//! [`Layout`]: which program's data format a Redis, PostgreSQL or SQLite
//! store reads and writes.
//!
//! [`Layout::Kvtower`], the default, is kvtower's own format: injective,
//! order-preserving key encodings that make `list` one range scan, and
//! values that keep every JSON value exactly. [`Layout::Fedify`] is the
//! format of Fedify's own `KvStore`s for the same backend, so that a Rust
//! service and a Fedify server (Node, Deno or Bun) share one database:
//!
//! | store | Fedify package (checked against) | where the data lives |
//! |---|---|---|
//! | `RedisKvStore` | `@fedify/redis` 1.8.7 `RedisKvStore` | keys `fedify::` + parts (`:` written `_:`) joined by `::`, values JSON text |
//! | `PostgresKvStore` | `@fedify/postgres` 1.8.7 `PostgresKvStore` | table `fedify_kv_v2`: `key text[]`, `value jsonb`, `created timestamptz`, `ttl interval` |
//! | `SqliteKvStore` | `@fedify/sqlite` 1.8.7 (and 2.0.0-dev.279) `SqliteKvStore` | table `fedify_kv`: `key` the JSON text of the parts, `value` JSON text, `created`/`expires` in ms |
//!
//! Each store's module documents the details and what Fedify's own code
//! cannot read back (keys its `list` decodes wrongly, values its driver
//! rejects). The `tests/fedify_interop.rs` tests run those npm packages
//! against the Rust stores, both ways.
//!
//! ```
//! use kvtower::stores::Layout;
//!
//! assert_eq!(Layout::default(), Layout::Kvtower);
//! assert_eq!("fedify".parse::<Layout>()?, Layout::Fedify);
//! # Ok::<(), kvtower::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which program's data format a store reads and writes: see the
/// [module docs](self).
///
/// ```
/// use kvtower::stores::Layout;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// # #[cfg(feature = "sqlite")] {
/// // Fedify's `fedify_kv` table, in a database a Fedify server also opens.
/// let store = kvtower::SqliteKvStore::builder()
///     .layout(Layout::Fedify)
///     .memory()
///     .await?;
/// assert_eq!(store.table(), "fedify_kv");
/// assert_eq!(store.layout(), Layout::Fedify);
/// # }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Layout {
    /// kvtower's own format (the default).
    #[default]
    Kvtower,
    /// The format of Fedify's own store for the same backend.
    Fedify,
}

impl Layout {
    /// The name used in configuration: `kvtower` or `fedify`.
    ///
    /// ```
    /// assert_eq!(kvtower::stores::Layout::Fedify.as_str(), "fedify");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Layout::Kvtower => "kvtower",
            Layout::Fedify => "fedify",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = Error;

    /// `kvtower` or `fedify`; anything else is a
    /// [`Config`](crate::ErrorKind::Config) error.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "kvtower" => Ok(Layout::Kvtower),
            "fedify" => Ok(Layout::Fedify),
            other => Err(Error::config(format!(
                "layout: {other:?} is not a layout (expected \"kvtower\" or \"fedify\")"
            ))),
        }
    }
}
