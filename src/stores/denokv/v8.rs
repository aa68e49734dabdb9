//! JSON values to and from V8's serialization format, the one Deno KV stores
//! values in (`structuredClone`'s wire format, version 15).
//!
//! The mapping follows what a JavaScript program sees:
//!
//! | JSON (Rust) | V8 (written) | V8 (read) | JSON (Rust) |
//! |---|---|---|---|
//! | `null` | `null` | `null`, `undefined` | `null` |
//! | `true`/`false` | boolean | boolean, `Boolean` object | `true`/`false` |
//! | integer in `i32` | Smi (int32) | int32, uint32 | integer |
//! | other integer, magnitude up to 2^53 | double | double with an integral value, magnitude up to 2^53 (not `-0`) | integer |
//! | integer beyond ±2^53 | `BigInt` (exact) | `BigInt` within `i64`/`u64` | integer |
//! | float | double | any other finite double (`-0` included) | float |
//! | string | one-byte or UTF-8 string | any string, `String` object | string |
//! | array | dense array | dense or sparse array (holes and `undefined` read as `null`) | array |
//! | object | plain object | plain object (`undefined` properties are left out, numeric keys become strings) | object |
//!
//! Anything else a JavaScript program may store (`NaN`, `Infinity`, a
//! `BigInt` beyond 64 bits, `Date`, `Map`, `Set`, `RegExp`, typed arrays,
//! `Error`, cyclic objects) has no faithful JSON form and reads as an
//! [`InvalidValue`](crate::ErrorKind::InvalidValue) error rather than being
//! silently changed.

use num_bigint::BigInt;
use serde_json::{Map as JsonMap, Number, Value as Json};
use v8_valueserializer::{
    DenseArray, Heap, HeapValue, Object, PropertyKey, StringValue, Value as V8, ValueDeserializer,
    ValueSerializer,
};

use crate::error::{Error, ErrorKind, Result};
use crate::value::{check_depth, MAX_DEPTH};

/// Integers up to this magnitude are exact as a JavaScript number.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The stack the V8 codec may need: v8_valueserializer recurses once per
/// level of nesting up to its own limit of 256 (about 14 KiB a level in a
/// debug build, under 1 KiB in release), whatever the input; our conversion
/// adds at most [`MAX_DEPTH`] levels. The codec runs on a stack with at least
/// this much room left ([`stacker::maybe_grow`] switches to a fresh one when
/// the caller's has less), so a deep value another program wrote is an error,
/// never a stack overflow.
const CODEC_STACK: usize = if cfg!(debug_assertions) {
    8 << 20
} else {
    1 << 20
};

/// How many JSON nodes a decoded value may have per input byte. A plain
/// value has at most one per byte; shared object references (`{a: x, b: x}`)
/// are copied out, and a chain of them could otherwise expand a few hundred
/// bytes into 2^128 nodes.
const MAX_NODES_PER_BYTE: usize = 16;

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidValue, message)
}

/// Serializes `value` the way Deno would serialize the equivalent JavaScript
/// value.
///
/// Refuses a value nested deeper than [`MAX_DEPTH`] before any recursion.
pub(crate) fn encode(value: &Json) -> Result<Vec<u8>> {
    check_depth(value)?;
    stacker::maybe_grow(CODEC_STACK, CODEC_STACK, || {
        let mut heap = Heap::default();
        let root = to_v8(value, &mut heap)?;
        ValueSerializer::default()
            .finish(&heap, &root)
            .map_err(|e| invalid(format!("cannot serialize to V8: {e:?}")))
    })
}

fn number_to_v8(n: &Number) -> V8 {
    if let Some(i) = n.as_i64() {
        if let Ok(small) = i32::try_from(i) {
            V8::I32(small)
        } else if i.unsigned_abs() <= MAX_SAFE_INTEGER {
            V8::Double(i as f64)
        } else {
            V8::BigInt(BigInt::from(i))
        }
    } else if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE_INTEGER {
            V8::Double(u as f64)
        } else {
            V8::BigInt(BigInt::from(u))
        }
    } else {
        // serde_json numbers are i64, u64 or a finite f64.
        V8::Double(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn to_v8(value: &Json, heap: &mut Heap) -> Result<V8> {
    Ok(match value {
        Json::Null => V8::Null,
        Json::Bool(b) => V8::Bool(*b),
        Json::Number(n) => number_to_v8(n),
        Json::String(s) => V8::String(StringValue::new(s.clone())),
        Json::Array(items) => {
            let mut elements = Vec::with_capacity(items.len());
            for item in items {
                elements.push(Some(to_v8(item, heap)?));
            }
            V8::HeapReference(heap.insert(HeapValue::DenseArray(DenseArray {
                elements,
                properties: Vec::new(),
            })))
        }
        Json::Object(map) => {
            let mut properties = Vec::with_capacity(map.len());
            for (key, item) in map {
                properties.push((
                    PropertyKey::String(StringValue::new(key.clone())),
                    to_v8(item, heap)?,
                ));
            }
            V8::HeapReference(heap.insert(HeapValue::Object(Object { properties })))
        }
    })
}

/// Deserializes a V8-serialized value into JSON (see the module docs for the
/// mapping).
///
/// Nesting deeper than [`MAX_DEPTH`] (a cycle included) and values that would
/// expand past [`MAX_NODES_PER_BYTE`] nodes per input byte are
/// [`InvalidValue`](ErrorKind::InvalidValue) errors.
pub(crate) fn decode(bytes: &[u8]) -> Result<Json> {
    stacker::maybe_grow(CODEC_STACK, CODEC_STACK, || {
        let (value, heap) = ValueDeserializer::default()
            .read(bytes)
            .map_err(|e| invalid("not a V8-serialized value").with_source(e))?;
        let mut budget = bytes
            .len()
            .saturating_mul(MAX_NODES_PER_BYTE)
            .saturating_add(1024);
        Ok(from_v8(&value, &heap, 0, &mut budget)?.unwrap_or(Json::Null))
    })
}

fn double_to_json(d: f64) -> Result<Json> {
    if !d.is_finite() {
        return Err(invalid(format!("{d} has no JSON form")));
    }
    let integral = d.fract() == 0.0 && d.abs() <= MAX_SAFE_INTEGER as f64;
    if integral && !(d == 0.0 && d.is_sign_negative()) {
        // Exact: |d| <= 2^53 fits i64 without rounding.
        return Ok(Json::from(d as i64));
    }
    Number::from_f64(d)
        .map(Json::Number)
        .ok_or_else(|| invalid(format!("{d} has no JSON form")))
}

fn bigint_to_json(b: &BigInt) -> Result<Json> {
    if let Ok(i) = i64::try_from(b) {
        Ok(Json::from(i))
    } else if let Ok(u) = u64::try_from(b) {
        Ok(Json::from(u))
    } else {
        Err(invalid(format!("BigInt {b} does not fit a 64-bit integer")))
    }
}

fn key_to_string(key: &PropertyKey) -> String {
    match key {
        PropertyKey::I32(i) => i.to_string(),
        PropertyKey::U32(u) => u.to_string(),
        PropertyKey::Double(d) => match double_to_json(*d) {
            Ok(json) => json.to_string(),
            Err(_) => d.to_string(),
        },
        PropertyKey::String(s) => s.to_string().into_owned(),
    }
}

/// `value`, which sits inside `depth` arrays and objects, as JSON; `None` is
/// JavaScript's `undefined`. Each node spends one unit of `budget`.
fn from_v8(value: &V8, heap: &Heap, depth: usize, budget: &mut usize) -> Result<Option<Json>> {
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| invalid("value expands to too many nodes (shared references)"))?;
    // Opening an object or array here would be level `depth + 1`.
    let open = || {
        if depth >= MAX_DEPTH {
            Err(invalid(format!(
                "value nests deeper than the limit of {MAX_DEPTH} arrays and objects (or is cyclic)"
            )))
        } else {
            Ok(depth + 1)
        }
    };
    Ok(Some(match value {
        V8::Undefined => return Ok(None),
        V8::Null => Json::Null,
        V8::Bool(b) => Json::Bool(*b),
        V8::I32(i) => Json::from(*i),
        V8::U32(u) => Json::from(*u),
        V8::Double(d) => double_to_json(*d)?,
        V8::BigInt(b) => bigint_to_json(b)?,
        V8::String(s) => Json::String(s.to_string().into_owned()),
        V8::HeapReference(reference) => {
            let Some(heap_value) = reference.try_open(heap) else {
                return Err(invalid("dangling V8 object reference"));
            };
            match heap_value {
                HeapValue::BooleanObject(b) => Json::Bool(*b),
                HeapValue::NumberObject(d) => double_to_json(*d)?,
                HeapValue::BigIntObject(b) => bigint_to_json(b)?,
                HeapValue::StringObject(s) => Json::String(s.to_string().into_owned()),
                HeapValue::Object(object) => {
                    let inner = open()?;
                    let mut map = JsonMap::new();
                    for (key, item) in &object.properties {
                        if let Some(item) = from_v8(item, heap, inner, budget)? {
                            map.insert(key_to_string(key), item);
                        }
                    }
                    Json::Object(map)
                }
                HeapValue::DenseArray(array) => {
                    let inner = open()?;
                    let mut items = Vec::with_capacity(array.elements.len());
                    for element in &array.elements {
                        let item = match element {
                            Some(element) => from_v8(element, heap, inner, budget)?,
                            None => None,
                        };
                        items.push(item.unwrap_or(Json::Null));
                    }
                    Json::Array(items)
                }
                HeapValue::SparseArray(array) => {
                    let inner = open()?;
                    let len = usize::try_from(array.length)
                        .map_err(|_| invalid("sparse array too long"))?;
                    if len > 1 << 20 || len > *budget {
                        return Err(invalid("sparse array too long"));
                    }
                    *budget -= len;
                    let mut items = vec![Json::Null; len];
                    for (key, item) in &array.properties {
                        let index = match key {
                            PropertyKey::I32(i) => usize::try_from(*i).ok(),
                            PropertyKey::U32(u) => usize::try_from(*u).ok(),
                            _ => None,
                        };
                        if let (Some(index), Some(item)) =
                            (index, from_v8(item, heap, inner, budget)?)
                        {
                            if let Some(slot) = items.get_mut(index) {
                                *slot = item;
                            }
                        }
                    }
                    Json::Array(items)
                }
                other => {
                    let what = match other {
                        HeapValue::RegExp(_) => "RegExp",
                        HeapValue::Date(_) => "Date",
                        HeapValue::Map(_) => "Map",
                        HeapValue::Set(_) => "Set",
                        HeapValue::ArrayBuffer(_) => "ArrayBuffer",
                        HeapValue::ArrayBufferView(_) => "typed array",
                        HeapValue::Error(_) => "Error",
                        _ => "value",
                    };
                    return Err(invalid(format!("a JavaScript {what} has no JSON form")));
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips() {
        for value in [
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(i32::MAX),
            json!(i64::from(i32::MAX) + 1),
            json!(1u64 << 53),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-0.0),
            json!("ascii"),
            json!("ünï 日本 \u{0} \u{10ffff}"),
            json!([1, [2, {"a": null}]]),
            json!({"": 1, "0": "numeric-looking key", "nested": {"x": []}}),
        ] {
            let bytes = encode(&value).unwrap();
            assert_eq!(decode(&bytes).unwrap(), value, "{value}");
        }
    }

    fn nested(depth: usize) -> Json {
        let mut value = json!(1);
        for i in 0..depth {
            value = if i % 2 == 0 {
                Json::Array(vec![value])
            } else {
                Json::Object([("k".to_owned(), value)].into_iter().collect())
            };
        }
        value
    }

    /// Nested dense arrays around `null`, `depth` deep, in V8's format: what
    /// another program could write (v8_valueserializer itself writes at most
    /// 256 levels).
    fn foreign_nested(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0x0F]; // version 15
        for _ in 0..depth {
            bytes.extend_from_slice(b"A\x01"); // a dense array of length 1
        }
        bytes.push(b'0'); // null
        for _ in 0..depth {
            bytes.extend_from_slice(b"$\x00\x01"); // no properties, length 1
        }
        bytes
    }

    #[test]
    fn foreign_nesting_is_what_v8_writes() {
        let mut heap = Heap::default();
        let mut value = V8::Null;
        for _ in 0..3 {
            value = V8::HeapReference(heap.insert(HeapValue::DenseArray(DenseArray {
                elements: vec![Some(value)],
                properties: Vec::new(),
            })));
        }
        let written = ValueSerializer::default().finish(&heap, &value).unwrap();
        assert_eq!(written, foreign_nested(3));
        assert_eq!(decode(&written).unwrap(), json!([[[null]]]));
    }

    #[test]
    fn depth_limit_holds_both_ways_on_a_small_stack() {
        // A 256 KiB thread: far less than the codec needs in a debug build
        // for the 256 levels v8_valueserializer reads before its own limit.
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let at_limit = nested(MAX_DEPTH);
                assert_eq!(decode(&encode(&at_limit).unwrap()).unwrap(), at_limit);
                let over = nested(MAX_DEPTH + 1);
                assert_eq!(encode(&over).unwrap_err().kind(), ErrorKind::InvalidValue);
                crate::value::drop_deep(over);
                let deepest = decode(&foreign_nested(MAX_DEPTH)).unwrap();
                assert!(crate::value::check_depth(&deepest).is_ok());
                for depth in [MAX_DEPTH + 1, 140, 200, 256, 300, 10_000] {
                    let err = decode(&foreign_nested(depth)).unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{depth}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn shared_references_cannot_expand_without_bound() {
        // [x, x] where x = [y, y] ... 100 levels: 2^100 nodes if copied out.
        let mut heap = Heap::default();
        let mut value = V8::Null;
        for _ in 0..100 {
            value = V8::HeapReference(heap.insert(HeapValue::DenseArray(DenseArray {
                elements: vec![Some(value.clone()), Some(value)],
                properties: Vec::new(),
            })));
        }
        let bytes = ValueSerializer::default().finish(&heap, &value).unwrap();
        assert_eq!(decode(&bytes).unwrap_err().kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn integral_float_reads_as_integer() {
        assert_eq!(decode(&encode(&json!(2.0)).unwrap()).unwrap(), json!(2));
    }

    #[test]
    fn garbage_is_an_invalid_value() {
        let err = decode(b"\x01\x02").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn non_json_values_are_refused() {
        let mut heap = Heap::default();
        let date = heap.insert(HeapValue::Date(v8_valueserializer::Date::new(0.0)));
        let bytes = ValueSerializer::default()
            .finish(&heap, &V8::HeapReference(date))
            .unwrap();
        assert_eq!(decode(&bytes).unwrap_err().kind(), ErrorKind::InvalidValue);
        let nan = ValueSerializer::default()
            .finish(&Heap::default(), &V8::Double(f64::NAN))
            .unwrap();
        assert_eq!(decode(&nan).unwrap_err().kind(), ErrorKind::InvalidValue);
        let huge = ValueSerializer::default()
            .finish(&Heap::default(), &V8::BigInt(BigInt::from(u64::MAX) * 4))
            .unwrap();
        assert_eq!(decode(&huge).unwrap_err().kind(), ErrorKind::InvalidValue);
    }
}

/// The invariant the `v8_roundtrip` fuzz target checks, on stable.
#[cfg(test)]
mod round_trip {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Json::Null, Json::Number)),
            "[a\\x00ü日\u{10ffff}]{0,4}".prop_map(Json::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                proptest::collection::btree_map("[a0-9]{0,3}", inner, 0..4)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JavaScript's view: an integral float up to 2^53 (not `-0`) is a number
    /// like any integer.
    fn js_normal(value: &Json) -> Json {
        match value {
            Json::Number(n) if n.is_f64() => {
                double_to_json(n.as_f64().unwrap_or(0.0)).unwrap_or_else(|_| value.clone())
            }
            Json::Array(items) => Json::Array(items.iter().map(js_normal).collect()),
            Json::Object(map) => {
                Json::Object(map.iter().map(|(k, v)| (k.clone(), js_normal(v))).collect())
            }
            _ => value.clone(),
        }
    }

    proptest! {
        #[test]
        fn every_value_round_trips(value in arb_json()) {
            let back = decode(&encode(&value).unwrap()).unwrap();
            prop_assert_eq!(back, js_normal(&value));
        }
    }
}
