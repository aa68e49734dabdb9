//! Input generators and oracles shared by the fuzz targets.

pub mod glob;

use arbitrary::{Result, Unstructured};
use kvtower::KvKey;
use serde_json::{Map, Number, Value};

/// Characters every key encoding treats specially somewhere: separators and
/// escapes (`:`, `%`, `,`, `"`, `\`), glob syntax, NUL and its neighbours,
/// bytes around the SQL escape (`0x01`, `ÿ` = U+00FF), the Workers layout's
/// `]`, and multi-byte text. Drawing from few characters makes shared
/// prefixes and near-collisions likely.
const TRICKY: &[char] = &[
    'a',
    'b',
    ':',
    '%',
    '2',
    '5',
    '3',
    'A',
    '\0',
    '\u{1}',
    '\u{2}',
    '\u{ff}',
    '*',
    '?',
    '[',
    ']',
    '\\',
    '^',
    '-',
    ',',
    '"',
    '\n',
    '\u{7f}',
    'ü',
    '日',
    '\u{10ffff}',
];

/// One key part: mostly tricky characters, sometimes any character.
pub fn part(u: &mut Unstructured<'_>) -> Result<String> {
    let len = u.int_in_range(0..=6)?;
    let mut s = String::new();
    for _ in 0..len {
        if u.ratio(1, 6)? {
            s.push(u.arbitrary::<char>()?);
        } else {
            s.push(*u.choose(TRICKY)?);
        }
    }
    Ok(s)
}

/// A key of 1 to 4 parts.
pub fn key(u: &mut Unstructured<'_>) -> Result<KvKey> {
    let n = u.int_in_range(1..=4)?;
    let parts = (0..n).map(|_| part(u)).collect::<Result<Vec<_>>>()?;
    Ok(KvKey::new(parts).expect("at least one part"))
}

/// A key, and a second one that often shares parts (or part prefixes) with
/// it, so that order and prefix checks see interesting pairs.
pub fn key_pair(u: &mut Unstructured<'_>) -> Result<(KvKey, KvKey)> {
    let a = key(u)?;
    let b = match u.int_in_range(0..=3)? {
        0 => key(u)?,
        1 => {
            // A part-wise prefix of `a`, possibly extended.
            let keep = u.int_in_range(1..=a.len())?;
            let mut parts = a.parts()[..keep].to_vec();
            for _ in 0..u.int_in_range(0..=2)? {
                parts.push(part(u)?);
            }
            KvKey::new(parts).expect("at least one part")
        }
        2 => {
            // `a` with its last part cut or extended by a few characters.
            let mut parts = a.parts().to_vec();
            let last = parts.last_mut().expect("non-empty");
            if u.arbitrary()? {
                let cut = u.int_in_range(0..=last.chars().count())?;
                *last = last.chars().take(cut).collect();
            } else {
                last.push_str(&part(u)?);
            }
            KvKey::new(parts).expect("at least one part")
        }
        _ => a.clone(),
    };
    Ok((a, b))
}

/// A JSON value at most `depth` levels deep, floats finite.
pub fn json(u: &mut Unstructured<'_>, depth: usize) -> Result<Value> {
    let choice = if depth == 0 {
        u.int_in_range(0..=5)?
    } else {
        u.int_in_range(0..=7)?
    };
    Ok(match choice {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => {
            let f = f64::from_bits(u.arbitrary()?);
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        5 => Value::String(u.arbitrary()?),
        6 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| json(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut map = Map::new();
            for _ in 0..n {
                map.insert(u.arbitrary()?, json(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// How deeply `value` nests (a scalar is 0).
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `value` as a JavaScript program reads it back: a float with an integral
/// value of magnitude up to 2^53 (other than `-0`) is just a number, so it
/// reads as an integer.
pub fn js_normal(value: &Value) -> Value {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (None, None, Some(f))
                if f.fract() == 0.0
                    && f.abs() <= ((1u64 << 53) - 1) as f64
                    && !(f == 0.0 && f.is_sign_negative()) =>
            {
                Value::from(f as i64)
            }
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(js_normal).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), js_normal(v))).collect())
        }
        _ => value.clone(),
    }
}
