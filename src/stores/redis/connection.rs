//! The connection (standalone or cluster, one type) and the URL forms of the
//! module docs ("URLs"): cluster URLs, the TLS check, password redaction.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, RedisResult};

use super::error::{map_redis_error, timeout_error};
use crate::error::{Error, Result};

/// The connection: one implementation, two kinds.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Conn::Single(_) => "standalone",
            Conn::Cluster(_) => "cluster",
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Runs `fut` within `timeout`, mapping its errors.
pub(super) async fn with_timeout<T>(
    timeout: Duration,
    fut: impl Future<Output = RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(map_redis_error),
        Err(_) => Err(timeout_error(timeout)),
    }
}

/// Fails clearly for a TLS URL when TLS is not compiled in.
pub(super) fn check_tls(url: &str) -> Result<()> {
    if cfg!(not(feature = "redis-tls")) && url.starts_with("rediss") {
        return Err(Error::config(format!(
            "Redis URL {}: rediss:// (TLS) needs the kvtower feature `redis-tls`",
            redact(url)
        )));
    }
    Ok(())
}

/// The node URLs of a `redis+cluster://` or `rediss+cluster://` URL, or
/// `None` for other URLs.
pub(super) fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return Ok(None);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{path}"))
        .collect();
    if nodes.is_empty() {
        return Err(Error::config(format!(
            "Redis URL {}: expected {scheme}+cluster://host:port[,host:port...]",
            redact(url)
        )));
    }
    Ok(Some(nodes))
}

/// `url` with its passwords replaced by `***` (the crate's one redactor,
/// which reads `?pass=` and `?password=` too).
pub(super) fn redact(url: &str) -> String {
    crate::redact::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=0&pass=s3cr3t"),
            "redis+unix:///run/redis.sock?db=0&pass=***"
        );
        assert!(!redact("redis://:a#s3cr3t@h").contains("s3cr3t"));
    }

    #[test]
    fn cluster_urls_expand_to_nodes() {
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@a:1,b:2/0").unwrap(),
            Some(vec![
                "redis://u:p@a:1/0".to_owned(),
                "redis://u:p@b:2/0".to_owned()
            ])
        );
        assert_eq!(cluster_nodes("redis://a:1").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://").unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
