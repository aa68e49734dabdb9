//! Deleting expired rows: the background task and the on-demand sweep.

use std::sync::Weak;
use std::time::Duration;

use super::error::pg_error;
use super::{prepare, Inner};
use crate::error::{Result, ResultExt};
use crate::operation::Operation;
use crate::stores::sql;

/// Sweeps every `every` while the store lives: the task holds a `Weak`, so it
/// ends at the first tick after the last handle is dropped.
pub(super) fn spawn_sweeper(store: Weak<Inner>, every: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("kvtower: no Tokio runtime, expired Postgres rows are not swept");
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        loop {
            tick.tick().await;
            let Some(inner) = store.upgrade() else { return };
            if let Err(e) = sweep_all(&inner).await {
                tracing::warn!(error = %e, "kvtower: sweeping expired Postgres rows failed");
            }
        }
    });
}

pub(super) async fn sweep_all(inner: &Inner) -> Result<u64> {
    async {
        let batch = i64::try_from(sql::SWEEP_BATCH).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            // Each batch is one operation, within the timeout.
            let deleted = inner
                .run(Operation::Sweep, async |client| {
                    let stmt = prepare(client, &inner.sql.sweep).await?;
                    client.execute(&stmt, &[&batch]).await.map_err(pg_error)
                })
                .await?;
            total += deleted;
            if deleted < sql::SWEEP_BATCH as u64 {
                return Ok(total);
            }
        }
    }
    .await
    .op(Operation::Sweep)
}
