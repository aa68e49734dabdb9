//! The conformance cases, one async function each.
//!
//! Each takes a fresh, empty store (from the suite's factory) behind an `Arc`
//! and panics, like a test, when the store breaks the contract. The
//! [`conformance_suite!`](crate::conformance_suite) macro turns each into a
//! `#[test]`; [`run_all`](super::run_all) runs them in one go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::json;

use crate::error::ErrorKind;
use crate::key::KvKey;
use crate::kvkey;
use crate::store::{KvEntry, KvStore, SetOptions, Value};

/// A TTL short enough to wait out in a test, long enough to see the value
/// before it expires on a slow machine.
const SHORT_TTL: Duration = Duration::from_millis(250);
/// How long to wait for a [`SHORT_TTL`] entry to be gone.
const PAST_SHORT_TTL: Duration = Duration::from_millis(700);
const LONG_TTL: Duration = Duration::from_secs(600);

fn none() -> SetOptions {
    SetOptions::default()
}

/// Collects a listing into a map, failing on any error or duplicate key.
pub(crate) async fn listed<S: KvStore + ?Sized>(
    store: &S,
    prefix: Option<KvKey>,
) -> BTreeMap<KvKey, Value> {
    let entries: Vec<KvEntry> = store
        .list(prefix.clone())
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("list({prefix:?}) failed: {e}"));
    let mut map = BTreeMap::new();
    for entry in entries {
        if let Some(p) = &prefix {
            assert!(
                entry.key.starts_with(p),
                "list({p}) yielded {} which is not under the prefix",
                entry.key
            );
        }
        let key = entry.key.clone();
        assert!(
            map.insert(entry.key, entry.value).is_none(),
            "list({prefix:?}) yielded {key} twice"
        );
    }
    map
}

async fn get<S: KvStore + ?Sized>(store: &S, key: &KvKey) -> Option<Value> {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get({key}) failed: {e}"))
}

async fn set<S: KvStore + ?Sized>(store: &S, key: &KvKey, value: Value, options: SetOptions) {
    store
        .set(key, value, options)
        .await
        .unwrap_or_else(|e| panic!("set({key}) failed: {e}"));
}

async fn cas<S: KvStore + ?Sized>(
    store: &S,
    key: &KvKey,
    expected: Option<&Value>,
    new: Option<Value>,
    options: SetOptions,
) -> bool {
    store
        .cas(key, expected, new, options)
        .await
        .unwrap_or_else(|e| panic!("cas({key}) failed: {e}"))
}

/// Every JSON type round-trips through set/get; `Null` is a value, not absence.
///
/// A store without [`nul_in_text`](crate::Capabilities::nul_in_text) must
/// instead refuse the values holding U+0000 with an `InvalidValue` error and
/// leave their keys absent.
pub async fn round_trips_every_json_type<S: KvStore + ?Sized>(store: Arc<S>) {
    let (values, refused) = split_nul_values(&*store, json_zoo());
    for (i, value) in refused.iter().enumerate() {
        let key = kvkey!["refused", i.to_string()];
        let err = store
            .set(&key, value.clone(), none())
            .await
            .expect_err("a value holding U+0000 is refused");
        assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err}");
        assert_eq!(get(&*store, &key).await, None, "refused {key} is absent");
    }
    for (i, value) in values.iter().enumerate() {
        let key = kvkey!["types", i.to_string()];
        assert_eq!(get(&*store, &key).await, None, "fresh key {key} is absent");
        set(&*store, &key, value.clone(), none()).await;
        assert_eq!(
            get(&*store, &key).await.as_ref(),
            Some(value),
            "{key} round-trips"
        );
    }
    let listed = listed(&*store, Some(kvkey!["types"])).await;
    assert_eq!(listed.len(), values.len());
    for (i, value) in values.iter().enumerate() {
        assert_eq!(
            listed.get(&kvkey!["types", i.to_string()]),
            Some(value),
            "listed value {i}"
        );
    }
}

/// Whether a JSON value holds U+0000 in a string or an object key.
pub fn value_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(value_has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains('\0') || value_has_nul(v)),
        _ => false,
    }
}

/// Whether a key has U+0000 in a part.
pub fn key_has_nul(key: &KvKey) -> bool {
    key.parts().iter().any(|p| p.contains('\0'))
}

/// `(kept, refused)`: all values are kept when the store can hold U+0000.
fn split_nul_values<S: KvStore + ?Sized>(
    store: &S,
    values: Vec<Value>,
) -> (Vec<Value>, Vec<Value>) {
    if store.capabilities().nul_in_text {
        (values, Vec::new())
    } else {
        values.into_iter().partition(|v| !value_has_nul(v))
    }
}

/// Values of every JSON type, empty and nested ones included.
pub fn json_zoo() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(-0.25),
        json!(""),
        json!("text with \"quotes\", \\ and \u{0} and ünïcödé 日本"),
        json!([]),
        json!([null, 1, "two", [3], {"four": 4}]),
        json!({}),
        json!({"a": {"b": {"c": [1, 2, {"d": null}]}}, "": "empty key", "x y": false}),
        json!("x".repeat(10_000)),
    ]
}

/// Absent keys read as `None`; deleting them succeeds; delete removes.
pub async fn absent_keys_and_delete<S: KvStore + ?Sized>(store: Arc<S>) {
    let key = kvkey!["absent", "k"];
    assert_eq!(get(&*store, &key).await, None);
    store.delete(&key).await.expect("delete of an absent key");
    set(&*store, &key, json!(1), none()).await;
    store.delete(&key).await.expect("delete");
    assert_eq!(get(&*store, &key).await, None, "deleted key is absent");
    assert!(listed(&*store, None).await.is_empty(), "nothing is listed");
    store.delete(&key).await.expect("second delete");
}

/// `set` overwrites, whatever the types of the old and new values.
pub async fn set_overwrites<S: KvStore + ?Sized>(store: Arc<S>) {
    let key = kvkey!["upsert"];
    set(&*store, &key, json!({"v": 1}), none()).await;
    set(&*store, &key, json!([1, 2]), none()).await;
    assert_eq!(get(&*store, &key).await, Some(json!([1, 2])));
    set(&*store, &key, Value::Null, none()).await;
    assert_eq!(get(&*store, &key).await, Some(Value::Null));
    assert_eq!(listed(&*store, None).await.len(), 1);
}

/// An expired entry is absent for `get`, `list` and `cas`; a live one is not.
pub async fn ttl_expiry<S: KvStore + ?Sized>(store: Arc<S>) {
    let short = kvkey!["ttl", "short"];
    let long = kvkey!["ttl", "long"];
    let forever = kvkey!["ttl", "forever"];
    let short_cas = kvkey!["ttl", "short-cas"];
    set(&*store, &short, json!("s"), SetOptions::ttl(SHORT_TTL)).await;
    set(&*store, &short_cas, json!("c"), SetOptions::ttl(SHORT_TTL)).await;
    set(&*store, &long, json!("l"), SetOptions::ttl(LONG_TTL)).await;
    set(&*store, &forever, json!("f"), none()).await;
    assert_eq!(get(&*store, &long).await, Some(json!("l")));
    tokio::time::sleep(PAST_SHORT_TTL).await;

    let exact = store.capabilities().exact_expiry;
    let seen = get(&*store, &short).await;
    if exact {
        assert_eq!(seen, None, "an expired entry is absent");
    } else {
        assert!(seen.is_none() || seen == Some(json!("s")), "{seen:?}");
    }
    assert_eq!(get(&*store, &long).await, Some(json!("l")));
    assert_eq!(get(&*store, &forever).await, Some(json!("f")));
    let all = listed(&*store, Some(kvkey!["ttl"])).await;
    assert_eq!(all.get(&long), Some(&json!("l")));
    assert_eq!(all.get(&forever), Some(&json!("f")));
    if exact {
        assert_eq!(all.len(), 2, "expired entries are not listed: {all:?}");
    }
    if exact && store.capabilities().atomic_cas {
        assert!(
            !cas(
                &*store,
                &short_cas,
                Some(&json!("c")),
                Some(json!(1)),
                none()
            )
            .await,
            "cas does not match an expired value"
        );
        assert!(
            cas(&*store, &short_cas, None, Some(json!(2)), none()).await,
            "cas treats an expired entry as absent"
        );
        assert_eq!(get(&*store, &short_cas).await, Some(json!(2)));
    }
}

/// A TTL of zero leaves the key absent, for set, set_many and cas, and removes
/// an existing value.
pub async fn ttl_zero_means_expired<S: KvStore + ?Sized>(store: Arc<S>) {
    let zero = SetOptions::ttl(Duration::ZERO);
    let key = kvkey!["zero", "a"];
    set(&*store, &key, json!(1), zero).await;
    assert_eq!(get(&*store, &key).await, None, "set with TTL zero");
    set(&*store, &key, json!(1), none()).await;
    set(&*store, &key, json!(2), zero).await;
    assert_eq!(get(&*store, &key).await, None, "TTL zero replaces a value");
    store
        .set_many(vec![(kvkey!["zero", "b"], json!(3))], zero)
        .await
        .expect("set_many");
    assert_eq!(get(&*store, &kvkey!["zero", "b"]).await, None, "set_many");
    if store.capabilities().atomic_cas {
        assert!(cas(&*store, &key, None, Some(json!(4)), zero).await);
        assert_eq!(get(&*store, &key).await, None, "cas with TTL zero");
    }
    assert!(listed(&*store, None).await.is_empty());
}

/// A write without a TTL clears an earlier TTL; a write with one sets it.
pub async fn ttl_is_replaced_by_later_writes<S: KvStore + ?Sized>(store: Arc<S>) {
    let cleared = kvkey!["ttl2", "cleared"];
    let added = kvkey!["ttl2", "added"];
    set(&*store, &cleared, json!(1), SetOptions::ttl(SHORT_TTL)).await;
    set(&*store, &cleared, json!(2), none()).await;
    set(&*store, &added, json!(1), none()).await;
    set(&*store, &added, json!(2), SetOptions::ttl(SHORT_TTL)).await;
    let with_cas = kvkey!["ttl2", "cas"];
    let atomic = store.capabilities().atomic_cas;
    if atomic {
        assert!(
            cas(
                &*store,
                &with_cas,
                None,
                Some(json!(1)),
                SetOptions::ttl(SHORT_TTL)
            )
            .await
        );
    }
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert_eq!(get(&*store, &cleared).await, Some(json!(2)));
    if store.capabilities().exact_expiry {
        assert_eq!(get(&*store, &added).await, None);
        if atomic {
            assert_eq!(get(&*store, &with_cas).await, None, "cas sets the TTL");
        }
    }
}

/// `cas` in every combination of present/absent current value, expected and
/// new value, with structural equality.
pub async fn cas_semantics<S: KvStore + ?Sized>(store: Arc<S>) {
    let key = kvkey!["cas", "k"];
    if !store.capabilities().atomic_cas {
        let err = store
            .cas(&key, None, Some(json!(1)), none())
            .await
            .expect_err("a store without atomic cas says so");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        return;
    }
    // absent, expected absent, new present
    assert!(
        cas(
            &*store,
            &key,
            None,
            Some(json!({"a": 1, "b": [1, 2]})),
            none()
        )
        .await
    );
    assert_eq!(get(&*store, &key).await, Some(json!({"a": 1, "b": [1, 2]})));
    // present, expected absent
    assert!(!cas(&*store, &key, None, Some(json!(0)), none()).await);
    // present, expected a different value (and a different type)
    assert!(
        !cas(
            &*store,
            &key,
            Some(&json!({"a": 1})),
            Some(json!(0)),
            none()
        )
        .await
    );
    assert!(!cas(&*store, &key, Some(&Value::Null), Some(json!(0)), none()).await);
    assert!(
        !cas(
            &*store,
            &key,
            Some(&json!("{\"a\":1,\"b\":[1,2]}")),
            Some(json!(0)),
            none()
        )
        .await
    );
    assert_eq!(get(&*store, &key).await, Some(json!({"a": 1, "b": [1, 2]})));
    // present, expected equal with another key order: structural equality
    let reordered: Value = serde_json::from_str(r#"{"b":[1,2],"a":1}"#).expect("json");
    assert!(
        cas(
            &*store,
            &key,
            Some(&reordered),
            Some(json!("second")),
            none()
        )
        .await
    );
    assert_eq!(get(&*store, &key).await, Some(json!("second")));
    // array order does matter
    set(&*store, &key, json!([1, 2]), none()).await;
    assert!(!cas(&*store, &key, Some(&json!([2, 1])), Some(json!(0)), none()).await);
    // present, expected equal, new absent: delete
    assert!(cas(&*store, &key, Some(&json!([1, 2])), None, none()).await);
    assert_eq!(get(&*store, &key).await, None);
    // absent, expected present
    assert!(!cas(&*store, &key, Some(&json!([1, 2])), Some(json!(1)), none()).await);
    assert_eq!(get(&*store, &key).await, None);
    // absent, expected absent, new absent: succeeds and leaves it absent
    assert!(cas(&*store, &key, None, None, none()).await);
    assert_eq!(get(&*store, &key).await, None);
    // Null is a value distinct from absence
    set(&*store, &key, Value::Null, none()).await;
    assert!(!cas(&*store, &key, None, Some(json!(1)), none()).await);
    assert!(cas(&*store, &key, Some(&Value::Null), Some(json!(1)), none()).await);
    assert_eq!(get(&*store, &key).await, Some(json!(1)));
    // numbers: 1 and "1" differ
    assert!(!cas(&*store, &key, Some(&json!("1")), Some(json!(2)), none()).await);
    assert!(cas(&*store, &key, Some(&json!(1)), Some(json!(2)), none()).await);
    assert_eq!(get(&*store, &key).await, Some(json!(2)));
    assert_eq!(listed(&*store, None).await.len(), 1);
}

/// `list` by prefix: the exact key is included, prefixes are part-wise, no
/// prefix lists everything, an empty store lists nothing.
pub async fn list_by_prefix<S: KvStore + ?Sized>(store: Arc<S>) {
    assert!(
        listed(&*store, None).await.is_empty(),
        "a new store is empty"
    );
    assert!(listed(&*store, Some(kvkey!["a"])).await.is_empty());
    let keys = [
        kvkey!["a"],
        kvkey!["a", "b"],
        kvkey!["a", "b", "c"],
        kvkey!["a", ""],
        kvkey!["ab"],
        kvkey!["ab", "c"],
        kvkey!["b"],
    ];
    for (i, key) in keys.iter().enumerate() {
        set(&*store, key, json!(i), none()).await;
    }
    let under_a = listed(&*store, Some(kvkey!["a"])).await;
    let expected: BTreeMap<KvKey, Value> = keys[..4]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), json!(i)))
        .collect();
    assert_eq!(under_a, expected, "[\"ab\"] is not under [\"a\"]");
    let under_ab = listed(&*store, Some(kvkey!["a", "b"])).await;
    assert_eq!(under_ab.len(), 2, "{under_ab:?}");
    let exact = listed(&*store, Some(kvkey!["a", "b", "c"])).await;
    assert_eq!(exact.keys().collect::<Vec<_>>(), [&kvkey!["a", "b", "c"]]);
    assert!(listed(&*store, Some(kvkey!["a", "b", "c", "d"]))
        .await
        .is_empty());
    assert!(listed(&*store, Some(kvkey!["zz"])).await.is_empty());
    assert_eq!(listed(&*store, None).await.len(), keys.len());
}

/// Keys whose parts hold separators, escapes, glob characters, NUL and
/// non-ASCII text never collide and round-trip exactly through get and list.
///
/// A store without [`nul_in_text`](crate::Capabilities::nul_in_text) must
/// refuse the keys holding U+0000 with an `InvalidKey` error instead.
pub async fn tricky_keys_never_collide<S: KvStore + ?Sized>(store: Arc<S>) {
    let mut keys = tricky_keys();
    if !store.capabilities().nul_in_text {
        let (kept, refused): (Vec<KvKey>, Vec<KvKey>) =
            keys.into_iter().partition(|k| !key_has_nul(k));
        for key in &refused {
            let err = store
                .set(key, json!(1), none())
                .await
                .expect_err("a key holding U+0000 is refused");
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "set {key}: {err}");
            let err = store.get(key).await.expect_err("get of a NUL key");
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "get {key}: {err}");
        }
        keys = kept;
    }
    for (i, key) in keys.iter().enumerate() {
        set(&*store, key, json!(i), none()).await;
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(get(&*store, key).await, Some(json!(i)), "get {key}");
    }
    let all = listed(&*store, None).await;
    let expected: BTreeMap<KvKey, Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), json!(i)))
        .collect();
    assert_eq!(all, expected, "every key listed exactly once, unchanged");
    for prefix in &keys {
        let under = listed(&*store, Some(prefix.clone())).await;
        let want: BTreeMap<KvKey, Value> = expected
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(under, want, "list({prefix})");
    }
    for (i, key) in keys.iter().enumerate().step_by(3) {
        store.delete(key).await.expect("delete");
        assert_eq!(get(&*store, key).await, None, "deleted {key} ({i})");
    }
    let after = listed(&*store, None).await;
    assert_eq!(after.len(), keys.len() - keys.iter().step_by(3).count());
}

/// Keys that naive encodings (joining with a separator, globbing, C strings)
/// confuse with one another.
pub fn tricky_keys() -> Vec<KvKey> {
    let raw: &[&[&str]] = &[
        &["a"],
        &["a", ""],
        &["a", "", ""],
        &["a", "b"],
        &["a", "b", "c"],
        &["a:b"],
        &["a:b", "c"],
        &["a", "b:c"],
        &["a/b"],
        &["a\\", "b"],
        &["a\\:b"],
        &["a\\"],
        &["a*"],
        &["a?"],
        &["a[b]"],
        &["a[", "b]"],
        &["a\\*"],
        &["a%"],
        &["a_"],
        &["ab"],
        &["*"],
        &["?"],
        &["["],
        &["]"],
        &["^"],
        &[""],
        &["", ""],
        &["", "a"],
        &["\0"],
        &["a\0b"],
        &["a", "\0"],
        &["\n"],
        &["'"],
        &["\""],
        &["ü", "日本"],
        &["\u{ff}"],
        &["\u{10ffff}"],
        &["a\u{1}"],
        &["-"],
        &["{a}"],
    ];
    raw.iter()
        .map(|parts| KvKey::new(parts.iter().copied()).expect("non-empty"))
        .collect()
}

/// `get_many`, `set_many` and `delete_many` behave like their loops, order and
/// duplicates included.
pub async fn batch_operations<S: KvStore + ?Sized>(store: Arc<S>) {
    assert_eq!(store.get_many(&[]).await.expect("empty get_many"), vec![]);
    store
        .set_many(vec![], none())
        .await
        .expect("empty set_many");
    store.delete_many(&[]).await.expect("empty delete_many");

    let keys: Vec<KvKey> = (0..50).map(|i| kvkey!["batch", i.to_string()]).collect();
    let entries: Vec<(KvKey, Value)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), json!({ "i": i })))
        .collect();
    store.set_many(entries, none()).await.expect("set_many");
    let probe = vec![
        keys[3].clone(),
        kvkey!["batch", "missing"],
        keys[0].clone(),
        keys[3].clone(),
        keys[49].clone(),
    ];
    assert_eq!(
        store.get_many(&probe).await.expect("get_many"),
        vec![
            Some(json!({"i": 3})),
            None,
            Some(json!({"i": 0})),
            Some(json!({"i": 3})),
            Some(json!({"i": 49})),
        ]
    );
    // The last of duplicate keys wins, like a loop of `set`.
    store
        .set_many(
            vec![
                (keys[1].clone(), json!("first")),
                (keys[1].clone(), json!("last")),
            ],
            none(),
        )
        .await
        .expect("set_many with a duplicate key");
    assert_eq!(get(&*store, &keys[1]).await, Some(json!("last")));

    store
        .delete_many(&[keys[0].clone(), keys[0].clone(), kvkey!["batch", "missing"]])
        .await
        .expect("delete_many");
    assert_eq!(get(&*store, &keys[0]).await, None);
    store.delete_many(&keys[10..]).await.expect("delete_many");
    assert_eq!(listed(&*store, Some(kvkey!["batch"])).await.len(), 9);

    // set_many with a TTL applies it to every entry.
    store
        .set_many(
            vec![
                (kvkey!["batch-ttl", "a"], json!(1)),
                (kvkey!["batch-ttl", "b"], json!(2)),
            ],
            SetOptions::ttl(SHORT_TTL),
        )
        .await
        .expect("set_many with TTL");
    assert_eq!(
        store
            .get_many(&[kvkey!["batch-ttl", "a"], kvkey!["batch-ttl", "b"]])
            .await
            .expect("get_many"),
        vec![Some(json!(1)), Some(json!(2))]
    );
    tokio::time::sleep(PAST_SHORT_TTL).await;
    if store.capabilities().exact_expiry {
        assert_eq!(
            store
                .get_many(&[kvkey!["batch-ttl", "a"], kvkey!["batch-ttl", "b"]])
                .await
                .expect("get_many"),
            vec![None, None]
        );
    }
}

/// A listing larger than any one backend page is complete and has no
/// duplicates.
pub async fn large_listing<S: KvStore + ?Sized>(store: Arc<S>) {
    let inside: Vec<(KvKey, Value)> = (0..1_200)
        .map(|i| (kvkey!["big", format!("{i:05}")], json!(i)))
        .collect();
    let outside: Vec<(KvKey, Value)> = (0..100)
        .map(|i| (kvkey!["bigger", i.to_string()], json!(i)))
        .collect();
    store
        .set_many(inside.clone(), none())
        .await
        .expect("set_many");
    store.set_many(outside, none()).await.expect("set_many");
    let listed = listed(&*store, Some(kvkey!["big"])).await;
    assert_eq!(listed, inside.into_iter().collect::<BTreeMap<_, _>>());
    assert_eq!(self::listed(&*store, None).await.len(), 1_300);
}

/// 100 tasks doing cas-increments on one key end at exactly 100.
pub async fn concurrent_cas_increments<S: KvStore + ?Sized + 'static>(store: Arc<S>) {
    if !store.capabilities().atomic_cas {
        return; // cas_semantics checks the Unsupported error
    }
    let key = kvkey!["counter"];
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move {
                let mut attempts = 0u32;
                loop {
                    attempts += 1;
                    assert!(attempts < 10_000, "cas never succeeded");
                    let current = store.get(&key).await.expect("get");
                    let next = current.as_ref().and_then(Value::as_u64).unwrap_or(0) + 1;
                    if store
                        .cas(
                            &key,
                            current.as_ref(),
                            Some(json!(next)),
                            SetOptions::default(),
                        )
                        .await
                        .expect("cas")
                    {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(store.get(&key).await.expect("get"), Some(json!(100)));
}

/// `n` reproducible random floats spread over every exponent, none of them
/// integral (a store may read an integral float as an integer, as Deno KV
/// does for numbers JavaScript cannot tell apart).
pub fn random_floats(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut floats = Vec::with_capacity(n);
    while floats.len() < n {
        let bits = next();
        // Half over every exponent, half uniform in [0, 1) (the common case).
        let f = if floats.len() % 2 == 0 {
            f64::from_bits(bits)
        } else {
            (bits >> 11) as f64 / (1u64 << 53) as f64
        };
        if f.is_finite() && f.fract() != 0.0 {
            floats.push(f);
        }
    }
    floats
}

/// Floats come back bit for bit through every read path (`get`, `get_many`,
/// `list`), and a `cas` expecting the value just written swaps.
pub async fn floats_round_trip_exactly<S: KvStore + ?Sized>(store: Arc<S>) {
    let floats = random_floats(1_000, 0x5EED_F10A7);
    let array = Value::from(floats.clone());
    let array_key = kvkey!["floats", "array"];
    set(&*store, &array_key, array.clone(), none()).await;
    let scalars: Vec<(KvKey, Value)> = floats[..40]
        .iter()
        .enumerate()
        .map(|(i, &f)| (kvkey!["floats", "one", i.to_string()], json!(f)))
        .collect();
    for (key, value) in &scalars[..20] {
        set(&*store, key, value.clone(), none()).await;
    }
    store
        .set_many(scalars[20..].to_vec(), none())
        .await
        .expect("set_many");

    let exact = |what: &str, got: Option<&Value>, want: &Value| {
        assert_eq!(got, Some(want), "{what}: a float changed");
    };
    exact("get", get(&*store, &array_key).await.as_ref(), &array);
    let keys: Vec<KvKey> = scalars.iter().map(|(k, _)| k.clone()).collect();
    let many = store.get_many(&keys).await.expect("get_many");
    for ((key, want), got) in scalars.iter().zip(&many) {
        exact(&format!("get_many {key}"), got.as_ref(), want);
    }
    let listed = listed(&*store, Some(kvkey!["floats"])).await;
    exact("list", listed.get(&array_key), &array);
    for (key, want) in &scalars {
        exact(&format!("list {key}"), listed.get(key), want);
    }
    if !store.capabilities().atomic_cas {
        return;
    }
    assert!(
        cas(&*store, &array_key, Some(&array), Some(json!(1)), none()).await,
        "cas expecting the floats just written must swap"
    );
    for (key, value) in &scalars {
        let f = value.as_f64().expect("a float");
        assert!(
            cas(&*store, key, Some(value), None, none()).await,
            "cas expecting {f:?} (bits {:#x}) just written must swap",
            f.to_bits()
        );
    }
}

/// `depth` nested arrays and objects (alternating) around a string.
pub fn nested_value(depth: usize) -> Value {
    // Not `json!([value])`: the macro copies `value` through `to_value`,
    // which recurses once per level.
    let mut value = json!("bottom");
    for i in 0..depth {
        value = if i % 2 == 0 {
            Value::Array(vec![value])
        } else {
            Value::Object([("k".to_owned(), value)].into_iter().collect())
        };
    }
    value
}

/// A value nested exactly [`MAX_DEPTH`](crate::value::MAX_DEPTH) deep reads
/// back through every path; one level more is refused on write with
/// `InvalidValue` naming the limit (by `set`, `set_many` and `cas`), and so is
/// a value 10,000 deep, without overflowing the stack.
pub async fn nesting_depth_limit<S: KvStore + ?Sized>(store: Arc<S>) {
    use crate::value::{drop_deep, MAX_DEPTH};
    let deepest = nested_value(MAX_DEPTH);
    let key = kvkey!["deep", "limit"];
    set(&*store, &key, deepest.clone(), none()).await;
    assert_eq!(get(&*store, &key).await.as_ref(), Some(&deepest), "get");
    let many = store
        .get_many(std::slice::from_ref(&key))
        .await
        .expect("get_many");
    assert_eq!(many, vec![Some(deepest.clone())], "get_many");
    let listed = listed(&*store, Some(kvkey!["deep"])).await;
    assert_eq!(listed.get(&key), Some(&deepest), "list");
    if store.capabilities().atomic_cas {
        assert!(cas(&*store, &key, Some(&deepest), Some(deepest.clone()), none()).await);
    }

    let refused = |what: &str, result: crate::Result<()>| {
        let err = result.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::InvalidValue, "{what}: {err}");
        assert!(
            err.to_string().contains(&MAX_DEPTH.to_string()),
            "{what}: the error names the limit: {err}"
        );
    };
    let over = kvkey!["deep", "over"];
    for depth in [MAX_DEPTH + 1, 10_000] {
        refused("set", store.set(&over, nested_value(depth), none()).await);
        refused(
            "set_many",
            store
                .set_many(
                    vec![
                        (kvkey!["deep", "ok"], json!(1)),
                        (over.clone(), nested_value(depth)),
                    ],
                    none(),
                )
                .await,
        );
        if store.capabilities().atomic_cas {
            refused(
                "cas new",
                store
                    .cas(&over, None, Some(nested_value(depth)), none())
                    .await
                    .map(|_| ()),
            );
            let expected = nested_value(depth);
            let result = store.cas(&key, Some(&expected), None, none()).await;
            drop_deep(expected);
            refused("cas expected", result.map(|_| ()));
        }
    }
    assert_eq!(get(&*store, &over).await, None, "nothing written");
    assert_eq!(
        get(&*store, &kvkey!["deep", "ok"]).await,
        None,
        "a refused batch writes nothing"
    );
    assert_eq!(
        get(&*store, &key).await.as_ref(),
        Some(&deepest),
        "untouched"
    );
}

/// `get_with_ttl` and `get_many_with_ttl` agree with `get`, and, when the
/// store [reports TTLs](crate::Capabilities::reports_ttl), report a remaining
/// lifetime that is positive and no longer than the one written, and none for
/// an entry without a TTL.
pub async fn get_with_ttl_reports_the_remaining_lifetime<S: KvStore + ?Sized>(store: Arc<S>) {
    let timed = kvkey!["with-ttl", "timed"];
    let forever = kvkey!["with-ttl", "forever"];
    let absent = kvkey!["with-ttl", "absent"];
    set(&*store, &timed, json!("t"), SetOptions::ttl(LONG_TTL)).await;
    set(&*store, &forever, json!("f"), none()).await;
    let reports = store.capabilities().reports_ttl;
    let check = |found: Option<(Value, Option<Duration>)>, want: Value, timed: bool| {
        let (value, ttl) = found.unwrap_or_else(|| panic!("{want} is there"));
        assert_eq!(value, want);
        if reports {
            if timed {
                let ttl = ttl.unwrap_or_else(|| panic!("{want} has a TTL"));
                assert!(ttl <= LONG_TTL, "{ttl:?} is longer than the TTL written");
                assert!(
                    ttl > LONG_TTL - Duration::from_secs(60),
                    "{ttl:?} is far less than what is left"
                );
            } else {
                // None, unless a layer gave it a default TTL (DefaultTtlLayer),
                // which is then at least the written one's.
                assert!(
                    ttl.is_none_or(|ttl| ttl > LONG_TTL - Duration::from_secs(60)),
                    "{want} was written without a TTL, reports {ttl:?}"
                );
            }
        }
    };
    let one = |key: &KvKey| {
        let key = key.clone();
        let store = &store;
        async move {
            store
                .get_with_ttl(&key)
                .await
                .unwrap_or_else(|e| panic!("get_with_ttl({key}) failed: {e}"))
        }
    };
    check(one(&timed).await, json!("t"), true);
    check(one(&forever).await, json!("f"), false);
    assert_eq!(one(&absent).await, None);
    // A second read (a cache in front answers it from its front tier).
    check(one(&timed).await, json!("t"), true);

    let many = store
        .get_many_with_ttl(&[timed.clone(), absent.clone(), forever.clone()])
        .await
        .unwrap_or_else(|e| panic!("get_many_with_ttl failed: {e}"));
    let mut many = many.into_iter();
    check(many.next().flatten(), json!("t"), true);
    assert_eq!(many.next(), Some(None), "absent");
    check(many.next().flatten(), json!("f"), false);
    assert_eq!(store.get_many_with_ttl(&[]).await.ok(), Some(Vec::new()));

    // A short TTL is gone after it passed, for both reads.
    let short = kvkey!["with-ttl", "short"];
    set(&*store, &short, json!("s"), SetOptions::ttl(SHORT_TTL)).await;
    if let Some((_, Some(ttl))) = one(&short).await {
        // A store without exact expiry may round TTLs up (whole seconds).
        if store.capabilities().exact_expiry {
            assert!(ttl <= SHORT_TTL, "{ttl:?}");
        }
    }
    tokio::time::sleep(PAST_SHORT_TTL).await;
    if store.capabilities().exact_expiry {
        assert_eq!(one(&short).await, None, "expired");
        let many = store
            .get_many_with_ttl(std::slice::from_ref(&short))
            .await
            .unwrap_or_else(|e| panic!("get_many_with_ttl failed: {e}"));
        assert_eq!(many, vec![None], "expired");
    }
}
