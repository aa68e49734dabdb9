//! The quickstart: a store, a typed value, a TTL, compare-and-swap and a listing,
//! on the embedded persistent default, SQLite (no server needed).
//!
//! `cargo run --example quickstart`

use std::time::Duration;

use kvtower::{kvkey, KvStore, KvStoreExt, SetOptions, SqliteKvStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct User {
    name: String,
    visits: u64,
}

#[tokio::main]
async fn main() -> kvtower::Result<()> {
    // A database file in the OS temp dir; the data survives restarts, so a
    // second run starts from what the first one left (and still works).
    let path = std::env::temp_dir().join("kvtower-quickstart.db");
    let store = SqliteKvStore::open(&path).await?;
    println!("database: {}", path.display());

    // A counter kept across runs, incremented with compare-and-swap.
    let runs = kvkey!["quickstart", "runs"];
    loop {
        let current = store.get(&runs).await?;
        let next = current.as_ref().and_then(|v| v.as_u64()).unwrap_or(0) + 1;
        let swapped = store
            .cas(
                &runs,
                current.as_ref(),
                Some(json!(next)),
                SetOptions::default(),
            )
            .await?;
        if swapped {
            println!("run number {next} on this database");
            break;
        }
    }

    let key = kvkey!["user", "42"];
    store
        .set_as(
            &key,
            &User {
                name: "Ada".into(),
                visits: 0,
            },
            SetOptions::default(),
        )
        .await?;
    let user: Option<User> = store.get_as(&key).await?;
    println!("read back: {user:?}");

    // Compare-and-swap: only one writer wins a race.
    let current = store.get(&key).await?;
    let swapped = store
        .cas(
            &key,
            current.as_ref(),
            Some(json!({"name": "Ada", "visits": 1})),
            SetOptions::default(),
        )
        .await?;
    println!("cas swapped: {swapped}");

    // A session that expires.
    store
        .set(
            &kvkey!["session", "abc"],
            json!("token"),
            SetOptions::ttl(Duration::from_millis(100)),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "expired session: {:?}",
        store.get(&kvkey!["session", "abc"]).await?
    );

    for entry in store.list_all(Some(kvkey!["user"])).await? {
        println!("{} = {}", entry.key, entry.value);
    }
    Ok(())
}
