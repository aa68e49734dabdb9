//! Issue 12 item 14 on the real server (`KVTOWER_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): every `PostgresKvStore`
//! operation is bounded by its timeout. A write to a row another session
//! holds locked, and a TCP connection that stops forwarding, give retryable
//! `Timeout` errors instead of hanging, and the store (its pool of one
//! connection included) keeps working afterwards. Item 8: keys too long for
//! the primary-key index are refused before anything is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvtower::stores::postgres::deadpool_postgres::tokio_postgres::{self, NoTls};
use kvtower::stores::Layout;
use kvtower::{kvkey, ErrorKind, KvStore, KvStoreExt, PostgresKvStore, SetOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;

use support::{postgres_url, TestTable};

/// How long a call may take before the test calls it hung: far above the
/// store's timeout, so only a missing bound trips it.
const HUNG: Duration = Duration::from_secs(20);

const TIMEOUT: Duration = Duration::from_millis(500);

async fn raw_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&postgres_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// A store with the short timeout and a pool of one connection: if a
/// timed-out connection went back to the pool, the next call would queue
/// behind its statement.
async fn store(url: &str, table: &TestTable, layout: Layout) -> PostgresKvStore {
    PostgresKvStore::builder()
        .table(table.name())
        .layout(layout)
        .max_connections(1)
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .connect(url)
        .await
        .unwrap()
}

async fn times_out<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = kvtower::Result<T>>,
) {
    let result = tokio::time::timeout(HUNG, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"));
    let err = result.expect_err(what);
    assert_eq!(err.kind(), ErrorKind::Timeout, "{what}: {err}");
    assert!(err.is_retryable(), "{what}: {err}");
}

/// Statements of other sessions still waiting for a lock on `table`.
async fn lock_waiters(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' \
             AND pid <> pg_backend_pid()",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

async fn a_write_to_a_locked_row_times_out(layout: Layout) {
    let table = TestTable::new();
    let store = store(&postgres_url(), &table, layout).await;
    let key = kvkey!["locked"];
    store
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();

    // Another session locks every row of the table, and keeps it locked.
    // (The server ends it if it outlives a failing test: the table's guard
    // could not drop the table otherwise.)
    let locker = raw_client().await;
    locker
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = '20s'; \
             BEGIN; SELECT 1 FROM \"{}\" FOR UPDATE",
            table.name()
        ))
        .await
        .unwrap();

    times_out("set", store.set(&key, json!(2), SetOptions::default())).await;
    times_out(
        "cas",
        store.cas(&key, Some(&json!(1)), Some(json!(3)), SetOptions::default()),
    )
    .await;
    times_out("delete", store.delete(&key)).await;

    // The store works on (a read takes no row lock), on the one pooled
    // connection there is.
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(1)));
    store
        .set(&kvkey!["other"], json!("free"), SetOptions::default())
        .await
        .unwrap();

    // The interrupted statements were cancelled on the server: none waits
    // for the lock any more, so none lands once it is released.
    let observer = raw_client().await;
    let deadline = tokio::time::Instant::now() + HUNG;
    while lock_waiters(&observer, table.name()).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a timed-out statement still waits on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(1)));
    assert!(store
        .cas(&key, Some(&json!(1)), Some(json!(4)), SetOptions::default())
        .await
        .unwrap());
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(4)));
}

#[tokio::test]
async fn a_write_to_a_row_locked_by_another_session_times_out() {
    if support::postgres().is_none() {
        return;
    }
    a_write_to_a_locked_row_times_out(Layout::Kvtower).await;
}

#[tokio::test]
async fn a_write_to_a_locked_row_times_out_in_the_fedify_layout() {
    if support::postgres().is_none() {
        return;
    }
    a_write_to_a_locked_row_times_out(Layout::Fedify).await;
}

/// A TCP proxy to the Postgres server on a free loopback port that forwards
/// until [`Proxy::freeze`], then forwards nothing more, in either direction,
/// on any connection (the connections stay open: a frozen network, not a
/// closed one).
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    async fn start() -> Self {
        let upstream: tokio_postgres::Config = postgres_url().parse().unwrap();
        let target = match &upstream.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => {
                format!(
                    "{host}:{}",
                    upstream.get_ports().first().copied().unwrap_or(5432)
                )
            }
            #[allow(unreachable_patterns)]
            other => panic!("the proxy needs a TCP server, not {other:?}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, flag.clone()));
                tokio::spawn(forward(server_read, client_write, flag.clone()));
            }
        });
        Self { port, frozen }
    }

    /// The server's URL through this proxy, in the key–value form.
    fn url(&self) -> String {
        let upstream: tokio_postgres::Config = postgres_url().parse().unwrap();
        let mut url = format!("host=127.0.0.1 port={}", self.port);
        if let Some(user) = upstream.get_user() {
            url.push_str(&format!(" user={user}"));
        }
        if let Some(db) = upstream.get_dbname() {
            url.push_str(&format!(" dbname={db}"));
        }
        if let Some(password) = upstream.get_password() {
            url.push_str(&format!(
                " password='{}'",
                String::from_utf8_lossy(password)
                    .replace('\\', "\\\\")
                    .replace('\'', "\\'")
            ));
        }
        url
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Frozen: hold what came in (nothing reaches the other side) until
        // thawed.
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_frozen_connection_gives_a_timeout_not_a_hang() {
    if support::postgres().is_none() {
        return;
    }
    let table = TestTable::new();
    let proxy = Proxy::start().await;
    let store = store(&proxy.url(), &table, Layout::Kvtower).await;
    let key = kvkey!["frozen"];
    store
        .set(&key, json!("before"), SetOptions::default())
        .await
        .unwrap();

    proxy.freeze(true);
    times_out("get", store.get(&key)).await;
    times_out("set", store.set(&key, json!("x"), SetOptions::default())).await;
    times_out("list", async {
        use futures::StreamExt;
        let items: Vec<_> = store.list(None).collect().await;
        assert_eq!(items.len(), 1, "one error item, then the end");
        items.into_iter().next().unwrap().map(|_| ())
    })
    .await;
    times_out("get_many", store.get_many(std::slice::from_ref(&key))).await;

    // The network is back: the store answers again, on a new connection.
    proxy.freeze(false);
    let deadline = tokio::time::Instant::now() + HUNG;
    let value = loop {
        match store.get(&key).await {
            Ok(value) => break value,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                assert!(tokio::time::Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // The frozen `set` was never delivered, or was delivered whole.
    assert!(
        value == Some(json!("before")) || value == Some(json!("x")),
        "{value:?}"
    );
}

#[tokio::test]
async fn zero_timeouts_are_config_errors() {
    if support::postgres().is_none() {
        return;
    }
    for builder in [
        PostgresKvStore::builder().timeout(Duration::ZERO),
        PostgresKvStore::builder().connect_timeout(Duration::ZERO),
    ] {
        let err = builder.connect(&postgres_url()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("more than zero"), "{err}");
    }
}

/// A key part of `len` bytes that does not compress (so the index entry has
/// its full size).
fn incompressible(len: usize) -> String {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect()
}

/// Issue 12 item 8: a key too long for the primary-key index is refused with
/// `InvalidKey` naming the limit before anything is sent, in every write;
/// reads, deletes and listings of it find nothing; nothing stored changes.
async fn long_keys(layout: Layout, limit: usize, longest_part: usize) {
    let table = TestTable::new();
    let store = PostgresKvStore::builder()
        .table(table.name())
        .layout(layout)
        .connect(&postgres_url())
        .await
        .unwrap();
    let kept = kvkey!["kept"];
    store
        .set(&kept, json!(1), SetOptions::default())
        .await
        .unwrap();
    let long = kvkey!["k", "x".repeat(10 * 1024)];
    let refused = |what: &str, result: kvtower::Result<()>| {
        let err = result.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{what}: {err}");
        assert!(
            err.to_string().contains(&format!("at most {limit}")),
            "{what}: {err}"
        );
    };
    refused(
        "set",
        store.set(&long, json!(2), SetOptions::default()).await,
    );
    refused(
        "set_many",
        store
            .set_many(
                vec![(kept.clone(), json!(2)), (long.clone(), json!(2))],
                SetOptions::default(),
            )
            .await,
    );
    refused(
        "cas insert",
        store
            .cas(&long, None, Some(json!(2)), SetOptions::default())
            .await
            .map(|_| ()),
    );
    refused(
        "cas update",
        store
            .cas(
                &long,
                Some(&json!(1)),
                Some(json!(2)),
                SetOptions::default(),
            )
            .await
            .map(|_| ()),
    );
    assert_eq!(store.get(&long).await.unwrap(), None);
    assert_eq!(
        store.get_many(&[kept.clone(), long.clone()]).await.unwrap(),
        vec![Some(json!(1)), None]
    );
    store.delete(&long).await.unwrap();
    store
        .delete_many(std::slice::from_ref(&long))
        .await
        .unwrap();
    assert!(store
        .cas(&long, None, None, SetOptions::default())
        .await
        .unwrap());
    assert!(store.list_all(Some(long.clone())).await.unwrap().is_empty());
    let all = store.list_all(None).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].value, json!(1), "the refused batch wrote nothing");

    // The longest key that fits works, whatever its content.
    let longest = kvkey![incompressible(longest_part)];
    store
        .set(&longest, json!("fits"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&longest).await.unwrap(), Some(json!("fits")));
    let one_more = kvkey![incompressible(longest_part + 1)];
    refused(
        "one byte over",
        store.set(&one_more, json!(1), SetOptions::default()).await,
    );
}

#[tokio::test]
async fn keys_too_long_for_the_index_are_refused_before_sending() {
    if support::postgres().is_none() {
        return;
    }
    // One part: its UTF-8 plus 2 bytes of terminator.
    long_keys(Layout::Kvtower, 2692, 2690).await;
}

#[tokio::test]
async fn keys_too_long_for_the_index_are_refused_in_the_fedify_layout() {
    if support::postgres().is_none() {
        return;
    }
    // One part: 24 bytes of array header, 4 of element header.
    long_keys(Layout::Fedify, 2696, 2668).await;
}
