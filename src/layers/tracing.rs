//! [`TracingLayer`]: a [`tracing`] span per operation.
//!
//! Each call runs in an `INFO` span named `kvtower` with the fields `op`,
//! `store`, and, once it returned, `outcome` (`hit`, `miss`, `ok`,
//! `error`), `latency_us` and on failure `error_kind`. Keys are logged only
//! in a `DEBUG` event inside the span: key parts can hold user data, so they
//! never appear at `INFO` (nor does an error's message, which names the key).
//!
//! ```
//! use kvtower::layers::TracingLayer;
//! use kvtower::{kvkey, KvStore, MemoryKvStore};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let store = ServiceBuilder::new()
//!     .layer(TracingLayer::new("sessions"))
//!     .service(MemoryKvStore::new());
//! store.get(&kvkey!["s", "1"]).await?; // span kvtower{op="get" store="sessions" outcome="miss" latency_us=..}
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, Stream, StreamExt};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::metrics::{OUTCOME_ERROR, OUTCOME_HIT, OUTCOME_MISS, OUTCOME_OK};
use crate::error::{Error, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};

/// A [`tower::Layer`] that wraps a store in [`Tracing`].
///
/// ```
/// use kvtower::{layers::TracingLayer, MemoryKvStore};
/// use tower::Layer;
/// let store = TracingLayer::new("users").layer(MemoryKvStore::new());
/// # let _ = store;
/// ```
#[derive(Debug, Clone)]
pub struct TracingLayer {
    name: Arc<str>,
}

impl TracingLayer {
    /// A layer whose spans carry `store = name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into().into(),
        }
    }
}

impl<S> tower::Layer<S> for TracingLayer {
    type Service = Tracing<S>;

    fn layer(&self, inner: S) -> Tracing<S> {
        Tracing {
            inner,
            name: self.name.clone(),
        }
    }
}

/// A store whose operations each run in a span. Built by [`TracingLayer`].
///
/// ```
/// use kvtower::{layers::TracingLayer, MemoryKvStore};
/// use tower::Layer;
/// let store = TracingLayer::new("users").layer(MemoryKvStore::new());
/// let _inner: &MemoryKvStore = store.inner();
/// ```
#[derive(Debug, Clone)]
pub struct Tracing<S> {
    inner: S,
    name: Arc<str>,
}

impl<S> Tracing<S> {
    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn span(&self, op: Operation) -> Span {
        tracing::info_span!(
            "kvtower",
            op = op.as_str(),
            store = &*self.name,
            outcome = Empty,
            latency_us = Empty,
            error_kind = Empty,
        )
    }
}

fn finish<T>(
    span: &Span,
    start: Instant,
    result: std::result::Result<&T, &Error>,
    outcome: impl FnOnce(&T) -> &'static str,
) {
    let latency = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.record("latency_us", latency);
    match result {
        Ok(value) => {
            span.record("outcome", outcome(value));
        }
        Err(e) => {
            span.record("outcome", OUTCOME_ERROR);
            span.record("error_kind", e.kind().as_str());
            // The message names the key: debug level only.
            tracing::debug!(parent: span, error = %e, "kvtower operation failed");
        }
    }
}

fn hit_or_miss<T>(value: &Option<T>) -> &'static str {
    if value.is_some() {
        OUTCOME_HIT
    } else {
        OUTCOME_MISS
    }
}

fn ok<T>(_: &T) -> &'static str {
    OUTCOME_OK
}

async fn traced<T>(
    span: Span,
    call: impl Future<Output = Result<T>>,
    outcome: impl FnOnce(&T) -> &'static str,
) -> Result<T> {
    let start = Instant::now();
    let result = call.instrument(span.clone()).await;
    finish(&span, start, result.as_ref(), outcome);
    result
}

#[async_trait]
impl<S: KvStore> KvStore for Tracing<S> {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        let span = self.span(Operation::Get);
        tracing::debug!(parent: &span, key = %key, "kvtower operation");
        traced(span, self.inner.get(key), hit_or_miss).await
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        let span = self.span(Operation::Get);
        tracing::debug!(parent: &span, key = %key, "kvtower operation");
        traced(span, self.inner.get_with_ttl(key), hit_or_miss).await
    }

    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        let start = Instant::now();
        let span = self.span(Operation::Get);
        match self.inner.get_shared(key).into_ready() {
            // Answered from memory: the span is recorded at once (a no-op
            // with no subscriber interested).
            Ok(answer) => {
                if !span.is_disabled() {
                    tracing::debug!(parent: &span, key = %key, "kvtower operation");
                    finish(&span, start, answer.as_ref(), hit_or_miss);
                }
                SharedGet::ready(answer)
            }
            Err(pending) => {
                tracing::debug!(parent: &span, key = %key, "kvtower operation");
                SharedGet::boxed(traced(span, pending, hit_or_miss))
            }
        }
    }

    async fn set_shared(&self, key: &KvKey, value: Arc<Value>, options: SetOptions) -> Result<()> {
        let span = self.span(Operation::Set);
        tracing::debug!(parent: &span, key = %key, "kvtower operation");
        traced(span, self.inner.set_shared(key, value, options), ok).await
    }

    // A hit answered in memory gets its span too, so traces show every read;
    // with no subscriber interested, the span is a no-op.
    fn probe(&self, key: &KvKey) -> Option<Arc<Value>> {
        let start = Instant::now();
        let value = self.inner.probe(key)?;
        let span = self.span(Operation::Get);
        if !span.is_disabled() {
            tracing::debug!(parent: &span, key = %key, "kvtower operation");
            finish(&span, start, Ok(&Some(())), hit_or_miss);
        }
        Some(value)
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let span = self.span(Operation::Set);
        tracing::debug!(parent: &span, key = %key, ttl = ?options.ttl, "kvtower operation");
        traced(span, self.inner.set(key, value, options), ok).await
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        let span = self.span(Operation::Delete);
        tracing::debug!(parent: &span, key = %key, "kvtower operation");
        traced(span, self.inner.delete(key), ok).await
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let span = self.span(Operation::Cas);
        tracing::debug!(parent: &span, key = %key, ttl = ?options.ttl, "kvtower operation");
        traced(span, self.inner.cas(key, expected, new, options), ok).await
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        let span = self.span(Operation::List);
        if let Some(prefix) = &prefix {
            tracing::debug!(parent: &span, prefix = %prefix, "kvtower list");
        }
        TracedList {
            inner: self.inner.list(prefix),
            span,
            start: Instant::now(),
            done: false,
        }
        .boxed()
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        let span = self.span(Operation::GetMany);
        tracing::debug!(parent: &span, keys = ?keys, "kvtower operation");
        traced(span, self.inner.get_many(keys), ok).await
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        let span = self.span(Operation::GetMany);
        tracing::debug!(parent: &span, keys = ?keys, "kvtower operation");
        traced(span, self.inner.get_many_with_ttl(keys), ok).await
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        let span = self.span(Operation::SetMany);
        tracing::debug!(parent: &span, count = entries.len(), ttl = ?options.ttl, "kvtower operation");
        traced(span, self.inner.set_many(entries, options), ok).await
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        let span = self.span(Operation::DeleteMany);
        tracing::debug!(parent: &span, keys = ?keys, "kvtower operation");
        traced(span, self.inner.delete_many(keys), ok).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// A listing polled inside its span, which records the outcome when the
/// stream ends or first fails.
struct TracedList<'a> {
    inner: BoxStream<'a, Result<KvEntry>>,
    span: Span,
    start: Instant,
    done: bool,
}

impl Stream for TracedList<'_> {
    type Item = Result<KvEntry>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = {
            let _entered = this.span.enter();
            futures::ready!(this.inner.poll_next_unpin(cx))
        };
        if !this.done {
            match &item {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    this.done = true;
                    finish::<()>(&this.span, this.start, Err(e), ok);
                }
                None => {
                    this.done = true;
                    finish(&this.span, this.start, Ok(&()), ok);
                }
            }
        }
        Poll::Ready(item)
    }
}
