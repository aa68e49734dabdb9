//! `get_with_ttl` and `get_many_with_ttl`: each value with its `PTTL`, read
//! in one atomic step by one Lua script (so a write between the two reads
//! cannot pair a value with another value's lifetime), one round trip per
//! batch (per slot in a cluster: a script's keys must share one).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use redis::cluster_routing::Slot;
use redis::{RedisResult, Script};

use super::connection::Conn;
use super::encoding::decode_value;
use super::{RedisKvStore, BATCH_CHUNK};
use crate::error::Result;
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::Value;

/// For every key of KEYS, its value (nil when absent) and its `PTTL` (-1:
/// no TTL, -2: absent), flattened: `{v1, t1, v2, t2, ...}`.
static GET_WITH_TTL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local r = {}
for i, k in ipairs(KEYS) do
  r[2 * i - 1] = redis.call('GET', k)
  r[2 * i] = redis.call('PTTL', k)
end
return r
",
    )
});

/// A value and its lifetime, as the store answers them.
type Found = Option<(Value, Option<Duration>)>;

/// Runs the script over `raw_keys` (which must share a slot in a cluster).
async fn read(conn: &mut Conn, raw_keys: &[Vec<u8>]) -> RedisResult<Vec<(Option<Vec<u8>>, i64)>> {
    let mut invocation = GET_WITH_TTL.prepare_invoke();
    for key in raw_keys {
        invocation.key(key);
    }
    let flat: Vec<redis::Value> = invocation.invoke_async(conn).await?;
    let mut pairs = Vec::with_capacity(raw_keys.len());
    let mut items = flat.into_iter();
    while let (Some(value), Some(ttl)) = (items.next(), items.next()) {
        let value: Option<Vec<u8>> = redis::from_redis_value(value)?;
        let ttl: i64 = redis::from_redis_value(ttl)?;
        pairs.push((value, ttl));
    }
    Ok(pairs)
}

/// A script answer as a value and its remaining lifetime.
fn found(raw: Option<Vec<u8>>, pttl: i64) -> Result<Found> {
    let Some(raw) = raw else { return Ok(None) };
    let value = decode_value(&raw)?;
    // -1: no TTL. A positive count of milliseconds left. Anything else (the
    // key expired between the two reads cannot happen inside a script) is
    // treated as "no TTL known".
    let ttl = u64::try_from(pttl)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    Ok(Some((value, ttl)))
}

impl RedisKvStore {
    pub(super) async fn get_with_ttl_inner(&self, key: &KvKey) -> Result<Found> {
        let rkey = self.inner.codec.encode(key);
        let mut conn = self.conn();
        let mut pairs = match self.run(read(&mut conn, std::slice::from_ref(&rkey))).await {
            Ok(pairs) => pairs,
            Err(e) => {
                let e = self.explain(e, std::slice::from_ref(key), std::slice::from_ref(&rkey));
                return Err(e.await.with_operation(Operation::GetWithTtl).with_key(key));
            }
        };
        let (raw, pttl) = pairs.pop().unwrap_or((None, -2));
        found(raw, pttl).map_err(|e| e.with_operation(Operation::GetWithTtl).with_key(key))
    }

    pub(super) async fn get_many_with_ttl_inner(&self, keys: &[KvKey]) -> Result<Vec<Found>> {
        let raw_keys: Vec<Vec<u8>> = keys.iter().map(|k| self.inner.codec.encode(k)).collect();
        let run = async {
            let mut answers: Vec<(Option<Vec<u8>>, i64)> = vec![(None, -2); raw_keys.len()];
            match self.conn() {
                Conn::Single(conn) => {
                    for (n, chunk) in raw_keys.chunks(BATCH_CHUNK).enumerate() {
                        let pairs = read(&mut Conn::Single(conn.clone()), chunk).await?;
                        for (i, pair) in pairs.into_iter().enumerate() {
                            answers[n * BATCH_CHUNK + i] = pair;
                        }
                    }
                }
                Conn::Cluster(conn) => {
                    // One script per slot, all slots at once.
                    let mut by_slot: HashMap<Slot, (Vec<usize>, Vec<Vec<u8>>)> = HashMap::new();
                    for (i, key) in raw_keys.iter().enumerate() {
                        let entry = by_slot.entry(Slot::for_key(key)).or_default();
                        entry.0.push(i);
                        entry.1.push(key.clone());
                    }
                    let reads = by_slot.into_values().map(|(positions, keys)| {
                        let mut conn = Conn::Cluster(conn.clone());
                        async move { read(&mut conn, &keys).await.map(|p| (positions, p)) }
                    });
                    let results: Vec<_> = stream::iter(reads).buffer_unordered(64).collect().await;
                    for result in results {
                        let (positions, pairs) = result?;
                        for (i, pair) in positions.into_iter().zip(pairs) {
                            answers[i] = pair;
                        }
                    }
                }
            }
            Ok(answers)
        };
        let answers = match self.run(run).await {
            Ok(answers) => answers,
            Err(e) => {
                let e = self.explain(e, keys, &raw_keys).await;
                return Err(e.with_operation(Operation::GetManyWithTtl));
            }
        };
        keys.iter()
            .zip(answers)
            .map(|(key, (raw, pttl))| {
                found(raw, pttl)
                    .map_err(|e| e.with_operation(Operation::GetManyWithTtl).with_key(key))
            })
            .collect()
    }
}
