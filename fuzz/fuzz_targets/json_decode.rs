//! The stores' direct JSON parser against serde_json: whenever the direct
//! parser answers, serde_json (with `float_roundtrip`, depth-bounded) answers
//! the same value, number kinds included. Text it gives up on goes to
//! serde_json, so any bytes read the same either way.
#![no_main]

use kvtower::__fuzz::json::{direct, with_serde};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(value) = direct(data) {
        let expected = with_serde(data).expect("serde_json reads what the direct parser read");
        assert_eq!(value, expected);
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
    }
});
