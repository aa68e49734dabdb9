//! `cas`: one Lua script that compares and swaps in one atomic step, plus
//! the structural-equality retry described in the module docs
//! ("Compare-and-swap").

use super::encoding::{decode_value, encode_value};
use super::error::map_redis_error;
use super::RedisKvStore;
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::store::{SetOptions, Value};

/// How many times `cas` re-runs its script when the stored text equals the
/// expected value structurally but not byte for byte.
const MAX_CAS_ROUNDS: usize = 64;
/// The compare-and-swap script.
///
/// KEYS[1]: the key. ARGV[1]: `1` when a value is expected, `0` when the key
/// must be absent. ARGV[2]: the expected JSON text. ARGV[3]: the new JSON text,
/// or empty to delete (JSON text is never empty). ARGV[4]: the TTL in
/// milliseconds, or empty for none.
///
/// Returns `{1, false}` when it swapped, `{0, current}` when it did not
/// (`current` is nil when the key is absent).
pub(super) const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return {0, current} end
elseif current then
  return {0, current}
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return {1, false}
";

impl RedisKvStore {
    pub(super) async fn cas_inner(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let rkey = self.inner.codec.encode(key);
        let new_text = match new {
            Some(value) if !options.is_expired() => encode_value(&value)?,
            _ => Vec::new(), // the script deletes
        };
        let ttl = options
            .ttl
            .filter(|_| !new_text.is_empty())
            .map(|ttl| self.ttl_ms(ttl).to_string())
            .unwrap_or_default();
        // First guess at the stored text: our own serialization of `expected`,
        // which is what this store wrote if it wrote the value.
        let mut expected_text = expected.map(encode_value).transpose()?;
        let mut conn = self.conn();
        for _ in 0..MAX_CAS_ROUNDS {
            let (swapped, current): (i64, Option<Vec<u8>>) = self
                .inner
                .cas_script
                .key(&rkey)
                .arg(if expected_text.is_some() { "1" } else { "0" })
                .arg(expected_text.as_deref().unwrap_or_default())
                .arg(&new_text)
                .arg(&ttl)
                .invoke_async(&mut conn)
                .await
                .map_err(map_redis_error)?;
            if swapped == 1 {
                return Ok(true);
            }
            let (Some(expected), Some(current)) = (expected, current) else {
                // Absent expected but present, or expected but absent: the
                // script's atomic read decided it.
                return Ok(false);
            };
            if decode_value(&current)? != *expected {
                return Ok(false);
            }
            // Structurally equal, spelled differently: swap only if the value
            // is still exactly this text.
            expected_text = Some(current);
        }
        Err(Error::new(
            ErrorKind::Backend,
            format!("cas lost {MAX_CAS_ROUNDS} races to writers of equal values"),
        )
        .with_retryable(true))
    }
}
