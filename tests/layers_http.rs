//! Scrapes examples/metrics.rs's `/metrics` over HTTP: the example's own
//! server code, on an ephemeral port, with the Prometheus recorder installed
//! for this test binary.

#[path = "../examples/metrics.rs"]
mod example;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_are_scraped_over_http_with_hit_ratios_per_tier() {
    let handle = example::install_recorder();
    let demo = example::stack();
    example::traffic(&demo).await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(example::serve(listener, handle));

    let response = http_get(addr, "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    assert!(
        body.contains(r#"kvtower_operations_total{store="users",operation="get",outcome="hit"}"#),
        "{body}"
    );
    assert!(
        body.contains("kvtower_operation_duration_seconds"),
        "{body}"
    );

    // Every tier of both caches, with a ratio strictly between 0 and 1
    // (the traffic makes both hits and misses in each).
    let ratios = example::hit_ratios(body);
    let tiers: Vec<(&str, &str)> = ratios
        .iter()
        .map(|(c, t, _)| (c.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        tiers,
        [
            ("l1", "front"),
            ("l1", "inner"),
            ("l2", "front"),
            ("l2", "inner")
        ],
        "{body}"
    );
    for (cache, tier, ratio) in &ratios {
        assert!(
            *ratio > 0.0 && *ratio < 1.0,
            "{cache}/{tier}: {ratio}\n{body}"
        );
    }

    assert!(http_get(addr, "/other").await.starts_with("HTTP/1.1 404"));
    server.abort();
}
