//! The storage layout Fedify's `WorkersKvStore` uses, shared by every way
//! into Workers KV: what a key, a value and an expiry look like in the
//! namespace. Pure functions, no I/O, tested natively.
//!
//! * Key: the JSON array of the key's parts (`JSON.stringify(key)`), e.g.
//!   `["user","42"]`, at most 512 bytes (Workers KV's limit).
//! * Value: the value's JSON text.
//! * Metadata: `{"expires": <ms since the epoch>}` when the entry has a TTL,
//!   `{}` otherwise. Workers KV's own expiry (`expiration_ttl`) is set too,
//!   but no shorter than its 60-second minimum; the metadata is what makes a
//!   shorter TTL hold: an entry past `expires` reads as absent.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::store::Value;

/// Workers KV's limit on a key name, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 512;
/// Workers KV's minimum `expiration_ttl`, in seconds.
pub(crate) const MIN_EXPIRATION_TTL: u64 = 60;

/// The metadata stored with each entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Metadata {
    /// When the entry expires, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires: Option<f64>,
}

/// What one `put` sends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Put {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) metadata: Metadata,
    /// Workers KV's own expiry, in seconds (at least the 60-second minimum).
    pub(crate) expiration_ttl: Option<u64>,
}

/// The key name of `key`.
pub(crate) fn encode_key(key: &KvKey) -> Result<String> {
    let name = serde_json::to_string(key.parts())
        .map_err(|e| Error::new(ErrorKind::InvalidKey, e.to_string()).with_key(key))?;
    if name.len() > MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidKey,
            format!(
                "the encoded key is {} bytes, Workers KV allows {MAX_KEY_BYTES}",
                name.len()
            ),
        )
        .with_key(key));
    }
    Ok(name)
}

/// The key of a key name, or `None` for a name this layout did not write.
///
/// Only the exact text [`encode_key`] writes counts: `[ "a"]` or `["\u0061"]`
/// parse as `["a"]` too, but a `get` of `["a"]` reads the name `["a"]`, so
/// listing such a foreign name as `["a"]` would yield an entry that `get`,
/// `delete` and `cas` of the key it names never touch (or a key twice).
pub(crate) fn decode_key(name: &str) -> Option<KvKey> {
    let parts: Vec<String> = serde_json::from_str(name).ok()?;
    let key = KvKey::new(parts).ok()?;
    (encode_key(&key).ok()? == name).then_some(key)
}

/// What a listing by `prefix` reads: the exact key (if any) and the name
/// prefix of every key below it. `["a"]` lists `["a"]` itself and every name
/// starting with `["a",`, never `["ab"]`.
pub(crate) fn list_plan(prefix: Option<&KvKey>) -> Result<(Option<String>, String)> {
    match prefix {
        None => Ok((None, String::from("["))),
        Some(prefix) => {
            let exact = encode_key(prefix)?;
            let mut below = exact[..exact.len() - 1].to_owned();
            below.push(',');
            Ok((Some(exact), below))
        }
    }
}

/// The `put` of `value` under `key` with `ttl`, at `now_ms`. A TTL of zero is
/// the caller's to handle (as a delete).
pub(crate) fn put(key: &KvKey, value: &Value, ttl: Option<Duration>, now_ms: u64) -> Result<Put> {
    let key = encode_key(key)?;
    let value = serde_json::to_string(value)?;
    let (metadata, expiration_ttl) = match ttl {
        None => (Metadata::default(), None),
        Some(ttl) => match expiry(ttl, now_ms) {
            // Too far out for a JavaScript number to say: never expires, like a
            // TTL past the SQL stores' range.
            None => (Metadata::default(), None),
            Some((expires, seconds)) => (
                Metadata {
                    expires: Some(expires as f64),
                },
                Some(seconds.max(MIN_EXPIRATION_TTL)),
            ),
        },
    };
    Ok(Put {
        key,
        value,
        metadata,
        expiration_ttl,
    })
}

/// The largest integer a JavaScript number (what Fedify reads `expires` as,
/// and what `expiration_ttl` is) holds exactly: 2^53 - 1.
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// When an entry written at `now_ms` with `ttl` expires (ms since the epoch)
/// and its `expiration_ttl` in whole seconds, rounded up so never early; `None`
/// when the expiry is past [`MAX_SAFE_INTEGER`] ms (about 285,000 years from
/// 1970), which no JavaScript reader could represent. Checked arithmetic:
/// `Duration::MAX` must not overflow (it used to wrap to a 60-second TTL).
fn expiry(ttl: Duration, now_ms: u64) -> Option<(u64, u64)> {
    let ms = u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).ok()?;
    let expires = now_ms
        .checked_add(ms)
        .filter(|&at| at <= MAX_SAFE_INTEGER)?;
    let seconds = u64::try_from(ttl.as_nanos().div_ceil(1_000_000_000)).ok()?;
    Some((expires, seconds))
}

/// Whether an entry with this metadata is live at `now_ms`. Like Fedify, an
/// entry without metadata (not written by this layout) is treated as absent.
pub(crate) fn is_live(metadata: Option<&Metadata>, now_ms: u64) -> bool {
    match metadata {
        None => false,
        Some(Metadata { expires: None }) => true,
        Some(Metadata {
            expires: Some(expires),
        }) => (now_ms as f64) < *expires,
    }
}

/// What is left at `now_ms` of a live entry's lifetime, from its `expires`
/// (`None`: never expires). Rounded down, so a cache filled from it never
/// outlives the entry. (`expires` is on the writer's clock: clock skew
/// between writer and reader shifts it, as it shifts [`is_live`].)
pub(crate) fn remaining(metadata: Option<&Metadata>, now_ms: u64) -> Option<Duration> {
    let expires = metadata?.expires?;
    // `as` saturates: a negative or NaN difference is zero.
    Some(Duration::from_millis((expires - now_ms as f64) as u64))
}

/// The value of a stored JSON text.
pub(crate) fn decode_value(text: &str) -> Result<Value> {
    Ok(crate::value::from_str(text)?)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvkey;
    use serde_json::json;

    #[test]
    fn keys_are_json_arrays_like_fedify() {
        assert_eq!(
            encode_key(&kvkey!["user", "42"]).unwrap(),
            r#"["user","42"]"#
        );
        // JSON.stringify's escaping: quotes, backslashes, control characters.
        assert_eq!(
            encode_key(&kvkey!["a\"b", "\\", "\0\n", "ü"]).unwrap(),
            r#"["a\"b","\\","\u0000\n","ü"]"#
        );
        for key in [
            kvkey!["a", ""],
            kvkey!["a,b"],
            kvkey!["a\"", "b"],
            kvkey!["\u{10ffff}", "\u{1}"],
            kvkey!["]"],
        ] {
            assert_eq!(decode_key(&encode_key(&key).unwrap()), Some(key));
        }
        assert_eq!(decode_key("plain"), None);
        assert_eq!(decode_key("[]"), None);
        assert_eq!(decode_key("[1]"), None);
        let long = kvkey!["x".repeat(600)];
        assert_eq!(encode_key(&long).unwrap_err().kind(), ErrorKind::InvalidKey);
    }

    #[test]
    fn only_canonical_names_decode() {
        // Found writing the `workers_layout` fuzz target's canonical-name check:
        // these parsed as `["a"]`.
        for foreign in [r#"[ "a"]"#, r#"["\u0061"]"#, "[\"a\"]\n", r#"["a" ]"#] {
            assert_eq!(decode_key(foreign), None, "{foreign}");
        }
        assert_eq!(decode_key(r#"["a"]"#), Some(kvkey!["a"]));
    }

    fn arb_key() -> impl proptest::strategy::Strategy<Value = KvKey> {
        use proptest::prelude::*;
        proptest::collection::vec("[a,\"\\\\\\]\\[\x00\n\x7fü]{0,4}", 1..4)
            .prop_map(|parts| KvKey::new(parts).unwrap())
    }

    proptest::proptest! {
        // The invariants the `workers_layout` fuzz target checks, on stable.
        #[test]
        fn names_decode_back_and_list_part_wise(a in arb_key(), b in arb_key()) {
            let (na, nb) = (encode_key(&a).unwrap(), encode_key(&b).unwrap());
            proptest::prop_assert_eq!(decode_key(&na), Some(a.clone()));
            proptest::prop_assert_eq!(na == nb, a == b);
            let (_, below) = list_plan(Some(&b)).unwrap();
            let under = a.starts_with(&b) && a.len() > b.len();
            proptest::prop_assert_eq!(na.starts_with(&below), under);
        }
    }

    #[test]
    fn list_plans_are_part_wise() {
        assert_eq!(list_plan(None).unwrap(), (None, "[".to_owned()));
        let (exact, below) = list_plan(Some(&kvkey!["a"])).unwrap();
        assert_eq!(exact.as_deref(), Some(r#"["a"]"#));
        assert_eq!(below, r#"["a","#);
        assert!(encode_key(&kvkey!["a", "b"]).unwrap().starts_with(&below));
        assert!(!encode_key(&kvkey!["ab"]).unwrap().starts_with(&below));
        assert!(!encode_key(&kvkey!["a"]).unwrap().starts_with(&below));
    }

    #[test]
    fn short_ttls_live_in_metadata() {
        let p = put(
            &kvkey!["k"],
            &json!({"a": 1}),
            Some(Duration::from_millis(1500)),
            1_000,
        )
        .unwrap();
        assert_eq!(p.key, r#"["k"]"#);
        assert_eq!(p.value, r#"{"a":1}"#);
        assert_eq!(p.metadata.expires, Some(2_500.0));
        assert_eq!(p.expiration_ttl, Some(MIN_EXPIRATION_TTL));
        assert!(is_live(Some(&p.metadata), 2_499));
        assert!(!is_live(Some(&p.metadata), 2_500));
        let long = put(
            &kvkey!["k"],
            &json!(1),
            Some(Duration::from_millis(90_001)),
            0,
        )
        .unwrap();
        assert_eq!(long.expiration_ttl, Some(91), "rounded up, never early");
        let forever = put(&kvkey!["k"], &json!(1), None, 0).unwrap();
        assert_eq!(forever.metadata, Metadata::default());
        assert_eq!(serde_json::to_string(&forever.metadata).unwrap(), "{}");
        assert_eq!(forever.expiration_ttl, None);
        assert!(is_live(Some(&forever.metadata), u64::MAX));
        assert!(!is_live(None, 0), "no metadata: not written by this layout");
    }

    #[test]
    fn ttls_too_long_to_represent_never_expire() {
        for ttl in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_millis(MAX_SAFE_INTEGER),
        ] {
            let p = put(&kvkey!["k"], &json!(1), Some(ttl), 1_000).unwrap();
            assert_eq!(p.metadata, Metadata::default(), "{ttl:?}");
            assert_eq!(p.expiration_ttl, None, "{ttl:?}");
        }
        let year = Duration::from_secs(365 * 24 * 3600);
        let p = put(&kvkey!["k"], &json!(1), Some(year), 1_000).unwrap();
        assert_eq!(p.metadata.expires, Some(1_000.0 + year.as_millis() as f64));
        assert_eq!(p.expiration_ttl, Some(year.as_secs()));
    }

    #[test]
    fn fedify_metadata_parses() {
        let m: Metadata = serde_json::from_str(r#"{"expires":1700000000123.5}"#).unwrap();
        assert_eq!(m.expires, Some(1_700_000_000_123.5));
        let m: Metadata = serde_json::from_str("{}").unwrap();
        assert_eq!(m.expires, None);
        assert_eq!(
            decode_value("not json").unwrap_err().kind(),
            ErrorKind::InvalidValue
        );
    }
}
