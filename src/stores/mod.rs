//! The backends, one module each; every one passes the same conformance suite.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
