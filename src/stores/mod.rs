//! The backends, one module each; every one passes the same conformance suite.

#[cfg(feature = "denokv")]
pub mod denokv;
pub mod memory;
