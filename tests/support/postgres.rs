//! Throwaway Postgres tables on the server of [`super::postgres`].

use super::postgres_url;

/// A unique Postgres test table name, the table dropped when the guard is
/// (also on panic).
#[cfg(feature = "postgres")]
pub struct TestTable(pub String);

#[cfg(feature = "postgres")]
impl TestTable {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Self(format!(
            "kv_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

#[cfg(feature = "postgres")]
impl Drop for TestTable {
    fn drop(&mut self) {
        use kvtower::stores::postgres::deadpool_postgres::tokio_postgres::{self, NoTls};
        let sql = format!("DROP TABLE IF EXISTS \"{}\"", self.0);
        // Its own thread and runtime: Drop may run inside another runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&postgres_url(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}
