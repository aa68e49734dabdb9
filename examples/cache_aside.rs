//! Cache-aside with fail-safe through a Redis outage.
//!
//! Starts its own `redis-server` on a free loopback port, caches a value
//! loaded from a "database" with `CacheAside::get_or_set`, then kills Redis
//! *and* the database: the last good value is still served (stale, by
//! fail-safe), fast, because the front tier holds it and the circuit breaker
//! stops waiting on the dead Redis.
//!
//! `cargo run --example cache_aside --features redis` (needs `redis-server`
//! on the `PATH`).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtower::aside::{CacheAside, EntryOptions};
use kvtower::layers::{CacheLayer, CircuitBreakerLayer};
use kvtower::{kvkey, MemoryKvStore, RedisKvStore};
use serde_json::{json, Value};
use tower::ServiceBuilder;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A private `redis-server`, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start() -> Result<Self, BoxError> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("kvtower-cache-aside-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        let redis = Self { child, port, dir };
        let start = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the scenario; returns what each step served.
pub async fn run() -> Result<Vec<(String, Value, Duration)>, BoxError> {
    let mut redis = Redis::start()?;
    let store = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryKvStore::new()))
        // Next to Redis: once it is known dead, misses fail in microseconds.
        .layer(
            CircuitBreakerLayer::builder("redis")
                .failure_threshold(2)
                .cooldown(Duration::from_secs(5))
                .build(),
        )
        .service(
            RedisKvStore::builder()
                .namespace("cache-aside-example")
                .timeout(Duration::from_millis(300))
                .connect(&redis.url())
                .await?,
        );
    let aside = CacheAside::builder(store)
        .default_options(
            EntryOptions::new()
                .ttl(Duration::from_millis(500))
                // Keep entries an hour past their TTL, to serve if loading fails;
                // retry the loader at most every 2 s meanwhile.
                .fail_safe(Duration::from_secs(3600), Duration::from_secs(2))
                .soft_timeout(Duration::from_millis(200)),
        )
        .build()?;

    // The "database": a price, until it goes down.
    let database_up = Arc::new(AtomicBool::new(true));
    let load_price = |up: Arc<AtomicBool>, price: u32| {
        move || async move {
            if up.load(Ordering::SeqCst) {
                Ok(json!({"price": price}))
            } else {
                Err(std::io::Error::other("database unreachable"))
            }
        }
    };
    let key = kvkey!["product", "42", "price"];
    let mut served = Vec::new();
    let mut step = |what: &str, value: Value, took: Duration| {
        println!("{what:<45} -> {value} in {took:?}");
        served.push((what.to_owned(), value, took));
    };

    let start = Instant::now();
    let value = aside
        .get_or_set(&key, aside.options(), load_price(database_up.clone(), 10))
        .await?;
    step("loaded from the database", value, start.elapsed());

    let start = Instant::now();
    let value = aside
        .get_or_set(&key, aside.options(), load_price(database_up.clone(), 11))
        .await?;
    step("cached (the loader is not called)", value, start.elapsed());

    // The outage: Redis and the database go down; the entry expires.
    redis.kill();
    database_up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;

    for attempt in 1..=3 {
        let start = Instant::now();
        let value = aside
            .get_or_set(&key, aside.options(), load_price(database_up.clone(), 12))
            .await?;
        step(
            &format!("outage, expired, attempt {attempt}: fail-safe"),
            value,
            start.elapsed(),
        );
    }
    Ok(served)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run().await?;
    Ok(())
}
