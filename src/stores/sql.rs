//! What the SQL stores ([`SqliteKvStore`](crate::SqliteKvStore) and
//! [`PostgresKvStore`](crate::PostgresKvStore)) share: the order- and
//! prefix-preserving key encoding, table-name validation, TTL arithmetic and
//! value decoding.
//!
//! # Key encoding
//!
//! Each part is written with every `0x00` byte escaped as `0x00 0xFF`, then
//! terminated by `0x00 0x01`; the key is the concatenation of its parts. So:
//!
//! * it is injective, and each encoded part is self-delimiting (inside a
//!   part, `0x00` is always followed by `0xFF`, never by the terminator's
//!   `0x01`);
//! * byte order (`memcmp`, which is how SQLite compares BLOBs and Postgres
//!   compares `bytea`) is the part-wise order of [`KvKey`]: a part that is a
//!   proper prefix of another ends with `0x00 0x01`, which sorts below both any
//!   content byte (`>= 0x01`) and an escaped NUL (`0x00 0xFF`);
//! * `key` starts with `prefix` part-wise exactly when `enc(key)` starts with
//!   `enc(prefix)` bytewise, and the byte strings starting with `enc(prefix)`
//!   are exactly those in `[enc(prefix), enc(prefix)[..n-1] ++ [0x02])`,
//!   because `enc(prefix)` ends with `0x01`. A listing is one range scan of the
//!   primary-key index, with no `LIKE` and no user text in the SQL.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::Value;

/// The default table name of both SQL stores.
pub(crate) const DEFAULT_TABLE: &str = "kvtower";
/// How many rows one page of a listing fetches.
pub(crate) const LIST_PAGE: usize = 500;
/// How many expired rows one sweep statement deletes at most, so that a
/// sweep never holds a long write lock.
pub(crate) const SWEEP_BATCH: usize = 1_000;
/// The default interval of the background sweep of expired rows.
pub(crate) const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// `enc(key)`: see the module docs.
pub(crate) fn encode_key(key: &KvKey) -> Vec<u8> {
    let len: usize = key.parts().iter().map(|p| p.len() + 2).sum();
    let mut out = Vec::with_capacity(len);
    for part in key.parts() {
        for &b in part.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
        out.extend_from_slice(&[0x00, 0x01]);
    }
    out
}

/// The inverse of [`encode_key`]; an [`InvalidKey`](ErrorKind::InvalidKey)
/// error for bytes it never produces (a row written by another program).
pub(crate) fn decode_key(bytes: &[u8]) -> Result<KvKey> {
    let invalid = |why: &str| {
        Error::new(
            ErrorKind::InvalidKey,
            format!("stored key is not a kvtower key encoding: {why}"),
        )
    };
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != 0 {
            part.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(0xFF) => part.push(0),
            Some(0x01) => {
                let text = String::from_utf8(std::mem::take(&mut part))
                    .map_err(|_| invalid("a part is not UTF-8"))?;
                parts.push(text);
            }
            _ => return Err(invalid("bad escape")),
        }
        i += 2;
    }
    if !part.is_empty() {
        return Err(invalid("unterminated part"));
    }
    if parts.is_empty() {
        return Err(invalid("no parts"));
    }
    Ok(KvKey::__from_nonempty(parts))
}

/// The half-open byte range `[start, end)` of the encoded keys under
/// `prefix` (every key when `None`).
pub(crate) fn prefix_range(prefix: Option<&KvKey>) -> (Vec<u8>, Vec<u8>) {
    match prefix {
        Some(prefix) => {
            let start = encode_key(prefix);
            let mut end = start.clone();
            // `start` ends with the terminator's 0x01: bumping it to 0x02 gives
            // the least byte string above every extension of `start`.
            if let Some(last) = end.last_mut() {
                *last = 0x02;
            }
            (start, end)
        }
        // Encoded keys start with a UTF-8 byte (never 0xFF) or with 0x00.
        None => (Vec::new(), vec![0xFF]),
    }
}

/// The least byte string greater than `last`: where the next page of a
/// listing starts.
pub(crate) fn after(mut last: Vec<u8>) -> Vec<u8> {
    last.push(0x00);
    last
}

/// Checks a table name: an SQL identifier `[A-Za-z_][A-Za-z0-9_]{0,62}`. The
/// name is then safe to quote into SQL (it holds no quote).
pub(crate) fn validate_table(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(Error::config(format!(
            "table: {name:?} is not a valid table name (expected a letter or `_`, then up to 62 \
             letters, digits or `_`)"
        )))
    }
}

/// The longest identifier Postgres keeps (longer ones are silently
/// truncated); SQLite has no limit, and both stores use the same names.
const MAX_IDENT: usize = 63;

/// The name of `table`'s partial index on `expires_at`: `{table}.expires_at`.
///
/// Indexes share one namespace with tables, and the `.` cannot occur in a
/// table name ([`validate_table`]), so this name can never be taken by
/// another kvtower table (the earlier `{table}_expires_at` was the valid
/// table name of a neighbour). Past Postgres's 63 bytes it is shortened to
/// a prefix of the table name, a `.` and a hash of the whole name, still
/// with a `.` and still distinct per table.
pub(crate) fn expiry_index(table: &str) -> String {
    const SUFFIX: &str = ".expires_at";
    if table.len() + SUFFIX.len() <= MAX_IDENT {
        return format!("{table}{SUFFIX}");
    }
    // FNV-1a: stable across builds and platforms (the name is on disk), and
    // 16 hex digits never spell `expires_at`, so the two forms cannot meet.
    let hash = table.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // Table names are ASCII: slicing at a byte count is slicing at a char.
    let keep = MAX_IDENT - 1 - 16;
    format!("{}.{hash:016x}", &table[..keep])
}

/// The expiry index's name before [`expiry_index`], as Postgres stored it
/// (truncated to 63 bytes): found and dropped when a store opens a table an
/// older version created, so that the name is free for a table again.
pub(crate) fn legacy_expiry_index(table: &str) -> String {
    let mut name = format!("{table}_expires_at");
    name.truncate(MAX_IDENT);
    name
}

/// Milliseconds since the Unix epoch, on this machine's clock (Postgres uses
/// the server's clock instead).
#[cfg(feature = "sqlite")]
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// TTLs longer than this (about 73 million years) never expire: adding them
/// to the current time could overflow an `i64` column.
const MAX_TTL_MS: i64 = i64::MAX / 4;

/// A TTL in whole milliseconds, rounded up so that a sub-millisecond TTL
/// still lives; `None` (never expires) beyond [`MAX_TTL_MS`].
pub(crate) fn ttl_ms(ttl: Option<Duration>) -> Option<i64> {
    let ttl = ttl?;
    let ms = ttl.as_millis() + u128::from(ttl.subsec_nanos() % 1_000_000 != 0);
    i64::try_from(ms).ok().filter(|&ms| ms <= MAX_TTL_MS)
}

/// When a value written now with `ttl` expires, in ms since the epoch.
#[cfg(feature = "sqlite")]
pub(crate) fn expires_at(now: i64, ttl: Option<Duration>) -> Option<i64> {
    ttl_ms(ttl).and_then(|ms| now.checked_add(ms))
}

/// The remaining lifetime of a live row whose expiry (ms since the epoch)
/// is `expires_at`, at `now` (`None`: never expires). Never more than the row
/// has left, so a cache filled from it never outlives the row.
pub(crate) fn remaining(expires_at: Option<i64>, now: i64) -> Option<Duration> {
    expires_at.map(|at| Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0)))
}

/// Parses a stored value; an [`InvalidValue`](ErrorKind::InvalidValue) error
/// naming the key when it is not JSON.
pub(crate) fn parse_value(text: &str, key: &KvKey, operation: Operation) -> Result<Value> {
    crate::value::from_str(text).map_err(|e| {
        Error::new(ErrorKind::InvalidValue, "stored value is not valid JSON")
            .with_source(e)
            .with_operation(operation)
            .with_key(key)
    })
}

/// Serializes a value for storage.
pub(crate) fn value_text(value: &Value) -> String {
    // Serializing a `Value` to a string cannot fail: its map keys are strings.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::kvkey;
    use crate::testing::cases::tricky_keys;
    use proptest::prelude::*;

    fn under(key: &KvKey, prefix: &KvKey) -> bool {
        let (start, end) = prefix_range(Some(prefix));
        let enc = encode_key(key);
        enc >= start && enc < end
    }

    #[test]
    fn tricky_keys_round_trip_and_order() {
        let keys = tricky_keys();
        for a in &keys {
            assert_eq!(&decode_key(&encode_key(a)).unwrap(), a);
            for b in &keys {
                assert_eq!(encode_key(a).cmp(&encode_key(b)), a.cmp(b), "{a} vs {b}");
                assert_eq!(under(a, b), a.starts_with(b), "{a} under {b}");
            }
        }
    }

    #[test]
    fn range_excludes_siblings() {
        assert!(under(&kvkey!["a"], &kvkey!["a"]));
        assert!(under(&kvkey!["a", ""], &kvkey!["a"]));
        assert!(under(&kvkey!["a", "\0"], &kvkey!["a"]));
        assert!(!under(&kvkey!["ab"], &kvkey!["a"]));
        assert!(!under(&kvkey!["a\0"], &kvkey!["a"]));
        assert!(!under(&kvkey!["a\u{1}"], &kvkey!["a"]));
        let (start, end) = prefix_range(None);
        for key in tricky_keys() {
            let enc = encode_key(&key);
            assert!(enc >= start && enc < end, "{key}");
        }
    }

    #[test]
    fn bad_encodings_are_errors() {
        for bytes in [&b""[..], b"a", b"a\x00", b"a\x00\x02", b"\xff\x00\x01"] {
            let err = decode_key(bytes).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "{bytes:?}");
        }
    }

    #[test]
    fn table_names() {
        for ok in ["kv", "_kv", "Kv_2", &"a".repeat(63)] {
            validate_table(ok).unwrap();
        }
        for bad in [
            "",
            "1kv",
            "kv; DROP TABLE x; --",
            "\"quoted\"",
            "kv-x",
            "s.t",
            "ü",
            &"a".repeat(64),
        ] {
            let err = validate_table(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().starts_with("table: "), "{err}");
        }
    }

    #[test]
    fn expiry_index_names_are_no_table_names() {
        let long = "a".repeat(63);
        let long2 = format!("{}b", "a".repeat(62));
        for table in [
            "kv",
            "kv_expires_at",
            &long,
            &long2,
            &"x".repeat(52),
            &"x".repeat(53),
        ] {
            let name = expiry_index(table);
            assert!(name.len() <= 63, "{name}");
            assert!(validate_table(&name).is_err(), "{name} could be a table");
            assert_ne!(name, expiry_index("other"));
        }
        assert_eq!(expiry_index("kv"), "kv.expires_at");
        assert_ne!(expiry_index(&long), expiry_index(&long2));
        assert_eq!(legacy_expiry_index("kv"), "kv_expires_at");
        assert_eq!(legacy_expiry_index(&long), long);
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_ms(Some(Duration::from_micros(1))), Some(1));
        assert_eq!(ttl_ms(Some(Duration::from_millis(5))), Some(5));
        assert_eq!(ttl_ms(None), None);
        #[cfg(feature = "sqlite")]
        assert_eq!(expires_at(i64::MAX - 1, Some(Duration::from_secs(1))), None);
        assert_eq!(ttl_ms(Some(Duration::MAX)), None);
    }

    fn arb_key() -> impl Strategy<Value = KvKey> {
        proptest::collection::vec("[a\\x00\\x01\\xff\u{ff}b]{0,3}", 1..4)
            .prop_map(|parts| KvKey::new(parts).unwrap())
    }

    proptest! {
        #[test]
        fn encoding_preserves_order_and_prefixes(a in arb_key(), b in arb_key()) {
            prop_assert_eq!(decode_key(&encode_key(&a)).unwrap(), a.clone());
            prop_assert_eq!(encode_key(&a).cmp(&encode_key(&b)), a.cmp(&b));
            prop_assert_eq!(under(&a, &b), a.starts_with(&b));
        }
    }
}
