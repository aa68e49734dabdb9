//! Keys, values and writes in Deno KV's own forms: key encoding under a
//! prefix, JSON of stored values, versionstamps and copies of writes.

use std::time::Duration;

use chrono::Utc;
use denokv_proto::{
    AtomicWrite, Check, Key, KeyPart, KvValue, Mutation, MutationKind, Versionstamp,
};

use super::v8;
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::store::Value;

pub(super) fn mutation_value_len(mutation: &Mutation) -> usize {
    match mutation.kind.value() {
        Some(KvValue::V8(b)) | Some(KvValue::Bytes(b)) => b.len(),
        Some(KvValue::U64(_)) => 8,
        None => 0,
    }
}

pub(super) fn expire_at(ttl: Duration) -> chrono::DateTime<Utc> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_add_signed(ttl)
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

pub(super) fn version_to_versionstamp(version: i64) -> Versionstamp {
    // As denokv_sqlite does: the 8-byte version, big-endian, then 2 zero bytes.
    let mut versionstamp = [0; 10];
    versionstamp[..8].copy_from_slice(&version.to_be_bytes());
    versionstamp
}

/// The Deno KV key of `parts` under `prefix`, every part a string.
pub(crate) fn encode_parts_under<'a>(
    prefix: &'a [String],
    parts: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<u8>> {
    let key = Key(prefix
        .iter()
        .chain(parts)
        .map(|p| KeyPart::String(p.clone()))
        .collect());
    denokv_proto::encode_key(&key).map_err(|e| {
        Error::new(ErrorKind::InvalidKey, "the key has no Deno KV encoding").with_source(e)
    })
}

/// The `KvKey` of a stored key (written by anyone: a Deno program too) under
/// `prefix`, or `None` when it is not one (a non-string part, or the prefix
/// itself).
pub(crate) fn decode_key_under(prefix: &[String], bytes: &[u8]) -> Option<KvKey> {
    let key = denokv_proto::decode_key(bytes).ok()?;
    let mut parts = key.0.into_iter();
    for expected in prefix {
        match parts.next()? {
            KeyPart::String(s) if &s == expected => {}
            _ => return None,
        }
    }
    let rest: Option<Vec<String>> = parts
        .map(|p| match p {
            KeyPart::String(s) => Some(s),
            _ => None,
        })
        .collect();
    KvKey::new(rest?).ok()
}

/// The JSON form of a stored Deno KV value.
pub(crate) fn json_of(value: KvValue) -> Result<Value> {
    match value {
        KvValue::V8(bytes) => v8::decode(&bytes),
        KvValue::U64(n) => Ok(Value::from(n)),
        KvValue::Bytes(_) => Err(Error::new(
            ErrorKind::InvalidValue,
            "a Uint8Array value has no JSON form",
        )),
    }
}

pub(crate) fn decode_kv_value(value: Vec<u8>, encoding: i64) -> Result<KvValue> {
    if encoding == denokv_proto::VALUE_ENCODING_LE64 && value.len() != 8 {
        return Err(Error::new(
            ErrorKind::InvalidValue,
            "a KvU64 value is not 8 bytes",
        ));
    }
    denokv_proto::decode_value(value, encoding).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidValue,
            format!("unknown Deno KV value encoding {encoding}"),
        )
    })
}

/// A copy of `write` to run again, for the writes this store makes (checks,
/// sets and deletes); `None` for anything else.
pub(super) fn copy_write(write: &AtomicWrite) -> Option<AtomicWrite> {
    if !write.enqueues.is_empty() {
        return None;
    }
    let mutations = write
        .mutations
        .iter()
        .map(|m| {
            let kind = match &m.kind {
                MutationKind::Set(value) => MutationKind::Set(copy_value(value)),
                MutationKind::Delete => MutationKind::Delete,
                _ => return None,
            };
            Some(Mutation {
                key: m.key.clone(),
                kind,
                expire_at: m.expire_at,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(AtomicWrite {
        checks: write
            .checks
            .iter()
            .map(|c| Check {
                key: c.key.clone(),
                versionstamp: c.versionstamp,
            })
            .collect(),
        mutations,
        enqueues: Vec::new(),
    })
}

pub(super) fn copy_value(value: &KvValue) -> KvValue {
    match value {
        KvValue::V8(bytes) => KvValue::V8(bytes.clone()),
        KvValue::Bytes(bytes) => KvValue::Bytes(bytes.clone()),
        KvValue::U64(n) => KvValue::U64(*n),
    }
}
