//! [`KvKey`]: the key type of every store, and the [`kvkey!`](crate::kvkey) macro.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};

/// A key: a non-empty sequence of string parts, such as `["user", "42"]`.
///
/// Parts may be any string, including the empty string and strings containing
/// separators, glob characters, NUL or non-ASCII text: every store encodes keys
/// injectively, so two different keys never collide.
///
/// Keys are ordered part-wise (lexicographically by parts) and prefixes are
/// part-wise too: `["ab"]` does not start with `["a"]`.
///
/// Cloning a key is cheap (the parts live behind an [`Arc`]). A key hashes
/// its parts once, when it is built, and keeps the hash: a read through a
/// cache stack hashes the key in several maps (the front, the single-flight
/// map, the stripe locks), and each of them then hashes one `u64`.
///
/// # Examples
///
/// ```
/// use kvtower::{kvkey, KvKey};
///
/// let key = KvKey::new(["user", "42"])?;
/// assert_eq!(key, kvkey!["user", "42"]);
/// assert_eq!(key.parts(), ["user", "42"]);
/// assert!(key.starts_with(&kvkey!["user"]));
/// assert!(!kvkey!["ab"].starts_with(&kvkey!["a"]));
/// assert!(KvKey::new(Vec::<String>::new()).is_err());
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Clone)]
pub struct KvKey {
    parts: Arc<[String]>,
    /// The parts hashed by [`PARTS_HASHER`]: equal parts, equal hash.
    hash: u64,
}

/// Hashes the parts of every key, once per key. Seeded at random once per
/// process: colliding keys cannot be computed offline, and every map that
/// holds keys rehashes this `u64` with its own seed as well.
static PARTS_HASHER: LazyLock<foldhash::fast::RandomState> =
    LazyLock::new(foldhash::fast::RandomState::default);

impl PartialEq for KvKey {
    fn eq(&self, other: &Self) -> bool {
        // Different hashes, different parts: most unequal keys compare in one step.
        self.hash == other.hash && self.parts == other.parts
    }
}

impl Eq for KvKey {}

impl PartialOrd for KvKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KvKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl Hash for KvKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl KvKey {
    /// Builds a key from its parts.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidKey`] error when `parts` is empty.
    ///
    /// ```
    /// use kvtower::{ErrorKind, KvKey};
    ///
    /// let key = KvKey::new(vec![String::from("a:b"), String::new()])?;
    /// assert_eq!(key.len(), 2);
    /// let err = KvKey::new(Vec::<&str>::new()).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidKey);
    /// # Ok::<(), kvtower::Error>(())
    /// ```
    pub fn new<I, P>(parts: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let parts: Vec<String> = parts.into_iter().map(Into::into).collect();
        Self::from_vec(parts)
    }

    fn from_vec(parts: Vec<String>) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                "a key needs at least one part",
            ));
        }
        Ok(Self::from_parts(parts.into()))
    }

    /// The one constructor: every key's hash is computed here.
    fn from_parts(parts: Arc<[String]>) -> Self {
        debug_assert!(!parts.is_empty());
        let hash = PARTS_HASHER.hash_one(&*parts);
        Self { parts, hash }
    }

    /// Used by [`kvkey!`](crate::kvkey), which guarantees at least one part.
    #[doc(hidden)]
    pub fn __from_nonempty(parts: Vec<String>) -> Self {
        Self::from_parts(parts.into())
    }

    /// The parts of the key, in order (never empty).
    ///
    /// ```
    /// # use kvtower::kvkey;
    /// assert_eq!(kvkey!["a", "b"].parts(), ["a", "b"]);
    /// ```
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// The number of parts (at least one).
    ///
    /// ```
    /// # use kvtower::kvkey;
    /// assert_eq!(kvkey!["a", "b"].len(), 2);
    /// ```
    #[allow(clippy::len_without_is_empty)] // a key is never empty
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether `prefix`'s parts are the first parts of this key (part-wise, so
    /// `["ab"]` does not start with `["a"]`). A key starts with itself.
    ///
    /// ```
    /// # use kvtower::kvkey;
    /// let key = kvkey!["user", "42"];
    /// assert!(key.starts_with(&kvkey!["user"]));
    /// assert!(key.starts_with(&key));
    /// assert!(!key.starts_with(&kvkey!["us"]));
    /// ```
    pub fn starts_with(&self, prefix: &KvKey) -> bool {
        self.parts.starts_with(&prefix.parts)
    }

    /// A new key with `part` appended.
    ///
    /// ```
    /// # use kvtower::kvkey;
    /// assert_eq!(kvkey!["user"].child("42"), kvkey!["user", "42"]);
    /// ```
    #[must_use]
    pub fn child(&self, part: impl Into<String>) -> KvKey {
        let mut parts = Vec::with_capacity(self.parts.len() + 1);
        parts.extend(self.parts.iter().cloned());
        parts.push(part.into());
        Self::__from_nonempty(parts)
    }

    /// A new key made of this key's parts followed by `other`'s.
    ///
    /// ```
    /// # use kvtower::kvkey;
    /// assert_eq!(kvkey!["app"].join(&kvkey!["user", "42"]), kvkey!["app", "user", "42"]);
    /// ```
    #[must_use]
    pub fn join(&self, other: &KvKey) -> KvKey {
        // Collected straight into the `Arc<[String]>`: the chain has an exact
        // length, so the slice is allocated once (no intermediate `Vec`). This
        // is on PrefixLayer's hot path.
        let parts: Arc<[String]> = self
            .parts
            .iter()
            .chain(other.parts.iter())
            .cloned()
            .collect();
        Self::from_parts(parts)
    }

    /// The key without `prefix`'s parts, or `None` when the key does not start
    /// with `prefix` or is equal to it (nothing would be left).
    ///
    /// ```
    /// # use kvtower::kvkey;
    /// let key = kvkey!["app", "user", "42"];
    /// assert_eq!(key.strip_prefix(&kvkey!["app"]), Some(kvkey!["user", "42"]));
    /// assert_eq!(key.strip_prefix(&key), None);
    /// assert_eq!(key.strip_prefix(&kvkey!["ap"]), None);
    /// ```
    pub fn strip_prefix(&self, prefix: &KvKey) -> Option<KvKey> {
        if self.parts.len() > prefix.parts.len() && self.starts_with(prefix) {
            Some(Self::__from_nonempty(
                self.parts[prefix.parts.len()..].to_vec(),
            ))
        } else {
            None
        }
    }
}

/// Shows the key as a JSON array of its parts: `["user","42"]`. The form is
/// unambiguous whatever the parts contain.
impl fmt::Display for KvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            // serde_json escapes quotes, backslashes and control characters.
            let quoted = serde_json::to_string(part).map_err(|_| fmt::Error)?;
            f.write_str(&quoted)?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for KvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KvKey").field(&&*self.parts).finish()
    }
}

impl Serialize for KvKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.parts.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for KvKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let parts = Vec::<String>::deserialize(deserializer)?;
        KvKey::from_vec(parts).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Vec<String>> for KvKey {
    type Error = Error;

    fn try_from(parts: Vec<String>) -> Result<Self> {
        Self::from_vec(parts)
    }
}

impl TryFrom<&[&str]> for KvKey {
    type Error = Error;

    fn try_from(parts: &[&str]) -> Result<Self> {
        Self::new(parts.iter().copied())
    }
}

/// Builds a [`KvKey`] from one or more parts, each anything that is
/// `Into<String>`. An empty `kvkey![]` does not compile.
///
/// ```
/// use kvtower::kvkey;
///
/// let id = 42;
/// let key = kvkey!["user", id.to_string()];
/// assert_eq!(key.parts(), ["user", "42"]);
/// ```
#[macro_export]
macro_rules! kvkey {
    ($($part:expr),+ $(,)?) => {
        $crate::KvKey::__from_nonempty(::std::vec![$(::std::string::String::from($part)),+])
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_key_is_invalid() {
        let err = KvKey::new(Vec::<String>::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
        let err = serde_json::from_str::<KvKey>("[]").unwrap_err();
        assert!(err.to_string().contains("at least one part"), "{err}");
    }

    #[test]
    fn odd_parts_are_kept_exactly() {
        let parts = ["", ":", "/", "*", "?", "[", "\\", "\0", "ü日本"];
        let key = KvKey::new(parts).unwrap();
        assert_eq!(key.parts(), parts);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<KvKey>(&json).unwrap(), key);
        assert_eq!(key.to_string(), json);
    }

    #[test]
    fn prefixes_are_part_wise() {
        assert!(!kvkey!["ab"].starts_with(&kvkey!["a"]));
        assert!(kvkey!["a", "b"].starts_with(&kvkey!["a"]));
        assert!(!kvkey!["a"].starts_with(&kvkey!["a", "b"]));
        assert!(kvkey!["a", ""].starts_with(&kvkey!["a"]));
    }

    #[test]
    fn equal_keys_hash_equally_however_built() {
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        let made = [
            kvkey!["app", "user", "42"],
            kvkey!["app"].join(&kvkey!["user", "42"]),
            kvkey!["app", "user"].child("42"),
            kvkey!["x", "app", "user", "42"]
                .strip_prefix(&kvkey!["x"])
                .unwrap(),
            serde_json::from_str(r#"["app","user","42"]"#).unwrap(),
            KvKey::new(["app", "user", "42"]).unwrap(),
        ];
        for key in &made {
            assert_eq!(key, &made[0]);
            assert_eq!(state.hash_one(key), state.hash_one(&made[0]));
        }
        // Parts that concatenate alike are still different keys.
        assert_ne!(kvkey!["ab", "c"], kvkey!["a", "bc"]);
        assert_ne!(kvkey!["a", ""], kvkey!["a"]);
    }

    #[test]
    fn order_is_part_wise() {
        assert!(kvkey!["a"] < kvkey!["a", ""]);
        assert!(kvkey!["a", "z"] < kvkey!["a\0"]);
        assert!(kvkey!["a", "b"] < kvkey!["b"]);
    }
}
