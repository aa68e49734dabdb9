//! The conformance suite against `SqliteKvStore` (in memory and in a file),
//! plus persistence, cross-connection atomicity, the expiry sweep, table-name
//! validation and corrupt rows, checked against the real SQLite file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvtower::Operation;
use kvtower::{kvkey, ErrorKind, KvStore, KvStoreExt, SetOptions, SqliteKvStore};
use serde_json::json;

mod support;

/// A fresh directory under the OS temp dir, removed on drop (also on panic).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kvtower-sqlite-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("kv.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

kvtower::conformance_suite!(|| async { SqliteKvStore::memory().await.unwrap() }, 64);

/// The suite on a file-backed store: WAL, real commits.
mod file_backed {
    use super::*;

    kvtower::conformance_suite!(
        || async {
            let dir = TempDir::new();
            let store = SqliteKvStore::open(dir.file()).await.unwrap();
            support::WithGuard { store, _guard: dir }
        },
        16
    );
}

fn count_rows(path: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .unwrap()
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = TempDir::new();
    let store = SqliteKvStore::open(dir.file()).await.unwrap();
    let entries: Vec<_> = (0..100)
        .map(|i| (kvkey!["p", i.to_string()], json!({ "i": i })))
        .collect();
    store
        .set_many(entries.clone(), SetOptions::default())
        .await
        .unwrap();
    store
        .set(&kvkey!["single"], json!("x"), SetOptions::default())
        .await
        .unwrap();
    store
        .set(
            &kvkey!["ttl"],
            json!("long"),
            SetOptions::ttl(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    store
        .set(
            &kvkey!["gone"],
            json!("short"),
            SetOptions::ttl(Duration::from_millis(1)),
        )
        .await
        .unwrap();
    drop(store); // joins the connection thread: the file is closed

    let store = SqliteKvStore::open(dir.file()).await.unwrap();
    for (key, value) in &entries {
        assert_eq!(store.get(key).await.unwrap().as_ref(), Some(value));
    }
    assert_eq!(
        store.get(&kvkey!["single"]).await.unwrap(),
        Some(json!("x"))
    );
    assert_eq!(
        store.get(&kvkey!["ttl"]).await.unwrap(),
        Some(json!("long"))
    );
    assert_eq!(store.get(&kvkey!["gone"]).await.unwrap(), None);
    assert_eq!(store.list_all(None).await.unwrap().len(), 102);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_is_exact_across_connections_to_one_file() {
    // Two stores on one file are two connections: only SQLite's locking
    // (BEGIN IMMEDIATE) keeps their cas calls atomic.
    let dir = TempDir::new();
    let a = Arc::new(SqliteKvStore::open(dir.file()).await.unwrap());
    let b = Arc::new(SqliteKvStore::open(dir.file()).await.unwrap());
    let key = kvkey!["counter"];
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tokio::spawn(async move {
                loop {
                    let current = match store.get(&key).await {
                        Ok(v) => v,
                        Err(e) if e.is_retryable() => continue,
                        Err(e) => panic!("{e}"),
                    };
                    let next = current.as_ref().and_then(|v| v.as_u64()).unwrap_or(0) + 1;
                    match store
                        .cas(
                            &key,
                            current.as_ref(),
                            Some(json!(next)),
                            SetOptions::default(),
                        )
                        .await
                    {
                        Ok(true) => return,
                        Ok(false) => tokio::task::yield_now().await,
                        Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(a.get(&key).await.unwrap(), Some(json!(60)));
    assert_eq!(b.get(&key).await.unwrap(), Some(json!(60)));
}

#[tokio::test]
async fn sweep_deletes_expired_rows_from_the_table() {
    let dir = TempDir::new();
    let store = SqliteKvStore::builder()
        .no_sweep()
        .open(dir.file())
        .await
        .unwrap();
    let short = SetOptions::ttl(Duration::from_millis(50));
    let entries: Vec<_> = (0..2_500)
        .map(|i| (kvkey!["e", i.to_string()], json!(i)))
        .collect();
    store.set_many(entries, short).await.unwrap();
    store
        .set(&kvkey!["keep"], json!(1), SetOptions::default())
        .await
        .unwrap();
    store
        .set(
            &kvkey!["keep-ttl"],
            json!(2),
            SetOptions::ttl(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(count_rows(&dir.file(), "kvtower"), 2_502, "rows linger");
    assert_eq!(
        store.list_all(None).await.unwrap().len(),
        2,
        "but are invisible"
    );
    // More than one sweep batch: sweep_expired deletes them all.
    assert_eq!(store.sweep_expired().await.unwrap(), 2_500);
    assert_eq!(count_rows(&dir.file(), "kvtower"), 2);
    assert_eq!(store.sweep_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn background_sweep_deletes_expired_rows() {
    let dir = TempDir::new();
    let store = SqliteKvStore::builder()
        .table("swept")
        .sweep_interval(Duration::from_millis(100))
        .open(dir.file())
        .await
        .unwrap();
    let short = SetOptions::ttl(Duration::from_millis(50));
    for i in 0..20 {
        store
            .set(&kvkey!["e", i.to_string()], json!(i), short)
            .await
            .unwrap();
    }
    store
        .set(&kvkey!["keep"], json!(1), SetOptions::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if count_rows(&dir.file(), "swept") == 1 {
            assert_eq!(store.get(&kvkey!["keep"]).await.unwrap(), Some(json!(1)));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expired rows still in the table: {}",
        count_rows(&dir.file(), "swept")
    );
}

#[tokio::test]
async fn hostile_table_names_are_rejected() {
    let dir = TempDir::new();
    for name in [
        "kv; DROP TABLE x; --",
        "\"quoted\"",
        "",
        "1kv",
        "kv x",
        "main.kv",
    ] {
        let err = SqliteKvStore::builder()
            .table(name)
            .open(dir.file())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name:?}");
        assert!(err.to_string().contains("table"), "{err}");
    }
    // Nothing was created: the names never reached SQL.
    assert!(!dir.file().exists());
    let store = SqliteKvStore::builder()
        .table("Kv_2")
        .open(dir.file())
        .await
        .unwrap();
    store
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(count_rows(&dir.file(), "Kv_2"), 1);
}

#[tokio::test]
async fn corrupt_rows_are_invalid_value_errors_for_their_key() {
    let dir = TempDir::new();
    let store = SqliteKvStore::open(dir.file()).await.unwrap();
    store
        .set(&kvkey!["c", "good"], json!(1), SetOptions::default())
        .await
        .unwrap();
    store
        .set(&kvkey!["c", "bad"], json!(2), SetOptions::default())
        .await
        .unwrap();
    store
        .set(&kvkey!["c", "blob"], json!(3), SetOptions::default())
        .await
        .unwrap();
    // Another program writes garbage into the table.
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "UPDATE kvtower SET v = '{not json' WHERE k = (SELECT k FROM kvtower ORDER BY k LIMIT 1)",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE kvtower SET v = x'00ff' WHERE k = (SELECT k FROM kvtower ORDER BY k LIMIT 1 OFFSET 1)",
        [],
    )
    .unwrap();
    drop(conn);

    // Sorted: ["c","bad"], ["c","blob"], ["c","good"].
    let err = store.get(&kvkey!["c", "bad"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(err.key(), Some(&kvkey!["c", "bad"]));
    assert_eq!(err.operation(), Some(Operation::Get));
    let err = store.get(&kvkey!["c", "blob"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(
        store.get(&kvkey!["c", "good"]).await.unwrap(),
        Some(json!(1))
    );

    // A listing reports the bad rows and still yields the good one.
    use futures::StreamExt;
    let items: Vec<_> = store.list(Some(kvkey!["c"])).collect().await;
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[0].as_ref().unwrap_err().kind(),
        ErrorKind::InvalidValue
    );
    assert_eq!(
        items[1].as_ref().unwrap_err().kind(),
        ErrorKind::InvalidValue
    );
    assert_eq!(items[2].as_ref().unwrap().value, json!(1));

    // cas cannot compare against an unreadable value: an error, nothing written.
    let err = store
        .cas(
            &kvkey!["c", "bad"],
            None,
            Some(json!(0)),
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    // Overwriting or deleting repairs the row.
    store
        .set(&kvkey!["c", "bad"], json!("fixed"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.get(&kvkey!["c", "bad"]).await.unwrap(),
        Some(json!("fixed"))
    );

    // A typed read of a valid value of the wrong shape is InvalidValue too.
    let err = store
        .get_as::<Vec<u8>>(&kvkey!["c", "good"])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
}

#[tokio::test]
async fn tables_in_one_file_are_independent() {
    let dir = TempDir::new();
    let a = SqliteKvStore::builder()
        .table("a")
        .open(dir.file())
        .await
        .unwrap();
    let b = SqliteKvStore::builder()
        .table("b")
        .open(dir.file())
        .await
        .unwrap();
    a.set(&kvkey!["k"], json!("a"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(b.get(&kvkey!["k"]).await.unwrap(), None);
    assert_eq!(a.list_all(None).await.unwrap().len(), 1);
    assert!(b.list_all(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn unopenable_path_is_an_error() {
    let dir = TempDir::new();
    let err = SqliteKvStore::open(dir.0.join("missing-dir").join("kv.db"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// Both stores on one file, each with a TTL'd entry (so each uses its
/// expiry index) and a sweep.
async fn two_tables_work(path: &Path, first: &str, second: &str) {
    let a = SqliteKvStore::builder()
        .table(first)
        .open(path)
        .await
        .unwrap();
    let b = SqliteKvStore::builder()
        .table(second)
        .open(path)
        .await
        .unwrap();
    let ttl = SetOptions::ttl(Duration::from_secs(600));
    a.set(&kvkey!["k"], json!("a"), ttl).await.unwrap();
    b.set(&kvkey!["k"], json!("b"), ttl).await.unwrap();
    assert_eq!(a.get(&kvkey!["k"]).await.unwrap(), Some(json!("a")));
    assert_eq!(b.get(&kvkey!["k"]).await.unwrap(), Some(json!("b")));
    assert_eq!(a.sweep_expired().await.unwrap(), 0);
    assert_eq!(b.sweep_expired().await.unwrap(), 0);
    assert!(count_rows(path, first) >= 1);
    assert!(count_rows(path, second) >= 1);
}

#[tokio::test]
async fn a_table_may_be_named_like_another_tables_expiry_index() {
    // The expiry index of `x` used to be called `x_expires_at`, which is
    // also a valid table name: the second store could not open, whichever
    // came first.
    let dir = TempDir::new();
    two_tables_work(&dir.file(), "x", "x_expires_at").await;
    let dir = TempDir::new();
    two_tables_work(&dir.file(), "y_expires_at", "y").await;
}

#[tokio::test]
async fn a_table_from_an_older_version_gives_up_its_index_name() {
    let dir = TempDir::new();
    // The layout the previous version created, with one row.
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.execute_batch(
        "CREATE TABLE \"x\" (k BLOB PRIMARY KEY NOT NULL, v TEXT NOT NULL, expires_at INTEGER) \
         WITHOUT ROWID;\
         CREATE INDEX \"x_expires_at\" ON \"x\" (expires_at) WHERE expires_at IS NOT NULL;",
    )
    .unwrap();
    drop(conn);
    let old = SqliteKvStore::builder()
        .table("x")
        .open(dir.file())
        .await
        .unwrap();
    old.set(&kvkey!["kept"], json!(1), SetOptions::default())
        .await
        .unwrap();
    drop(old);

    two_tables_work(&dir.file(), "x", "x_expires_at").await;
    let store = SqliteKvStore::builder()
        .table("x")
        .open(dir.file())
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["kept"]).await.unwrap(), Some(json!(1)));
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'x'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(indexes.contains(&"x.expires_at".to_owned()), "{indexes:?}");
    assert!(!indexes.contains(&"x_expires_at".to_owned()), "{indexes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_while_a_write_waits_for_another_connections_lock() {
    let dir = TempDir::new();
    let store = SqliteKvStore::open(dir.file()).await.unwrap();
    store
        .set(&kvkey!["r", "1"], json!(1), SetOptions::default())
        .await
        .unwrap();
    // Another process holds the write lock.
    let other = rusqlite::Connection::open(dir.file()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let writer = store.clone();
    let write = tokio::spawn(async move {
        writer
            .set(&kvkey!["r", "2"], json!(2), SetOptions::default())
            .await
    });
    // Let the write reach SQLite and start waiting for the lock (its busy
    // timeout is 5 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!write.is_finished(), "the write waits for the lock");

    // WAL reads need no lock: they answer while the write waits. The
    // timeouts are hang guards (reads used to queue behind the write for
    // the whole busy timeout), not a speed assertion.
    let guard = Duration::from_secs(3);
    let got = tokio::time::timeout(guard, store.get(&kvkey!["r", "1"]))
        .await
        .expect("get queued behind the waiting write");
    assert_eq!(got.unwrap(), Some(json!(1)));
    let listed = tokio::time::timeout(guard, store.list_all(Some(kvkey!["r"])))
        .await
        .expect("list queued behind the waiting write");
    assert_eq!(listed.unwrap().len(), 1);
    let many = tokio::time::timeout(guard, store.get_many(&[kvkey!["r", "1"], kvkey!["r", "2"]]))
        .await
        .expect("get_many queued behind the waiting write");
    assert_eq!(many.unwrap(), vec![Some(json!(1)), None]);

    // The lock goes away: the write goes through, and reads see it.
    other.execute_batch("COMMIT").unwrap();
    write.await.unwrap().unwrap();
    assert_eq!(store.get(&kvkey!["r", "2"]).await.unwrap(), Some(json!(2)));
}

#[tokio::test]
async fn no_read_connections_still_reads_and_writes() {
    let dir = TempDir::new();
    let store = SqliteKvStore::builder()
        .read_connections(0)
        .open(dir.file())
        .await
        .unwrap();
    store
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["a"]).await.unwrap(), Some(json!(1)));
    assert_eq!(store.list_all(None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_listing_through_the_tower_bridge_goes_past_a_bad_entry() {
    use kvtower::service::{KvServiceLayer, RetryPolicy, ServiceStoreLayer};
    let dir = TempDir::new();
    let store = SqliteKvStore::open(dir.file()).await.unwrap();
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        store
            .set(&kvkey!["l", key], json!(i), SetOptions::default())
            .await
            .unwrap();
    }
    // Another program writes garbage into the middle row.
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "UPDATE kvtower SET v = '{not json' WHERE k = (SELECT k FROM kvtower ORDER BY k LIMIT 1 OFFSET 1)",
        [],
    )
    .unwrap();
    drop(conn);
    let stack = tower::ServiceBuilder::new()
        .layer(ServiceStoreLayer)
        .retry(RetryPolicy::default())
        .timeout(Duration::from_secs(5))
        .layer(KvServiceLayer)
        .service(store);
    let items: Vec<_> = futures::StreamExt::collect(stack.list(Some(kvkey!["l"]))).await;
    assert_eq!(items.len(), 3, "{items:?}");
    let good: Vec<_> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    assert_eq!(good.len(), 2, "the good entries still arrive: {items:?}");
    let bad: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].kind(), ErrorKind::InvalidValue);
    assert_eq!(bad[0].key(), Some(&kvkey!["l", "b"]));
}
