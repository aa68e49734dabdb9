//! Start-or-skip: the server a test needs, whatever the machine has.
//!
//! * the machine's own server when it answers (`KVTOWER_REDIS_URL`,
//!   `KVTOWER_POSTGRES_URL`, or the defaults on 127.0.0.1);
//! * else a private one on a free loopback port when the binary is installed
//!   (`redis-server`; `initdb`/`pg_ctl` from `/usr/lib/postgresql/*/bin` or
//!   the `PATH`), stopped when the returned guard drops;
//! * else `None`, after printing `SKIPPED <test>: <why>`. With
//!   `KVTOWER_REQUIRE_SERVERS=1` (`.ci/run` sets it) a skip is a failure.

use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, temp_dir, wait_until, RedisServer};

/// A server for one test: its URL, and the private process, if one was
/// started, stopped on drop.
#[derive(Debug)]
pub struct Server {
    url: String,
    _redis: Option<RedisServer>,
    _postgres: Option<PostgresServer>,
}

impl Server {
    /// The URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A Redis for `test`: the machine's, a private one, or a skip.
pub fn redis_or_skip(test: &str) -> Option<Server> {
    let url = super::redis_url();
    if answers(&url, 6379) {
        return Some(Server {
            url,
            _redis: None,
            _postgres: None,
        });
    }
    if find_binary("redis-server").is_none() {
        return skip(
            test,
            &format!("no Redis at {url} and no redis-server installed"),
        );
    }
    let server = RedisServer::start();
    Some(Server {
        url: server.url(),
        _redis: Some(server),
        _postgres: None,
    })
}

/// A PostgreSQL for `test` (database `test`, trust auth): the machine's, a
/// private one, or a skip.
pub fn postgres_or_skip(test: &str) -> Option<Server> {
    let url = std::env::var("KVTOWER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if answers(&url, 5432) {
        return Some(Server {
            url,
            _redis: None,
            _postgres: None,
        });
    }
    match PostgresServer::start() {
        Ok(server) => Some(Server {
            url: server.url(),
            _redis: None,
            _postgres: Some(server),
        }),
        Err(why) => skip(test, &format!("no PostgreSQL at {url}, and {why}")),
    }
}

/// Prints the skip, or fails when servers are required.
fn skip(test: &str, why: &str) -> Option<Server> {
    if std::env::var("KVTOWER_REQUIRE_SERVERS").as_deref() == Ok("1") {
        panic!("{test}: {why} (KVTOWER_REQUIRE_SERVERS=1 makes this a failure)");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
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

/// A private PostgreSQL cluster in a temporary directory, on a free
/// loopback port, with a database `test` and trust auth; stopped (`pg_ctl
/// stop -m immediate`) and its files removed on drop.
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    pg_ctl: PathBuf,
    /// `runuser -u postgres` when running as root (initdb refuses root).
    as_user: Option<&'static str>,
}

impl PostgresServer {
    /// Starts one, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        let initdb = find_binary("initdb").ok_or("initdb is not installed")?;
        let pg_ctl = find_binary("pg_ctl").ok_or("pg_ctl is not installed")?;
        let createdb = find_binary("createdb").ok_or("createdb is not installed")?;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let as_user = root.then_some("postgres");
        let dir = temp_dir("postgres");
        if root {
            // The server's user must own its data directory.
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status();
        }
        let server = Self {
            port: free_port(false),
            dir,
            pg_ctl,
            as_user,
        };
        let data = server.dir.join("data");
        server.run(
            Command::new(&initdb).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ]),
            "initdb",
        )?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            server.port,
            server.dir.display()
        );
        server.run(
            Command::new(&server.pg_ctl)
                .arg("-D")
                .arg(&data)
                .args(["-o", &options, "-w", "-l"])
                .arg(server.dir.join("postgres.log"))
                .arg("start"),
            "pg_ctl start",
        )?;
        let port = server.port;
        wait_until("postgres to listen", Duration::from_secs(30), || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
        });
        server.run(
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
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>/test`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/test", self.port)
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<(), String> {
        let mut full = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(cmd.get_program());
                c.args(cmd.get_args());
                c
            }
            None => {
                let mut c = Command::new(cmd.get_program());
                c.args(cmd.get_args());
                c
            }
        };
        let status = full
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
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.run(
            Command::new(&self.pg_ctl)
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"]),
            "pg_ctl stop",
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
