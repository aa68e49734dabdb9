//! The internal encoders and decoders, reachable by the `cargo fuzz` targets
//! in `fuzz/` (feature `fuzzing`).
//!
//! Not a public API: hidden from the docs, thin wrappers only (no logic of
//! their own, so a target exercises exactly the code a store runs), and free
//! to change with any release.

#[cfg(any(
    feature = "redis",
    feature = "sqlite",
    feature = "postgres",
    feature = "denokv",
    feature = "cfworkers"
))]
use crate::operation::Operation;
use crate::{KvKey, Result, Value};

/// The JSON decoding every store shares: its direct parser and serde_json's.
pub mod json {
    use super::*;

    /// The direct parser's value, or `None` where it leaves the text to
    /// serde_json.
    pub fn direct(bytes: &[u8]) -> Option<Value> {
        crate::value::direct(bytes)
    }

    /// serde_json's answer (depth-bounded), as an error's text when it fails.
    pub fn with_serde(bytes: &[u8]) -> std::result::Result<Value, String> {
        crate::value::with_serde(bytes).map_err(|e| e.to_string())
    }
}

/// `RedisKvStore`'s key escaping and value decoding.
#[cfg(feature = "redis")]
pub mod redis {
    use super::*;
    use crate::stores::redis::encoding;

    /// The Redis keys of one namespace.
    #[derive(Debug, Clone)]
    pub struct KeyCodec(encoding::KeyCodec);

    impl KeyCodec {
        /// The codec of `namespace`.
        pub fn new(namespace: &str) -> Self {
            Self(encoding::KeyCodec::new(namespace))
        }

        /// The Redis key of `key`.
        pub fn encode(&self, key: &KvKey) -> Vec<u8> {
            self.0.encode(key)
        }

        /// The key a Redis key encodes, or why it is not one of this namespace.
        pub fn decode(&self, raw: &[u8]) -> std::result::Result<KvKey, String> {
            self.0.decode(raw)
        }

        /// The `SCAN MATCH` pattern of the keys strictly under `prefix`.
        pub fn descendants_pattern(&self, prefix: Option<&KvKey>) -> Vec<u8> {
            self.0.descendants_pattern(prefix)
        }
    }

    /// A value as `RedisKvStore` stores it.
    pub fn encode_value(value: &Value) -> Result<Vec<u8>> {
        encoding::encode_value(value)
    }

    /// A stored Redis string as a value (`get`, `get_many`, `list`, `cas`).
    pub fn decode_value(raw: &[u8]) -> Result<Value> {
        encoding::decode_value(raw)
    }
}

/// The SQL stores' order-preserving key encoding and value parsing.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql {
    use super::*;
    use crate::stores::sql;

    /// `enc(key)`, the `key` column.
    pub fn encode_key(key: &KvKey) -> Vec<u8> {
        sql::encode_key(key)
    }

    /// The key of a `key` column.
    pub fn decode_key(bytes: &[u8]) -> Result<KvKey> {
        sql::decode_key(bytes)
    }

    /// The half-open range `[start, end)` a listing of `prefix` scans.
    pub fn prefix_range(prefix: Option<&KvKey>) -> (Vec<u8>, Vec<u8>) {
        sql::prefix_range(prefix)
    }

    /// A value as both SQL stores store it (JSON text).
    pub fn value_text(value: &Value) -> String {
        sql::value_text(value)
    }

    /// A Postgres `value` column (`json`, read as text) as a value.
    pub fn parse_value(text: &str, key: &KvKey) -> Result<Value> {
        sql::parse_value(text, key, Operation::Get)
    }
}

/// `SqliteKvStore`'s value decoding.
#[cfg(feature = "sqlite")]
pub mod sqlite {
    use super::*;

    /// A SQLite `TEXT` value cell (any bytes) as a value.
    pub fn text_value(text: &[u8], key: &KvKey) -> Result<Value> {
        crate::stores::sqlite::text_value(text, key, Operation::Get)
    }
}

/// `DenoKvStore`'s V8 value codec and key decoding.
#[cfg(feature = "denokv")]
pub mod denokv {
    use super::*;
    use crate::stores::denokv;

    /// `value` in V8's serialization format.
    pub fn v8_encode(value: &Value) -> Result<Vec<u8>> {
        denokv::v8::encode(value)
    }

    /// A V8-serialized value as JSON.
    pub fn v8_decode(bytes: &[u8]) -> Result<Value> {
        denokv::v8::decode(bytes)
    }

    /// A stored value with its `v_encoding` column as JSON.
    pub fn decode_value(bytes: Vec<u8>, encoding: i64) -> Result<Value> {
        denokv::decode_kv_value(bytes, encoding).and_then(denokv::json_of)
    }

    /// The Deno KV key of `key` under `prefix`.
    pub fn encode_key(prefix: &[String], key: &KvKey) -> Result<Vec<u8>> {
        denokv::encode_parts_under(prefix, key.parts())
    }

    /// The key of a stored Deno KV key under `prefix`, if it is one.
    pub fn decode_key(prefix: &[String], bytes: &[u8]) -> Option<KvKey> {
        denokv::decode_key_under(prefix, bytes)
    }
}

/// `WorkersKvStore`'s layout (Fedify's).
#[cfg(feature = "cfworkers")]
pub mod cfworkers {
    use super::*;
    use crate::stores::cfworkers::layout;

    /// The key name of `key`.
    pub fn encode_key(key: &KvKey) -> Result<String> {
        layout::encode_key(key)
    }

    /// The key of a key name, if this layout wrote it.
    pub fn decode_key(name: &str) -> Option<KvKey> {
        layout::decode_key(name)
    }

    /// The exact name and the name prefix of the keys below `prefix`.
    pub fn list_plan(prefix: Option<&KvKey>) -> Result<(Option<String>, String)> {
        layout::list_plan(prefix)
    }

    /// The value text `put` stores for `value` under `key`.
    pub fn encode_value(key: &KvKey, value: &Value) -> Result<String> {
        layout::put(key, value, None, 0).map(|put| put.value)
    }

    /// A stored value text as a value.
    pub fn decode_value(text: &str) -> Result<Value> {
        layout::decode_value(text)
    }

    /// Whether stored metadata (JSON text, as Fedify writes it) parses, and if
    /// so whether the entry is live at `now_ms`.
    pub fn metadata_is_live(metadata: &str, now_ms: u64) -> Option<bool> {
        let metadata: layout::Metadata = serde_json::from_str(metadata).ok()?;
        Some(layout::is_live(Some(&metadata), now_ms))
    }
}

/// The crate's one URL redactor (`Debug`, `Display` and errors of URLs).
#[cfg(any(feature = "config", feature = "redis", feature = "postgres"))]
pub mod redact {
    /// `text` with its passwords and tokens replaced by `***`.
    pub fn redact_url(text: &str) -> String {
        crate::redact::redact_url(text)
    }

    /// The secrets of `text` as a driver may print them.
    pub fn secrets(text: &str) -> Vec<String> {
        crate::redact::secrets(text)
    }
}
