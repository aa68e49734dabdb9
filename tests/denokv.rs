//! The conformance suite against `DenoKvStore` on database files, plus
//! Deno-specific checks: the key prefix, the value mapping, limits, and
//! interop with other Deno KV clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvtower::{kvkey, DenoKvStore, ErrorKind, KvStore, KvStoreExt, SetOptions};
use serde_json::json;

/// A fresh database file path under Cargo's per-target temp directory (kept
/// after the run for inspection, replaced by the next run).
fn fresh_path(tag: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("denokv");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}-{}-{n}.sqlite3", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

kvtower::conformance_suite!(|| async { DenoKvStore::open(fresh_path("conf")).unwrap() });

mod with_prefix {
    kvtower::conformance_suite!(|| async {
        kvtower::DenoKvStore::builder()
            .prefix(["_fedify", ""])
            .open(super::fresh_path("prefixed"))
            .unwrap()
    });
}

#[tokio::test]
async fn prefix_isolates_and_shares_one_file() {
    let path = fresh_path("prefix");
    let plain = DenoKvStore::open(&path).unwrap();
    let fedify = DenoKvStore::builder()
        .prefix(["_fedify"])
        .open(&path)
        .unwrap();
    fedify
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        plain.get(&kvkey!["_fedify", "a"]).await.unwrap(),
        Some(json!(1))
    );
    assert_eq!(plain.get(&kvkey!["a"]).await.unwrap(), None);
    plain
        .set(&kvkey!["other"], json!(2), SetOptions::default())
        .await
        .unwrap();
    let listed = fedify.list_all(None).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, kvkey!["a"]);
}

#[tokio::test]
async fn values_keep_their_json_meaning() {
    let store = DenoKvStore::open(fresh_path("values")).unwrap();
    let key = kvkey!["v"];
    for (written, read) in [
        (json!(2.0), json!(2)),
        (
            json!(9_007_199_254_740_993u64),
            json!(9_007_199_254_740_993u64),
        ),
        (json!(-2_147_483_649i64), json!(-2_147_483_649i64)),
    ] {
        store
            .set(&key, written, SetOptions::default())
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(read));
    }
}

#[tokio::test]
async fn limits_are_deno_limits() {
    let store = DenoKvStore::open(fresh_path("limits")).unwrap();
    let err = store
        .set(
            &kvkey!["big"],
            json!("x".repeat(70_000)),
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert_eq!(store.get(&kvkey!["big"]).await.unwrap(), None);
    let err = store
        .set(&kvkey!["k".repeat(3000)], json!(1), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    let err = store
        .set_many(
            vec![
                (kvkey!["ok"], json!(1)),
                (kvkey!["big"], json!("x".repeat(70_000))),
            ],
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert_eq!(
        store.get(&kvkey!["ok"]).await.unwrap(),
        None,
        "nothing written"
    );
}

#[tokio::test]
async fn reopened_file_keeps_data_and_expiry() {
    let path = fresh_path("reopen");
    {
        let store = DenoKvStore::open(&path).unwrap();
        store
            .set(&kvkey!["keep"], json!({"a": [1]}), SetOptions::default())
            .await
            .unwrap();
        store
            .set(
                &kvkey!["short"],
                json!(1),
                SetOptions::ttl(Duration::from_millis(100)),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = DenoKvStore::open(&path).unwrap();
    assert_eq!(
        store.get(&kvkey!["keep"]).await.unwrap(),
        Some(json!({"a": [1]}))
    );
    assert_eq!(store.get(&kvkey!["short"]).await.unwrap(), None);
}

#[tokio::test]
async fn open_of_a_directory_is_a_config_error() {
    let err = DenoKvStore::open(env!("CARGO_TARGET_TMPDIR")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}
