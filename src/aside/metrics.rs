//! The metric names, labels and handles of [`CacheAside`](super::CacheAside)
//! (the table is in the [module docs](super#metrics)).

use crate::operation::Operation;
use metrics::{counter, histogram, Counter, Histogram};

/// `kvtower_aside_requests_total`: `get_or_set` calls by outcome.
pub const REQUESTS_TOTAL: &str = "kvtower_aside_requests_total";
/// `kvtower_aside_loader_calls_total`: loader calls by outcome.
pub const LOADER_CALLS_TOTAL: &str = "kvtower_aside_loader_calls_total";
/// `kvtower_aside_loader_duration_seconds`: how long loaders ran.
pub const LOADER_DURATION_SECONDS: &str = "kvtower_aside_loader_duration_seconds";
/// `kvtower_aside_stale_served_total`: stale values served, by reason.
pub const STALE_SERVED_TOTAL: &str = "kvtower_aside_stale_served_total";
/// `kvtower_aside_timeouts_total`: calls that stopped waiting, by timeout.
pub const TIMEOUTS_TOTAL: &str = "kvtower_aside_timeouts_total";
/// `kvtower_aside_background_completions_total`: loads that finished after
/// a caller stopped waiting, by outcome.
pub const BACKGROUND_COMPLETIONS_TOTAL: &str = "kvtower_aside_background_completions_total";
/// `kvtower_aside_refreshes_total`: eager refreshes, by outcome.
pub const REFRESHES_TOTAL: &str = "kvtower_aside_refreshes_total";
/// `kvtower_aside_lease_total`: lease attempts, by outcome.
pub const LEASE_TOTAL: &str = "kvtower_aside_lease_total";
/// `kvtower_aside_store_errors_total`: failed store calls the facade
/// survived, by operation.
pub const STORE_ERRORS_TOTAL: &str = "kvtower_aside_store_errors_total";

/// Label: the name given to
/// [`CacheAsideBuilder::name`](super::CacheAsideBuilder::name).
pub const LABEL_CACHE: &str = "cache";
/// Label: what happened.
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: why a stale value was served.
pub const LABEL_REASON: &str = "reason";
/// Label: which timeout (`soft` or `hard`).
pub const LABEL_TIMEOUT: &str = "timeout";
/// Label: the store operation (`get`, `set`, `lease`).
pub const LABEL_OPERATION: &str = "operation";

#[derive(Debug)]
pub(crate) struct Instruments {
    pub(crate) hit: Counter,
    pub(crate) miss: Counter,
    pub(crate) loader_ok: Counter,
    pub(crate) loader_error: Counter,
    pub(crate) loader_timeout: Counter,
    pub(crate) loader_duration: Histogram,
    pub(crate) stale_loader_error: Counter,
    pub(crate) stale_soft_timeout: Counter,
    pub(crate) stale_hard_timeout: Counter,
    pub(crate) timeout_soft: Counter,
    pub(crate) timeout_hard: Counter,
    pub(crate) background_ok: Counter,
    pub(crate) background_error: Counter,
    pub(crate) refresh_started: Counter,
    pub(crate) refresh_busy: Counter,
    pub(crate) lease_acquired: Counter,
    pub(crate) lease_busy: Counter,
    pub(crate) lease_takeover: Counter,
    pub(crate) lease_error: Counter,
    pub(crate) store_get_error: Counter,
    pub(crate) store_set_error: Counter,
}

impl Instruments {
    pub(crate) fn new(cache: &str) -> Self {
        let cache = cache.to_owned();
        let c = |name: &'static str, label: &'static str, value: &'static str| counter!(name, LABEL_CACHE => cache.clone(), label => value);
        Self {
            hit: c(REQUESTS_TOTAL, LABEL_OUTCOME, "hit"),
            miss: c(REQUESTS_TOTAL, LABEL_OUTCOME, "miss"),
            loader_ok: c(LOADER_CALLS_TOTAL, LABEL_OUTCOME, "ok"),
            loader_error: c(LOADER_CALLS_TOTAL, LABEL_OUTCOME, "error"),
            loader_timeout: c(LOADER_CALLS_TOTAL, LABEL_OUTCOME, "timeout"),
            loader_duration: histogram!(LOADER_DURATION_SECONDS, LABEL_CACHE => cache.clone()),
            stale_loader_error: c(STALE_SERVED_TOTAL, LABEL_REASON, "loader_error"),
            stale_soft_timeout: c(STALE_SERVED_TOTAL, LABEL_REASON, "soft_timeout"),
            stale_hard_timeout: c(STALE_SERVED_TOTAL, LABEL_REASON, "hard_timeout"),
            timeout_soft: c(TIMEOUTS_TOTAL, LABEL_TIMEOUT, "soft"),
            timeout_hard: c(TIMEOUTS_TOTAL, LABEL_TIMEOUT, "hard"),
            background_ok: c(BACKGROUND_COMPLETIONS_TOTAL, LABEL_OUTCOME, "ok"),
            background_error: c(BACKGROUND_COMPLETIONS_TOTAL, LABEL_OUTCOME, "error"),
            refresh_started: c(REFRESHES_TOTAL, LABEL_OUTCOME, "started"),
            refresh_busy: c(REFRESHES_TOTAL, LABEL_OUTCOME, "busy"),
            lease_acquired: c(LEASE_TOTAL, LABEL_OUTCOME, "acquired"),
            lease_busy: c(LEASE_TOTAL, LABEL_OUTCOME, "busy"),
            lease_takeover: c(LEASE_TOTAL, LABEL_OUTCOME, "takeover"),
            lease_error: c(LEASE_TOTAL, LABEL_OUTCOME, "error"),
            store_get_error: c(STORE_ERRORS_TOTAL, LABEL_OPERATION, Operation::Get.as_str()),
            store_set_error: c(STORE_ERRORS_TOTAL, LABEL_OPERATION, Operation::Set.as_str()),
        }
    }
}
