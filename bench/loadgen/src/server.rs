//! A private `redis-server` for one benchmark run.
//!
//! The shared Redis on 127.0.0.1:6379 belongs to everybody's tests: the
//! benchmarks never flush or load it. Each run starts its own server on a free
//! loopback port, without persistence, and the guard stops it on drop (also
//! when the run panics).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running `redis-server`, stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers
    /// `PING`.
    pub fn start() -> Result<Self, BoxError> {
        // Ask the kernel for a free port, then release it for redis-server. A
        // race with another process grabbing it is possible but harmless: the
        // readiness check below then fails with a clear error.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--maxmemory", "8gb"])
            .args(["--maxmemory-policy", "noeviction"])
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.command("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} did not answer PING").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Removes every key (synchronously, so the next run starts on an idle,
    /// empty server).
    pub fn flush(&self) -> Result<(), BoxError> {
        let reply = self.command("FLUSHALL")?;
        if reply.starts_with("+OK") {
            Ok(())
        } else {
            Err(format!("FLUSHALL failed: {reply}").into())
        }
    }

    /// Sends one inline command and returns the whole reply as text.
    fn command(&self, command: &str) -> Result<String, BoxError> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf)?;
            reply.extend_from_slice(&buf[..n]);
            if n == 0 || reply_complete(&reply) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }
}

/// Whether `reply` holds one whole RESP reply (simple string, error or bulk
/// string: all that `command` sends for).
fn reply_complete(reply: &[u8]) -> bool {
    let Some(line_end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match reply.first() {
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&reply[1..line_end])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            len < 0 || reply.len() >= line_end + 2 + len as usize + 2
        }
        _ => true,
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
