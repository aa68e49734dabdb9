//! Start-or-skip: the server a test needs, whatever the machine has.
//!
//! [`redis`] and [`postgres`] give, once per test process:
//!
//! * the machine's own server when it answers (`KVTOWER_REDIS_URL`,
//!   `KVTOWER_POSTGRES_URL`, or the defaults on 127.0.0.1);
//! * else a private one on a free loopback port when the binary is installed
//!   (`redis-server`; `initdb`/`pg_ctl` from `/usr/lib/postgresql/*/bin` or
//!   the `PATH`), shared by the process's tests and stopped by a watchdog
//!   when the process ends, however it ends;
//! * else `None`, after printing `SKIPPED <test>: <why>`.
//!
//! Tests that start servers of their own (faults, clusters) ask
//! [`private_redis`] and [`redis_cluster`], which skip the same way when
//! `redis-server` is missing. With `KVTOWER_REQUIRE_SERVERS=1` (`.ci/run`
//! sets it) every skip is a failure instead.
//!
//! The test's name in the message is its thread's: libtest names each test's
//! thread after the test.

use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{free_port, temp_dir, wait_until, RedisCluster, RedisServer};

/// A server every test of the process may use: the machine's, or a private
/// one that lives as long as the process.
#[derive(Debug)]
pub struct Server {
    url: String,
    /// Whether this process started it (rather than found the machine's).
    private: bool,
}

impl Server {
    /// The URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the server is a private one this process started.
    pub fn is_private(&self) -> bool {
        self.private
    }
}

/// The Redis of the tests: the machine's, else a private one, else a skip.
pub fn redis() -> Option<&'static Server> {
    static REDIS: OnceLock<Result<Server, String>> = OnceLock::new();
    found(REDIS.get_or_init(|| {
        let url = super::machine_redis_url();
        if answers(&url, 6379) {
            return Ok(Server {
                url,
                private: false,
            });
        }
        start_private_redis().map_err(|why| format!("no Redis at {url}, and {why}"))
    }))
}

/// The PostgreSQL of the tests (database `test`, trust auth): the
/// machine's, else a private one, else a skip.
pub fn postgres() -> Option<&'static Server> {
    static POSTGRES: OnceLock<Result<Server, String>> = OnceLock::new();
    found(POSTGRES.get_or_init(|| {
        let url = machine_postgres_url();
        if answers(&url, 5432) {
            return Ok(Server {
                url,
                private: false,
            });
        }
        start_private_postgres().map_err(|why| format!("no PostgreSQL at {url}, and {why}"))
    }))
}

/// Whether [`redis`] has a server (printing the skip when not): the
/// `requires` of a conformance suite.
pub fn redis_available() -> bool {
    redis().is_some()
}

/// Whether [`postgres`] has a server (printing the skip when not).
pub fn postgres_available() -> bool {
    postgres().is_some()
}

/// A private standalone `redis-server` for this test alone (to kill or
/// restart), or a skip when `redis-server` is not installed.
pub fn private_redis() -> Option<RedisServer> {
    can_start_redis().then(RedisServer::start)
}

/// A private Redis Cluster of `masters` for this test alone, or a skip.
pub fn redis_cluster(masters: usize) -> Option<RedisCluster> {
    can_start_redis().then(|| RedisCluster::start(masters))
}

/// A private PostgreSQL cluster started now, whatever the machine has: the
/// test of the fallback path itself. Stopped when the process ends.
pub fn start_private_postgres() -> Result<Server, String> {
    let initdb = find_binary("initdb").ok_or("initdb is not installed")?;
    let pg_ctl = find_binary("pg_ctl").ok_or("pg_ctl is not installed")?;
    let createdb = find_binary("createdb").ok_or("createdb is not installed")?;
    // initdb and pg_ctl refuse to run as root: run them as `postgres`.
    let as_user = is_root().then_some("postgres");
    let dir = temp_dir("postgres");
    if as_user.is_some() {
        // The server's user must own its data directory.
        let _ = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status();
    }
    let port = free_port(false);
    let data = dir.join("data");
    // The watchdog stops the server (if it ever started) and removes the
    // directory when the process ends, also if a step below fails.
    let stop = format!(
        "{} -D {} -m immediate stop; rm -rf {}",
        pg_ctl.display(),
        data.display(),
        dir.display()
    );
    if let Err(why) = watch(as_user, &stop) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(why);
    }
    run(
        as_user,
        Command::new(&initdb).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]),
        "initdb",
    )?;
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
        dir.display()
    );
    run(
        as_user,
        Command::new(&pg_ctl)
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-w", "-l"])
            .arg(dir.join("postgres.log"))
            .arg("start"),
        "pg_ctl start",
    )?;
    wait_until("postgres to listen", Duration::from_secs(30), || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
    });
    run(
        as_user,
        Command::new(&createdb).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "test",
        ]),
        "createdb",
    )?;
    Ok(Server {
        url: format!("postgres://postgres@127.0.0.1:{port}/test"),
        private: true,
    })
}

/// A private `redis-server` for the whole process, stopped by a watchdog.
pub fn start_private_redis() -> Result<Server, String> {
    if !can_start_redis() {
        return Err("redis-server is not installed".to_owned());
    }
    let server = RedisServer::start();
    let pid = server.child.as_ref().map(Child::id).unwrap_or_default();
    watch(
        None,
        &format!("kill -9 {pid}; rm -rf {}", server.dir.display()),
    )?;
    let url = server.url();
    // The watchdog stops it when the process ends, not a guard's drop.
    std::mem::forget(server);
    Ok(Server { url, private: true })
}

/// `KVTOWER_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
pub(super) fn machine_postgres_url() -> String {
    std::env::var("KVTOWER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn found(server: &'static Result<Server, String>) -> Option<&'static Server> {
    match server {
        Ok(server) => Some(server),
        Err(why) => skip(why),
    }
}

/// Whether `redis-server` and `redis-cli` are installed, to start private
/// servers (printing the skip when not).
pub fn can_start_redis() -> bool {
    if find_binary("redis-server").is_some() && find_binary("redis-cli").is_some() {
        return true;
    }
    skip::<()>("redis-server or redis-cli is not installed");
    false
}

/// Prints the skip, or fails when servers are required.
fn skip<T>(why: &str) -> Option<T> {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    if std::env::var("KVTOWER_REQUIRE_SERVERS").as_deref() == Ok("1") {
        panic!("{test}: {why} (KVTOWER_REQUIRE_SERVERS=1 makes this a failure)");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

/// Runs `cleanup` (a shell command) once this process has ended, from a
/// watchdog process that polls `/proc/<pid>`: a test process never drops its
/// statics, and may be killed.
fn watch(as_user: Option<&str>, cleanup: &str) -> Result<(), String> {
    let script = format!(
        "while [ -d /proc/{} ]; do sleep 1; done; {cleanup}",
        std::process::id()
    );
    as_user_command(as_user, Command::new("sh").args(["-c", &script]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("the watchdog did not start: {e}"))
}

fn run(as_user: Option<&str>, cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = as_user_command(as_user, cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{what} did not run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// `cmd` as it is, or under `runuser -u <user>`.
fn as_user_command(as_user: Option<&str>, cmd: &Command) -> Command {
    let mut full = match as_user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(cmd.get_program());
            c
        }
        None => Command::new(cmd.get_program()),
    };
    full.args(cmd.get_args());
    full
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Whether the host:port of `url` accepts a TCP connection.
fn answers(url: &str, default_port: u16) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    let Ok(mut addrs) = host_port.to_socket_addrs() else {
        return false;
    };
    addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

/// `name` on the `PATH`, else in the newest `/usr/lib/postgresql/*/bin`.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
            .filter(|p| p.is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}
