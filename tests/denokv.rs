//! The conformance suite against `DenoKvStore` on database files, plus
//! Deno-specific checks: the key prefix, the value mapping, limits, and
//! interop with other Deno KV clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvtower::{kvkey, DenoKvStore, ErrorKind, KvStore, KvStoreExt, SetOptions};
use serde_json::json;

/// A fresh database file path under Cargo's per-target temp directory (kept
/// after the run for inspection, replaced by the next run).
fn fresh_path(tag: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("denokv");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}-{}-{n}.sqlite3", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

kvtower::conformance_suite!(|| async { DenoKvStore::open(fresh_path("conf")).unwrap() });

mod with_prefix {
    kvtower::conformance_suite!(|| async {
        kvtower::DenoKvStore::builder()
            .prefix(["_fedify", ""])
            .open(super::fresh_path("prefixed"))
            .unwrap()
    });
}

#[tokio::test]
async fn prefix_isolates_and_shares_one_file() {
    let path = fresh_path("prefix");
    let plain = DenoKvStore::open(&path).unwrap();
    let fedify = DenoKvStore::builder()
        .prefix(["_fedify"])
        .open(&path)
        .unwrap();
    fedify
        .set(&kvkey!["a"], json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        plain.get(&kvkey!["_fedify", "a"]).await.unwrap(),
        Some(json!(1))
    );
    assert_eq!(plain.get(&kvkey!["a"]).await.unwrap(), None);
    plain
        .set(&kvkey!["other"], json!(2), SetOptions::default())
        .await
        .unwrap();
    let listed = fedify.list_all(None).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, kvkey!["a"]);
}

#[tokio::test]
async fn values_keep_their_json_meaning() {
    let store = DenoKvStore::open(fresh_path("values")).unwrap();
    let key = kvkey!["v"];
    for (written, read) in [
        (json!(2.0), json!(2)),
        (
            json!(9_007_199_254_740_993u64),
            json!(9_007_199_254_740_993u64),
        ),
        (json!(-2_147_483_649i64), json!(-2_147_483_649i64)),
    ] {
        store
            .set(&key, written, SetOptions::default())
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(read));
    }
}

#[tokio::test]
async fn limits_are_deno_limits() {
    let store = DenoKvStore::open(fresh_path("limits")).unwrap();
    let err = store
        .set(
            &kvkey!["big"],
            json!("x".repeat(70_000)),
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert_eq!(store.get(&kvkey!["big"]).await.unwrap(), None);
    let err = store
        .set(&kvkey!["k".repeat(3000)], json!(1), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    let err = store
        .set_many(
            vec![
                (kvkey!["ok"], json!(1)),
                (kvkey!["big"], json!("x".repeat(70_000))),
            ],
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert_eq!(
        store.get(&kvkey!["ok"]).await.unwrap(),
        None,
        "nothing written"
    );
}

#[tokio::test]
async fn reopened_file_keeps_data_and_expiry() {
    let path = fresh_path("reopen");
    {
        let store = DenoKvStore::open(&path).unwrap();
        store
            .set(&kvkey!["keep"], json!({"a": [1]}), SetOptions::default())
            .await
            .unwrap();
        store
            .set(
                &kvkey!["short"],
                json!(1),
                SetOptions::ttl(Duration::from_millis(100)),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = DenoKvStore::open(&path).unwrap();
    assert_eq!(
        store.get(&kvkey!["keep"]).await.unwrap(),
        Some(json!({"a": [1]}))
    );
    assert_eq!(store.get(&kvkey!["short"]).await.unwrap(), None);
}

#[tokio::test]
async fn open_of_a_directory_is_a_config_error() {
    let err = DenoKvStore::open(env!("CARGO_TARGET_TMPDIR")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// Interop with Node's `@deno/kv` (the same engine as `Deno.openKv`, as an
/// npm package): `tests/deno_interop/interop.mjs` writes what the Rust store
/// must read, and reads what it wrote.
mod interop {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;
    use futures::StreamExt;
    use kvtower::Value;

    fn interop_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deno_interop")
    }

    /// `None` only when `node` itself is missing; installs the pinned npm
    /// packages (package-lock.json) on first use.
    fn node() -> Option<PathBuf> {
        if Command::new("node").arg("--version").output().is_err() {
            eprintln!("SKIPPED: `node` is not installed; the @deno/kv interop tests need it");
            return None;
        }
        let dir = interop_dir();
        // Once per test process: the interop tests run in parallel, and one
        // must not run node while another is still installing. npm writes
        // node_modules/.package-lock.json last, so it marks a finished install.
        static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        INSTALLED.get_or_init(|| {
            if !dir.join("node_modules/.package-lock.json").exists() {
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .status()
                    .expect("npm runs");
                assert!(status.success(), "npm ci in {}", dir.display());
            }
        });
        Some(dir.join("interop.mjs"))
    }

    fn run(script: &Path, mode: &str, db: &Path) -> String {
        let out = Command::new("node")
            .arg(script)
            .arg(mode)
            .arg(db)
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "node interop.mjs {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[tokio::test]
    async fn node_writes_rust_reads() {
        let Some(script) = node() else { return };
        let path = fresh_path("node-writes");
        run(&script, "write", &path);
        let store = DenoKvStore::builder()
            .prefix(["_fedify"])
            .open(&path)
            .unwrap();
        let get = |k: &'static str| {
            let store = store.clone();
            async move { store.get(&kvkey![k]).await }
        };
        assert_eq!(
            get("object").await.unwrap(),
            Some(json!({"name": "Ada", "tags": ["a", "b"], "nested": {"n": null}}))
        );
        assert_eq!(get("int").await.unwrap(), Some(json!(42)));
        assert_eq!(get("big-number").await.unwrap(), Some(json!(1u64 << 40)));
        assert_eq!(get("float").await.unwrap(), Some(json!(1.25)));
        assert_eq!(
            get("bigint").await.unwrap(),
            Some(json!(12_345_678_901_234_567_890u64))
        );
        assert_eq!(
            get("string").await.unwrap(),
            Some(json!("ünïcödé 日本 \u{0}"))
        );
        assert_eq!(get("holes").await.unwrap(), Some(json!([1, null, null, 3])));
        assert_eq!(get("undefined-prop").await.unwrap(), Some(json!({"a": 1})));
        assert_eq!(get("u64").await.unwrap(), Some(json!(7)));
        assert_eq!(get("expired").await.unwrap(), None);
        let date = get("date").await.unwrap_err();
        assert_eq!(date.kind(), ErrorKind::InvalidValue);
        assert_eq!(
            store.get(&kvkey!["nested", "key"]).await.unwrap(),
            Some(json!(true))
        );

        // The listing: every string-keyed entry under the prefix, the Date as
        // an error, the numeric-part key skipped, nothing outside the prefix.
        let items: Vec<_> = store.list(None).collect().await;
        let mut keys: Vec<String> = Vec::new();
        let mut errors = 0;
        for item in items {
            match item {
                Ok(entry) => keys.push(entry.key.parts().join("/")),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e}");
                    errors += 1;
                }
            }
        }
        keys.sort();
        assert_eq!(errors, 1, "the Date");
        assert_eq!(
            keys,
            [
                "big-number",
                "bigint",
                "float",
                "holes",
                "int",
                "nested/key",
                "object",
                "string",
                "u64",
                "undefined-prop"
            ]
        );
    }

    #[tokio::test]
    async fn rust_writes_node_reads() {
        let Some(script) = node() else { return };
        let path = fresh_path("rust-writes");
        {
            let store = DenoKvStore::builder()
                .prefix(["_fedify"])
                .open(&path)
                .unwrap();
            let entries = vec![
                (
                    kvkey!["object"],
                    json!({"name": "Ada", "list": [1, null, "x"]}),
                ),
                (kvkey!["small"], json!(-5)),
                (kvkey!["big-number"], json!(1u64 << 40)),
                (kvkey!["u64-max"], json!(u64::MAX)),
                (kvkey!["i64-min"], json!(i64::MIN)),
                (kvkey!["float"], json!(1.5)),
                (kvkey!["string"], json!("ünïcödé 日本 \u{0}")),
                (kvkey!["null"], Value::Null),
                (kvkey!["a", "b"], json!([])),
            ];
            store
                .set_many(entries, SetOptions::default())
                .await
                .unwrap();
            store
                .set(
                    &kvkey!["expired"],
                    json!(1),
                    SetOptions::ttl(Duration::from_millis(50)),
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seen: serde_json::Value = serde_json::from_str(&run(&script, "read", &path)).unwrap();
        assert_eq!(
            seen,
            json!({
                r#"["_fedify","object"]"#: {"name": "Ada", "list": [1, null, "x"]},
                r#"["_fedify","small"]"#: -5,
                r#"["_fedify","big-number"]"#: 1u64 << 40,
                r#"["_fedify","u64-max"]"#: {"$bigint": u64::MAX.to_string()},
                r#"["_fedify","i64-min"]"#: {"$bigint": i64::MIN.to_string()},
                r#"["_fedify","float"]"#: 1.5,
                r#"["_fedify","string"]"#: "ünïcödé 日本 \u{0}",
                r#"["_fedify","null"]"#: null,
                r#"["_fedify","a","b"]"#: [],
                "exact": "absent",
            })
        );
    }
}

/// The KV Connect path against a real `denokv serve` on loopback. One server
/// per test process, shared by all cases, each case under a prefix of its
/// own. The server is found as `$KVTOWER_DENOKV_BIN` or `denokv` on `PATH`
/// (`.ci/run` installs it); without it these tests say SKIPPED, unless
/// `KVTOWER_REQUIRE_DENOKV=1` (set by `.ci/run`) makes that a failure.
mod remote {
    use std::net::{TcpListener, TcpStream};
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;

    use super::*;

    const TOKEN: &str = "kvtower-test-token";

    struct Server {
        url: String,
        db: std::path::PathBuf,
    }

    fn denokv_bin() -> Option<String> {
        let bin = std::env::var("KVTOWER_DENOKV_BIN").unwrap_or_else(|_| "denokv".into());
        let found = Command::new(&bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if found {
            return Some(bin);
        }
        assert!(
            std::env::var("KVTOWER_REQUIRE_DENOKV").as_deref() != Ok("1"),
            "`{bin}` not found and KVTOWER_REQUIRE_DENOKV=1"
        );
        eprintln!("SKIPPED: no `denokv` binary (cargo install denokv) for the KV Connect tests");
        None
    }

    /// Starts the shared server once. A small shell watchdog stops it when
    /// this test process exits (statics are never dropped, so a Drop guard
    /// cannot).
    fn server() -> Option<&'static Server> {
        static SERVER: OnceLock<Option<Server>> = OnceLock::new();
        SERVER
            .get_or_init(|| {
                let bin = denokv_bin()?;
                let port = TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let db = fresh_path("server");
                let script = format!(
                    "\"$0\" --sqlite-path \"$1\" serve --access-token {TOKEN} --addr 127.0.0.1:{port} & \
                     server=$!; while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $server",
                    pid = std::process::id()
                );
                // Never waited for: it outlives this process's tests by
                // design, and the watchdog ends it.
                #[allow(clippy::zombie_processes)]
                let _watchdog = Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .arg(&bin)
                    .arg(&db)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("sh runs");
                for _ in 0..200 {
                    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                        return Some(Server {
                            url: format!("http://127.0.0.1:{port}"),
                            db,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                panic!("denokv did not listen on port {port} within 10 s");
            })
            .as_ref()
    }

    /// A store on the shared server under a fresh prefix, or a local one when
    /// the server is missing (and the SKIPPED message was printed).
    pub(super) fn fresh_remote() -> DenoKvStore {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "remote-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match server() {
            Some(server) => DenoKvStore::builder()
                .prefix([prefix])
                .connect(&server.url, TOKEN)
                .unwrap(),
            None => DenoKvStore::open(fresh_path("remote-fallback")).unwrap(),
        }
    }

    mod conformance {
        kvtower::conformance_suite!(|| async { super::fresh_remote() }, 16);
    }

    #[tokio::test]
    async fn remote_declares_lazy_expiry_and_shares_the_file() {
        let Some(server) = server() else { return };
        let store = DenoKvStore::builder()
            .prefix(["shared"])
            .connect(&server.url, TOKEN)
            .unwrap();
        assert!(!store.capabilities().exact_expiry);
        assert!(store.capabilities().atomic_cas);
        store
            .set(
                &kvkey!["k"],
                json!({"via": "kv connect"}),
                SetOptions::default(),
            )
            .await
            .unwrap();
        // The server's own file, opened locally, holds the same entry.
        let local = DenoKvStore::builder()
            .prefix(["shared"])
            .open(&server.db)
            .unwrap();
        assert_eq!(
            local.get(&kvkey!["k"]).await.unwrap(),
            Some(json!({"via": "kv connect"}))
        );
        assert!(local
            .cas(
                &kvkey!["k"],
                Some(&json!({"via": "kv connect"})),
                Some(json!(2)),
                SetOptions::default()
            )
            .await
            .unwrap());
        assert_eq!(store.get(&kvkey!["k"]).await.unwrap(), Some(json!(2)));
    }

    #[tokio::test]
    async fn wrong_token_is_an_error_not_a_hang() {
        let Some(server) = server() else { return };
        let store = DenoKvStore::builder()
            .timeout(Duration::from_secs(20))
            .connect(&server.url, "wrong-token")
            .unwrap();
        let err = store.get(&kvkey!["k"]).await.unwrap_err();
        assert_ne!(err.kind(), ErrorKind::Timeout, "{err}");
    }

    #[tokio::test]
    async fn unreachable_server_times_out() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = DenoKvStore::builder()
            .timeout(Duration::from_millis(500))
            .connect(&format!("http://127.0.0.1:{port}"), TOKEN)
            .unwrap();
        let err = store.get(&kvkey!["k"]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.is_retryable());
    }

    #[test]
    fn bad_url_is_a_config_error() {
        let err = DenoKvStore::connect("not a url", TOKEN).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}

/// Issue 12 item 13: two handles on one file (the shared-with-Deno case)
/// incrementing one counter with concurrent `cas`: a lost race answers
/// `false` and a busy database is waited out, so no call fails and the
/// counter ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_file_cas_exactly() {
    let path = fresh_path("two-handles");
    let handles = [
        DenoKvStore::open(&path).unwrap(),
        DenoKvStore::open(&path).unwrap(),
    ];
    let key = kvkey!["counter"];
    handles[0]
        .set(&key, json!(0), SetOptions::default())
        .await
        .unwrap();
    let calls = (0..160).map(|i| {
        let store = handles[i % 2].clone();
        let key = key.clone();
        tokio::spawn(async move {
            loop {
                let current = store.get(&key).await.unwrap().unwrap();
                let next = json!(current.as_u64().unwrap() + 1);
                match store
                    .cas(&key, Some(&current), Some(next), SetOptions::default())
                    .await
                {
                    Ok(true) => return,
                    Ok(false) => continue,
                    Err(e) => panic!("cas failed: {e} (retryable: {})", e.is_retryable()),
                }
            }
        })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap();
    }
    for store in &handles {
        assert_eq!(store.get(&key).await.unwrap(), Some(json!(160)));
    }
}
