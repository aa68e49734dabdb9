//! JSON value decoding on every store path that reads JSON text another
//! program may have written: Redis strings, SQLite `TEXT` cells, Postgres
//! `json` columns, Workers KV values. Any bytes: no panic, an error is
//! `InvalidValue`, and every store reads the same bytes the same way.
#![no_main]

use kvtower::__fuzz::{cfworkers, redis, sql, sqlite};
use kvtower::{kvkey, ErrorKind, Value};
use libfuzzer_sys::fuzz_target;

fn same_answer(what: &str, a: &kvtower::Result<Value>, b: &kvtower::Result<Value>) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
        (Err(a), Err(b)) => {
            assert_eq!(a.kind(), ErrorKind::InvalidValue, "{a}");
            assert_eq!(b.kind(), ErrorKind::InvalidValue, "{b}");
        }
        _ => panic!("{what}: {a:?} vs {b:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let key = kvkey!["fuzz"];

    // Foreign bytes.
    let from_redis = redis::decode_value(data);
    same_answer("sqlite", &from_redis, &sqlite::text_value(data, &key));
    if let Ok(text) = std::str::from_utf8(data) {
        same_answer("postgres", &from_redis, &sql::parse_value(text, &key));
        same_answer("workers", &from_redis, &cfworkers::decode_value(text));
    }
});
