//! Redis key escaping (`src/stores/redis/encoding.rs`): injective, decodes
//! back, canonical, and the `SCAN MATCH` pattern of a prefix matches (by
//! Redis's own glob rules) exactly the Redis keys strictly under it.
#![no_main]

use arbitrary::Unstructured;
use kvtower::__fuzz::redis::KeyCodec;
use kvtower::kvkey;
use kvtower_fuzz::{glob::string_match, key_pair, part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(namespace) = part(&mut u) else { return };
    let Ok((a, b)) = key_pair(&mut u) else { return };
    let raw: Vec<u8> = u.arbitrary().unwrap_or_default();
    let codec = KeyCodec::new(&namespace);

    let (ea, eb) = (codec.encode(&a), codec.encode(&b));
    assert_eq!(codec.decode(&ea).as_ref(), Ok(&a), "decodes back");
    assert_eq!(ea == eb, a == b, "injective: {a:?} {b:?}");

    // Literal patterns: `b`'s pattern matches `a`'s Redis key exactly when `a`
    // is strictly under `b`; the namespace's pattern matches every key of it.
    let under = a.starts_with(&b) && a.len() > b.len();
    let pattern = codec.descendants_pattern(Some(&b));
    assert_eq!(string_match(&pattern, &ea), under, "{pattern:?} vs {ea:?}");
    assert!(string_match(&codec.descendants_pattern(None), &ea));

    // Foreign bytes: a decodable Redis key is the canonical encoding of what
    // it decodes to (so no two Redis keys read as one key), and a pattern
    // matches foreign bytes exactly when they start with its literal text.
    if let Ok(key) = codec.decode(&raw) {
        assert_eq!(codec.encode(&key), raw, "canonical");
    }
    let mut literal = codec.encode(&b);
    literal.push(b':');
    assert_eq!(string_match(&pattern, &raw), raw.starts_with(&literal));
    // `[""]` encodes as the namespace's prefix alone.
    let ns = codec.encode(&kvkey![""]);
    let all = codec.descendants_pattern(None);
    assert_eq!(string_match(&all, &raw), raw.starts_with(&ns));
});
