//! tower's own middleware around Redis: a timeout per attempt and retries of
//! retryable errors between a moka front tier and `RedisKvStore`.
//!
//! ```sh
//! cargo run --example redis_middleware --features redis
//! ```
//!
//! `KVTOWER_REDIS_URL` (default `redis://127.0.0.1:6379`) picks the server.
//! The stack is the one `stack` builds; `tests/redis_stack.rs` runs the
//! conformance suite through it.

use std::time::Duration;

use kvtower::layers::CacheLayer;
use kvtower::service::{KvServiceLayer, RetryPolicy, ServiceStoreLayer};
use kvtower::{kvkey, KvStore, KvStoreExt, MemoryKvStore, RedisKvStore, SetOptions};
use serde_json::json;
use tower::ServiceBuilder;

/// A front tier, then (for backend calls only) a retry of retryable errors,
/// up to 3 calls 10 ms apart and doubling, each call bounded by 200 ms.
pub fn stack(redis: RedisKvStore) -> impl KvStore {
    ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryKvStore::new())) // front hits never wait on what is below
        .layer(ServiceStoreLayer) // back from a tower::Service to a KvStore
        .retry(RetryPolicy::new(3, Duration::from_millis(10)))
        .timeout(Duration::from_millis(200)) // per attempt; elapsed is ErrorKind::Timeout
        .layer(KvServiceLayer) // the store as a tower::Service<KvRequest>
        .service(redis)
}

/// Connects, runs a few operations through the stack and cleans up.
pub async fn run(url: &str, namespace: &str) -> kvtower::Result<()> {
    let redis = RedisKvStore::builder()
        .namespace(namespace)
        .timeout(Duration::from_secs(1))
        .connect(url)
        .await?;
    let store = stack(redis);
    let key = kvkey!["visits", "home"];
    store.set(&key, json!(0), SetOptions::default()).await?;
    for _ in 0..10 {
        let current = store.get(&key).await?;
        let next = json!(current.as_ref().and_then(|v| v.as_u64()).unwrap_or(0) + 1);
        if !store
            .cas(&key, current.as_ref(), Some(next), SetOptions::default())
            .await?
        {
            println!("lost a race, retrying later");
        }
    }
    let visits: Option<u64> = store.get_as(&key).await?;
    println!("visits: {visits:?}");
    store.delete(&key).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> kvtower::Result<()> {
    let url =
        std::env::var("KVTOWER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    run(&url, "kvtower-example").await
}
