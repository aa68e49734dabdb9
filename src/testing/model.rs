//! A reference model (a `BTreeMap`) and random operation sequences: any store
//! must give the model's answers.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use crate::key::KvKey;
use crate::store::{KvStore, SetOptions, Value};

/// The expected value of a generated `cas`.
#[derive(Debug, Clone)]
pub enum Expected {
    /// Whatever the model holds now (so that most such `cas` calls succeed).
    Current,
    /// A fixed value (`None`: absent).
    Fixed(Option<Value>),
}

/// One generated operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// `get`
    Get(KvKey),
    /// `set` without TTL
    Set(KvKey, Value),
    /// `set` with a TTL of zero (the key ends absent)
    SetExpired(KvKey, Value),
    /// `delete`
    Delete(KvKey),
    /// `cas`
    Cas(KvKey, Expected, Option<Value>),
    /// `list`
    List(Option<KvKey>),
    /// `get_many`
    GetMany(Vec<KvKey>),
    /// `set_many` without TTL
    SetMany(Vec<(KvKey, Value)>),
    /// `delete_many`
    DeleteMany(Vec<KvKey>),
}

fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::from("a")),
        Just(String::from("b")),
        Just(String::new()),
        Just(String::from("a:b")),
        Just(String::from("*")),
        Just(String::from("\\")),
        Just(String::from("\0")),
        Just(String::from("ü")),
    ]
}

/// Keys of one to three parts from a small alphabet of troublesome parts, so
/// that sequences revisit keys and prefixes often.
pub fn key() -> impl Strategy<Value = KvKey> {
    prop::collection::vec(part(), 1..=3)
        .prop_map(|parts| KvKey::new(parts).expect("at least one part"))
}

/// Small JSON values of every type.
pub fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-2i64..3).prop_map(Value::from),
        prop_oneof![Just(""), Just("x"), Just("{}")].prop_map(Value::from),
        Just(json!([1, [2]])),
        Just(json!({"a": 1, "b": {"c": null}})),
        Just(json!({"b": {"c": null}, "a": 1})),
    ]
}

/// One random operation.
pub fn op() -> impl Strategy<Value = Op> {
    let expected = prop_oneof![
        3 => Just(Expected::Current),
        1 => prop::option::of(value()).prop_map(Expected::Fixed),
    ];
    prop_oneof![
        4 => key().prop_map(Op::Get),
        4 => (key(), value()).prop_map(|(k, v)| Op::Set(k, v)),
        1 => (key(), value()).prop_map(|(k, v)| Op::SetExpired(k, v)),
        2 => key().prop_map(Op::Delete),
        4 => (key(), expected, prop::option::of(value())).prop_map(|(k, e, n)| Op::Cas(k, e, n)),
        2 => prop::option::of(key()).prop_map(Op::List),
        1 => prop::collection::vec(key(), 0..5).prop_map(Op::GetMany),
        1 => prop::collection::vec((key(), value()), 0..5).prop_map(Op::SetMany),
        1 => prop::collection::vec(key(), 0..5).prop_map(Op::DeleteMany),
    ]
}

/// A sequence of up to `max_len` random operations.
pub fn ops(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=max_len)
}

/// Runs `ops` against `store` (which must start empty) and against a
/// `BTreeMap`, and returns a description of the first difference.
///
/// Stores without atomic `cas` skip the `Cas` operations.
pub async fn check_against_model<S: KvStore + ?Sized>(store: &S, ops: &[Op]) -> Result<(), String> {
    let mut model: BTreeMap<KvKey, Value> = BTreeMap::new();
    let atomic_cas = store.capabilities().atomic_cas;
    // A store that cannot hold U+0000 gets the same sequence with every NUL
    // in a key part replaced by U+0001 (the model's values hold none).
    let sanitized: Vec<Op>;
    let ops = if store.capabilities().nul_in_text {
        ops
    } else {
        sanitized = ops.iter().map(without_nul).collect();
        &sanitized
    };
    for (step, op) in ops.iter().enumerate() {
        let fail = |what: String| Err(format!("step {step} {op:?}: {what}"));
        match op {
            Op::Get(key) => {
                let got = store.get(key).await.map_err(|e| e.to_string())?;
                if got.as_ref() != model.get(key) {
                    return fail(format!("got {got:?}, model has {:?}", model.get(key)));
                }
            }
            Op::Set(key, value) => {
                store
                    .set(key, value.clone(), SetOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                model.insert(key.clone(), value.clone());
            }
            Op::SetExpired(key, value) => {
                store
                    .set(
                        key,
                        value.clone(),
                        SetOptions::ttl(std::time::Duration::ZERO),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                model.remove(key);
            }
            Op::Delete(key) => {
                store.delete(key).await.map_err(|e| e.to_string())?;
                model.remove(key);
            }
            Op::Cas(key, expected, new) => {
                if !atomic_cas {
                    continue;
                }
                let expected = match expected {
                    Expected::Current => model.get(key).cloned(),
                    Expected::Fixed(v) => v.clone(),
                };
                let swapped = store
                    .cas(key, expected.as_ref(), new.clone(), SetOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let should = model.get(key) == expected.as_ref();
                if swapped != should {
                    return fail(format!("cas returned {swapped}, model says {should}"));
                }
                if should {
                    match new {
                        Some(v) => model.insert(key.clone(), v.clone()),
                        None => model.remove(key),
                    };
                }
            }
            Op::List(prefix) => {
                let got = super::cases::listed(store, prefix.clone()).await;
                let want: BTreeMap<KvKey, Value> = model
                    .iter()
                    .filter(|(k, _)| prefix.as_ref().is_none_or(|p| k.starts_with(p)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if got != want {
                    return fail(format!("listed {got:?}, model has {want:?}"));
                }
            }
            Op::GetMany(keys) => {
                let got = store.get_many(keys).await.map_err(|e| e.to_string())?;
                let want: Vec<Option<Value>> = keys.iter().map(|k| model.get(k).cloned()).collect();
                if got != want {
                    return fail(format!("got {got:?}, model has {want:?}"));
                }
            }
            Op::SetMany(entries) => {
                store
                    .set_many(entries.clone(), SetOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                for (k, v) in entries {
                    model.insert(k.clone(), v.clone());
                }
            }
            Op::DeleteMany(keys) => {
                store.delete_many(keys).await.map_err(|e| e.to_string())?;
                for k in keys {
                    model.remove(k);
                }
            }
        }
    }
    let got = super::cases::listed(store, None).await;
    if got != model {
        return Err(format!("final contents {got:?}, model has {model:?}"));
    }
    Ok(())
}

fn key_without_nul(key: &KvKey) -> KvKey {
    KvKey::__from_nonempty(
        key.parts()
            .iter()
            .map(|p| p.replace('\0', "\u{1}"))
            .collect(),
    )
}

fn without_nul(op: &Op) -> Op {
    let keys = |keys: &[KvKey]| keys.iter().map(key_without_nul).collect();
    match op {
        Op::Get(k) => Op::Get(key_without_nul(k)),
        Op::Set(k, v) => Op::Set(key_without_nul(k), v.clone()),
        Op::SetExpired(k, v) => Op::SetExpired(key_without_nul(k), v.clone()),
        Op::Delete(k) => Op::Delete(key_without_nul(k)),
        Op::Cas(k, e, n) => Op::Cas(key_without_nul(k), e.clone(), n.clone()),
        Op::List(p) => Op::List(p.as_ref().map(key_without_nul)),
        Op::GetMany(ks) => Op::GetMany(keys(ks)),
        Op::SetMany(entries) => Op::SetMany(
            entries
                .iter()
                .map(|(k, v)| (key_without_nul(k), v.clone()))
                .collect(),
        ),
        Op::DeleteMany(ks) => Op::DeleteMany(keys(ks)),
    }
}
