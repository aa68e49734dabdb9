//! The Workers KV layout (`src/stores/cfworkers/layout.rs`, Fedify's): a key
//! name decodes back, is injective, and a listing's name prefix selects
//! exactly the keys strictly under its prefix; any stored name or metadata
//! (written by Fedify or anyone) parses without a panic, and a name that
//! decodes is the one this layout writes for that key.
#![no_main]

use arbitrary::Unstructured;
use kvtower::__fuzz::cfworkers::{decode_key, encode_key, list_plan, metadata_is_live};
use kvtower::ErrorKind;
use kvtower_fuzz::key_pair;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok((a, b)) = key_pair(&mut u) {
        match (encode_key(&a), encode_key(&b)) {
            (Ok(na), Ok(nb)) => {
                assert_eq!(decode_key(&na).as_ref(), Some(&a), "decodes back");
                assert_eq!(na == nb, a == b, "injective");
                let (exact, below) = list_plan(Some(&b)).expect("b encodes");
                assert_eq!(exact.as_deref(), Some(nb.as_str()));
                let under = a.starts_with(&b) && a.len() > b.len();
                assert_eq!(na.starts_with(&below), under, "{na} under {below}");
                let (none, all) = list_plan(None).expect("no prefix");
                assert!(none.is_none() && na.starts_with(&all));
            }
            (Err(e), _) | (_, Err(e)) => assert_eq!(e.kind(), ErrorKind::InvalidKey),
        }
    }
    let rest = u.take_rest();
    if let Ok(name) = std::str::from_utf8(rest) {
        if let Some(key) = decode_key(name) {
            assert_eq!(encode_key(&key).ok().as_deref(), Some(name), "canonical");
        }
        let _ = metadata_is_live(name, 0);
    }
});
