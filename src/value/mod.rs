//! The limits every store puts on a [`Value`]: at most [`MAX_DEPTH`] nested
//! arrays and objects, checked without recursion by [`check_depth`], and the
//! bounded JSON decoding the stores share.
//!
//! Every store refuses a deeper value on write (`set`, `set_many`, `cas`)
//! with an [`InvalidValue`](ErrorKind::InvalidValue) error naming the limit,
//! before anything recursive touches it, so that every value a store accepted
//! reads back on every store, and nothing built by a caller or written by
//! another program makes a store recurse without a bound.
//!
//! ```
//! use kvtower::value::{check_depth, MAX_DEPTH};
//! use kvtower::{ErrorKind, Value};
//!
//! let mut value = Value::Null;
//! for _ in 0..MAX_DEPTH {
//!     value = Value::Array(vec![value]);
//! }
//! assert!(check_depth(&value).is_ok());
//! let deeper = Value::Array(vec![value]);
//! assert_eq!(check_depth(&deeper).unwrap_err().kind(), ErrorKind::InvalidValue);
//! ```

// Only the stores that hold JSON text decode it.
#[cfg(any(
    test,
    feature = "redis",
    feature = "sqlite",
    feature = "postgres",
    feature = "cfworkers",
    feature = "fuzzing"
))]
mod decode;

#[cfg(feature = "redis")]
pub(crate) use self::decode::from_slice;
#[cfg(any(test, feature = "sqlite", feature = "postgres", feature = "cfworkers"))]
pub(crate) use self::decode::from_str;
#[cfg(feature = "fuzzing")]
pub(crate) use self::decode::{direct, with_serde};

use crate::error::{Error, ErrorKind, Result};
use crate::store::Value;

/// How many arrays and objects a value may nest: a scalar has depth 0, `[]`
/// and `{}` depth 1, `[[1]]` depth 2. The same for every store.
///
/// 128 is what serde_json's own parser allows by default, less one level: the
/// stores decode with their own bounded parser instead (see
/// [`check_depth`]), so that a value of exactly this depth reads back.
pub const MAX_DEPTH: usize = 128;

/// Checks that `value` nests at most [`MAX_DEPTH`] arrays and objects,
/// without recursion: the walk keeps one iterator per open level, so it holds
/// at most `MAX_DEPTH + 1` of them whatever the value.
///
/// ```
/// use kvtower::value::check_depth;
/// assert!(check_depth(&serde_json::json!({"a": [1, {"b": null}]})).is_ok());
/// ```
///
/// # Errors
///
/// An [`InvalidValue`](ErrorKind::InvalidValue) error naming the limit.
pub fn check_depth(value: &Value) -> Result<()> {
    enum Level<'a> {
        Array(std::slice::Iter<'a, Value>),
        Object(serde_json::map::Values<'a>),
    }
    fn open(value: &Value) -> Option<Level<'_>> {
        match value {
            Value::Array(items) => Some(Level::Array(items.iter())),
            Value::Object(map) => Some(Level::Object(map.values())),
            _ => None,
        }
    }
    let mut levels: Vec<Level<'_>> = Vec::new();
    let Some(root) = open(value) else {
        return Ok(());
    };
    levels.push(root);
    loop {
        if levels.len() > MAX_DEPTH {
            return Err(too_deep());
        }
        let next = match levels.last_mut() {
            None => return Ok(()),
            Some(Level::Array(items)) => items.next(),
            Some(Level::Object(values)) => values.next(),
        };
        match next {
            None => {
                levels.pop();
            }
            Some(child) => {
                if let Some(level) = open(child) {
                    levels.push(level);
                }
            }
        }
    }
}

/// Calls `f` on every node of `value` (itself included), depth first,
/// without recursion: one iterator per open level, so the walk holds as many
/// iterators as the value is deep, not as wide.
pub(crate) fn for_each_node(value: &Value, mut f: impl FnMut(&Value)) {
    enum Level<'a> {
        Array(std::slice::Iter<'a, Value>),
        Object(serde_json::map::Values<'a>),
    }
    let mut levels: Vec<Level<'_>> = Vec::new();
    let mut next = Some(value);
    loop {
        if let Some(node) = next.take() {
            f(node);
            match node {
                Value::Array(items) => levels.push(Level::Array(items.iter())),
                Value::Object(map) => levels.push(Level::Object(map.values())),
                _ => {}
            }
        }
        next = match levels.last_mut() {
            None => return,
            Some(Level::Array(items)) => items.next(),
            Some(Level::Object(values)) => values.next(),
        };
        if next.is_none() {
            levels.pop();
        }
    }
}

fn too_deep() -> Error {
    Error::new(
        ErrorKind::InvalidValue,
        format!("value nests deeper than the limit of {MAX_DEPTH} arrays and objects"),
    )
}

/// Checks `value` with [`check_depth`]; a refused value is dropped with
/// [`drop_deep`], since dropping it the usual way recurses once per level.
pub(crate) fn checked(value: Value) -> Result<Value> {
    match check_depth(&value) {
        Ok(()) => Ok(value),
        Err(e) => {
            drop_deep(value);
            Err(e)
        }
    }
}

/// [`checked`] for a shared value: when it is too deep and this was its last
/// holder, it is dropped without recursing.
pub(crate) fn checked_shared(value: std::sync::Arc<Value>) -> Result<std::sync::Arc<Value>> {
    match check_depth(&value) {
        Ok(()) => Ok(value),
        Err(e) => {
            if let Some(value) = std::sync::Arc::into_inner(value) {
                drop_deep(value);
            }
            Err(e)
        }
    }
}

/// [`checked`] for the new value of a `cas` and a borrowed expected value.
pub(crate) fn checked_cas(expected: Option<&Value>, new: Option<Value>) -> Result<Option<Value>> {
    let new = new.map(checked).transpose()?;
    if let Some(expected) = expected {
        if let Err(e) = check_depth(expected) {
            if let Some(new) = new {
                drop_deep(new);
            }
            return Err(e);
        }
    }
    Ok(new)
}

/// [`checked`] for every value of a batch: all or nothing.
pub(crate) fn checked_entries<K>(entries: Vec<(K, Value)>) -> Result<Vec<(K, Value)>> {
    match entries.iter().try_for_each(|(_, value)| check_depth(value)) {
        Ok(()) => Ok(entries),
        Err(e) => {
            for (_, value) in entries {
                drop_deep(value);
            }
            Err(e)
        }
    }
}

/// Drops `value` without recursion. Dropping a `Value` the usual way recurses
/// once per level of nesting, which overflows the stack for a value nested
/// some thousands deep; this takes the children out level by level instead.
///
/// ```
/// let mut value = serde_json::Value::Null;
/// for _ in 0..100_000 {
///     value = serde_json::Value::Array(vec![value]);
/// }
/// kvtower::value::drop_deep(value);
/// ```
pub fn drop_deep(value: Value) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => pending.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn nested(depth: usize) -> Value {
        let mut value = Value::Null;
        for i in 0..depth {
            value = if i % 2 == 0 {
                Value::Array(vec![value])
            } else {
                let mut map = Map::new();
                map.insert("k".to_owned(), value);
                Value::Object(map)
            };
        }
        value
    }

    #[test]
    fn depth_is_counted_in_containers() {
        assert!(check_depth(&Value::Null).is_ok());
        assert!(check_depth(&nested(MAX_DEPTH)).is_ok());
        let err = check_depth(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert!(err.message().contains("128"), "{err}");
        let deep = nested(10_000);
        assert!(check_depth(&deep).is_err());
        drop_deep(deep);
    }

    #[test]
    fn depth_is_counted_down_and_back_up_across_siblings() {
        // Walk down, back up, and down again in a sibling: each branch is
        // measured from the root, not added to the one before.
        for depth in [7, 8, 9, 10, 17] {
            let value = Value::Array(vec![nested(depth), Value::Null, nested(depth)]);
            assert!(check_depth(&value).is_ok(), "{depth}");
        }
        let value = Value::Array(vec![nested(9), nested(MAX_DEPTH)]);
        assert!(check_depth(&value).is_err());
        let value = Value::Array(vec![nested(9), nested(MAX_DEPTH - 1), nested(3)]);
        assert!(check_depth(&value).is_ok());
    }

    #[test]
    fn parser_reads_exactly_up_to_the_limit() {
        let at_limit = serde_json::to_string(&nested(MAX_DEPTH)).unwrap();
        assert_eq!(from_str(&at_limit).unwrap(), nested(MAX_DEPTH));
        let over = serde_json::to_string(&nested(MAX_DEPTH + 1)).unwrap();
        assert!(from_str(&over).is_err());
        let far = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(from_str(&far).is_err());
        assert!(from_str("[1] x").is_err());
        assert_eq!(
            from_str(r#"{"a":[1,-2,3.5,"s",null,true]}"#).unwrap(),
            serde_json::json!({"a": [1, -2, 3.5, "s", null, true]})
        );
    }

    #[test]
    fn floats_parse_exactly() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let f = f64::from_bits(state);
            if !f.is_finite() {
                continue;
            }
            let text = serde_json::to_string(&f).unwrap();
            assert_eq!(from_str(&text).unwrap().as_f64(), Some(f), "{text}");
        }
    }
}
