//! Test support, the one helper module of the tests (`mod support;`):
//!
//! * this file: private `redis-server` processes on free loopback ports,
//!   stopped (SIGKILL, by PID) and their files removed when the guard drops,
//!   also on panic;
//! * `servers.rs`: start-or-skip for tests that need Redis or PostgreSQL
//!   ([`redis`], [`postgres`], [`private_redis`], [`redis_cluster`]);
//! * `stores.rs`: store wrappers for the layer tests ([`Probe`], [`WithGuard`],
//!   [`full_stack`]);
//! * `postgres.rs`: [`TestTable`].
//!
//! A test that needs a server starts with
//! `if support::redis().is_none() { return; }` (or `postgres()`): the
//! machine's server, else a private one, else `SKIPPED <test>: <why>` (a
//! failure under `KVTOWER_REQUIRE_SERVERS=1`). [`redis_url`] and
//! [`postgres_url`] are then the URL of that server.
//!
//! In this file:
//!
//! * [`RedisServer::start`]: a standalone server (TCP, and a Unix socket at
//!   [`RedisServer::socket_path`]); [`RedisServer::kill`] and
//!   [`RedisServer::restart`] (same port, same directory) for fault tests;
//!   tests reach it through [`private_redis`], which skips without the binary;
//! * [`RedisCluster::start`]: a cluster of `n` masters and no replicas, made
//!   with `redis-cli --cluster create`, returned once `cluster_state:ok`
//!   (through [`redis_cluster`]);
//! * [`unique_namespace`]: a namespace no other test (or process) uses, for
//!   tests that share one Redis.
#![allow(dead_code)] // each test file uses a part

#[cfg(feature = "postgres")]
mod postgres;
mod servers;
mod stores;
#[cfg(feature = "postgres")]
#[allow(unused_imports)] // each test file uses a part
pub use postgres::TestTable;
#[allow(unused_imports)]
pub use servers::{
    can_start_redis, postgres, postgres_available, private_redis, redis, redis_available,
    redis_cluster, start_private_postgres, start_private_redis, Server,
};
#[allow(unused_imports)]
pub use stores::{full_stack, Control, Probe, WithGuard};

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The URL of [`redis`]'s server: call it after `redis()` said there is one
/// (without one, the machine's URL, so a test that forgot to ask fails).
pub fn redis_url() -> String {
    redis().map_or_else(machine_redis_url, |server| server.url().to_owned())
}

/// The URL of [`postgres`]'s server: call it after `postgres()` said there
/// is one.
pub fn postgres_url() -> String {
    postgres().map_or_else(servers::machine_postgres_url, |server| {
        server.url().to_owned()
    })
}

/// `KVTOWER_REDIS_URL`, default `redis://127.0.0.1:6379`.
fn machine_redis_url() -> String {
    std::env::var("KVTOWER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A namespace unique to this call, process and moment: `kvtower-test-…`.
pub fn unique_namespace() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "kvtower-test-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port that is free now, and whose cluster bus port (`+10000`)
/// is free too when `with_bus`.
fn free_port(with_bus: bool) -> u16 {
    for _ in 0..1_000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
        let port = listener.local_addr().expect("local addr").port();
        if !with_bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port found");
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvtower-{tag}-{}", unique_namespace()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `redis-server` child process on `127.0.0.1:<port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    cluster: bool,
    child: Option<Child>,
    /// Whether this guard owns `dir` (a cluster's servers share its dir).
    owns_dir: bool,
}

impl RedisServer {
    /// A standalone server on a free port, ready to answer.
    pub fn start() -> Self {
        let dir = temp_dir("redis");
        let mut server = Self {
            port: free_port(false),
            dir,
            cluster: false,
            child: None,
            owns_dir: true,
        };
        server.spawn();
        server
    }

    fn start_cluster_node(dir: &Path) -> Self {
        let port = free_port(true);
        let dir = dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut server = Self {
            port,
            dir,
            cluster: true,
            child: None,
            owns_dir: false,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let log = std::fs::File::create(self.dir.join(format!("redis-{port}.log")))
            .expect("create the log file");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::null());
        if !self.cluster {
            cmd.arg("--unixsocket").arg(self.socket_path());
        }
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]);
        }
        self.child = Some(cmd.spawn().expect("start redis-server (is it installed?)"));
        let port = self.port;
        wait_until(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
                    && redis_cli(port, &["PING"]).trim() == "PONG"
            },
        );
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The Unix socket a standalone server also listens on.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A Redis Cluster of masters only, each a [`RedisServer`]; all killed and
/// their files removed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    /// `masters` servers joined into a cluster covering every slot, ready.
    pub fn start(masters: usize) -> Self {
        let dir = temp_dir("cluster");
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| RedisServer::start_cluster_node(&dir))
            .collect();
        let cluster = Self { nodes, dir };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for node in &cluster.nodes {
            wait_until("cluster_state:ok", Duration::from_secs(30), || {
                node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear(); // kills every server
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes every key of `namespace` (a namespace without glob characters,
/// like those of [`unique_namespace`]) from the Redis at `url`: for guards
/// that clean up after tests on the shared Redis. Best effort, synchronous
/// (callable from `Drop`).
pub fn delete_namespace(url: &str, namespace: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let pattern = format!("{namespace}:*");
    let mut cursor = 0u64;
    loop {
        let Ok((next, keys)) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1_000)
            .query::<(u64, Vec<Vec<u8>>)>(&mut conn)
        else {
            return;
        };
        if !keys.is_empty() {
            let _ = redis::cmd("DEL").arg(keys).exec(&mut conn);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Deletes its namespace from the shared Redis when dropped.
pub struct NamespaceGuard(pub String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        delete_namespace(&redis_url(), &self.0);
    }
}
