//! `memory://`: a [`MemoryKvStore`](crate::MemoryKvStore) in this process.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Backend;
use crate::error::{Error, Result};
use crate::store::DynKvStore;

/// Options of a memory backend.
///
/// ```
/// use kvtower::config::{BackendConfig, StoreConfig};
///
/// let config = StoreConfig::from_toml_str("[backend]\nkind = \"memory\"\nmax_entries = 1000")?;
/// assert!(matches!(config.backend, BackendConfig::Memory(c) if c.max_entries == Some(1000)));
/// # Ok::<(), kvtower::Error>(())
/// ```
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

impl Backend for MemoryConfig {
    /// `memory://`: nothing to read from the URL.
    fn from_url(_url: &str) -> Result<Self> {
        Ok(Self::default())
    }

    fn validate(&self) -> Result<()> {
        if self.max_entries.is_some() && self.max_bytes.is_some() {
            return Err(Error::config(
                "backend: set one of max_entries and max_bytes, not both",
            ));
        }
        Ok(())
    }

    async fn build(&self) -> Result<DynKvStore> {
        let mut builder = crate::MemoryKvStore::builder();
        if let Some(max) = self.max_entries {
            builder = builder.max_entries(max);
        }
        if let Some(max) = self.max_bytes {
            builder = builder.max_bytes(max);
        }
        Ok(Arc::new(builder.build()))
    }
}
