//! One node of a fleet sharing a Redis through `CacheAside`: used by
//! `tests/aside.rs` to show that processes sharing one Redis run one loader
//! per key between them. Driven over stdin, one command per line:
//!
//! ```text
//! load <key> <n>   ->  loading          (printed when this node's loader starts)
//!                  ->  done <loads> <value>   (after n concurrent get_or_set calls)
//! ```
//!
//! The loader sleeps `LOADER_MS` (default 300) and returns this node's id
//! (`NODE_ID`). Environment: `KVTOWER_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), `NODE_NAMESPACE` (default `aside-demo`),
//! `LEASE_MS` (default 30000).
//!
//! `cargo run --example aside_node --features redis`

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvtower::aside::CacheAside;
use kvtower::layers::CacheLayer;
use kvtower::{KvKey, MemoryKvStore, RedisKvStore};
use tower::ServiceBuilder;

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("KVTOWER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = std::env::var("NODE_NAMESPACE").unwrap_or_else(|_| "aside-demo".into());
    let id = std::env::var("NODE_ID").unwrap_or_else(|_| "node".into());
    let loader_time = env_ms("LOADER_MS", 300);
    let store = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryKvStore::new()))
        .service(
            RedisKvStore::builder()
                .namespace(namespace)
                .connect(&url)
                .await?,
        );
    let aside = CacheAside::builder(store)
        .lease_ttl(env_ms("LEASE_MS", 30_000))
        .lease_poll_interval(Duration::from_millis(20))
        .build()?;
    let loads = Arc::new(AtomicUsize::new(0));

    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.lock().read_line(&mut line)? > 0 {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["load", key, n] => {
                let key = KvKey::new([*key])?;
                let n: usize = n.parse()?;
                let calls = (0..n).map(|_| {
                    let (aside, key, loads, id) =
                        (aside.clone(), key.clone(), loads.clone(), id.clone());
                    tokio::spawn(async move {
                        aside
                            .get_or_set(&key, aside.options(), move || async move {
                                loads.fetch_add(1, Ordering::SeqCst);
                                println!("loading");
                                let _ = std::io::stdout().flush();
                                tokio::time::sleep(loader_time).await;
                                Ok::<_, std::io::Error>(serde_json::Value::String(id))
                            })
                            .await
                    })
                });
                let mut value = serde_json::Value::Null;
                for call in futures::future::join_all(calls.collect::<Vec<_>>()).await {
                    value = call??;
                }
                println!("done {} {value}", loads.load(Ordering::SeqCst));
            }
            _ => println!("error: unknown command {:?}", line.trim_end()),
        }
        std::io::stdout().flush()?;
        line.clear();
    }
    Ok(())
}
