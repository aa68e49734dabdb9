//! Redis keys holding another type than a string (a list, a hash, a set,
//! written by another program): every read path gives the same
//! [`InvalidValue`](ErrorKind::InvalidValue) error naming the type, never
//! "absent" (which a cache above would remember).
//!
//! `GET` and the scripts fail on such a key with `WRONGTYPE`, but `MGET`
//! answers nil as for an absent key. So the keys `MGET` found nil, and the
//! keys of a read that failed with `WRONGTYPE`, are asked their `TYPE`: only
//! a batch with absent keys, or one that already failed, pays that extra
//! round trip.

use futures::future::try_join_all;

use super::RedisKvStore;
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;

/// The error of a read of a key holding the Redis type `kind`.
pub(super) fn wrong_type(kind: &str) -> Error {
    Error::new(
        ErrorKind::InvalidValue,
        format!("the Redis key holds a {kind}, not a string value"),
    )
}

/// Whether `err` is Redis's `WRONGTYPE`.
fn is_wrong_type(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<redis::RedisError>())
        .is_some_and(|e| e.code() == Some("WRONGTYPE"))
}

/// A `TYPE` answer a string read cannot explain: not absent, not a string
/// (which another writer may have set since the read).
fn foreign(kind: String) -> Option<String> {
    (kind != "none" && kind != "string").then_some(kind)
}

impl RedisKvStore {
    /// The Redis types of `raw_keys`, asked at once (the connection
    /// pipelines concurrent commands: one round trip).
    async fn types<'k>(&self, raw_keys: impl IntoIterator<Item = &'k [u8]>) -> Result<Vec<String>> {
        let conn = self.conn();
        let asks = raw_keys.into_iter().map(|raw| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("TYPE")
                    .arg(raw)
                    .query_async::<String>(&mut conn)
                    .await
            }
        });
        self.run(try_join_all(asks)).await
    }

    /// `MGET`'s answer checked: the first key it found nil that holds
    /// another type, as an error naming the key.
    pub(super) async fn check_nils(
        &self,
        keys: &[KvKey],
        raw_keys: &[Vec<u8>],
        values: &[Option<Vec<u8>>],
    ) -> Result<()> {
        let kinds = self.nil_types(raw_keys, values).await?;
        match keys
            .iter()
            .zip(kinds)
            .find_map(|(key, kind)| Some((key, kind?)))
        {
            Some((key, kind)) => Err(wrong_type(&kind).with_key(key)),
            None => Ok(()),
        }
    }

    /// For each of `raw_keys`, the type it holds when `MGET` found it nil
    /// and it is neither absent nor a string.
    pub(super) async fn nil_types(
        &self,
        raw_keys: &[Vec<u8>],
        values: &[Option<Vec<u8>>],
    ) -> Result<Vec<Option<String>>> {
        let nils: Vec<usize> = (0..raw_keys.len())
            .filter(|&i| values.get(i).is_none_or(Option::is_none))
            .collect();
        let mut kinds = vec![None; raw_keys.len()];
        if nils.is_empty() {
            return Ok(kinds);
        }
        let found = self
            .types(nils.iter().map(|&i| raw_keys[i].as_slice()))
            .await?;
        for (i, kind) in nils.into_iter().zip(found) {
            kinds[i] = foreign(kind);
        }
        Ok(kinds)
    }

    /// `err` of a read of `keys`, explained: a `WRONGTYPE` becomes the
    /// error naming the first key of another type and its type. Any other
    /// error (or one the types cannot explain) is returned as it is.
    pub(super) async fn explain(&self, err: Error, keys: &[KvKey], raw_keys: &[Vec<u8>]) -> Error {
        if !is_wrong_type(&err) {
            return err;
        }
        let Ok(kinds) = self.types(raw_keys.iter().map(Vec::as_slice)).await else {
            return err;
        };
        match keys
            .iter()
            .zip(kinds)
            .find_map(|(key, kind)| Some((key, foreign(kind)?)))
        {
            Some((key, kind)) => wrong_type(&kind).with_key(key).with_source(err),
            None => err,
        }
    }
}
