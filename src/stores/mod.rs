//! The backends, one module each; every one passes the same conformance suite.

#[cfg(feature = "cfworkers")]
pub mod cfworkers;
#[cfg(feature = "denokv")]
pub mod denokv;
pub mod layout;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use layout::Layout;
