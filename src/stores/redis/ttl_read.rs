//! `get_with_ttl` and `get_many_with_ttl`: each value with its `PTTL`, read
//! in one atomic step by one Lua script (so a write between the two reads
//! cannot pair a value with another value's lifetime), one round trip per
//! batch (per slot in a cluster: a script's keys must share one).
//!
//! A found key comes back as one bulk string, its `PTTL` in decimal, a space,
//! then the stored text: a single-key read then parses one bulk reply, as a
//! plain `GET` does, instead of an array of a value and an integer (the array
//! reply cost about 2,500 client instructions more per read, measured with
//! callgrind in `bench/hitpath`).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use redis::cluster_routing::Slot;
use redis::{Cmd, RedisResult, Script};

use super::connection::Conn;
use super::encoding::decode_value;
use super::{RedisKvStore, BATCH_CHUNK};
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::Value;

/// KEYS[1]'s `PTTL` (-1: no TTL), a space and its value; nil when absent.
/// `%d`, not `..` on the number: Lua prints 1e15 ms as `1e+15`.
static GET_ONE_WITH_TTL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
return string.format('%d', redis.call('PTTL', KEYS[1])) .. ' ' .. v
",
    )
});

/// [`GET_ONE_WITH_TTL`]'s answer for every key of KEYS, in order.
static GET_MANY_WITH_TTL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local r = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v then
    r[i] = string.format('%d', redis.call('PTTL', k)) .. ' ' .. v
  else
    r[i] = false
  end
end
return r
",
    )
});

/// A value and its lifetime, as the store answers them.
type Found = Option<(Value, Option<Duration>)>;

/// `EVALSHA` of `script` over `raw_keys`; loads the script and tries once
/// more when the server does not know it (a restart, a failover, a
/// `SCRIPT FLUSH`). Built by hand rather than by `ScriptInvocation`, which
/// copies every key into a vector of its own first.
async fn eval<T: redis::FromRedisValue>(
    conn: &mut Conn,
    script: &Script,
    raw_keys: &[Vec<u8>],
) -> RedisResult<T> {
    let mut cmd = Cmd::with_capacity(
        3 + raw_keys.len(),
        64 + raw_keys.iter().map(Vec::len).sum::<usize>(),
    );
    cmd.arg("EVALSHA")
        .arg(script.get_hash())
        .arg(raw_keys.len())
        .arg(raw_keys);
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await
        }
        answer => answer,
    }
}

/// The script's answer for one key as a value and its remaining lifetime.
fn found(raw: Option<Vec<u8>>) -> Result<Found> {
    let Some(raw) = raw else { return Ok(None) };
    let unexpected = || {
        Error::new(
            ErrorKind::Backend,
            "unexpected reply to the TTL read script",
        )
    };
    let space = raw.iter().position(|b| *b == b' ').ok_or_else(unexpected)?;
    let pttl: i64 = std::str::from_utf8(&raw[..space])
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(unexpected)?;
    let value = decode_value(&raw[space + 1..])?;
    // -1: no TTL. A positive count of milliseconds left. Anything else (the
    // key expired between the two reads cannot happen inside a script) is
    // treated as "no TTL known".
    let ttl = u64::try_from(pttl)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    Ok(Some((value, ttl)))
}

/// Runs [`GET_MANY_WITH_TTL`] over `raw_keys` (which must share a slot in a
/// cluster).
async fn read_many(conn: &mut Conn, raw_keys: &[Vec<u8>]) -> RedisResult<Vec<Option<Vec<u8>>>> {
    eval(conn, &GET_MANY_WITH_TTL, raw_keys).await
}

impl RedisKvStore {
    pub(super) async fn get_with_ttl_inner(&self, key: &KvKey) -> Result<Found> {
        let rkey = self.inner.codec.encode(key);
        let mut conn = self.conn();
        let keys = std::slice::from_ref(&rkey);
        let raw = match self.run(eval(&mut conn, &GET_ONE_WITH_TTL, keys)).await {
            Ok(raw) => raw,
            Err(e) => {
                let e = self.explain(e, std::slice::from_ref(key), keys);
                return Err(e.await.with_operation(Operation::GetWithTtl).with_key(key));
            }
        };
        found(raw).map_err(|e| e.with_operation(Operation::GetWithTtl).with_key(key))
    }

    pub(super) async fn get_many_with_ttl_inner(&self, keys: &[KvKey]) -> Result<Vec<Found>> {
        let raw_keys: Vec<Vec<u8>> = keys.iter().map(|k| self.inner.codec.encode(k)).collect();
        let run = async {
            let mut answers: Vec<Option<Vec<u8>>> = vec![None; raw_keys.len()];
            match self.conn() {
                Conn::Single(conn) => {
                    for (n, chunk) in raw_keys.chunks(BATCH_CHUNK).enumerate() {
                        let pairs = read_many(&mut Conn::Single(conn.clone()), chunk).await?;
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
                        async move { read_many(&mut conn, &keys).await.map(|p| (positions, p)) }
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
            .map(|(key, raw)| {
                found(raw).map_err(|e| e.with_operation(Operation::GetManyWithTtl).with_key(key))
            })
            .collect()
    }
}
