//! The conformance suite against `PostgresKvStore` on the real server
//! (`KVTOWER_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`),
//! plus persistence across pools, cas across pools, the expiry sweep,
//! table-name validation and rows written by other programs. Every test uses
//! its own table and drops it afterwards.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kvtower::stores::postgres::deadpool_postgres::tokio_postgres::{self, NoTls};
use kvtower::{kvkey, ErrorKind, KvStore, KvStoreExt, PostgresKvStore, SetOptions};
use serde_json::json;

mod support;

use support::{postgres_url, TestTable};

/// A direct connection, as another program would have.
async fn raw_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&postgres_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn count_rows(table: &str) -> i64 {
    raw_client()
        .await
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
        .unwrap()
        .get(0)
}

async fn store_on(table: &TestTable) -> PostgresKvStore {
    PostgresKvStore::builder()
        .table(table.name())
        .connect(&postgres_url())
        .await
        .unwrap()
}

kvtower::conformance_suite!(
    || async {
        let table = TestTable::new();
        let store = store_on(&table).await;
        support::WithGuard {
            store,
            _guard: table,
        }
    },
    32,
    requires = support::postgres_available
);

#[tokio::test]
async fn data_survives_a_new_pool() {
    if support::postgres().is_none() {
        return;
    }
    let table = TestTable::new();
    let store = store_on(&table).await;
    let entries: Vec<_> = (0..100)
        .map(|i| (kvkey!["p", i.to_string()], json!({ "i": i })))
        .collect();
    store
        .set_many(entries.clone(), SetOptions::default())
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
    drop(store);

    let store = store_on(&table).await;
    for (key, value) in &entries {
        assert_eq!(store.get(key).await.unwrap().as_ref(), Some(value));
    }
    assert_eq!(
        store.get(&kvkey!["ttl"]).await.unwrap(),
        Some(json!("long"))
    );
    assert_eq!(store.list_all(None).await.unwrap().len(), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_is_exact_across_pools() {
    if support::postgres().is_none() {
        return;
    }
    // Two stores are two pools: only row locks and ON CONFLICT keep their
    // cas calls atomic, the first increment (an insert race) included.
    let table = TestTable::new();
    let a = Arc::new(store_on(&table).await);
    let b = Arc::new(store_on(&table).await);
    for round in 0..3 {
        let key = kvkey!["counter", round.to_string()];
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let key = key.clone();
                tokio::spawn(async move {
                    loop {
                        let current = store.get(&key).await.unwrap();
                        let next = current.as_ref().and_then(|v| v.as_u64()).unwrap_or(0) + 1;
                        if store
                            .cas(
                                &key,
                                current.as_ref(),
                                Some(json!(next)),
                                SetOptions::default(),
                            )
                            .await
                            .unwrap()
                        {
                            return;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(a.get(&key).await.unwrap(), Some(json!(50)));
    }
}

#[tokio::test]
async fn sweep_deletes_expired_rows_from_the_table() {
    if support::postgres().is_none() {
        return;
    }
    let table = TestTable::new();
    let store = PostgresKvStore::builder()
        .table(table.name())
        .no_sweep()
        .connect(&postgres_url())
        .await
        .unwrap();
    let entries: Vec<_> = (0..2_500)
        .map(|i| (kvkey!["e", i.to_string()], json!(i)))
        .collect();
    store
        .set_many(entries, SetOptions::ttl(Duration::from_millis(50)))
        .await
        .unwrap();
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
    assert_eq!(count_rows(table.name()).await, 2_502, "rows linger");
    assert_eq!(
        store.list_all(None).await.unwrap().len(),
        2,
        "but are invisible"
    );
    assert_eq!(store.sweep_expired().await.unwrap(), 2_500);
    assert_eq!(count_rows(table.name()).await, 2);
    assert_eq!(store.sweep_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn background_sweep_deletes_expired_rows() {
    if support::postgres().is_none() {
        return;
    }
    let table = TestTable::new();
    let store = PostgresKvStore::builder()
        .table(table.name())
        .sweep_interval(Duration::from_millis(100))
        .connect(&postgres_url())
        .await
        .unwrap();
    for i in 0..20 {
        store
            .set(
                &kvkey!["e", i.to_string()],
                json!(i),
                SetOptions::ttl(Duration::from_millis(50)),
            )
            .await
            .unwrap();
    }
    store
        .set(&kvkey!["keep"], json!(1), SetOptions::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if count_rows(table.name()).await == 1 {
            assert_eq!(store.get(&kvkey!["keep"]).await.unwrap(), Some(json!(1)));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expired rows still in the table: {}",
        count_rows(table.name()).await
    );
}

#[tokio::test]
async fn hostile_table_names_are_rejected() {
    if support::postgres().is_none() {
        return;
    }
    for name in [
        "kv; DROP TABLE x; --",
        "\"quoted\"",
        "",
        "1kv",
        "kv x",
        "public.kv",
    ] {
        let err = PostgresKvStore::builder()
            .table(name)
            .connect(&postgres_url())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name:?}");
        assert!(err.message().starts_with("table: "), "{err}");
    }
}

#[tokio::test]
async fn bad_url_and_unreachable_server() {
    let err = PostgresKvStore::connect("postgres://a:b@host:notaport/db")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!err.to_string().contains(":b@"), "no password: {err}");
    // Port 1 on loopback: connection refused.
    let err = PostgresKvStore::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn rows_written_by_other_programs() {
    if support::postgres().is_none() {
        return;
    }
    let table = TestTable::new();
    let store = store_on(&table).await;
    store
        .set(&kvkey!["c", "good"], json!({"n": 1}), SetOptions::default())
        .await
        .unwrap();
    let raw = raw_client().await;
    let t = table.name();

    // The `json` column: Postgres itself refuses invalid JSON, so a row
    // cannot hold a corrupt value.
    let err = raw
        .execute(&format!("UPDATE \"{t}\" SET value = '{{not json'"), &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert!(db.message().contains("json"), "{db}");

    // A valid value of the wrong shape: a typed read is InvalidValue.
    let err = store
        .get_as::<Vec<u8>>(&kvkey!["c", "good"])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(err.key(), Some(&kvkey!["c", "good"]));

    // A key that is not kvtower's encoding: the listing reports it as
    // InvalidKey and still yields the good entry.
    raw.execute(
        &format!("INSERT INTO \"{t}\" (key, value) VALUES ('\\x6300010000'::bytea, '1')"),
        &[],
    )
    .await
    .unwrap();
    let items: Vec<_> = store.list(None).collect().await;
    assert_eq!(items.len(), 2, "{items:?}");
    let bad = items.iter().filter(|i| i.is_err()).count();
    assert_eq!(bad, 1, "{items:?}");
    for item in &items {
        match item {
            Ok(entry) => assert_eq!(entry.key, kvkey!["c", "good"]),
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidKey),
        }
    }
}

#[tokio::test]
async fn tables_are_independent_and_case_sensitive() {
    if support::postgres().is_none() {
        return;
    }
    let lower = TestTable::new();
    let upper = TestTable(lower.name().to_uppercase());
    let a = store_on(&lower).await;
    let b = store_on(&upper).await;
    a.set(&kvkey!["k"], json!("a"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(b.get(&kvkey!["k"]).await.unwrap(), None);
    assert_eq!(count_rows(upper.name()).await, 0);
    assert_eq!(count_rows(lower.name()).await, 1);
}

#[tokio::test]
async fn from_an_existing_pool() {
    if support::postgres().is_none() {
        return;
    }
    use kvtower::stores::postgres::deadpool_postgres::{Manager, Pool};
    let table = TestTable::new();
    let config: tokio_postgres::Config = postgres_url().parse().unwrap();
    let pool = Pool::builder(Manager::new(config, NoTls))
        .max_size(2)
        .build()
        .unwrap();
    let store = PostgresKvStore::builder()
        .table(table.name())
        .from_pool(pool.clone())
        .await
        .unwrap();
    store
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["a"]).await.unwrap(), Some(json!(1)));
    assert!(pool.status().size >= 1, "the store uses the given pool");
}

/// Both stores in one database, each with a TTL'd entry and a sweep.
async fn two_tables_work(first: &TestTable, second: &TestTable) {
    let a = store_on(first).await;
    let b = store_on(second).await;
    let ttl = SetOptions::ttl(Duration::from_secs(600));
    a.set(&kvkey!["k"], json!("a"), ttl).await.unwrap();
    b.set(&kvkey!["k"], json!("b"), ttl).await.unwrap();
    assert_eq!(a.get(&kvkey!["k"]).await.unwrap(), Some(json!("a")));
    assert_eq!(b.get(&kvkey!["k"]).await.unwrap(), Some(json!("b")));
    assert_eq!(a.sweep_expired().await.unwrap(), 0);
    assert_eq!(b.sweep_expired().await.unwrap(), 0);
    assert!(count_rows(first.name()).await >= 1);
    assert_eq!(count_rows(second.name()).await, 1);
}

#[tokio::test]
async fn a_table_may_be_named_like_another_tables_expiry_index() {
    if support::postgres().is_none() {
        return;
    }
    // The expiry index of `x` used to be called `x_expires_at`, also a
    // valid table name: whichever store came second failed or silently
    // ran without its index.
    let x = TestTable::new();
    let x_expires = TestTable(format!("{}_expires_at", x.name()));
    two_tables_work(&x, &x_expires).await;
    let y = TestTable::new();
    let y_expires = TestTable(format!("{}_expires_at", y.name()));
    two_tables_work(&y_expires, &y).await;
}

#[tokio::test]
async fn a_table_from_an_older_version_gives_up_its_index_name() {
    if support::postgres().is_none() {
        return;
    }
    let x = TestTable::new();
    let t = x.name();
    // The layout the previous version created, with one row.
    raw_client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE \"{t}\" (key bytea PRIMARY KEY, value json NOT NULL, expires_at bigint);\
             CREATE INDEX \"{t}_expires_at\" ON \"{t}\" (expires_at) WHERE expires_at IS NOT NULL;\
             INSERT INTO \"{t}\" (key, value) VALUES ('\\x6b6570740001'::bytea, '1');"
        ))
        .await
        .unwrap();
    let x_expires = TestTable(format!("{t}_expires_at"));
    two_tables_work(&x, &x_expires).await;
    let store = store_on(&x).await;
    assert_eq!(store.get(&kvkey!["kept"]).await.unwrap(), Some(json!(1)));
    let indexes: Vec<String> = raw_client()
        .await
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = $1",
            &[&t],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(indexes.contains(&format!("{t}.expires_at")), "{indexes:?}");
    assert!(!indexes.contains(&format!("{t}_expires_at")), "{indexes:?}");
}

#[tokio::test]
async fn a_table_name_of_63_bytes_gets_its_expiry_index() {
    if support::postgres().is_none() {
        return;
    }
    // `{63 bytes}_expires_at` was truncated by the server to the table's
    // own name, so `CREATE INDEX IF NOT EXISTS` skipped it silently.
    let base = TestTable::new();
    let long = TestTable(format!("{:x<63}", base.name()));
    let store = store_on(&long).await;
    store
        .set(
            &kvkey!["k"],
            json!(1),
            SetOptions::ttl(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let n: i64 = raw_client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%expires_at IS NOT NULL%'",
            &[&long.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
