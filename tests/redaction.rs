//! The crate's one URL redactor, through every public surface that shows a
//! connection string: `SecretUrl`'s Display/Debug, `StoreConfig`'s Debug,
//! `BackendConfig::from_url` (the `KVTOWER_URL` path), `RedisKvStore`'s
//! Debug and URL errors, and the Postgres builder's errors. Each form of
//! issue 12 (items 1 and 2): Postgres passwords holding `#`, `?` or `/`, a
//! `?password=` with an escaped name, libpq's key-value form (quoted values
//! too), `redis+unix://…?pass=` and `?password=`, user info anywhere.

mod support;

use kvtower::config::{BackendConfig, SecretUrl, StoreConfig};
use kvtower::{ErrorKind, RedisKvStore};

const SECRET: &str = "s3cr3t-pw";

/// Every form, with `SECRET` as the password the driver would send (or a
/// reader of the URL might take for it).
fn forms() -> Vec<String> {
    let mut forms: Vec<String> = ["#x", "?x", "/x", "x#y/z?w"]
        .iter()
        .map(|tail| format!("postgres://app:{SECRET}{tail}@127.0.0.1:1/test"))
        .collect();
    forms.extend([
        format!("postgres://app:{SECRET}@127.0.0.1:1/test"),
        format!("postgresql://127.0.0.1:1/test?p%61ssword={SECRET}"),
        format!("postgres://app@127.0.0.1:1/test?sslmode=disable&%70assword={SECRET}"),
        format!("host=127.0.0.1 port=1 user=app password={SECRET} dbname=test"),
        format!("host=127.0.0.1 port=1 password='{SECRET} with spaces' dbname=test"),
        format!("host=127.0.0.1 port=1 password = '{SECRET}\\'quoted'"),
        // A `://` inside a key-value password once made `BackendConfig::from_url`
        // echo everything before it as an "unsupported scheme" (found by the
        // url_redact fuzz target).
        format!("host=127.0.0.1 port=1 user=app password='{SECRET}://x' dbname=test"),
        format!("redis+unix:///tmp/nowhere.sock?pass={SECRET}"),
        format!("redis+unix:///tmp/nowhere.sock?db=0&password={SECRET}"),
        format!("redis://app:{SECRET}@127.0.0.1:1/0"),
        format!("rediss://:{SECRET}@127.0.0.1:1"),
        format!("redis://:a#{SECRET}@127.0.0.1:1"),
        format!("redis://127.0.0.1:1/0?password={SECRET}"),
    ]);
    forms
}

/// Display, Debug and every source of an error.
fn full_text(err: &kvtower::Error) -> String {
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    text
}

#[test]
fn secret_url_and_store_config_hide_every_form() {
    for url in forms() {
        let secret = SecretUrl::new(url.clone());
        for shown in [secret.to_string(), format!("{secret:?}")] {
            assert!(!shown.contains(SECRET), "{url} shows as {shown}");
        }
        assert_eq!(secret.expose(), url);
        // The table form takes any of them as a Postgres or Redis URL.
        let kind = if url.starts_with("redis") {
            "redis"
        } else {
            "postgres"
        };
        let text = format!("[backend]\nkind = \"{kind}\"\nurl = {url:?}");
        let config = StoreConfig::from_toml_str(&text).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(SECRET), "{url}: {debug}");
    }
}

#[test]
fn kvtower_url_errors_hide_every_form() {
    for url in forms() {
        // Unsupported schemes, missing schemes, mistyped URLs: the error
        // names the problem, not the password.
        for bad in [
            url.replacen("postgres", "mysql", 1)
                .replacen("redis", "valkey", 1),
            url.replacen("://", "//", 1),
            url.clone(),
        ] {
            match BackendConfig::from_url(&bad) {
                Ok(config) => {
                    let debug = format!("{config:?}");
                    assert!(!debug.contains(SECRET), "{bad}: {debug}");
                }
                Err(err) => {
                    assert_eq!(err.kind(), ErrorKind::Config);
                    let text = full_text(&err);
                    assert!(!text.contains(SECRET), "{bad}: {text}");
                }
            }
        }
    }
}

#[tokio::test]
async fn store_builders_hide_every_form_in_their_errors() {
    for url in forms() {
        let err = if url.starts_with("redis") {
            RedisKvStore::builder()
                .connect_timeout(std::time::Duration::from_millis(300))
                .timeout(std::time::Duration::from_millis(300))
                .connect(&url)
                .await
                .unwrap_err()
        } else {
            kvtower::PostgresKvStore::builder()
                .connect(&url)
                .await
                .unwrap_err()
        };
        let text = full_text(&err);
        assert!(!text.contains(SECRET), "{url}: {text}");
    }
}

#[tokio::test]
async fn redis_unix_socket_with_pass_parameter_hides_it_in_debug() {
    let Some(server) = support::private_redis() else {
        return;
    };
    server.cli(&["CONFIG", "SET", "requirepass", SECRET]);
    for param in ["pass", "password"] {
        let url = format!(
            "redis+unix://{}?{param}={SECRET}",
            server.socket_path().display()
        );
        let store = RedisKvStore::builder()
            .namespace("redaction-test")
            .connect(&url)
            .await
            .unwrap();
        let debug = format!("{store:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains(&format!("{param}=***")), "{debug}");
        // The same URL built from a configuration.
        let config = StoreConfig::from_toml_str(&format!("backend = {url:?}")).unwrap();
        assert!(!format!("{config:?}").contains(SECRET));
    }
    // A wrong password: the error does not quote the one given.
    let url = format!(
        "redis+unix://{}?pass=wrong-{SECRET}",
        server.socket_path().display()
    );
    let err = RedisKvStore::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect(&url)
        .await
        .unwrap_err();
    assert!(!full_text(&err).contains(SECRET), "{}", full_text(&err));
}
