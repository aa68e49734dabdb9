//! One node of a multi-process cache: a moka front tier over Redis, kept
//! coherent with the other nodes by the invalidation bus. Driven over stdin,
//! one command per line, so a test (or you, in two terminals) can run several
//! nodes and watch a write on one reach the others:
//!
//! ```text
//! set <key> <json>   ->  ok
//! get <key>          ->  value <json or null>
//! ```
//!
//! `cargo run --example coherence_node --features redis` (environment:
//! `KVTOWER_REDIS_URL`, default `redis://127.0.0.1:6379`; `NODE_NAMESPACE`,
//! default `coherence-demo`).

use std::io::{BufRead, Write};
use std::time::Duration;

use kvtower::invalidation::RedisInvalidationBus;
use kvtower::layers::CacheLayer;
use kvtower::{KvKey, KvStore, MemoryKvStore, RedisKvStore, SetOptions};
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("KVTOWER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = std::env::var("NODE_NAMESPACE").unwrap_or_else(|_| "coherence-demo".into());
    let bus = RedisInvalidationBus::connect(&url, format!("{namespace}:invalidate")).await?;
    let store = ServiceBuilder::new()
        .layer(
            CacheLayer::builder(MemoryKvStore::new())
                .front_max_ttl(Duration::from_secs(300))
                .invalidation_bus(bus)
                .build(),
        )
        .service(
            RedisKvStore::builder()
                .namespace(namespace)
                .connect(&url)
                .await?,
        );

    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut line = String::new();
    while stdin.lock().read_line(&mut line)? > 0 {
        let mut words = line.trim_end().splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("get"), Some(key), None) => {
                let value = store.get(&KvKey::new([key])?).await?;
                format!("value {}", value.unwrap_or(serde_json::Value::Null))
            }
            (Some("set"), Some(key), Some(json)) => {
                let value = serde_json::from_str(json)?;
                store
                    .set(&KvKey::new([key])?, value, SetOptions::default())
                    .await?;
                "ok".to_owned()
            }
            _ => format!("error: unknown command {:?}", line.trim_end()),
        };
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
        line.clear();
    }
    Ok(())
}
