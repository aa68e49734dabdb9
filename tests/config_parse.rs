//! Parsing and validation of `StoreConfig` (building stacks is tested with the stores).

use std::time::Duration;

use kvtower::config::{BackendConfig, LayerConfig, StoreConfig};
use kvtower::ErrorKind;

fn err(text: &str) -> String {
    let err = StoreConfig::from_toml_str(text).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    err.to_string()
}

#[test]
fn url_shorthands() {
    for (url, ok) in [
        ("memory://", true),
        ("sqlite:///tmp/x.db", true),
        ("sqlite://:memory:", true),
        ("redis://127.0.0.1:6379/0", true),
        ("rediss://u:p@h:6380", true),
        ("redis+unix:///run/redis.sock", true),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", true),
        ("postgres://postgres@127.0.0.1/test", true),
        ("postgresql://h/db", true),
        ("mysql://h/db", false),
        ("sqlite://", false),
        ("redis+cluster://", false),
        ("not a url", false),
    ] {
        assert_eq!(BackendConfig::from_url(url).is_ok(), ok, "{url}");
    }
    match BackendConfig::from_url("redis+cluster://a:1,b:2").unwrap() {
        BackendConfig::RedisCluster(c) => {
            let urls: Vec<_> = c.urls.iter().map(|u| u.expose().to_owned()).collect();
            assert_eq!(urls, ["redis://a:1", "redis://b:2"]);
        }
        other => panic!("{other:?}"),
    }
    match BackendConfig::from_url("sqlite:///var/kv.db").unwrap() {
        BackendConfig::Sqlite(c) => assert_eq!(c.path.to_str(), Some("/var/kv.db")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn full_config_parses_in_order() {
    let config = StoreConfig::from_toml_str(
        r#"
        [backend]
        kind = "redis"
        url = "redis://127.0.0.1:6379"
        namespace = "app"
        timeout = "250ms"

        [[layers]]
        type = "metrics"
        name = "app"

        [[layers]]
        type = "prefix"
        prefix = ["v1"]

        [[layers]]
        type = "cache"
        capacity = 1000
        ttl = "30s"
        negative_ttl = "1s"
        invalidation = { channel = "app:inv" }

        [[layers]]
        type = "default_ttl"
        ttl = "1h"
        jitter = 0.1

        [[layers]]
        type = "timeout"
        timeout = "500ms"

        [[layers]]
        type = "retry"
        attempts = 3
        "#,
    )
    .unwrap();
    assert!(matches!(
        config.backend,
        BackendConfig::Redis(ref c) if c.timeout == Some(Duration::from_millis(250))
    ));
    let kinds: Vec<&str> = config
        .layers
        .iter()
        .map(|l| match l {
            LayerConfig::Metrics(_) => "metrics",
            LayerConfig::Prefix(_) => "prefix",
            LayerConfig::Cache(_) => "cache",
            LayerConfig::DefaultTtl(_) => "default_ttl",
            LayerConfig::Timeout(_) => "timeout",
            LayerConfig::Retry(_) => "retry",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "metrics",
            "prefix",
            "cache",
            "default_ttl",
            "timeout",
            "retry"
        ]
    );
    // Round trip through TOML.
    let text = toml::to_string(&config).unwrap();
    assert_eq!(StoreConfig::from_toml_str(&text).unwrap(), config);
}

#[test]
fn errors_name_the_field_and_allowed_values() {
    let e = err("backend = \"mysql://u:hunter2@db\"");
    assert!(
        e.contains("backend") && e.contains("redis://") && e.contains("memory://"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "secret leaked: {e}");

    let e = err("backend = \"memory://\"\n[[layers]]\ntype = \"cach\"");
    assert!(
        e.contains("cach") && e.contains("cache") && e.contains("default_ttl"),
        "{e}"
    );

    let e = err("[backend]\nkind = \"mongo\"");
    assert!(
        e.contains("mongo") && e.contains("redis_cluster") && e.contains("sqlite"),
        "{e}"
    );

    let e = err("backend = \"memory://\"\n[[layers]]\ntype = \"cache\"\ncapacity = \"big\"");
    assert!(e.contains("capacity"), "{e}");

    let e = err("backend = \"memory://\"\n[[layers]]\ntype = \"default_ttl\"\nttl = \"soon\"");
    assert!(e.contains("ttl"), "{e}");

    let e = err("backend = \"memory://\"\n[[layers]]\ntype = \"prefix\"\nprefix = []");
    assert!(e.contains("layers[0].prefix"), "{e}");

    let e = err("backend = \"memory://\"\n[[layers]]\ntype = \"retry\"\nattempts = 0");
    assert!(e.contains("layers[0].retry.attempts"), "{e}");

    let e = err(
        "backend = \"memory://\"\n[[layers]]\ntype = \"default_ttl\"\nttl = \"1s\"\njitter = 2.0",
    );
    assert!(e.contains("jitter") && e.contains("0 to 1"), "{e}");

    let e = err("backend = \"memory://\"\nlayer = []");
    assert!(e.contains("layer") && e.contains("layers"), "{e}");

    let e = err("[backend]\nkind = \"redis\"\nurl = \"redis://:hunter2@h\"\nnamespce = \"x\"");
    assert!(e.contains("namespce") && e.contains("namespace"), "{e}");
    assert!(!e.contains("hunter2"), "secret leaked: {e}");

    let e = err("");
    assert!(e.contains("backend"), "{e}");
    for e in [
        err("backend = \"memory://\"\n[[layers]]\ntype = \"cache\"\ncapacity = \"big\""),
        err("backend = \"memory://\"\n[[layers]]\nprefix = [\"a\"]"),
    ] {
        assert!(e.contains("layers[0]") && e.contains("line 2"), "{e}");
    }
}

#[test]
fn debug_redacts_secrets() {
    let config =
        StoreConfig::from_toml_str("backend = \"postgres://app:hunter2@db/test?password=hunter3\"")
            .unwrap();
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("hunter3"),
        "{debug}"
    );
    assert!(debug.contains("app:***@db"), "{debug}");
}

#[test]
fn from_file_names_the_file() {
    let dir = std::env::temp_dir().join(format!("kvtower-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "backend = 3").unwrap();
    let e = StoreConfig::from_toml_file(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("bad.toml"), "{e}");
    let e = StoreConfig::from_toml_file(dir.join("missing.toml")).unwrap_err();
    assert!(e.to_string().contains("missing.toml"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn jitter_that_is_not_a_fraction_is_a_config_error() {
    // TOML's nan and inf used to reach the layer as "no jitter".
    for jitter in ["nan", "+nan", "-nan", "inf", "+inf", "-inf", "-0.5", "1.5"] {
        let e = err(&format!(
            "backend = \"memory://\"\n[[layers]]\ntype = \"default_ttl\"\nttl = \"1s\"\njitter = {jitter}"
        ));
        assert!(
            e.contains("layers[0].default_ttl.jitter") && e.contains("0 to 1"),
            "{jitter}: {e}"
        );
    }
    for jitter in ["0.0", "-0.0", "0.25", "1.0"] {
        StoreConfig::from_toml_str(&format!(
            "backend = \"memory://\"\n[[layers]]\ntype = \"default_ttl\"\nttl = \"1s\"\njitter = {jitter}"
        ))
        .unwrap();
    }
}

#[tokio::test]
async fn cache_ttls_beyond_what_the_front_tier_takes_are_config_errors() {
    for field in ["ttl", "negative_ttl", "stale_if_error"] {
        let text = format!(
            "backend = \"memory://\"\n[[layers]]\ntype = \"cache\"\n{field} = \"2000years\""
        );
        let e = err(&text);
        assert!(
            e.contains(&format!("layers[0].cache.{field}")) && e.contains("1000 years"),
            "{e}"
        );
        // Under 100 years is fine, and builds.
        let ok = text.replace("2000years", "99years");
        StoreConfig::from_toml_str(&ok)
            .unwrap()
            .build()
            .await
            .unwrap();
    }
    // Built in code (never parsed): build() refuses it, no panic.
    let mut cache = kvtower::config::CacheConfig::default();
    cache.negative_ttl = Some(Duration::MAX);
    let config = StoreConfig::new(BackendConfig::from_url("memory://").unwrap())
        .layer(LayerConfig::Cache(cache));
    let e = match config.build().await {
        Ok(_) => panic!("built"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.message().starts_with("layers[0].cache.negative_ttl"),
        "{e}"
    );
}

#[tokio::test]
async fn cache_builder_takes_duration_max() {
    use kvtower::{kvkey, KvStore, SetOptions};
    use tower::Layer as _;
    let front = kvtower::MemoryKvStore::new();
    let layer = kvtower::layers::CacheLayer::builder(front)
        .front_max_ttl(Duration::MAX)
        .negative_ttl(Duration::MAX)
        .stale_if_error(Duration::MAX)
        .build();
    let store = layer.layer(kvtower::MemoryKvStore::new());
    assert_eq!(store.get(&kvkey!["missing"]).await.unwrap(), None);
    store
        .set(&kvkey!["a"], 1.into(), SetOptions::ttl(Duration::MAX))
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["a"]).await.unwrap(), Some(1.into()));
}

/// Issue 12 item 14: the Postgres backend takes the per-operation and
/// connection timeouts, in the duration syntax of every other field, and
/// refuses zero.
#[test]
fn postgres_timeouts_parse_and_zero_is_refused() {
    let config = StoreConfig::from_toml_str(
        "[backend]\nkind = \"postgres\"\nurl = \"postgres://app:pw@db/test\"\n\
         timeout = \"1500ms\"\nconnect_timeout = \"3s\"",
    )
    .unwrap();
    match &config.backend {
        BackendConfig::Postgres(c) => {
            assert_eq!(c.timeout, Some(Duration::from_millis(1500)));
            assert_eq!(c.connect_timeout, Some(Duration::from_secs(3)));
        }
        other => panic!("{other:?}"),
    }
    let text = toml::to_string(&config).unwrap();
    assert_eq!(StoreConfig::from_toml_str(&text).unwrap(), config);
    for field in ["timeout", "connect_timeout"] {
        let err = StoreConfig::from_toml_str(&format!(
            "[backend]\nkind = \"postgres\"\nurl = \"postgres://db/test\"\n{field} = \"0s\""
        ))
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("backend.{field}")) && text.contains("more than zero"),
            "{text}"
        );
    }
}
