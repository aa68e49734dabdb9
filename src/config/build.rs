//! Building a [`StoreConfig`]: the backend first, then each layer around it,
//! innermost first.

use super::StoreConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::store::DynKvStore;

impl StoreConfig {
    /// Builds the store: the backend, wrapped in the layers from the last
    /// (innermost) to the first (outermost). See [Building](crate::config#building).
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error for an invalid
    /// configuration or a backend whose cargo feature is not compiled in; the
    /// backend's own error (kind [`Unavailable`](crate::ErrorKind::Unavailable),
    /// [`Timeout`](crate::ErrorKind::Timeout), ...) when it cannot be reached.
    /// Neither message holds a password or token of the configuration.
    ///
    /// ```
    /// use kvtower::config::StoreConfig;
    /// use kvtower::{kvkey, KvStore, SetOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let store = StoreConfig::from_toml_str(r#"
    ///     backend = "memory://"
    ///     [[layers]]
    ///     type = "prefix"
    ///     prefix = ["myapp"]
    /// "#)?.build().await?;
    /// store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
    /// assert_eq!(store.get(&kvkey!["a"]).await?, Some(1.into()));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build(&self) -> Result<DynKvStore> {
        self.validate()?;
        let mut store = self.backend.build().await?;
        // Inner layers first: cache tiers sharing a bus are attached (and so
        // invalidated) inner tier first.
        let mut buses = super::layers::Buses::default();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            store = layer
                .wrap(store, &self.backend, &mut buses)
                .await
                .map_err(|e| {
                    if e.kind() == ErrorKind::Config {
                        Error::config(format!("layers[{i}].{}", e.message()))
                    } else {
                        e
                    }
                })?;
        }
        Ok(store)
    }
}

/// The error for a backend or layer whose cargo feature is off, e.g.
/// "backend `denokv` needs the cargo feature `denokv`".
#[allow(dead_code)] // with every feature on, nothing is missing
pub(super) fn missing_feature(what: &str, feature: &str) -> Error {
    Error::config(format!(
        "{what} needs the cargo feature `{feature}` of kvtower (in Cargo.toml: \
         kvtower = {{ features = [\"config\", \"{feature}\"] }})"
    ))
}
