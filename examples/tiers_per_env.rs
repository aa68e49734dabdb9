//! The same application code over three tiers, chosen by configuration:
//! `APP_ENV=dev` (memory), `test` (SQLite) and `prod` (metrics + prefix +
//! cache + Redis, with the cross-node invalidation bus), from the files in
//! `examples/config/`.
//!
//! ```sh
//! APP_ENV=dev  cargo run --example tiers_per_env --features config
//! APP_ENV=test cargo run --example tiers_per_env --features config
//! APP_ENV=prod cargo run --example tiers_per_env --features config,redis
//! ```
//!
//! Without `APP_ENV` the dev tier runs. `KVTOWER_CONFIG=path/to/file.toml`
//! runs any other configuration file instead.

use std::path::PathBuf;
use std::time::Duration;

use kvtower::config::StoreConfig;
use kvtower::{kvkey, DynKvStore, KvStore, KvStoreExt, SetOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct User {
    name: String,
    email: String,
}

#[tokio::main]
async fn main() -> kvtower::Result<()> {
    let config = match std::env::var_os("KVTOWER_CONFIG") {
        Some(_) => StoreConfig::from_env()?,
        None => {
            let env = std::env::var("APP_ENV").unwrap_or_else(|_| "dev".to_owned());
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("examples/config")
                .join(format!("{env}.toml"));
            println!("APP_ENV={env}: {}", path.display());
            StoreConfig::from_toml_file(&path)?
        }
    };
    // Debug output is safe to log: passwords in URLs are redacted.
    println!("config: {config:?}");
    let store = config.build().await?;
    app(&store).await
}

/// The application: it knows a `KvStore`, not which one.
async fn app(store: &DynKvStore) -> kvtower::Result<()> {
    // Entries live an hour: the prod tier writes to a shared Redis.
    let hour = SetOptions::ttl(Duration::from_secs(3600));

    let ada = kvkey!["users", "ada"];
    let user = User {
        name: "Ada".into(),
        email: "ada@example.com".into(),
    };
    store.set_as(&ada, &user, hour).await?;
    println!("set   {ada} = {user:?}");
    let read: Option<User> = store.get_as(&ada).await?;
    println!("get   {ada} -> {read:?}");

    store
        .set(
            &kvkey!["users", "grace"],
            serde_json::json!({"name": "Grace", "email": "grace@example.com"}),
            hour,
        )
        .await?;

    // A counter kept across runs (by the persistent tiers), incremented with
    // compare-and-swap so concurrent runs never lose an increment.
    let runs = kvkey!["stats", "runs"];
    let count = loop {
        let current = store.get(&runs).await?;
        let next = current.as_ref().and_then(|v| v.as_u64()).unwrap_or(0) + 1;
        if store
            .cas(&runs, current.as_ref(), Some(next.into()), hour)
            .await?
        {
            break next;
        }
    };
    println!("cas   {runs}: run number {count}");

    let users = store.list_all(Some(kvkey!["users"])).await?;
    println!("list  [\"users\"] -> {} entries", users.len());
    for entry in users {
        println!("      {} = {}", entry.key, entry.value);
    }
    Ok(())
}
