//! The two backends added to `kvtower::config` through the backend table:
//! Deno KV (a local file, built and run through the conformance suite from a
//! configuration; KV Connect parsed, validated and built) and Workers KV
//! (parsed, validated, and built against the miniflare emulator of
//! `tests/workers_emulator`, like tests/cfworkers.rs does).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use kvtower::config::{BackendConfig, StoreConfig};
use kvtower::{kvkey, DynKvStore, ErrorKind, KvStore, SetOptions};
use serde_json::json;

fn fresh_path(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config-denokv");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}-{}-{n}.sqlite3", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn parse_err(text: &str) -> String {
    let err = StoreConfig::from_toml_str(text).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    err.to_string()
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

/// A Deno KV file configured by URL, with a prefix layer and a cache.
async fn denokv_stack() -> DynKvStore {
    let url = format!("denokv://{}", fresh_path("stack").display());
    StoreConfig::from_toml_str(&format!(
        "backend = \"{url}\"\n\
         [[layers]]\ntype = \"cache\"\ncapacity = 100\n\
         [[layers]]\ntype = \"prefix\"\nprefix = [\"app\"]\n"
    ))
    .unwrap()
    .build()
    .await
    .unwrap()
}

mod denokv_file_config {
    kvtower::conformance_suite!(super::denokv_stack, 16);
}

#[tokio::test]
async fn denokv_table_form_writes_what_a_deno_reader_sees_under_the_prefix() {
    let path = fresh_path("table");
    let config = StoreConfig::from_toml_str(&format!(
        "[backend]\nkind = \"denokv\"\npath = {:?}\nprefix = [\"_fedify\"]\n",
        path.display().to_string()
    ))
    .unwrap();
    let store = config.build().await.unwrap();
    store
        .set(
            &kvkey!["user", "1"],
            json!({"name": "Ada"}),
            SetOptions::default(),
        )
        .await
        .unwrap();
    drop(store);
    // Another handle on the same file, without the configuration's prefix,
    // sees the entry under `["_fedify", ...]`.
    let raw = kvtower::DenoKvStore::open(&path).unwrap();
    assert_eq!(
        raw.get(&kvkey!["_fedify", "user", "1"]).await.unwrap(),
        Some(json!({"name": "Ada"}))
    );
}

#[tokio::test]
async fn denokv_kv_connect_takes_the_token_from_the_url_and_hides_it() {
    let config =
        StoreConfig::from_toml_str("backend = \"denokv+http://:s3cr3t-tok@127.0.0.1:9/\"").unwrap();
    let BackendConfig::DenoKv(c) = &config.backend else {
        panic!("{config:?}")
    };
    assert_eq!(c.url.as_ref().unwrap().expose(), "http://127.0.0.1:9/");
    assert_eq!(c.access_token.as_ref().unwrap().expose(), "s3cr3t-tok");
    assert!(!format!("{config:?}").contains("s3cr3t"), "{config:?}");
    // KV Connect connects lazily: building needs no server.
    let _store = config.build().await.unwrap();

    let table = StoreConfig::from_toml_str(
        "[backend]\nkind = \"denokv\"\nurl = \"https://api.deno.com/databases/x/connect\"\n\
         access_token = \"s3cr3t-tok\"\ntimeout = \"2s\"\nprefix = [\"p\"]",
    )
    .unwrap();
    assert!(!format!("{table:?}").contains("s3cr3t"), "{table:?}");
    // The token survives a round trip through TOML (it is written for the
    // driver, only never shown).
    let text = toml::to_string(&table).unwrap();
    assert_eq!(StoreConfig::from_toml_str(&text).unwrap(), table);
}

#[test]
fn denokv_errors_name_the_field() {
    for (text, needles) in [
        (
            "[backend]\nkind = \"denokv\"\npath = \"/tmp/x\"\npathh = 1",
            &["pathh", "denokv"][..],
        ),
        ("[backend]\nkind = \"denokv\"", &["path", "url"]),
        (
            "[backend]\nkind = \"denokv\"\npath = \"/tmp/x\"\nurl = \"http://h\"\naccess_token = \"t\"",
            &["not both"],
        ),
        ("backend = \"denokv://\"", &["needs a path"]),
        ("backend = \"denokv://:memory:\"", &["path", ":memory:"]),
        (
            "backend = \"denokv+https://db.example/connect\"",
            &["access_token"],
        ),
        (
            "[backend]\nkind = \"denokv\"\nurl = \"ftp://h\"\naccess_token = \"s3cr3t-tok\"",
            &["backend.url", "http"],
        ),
        (
            "[backend]\nkind = \"denokv\"\npath = \"/tmp/x\"\naccess_token = \"s3cr3t-tok\"",
            &["access_token", "url"],
        ),
        (
            "[backend]\nkind = \"denokv\"\nurl = \"http://h\"\naccess_token = \"s3cr3t-tok\"\ntimeout = \"0s\"",
            &["timeout", "more than zero"],
        ),
    ] {
        let e = parse_err(text);
        for needle in needles {
            assert!(e.contains(needle), "{text}: {e} lacks {needle}");
        }
        assert!(!e.contains("s3cr3t"), "secret leaked: {e}");
    }
}

#[test]
fn workers_kv_parses_and_validates() {
    let config =
        StoreConfig::from_toml_str("backend = \"cfworkers://:s3cr3t-tok@0123abcd/ns-1\"").unwrap();
    let BackendConfig::WorkersKv(c) = &config.backend else {
        panic!("{config:?}")
    };
    assert_eq!(
        (c.account_id.as_str(), c.namespace_id.as_str()),
        ("0123abcd", "ns-1")
    );
    assert_eq!(c.api_token.expose(), "s3cr3t-tok");
    assert!(!format!("{config:?}").contains("s3cr3t"), "{config:?}");

    for (text, needles) in [
        (
            "[backend]\nkind = \"cfworkers\"\naccount_id = \"a\"\nnamespace_id = \"n\"\napi_token = \"s3cr3t-tok\"\nnamespace = \"x\"",
            &["namespace", "cfworkers"][..],
        ),
        (
            "[backend]\nkind = \"cfworkers\"\naccount_id = \"a\"\nnamespace_id = \"n\"",
            &["api_token"],
        ),
        (
            "[backend]\nkind = \"cfworkers\"\naccount_id = \"\"\nnamespace_id = \"n\"\napi_token = \"s3cr3t-tok\"",
            &["account_id", "empty"],
        ),
        (
            "[backend]\nkind = \"cfworkers\"\naccount_id = \"a/../b\"\nnamespace_id = \"n\"\napi_token = \"s3cr3t-tok\"",
            &["account_id", "not an id"],
        ),
        (
            "[backend]\nkind = \"cfworkers\"\naccount_id = \"a\"\nnamespace_id = \"n\"\napi_token = \"\"",
            &["api_token", "empty"],
        ),
        (
            "[backend]\nkind = \"cfworkers\"\naccount_id = \"a\"\nnamespace_id = \"n\"\napi_token = \"s3cr3t-tok\"\nbase_url = \"localhost:8787\"",
            &["base_url", "http"],
        ),
        ("backend = \"cfworkers://0123abcd/ns-1\"", &["API token"]),
        ("backend = \"cfworkers://:s3cr3t-tok@0123abcd\"", &["namespace_id"]),
    ] {
        let e = parse_err(text);
        for needle in needles {
            assert!(e.contains(needle), "{text}: {e} lacks {needle}");
        }
        assert!(!e.contains("s3cr3t"), "secret leaked: {e}");
    }
}

const TOKEN: &str = "kvtower-test-token";

/// The Workers KV emulator's base URL (as tests/cfworkers.rs starts it),
/// `None` with a SKIPPED message when `node` is missing.
fn emulator() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        if Command::new("node").arg("--version").output().is_err() {
            eprintln!("SKIPPED: `node` is not installed; the Workers KV emulator needs it");
            return None;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workers_emulator");
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
        std::thread::spawn(move || for _ in lines {});
        Some(format!("http://127.0.0.1:{port}/client/v4"))
    })
    .as_deref()
}

#[tokio::test]
async fn workers_kv_config_builds_a_working_store_on_the_emulator() {
    let Some(base) = emulator() else { return };
    let namespace = format!("config-ns-{}", std::process::id());
    let config = StoreConfig::from_toml_str(&format!(
        "[backend]\nkind = \"cfworkers\"\naccount_id = \"test-account\"\n\
         namespace_id = \"{namespace}\"\napi_token = \"{TOKEN}\"\nbase_url = \"{base}\"\n\
         timeout = \"10s\"\n[[layers]]\ntype = \"prefix\"\nprefix = [\"app\"]"
    ))
    .unwrap();
    assert!(!format!("{config:?}").contains(TOKEN), "{config:?}");
    let store = config.build().await.unwrap();
    store
        .set(
            &kvkey!["k"],
            json!({"v": 1}),
            SetOptions::ttl(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&kvkey!["k"]).await.unwrap(),
        Some(json!({"v": 1}))
    );
    store.delete(&kvkey!["k"]).await.unwrap();
    assert_eq!(store.get(&kvkey!["k"]).await.unwrap(), None);

    // A wrong token is the server's `Config` error, without the token.
    let wrong = StoreConfig::from_toml_str(&format!(
        "[backend]\nkind = \"cfworkers\"\naccount_id = \"test-account\"\n\
         namespace_id = \"{namespace}\"\napi_token = \"s3cr3t-wrong\"\nbase_url = \"{base}\""
    ))
    .unwrap()
    .build()
    .await
    .unwrap();
    let err = wrong.get(&kvkey!["k"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    assert!(!full_text(&err).contains("s3cr3t"), "{err:?}");
}
