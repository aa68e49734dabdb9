//! Error context, store by store: a failing call's error names its
//! [`Operation`] (the enum, the same for every store) and its key, and the
//! error's chain (message, then each `source`) never repeats a text: the
//! message says what failed in a few words, the driver's error is the
//! source. For Postgres, the message names the server's reason.

use std::error::Error as _;

use kvtower::{kvkey, Error, ErrorKind, KvKey, KvStore, Operation, SetOptions};
use serde_json::{json, Value};

mod support;

/// The message, then the text of each source, outermost first.
fn chain(err: &Error) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

/// No link of the chain repeats the text of a later one (a message pasting
/// the driver's text that is also its source).
fn assert_no_repeats(err: &Error) {
    let links = chain(err);
    for (i, outer) in links.iter().enumerate() {
        for inner in &links[i + 1..] {
            assert!(
                !outer.contains(inner.as_str()),
                "the chain repeats {inner:?}: {links:#?}"
            );
        }
    }
}

/// The error names `operation` and `key`, and its chain repeats nothing.
fn assert_context(err: &Error, operation: Operation, key: Option<&KvKey>) {
    assert_eq!(err.operation(), Some(operation), "{err:?}");
    assert_eq!(err.key(), key, "{err:?}");
    assert_no_repeats(err);
}

/// A value one level deeper than every store accepts.
fn too_deep() -> Value {
    let mut value = json!(1);
    for _ in 0..=kvtower::value::MAX_DEPTH {
        value = json!([value]);
    }
    value
}

#[tokio::test]
async fn memory_names_the_operation_and_key() {
    let store = kvtower::MemoryKvStore::new();
    let key = kvkey!["deep"];
    let err = store
        .set(&key, too_deep(), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_context(&err, Operation::Set, Some(&key));
    let err = store
        .cas(&key, None, Some(too_deep()), SetOptions::default())
        .await
        .unwrap_err();
    assert_context(&err, Operation::Cas, Some(&key));
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    #[tokio::test]
    async fn a_foreign_value_names_the_operation_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let store = kvtower::SqliteKvStore::open(&path).await.unwrap();
        let key = kvkey!["user", "1"];
        store
            .set(&key, json!(1), SetOptions::default())
            .await
            .unwrap();
        // Another program writes something that is not JSON.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute("UPDATE kvtower SET v = '{not json'", [])
            .unwrap();
        drop(conn);

        let err = store.get(&key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert_context(&err, Operation::Get, Some(&key));
        let err = store.get_with_ttl(&key).await.unwrap_err();
        assert_context(&err, Operation::GetWithTtl, Some(&key));
        let err = store
            .get_many(std::slice::from_ref(&key))
            .await
            .unwrap_err();
        assert_context(&err, Operation::GetMany, Some(&key));
        let err = store
            .cas(&key, Some(&json!(1)), None, SetOptions::default())
            .await
            .unwrap_err();
        assert_context(&err, Operation::Cas, Some(&key));
    }

    #[tokio::test]
    async fn a_driver_error_is_the_source_not_the_message() {
        // A directory is no database file: SQLite cannot open it.
        let dir = tempfile::tempdir().unwrap();
        let err = kvtower::SqliteKvStore::open(dir.path()).await.unwrap_err();
        assert_context(&err, Operation::Connect, None);
        assert!(err.source().is_some(), "{err:?}");
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;

    #[tokio::test]
    async fn a_foreign_value_names_the_operation_and_key() {
        let Some(server) = support::redis() else {
            return;
        };
        let url = server.url().to_owned();
        let namespace = support::unique_namespace();
        let _guard = support::NamespaceGuard(namespace.clone());
        let store = kvtower::RedisKvStore::builder()
            .namespace(&namespace)
            .connect(&url)
            .await
            .unwrap();
        let key = kvkey!["user", "1"];
        store
            .set(&key, json!(1), SetOptions::default())
            .await
            .unwrap();
        // Another program overwrites the key with text that is not JSON.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{namespace}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        let _: () = redis::cmd("SET")
            .arg(&keys[0])
            .arg("{not json")
            .query_async(&mut conn)
            .await
            .unwrap();

        let err = store.get(&key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert_context(&err, Operation::Get, Some(&key));
        let err = store
            .get_many(std::slice::from_ref(&key))
            .await
            .unwrap_err();
        assert_context(&err, Operation::GetMany, Some(&key));
    }

    #[tokio::test]
    async fn an_unreachable_server_names_connect() {
        // Port 1 on loopback: nothing listens there.
        let err = kvtower::RedisKvStore::builder()
            .connect("redis://127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert_context(&err, Operation::Connect, None);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use kvtower::stores::postgres::deadpool_postgres::tokio_postgres::{self, NoTls};
    use kvtower::stores::postgres::deadpool_postgres::{Manager, Pool};

    #[tokio::test]
    async fn a_lock_timeout_names_the_reason_operation_and_key() {
        let Some(server) = support::postgres() else {
            return;
        };
        let url = server.url().to_owned();
        let table = support::TestTable::new();
        // The store's sessions give up on a row lock after 200 ms (a server
        // setting: this test waits for the server's error, not a clock).
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        config.options("-c lock_timeout=200");
        let pool = Pool::builder(Manager::new(config, NoTls)).build().unwrap();
        let store = kvtower::PostgresKvStore::builder()
            .table(table.name())
            .no_sweep()
            .from_pool(pool)
            .await
            .unwrap();
        let key = kvkey!["user", "1"];
        store
            .set(&key, json!(1), SetOptions::default())
            .await
            .unwrap();

        // A second session holds the row's lock.
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute(
                &format!("SELECT 1 FROM \"{}\" FOR UPDATE", table.name()),
                &[],
            )
            .await
            .unwrap();

        let err = store
            .set(&key, json!(2), SetOptions::default())
            .await
            .unwrap_err();
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert!(
            err.message().contains("lock not available (55P03)"),
            "{}",
            err.message()
        );
        assert_context(&err, Operation::Set, Some(&key));
        // The server's full text is in the chain, once.
        let links = chain(&err);
        assert!(
            links.iter().skip(1).any(|l| l.contains("lock timeout")),
            "{links:#?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_names_connect() {
        let err = kvtower::PostgresKvStore::connect("postgres://postgres@127.0.0.1:1/test")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_context(&err, Operation::Connect, None);
    }
}

// rusqlite (feature `sqlite`) writes the foreign row.
#[cfg(all(feature = "denokv", feature = "sqlite"))]
mod denokv {
    use super::*;

    #[tokio::test]
    async fn get_many_names_get_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite3");
        let store = kvtower::DenoKvStore::open(&path).unwrap();
        let key = kvkey!["user", "1"];
        store
            .set(&key, json!(1), SetOptions::default())
            .await
            .unwrap();
        // Another program writes a value in an encoding kvtower cannot read.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute("UPDATE kv SET v_encoding = 99", []).unwrap();
        drop(conn);

        let err = store.get(&key).await.unwrap_err();
        assert_context(&err, Operation::Get, Some(&key));
        let err = store
            .get_many(std::slice::from_ref(&key))
            .await
            .unwrap_err();
        // The batch read fails as a whole: no one key to name.
        assert_context(&err, Operation::GetMany, None);
        let err = store
            .set(&key, too_deep(), SetOptions::default())
            .await
            .unwrap_err();
        assert_context(&err, Operation::Set, Some(&key));
        let err = store
            .set_many(vec![(key.clone(), too_deep())], SetOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.operation(), Some(Operation::SetMany));
    }
}
