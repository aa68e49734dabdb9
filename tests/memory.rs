//! The conformance suite against `MemoryKvStore`, plus memory-specific checks.

use std::time::Duration;

use kvtower::Operation;
use kvtower::{kvkey, ErrorKind, KvStore, MemoryKvStore, SetOptions};
use serde_json::json;

kvtower::conformance_suite!(|| async { MemoryKvStore::new() }, 256);

mod bounded_by_bytes {
    kvtower::conformance_suite!(|| async {
        kvtower::MemoryKvStore::builder()
            .max_bytes(64 * 1024 * 1024)
            .build()
    });
}

#[tokio::test]
async fn oversized_value_is_rejected_and_old_value_kept() {
    let store = MemoryKvStore::builder().max_value_bytes(16).build();
    let key = kvkey!["k"];
    store
        .set(&key, json!("small"), SetOptions::default())
        .await
        .unwrap();
    let err = store
        .set(&key, json!("x".repeat(100)), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert_eq!(err.operation(), Some(Operation::Set));
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("small")));
    let err = store
        .cas(
            &key,
            Some(&json!("small")),
            Some(json!("y".repeat(100))),
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    let err = store
        .set_many(
            vec![
                (kvkey!["a"], json!(1)),
                (kvkey!["b"], json!("z".repeat(100))),
            ],
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert_eq!(
        store.get(&kvkey!["a"]).await.unwrap(),
        None,
        "a rejected batch writes nothing"
    );
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("small")));
}

#[tokio::test]
async fn entry_bound_evicts() {
    let store = MemoryKvStore::builder().max_entries(100).build();
    for i in 0..1_000 {
        store
            .set(&kvkey!["k", i.to_string()], json!(i), SetOptions::default())
            .await
            .unwrap();
    }
    store.run_pending_tasks().await;
    assert!(store.entry_count() <= 100, "{}", store.entry_count());
}

#[tokio::test]
async fn byte_bound_holds_with_large_values() {
    let budget = 1024 * 1024;
    let store = MemoryKvStore::builder().max_bytes(budget).build();
    let big = json!("v".repeat(4096));
    for i in 0..1_000 {
        store
            .set(
                &kvkey!["k", i.to_string()],
                big.clone(),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    store.run_pending_tasks().await;
    assert!(store.weighted_size() <= budget, "{}", store.weighted_size());
    assert!(
        store.weighted_size() >= budget / 2,
        "{}",
        store.weighted_size()
    );
}

#[tokio::test]
async fn moka_housekeeping_removes_expired_entries() {
    let store = MemoryKvStore::new();
    store
        .set(
            &kvkey!["t"],
            json!(1),
            SetOptions::ttl(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    // moka's timer wheel has about one-second buckets: the entry is hidden
    // at once (the store checks its expiry on read) and removed soon after.
    store.run_pending_tasks().await;
    assert_eq!(store.entry_count(), 1);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.run_pending_tasks().await;
        if store.entry_count() == 0 {
            return;
        }
    }
    panic!("expired entry still held: {}", store.entry_count());
}

#[tokio::test]
async fn clones_share_entries() {
    let store = MemoryKvStore::new();
    let clone = store.clone();
    store
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(clone.get(&kvkey!["a"]).await.unwrap(), Some(json!(1)));
}

#[tokio::test]
async fn huge_ttl_does_not_panic() {
    let store = MemoryKvStore::new();
    store
        .set(&kvkey!["a"], json!(1), SetOptions::ttl(Duration::MAX))
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["a"]).await.unwrap(), Some(json!(1)));
}
