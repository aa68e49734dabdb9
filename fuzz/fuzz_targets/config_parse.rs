//! The config parser (`StoreConfig::from_toml_str`, `BackendConfig::from_url`):
//! any text parses or fails with a `Config` error, never a panic, and what
//! parses can be shown (`Debug`).
#![no_main]

use kvtower::config::{BackendConfig, StoreConfig};
use kvtower::ErrorKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match StoreConfig::from_toml_str(text) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            let _ = e.to_string();
        }
    }
    match BackendConfig::from_url(text) {
        Ok(backend) => {
            let _ = format!("{backend:?}");
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::Config, "{e}"),
    }
});
