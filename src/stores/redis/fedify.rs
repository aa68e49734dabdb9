//! [`Layout::Fedify`](crate::stores::Layout::Fedify) keys for
//! [`RedisKvStore`](super::RedisKvStore): the Redis keys `@fedify/redis`'s
//! `RedisKvStore` reads and writes (checked against 1.8.7, the version the
//! npm registry serves). Values (JSON text) and `cas` are the same as in the
//! kvtower layout; TTLs are whole seconds, as Fedify writes them.
//!
//! A key is the key prefix (Fedify's `keyPrefix`, default `fedify::`, used
//! as it is) followed by the parts, each with every `:` written `_:`, joined
//! by `::`: `["_fedify", "a:b"]` is `fedify::_fedify::a_:b`.
//!
//! # Decoding
//!
//! The encoding is injective, but not by splitting on `::`: `["a:", "b"]` is
//! `a_:::b`, and so is no other key. Inside a part a `:` only ever follows a
//! `_` (the escape), and separators are `::`; so in a run of `k` colons, the
//! first one belongs to an escape exactly when it follows a `_` and `k` is
//! odd, and the others are `k / 2` separators. A run of an odd number of
//! colons after anything but `_` is not Fedify's encoding (an
//! [`InvalidKey`](crate::ErrorKind::InvalidKey) item in a listing).
//!
//! # What Fedify's own code reads differently
//!
//! * Fedify's `list` (2.0 and later; 1.8 has none) decodes a key by
//!   splitting on `::`, so a key with a part that ends in `:` and is not the
//!   last part (`["a:", "b"]`) comes back wrong from it (`["a_", ":b"]`).
//!   `get` by key is unaffected: it encodes, it never decodes.
//! * Fedify's `list` puts the prefix into its `SCAN MATCH` pattern
//!   unescaped, so a prefix holding `*`, `?`, `[`, `]` or `\` also matches
//!   keys not under it, or misses keys that are. kvtower escapes them.
//! * `@fedify/redis` 1.8.7 writes a TTL with `SETEX` in seconds; Redis
//!   refuses a fractional TTL (`ERR value is not an integer`), so Fedify can
//!   only write whole seconds. kvtower writes TTLs the same way: whole
//!   seconds, rounded up (a 1.2 s TTL lives 2 s), so both programs' keys
//!   expire alike; the store declares `exact_expiry: false` for it.
//! * Fedify has no `cas` on Redis; kvtower's is atomic on the server (a Lua
//!   script), against Fedify's `set`s as well.
//!
//! The `SCAN MATCH` pattern of a prefix `P` is `enc(P)::*`, escaped. It can
//! over-match (`["a_"]`'s `a_::*` matches `a_:::b`, which is `["a:", "b"]`),
//! never under-match: the listing keeps only the decoded keys under `P`.

/// Appends the Fedify encoding of `parts` (without the key prefix).
pub(super) fn encode_parts(parts: &[String], out: &mut Vec<u8>) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"::");
        }
        for &b in part.as_bytes() {
            if b == b':' {
                out.extend_from_slice(b"_:");
            } else {
                out.push(b);
            }
        }
    }
}

/// The parts `raw` (a Redis key without its prefix) encodes, or why it is
/// not Fedify's encoding of any key. See the module docs.
pub(super) fn decode_parts(raw: &[u8]) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut part: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b':' {
            part.push(raw[i]);
            i += 1;
            continue;
        }
        let run = raw[i..].iter().take_while(|&&b| b == b':').count();
        // `part` ends with the `_` right before the run when it is in this
        // part; a run right after a separator starts an empty part.
        let mut separators = run;
        if run % 2 == 1 {
            if i > 0 && raw[i - 1] == b'_' && part.last() == Some(&b'_') {
                part.pop();
                part.push(b':');
                separators -= 1;
            } else {
                return Err("a `:` that is neither `_:` nor part of `::`".to_owned());
            }
        }
        for _ in 0..separators / 2 {
            parts.push(String::from_utf8(std::mem::take(&mut part)).map_err(not_utf8)?);
        }
        i += run;
    }
    parts.push(String::from_utf8(part).map_err(not_utf8)?);
    Ok(parts)
}

fn not_utf8(_: std::string::FromUtf8Error) -> String {
    "a part that is not UTF-8".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(parts: &[&str]) -> String {
        let parts: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
        let mut out = Vec::new();
        encode_parts(&parts, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_like_fedify() {
        assert_eq!(enc(&["_fedify", "a:b"]), "_fedify::a_:b");
        assert_eq!(enc(&["a:", "b"]), "a_:::b");
        assert_eq!(enc(&["a_", "b"]), "a_::b");
        assert_eq!(enc(&["", ""]), "::");
        assert_eq!(enc(&["::"]), "_:_:");
    }

    /// Every key of up to three parts of up to three characters from
    /// `a`, `_`, `:` encodes to a distinct text and decodes back.
    #[test]
    fn decoding_inverts_encoding_exhaustively() {
        let alphabet = ["a", "_", ":"];
        let mut parts = vec![String::new()];
        for len in 1..=3 {
            let mut next = Vec::new();
            for p in parts.iter().filter(|p| p.len() == len - 1) {
                for c in alphabet {
                    next.push(format!("{p}{c}"));
                }
            }
            parts.extend(next);
        }
        let mut seen = std::collections::HashMap::new();
        let mut check = |key: Vec<String>| {
            let mut raw = Vec::new();
            encode_parts(&key, &mut raw);
            assert_eq!(decode_parts(&raw).as_ref(), Ok(&key), "{raw:?}");
            if let Some(other) = seen.insert(raw.clone(), key.clone()) {
                panic!("{key:?} and {other:?} share {raw:?}");
            }
        };
        for a in &parts {
            check(vec![a.clone()]);
            for b in &parts {
                check(vec![a.clone(), b.clone()]);
                for c in parts.iter().step_by(3) {
                    check(vec![a.clone(), b.clone(), c.clone()]);
                }
            }
        }
    }

    #[test]
    fn foreign_keys_do_not_decode() {
        for raw in [&b"a:b"[..], b":", b"a:::", b"\xff"] {
            assert!(decode_parts(raw).is_err(), "{raw:?}");
        }
    }
}
