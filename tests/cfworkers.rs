//! The conformance suite against `WorkersKvStore`'s HTTP client, with real
//! Workers KV behaviour: miniflare (Cloudflare's local Workers runtime, from
//! npm) runs `tests/workers_emulator/emulator.mjs`, a worker that serves the
//! Cloudflare KV HTTP API's paths from a KV binding. One emulator per test
//! process; each store gets a fresh namespace id.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use kvtower::{kvkey, ErrorKind, KvStore, SetOptions, WorkersKvStore};
use serde_json::json;

const TOKEN: &str = "kvtower-test-token";

/// The emulator's base URL, `None` (with a SKIPPED message) only when `node`
/// is missing.
fn emulator() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        if Command::new("node").arg("--version").output().is_err() {
            eprintln!("SKIPPED: `node` is not installed; the Workers KV emulator needs it");
            return None;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workers_emulator");
        // npm writes node_modules/.package-lock.json last: a finished install.
        if !dir.join("node_modules/.package-lock.json").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm runs");
            assert!(status.success(), "npm ci in {}", dir.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Never waited for: start.mjs exits by itself once this process is
        // gone.
        #[allow(clippy::zombie_processes)]
        let mut child = Command::new("node")
            .arg(dir.join("start.mjs"))
            .arg(port.to_string())
            .arg(TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("start.mjs prints a line").unwrap();
        assert!(first.starts_with("listening "), "{first}");
        // Keep draining its stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Some(format!("http://127.0.0.1:{port}/client/v4"))
    })
    .as_deref()
}

fn fresh_namespace() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "ns-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn store_in(namespace: &str) -> Option<WorkersKvStore> {
    let url = emulator()?;
    Some(
        WorkersKvStore::builder("test-account", namespace, TOKEN)
            .base_url(url)
            .build()
            .unwrap(),
    )
}

/// With no `node`, the suite runs against nothing it could pass: fail loudly
/// instead of pretending (the SKIPPED message says why).
fn fresh_store() -> WorkersKvStore {
    store_in(&fresh_namespace()).expect("the Workers KV emulator needs node")
}

mod conformance {
    kvtower::conformance_suite!(|| async { super::fresh_store() }, 16);
}

/// Writes an entry the way another client might, through the raw API.
async fn raw_put(namespace: &str, name: &str, value: &str, metadata: Option<&str>) {
    let url = format!(
        "{}/accounts/test-account/storage/kv/namespaces/{namespace}/values/{}",
        emulator().unwrap(),
        urlencode(name)
    );
    let mut form = reqwest::multipart::Form::new().text("value", value.to_owned());
    if let Some(metadata) = metadata {
        form = form.text("metadata", metadata.to_owned());
    }
    let response = reqwest::Client::new()
        .put(url)
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn reads_entries_in_fedifys_layout() {
    let namespace = fresh_namespace();
    let Some(store) = store_in(&namespace) else {
        return;
    };
    raw_put(
        &namespace,
        r#"["_fedify","a"]"#,
        r#"{"x":[1,2]}"#,
        Some("{}"),
    )
    .await;
    raw_put(
        &namespace,
        r#"["_fedify","expired"]"#,
        "1",
        Some(r#"{"expires":1000}"#),
    )
    .await;
    raw_put(&namespace, r#"["_fedify","no-metadata"]"#, "1", None).await;
    raw_put(&namespace, "not-a-json-key", "1", Some("{}")).await;
    assert_eq!(
        store.get(&kvkey!["_fedify", "a"]).await.unwrap(),
        Some(json!({"x": [1, 2]}))
    );
    assert_eq!(
        store.get(&kvkey!["_fedify", "expired"]).await.unwrap(),
        None
    );
    assert_eq!(
        store.get(&kvkey!["_fedify", "no-metadata"]).await.unwrap(),
        None,
        "like Fedify, no metadata reads as absent"
    );
    let listed: Vec<_> = {
        use futures::TryStreamExt;
        store.list(None).try_collect().await.unwrap()
    };
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, kvkey!["_fedify", "a"]);
}

#[tokio::test]
async fn cas_is_unsupported() {
    let Some(store) = store_in(&fresh_namespace()) else {
        return;
    };
    let err = store
        .cas(&kvkey!["k"], None, Some(json!(1)), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(store.get(&kvkey!["k"]).await.unwrap(), None);
    assert!(!store.capabilities().atomic_cas);
}

#[tokio::test]
async fn sub_minute_ttl_holds_through_metadata() {
    let Some(store) = store_in(&fresh_namespace()) else {
        return;
    };
    // Workers KV refuses an expiration_ttl under 60 s; the store still
    // honours a 300 ms TTL.
    store
        .set(
            &kvkey!["t"],
            json!("v"),
            SetOptions::ttl(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["t"]).await.unwrap(), Some(json!("v")));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.get(&kvkey!["t"]).await.unwrap(), None);
}

#[tokio::test]
async fn a_ttl_of_duration_max_never_expires_and_does_not_panic() {
    let Some(store) = store_in(&fresh_namespace()) else {
        return;
    };
    // Duration::MAX used to overflow (a panic in debug builds, a 60-second
    // TTL in release): too long for a JavaScript number, it never expires.
    let key = kvkey!["forever"];
    store
        .set(&key, json!("v"), SetOptions::ttl(Duration::MAX))
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(json!("v")));
    store
        .set_many(
            vec![(kvkey!["also"], json!(1))],
            SetOptions::ttl(Duration::MAX),
        )
        .await
        .unwrap();
    assert_eq!(store.get(&kvkey!["also"]).await.unwrap(), Some(json!(1)));
}

#[tokio::test]
async fn wrong_token_is_a_config_error() {
    let Some(url) = emulator() else { return };
    let store = WorkersKvStore::builder("test-account", "ns", "wrong")
        .base_url(url)
        .build()
        .unwrap();
    let err = store.get(&kvkey!["k"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn unreachable_api_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = WorkersKvStore::builder("a", "n", TOKEN)
        .base_url(format!("http://127.0.0.1:{port}/client/v4"))
        .build()
        .unwrap();
    let err = store.get(&kvkey!["k"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

#[test]
fn builder_checks_its_config() {
    let err = WorkersKvStore::builder("", "n", "t").build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = WorkersKvStore::builder("a", "n", "t")
        .base_url("not a url")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let debug = format!("{:?}", WorkersKvStore::builder("a", "n", "secret-token"));
    assert!(!debug.contains("secret-token"), "{debug}");
}
