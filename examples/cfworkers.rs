//! A Rust server sharing a Cloudflare Workers KV namespace with a Workers app
//! (Fedify's `WorkersKvStore` layout), through the Cloudflare KV HTTP API.
//!
//! ```sh
//! CF_ACCOUNT_ID=... CF_KV_NAMESPACE_ID=... CF_API_TOKEN=... \
//!   cargo run --example cfworkers --features cfworkers
//! ```
//!
//! `CF_API_BASE_URL` points it elsewhere (a local emulator, for example).

use std::time::Duration;

use futures::TryStreamExt;
use kvtower::{kvkey, ErrorKind, KvStore, SetOptions, WorkersKvStore};
use serde_json::json;

#[tokio::main]
async fn main() -> kvtower::Result<()> {
    let var = |name: &str| std::env::var(name).ok();
    let (Some(account), Some(namespace), Some(token)) = (
        var("CF_ACCOUNT_ID"),
        var("CF_KV_NAMESPACE_ID"),
        var("CF_API_TOKEN"),
    ) else {
        eprintln!("set CF_ACCOUNT_ID, CF_KV_NAMESPACE_ID and CF_API_TOKEN (see the file's docs)");
        return Ok(());
    };
    let mut builder = WorkersKvStore::builder(account, namespace, token);
    if let Some(url) = var("CF_API_BASE_URL") {
        builder = builder.base_url(url);
    }
    let store = builder.build()?;

    // A 10-second TTL: under Workers KV's 60-second minimum, kept in metadata.
    store
        .set(
            &kvkey!["_fedify", "greeting"],
            json!({"text": "hello from Rust"}),
            SetOptions::ttl(Duration::from_secs(10)),
        )
        .await?;
    println!("{:?}", store.get(&kvkey!["_fedify", "greeting"]).await?);

    let entries: Vec<_> = store.list(Some(kvkey!["_fedify"])).try_collect().await?;
    println!("{} entries under [\"_fedify\"]", entries.len());

    let err = store
        .cas(
            &kvkey!["_fedify", "greeting"],
            None,
            None,
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    println!("cas: {err}");
    Ok(())
}
