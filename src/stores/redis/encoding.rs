//! How a [`KvKey`] becomes a Redis key, how a `list` prefix becomes a
//! `SCAN MATCH` pattern, and how a value becomes the JSON text stored.
//!
//! A Redis key is the namespace and the key's parts, each escaped, joined by
//! `:`: `["user", "42"]` in namespace `kvtower` is `kvtower:user:42`. Escaping
//! replaces `%` with `%25` and `:` with `%3A` and leaves everything else
//! (non-ASCII text, glob characters, NUL) as it is.
//!
//! * Injective: an escaped part never contains a raw `:`, so splitting the
//!   Redis key on `:` gives back exactly the escaped parts, and unescaping is
//!   the inverse of escaping. The namespace is escaped the same way, so the
//!   namespaces `a` and `a:b` never share a key either.
//! * Prefix-preserving, part-wise: a key starts with the prefix `P` exactly
//!   when its Redis key equals `enc(P)` or starts with `enc(P) + ":"`. So
//!   `list(P)` is a `GET` of `enc(P)` plus one `SCAN MATCH enc(P):*`, and
//!   `["ab"]` (`ns:ab`) never matches the pattern of `["a"]` (`ns:a:*`).
//! * Glob-safe: in the pattern, `*`, `?`, `[`, `]` and `\` coming from the
//!   namespace or a part are escaped with `\`, so they match only themselves.

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::store::Value;

const SEPARATOR: u8 = b':';

/// Encodes and decodes the keys of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct KeyCodec {
    /// The escaped namespace followed by `:`, the start of every Redis key
    /// (in the Fedify layout: the key prefix as it is).
    prefix: Vec<u8>,
    /// Fedify's encoding of the parts (`super::fedify`) instead of kvtower's.
    fedify: bool,
}

impl KeyCodec {
    pub(crate) fn new(namespace: &str) -> Self {
        let mut prefix = Vec::with_capacity(namespace.len() + 1);
        escape_part(namespace, &mut prefix);
        prefix.push(SEPARATOR);
        Self {
            prefix,
            fedify: false,
        }
    }

    /// The codec of Fedify's layout under `key_prefix` (Fedify's
    /// `keyPrefix`, prepended as it is).
    pub(crate) fn fedify(key_prefix: &str) -> Self {
        Self {
            prefix: key_prefix.as_bytes().to_vec(),
            fedify: true,
        }
    }

    /// What every Redis key of this namespace starts with.
    pub(crate) fn namespace_prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The Redis key of `key`.
    pub(crate) fn encode(&self, key: &KvKey) -> Vec<u8> {
        let parts = key.parts();
        let len = self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&self.prefix);
        if self.fedify {
            super::fedify::encode_parts(parts, &mut out);
            return out;
        }
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push(SEPARATOR);
            }
            escape_part(part, &mut out);
        }
        out
    }

    /// The key a Redis key of this namespace encodes, or why it is not one.
    pub(crate) fn decode(&self, raw: &[u8]) -> Result<KvKey, String> {
        let rest = raw
            .strip_prefix(self.prefix.as_slice())
            .ok_or_else(|| "not in this store's namespace".to_owned())?;
        if self.fedify {
            return KvKey::new(super::fedify::decode_parts(rest)?).map_err(|e| e.to_string());
        }
        let parts = rest
            .split(|b| *b == SEPARATOR)
            .map(unescape_part)
            .collect::<Result<Vec<String>, String>>()?;
        // `split` yields at least one (possibly empty) item, so never empty.
        KvKey::new(parts).map_err(|e| e.to_string())
    }

    /// The `SCAN MATCH` pattern of the keys strictly under `prefix` (every key
    /// of the namespace when `None`).
    pub(crate) fn descendants_pattern(&self, prefix: Option<&KvKey>) -> Vec<u8> {
        let mut literal = match prefix {
            Some(prefix) => {
                let mut encoded = self.encode(prefix);
                if self.fedify {
                    // Can over-match; the listing filters (see `fedify`).
                    encoded.push(SEPARATOR);
                }
                encoded.push(SEPARATOR);
                encoded
            }
            None => self.prefix.clone(),
        };
        let mut pattern = Vec::with_capacity(literal.len() + 8);
        glob_escape(&literal, &mut pattern);
        pattern.push(b'*');
        literal.clear();
        pattern
    }
}

/// Appends `part` with `%` and `:` escaped.
fn escape_part(part: &str, out: &mut Vec<u8>) {
    // Most parts need no escape: one copy instead of a push per byte.
    if !part.bytes().any(|b| b == b'%' || b == SEPARATOR) {
        out.extend_from_slice(part.as_bytes());
        return;
    }
    for &b in part.as_bytes() {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            SEPARATOR => out.extend_from_slice(b"%3A"),
            _ => out.push(b),
        }
    }
}

/// The inverse of [`escape_part`]. Strict: only `%25` and `%3A` are escapes,
/// so that no two Redis keys decode to the same key.
fn unescape_part(raw: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            match raw.get(i + 1..i + 3) {
                Some(b"25") => out.push(b'%'),
                Some(b"3A") => out.push(SEPARATOR),
                _ => return Err("a `%` that is not `%25` or `%3A`".to_owned()),
            }
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a part that is not UTF-8".to_owned())
}

/// Appends `literal` as a Redis glob pattern matching only itself.
fn glob_escape(literal: &[u8], out: &mut Vec<u8>) {
    for &b in literal {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The JSON text a value is stored as.
pub(crate) fn encode_value(value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::from)
}

/// The value of stored JSON text; anything else is an `InvalidValue` error.
pub(crate) fn decode_value(raw: &[u8]) -> Result<Value> {
    crate::value::from_slice(raw).map_err(|e| {
        Error::new(ErrorKind::InvalidValue, "the stored value is not JSON text").with_source(e)
    })
}

/// Redis's own glob matcher, ported; shared with the `redis_key` fuzz target.
#[cfg(test)]
#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/glob.rs"]
mod glob;

#[cfg(test)]
mod tests {
    use super::glob::string_match;
    use super::*;
    use crate::kvkey;
    use proptest::prelude::*;

    fn tricky() -> Vec<KvKey> {
        let raw: &[&[&str]] = &[
            &["a"],
            &["a", ""],
            &["a", "", ""],
            &["a", "b"],
            &["a:b"],
            &["a", ":"],
            &["a%3Ab"],
            &["a%"],
            &["a%25"],
            &["%"],
            &[""],
            &["", ""],
            &["*"],
            &["a\\", "b"],
            &["a\0b"],
            &["ü", "日本"],
            &["[", "]"],
        ];
        raw.iter()
            .map(|p| KvKey::new(p.iter().copied()).unwrap())
            .collect()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn ordinary_keys_are_readable() {
        let codec = KeyCodec::new("kvtower");
        assert_eq!(
            text(&codec.encode(&kvkey!["user", "42"])),
            "kvtower:user:42"
        );
        assert_eq!(
            text(&codec.encode(&kvkey!["a:b", "50%"])),
            "kvtower:a%3Ab:50%25"
        );
        assert_eq!(text(&codec.encode(&kvkey!["a", ""])), "kvtower:a:");
    }

    #[test]
    fn encoding_is_injective_and_decodes_back() {
        let codec = KeyCodec::new("ns");
        let keys = tricky();
        let mut seen = std::collections::HashSet::new();
        for key in &keys {
            let raw = codec.encode(key);
            assert!(seen.insert(raw.clone()), "{key} collides");
            assert_eq!(codec.decode(&raw).as_ref(), Ok(key));
        }
    }

    #[test]
    fn namespaces_do_not_overlap() {
        let a = KeyCodec::new("a");
        let ab = KeyCodec::new("a:b");
        let raw = ab.encode(&kvkey!["x"]);
        assert_eq!(text(&raw), "a%3Ab:x");
        assert!(a.decode(&raw).is_err());
    }

    #[test]
    fn foreign_keys_do_not_decode() {
        let codec = KeyCodec::new("ns");
        assert!(codec.decode(b"ns:50%off").is_err());
        assert!(codec.decode(b"ns:%3a").is_err());
        assert!(codec.decode(b"ns:\xff").is_err());
        assert!(codec.decode(b"other:x").is_err());
    }

    #[test]
    fn patterns_are_escaped_and_part_wise() {
        let codec = KeyCodec::new("n*s");
        assert_eq!(text(&codec.descendants_pattern(None)), "n\\*s:*");
        assert_eq!(
            text(&codec.descendants_pattern(Some(&kvkey!["a?", "[b]\\"]))),
            "n\\*s:a\\?:\\[b\\]\\\\:*"
        );
    }

    fn arb_part() -> impl Strategy<Value = String> {
        r"[a:%25A*?\\\[\]^\-\x00ü]{0,4}"
    }

    fn arb_key() -> impl Strategy<Value = KvKey> {
        proptest::collection::vec(arb_part(), 1..4).prop_map(|parts| KvKey::new(parts).unwrap())
    }

    proptest! {
        // The invariants the `redis_key` fuzz target checks, on stable.
        #[test]
        fn escaping_is_injective_literal_and_canonical(
            namespace in arb_part(),
            a in arb_key(),
            b in arb_key(),
            raw in proptest::collection::vec(
                proptest::sample::select(b"a:%25A*?\\[]".to_vec()), 0..10),
        ) {
            let codec = KeyCodec::new(&namespace);
            let (ea, eb) = (codec.encode(&a), codec.encode(&b));
            prop_assert_eq!(codec.decode(&ea), Ok(a.clone()));
            prop_assert_eq!(ea == eb, a == b);
            let under = a.starts_with(&b) && a.len() > b.len();
            prop_assert_eq!(string_match(&codec.descendants_pattern(Some(&b)), &ea), under);
            prop_assert!(string_match(&codec.descendants_pattern(None), &ea));
            // Foreign bytes, inside the namespace and below `b`.
            let mut literal = eb.clone();
            literal.push(b':');
            let pattern = codec.descendants_pattern(Some(&b));
            for base in [Vec::new(), codec.encode(&kvkey![""]), literal.clone()] {
                let raw = [base, raw.clone()].concat();
                if let Ok(key) = codec.decode(&raw) {
                    prop_assert_eq!(codec.encode(&key), raw.clone());
                }
                prop_assert_eq!(string_match(&pattern, &raw), raw.starts_with(&literal));
            }
        }
    }
}
