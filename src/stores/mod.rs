//! The backends, one module each; every one passes the same conformance suite.

#[cfg(feature = "cfworkers")]
pub mod cfworkers;
#[cfg(feature = "denokv")]
pub mod denokv;
pub mod memory;
