//! The bridge to tower's own middleware: [`KvRequest`] / [`KvResponse`], a
//! [`tower::Service`] for any store ([`KvService`]), and the reverse adapter
//! from a `Service<KvRequest>` back to a store ([`ServiceStore`]).
//!
//! With both, `tower::timeout`, `tower::retry`, `tower::limit` and
//! `tower::load_shed` sit anywhere in a stack: [`ServiceStoreLayer`] turns
//! what is below it back into a store, [`KvServiceLayer`] turns a store into
//! a service. [`RetryPolicy`] is a `tower::retry::Policy` for these requests
//! (retryable errors only, doubling backoff, no replay of a `cas` that may have been applied).
//!
//! ```
//! use kvtower::layers::CacheLayer;
//! use kvtower::service::{KvServiceLayer, ServiceStoreLayer};
//! use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let store = ServiceBuilder::new()
//!     .layer(CacheLayer::new(MemoryKvStore::new())) // a store layer...
//!     .layer(ServiceStoreLayer)                      // ...over a store made of...
//!     .timeout(Duration::from_millis(200))           // ...tower middleware...
//!     .layer(KvServiceLayer)                         // ...over a service made of...
//!     .service(MemoryKvStore::new());                // ...the backend (Redis, say).
//! store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
//! assert_eq!(store.get(&kvkey!["a"]).await?, Some(1.into()));
//! # Ok(())
//! # }
//! ```
//!
//! Errors coming back through tower middleware are mapped to [`Error`]: a
//! kvtower error passes unchanged, tower's timeout becomes
//! [`ErrorKind::Timeout`], load shedding becomes a retryable
//! [`ErrorKind::Unavailable`], anything else [`ErrorKind::Backend`] with the
//! original as its source.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use tower::{Service, ServiceExt};

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, SharedGet, Value};

/// One [`KvStore`] call as a value. `Clone`, so `tower::retry` can replay it.
///
/// ```
/// use kvtower::{kvkey, service::KvRequest, Operation};
/// let request = KvRequest::Get(kvkey!["a"]);
/// assert_eq!(request.operation(), Operation::Get);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum KvRequest {
    /// [`KvStore::get`]; answered with [`KvResponse::Value`].
    Get(KvKey),
    /// [`KvStore::set`]; answered with [`KvResponse::Done`].
    Set {
        /// The key.
        key: KvKey,
        /// The value.
        value: Value,
        /// The write options.
        options: SetOptions,
    },
    /// [`KvStore::delete`]; answered with [`KvResponse::Done`].
    Delete(KvKey),
    /// [`KvStore::cas`]; answered with [`KvResponse::Swapped`].
    Cas {
        /// The key.
        key: KvKey,
        /// The value expected (`None`: absent).
        expected: Option<Value>,
        /// The new value (`None`: delete).
        new: Option<Value>,
        /// The write options.
        options: SetOptions,
    },
    /// [`KvStore::get_with_ttl`]; answered with [`KvResponse::ValueWithTtl`].
    GetWithTtl(KvKey),
    /// [`KvStore::list`]; answered with [`KvResponse::Entries`], collected (or
    /// [`KvResponse::Listing`] when some items are errors).
    List(Option<KvKey>),
    /// [`KvStore::get_many`]; answered with [`KvResponse::Values`].
    GetMany(Vec<KvKey>),
    /// [`KvStore::get_many_with_ttl`]; answered with
    /// [`KvResponse::ValuesWithTtl`].
    GetManyWithTtl(Vec<KvKey>),
    /// [`KvStore::set_many`]; answered with [`KvResponse::Done`].
    SetMany {
        /// The entries.
        entries: Vec<(KvKey, Value)>,
        /// The write options of every entry.
        options: SetOptions,
    },
    /// [`KvStore::delete_many`]; answered with [`KvResponse::Done`].
    DeleteMany(Vec<KvKey>),
}

impl KvRequest {
    /// The operation this request runs (its [`as_str`](Operation::as_str)
    /// is the name in errors and metrics).
    ///
    /// ```
    /// use kvtower::service::KvRequest;
    /// use kvtower::{kvkey, Operation};
    ///
    /// assert_eq!(KvRequest::GetMany(vec![kvkey!["a"]]).operation(), Operation::GetMany);
    /// ```
    pub fn operation(&self) -> Operation {
        match self {
            KvRequest::Get(_) => Operation::Get,
            KvRequest::Set { .. } => Operation::Set,
            KvRequest::Delete(_) => Operation::Delete,
            KvRequest::Cas { .. } => Operation::Cas,
            KvRequest::List(_) => Operation::List,
            KvRequest::GetMany(_) => Operation::GetMany,
            KvRequest::GetWithTtl(_) => Operation::GetWithTtl,
            KvRequest::GetManyWithTtl(_) => Operation::GetManyWithTtl,
            KvRequest::SetMany { .. } => Operation::SetMany,
            KvRequest::DeleteMany(_) => Operation::DeleteMany,
        }
    }

    /// Runs the request on `store`.
    ///
    /// ```
    /// use kvtower::service::{KvRequest, KvResponse};
    /// use kvtower::{kvkey, MemoryKvStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kvtower::Result<()> {
    /// let response = KvRequest::Get(kvkey!["a"]).run(&MemoryKvStore::new()).await?;
    /// assert_eq!(response, KvResponse::Value(None));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run<S: KvStore + ?Sized>(self, store: &S) -> Result<KvResponse> {
        use futures::StreamExt as _;
        Ok(match self {
            KvRequest::Get(key) => KvResponse::Value(store.get(&key).await?),
            KvRequest::Set {
                key,
                value,
                options,
            } => {
                store.set(&key, value, options).await?;
                KvResponse::Done
            }
            KvRequest::Delete(key) => {
                store.delete(&key).await?;
                KvResponse::Done
            }
            KvRequest::Cas {
                key,
                expected,
                new,
                options,
            } => KvResponse::Swapped(store.cas(&key, expected.as_ref(), new, options).await?),
            KvRequest::List(prefix) => {
                // Every item, errors in place: one undecodable entry must not
                // hide the others (a store's listing goes on past it).
                let items: Vec<Result<KvEntry>> = store.list(prefix).collect().await;
                if items.iter().all(Result::is_ok) {
                    KvResponse::Entries(items.into_iter().flatten().collect())
                } else {
                    KvResponse::Listing(items)
                }
            }
            KvRequest::GetMany(keys) => KvResponse::Values(store.get_many(&keys).await?),
            KvRequest::GetWithTtl(key) => KvResponse::ValueWithTtl(store.get_with_ttl(&key).await?),
            KvRequest::GetManyWithTtl(keys) => {
                KvResponse::ValuesWithTtl(store.get_many_with_ttl(&keys).await?)
            }
            KvRequest::SetMany { entries, options } => {
                store.set_many(entries, options).await?;
                KvResponse::Done
            }
            KvRequest::DeleteMany(keys) => {
                store.delete_many(&keys).await?;
                KvResponse::Done
            }
        })
    }
}

/// The answer to a [`KvRequest`].
///
/// ```
/// use kvtower::service::KvResponse;
/// assert_ne!(KvResponse::Done, KvResponse::Swapped(true));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum KvResponse {
    /// The value of a `get` (`None`: absent).
    Value(Option<Value>),
    /// A `set`, `delete`, `set_many` or `delete_many` succeeded.
    Done,
    /// Whether a `cas` swapped.
    Swapped(bool),
    /// The entries of a `list` (every one read fine).
    Entries(Vec<KvEntry>),
    /// The items of a `list` of which some are errors (an entry another
    /// program wrote that does not decode, say), in the order the store
    /// yielded them: [`ServiceStore`] yields each in turn, so the good entries
    /// still arrive.
    Listing(Vec<Result<KvEntry>>),
    /// The values of a `get_many`, in order.
    Values(Vec<Option<Value>>),
    /// The value of a `get_with_ttl` with its remaining lifetime.
    ValueWithTtl(Option<(Value, Option<Duration>)>),
    /// The values of a `get_many_with_ttl`, in order.
    ValuesWithTtl(Vec<Option<(Value, Option<Duration>)>>),
}

/// Any store as a [`tower::Service<KvRequest>`](tower::Service). Cheap to
/// clone (the store is behind an [`Arc`]); always ready.
///
/// ```
/// use kvtower::service::{KvRequest, KvResponse, KvService};
/// use kvtower::{kvkey, MemoryKvStore};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let service = KvService::new(MemoryKvStore::new());
/// let response = service.oneshot(KvRequest::Get(kvkey!["a"])).await?;
/// assert_eq!(response, KvResponse::Value(None));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct KvService<S> {
    store: Arc<S>,
}

impl<S> Clone for KvService<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
        }
    }
}

impl<S> KvService<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Self {
            store: Arc::new(store),
        }
    }

    /// The store.
    pub fn inner(&self) -> &S {
        &self.store
    }
}

impl<S: KvStore + 'static> Service<KvRequest> for KvService<S> {
    type Response = KvResponse;
    type Error = Error;
    type Future = BoxFuture<'static, Result<KvResponse>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: KvRequest) -> Self::Future {
        let store = self.store.clone();
        Box::pin(async move { request.run(&*store).await })
    }
}

/// A [`tower::Layer`] making a [`KvService`] of a store.
///
/// ```
/// use kvtower::{service::KvServiceLayer, MemoryKvStore};
/// use tower::Layer;
/// let service = KvServiceLayer.layer(MemoryKvStore::new());
/// # let _ = service;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct KvServiceLayer;

impl<S> tower::Layer<S> for KvServiceLayer {
    type Service = KvService<S>;

    fn layer(&self, store: S) -> KvService<S> {
        KvService::new(store)
    }
}

/// A [`tower::Service<KvRequest>`](tower::Service) as a store: each call
/// clones the service (wrap a service that is not `Clone` in
/// `tower::buffer::Buffer`), waits until it is ready, and calls it. `list`
/// yields the collected entries of one [`KvRequest::List`].
///
/// ```
/// use kvtower::service::{KvService, ServiceStore};
/// use kvtower::{kvkey, KvStore, MemoryKvStore};
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let service = tower::timeout::Timeout::new(KvService::new(MemoryKvStore::new()), Duration::from_secs(1));
/// let store = ServiceStore::new(service);
/// assert_eq!(store.get(&kvkey!["a"]).await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ServiceStore<Svc> {
    service: Svc,
    capabilities: Capabilities,
}

impl<Svc> ServiceStore<Svc> {
    /// Wraps `service`, promising the full contract (see
    /// [`with_capabilities`](Self::with_capabilities)).
    pub fn new(service: Svc) -> Self {
        Self {
            service,
            capabilities: Capabilities::full(),
        }
    }

    /// What the store behind the service promises: a service cannot be asked,
    /// so say it here when it is less than the full contract.
    ///
    /// ```
    /// use kvtower::service::{KvService, ServiceStore};
    /// use kvtower::{Capabilities, KvStore, MemoryKvStore};
    /// let store = ServiceStore::new(KvService::new(MemoryKvStore::new()))
    ///     .with_capabilities(Capabilities::full().with_exact_expiry(false));
    /// assert!(!store.capabilities().exact_expiry);
    /// ```
    #[must_use]
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The service.
    pub fn inner(&self) -> &Svc {
        &self.service
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> Svc {
        self.service
    }
}

/// A [`tower::Layer`] making a [`ServiceStore`] of a service.
///
/// ```
/// use kvtower::service::{KvServiceLayer, ServiceStoreLayer};
/// use kvtower::MemoryKvStore;
/// use tower::Layer;
/// let store = ServiceStoreLayer.layer(KvServiceLayer.layer(MemoryKvStore::new()));
/// # let _ = store;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceStoreLayer;

impl<Svc> tower::Layer<Svc> for ServiceStoreLayer {
    type Service = ServiceStore<Svc>;

    fn layer(&self, service: Svc) -> ServiceStore<Svc> {
        ServiceStore::new(service)
    }
}

/// Maps an error out of a tower stack back to an [`Error`].
fn into_error(error: tower::BoxError, operation: Operation) -> Error {
    let error = match error.downcast::<Error>() {
        Ok(error) => return error.with_operation(operation),
        Err(other) => other,
    };
    if error.is::<tower::timeout::error::Elapsed>() {
        return Error::new(ErrorKind::Timeout, "the operation timed out")
            .with_operation(operation)
            .with_source(error);
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return Error::new(ErrorKind::Unavailable, "the service is overloaded")
            .with_operation(operation)
            .with_retryable(true)
            .with_source(error);
    }
    Error::new(ErrorKind::Backend, error.to_string())
        .with_operation(operation)
        .with_source(error)
}

fn unexpected(operation: Operation, response: &KvResponse) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!("unexpected response to {operation}: {response:?}"),
    )
    .with_operation(operation)
}

impl<Svc> ServiceStore<Svc>
where
    Svc: Service<KvRequest, Response = KvResponse> + Clone + Send + Sync + 'static,
    Svc::Error: Into<tower::BoxError>,
    Svc::Future: Send,
{
    async fn call(&self, request: KvRequest) -> Result<KvResponse> {
        let operation = request.operation();
        let mut service = self.service.clone();
        let ready = service
            .ready()
            .await
            .map_err(|e| into_error(e.into(), operation))?;
        ready
            .call(request)
            .await
            .map_err(|e| into_error(e.into(), operation))
    }
}

#[async_trait]
impl<Svc> KvStore for ServiceStore<Svc>
where
    Svc: Service<KvRequest, Response = KvResponse> + Clone + Send + Sync + 'static,
    Svc::Error: Into<tower::BoxError>,
    Svc::Future: Send,
{
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        match self.call(KvRequest::Get(key.clone())).await? {
            KvResponse::Value(value) => Ok(value),
            other => Err(unexpected(Operation::Get, &other)),
        }
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        match self.call(KvRequest::GetWithTtl(key.clone())).await? {
            KvResponse::ValueWithTtl(value) => Ok(value),
            other => Err(unexpected(Operation::GetWithTtl, &other)),
        }
    }

    // A service answers owned values, so a shared read is a get wrapped once.
    fn get_shared<'a>(&'a self, key: &'a KvKey) -> SharedGet<'a> {
        SharedGet::boxed(async move { Ok(self.get(key).await?.map(Arc::new)) })
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        // Refuse a value past the nesting limit here, before tower's
        // middleware clones, formats or drops it recursively.
        let value = crate::value::checked(value)
            .map_err(|e| e.with_operation(Operation::Set).with_key(key))?;
        let request = KvRequest::Set {
            key: key.clone(),
            value,
            options,
        };
        match self.call(request).await? {
            KvResponse::Done => Ok(()),
            other => Err(unexpected(Operation::Set, &other)),
        }
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        match self.call(KvRequest::Delete(key.clone())).await? {
            KvResponse::Done => Ok(()),
            other => Err(unexpected(Operation::Delete, &other)),
        }
    }

    async fn cas(
        &self,
        key: &KvKey,
        expected: Option<&Value>,
        new: Option<Value>,
        options: SetOptions,
    ) -> Result<bool> {
        let new = crate::value::checked_cas(expected, new)
            .map_err(|e| e.with_operation(Operation::Cas).with_key(key))?;
        let request = KvRequest::Cas {
            key: key.clone(),
            expected: expected.cloned(),
            new,
            options,
        };
        match self.call(request).await? {
            KvResponse::Swapped(swapped) => Ok(swapped),
            other => Err(unexpected(Operation::Cas, &other)),
        }
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        stream::once(self.call(KvRequest::List(prefix)))
            .map(|response| match response {
                Ok(KvResponse::Entries(entries)) => stream::iter(entries).map(Ok).boxed(),
                Ok(KvResponse::Listing(items)) => stream::iter(items).boxed(),
                Ok(other) => stream::iter([Err(unexpected(Operation::List, &other))]).boxed(),
                Err(e) => stream::iter([Err(e)]).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn get_many(&self, keys: &[KvKey]) -> Result<Vec<Option<Value>>> {
        match self.call(KvRequest::GetMany(keys.to_vec())).await? {
            KvResponse::Values(values) if values.len() == keys.len() => Ok(values),
            other => Err(unexpected(Operation::GetMany, &other)),
        }
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        match self.call(KvRequest::GetManyWithTtl(keys.to_vec())).await? {
            KvResponse::ValuesWithTtl(values) if values.len() == keys.len() => Ok(values),
            other => Err(unexpected(Operation::GetManyWithTtl, &other)),
        }
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        let entries = crate::value::checked_entries(entries)
            .map_err(|e| e.with_operation(Operation::SetMany))?;
        match self.call(KvRequest::SetMany { entries, options }).await? {
            KvResponse::Done => Ok(()),
            other => Err(unexpected(Operation::SetMany, &other)),
        }
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        match self.call(KvRequest::DeleteMany(keys.to_vec())).await? {
            KvResponse::Done => Ok(()),
            other => Err(unexpected(Operation::DeleteMany, &other)),
        }
    }

    /// What [`with_capabilities`](ServiceStore::with_capabilities) said
    /// (the full contract by default).
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
}

/// A [`tower::retry::Policy`] for [`KvRequest`]s: retries a request whose
/// error [is retryable](Error::is_retryable) (or is tower's timeout), up to
/// `attempts` calls in all, pausing `backoff` before the first retry and
/// twice as long before each next one.
///
/// A `cas` is never replayed after an error that may have left it applied
/// (a timeout, a dropped connection whose reply was lost: anything but
/// tower's load shedding, which rejects before calling): a replay would
/// compare against its own write and report the swap as a mismatch. Every
/// other request is idempotent and replayed as is (requests are `Clone`).
///
/// A retryable error the policy does not retry (a `cas`, or the last
/// attempt's) comes out with its kind unchanged but
/// [`is_retryable`](Error::is_retryable) false, and its message says why: a
/// caller that retried it blindly would be wrong (read the key after a
/// failed `cas`), or would repeat what the policy already did.
///
/// It works below or above a [`ServiceStore`]: the error type may be
/// kvtower's [`Error`] or tower's `BoxError` (what `tower::timeout` yields).
/// Each request gets its own copy of the policy (tower clones it per call),
/// so the attempts are counted per request.
///
/// ```
/// use kvtower::service::{KvServiceLayer, RetryPolicy, ServiceStoreLayer};
/// use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kvtower::Result<()> {
/// let store = ServiceBuilder::new()
///     .layer(ServiceStoreLayer)
///     .retry(RetryPolicy::new(3, Duration::from_millis(10))) // 3 calls at most
///     .timeout(Duration::from_millis(200))                  // per attempt
///     .layer(KvServiceLayer)
///     .service(MemoryKvStore::new());
/// store.set(&kvkey!["a"], 1.into(), SetOptions::default()).await?;
/// assert_eq!(store.get(&kvkey!["a"]).await?, Some(1.into()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls left, the current one included.
    attempts: u32,
    /// The pause before the next retry.
    backoff: Duration,
}

impl RetryPolicy {
    /// The default pause before the first retry.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(10);

    /// At most `attempts` calls per request (the first included; 0 counts as
    /// 1, no retry), `backoff` before the first retry, doubling after.
    pub fn new(attempts: u32, backoff: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            backoff,
        }
    }

    /// How many calls a request may still make, the next one included.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(kvtower::service::RetryPolicy::new(3, Duration::ZERO).attempts(), 3);
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The pause before the next retry.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// What to do after an error that is `retryable`; `never_sent` when the
    /// request certainly never reached the store (tower's load shedding).
    /// Counts the attempt when it retries.
    fn next(&mut self, request: &KvRequest, retryable: bool, never_sent: bool) -> Verdict {
        if !retryable {
            return Verdict::Keep;
        }
        // A failed call may still have been applied (the reply was lost, or
        // the deadline passed after the store swapped): replaying a `cas`
        // would then compare against its own write and answer `false`.
        if matches!(request, KvRequest::Cas { .. }) && !never_sent {
            return Verdict::GiveUp(
                "cas not replayed: it may have been applied before the error; read the key to know",
            );
        }
        if self.attempts <= 1 {
            return Verdict::GiveUp("no retries left");
        }
        self.attempts -= 1;
        let pause = self.backoff;
        self.backoff = self.backoff.saturating_mul(2);
        Verdict::Retry(tokio::time::sleep(pause))
    }
}

/// What [`RetryPolicy::next`] decided.
enum Verdict {
    /// Replay after the pause.
    Retry(Sleep),
    /// Not retryable to begin with: the error goes out unchanged.
    Keep,
    /// A retryable error that is not retried: it goes out marked not
    /// retryable, saying why, since retrying the same call blindly would be
    /// wrong (a `cas`) or was already done.
    GiveUp(&'static str),
}

impl Default for RetryPolicy {
    /// Three calls, [`DEFAULT_BACKOFF`](Self::DEFAULT_BACKOFF) apart and
    /// doubling.
    fn default() -> Self {
        Self::new(3, Self::DEFAULT_BACKOFF)
    }
}

type Sleep = tokio::time::Sleep;

/// A copy of `request` to replay, when attempts are left. A request carrying
/// a value nested past [`MAX_DEPTH`](crate::value::MAX_DEPTH) is not copied
/// (cloning recurses once per level): the store refuses it anyway, and that
/// error is not retryable.
fn clone_for_retry(attempts: u32, request: &KvRequest) -> Option<KvRequest> {
    use crate::value::check_depth;
    // Cloned even for the last attempt: tower only asks the policy about a
    // result when it holds a copy, and the policy must see the last error to
    // mark it no longer retryable.
    let _ = attempts;
    let shallow = match request {
        KvRequest::Set { value, .. } => check_depth(value).is_ok(),
        KvRequest::Cas { expected, new, .. } => {
            expected.iter().chain(new).all(|v| check_depth(v).is_ok())
        }
        KvRequest::SetMany { entries, .. } => entries.iter().all(|(_, v)| check_depth(v).is_ok()),
        _ => true,
    };
    shallow.then(|| request.clone())
}

impl tower::retry::Policy<KvRequest, KvResponse, Error> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        request: &mut KvRequest,
        result: &mut Result<KvResponse>,
    ) -> Option<Self::Future> {
        let Err(e) = result else { return None };
        match self.next(request, e.is_retryable(), false) {
            Verdict::Retry(sleep) => Some(sleep),
            Verdict::Keep => None,
            Verdict::GiveUp(why) => {
                let placeholder = Error::new(ErrorKind::Backend, "");
                *e = std::mem::replace(e, placeholder).no_longer_retryable(why);
                None
            }
        }
    }

    fn clone_request(&mut self, request: &KvRequest) -> Option<KvRequest> {
        clone_for_retry(self.attempts, request)
    }
}

impl tower::retry::Policy<KvRequest, KvResponse, tower::BoxError> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        request: &mut KvRequest,
        result: &mut std::result::Result<KvResponse, tower::BoxError>,
    ) -> Option<Self::Future> {
        let Err(e) = result else { return None };
        let overloaded = e.is::<tower::load_shed::error::Overloaded>();
        let retryable = match e.downcast_ref::<Error>() {
            Some(e) => e.is_retryable(),
            None => overloaded || e.is::<tower::timeout::error::Elapsed>(),
        };
        match self.next(request, retryable, overloaded) {
            Verdict::Retry(sleep) => Some(sleep),
            Verdict::Keep => None,
            Verdict::GiveUp(why) => {
                let operation = request.operation();
                let placeholder: tower::BoxError = Box::new(Error::new(ErrorKind::Backend, ""));
                let error = into_error(std::mem::replace(e, placeholder), operation);
                *e = Box::new(error.no_longer_retryable(why));
                None
            }
        }
    }

    fn clone_request(&mut self, request: &KvRequest) -> Option<KvRequest> {
        clone_for_retry(self.attempts, request)
    }
}
