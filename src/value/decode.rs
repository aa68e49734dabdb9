//! JSON text to a [`Value`], as every store reads it: a direct parser for
//! the text stores hold, serde_json for everything else.
//!
//! [`direct`] builds the value straight from the bytes: one UTF-8 check of
//! the whole text, strings sliced out of it, no serde visitor between the
//! text and the tree. It answers only text it is sure of and gives up
//! (`None`) on anything else: invalid text, numbers it would have to think
//! about (`-0`, integers past 64 bits, out-of-range floats), lone
//! surrogates, control characters, nesting past [`MAX_DEPTH`].
//! [`with_serde`] then decides, with serde_json's own errors. So the answer
//! is always serde_json's (with `float_roundtrip`): the `json_decode` fuzz
//! target and the tests below compare the two. Decoding the benchmark's
//! ~200-byte object takes a fifth fewer instructions than through serde
//! (12,500 against 15,600: callgrind, `bench/hitpath`, BENCHMARKS.md); most of
//! what is left is allocating the tree. Text it gives up on late is parsed
//! twice, which only unusual text pays.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number};

use super::MAX_DEPTH;
use crate::store::Value;

/// Parses JSON text into a value, refusing more than [`MAX_DEPTH`] levels of
/// nesting (serde_json's own limit stops one level short of it).
///
/// Numbers parse exactly (serde_json's `float_roundtrip`): the default
/// parser may read a float one unit in the last place off.
#[cfg(any(
    test,
    feature = "redis",
    feature = "sqlite",
    feature = "postgres",
    feature = "cfworkers"
))]
pub(crate) fn from_slice(bytes: &[u8]) -> std::result::Result<Value, serde_json::Error> {
    match direct(bytes) {
        Some(value) => Ok(value),
        None => with_serde(bytes),
    }
}

/// [`from_slice`] of text.
#[cfg(any(test, feature = "sqlite", feature = "postgres", feature = "cfworkers"))]
pub(crate) fn from_str(text: &str) -> std::result::Result<Value, serde_json::Error> {
    from_slice(text.as_bytes())
}

/// serde_json's answer, depth-bounded: what [`from_slice`] answers whenever
/// [`direct`] gives up.
pub(crate) fn with_serde(bytes: &[u8]) -> std::result::Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Safe to lift serde_json's limit: `Bounded` refuses any level past
    // MAX_DEPTH, so the recursion below stays within MAX_DEPTH + 1 frames.
    de.disable_recursion_limit();
    let value = Bounded { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The value of `bytes` when they are JSON text this parser is sure of (see
/// the module docs); `None` leaves the decision to [`with_serde`].
pub(crate) fn direct(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parser = Parser { text, at: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    (parser.at == bytes.len()).then_some(value)
}

struct Parser<'a> {
    /// Valid UTF-8: every index the parser stops at is an ASCII byte's, so
    /// slicing `text` there never splits a character.
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// The value at the cursor (whitespace first), inside `depth` arrays and
    /// objects.
    fn value(&mut self, depth: usize) -> Option<Value> {
        self.skip_whitespace();
        match self.peek()? {
            b'"' => self.string().map(Value::String),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal("true", Value::Bool(true)),
            b'f' => self.literal("false", Value::Bool(false)),
            b'n' => self.literal("null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Option<Value> {
        let end = self.at + word.len();
        (self.text.as_bytes().get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            value
        })
    }

    fn array(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1; // '['
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1; // '{'
        let mut map = Map::new();
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Value::Object(map));
        }
        loop {
            self.skip_whitespace();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            let item = self.value(depth)?;
            // A repeated key keeps its last value, as serde_json's does.
            map.insert(key, item);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(Value::Object(map));
                }
                _ => return None,
            }
        }
    }

    /// The string whose opening quote is at the cursor.
    fn string(&mut self) -> Option<String> {
        self.at += 1; // '"'
        let bytes = self.text.as_bytes();
        let mut start = self.at;
        let mut out: Option<String> = None;
        loop {
            self.at = plain_run_end(bytes, self.at);
            let b = *bytes.get(self.at)?;
            match b {
                b'"' => {
                    let tail = &self.text[start..self.at];
                    self.at += 1;
                    return Some(match out {
                        None => tail.to_owned(),
                        Some(mut out) => {
                            out.push_str(tail);
                            out
                        }
                    });
                }
                b'\\' => {
                    let out = out.get_or_insert_with(String::new);
                    out.push_str(&self.text[start..self.at]);
                    // The character and the escape's length.
                    let (escaped, len) = match *bytes.get(self.at + 1)? {
                        b'"' => ('"', 2),
                        b'\\' => ('\\', 2),
                        b'/' => ('/', 2),
                        b'b' => ('\u{8}', 2),
                        b'f' => ('\u{c}', 2),
                        b'n' => ('\n', 2),
                        b'r' => ('\r', 2),
                        b't' => ('\t', 2),
                        // Surrogates (paired or lone) are serde_json's call:
                        // `from_u32` refuses them.
                        b'u' => (char::from_u32(self.hex4(self.at + 2)?)?, 6),
                        _ => return None,
                    };
                    out.push(escaped);
                    self.at += len;
                    start = self.at;
                }
                // Control characters must be escaped in JSON strings.
                0x00..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    /// The four hex digits at `at`.
    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.text.as_bytes().get(at..at + 4)?;
        let mut code = 0;
        for d in digits {
            code = code * 16 + char::from(*d).to_digit(16)?;
        }
        Some(code)
    }

    /// The number at the cursor, by JSON's grammar:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<Value> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let negative = bytes[self.at] == b'-';
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let int_digits = self.at - int_start;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
            integer = false;
        }
        // A leading zero stands alone ("01" is two tokens: serde_json's
        // error to give).
        if matches!(self.peek(), Some(b'0'..=b'9')) {
            return None;
        }
        let text = &self.text[start..self.at];
        // serde_json reads an integer into a u64 while it fits (at most 20
        // digits), else as a float.
        if integer && int_digits <= 20 {
            if let Ok(magnitude) = self.text[int_start..self.at].parse::<u64>() {
                if !negative {
                    return Some(Value::Number(magnitude.into()));
                }
                // Its rule for a negative one: an i64 unless that wraps
                // (past i64::MIN) or is `-0`; those it reads as floats.
                let value = (magnitude as i64).wrapping_neg();
                return (value < 0).then(|| Value::Number(value.into()));
            }
        }
        // Correctly rounded, as serde_json's `float_roundtrip` parse is; the
        // long integers it reads as floats too. Out of range: its error.
        let float: f64 = text.parse().ok()?;
        Number::from_f64(float).map(Value::Number)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
}

/// Where the bytes of a string from `at` on stop being plain ones: the index
/// of the first `"`, `\\` or control character, eight bytes at a time (the
/// bytes of a string are most of a value's text; one at a time they cost
/// about three times as many instructions). Past the last whole word of
/// eight, the caller's own loop takes the rest byte by byte.
fn plain_run_end(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte of `word` that is zero. Exact up to the first
    // zero byte (a borrow only runs upward), which is all that is used.
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let special = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            // Below 0x20: the subtraction borrows in exactly those bytes.
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at
}

/// Deserializes a [`Value`] at nesting `depth` (the number of arrays and
/// objects around it), refusing to open one past [`MAX_DEPTH`].
struct Bounded {
    depth: usize,
}

impl Bounded {
    fn open<E: de::Error>(&self) -> std::result::Result<Bounded, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "value nests deeper than the limit of {MAX_DEPTH} arrays and objects"
            )));
        }
        Ok(Bounded {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> std::result::Result<Value, E> {
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> std::result::Result<Value, E> {
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E>(self, f: f64) -> std::result::Result<Value, E> {
        // serde_json never yields a non-finite float; JSON has no form for one.
        Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let child = self.open()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(Bounded { depth: child.depth })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> std::result::Result<Value, A::Error> {
        let child = self.open()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let item = access.next_value_seed(Bounded { depth: child.depth })?;
            map.insert(key, item);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `direct`, when it answers, answers serde_json's value; and
    /// `from_slice` always answers what serde_json does.
    fn agrees(text: &[u8]) {
        let serde = with_serde(text);
        if let Some(value) = direct(text) {
            let expected = serde.as_ref().unwrap_or_else(|e| {
                panic!(
                    "direct read {:?} where serde_json failed: {e}",
                    String::from_utf8_lossy(text)
                )
            });
            assert_eq!(&value, expected, "{:?}", String::from_utf8_lossy(text));
            // Same number kinds too (u64, i64, f64), which `==` on values
            // does not tell apart for every pair.
            assert_eq!(
                serde_json::to_string(&value).unwrap(),
                serde_json::to_string(expected).unwrap()
            );
        }
        assert_eq!(from_slice(text).ok(), serde.ok());
    }

    #[test]
    fn common_text_is_read_directly() {
        for text in [
            r#"{"id":1,"name":"Ada","roles":["a","b"],"score":97.25,"x":{"y":null,"z":false}}"#,
            r#" [ 1 , -2 , 3.5e2 , 0 , -0.0 , 1E-7 , "" , true , {} , [] ] "#,
            r#""\" \\ \/ \b \f \n \r \t \u00e9 \uFFFF é 😀""#,
            r#"{"a":1,"a":2}"#,
            "18446744073709551615",
            "-9223372036854775808",
            "-9223372036854775807",
            "99999999999999999999",
            "1e308",
            "123456789012345678901234567890",
        ] {
            assert!(direct(text.as_bytes()).is_some(), "{text}");
            agrees(text.as_bytes());
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde_json() {
        for text in [
            "",
            " ",
            "-0",
            "-9223372036854775809",
            "18446744073709551616",
            "1e309",
            "-1e400",
            "1e-400",
            "-1e-400",
            "0e99999999999999999999",
            "01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "-",
            "--1",
            "0x10",
            "NaN",
            "Infinity",
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\u12""#,
            r#""\u12G4""#,
            r#""\x""#,
            "\"a\u{1}b\"",
            "\"unterminated",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":1,}",
            "tru",
            "nul",
            "falsey",
            "[1] x",
            "\u{feff}1",
            "1 2",
        ] {
            agrees(text.as_bytes());
        }
        agrees(b"\"\xff\"");
        agrees(b"[\"\xc3\"]");
    }

    #[test]
    fn a_plain_run_ends_at_the_first_special_byte_wherever_it_is() {
        let naive = |bytes: &[u8], at: usize| {
            (at..bytes.len())
                .find(|&i| matches!(bytes[i], b'"' | b'\\' | 0x00..=0x1f))
                .unwrap_or(bytes.len())
        };
        for filler in ["a", "é", "~", "\u{7f}", "😀"] {
            for len in 0..40 {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut bytes = filler.repeat(len).into_bytes();
                    let clean = bytes.clone();
                    bytes.push(special);
                    bytes.extend_from_slice(b"\"x\\");
                    for at in [0, 1, 3] {
                        let at = at.min(clean.len());
                        let end = plain_run_end(&bytes, at);
                        // The word loop may stop short of the end (fewer than
                        // eight bytes left), never past a special byte.
                        let first = naive(&bytes, at);
                        assert!(end <= first, "{filler} {len} {special}");
                        assert!(
                            end == first || bytes.len() - end < 8,
                            "{filler} {len} {special}"
                        );
                        assert!(bytes[at..end]
                            .iter()
                            .all(|b| !matches!(b, b'"' | b'\\' | 0..=0x1f)));
                    }
                    agrees(&[b"\"".as_slice(), &bytes].concat());
                }
            }
        }
    }

    #[test]
    fn nesting_stops_at_the_limit() {
        let at = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(direct(at.as_bytes()).is_some());
        agrees(at.as_bytes());
        let over = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(direct(over.as_bytes()).is_none());
        assert!(from_slice(over.as_bytes()).is_err());
        let objects = format!(
            "{}1{}",
            "{\"k\":".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(from_slice(objects.as_bytes()).is_err());
    }

    #[test]
    fn floats_are_read_as_serde_json_reads_them() {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let f = f64::from_bits(state);
            if f.is_finite() {
                let text = serde_json::to_string(&f).unwrap();
                assert_eq!(
                    direct(text.as_bytes()).and_then(|v| v.as_f64()),
                    Some(f),
                    "{text}"
                );
            }
            // Decimal text with many digits, not only the shortest form.
            let long = format!(
                "{}.{:019}e{}",
                state % 1000,
                state,
                (state % 700) as i64 - 350
            );
            agrees(long.as_bytes());
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(|n| Value::Number(n.into())),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn what_serde_json_writes_reads_back(value in json()) {
            let compact = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(direct(&compact), Some(value.clone()));
            let pretty = serde_json::to_vec_pretty(&value).unwrap();
            prop_assert_eq!(direct(&pretty), Some(value));
        }

        #[test]
        fn any_bytes_agree_with_serde_json(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            agrees(&bytes);
        }

        #[test]
        fn damaged_text_agrees_with_serde_json(value in json(), at in any::<usize>(), byte in any::<u8>()) {
            let mut text = serde_json::to_vec(&value).unwrap();
            let at = at % text.len();
            text[at] = byte;
            agrees(&text);
            text.truncate(at);
            agrees(&text);
        }
    }
}
