//! A cached store with metrics, served as Prometheus text on `/metrics`,
//! with the hit ratio of each cache tier.
//!
//! ```sh
//! cargo run --example metrics            # serves http://127.0.0.1:9898/metrics
//! curl -s 127.0.0.1:9898/metrics | grep kvtower_cache_requests_total
//! ```
//!
//! `KVTOWER_METRICS_ADDR` overrides the address. The exporter only renders
//! the text; the few lines of HTTP are served here on a Tokio `TcpListener`,
//! so no HTTP framework is needed. tests/layers_http.rs scrapes it.

use std::time::Duration;

use kvtower::layers::{CacheHandle, CacheLayer, MetricsLayer};
use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

/// Installs the Prometheus recorder (before any layer is built: layers
/// register their metric handles when built).
pub fn install_recorder() -> PrometheusHandle {
    PrometheusBuilder::new()
        .install_recorder()
        .expect("no other metrics recorder is installed")
}

/// The demo: a stack, the L1's invalidation handle, and the backing store.
pub struct Demo<S> {
    /// Metrics over two cache tiers (an L1 and an L2 memory store) over the
    /// backing store.
    pub store: S,
    /// Invalidates the L1 from outside.
    pub l1: CacheHandle,
    /// The backing store (Redis in production: swap it here).
    pub backing: MemoryKvStore,
}

/// Builds the [`Demo`] stack.
pub fn stack() -> Demo<impl KvStore> {
    let backing = MemoryKvStore::new();
    let l1 = CacheLayer::builder(MemoryKvStore::builder().max_entries(10_000).build())
        .name("l1")
        .build();
    let handle = l1.handle();
    let store = ServiceBuilder::new()
        .layer(MetricsLayer::new("users"))
        .layer(l1)
        .layer(CacheLayer::builder(MemoryKvStore::new()).name("l2").build())
        .service(backing.clone());
    Demo {
        store,
        l1: handle,
        backing,
    }
}

/// Some reads and writes, so every tier has hits and misses: some keys are
/// written around the stack (as by another service), and the L1 is emptied
/// after the writes (as after a restart or an invalidation from another
/// process), so its first reads are served by the warm L2.
pub async fn traffic<S: KvStore>(demo: &Demo<S>) -> kvtower::Result<()> {
    let store = &demo.store;
    for i in 0..50 {
        let key = kvkey!["user", i.to_string()];
        store
            .set(
                &key,
                json!({ "id": i }),
                SetOptions::ttl(Duration::from_secs(600)),
            )
            .await?;
    }
    for i in 50..60 {
        let key = kvkey!["user", i.to_string()];
        demo.backing
            .set(&key, json!({ "id": i }), SetOptions::default())
            .await?;
    }
    demo.l1.clear().await?;
    for round in 0..4 {
        for i in 0..100 {
            // Half the keys exist; the first round fills the tiers.
            let _ = store.get(&kvkey!["user", (i + round).to_string()]).await?;
        }
    }
    Ok(())
}

/// The hit ratio of each `(cache, tier)` in Prometheus text.
pub fn hit_ratios(text: &str) -> Vec<(String, String, f64)> {
    let mut counts: std::collections::BTreeMap<(String, String), (f64, f64)> = Default::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("kvtower_cache_requests_total{"))
    {
        let (labels, value) = match line.rsplit_once(' ') {
            Some(split) => split,
            None => continue,
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        let entry = counts.entry((label("cache"), label("tier"))).or_default();
        match label("outcome").as_str() {
            "hit" => entry.0 += value,
            _ => entry.1 += value,
        }
    }
    counts
        .into_iter()
        .map(|((cache, tier), (hit, miss))| (cache, tier, hit / (hit + miss).max(1.0)))
        .collect()
}

/// Serves `GET /metrics` with the rendered text until the listener fails.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) -> std::io::Result<()> {
    loop {
        let (socket, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(socket, &handle).await {
                eprintln!("metrics connection failed: {e}");
            }
        });
    }
}

async fn respond(mut socket: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    // Read the request head (up to the blank line); only the path matters.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = String::from_utf8_lossy(&head);
    let (status, body) = match request_line.split_whitespace().take(2).collect::<Vec<_>>()[..] {
        ["GET", "/metrics"] => ("200 OK", handle.render()),
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

#[allow(dead_code)] // tests/layers_http.rs includes this file and calls the functions above
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = install_recorder();
    let demo = stack();
    traffic(&demo).await?;
    for (cache, tier, ratio) in hit_ratios(&handle.render()) {
        println!(
            "cache {cache}, tier {tier}: hit ratio {:.0}%",
            ratio * 100.0
        );
    }
    let addr =
        std::env::var("KVTOWER_METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9898".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("serving http://{addr}/metrics (Ctrl-C to stop)");
    serve(listener, handle).await?;
    Ok(())
}
