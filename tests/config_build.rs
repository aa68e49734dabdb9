//! `StoreConfig::build` against the real backends: each configuration of
//! `examples/config/` (dev: memory, test: SQLite, prod: metrics + prefix +
//! cache + Redis with the invalidation bus) passes the conformance suite, and
//! so do a Postgres configuration and a timeout + retry stack; malformed
//! configurations give the documented errors; secrets stay out of errors;
//! the environment loaders; and the invalidation bus a Redis backend turns on
//! by default.
//!
//! The Redis tests use a fresh namespace (so a fresh invalidation channel) of
//! the shared Redis per store, deleted afterwards; the Postgres ones a fresh
//! table, dropped afterwards.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kvtower::config::{
    BackendConfig, CacheConfig, InvalidationConfig, LayerConfig, PrefixConfig, StoreConfig,
};
use kvtower::{kvkey, DynKvStore, ErrorKind, KvStore, SetOptions};
use serde_json::json;
use support::{postgres_url, TestTable, WithGuard};
use support::{redis_url, unique_namespace, NamespaceGuard};

/// One of the documented configurations of `examples/config/`.
fn example(name: &str) -> StoreConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/config")
        .join(format!("{name}.toml"));
    StoreConfig::from_toml_file(path).expect("the example configuration parses")
}

/// `config` with its Redis backend moved to a fresh namespace of the shared
/// Redis (`KVTOWER_REDIS_URL`); returns the namespace.
fn isolate_redis(config: &mut StoreConfig) -> String {
    let namespace = unique_namespace();
    let redis = BackendConfig::from_url(&redis_url()).unwrap();
    let BackendConfig::Redis(mut redis) = redis else {
        panic!("KVTOWER_REDIS_URL is not a redis:// URL")
    };
    let BackendConfig::Redis(documented) = &config.backend else {
        panic!("the prod example is documented with a Redis backend")
    };
    redis.namespace = Some(namespace.clone());
    redis.timeout = documented.timeout.map(|t| t.max(Duration::from_secs(5)));
    config.backend = BackendConfig::Redis(redis);
    namespace
}

async fn dev_store() -> DynKvStore {
    example("dev").build().await.unwrap()
}

async fn test_store() -> DynKvStore {
    example("test").build().await.unwrap()
}

async fn prod_store() -> impl KvStore {
    let mut config = example("prod");
    let namespace = isolate_redis(&mut config);
    WithGuard {
        store: config.build().await.unwrap(),
        _guard: NamespaceGuard(namespace),
    }
}

mod dev_config {
    kvtower::conformance_suite!(super::dev_store);
}

mod test_config {
    kvtower::conformance_suite!(super::test_store, 32);
}

mod prod_config {
    kvtower::conformance_suite!(
        super::prod_store,
        32,
        requires = crate::support::redis_available
    );
}

// ---------------------------------------------------------------------------
// Postgres

async fn postgres_store() -> impl KvStore {
    let table = TestTable::new();
    let config = StoreConfig::from_toml_str(&format!(
        r#"
        [backend]
        kind = "postgres"
        url = "{}"
        table = "{}"

        [[layers]]
        type = "prefix"
        prefix = ["app"]

        [[layers]]
        type = "cache"
        ttl = "30s"
        "#,
        postgres_url(),
        table.0
    ))
    .unwrap();
    WithGuard {
        store: config.build().await.unwrap(),
        _guard: table,
    }
}

mod postgres_config {
    kvtower::conformance_suite!(
        super::postgres_store,
        16,
        requires = crate::support::postgres_available
    );
}

// ---------------------------------------------------------------------------
// tower middleware from configuration

async fn timeout_retry_store() -> DynKvStore {
    StoreConfig::from_toml_str(
        r#"
        backend = "memory://"

        [[layers]]
        type = "retry"
        attempts = 3
        backoff = "5ms"

        [[layers]]
        type = "timeout"
        timeout = "5s"

        [[layers]]
        type = "tracing"
        "#,
    )
    .unwrap()
    .build()
    .await
    .unwrap()
}

mod timeout_and_retry_config {
    kvtower::conformance_suite!(super::timeout_retry_store);
}

// ---------------------------------------------------------------------------
// Errors

fn parse_err(text: &str) -> String {
    let err = StoreConfig::from_toml_str(text).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    err.to_string()
}

#[test]
fn malformed_configs_give_the_documented_errors() {
    let e = parse_err("backend = \"memory://\"\n[[layers]]\ntype = \"compress\"");
    assert!(
        e.contains("compress") && e.contains("cache, prefix, default_ttl") && e.contains("retry"),
        "{e}"
    );
    let e = parse_err("[backend]\nkind = \"mongodb\"");
    assert!(
        e.contains("mongodb") && e.contains("memory, sqlite, redis, redis_cluster, postgres"),
        "{e}"
    );
    let e = parse_err(
        "backend = \"memory://\"\n[[layers]]\ntype = \"timeout\"\ntimeout = \"5 parsecs\"",
    );
    // The line is the layer's table (its options are read as one value).
    assert!(
        e.contains("layers[0].timeout")
            && e.contains("expected a duration")
            && e.contains("line 2"),
        "{e}"
    );
    let e = parse_err("backend = \"memory://\"\n[[layers]]\ntype = \"retry\"\nattempts = 0");
    assert!(
        e.contains("retry.attempts") && e.contains("at least 1"),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_configs_built_in_code_are_config_errors() {
    // Built in code, so never parsed: build() validates.
    let config = StoreConfig::new(BackendConfig::from_url("memory://").unwrap())
        .layer(LayerConfig::Prefix(PrefixConfig::new(Vec::<String>::new())));
    let err = build_err(&config).await;
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().starts_with("layers[0].prefix"), "{err}");

    // A bus asked for where there is no Redis to carry it.
    let mut cache = CacheConfig::default();
    cache.invalidation = Some(InvalidationConfig {
        enabled: true,
        url: None,
        channel: Some("app:invalidate".into()),
    });
    let config = StoreConfig::new(BackendConfig::from_url("sqlite://:memory:").unwrap())
        .layer(LayerConfig::Prefix(PrefixConfig::new(["app"])))
        .layer(LayerConfig::Cache(cache));
    let err = build_err(&config).await;
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.message().starts_with("layers[1].cache.invalidation")
            && err.message().contains("sqlite")
            && err.message().contains("invalidation.url"),
        "{err}"
    );
}

async fn build_err(config: &StoreConfig) -> kvtower::Error {
    match config.build().await {
        Ok(_) => panic!("{config:?} built"),
        Err(err) => err,
    }
}

/// The whole text of an error: Display, Debug, and every source.
fn full_text(err: &kvtower::Error) -> String {
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    text
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn connection_errors_keep_their_kind_and_hide_secrets() {
    let port = closed_port();
    let cases = [
        format!(
            "[backend]\nkind = \"redis\"\nurl = \"redis://app:s3cr3t-pw@127.0.0.1:{port}\"\ntimeout = \"200ms\""
        ),
        format!("backend = \"postgres://app:s3cr3t-pw@127.0.0.1:{port}/db?password=s3cr3t-pw\""),
        format!(
            "backend = \"memory://\"\n[[layers]]\ntype = \"cache\"\n\
             invalidation = {{ url = \"redis://:s3cr3t-pw@127.0.0.1:{port}\" }}"
        ),
    ];
    for text in cases {
        let config = StoreConfig::from_toml_str(&text).unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"), "{config:?}");
        let started = Instant::now();
        let err = build_err(&config).await;
        assert!(
            matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{text}: {err:?}"
        );
        assert!(err.is_retryable(), "{err:?}");
        let all = full_text(&err);
        assert!(!all.contains("s3cr3t"), "{text}: the secret leaked: {all}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a refused connection fails within the timeouts"
        );
    }
}

#[test]
fn environment_loading() {
    // Environment variables are process-wide: every env case is in this one
    // test so that no other test sees them.
    std::env::remove_var("KVTOWER_CONFIG");
    std::env::remove_var("KVTOWER_URL");
    let err = StoreConfig::from_env().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("KVTOWER_URL"), "{err}");

    std::env::set_var("KVTOWER_URL", "memory://");
    let config = StoreConfig::from_env().unwrap();
    assert!(matches!(config.backend, BackendConfig::Memory(_)));

    std::env::set_var("KVTOWER_URL", "mysql://root:s3cr3t-pw@db");
    let err = StoreConfig::from_env().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().starts_with("KVTOWER_URL"), "{err}");
    assert!(!full_text(&err).contains("s3cr3t"), "{err:?}");

    // A file wins over the URL.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/config/test.toml");
    std::env::set_var("KVTOWER_CONFIG", &path);
    let config = StoreConfig::from_env().unwrap();
    assert_eq!(config, example("test"));

    std::env::remove_var("KVTOWER_CONFIG");
    std::env::remove_var("KVTOWER_URL");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = config.build().await.unwrap();
        store
            .set(&kvkey!["k"], json!("v"), SetOptions::default())
            .await
            .unwrap();
        assert_eq!(store.get(&kvkey!["k"]).await.unwrap(), Some(json!("v")));
    });
}

// ---------------------------------------------------------------------------
// The invalidation bus is on by default over Redis

/// Two nodes' stores from one prod-like configuration (same namespace, same
/// channel), with a 60 s front TTL so only the bus can refresh a front entry.
async fn two_nodes(invalidation: Option<InvalidationConfig>) -> (DynKvStore, DynKvStore, String) {
    let mut config = example("prod");
    let namespace = isolate_redis(&mut config);
    let mut found = false;
    for layer in &mut config.layers {
        if let LayerConfig::Cache(cache) = layer {
            cache.ttl = Some(Duration::from_secs(60));
            cache.invalidation = invalidation.clone();
            found = true;
        }
    }
    assert!(found, "the prod example has a cache layer");
    let a = config.build().await.unwrap();
    let b = config.build().await.unwrap();
    (a, b, namespace)
}

/// Writes 1 through A, reads it through B (filling B's front tier), writes 2
/// through A; returns B's reads for up to `window`, stopping at the first 2.
async fn reads_after_a_write(a: &DynKvStore, b: &DynKvStore, window: Duration) -> Vec<i64> {
    let key = kvkey!["users", "ada", "visits"];
    a.set(&key, json!(1), SetOptions::default()).await.unwrap();
    assert_eq!(b.get(&key).await.unwrap(), Some(json!(1)));
    a.set(&key, json!(2), SetOptions::default()).await.unwrap();
    assert_eq!(a.get(&key).await.unwrap(), Some(json!(2)));
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    loop {
        let value = b.get(&key).await.unwrap().and_then(|v| v.as_i64()).unwrap();
        seen.push(value);
        if value == 2 || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_turns_the_invalidation_bus_on_by_default() {
    if support::redis().is_none() {
        return;
    }
    let (a, b, namespace) = two_nodes(None).await;
    let _guard = NamespaceGuard(namespace);
    let seen = reads_after_a_write(&a, &b, Duration::from_secs(2)).await;
    assert_eq!(
        seen.last(),
        Some(&2),
        "node B still serves the old value from its front tier: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_bus_the_other_node_serves_the_old_value() {
    if support::redis().is_none() {
        return;
    }
    let disabled = InvalidationConfig {
        enabled: false,
        url: None,
        channel: None,
    };
    let (a, b, namespace) = two_nodes(Some(disabled)).await;
    let _guard = NamespaceGuard(namespace);
    let seen = reads_after_a_write(&a, &b, Duration::from_secs(1)).await;
    assert!(
        seen.iter().all(|v| *v == 1),
        "without a bus, B's front tier keeps the old value for its TTL: {seen:?}"
    );
}

// ---------------------------------------------------------------------------
// RetryPolicy, which the `retry` layer uses. A real MemoryKvStore behind a
// wrapper that injects failures (a backend cannot be made to fail on cue).

mod flaky {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use kvtower::{
        Error, ErrorKind, KvEntry, KvKey, KvStore, MemoryKvStore, Result, SetOptions, Value,
    };

    /// Fails (or stalls) the next `failures` calls of `get`, `set` and `cas`.
    #[derive(Debug, Clone, Default)]
    pub struct Flaky {
        pub store: MemoryKvStore,
        pub calls: Arc<AtomicUsize>,
        pub failures: Arc<AtomicUsize>,
        /// `None`: stall for a second instead of failing.
        pub kind: Option<ErrorKind>,
    }

    impl Flaky {
        pub fn new(failures: usize, kind: Option<ErrorKind>) -> Self {
            Self {
                failures: Arc::new(AtomicUsize::new(failures)),
                kind,
                ..Self::default()
            }
        }

        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        async fn trouble(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            match (failing, self.kind) {
                (false, _) => Ok(()),
                (true, Some(kind)) => Err(Error::new(kind, "injected failure")),
                (true, None) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok(())
                }
            }
        }
    }

    #[async_trait]
    impl KvStore for Flaky {
        async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
            self.trouble().await?;
            self.store.get(key).await
        }
        async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
            self.trouble().await?;
            self.store.set(key, value, options).await
        }
        async fn delete(&self, key: &KvKey) -> Result<()> {
            self.store.delete(key).await
        }
        async fn cas(
            &self,
            key: &KvKey,
            expected: Option<&Value>,
            new: Option<Value>,
            options: SetOptions,
        ) -> Result<bool> {
            self.trouble().await?;
            self.store.cas(key, expected, new, options).await
        }
        fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
            self.store.list(prefix)
        }

        fn capabilities(&self) -> kvtower::Capabilities {
            self.store.capabilities().with_reports_ttl(false)
        }
    }
}

/// `backend` behind `RetryPolicy::new(attempts, 10ms)` through the bridge.
fn with_retry(backend: flaky::Flaky, attempts: u32) -> impl KvStore {
    use kvtower::service::{KvServiceLayer, RetryPolicy, ServiceStoreLayer};
    tower::ServiceBuilder::new()
        .layer(ServiceStoreLayer)
        .retry(RetryPolicy::new(attempts, Duration::from_millis(10)))
        .layer(KvServiceLayer)
        .service(backend)
}

#[tokio::test]
async fn retry_policy_retries_retryable_errors_with_a_doubling_backoff() {
    let key = kvkey!["k"];
    let backend = flaky::Flaky::new(2, Some(ErrorKind::Unavailable));
    let store = with_retry(backend.clone(), 3);
    let started = Instant::now();
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(backend.calls(), 3, "two failures, then the answer");
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "10 ms, then 20 ms of backoff"
    );

    // Out of attempts: the last error comes back, no longer retryable.
    let backend = flaky::Flaky::new(3, Some(ErrorKind::Unavailable));
    let err = with_retry(backend.clone(), 3).get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(backend.calls(), 3);

    // Not retryable: one call.
    let backend = flaky::Flaky::new(1, Some(ErrorKind::Backend));
    let err = with_retry(backend.clone(), 3).get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert_eq!(backend.calls(), 1);

    // A timed-out write is replayed, a timed-out cas is not (it may have
    // swapped).
    let backend = flaky::Flaky::new(1, Some(ErrorKind::Timeout));
    with_retry(backend.clone(), 3)
        .set(&key, json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(backend.calls(), 2);
    let backend = flaky::Flaky::new(1, Some(ErrorKind::Timeout));
    let err = with_retry(backend.clone(), 3)
        .cas(&key, None, Some(json!(1)), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(backend.calls(), 1);
    // ...nor after a lost connection: its reply may be what was lost (see
    // tests/redis.rs, cas_is_not_replayed_after_its_reply_was_lost).
    let backend = flaky::Flaky::new(1, Some(ErrorKind::Unavailable));
    let err = with_retry(backend.clone(), 3)
        .cas(&key, None, Some(json!(1)), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn retry_policy_retries_tower_timeouts_below_it() {
    use kvtower::service::{KvServiceLayer, RetryPolicy, ServiceStoreLayer};
    let key = kvkey!["k"];
    let stack = |backend: flaky::Flaky| {
        tower::ServiceBuilder::new()
            .layer(ServiceStoreLayer)
            .retry(RetryPolicy::new(3, Duration::from_millis(1)))
            .timeout(Duration::from_millis(100))
            .layer(KvServiceLayer)
            .service(backend)
    };
    // The first get stalls past the timeout; the retry answers.
    let backend = flaky::Flaky::new(1, None);
    assert_eq!(stack(backend.clone()).get(&key).await.unwrap(), None);
    assert_eq!(backend.calls(), 2);
    // A cas that timed out is not replayed.
    let backend = flaky::Flaky::new(1, None);
    let err = stack(backend.clone())
        .cas(&key, None, Some(json!(1)), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_config_builds_with_the_bus_on_the_first_seed() {
    // A private cluster (it is stopped when the guard drops, also on panic).
    if !support::can_start_redis() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| support::RedisCluster::start(3))
        .await
        .unwrap();
    let hosts: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.trim_start_matches("redis://").to_owned())
        .collect();
    let config = StoreConfig::from_toml_str(&format!(
        r#"
        backend = "redis+cluster://{}"
        [[layers]]
        type = "cache"
        ttl = "60s"
        "#,
        hosts.join(",")
    ))
    .unwrap();
    let a = config.build().await.unwrap();
    let b = config.build().await.unwrap();
    let seen = reads_after_a_write(&a, &b, Duration::from_secs(2)).await;
    assert_eq!(seen.last(), Some(&2), "node B kept the old value: {seen:?}");
    drop((a, b));
    drop(cluster);
}

/// Two cache tiers, each with the bus (what `StoreConfig` builds for two
/// `cache` layers over Redis): an invalidation must reach the inner tier
/// before the outer one, or the outer tier is refilled from the stale inner
/// one and serves the old value for its whole front TTL. A reader hammers
/// node B while node A writes, so a refill in the wrong order would happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cache_tiers_with_buses_never_refill_l1_from_a_stale_l2() {
    if support::redis().is_none() {
        return;
    }
    let mut config = example("prod");
    let namespace = isolate_redis(&mut config);
    let _guard = NamespaceGuard(namespace);
    let position = config
        .layers
        .iter()
        .position(|l| matches!(l, LayerConfig::Cache(_)))
        .expect("the prod example has a cache layer");
    for layer in &mut config.layers {
        if let LayerConfig::Cache(cache) = layer {
            cache.ttl = Some(Duration::from_secs(60));
        }
    }
    let inner_tier = config.layers[position].clone();
    config.layers.insert(position + 1, inner_tier);
    let a = config.build().await.unwrap();
    let b = config.build().await.unwrap();
    let key = kvkey!["tiers", "k"];
    a.set(&key, json!(0), SetOptions::default()).await.unwrap();
    let hammer = {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move {
            for _ in 0..100_000 {
                let _ = b.get(&key).await;
                tokio::task::yield_now().await;
            }
        })
    };
    for i in 1..=20 {
        a.set(&key, json!(i), SetOptions::default()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let seen = b.get(&key).await.unwrap();
            if seen == Some(json!(i)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "write {i}: node B still reads {seen:?} after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    hammer.abort();
}
