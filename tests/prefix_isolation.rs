//! Prefix injectivity (issue 11, defect 6): stacks with different prefixes
//! over one store never read, list or delete each other's keys, nested
//! prefixes (`["app"]` and `["app", "v2"]`) included, against memory and the
//! real Redis and SQLite (each store encodes keys its own way, so the
//! guarantee is checked on every encoding).

use std::sync::Arc;

use futures::TryStreamExt;
use kvtower::layers::PrefixLayer;
use kvtower::{kvkey, KvKey, KvStore, MemoryKvStore, RedisKvStore, SetOptions, SqliteKvStore};
use serde_json::{json, Value};
use tower::{Layer, ServiceBuilder};

mod support;

/// The keys `store` lists under `prefix`, sorted.
async fn listed(store: &dyn KvStore, prefix: Option<KvKey>) -> Vec<KvKey> {
    let mut keys: Vec<KvKey> = store
        .list(prefix)
        .map_ok(|e| e.key)
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Every operation of `left` on `under.join(k)` and of `right` on `k`: on a
/// store that simply concatenated prefixes these would be the same inner
/// keys. Each side must see only its own writes.
async fn isolated(left: &dyn KvStore, under: &KvKey, right: &dyn KvStore) {
    let l = |k: &str| under.child(k);
    let r = |k: &str| kvkey![k];
    let none = SetOptions::default();

    // get / set
    left.set(&l("k1"), json!("left"), none).await.unwrap();
    assert_eq!(right.get(&r("k1")).await.unwrap(), None);
    assert_eq!(right.get_with_ttl(&r("k1")).await.unwrap(), None);
    right.set(&r("k1"), json!("right"), none).await.unwrap();
    assert_eq!(left.get(&l("k1")).await.unwrap(), Some(json!("left")));
    assert_eq!(right.get(&r("k1")).await.unwrap(), Some(json!("right")));

    // set_many / get_many
    right
        .set_many(vec![(r("k2"), json!(2)), (r("k3"), json!(3))], none)
        .await
        .unwrap();
    assert_eq!(
        left.get_many(&[l("k2"), l("k3"), l("k1")]).await.unwrap(),
        vec![None, None, Some(json!("left"))]
    );
    assert_eq!(
        left.get_many_with_ttl(&[l("k2")]).await.unwrap(),
        vec![None]
    );
    left.set_many(vec![(l("k2"), json!("l2"))], none)
        .await
        .unwrap();
    assert_eq!(
        right.get_many(&[r("k2"), r("k3")]).await.unwrap(),
        vec![Some(json!(2)), Some(json!(3))]
    );

    // list: each side lists its own keys only, without any prefix.
    assert_eq!(
        listed(left, Some(under.clone())).await,
        vec![l("k1"), l("k2")]
    );
    assert_eq!(listed(right, None).await, vec![r("k1"), r("k2"), r("k3")]);
    assert_eq!(listed(right, Some(r("k1"))).await, vec![r("k1")]);

    // cas: decided on each side's own value.
    assert!(!right
        .cas(&r("k1"), Some(&json!("left")), None, none)
        .await
        .unwrap());
    assert!(right
        .cas(&r("k4"), None, Some(json!("r4")), none)
        .await
        .unwrap());
    assert!(left
        .cas(&l("k4"), None, Some(json!("l4")), none)
        .await
        .unwrap());
    assert_eq!(right.get(&r("k4")).await.unwrap(), Some(json!("r4")));

    // delete / delete_many
    right.delete(&r("k1")).await.unwrap();
    assert_eq!(left.get(&l("k1")).await.unwrap(), Some(json!("left")));
    left.delete_many(&[l("k2"), l("k4")]).await.unwrap();
    assert_eq!(
        right.get_many(&[r("k2"), r("k4")]).await.unwrap(),
        vec![Some(json!(2)), Some(json!("r4"))]
    );
    left.delete(&l("k1")).await.unwrap();
    assert_eq!(listed(left, Some(under.clone())).await, Vec::<KvKey>::new());
    right
        .delete_many(&[r("k2"), r("k3"), r("k4")])
        .await
        .unwrap();
    assert_eq!(listed(right, None).await, Vec::<KvKey>::new());
}

/// The three pairs of the issue, plus nested layers, over one shared store.
async fn prefixes_are_injective<S: KvStore + 'static>(shared: S) {
    let shared: Arc<dyn KvStore> = Arc::new(shared);
    let prefixed =
        |parts: &[&str]| PrefixLayer::new(KvKey::try_from(parts).unwrap()).layer(shared.clone());

    // ["app"] with keys ["v2", …] against ["app", "v2"].
    isolated(
        &prefixed(&["app"]),
        &kvkey!["v2"],
        &prefixed(&["app", "v2"]),
    )
    .await;
    // No prefix with keys ["x", …] against ["x"].
    isolated(&shared, &kvkey!["x"], &prefixed(&["x"])).await;
    // ["a"] with keys ["b", …] against ["a", "b"].
    isolated(&prefixed(&["a"]), &kvkey!["b"], &prefixed(&["a", "b"])).await;
    // Parts holding the encoding's own characters.
    isolated(&prefixed(&["a/b"]), &kvkey!["c"], &prefixed(&["a", "b/c"])).await;
    isolated(&prefixed(&["%2F"]), &kvkey!["c"], &prefixed(&["/"])).await;

    // A prefix inside a prefix composes: ["b"] outside ["a"] is a namespace of
    // its own, apart from ["a", "b"], ["b", "a"] and ["a"] with keys ["b", …].
    let nested = ServiceBuilder::new()
        .layer(PrefixLayer::new(kvkey!["b"]))
        .layer(PrefixLayer::new(kvkey!["a"]))
        .service(shared.clone());
    isolated(&prefixed(&["a"]), &kvkey!["b"], &nested).await;
    isolated(&prefixed(&["a", "b"]), &kvkey!["z"], &nested).await;
    isolated(&prefixed(&["b", "a"]), &kvkey!["z"], &nested).await;
    nested
        .set(&kvkey!["k"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(nested.get(&kvkey!["k"]).await.unwrap(), Some(json!(1)));
    assert_eq!(listed(&nested, None).await, vec![kvkey!["k"]]);
    assert_eq!(
        shared.get(&kvkey!["~a", "~b", "k"]).await.unwrap(),
        Some(json!(1))
    );
    nested.delete(&kvkey!["k"]).await.unwrap();

    // Nothing is left behind: every write above was deleted through its layer.
    let rest: Vec<(KvKey, Value)> = shared
        .list(None)
        .map_ok(|e| (e.key, e.value))
        .try_collect()
        .await
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn prefixes_are_injective_in_memory() {
    prefixes_are_injective(MemoryKvStore::new()).await;
}

#[tokio::test]
async fn prefixes_are_injective_in_sqlite() {
    prefixes_are_injective(SqliteKvStore::memory().await.unwrap()).await;
}

#[tokio::test]
async fn prefixes_are_injective_in_redis() {
    if support::redis().is_none() {
        return;
    }
    let namespace = support::unique_namespace();
    let store = RedisKvStore::builder()
        .namespace(&namespace)
        .connect(&support::redis_url())
        .await
        .expect("connect to the shared Redis");
    prefixes_are_injective(store).await;
    support::delete_namespace(&support::redis_url(), &namespace);
}

/// The whole conformance suite through two nested prefix layers.
mod nested_conformance {
    use kvtower::layers::PrefixLayer;
    use kvtower::{kvkey, MemoryKvStore};
    use tower::ServiceBuilder;
    kvtower::conformance_suite!(|| async {
        ServiceBuilder::new()
            .layer(PrefixLayer::new(kvkey!["outer", ""]))
            .layer(PrefixLayer::new(kvkey!["inner/x"]))
            .service(MemoryKvStore::new())
    });
}
