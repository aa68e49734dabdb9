//! `list`: a stream of pages, each one `SCAN` and one `MGET`, over the one
//! server or every cluster master in turn (module docs, "Listing").

use std::collections::HashSet;

use futures::stream::{self, BoxStream, StreamExt};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::connection::Conn;
use super::encoding::decode_value;
use super::error::map_redis_error;
use super::RedisKvStore;
use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::KvEntry;

/// Where a listing is.
struct ListState {
    prefix: Option<KvKey>,
    pattern: Vec<u8>,
    /// The Redis key equal to the prefix, still to be fetched.
    exact: Option<Vec<u8>>,
    /// Resolved on the first page.
    targets: Option<Vec<Option<Route>>>,
    target: usize,
    cursor: u64,
    /// The Redis keys yielded so far (SCAN may repeat a key).
    seen: HashSet<Vec<u8>>,
    done: bool,
}

impl RedisKvStore {
    /// The listing of `prefix` (or of everything), page by page.
    pub(super) fn list_stream(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        let codec = &self.inner.codec;
        let state = ListState {
            pattern: codec.descendants_pattern(prefix.as_ref()),
            exact: prefix.as_ref().map(|p| codec.encode(p)),
            prefix,
            targets: None,
            target: 0,
            cursor: 0,
            seen: HashSet::new(),
            done: false,
        };
        stream::unfold(state, move |state| self.list_page(state))
            .flat_map(stream::iter)
            .boxed()
    }

    /// Where a listing scans: the one server, or one route per cluster master.
    async fn scan_targets(&self) -> Result<Vec<Option<Route>>> {
        let Conn::Cluster(mut conn) = self.conn() else {
            return Ok(vec![None]);
        };
        let slots: redis::Value = self
            .run(conn.route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            ))
            .await?;
        master_routes(slots).map(|routes| routes.into_iter().map(Some).collect())
    }

    /// One `SCAN` step on `target`: the next cursor and the keys found.
    async fn scan(
        &self,
        target: Option<&Route>,
        cursor: u64,
        pattern: &[u8],
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(self.inner.scan_count);
        match (self.conn(), target) {
            (Conn::Cluster(mut conn), Some(route)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(*route));
                let reply = self.run(conn.route_command(cmd, routing)).await?;
                redis::from_redis_value(reply).map_err(|e| map_redis_error(e.into()))
            }
            (mut conn, _) => self.run(cmd.query_async(&mut conn)).await,
        }
    }

    /// The next page of a listing, or `None` when it is over.
    async fn list_page(&self, mut state: ListState) -> Option<(Vec<Result<KvEntry>>, ListState)> {
        if state.done {
            return None;
        }
        let result = self.list_step(&mut state).await;
        match result {
            Ok(page) => Some((page, state)),
            Err(err) => {
                state.done = true;
                Some((vec![Err(err.with_operation(Operation::List))], state))
            }
        }
    }

    async fn list_step(&self, state: &mut ListState) -> Result<Vec<Result<KvEntry>>> {
        if state.targets.is_none() {
            state.targets = Some(self.scan_targets().await?);
            return Ok(Vec::new());
        }
        if let Some(exact) = state.exact.take() {
            let mut conn = self.conn();
            let values = self
                .run(Self::mget(&mut conn, std::slice::from_ref(&exact)))
                .await?;
            state.seen.insert(exact.clone());
            let keys = vec![exact];
            let kinds = self.nil_types(&keys, &values).await?;
            return Ok(self.entries(keys, values, kinds, state.prefix.as_ref()));
        }
        let target = match state.targets.as_ref().and_then(|t| t.get(state.target)) {
            Some(target) => *target,
            None => {
                state.done = true;
                return Ok(Vec::new());
            }
        };
        let (cursor, keys) = self
            .scan(target.as_ref(), state.cursor, &state.pattern)
            .await?;
        if cursor == 0 {
            state.target += 1;
        }
        state.cursor = cursor;
        // SCAN may return a key more than once; yield each once.
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| state.seen.insert(k.clone()))
            .collect();
        let mut conn = self.conn();
        let values = self.run(Self::mget(&mut conn, &keys)).await?;
        let kinds = self.nil_types(&keys, &values).await?;
        Ok(self.entries(keys, values, kinds, state.prefix.as_ref()))
    }

    /// Decodes a page of raw keys and values; absent values (deleted or
    /// expired since the scan) are skipped, undecodable ones and keys of
    /// another type (`kinds`, from [`nil_types`](Self::nil_types)) become
    /// errors.
    fn entries(
        &self,
        keys: Vec<Vec<u8>>,
        values: Vec<Option<Vec<u8>>>,
        kinds: Vec<Option<String>>,
        prefix: Option<&KvKey>,
    ) -> Vec<Result<KvEntry>> {
        keys.into_iter()
            .zip(values)
            .zip(kinds)
            .filter_map(|((raw_key, raw_value), kind)| {
                if raw_value.is_none() && kind.is_none() {
                    return None;
                }
                let key = match self.inner.codec.decode(&raw_key) {
                    Ok(key) => key,
                    Err(why) => {
                        return Some(Err(Error::new(
                            ErrorKind::InvalidKey,
                            format!(
                                "Redis key {:?} is not a kvtower key: {why}",
                                String::from_utf8_lossy(&raw_key)
                            ),
                        )
                        .with_operation(Operation::List)));
                    }
                };
                // The pattern already guarantees it; a cheap second check.
                if prefix.is_some_and(|p| !key.starts_with(p)) {
                    return None;
                }
                let decoded = match (raw_value, kind) {
                    (Some(raw_value), _) => decode_value(&raw_value),
                    (None, kind) => Err(super::wrong_type::wrong_type(
                        kind.as_deref().unwrap_or("value of another type"),
                    )),
                };
                Some(match decoded {
                    Ok(value) => Ok(KvEntry { key, value }),
                    Err(e) => Err(e.with_operation(Operation::List).with_key(&key)),
                })
            })
            .collect()
    }
}

/// One route (the first slot of its first range) per master, from a
/// `CLUSTER SLOTS` reply.
fn master_routes(reply: redis::Value) -> Result<Vec<Route>> {
    let malformed = || Error::new(ErrorKind::Backend, "malformed CLUSTER SLOTS reply");
    let redis::Value::Array(ranges) = reply else {
        return Err(malformed());
    };
    let mut seen = HashSet::new();
    let mut routes = Vec::new();
    for range in ranges {
        let redis::Value::Array(items) = range else {
            return Err(malformed());
        };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Array(master))) =
            (items.first(), items.get(2))
        else {
            return Err(malformed());
        };
        let slot = u16::try_from(*start).map_err(|_| malformed())?;
        let address = format!("{:?}", master.iter().take(2).collect::<Vec<_>>());
        if seen.insert(address) {
            routes.push(Route::new(slot, SlotAddr::Master));
        }
    }
    Ok(routes)
}
