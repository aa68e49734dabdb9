//! The fallback of start-or-skip (tests/support/servers.rs) on this machine:
//! private Redis and PostgreSQL servers start, serve the stores, and are
//! stopped by their watchdog once the process that started them ends, even
//! when it is killed. Under `KVTOWER_REQUIRE_SERVERS=1` a missing binary is
//! a failure.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvtower::{kvkey, KvStore, SetOptions};
use serde_json::json;

/// In the child run: start both private servers, print their ports, then
/// wait to be killed.
const CHILD: &str = "KVTOWER_PRIVATE_SERVERS_CHILD";

fn port_of(url: &str) -> u16 {
    let authority = url.split('/').nth(2).unwrap();
    authority.rsplit(':').next().unwrap().parse().unwrap()
}

fn answers(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Starts what the machine has binaries for; `None` (after the skip) when
/// it has none of them.
fn start_both() -> Option<(support::Server, Option<support::Server>)> {
    if !support::can_start_redis() {
        return None;
    }
    let redis = support::start_private_redis().unwrap();
    let postgres = match support::start_private_postgres() {
        Ok(server) => Some(server),
        Err(why) if std::env::var("KVTOWER_REQUIRE_SERVERS").as_deref() == Ok("1") => {
            panic!("a private PostgreSQL must start under KVTOWER_REQUIRE_SERVERS=1: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED the private PostgreSQL: {why}");
            None
        }
    };
    Some((redis, postgres))
}

#[tokio::test]
async fn private_servers_serve_the_stores() {
    let Some((redis, postgres)) = start_both() else {
        return;
    };
    assert!(redis.is_private());
    let store = kvtower::RedisKvStore::builder()
        .namespace(support::unique_namespace())
        .connect(redis.url())
        .await
        .unwrap();
    let key = kvkey!["private", "redis"];
    store
        .set(&key, json!({"on": "redis"}), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(json!({"on": "redis"})));

    let Some(postgres) = postgres else {
        return;
    };
    let store = kvtower::PostgresKvStore::builder()
        .table("kv_private")
        .connect(postgres.url())
        .await
        .unwrap();
    let key = kvkey!["private", "postgres"];
    store
        .set(&key, json!(1.5), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(json!(1.5)));
}

#[test]
fn private_servers_stop_when_their_process_is_killed() {
    if std::env::var_os(CHILD).is_some() {
        let Some((redis, postgres)) = start_both() else {
            return;
        };
        println!("port {}", port_of(redis.url()));
        if let Some(postgres) = postgres {
            println!("port {}", port_of(postgres.url()));
        }
        println!("ready");
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    if !support::can_start_redis() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "private_servers_stop_when_their_process_is_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ports = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(port) = line.strip_prefix("port ") {
            ports.push(port.trim().parse::<u16>().unwrap());
        }
        if line.trim() == "ready" {
            break;
        }
    }
    assert!(!ports.is_empty(), "the child started no server");
    for &port in &ports {
        assert!(
            answers(port),
            "port {port} should answer while the child runs"
        );
    }
    // SIGKILL: no destructor runs; only the watchdog can stop the servers.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ports.iter().any(|&port| answers(port)) {
        assert!(
            Instant::now() < deadline,
            "a private server outlived its process: {ports:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
