//! The SQL stores' key encoding (`src/stores/sql.rs`): injective, decodes
//! back, byte order is key order, a listing's byte range holds exactly the
//! keys under its prefix; foreign bytes decode to an `InvalidKey` error or to
//! the key whose canonical encoding they are.
#![no_main]

use arbitrary::Unstructured;
use kvtower::__fuzz::sql::{decode_key, encode_key, prefix_range};
use kvtower::ErrorKind;
use kvtower_fuzz::key_pair;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok((a, b)) = key_pair(&mut u) {
        let (ea, eb) = (encode_key(&a), encode_key(&b));
        assert_eq!(decode_key(&ea).ok().as_ref(), Some(&a), "decodes back");
        assert_eq!(ea.cmp(&eb), a.cmp(&b), "order of {a:?} and {b:?}");
        assert_eq!(ea.starts_with(&eb), a.starts_with(&b), "prefix {a:?} {b:?}");
        let (start, end) = prefix_range(Some(&b));
        assert_eq!(ea >= start && ea < end, a.starts_with(&b), "range");
        let (start, end) = prefix_range(None);
        assert!(ea >= start && ea < end, "the full range holds every key");
    }
    match decode_key(data) {
        Ok(key) => assert_eq!(encode_key(&key), data, "canonical"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidKey, "{e}"),
    }
});
