//! A Rust service sharing a Deno KV database with a Deno (or Fedify) app.
//!
//! `cargo run --example denokv --features denokv [-- PATH]`
//!
//! Opens the database file at PATH (a temporary file by default) under
//! Fedify's key prefix `["_fedify"]`, writes a value a Deno program reads as
//! `await kv.get(["_fedify", "greeting", "rust"])`, and lists what is there.
//! Pass `http://HOST:PORT` and set `DENO_KV_ACCESS_TOKEN` to use a `denokv
//! serve` over KV Connect instead.

use std::time::Duration;

use futures::TryStreamExt;
use kvtower::{kvkey, DenoKvStore, KvStore, SetOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> kvtower::Result<()> {
    let target = std::env::args().nth(1);
    let builder = DenoKvStore::builder().prefix(["_fedify"]);
    let _dir;
    let store = match target.as_deref() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            let token = std::env::var("DENO_KV_ACCESS_TOKEN").unwrap_or_default();
            builder.connect(url, &token)?
        }
        Some(path) => builder.open(path)?,
        None => {
            _dir = tempfile::tempdir().map_err(|e| kvtower::Error::config(e.to_string()))?;
            builder.open(_dir.path().join("kv.sqlite3"))?
        }
    };
    println!("{store:?}");

    store
        .set(
            &kvkey!["greeting", "rust"],
            json!({"text": "hello from Rust", "big": u64::MAX}),
            SetOptions::ttl(Duration::from_secs(3600)),
        )
        .await?;
    // cas: atomic, checked against Deno KV's versionstamp.
    let swapped = store
        .cas(
            &kvkey!["counter"],
            None,
            Some(json!(1)),
            SetOptions::default(),
        )
        .await?;
    println!("created counter: {swapped}");

    let mut entries = store.list(None);
    while let Some(entry) = entries.try_next().await? {
        println!("{} = {}", entry.key, entry.value);
    }
    Ok(())
}
