//! Deno KV values as another program (Deno itself) wrote them: any bytes with
//! any `v_encoding` decode without a panic, a stack overflow or unbounded
//! work; an error is `InvalidValue`; a value that decodes re-encodes to bytes
//! that decode to the same value.
#![no_main]

use kvtower::__fuzz::denokv::{decode_value, v8_decode, v8_encode};
use kvtower::ErrorKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Deno's V8 serialization starts with 0xFF 0x0F (version 15); the
    // fuzzer finds that quickly, and a first byte picking the encoding keeps
    // the KvU64 and bytes paths in play.
    let (encoding, bytes) = match data.split_first() {
        Some((&tag, rest)) if tag < 8 => (i64::from(tag), rest),
        _ => (1, data),
    };
    match decode_value(bytes.to_vec(), encoding) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e}"),
    }
    match v8_decode(data) {
        Ok(value) => {
            let again = v8_encode(&value).expect("a decoded value encodes");
            assert_eq!(v8_decode(&again).ok().as_ref(), Some(&value), "stable");
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e}"),
    }
});
