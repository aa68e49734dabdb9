//! The conformance suite must fail for stores that break the contract: each
//! wrapper below plants one classic bug in a real `MemoryKvStore`, and the case
//! that guards against it must panic. A suite that passes these would be a
//! suite that cannot fail.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use kvtower::testing::{cases, run_case};
use kvtower::{KvEntry, KvKey, KvStore, MemoryKvStore, Result, SetOptions, Value};

#[derive(Clone, Copy, Debug)]
enum Bug {
    /// Writes ignore the TTL.
    IgnoresTtl,
    /// `list` compares prefixes as joined strings, so `["ab"]` is under `["a"]`.
    StringPrefix,
    /// Keys are joined with `:` into one part, so `["a:b"]` and `["a", "b"]` collide.
    JoinedKeys,
    /// `cas` reads, then writes, with no atomicity.
    RacyCas,
    /// `Null` is treated as absent.
    NullIsAbsent,
    /// `cas` confuses an expected `Null` with an absent key.
    NullExpectedIsAbsent,
    /// `get_many` drops the order of its answers.
    UnorderedGetMany,
}

struct Buggy {
    inner: MemoryKvStore,
    bug: Bug,
}

impl Buggy {
    fn key(&self, key: &KvKey) -> KvKey {
        match self.bug {
            Bug::JoinedKeys => KvKey::new([key.parts().join(":")]).unwrap(),
            _ => key.clone(),
        }
    }
}

#[async_trait]
impl KvStore for Buggy {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        let value = self.inner.get(&self.key(key)).await?;
        Ok(match self.bug {
            Bug::NullIsAbsent => value.filter(|v| !v.is_null()),
            _ => value,
        })
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let options = match self.bug {
            Bug::IgnoresTtl => SetOptions::default(),
            _ => options,
        };
        self.inner.set(&self.key(key), value, options).await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        self.inner.delete(&self.key(key)).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        match self.bug {
            Bug::RacyCas => {
                let current = self.inner.get(key).await?;
                tokio::task::yield_now().await;
                if current.as_ref() != expected {
                    return Ok(false);
                }
                match new {
                    Some(v) => self.inner.set(key, v, options).await?,
                    None => self.inner.delete(key).await?,
                }
                Ok(true)
            }
            Bug::NullExpectedIsAbsent => {
                let expected = expected.filter(|v| !v.is_null());
                self.inner.cas(key, expected, new, options).await
            }
            Bug::IgnoresTtl => {
                let options = SetOptions::default();
                self.inner.cas(key, expected, new, options).await
            }
            _ => self.inner.cas(&self.key(key), expected, new, options).await,
        }
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        match self.bug {
            Bug::StringPrefix => {
                let joined = prefix.map(|p| p.parts().join(":"));
                self.inner
                    .list(None)
                    .filter(move |e| {
                        let keep = match (&joined, e) {
                            (Some(p), Ok(e)) => e.key.parts().join(":").starts_with(p.as_str()),
                            _ => true,
                        };
                        std::future::ready(keep)
                    })
                    .boxed()
            }
            Bug::JoinedKeys => {
                let prefix = prefix.map(|p| p.parts().join(":"));
                self.inner
                    .list(None)
                    .filter_map(move |e| {
                        let e = e.map(|e| KvEntry {
                            key: KvKey::new(e.key.parts()[0].split(':')).unwrap(),
                            value: e.value,
                        });
                        let keep = match (&prefix, &e) {
                            (Some(p), Ok(e)) => e.key.parts().join(":").starts_with(p.as_str()),
                            _ => true,
                        };
                        std::future::ready(keep.then_some(e))
                    })
                    .boxed()
            }
            _ => self.inner.list(prefix),
        }
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let mut values = Vec::new();
        for key in keys {
            values.push(self.get(key).await?);
        }
        if let Bug::UnorderedGetMany = self.bug {
            values.sort_by_key(|v| v.is_none());
        }
        Ok(values)
    }

    fn capabilities(&self) -> kvtower::Capabilities {
        self.inner.capabilities().with_reports_ttl(false)
    }
}

fn fails<C, F>(bug: Bug, case: C)
where
    C: FnOnce(Arc<Buggy>) -> F + std::panic::UnwindSafe,
    F: std::future::Future<Output = ()>,
{
    let result = catch_unwind(AssertUnwindSafe(|| {
        run_case(
            || async move {
                Buggy {
                    inner: MemoryKvStore::new(),
                    bug,
                }
            },
            case,
        )
    }));
    assert!(result.is_err(), "the suite did not catch {bug:?}");
}

#[test]
fn catches_ignored_ttl() {
    fails(Bug::IgnoresTtl, cases::ttl_expiry);
    fails(Bug::IgnoresTtl, cases::ttl_zero_means_expired);
}

#[test]
fn catches_string_prefixes() {
    fails(Bug::StringPrefix, cases::list_by_prefix);
    fails(Bug::StringPrefix, cases::tricky_keys_never_collide);
}

#[test]
fn catches_colliding_keys() {
    fails(Bug::JoinedKeys, cases::tricky_keys_never_collide);
}

#[test]
fn catches_racy_cas() {
    fails(Bug::RacyCas, cases::concurrent_cas_increments);
}

#[test]
fn catches_null_as_absent() {
    fails(Bug::NullIsAbsent, cases::round_trips_every_json_type);
}

#[test]
fn catches_null_expected_as_absent() {
    fails(Bug::NullExpectedIsAbsent, cases::cas_semantics);
}

#[test]
fn catches_unordered_get_many() {
    fails(Bug::UnorderedGetMany, cases::batch_operations);
}

#[test]
fn the_model_check_catches_bugs() {
    for bug in [Bug::StringPrefix, Bug::JoinedKeys, Bug::NullIsAbsent] {
        let result = catch_unwind(|| {
            kvtower::testing::model_test(
                move || async move {
                    Buggy {
                        inner: MemoryKvStore::new(),
                        bug,
                    }
                },
                256,
            )
        });
        assert!(result.is_err(), "the model check did not catch {bug:?}");
    }
}

#[test]
fn correct_store_passes_the_cases_used_above() {
    // The same harness with the real store passes: the failures above are the bugs.
    run_case(|| async { MemoryKvStore::new() }, cases::cas_semantics);
    run_case(
        || async { MemoryKvStore::new() },
        cases::concurrent_cas_increments,
    );
}
