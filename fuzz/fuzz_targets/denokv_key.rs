//! Deno KV keys (`src/stores/denokv/mod.rs`): a key encodes under a prefix
//! and decodes back, never as another prefix's key; any stored key bytes
//! (a Deno program's keys hold numbers, bytes, booleans) decode without a
//! panic, to `None` or to a key that encodes back to the same bytes.
#![no_main]

use arbitrary::Unstructured;
use kvtower::__fuzz::denokv::{decode_key, encode_key};
use kvtower_fuzz::{key_pair, part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let prefix: Vec<String> = (0..u.int_in_range(0..=2).unwrap_or(0))
        .map_while(|_| part(&mut u).ok())
        .collect();
    if let Ok((a, b)) = key_pair(&mut u) {
        if let (Ok(ea), Ok(eb)) = (encode_key(&prefix, &a), encode_key(&prefix, &b)) {
            assert_eq!(decode_key(&prefix, &ea).as_ref(), Some(&a), "decodes back");
            assert_eq!(ea == eb, a == b, "injective");
            // Deno KV orders keys bytewise; string parts order as kvtower's.
            assert_eq!(ea.cmp(&eb), a.cmp(&b), "order");
            let mut other = prefix.clone();
            other.push(String::new());
            if !a.parts()[0].is_empty() {
                assert_eq!(decode_key(&other, &ea), None, "another prefix");
            }
        }
    }
    let raw = u.take_rest();
    if let Some(key) = decode_key(&prefix, raw) {
        assert_eq!(
            encode_key(&prefix, &key).ok().as_deref(),
            Some(raw),
            "canonical"
        );
    }
});
