//! The cache tiers one coherence source keeps honest, and the rule every
//! source follows when it may have missed changes: stop serving, clear, and
//! clear again before serving once it hears everything again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use crate::key::KvKey;
use crate::layers::{CacheHandle, WeakCacheHandle};

/// The attached tiers and whether the source is live.
pub(super) struct Targets {
    /// What the source is called in logs (a channel, a key prefix).
    name: String,
    /// Weak, so that a cache holding the source and registered on it is not
    /// kept alive by it (and the source's tasks stop when the cache is gone).
    list: Mutex<Vec<WeakCacheHandle>>,
    connected: AtomicBool,
    connected_tx: watch::Sender<bool>,
}

impl Targets {
    pub(super) fn new(name: String) -> Self {
        Self {
            name,
            list: Mutex::new(Vec::new()),
            connected: AtomicBool::new(false),
            connected_tx: watch::channel(false).0,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn attach(&self, cache: WeakCacheHandle) {
        // A poisoned lock only means a target panicked; the list is intact.
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cache);
    }

    /// The live targets (dropped ones are forgotten).
    pub(super) fn live(&self) -> Vec<CacheHandle> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|t| !t.is_dropped());
        list.iter().filter_map(WeakCacheHandle::upgrade).collect()
    }

    /// Drops `keys` from every target.
    pub(super) async fn invalidate(&self, keys: &[KvKey]) {
        for target in self.live() {
            if let Err(err) = target.invalidate_many(keys).await {
                tracing::warn!(source = %self.name, error_kind = %err.kind(), "cannot invalidate a front tier");
            }
        }
    }

    /// Empties every target.
    pub(super) async fn clear(&self) {
        for target in self.live() {
            if let Err(err) = target.clear().await {
                tracing::warn!(source = %self.name, error_kind = %err.kind(), "cannot clear a front tier");
            }
        }
    }

    pub(super) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub(super) async fn wait_connected(&self) {
        let mut rx = self.connected_tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Records that the source hears every change again (`true`) or may
    /// miss some (`false`).
    pub(super) async fn set_connected(&self, connected: bool) {
        if connected {
            // Clear before serving again: anything filled while the source
            // was down may have missed its invalidation.
            self.clear().await;
            self.connected.store(true, Ordering::SeqCst);
        } else {
            // Stop serving first, then clear, so no read is served from a
            // front tier that may already be stale.
            self.connected.store(false, Ordering::SeqCst);
            self.clear().await;
        }
        self.connected_tx.send_replace(connected);
    }
}
