//! The fleet-wide lease: at most one loader per key at a time across every
//! process sharing the store.
//!
//! A lease is a key next to the entry, `["__kvtower_lease", <key parts>…]`,
//! holding a random token, written with [`cas`](crate::KvStore::cas) from
//! absent (so only one taker wins) with a TTL (so a holder that crashed
//! blocks the others for at most that long). It is released by
//! compare-and-delete of the same token, so a holder whose lease already
//! lapsed (and was taken by another) never deletes the other's lease.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::store::{KvStore, SetOptions};

/// The first part of every lease key.
pub(crate) const LEASE_PART: &str = "__kvtower_lease";

/// A lease this process holds.
#[derive(Debug)]
pub(crate) struct Lease {
    key: KvKey,
    token: Value,
}

/// The answer of [`Lease::try_acquire`].
#[derive(Debug)]
pub(crate) enum Acquire {
    /// The lease is ours until released or until its TTL lapses.
    Held(Lease),
    /// Another holder has it.
    Busy,
}

/// The lease key of `key`.
pub(crate) fn lease_key(key: &KvKey) -> KvKey {
    let mut parts = Vec::with_capacity(key.len() + 1);
    parts.push(LEASE_PART.to_owned());
    parts.extend(key.parts().iter().cloned());
    KvKey::__from_nonempty(parts)
}

impl Lease {
    /// Tries once to take the lease of `key` for `ttl`.
    pub(crate) async fn try_acquire<S: KvStore + ?Sized>(
        store: &S,
        key: &KvKey,
        ttl: Duration,
    ) -> Result<Acquire> {
        let lease = Lease {
            key: lease_key(key),
            token: Value::String(token()),
        };
        // cas from absent: the store decides atomically, so of any number of
        // concurrent takers across processes exactly one sees `true`.
        let taken = store
            .cas(
                &lease.key,
                None,
                Some(lease.token.clone()),
                SetOptions::ttl(ttl),
            )
            .await?;
        Ok(if taken {
            Acquire::Held(lease)
        } else {
            Acquire::Busy
        })
    }

    /// Releases the lease if it is still ours (compare-and-delete): a lease
    /// that lapsed and was taken by another holder is left to that holder.
    pub(crate) async fn release<S: KvStore + ?Sized>(self, store: &S) -> Result<bool> {
        store
            .cas(&self.key, Some(&self.token), None, SetOptions::default())
            .await
            .map_err(|e: Error| e.with_key(&self.key))
    }
}

/// A random 128-bit token in hex. Random enough to tell holders apart (it
/// only has to differ between holders, not resist guessing): two
/// per-process random hashers over a counter, the process id and the time.
fn token() -> String {
    static STATE: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (a, b) = STATE.get_or_init(|| (RandomState::new(), RandomState::new()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = (n, std::process::id(), nanos);
    format!("{:016x}{:016x}", a.hash_one(seed), b.hash_one(seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kvkey, MemoryKvStore};

    #[tokio::test]
    async fn one_taker_wins_and_release_is_compare_and_delete() {
        let store = MemoryKvStore::new();
        let key = kvkey!["user", "1"];
        assert_eq!(lease_key(&key), kvkey![LEASE_PART, "user", "1"]);
        let Acquire::Held(first) = Lease::try_acquire(&store, &key, Duration::from_secs(10))
            .await
            .unwrap()
        else {
            panic!("the first taker holds the lease");
        };
        assert!(matches!(
            Lease::try_acquire(&store, &key, Duration::from_secs(10))
                .await
                .unwrap(),
            Acquire::Busy
        ));
        // Someone else's lease (ours lapsed and was retaken) is not deleted.
        let stolen = Lease {
            key: lease_key(&key),
            token: Value::String(token()),
        };
        assert!(!stolen.release(&store).await.unwrap());
        assert!(first.release(&store).await.unwrap());
        assert!(matches!(
            Lease::try_acquire(&store, &key, Duration::from_secs(10))
                .await
                .unwrap(),
            Acquire::Held(_)
        ));
        assert_ne!(token(), token());
    }
}
