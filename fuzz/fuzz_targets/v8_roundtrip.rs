//! The V8 value codec (`src/stores/denokv/v8.rs`): every JSON value encodes
//! and decodes back to itself, as JavaScript sees it (an integral float is an
//! integer), nesting up to the limit included.
#![no_main]

use arbitrary::Unstructured;
use kvtower::__fuzz::denokv::{v8_decode, v8_encode};
use kvtower::Value;
use kvtower_fuzz::{js_normal, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut value) = json(&mut u, 5) else {
        return;
    };
    let wraps = u.int_in_range(0..=123usize).unwrap_or(0);
    for _ in 0..wraps {
        value = Value::Array(vec![value]);
    }
    let bytes = v8_encode(&value).expect("every value within the limit encodes");
    let back = v8_decode(&bytes).expect("what was encoded decodes");
    assert_eq!(back, js_normal(&value));
});
