//! RedisKvStore against a local Redis.
//!
//! `cargo run --example redis --features redis` (Redis at `KVTOWER_REDIS_URL`,
//! default `redis://127.0.0.1:6379`; keys under the namespace
//! `kvtower-example`, removed at the end).

use std::time::Duration;

use futures::TryStreamExt;
use kvtower::{kvkey, KvStore, KvStoreExt, RedisKvStore, SetOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> kvtower::Result<()> {
    let url =
        std::env::var("KVTOWER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = RedisKvStore::builder()
        .namespace("kvtower-example")
        .timeout(Duration::from_millis(500))
        .connect(&url)
        .await?;
    println!("connected: {store:?}");

    let ada = kvkey!["user", "42"];
    store
        .set(
            &ada,
            json!({"name": "Ada"}),
            SetOptions::ttl(Duration::from_secs(60)),
        )
        .await?;
    println!(
        "get {ada} -> {:?}   (redis-cli GET '{}')",
        store.get(&ada).await?,
        store.redis_key(&ada)
    );

    // Compare-and-swap with structural JSON equality.
    let swapped = store
        .cas(
            &ada,
            Some(&json!({"name": "Ada"})),
            Some(json!({"name": "Ada", "visits": 1})),
            SetOptions::default(),
        )
        .await?;
    println!("cas -> {swapped}, now {:?}", store.get(&ada).await?);

    // Batches: one MGET, one pipeline.
    let keys: Vec<_> = (0..5).map(|i| kvkey!["user", i.to_string()]).collect();
    store
        .set_many(
            keys.iter()
                .map(|k| (k.clone(), json!({"id": k.parts()[1]})))
                .collect(),
            SetOptions::default(),
        )
        .await?;
    println!("get_many -> {:?}", store.get_many(&keys).await?);

    // A streamed listing by part-wise prefix.
    let mut listing = store.list(Some(kvkey!["user"]));
    let mut n = 0;
    while let Some(entry) = listing.try_next().await? {
        n += 1;
        println!("  listed {} = {}", entry.key, entry.value);
    }
    println!("{n} entries under [\"user\"]");

    let all: Vec<_> = store
        .list_all(None)
        .await?
        .into_iter()
        .map(|e| e.key)
        .collect();
    store.delete_many(&all).await?;
    println!("cleaned up {} keys", all.len());
    Ok(())
}
