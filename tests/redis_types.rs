//! Issue 12 item 7 on the shared Redis (`KVTOWER_REDIS_URL`, default
//! `redis://127.0.0.1:6379`): a Redis key holding a list, a hash, a set or a
//! sorted set (written by another program) gives the same `InvalidValue`
//! error naming its type on every read path, in both layouts; `list` yields
//! one such error item per key and goes on; a cache above never remembers
//! "absent" for it; nothing is changed.

use futures::StreamExt;
use kvtower::layers::CacheLayer;
use kvtower::stores::Layout;
use kvtower::{kvkey, ErrorKind, KvKey, KvStore, MemoryKvStore, RedisKvStore, SetOptions};
use serde_json::json;
use tower::Layer;

mod support;

use support::{redis_url, unique_namespace};

/// The foreign keys, the command writing each, and the type Redis names.
const FOREIGN: [(&str, &[&str], &str); 4] = [
    ("a-list", &["RPUSH", "x"], "list"),
    ("a-hash", &["HSET", "f", "v"], "hash"),
    ("a-set", &["SADD", "m"], "set"),
    ("a-zset", &["ZADD", "1", "m"], "zset"),
];

fn invalid<T: std::fmt::Debug>(what: &str, key: &KvKey, kind: &str, result: kvtower::Result<T>) {
    let err = result.expect_err(what);
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{what}: {err}");
    assert!(
        err.to_string().contains(&format!("holds a {kind}")),
        "{what}: {err}"
    );
    assert_eq!(err.key(), Some(key), "{what}: {err}");
}

async fn foreign_types(layout: Layout) {
    let namespace = unique_namespace();
    let store = RedisKvStore::builder()
        .namespace(namespace.clone())
        .key_prefix(format!("{namespace}::"))
        .layout(layout)
        .connect(&redis_url())
        .await
        .unwrap();
    let mut raw = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let good = kvkey!["good"];
    store
        .set(&good, json!(1), SetOptions::default())
        .await
        .unwrap();
    let mut written = vec![store.redis_key(&good)];
    for (name, args, _) in FOREIGN {
        let rkey = store.redis_key(&kvkey![name]);
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&rkey).arg(&args[1..]);
        cmd.query_async::<()>(&mut raw).await.unwrap();
        written.push(rkey);
    }

    for (name, _, kind) in FOREIGN {
        let key = kvkey![name];
        let both = [good.clone(), key.clone()];
        invalid("get", &key, kind, store.get(&key).await);
        invalid("get_with_ttl", &key, kind, store.get_with_ttl(&key).await);
        invalid("get_many", &key, kind, store.get_many(&both).await);
        invalid(
            "get_many_with_ttl",
            &key,
            kind,
            store.get_many_with_ttl(&both).await,
        );
        invalid(
            "cas from absent",
            &key,
            kind,
            store
                .cas(&key, None, Some(json!(2)), SetOptions::default())
                .await,
        );
        invalid(
            "cas from a value",
            &key,
            kind,
            store
                .cas(&key, Some(&json!(1)), Some(json!(2)), SetOptions::default())
                .await,
        );
        // Behind a cache: the error every time, never a remembered "absent".
        let cached = CacheLayer::new(MemoryKvStore::new()).layer(store.clone());
        for _ in 0..2 {
            invalid("cached get", &key, kind, cached.get(&key).await);
            invalid("cached get_many", &key, kind, cached.get_many(&both).await);
        }
    }

    // `list` yields the good entry and one error per foreign key.
    let items: Vec<_> = store.list(None).collect().await;
    assert_eq!(items.len(), 1 + FOREIGN.len(), "{items:?}");
    let mut errors = 0;
    for item in items {
        match item {
            Ok(entry) => assert_eq!((entry.key, entry.value), (good.clone(), json!(1))),
            Err(err) => {
                let key = err.key().cloned().expect("the error names the key");
                let (_, _, kind) = FOREIGN
                    .iter()
                    .find(|(name, _, _)| kvkey![*name] == key)
                    .expect("a foreign key");
                invalid("list", &key, kind, Err::<(), _>(err));
                errors += 1;
            }
        }
    }
    assert_eq!(errors, FOREIGN.len());

    // Nothing was changed: every foreign key still holds its type.
    for (name, _, kind) in FOREIGN {
        let found: String = redis::cmd("TYPE")
            .arg(store.redis_key(&kvkey![name]))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(found, kind);
    }
    redis::cmd("DEL")
        .arg(&written)
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
}

#[tokio::test]
async fn keys_of_another_type_are_invalid_values_on_every_path() {
    if support::redis().is_none() {
        return;
    }
    foreign_types(Layout::Kvtower).await;
}

#[tokio::test]
async fn keys_of_another_type_are_invalid_values_in_the_fedify_layout() {
    if support::redis().is_none() {
        return;
    }
    foreign_types(Layout::Fedify).await;
}
