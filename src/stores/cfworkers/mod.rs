//! [`WorkersKvStore`]: a [Cloudflare Workers KV](https://developers.cloudflare.com/kv/)
//! namespace, shared with Workers applications (feature `cfworkers`).
//!
//! The store reads and writes the layout of Fedify's `WorkersKvStore`, so a
//! Rust server and a Workers app (Fedify included) share one namespace:
//! keys are the JSON array of their parts (`["user","42"]`), values their
//! JSON text, and a TTL is kept as `{"expires": <ms>}` in each entry's
//! metadata, so TTLs under Workers KV's 60-second minimum still hold (an
//! entry past its `expires` reads as absent; Workers KV deletes it at its
//! own expiry, at least 60 seconds after the write). Like Fedify, an entry
//! without metadata (not written in this layout) reads as absent. A TTL so
//! long that its expiry is past 2^53 ms since 1970 (the largest integer a
//! JavaScript number holds exactly, about 285,000 years) never expires, as on
//! the SQL stores; `Duration::MAX` included. [`get_with_ttl`](KvStore::get_with_ttl)
//! reports what is left until `expires` (read with the value's metadata, so it
//! costs what `get` does), so a cache in front never outlives the entry.
//!
//! Two ways in, one store type, one layout (the `layout` module):
//!
//! * [`WorkersKvStore::builder`]: from any server, through the [Cloudflare KV
//!   HTTP API](https://developers.cloudflare.com/api/resources/kv/) with an
//!   account id, a namespace id and an API token.
//! * `WorkersKvStore::from_binding` (wasm32 only): inside a Rust Worker,
//!   through the `worker` crate's KV binding.
//!
//! ```no_run
//! use kvtower::{kvkey, KvStore, SetOptions, WorkersKvStore};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kvtower::Result<()> {
//! let store = WorkersKvStore::builder("account-id", "namespace-id", "api-token").build()?;
//! store.set(&kvkey!["session", "s1"], "alice".into(), SetOptions::ttl(Duration::from_secs(5))).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # No compare-and-swap
//!
//! Workers KV has no atomic compare-and-swap (nor transactions), so
//! [`cas`](KvStore::cas) returns an [`Unsupported`](ErrorKind::Unsupported)
//! error and [`Capabilities::atomic_cas`] is false. Writes are last-writer-wins
//! and, on Cloudflare, eventually consistent across locations (up to about 60
//! seconds).
//!
//! # Listing
//!
//! `list` pages through the namespace's keys by name prefix (`["a",` for
//! the children of `["a"]`, plus the exact key `["a"]`), filters expired
//! entries by the metadata the listing returns, and reads each value.

#[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
mod binding;
pub(crate) mod layout;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::key::KvKey;
use crate::operation::Operation;
use crate::store::{Capabilities, KvEntry, KvStore, SetOptions, Value};

use self::layout::Metadata;

/// The Cloudflare API's base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys per page of a listing (the API's maximum), and per bulk write.
const PAGE: usize = 1000;

/// A store on a Workers KV namespace, through the Cloudflare KV HTTP API.
///
/// Cheap to clone: clones share one HTTP client. See the [module
/// docs](self) for the layout and what Workers KV cannot do.
///
/// ```
/// use kvtower::{KvStore, WorkersKvStore};
///
/// let store = WorkersKvStore::builder("account", "namespace", "token").build()?;
/// assert!(!store.capabilities().atomic_cas);
/// # Ok::<(), kvtower::Error>(())
/// ```
#[derive(Clone)]
pub struct WorkersKvStore {
    inner: Arc<Inner>,
}

enum Inner {
    Http(Http),
    #[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
    Binding(binding::Binding),
}

impl fmt::Debug for WorkersKvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("WorkersKvStore");
        match &*self.inner {
            Inner::Http(http) => d
                .field("namespace_url", &http.namespace_url.as_str())
                .field("token", &"<redacted>"),
            #[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
            Inner::Binding(_) => d.field("binding", &"KvStore"),
        };
        d.finish()
    }
}

/// Options of a [`WorkersKvStore`], from [`WorkersKvStore::builder`].
///
/// ```
/// use kvtower::WorkersKvStore;
/// use std::time::Duration;
///
/// let store = WorkersKvStore::builder("account", "namespace", "token")
///     .base_url("http://127.0.0.1:8787/client/v4") // a local emulator
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// # let _ = store;
/// # Ok::<(), kvtower::Error>(())
/// ```
#[must_use]
#[derive(Clone)]
pub struct WorkersKvStoreBuilder {
    account_id: String,
    namespace_id: String,
    token: String,
    base_url: String,
    timeout: Duration,
}

impl fmt::Debug for WorkersKvStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkersKvStoreBuilder")
            .field("account_id", &self.account_id)
            .field("namespace_id", &self.namespace_id)
            .field("token", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WorkersKvStoreBuilder {
    /// The API's base URL ([`DEFAULT_BASE_URL`] by default).
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// The bound on one HTTP request (30 seconds by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the store (no request is made yet).
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error when the base URL is not a URL
    /// or an id is empty.
    pub fn build(self) -> Result<WorkersKvStore> {
        if self.account_id.is_empty() || self.namespace_id.is_empty() {
            return Err(Error::config(
                "account_id and namespace_id: must not be empty",
            ));
        }
        let mut url = Url::parse(&self.base_url)
            .map_err(|e| Error::config("base_url: not a URL").with_source(e))?;
        url.path_segments_mut()
            .map_err(|_| Error::config("base_url: cannot be a base URL"))?
            .pop_if_empty()
            .extend([
                "accounts",
                &self.account_id,
                "storage",
                "kv",
                "namespaces",
                &self.namespace_id,
                "",
            ]);
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| Error::config("HTTP client: cannot build it").with_source(e))?;
        Ok(WorkersKvStore {
            inner: Arc::new(Inner::Http(Http {
                client,
                namespace_url: url,
                token: self.token,
            })),
        })
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiError>,
    result: Option<T>,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ResultInfo {
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct ListedKey {
    name: String,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(serde::Serialize)]
struct BulkPut<'a> {
    key: &'a str,
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_ttl: Option<u64>,
    metadata: &'a Metadata,
}

fn http_error(e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Backend
    };
    Error::new(kind, "Workers KV request failed").with_source(e)
}

fn api_error(status: StatusCode, errors: &[ApiError]) -> Error {
    let detail: Vec<String> = errors
        .iter()
        .map(|e| format!("{} ({})", e.message, e.code))
        .collect();
    let kind = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Config,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::ValueTooLarge,
        s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    };
    Error::new(
        kind,
        format!("Workers KV answered {status}: {}", detail.join("; ")),
    )
}

impl WorkersKvStore {
    /// A builder for the namespace `namespace_id` of the account
    /// `account_id`, with an API token allowed to read and write it.
    pub fn builder(
        account_id: impl Into<String>,
        namespace_id: impl Into<String>,
        api_token: impl Into<String>,
    ) -> WorkersKvStoreBuilder {
        WorkersKvStoreBuilder {
            account_id: account_id.into(),
            namespace_id: namespace_id.into(),
            token: api_token.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Inside a Rust Worker: the namespace bound as `binding` in
    /// `wrangler.toml`, through the `worker` crate (wasm32 only).
    ///
    /// ```ignore
    /// // In a Rust Worker (wasm32; not run by native doc tests).
    /// use kvtower::{kvkey, KvStore, WorkersKvStore};
    ///
    /// #[worker::event(fetch)]
    /// async fn fetch(_: worker::Request, env: worker::Env, _: worker::Context) -> worker::Result<worker::Response> {
    ///     let store = WorkersKvStore::from_binding(env.kv("KV")?);
    ///     let hits = store.get(&kvkey!["hits"]).await.map_err(|e| worker::Error::RustError(e.to_string()))?;
    ///     worker::Response::ok(format!("{hits:?}"))
    /// }
    /// ```
    #[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
    pub fn from_binding(kv: worker::KvStore) -> Self {
        Self {
            inner: Arc::new(Inner::Binding(binding::Binding(
                worker::send::SendWrapper::new(kv),
            ))),
        }
    }

    /// The value and its remaining lifetime (`expires` in the metadata).
    async fn get_name(&self, name: &str) -> Result<Option<(Value, Option<Duration>)>> {
        match &*self.inner {
            Inner::Http(http) => http.get_name(name).await,
            #[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
            Inner::Binding(kv) => kv.get_name(name).await,
        }
    }

    async fn read_one(
        &self,
        key: &KvKey,
        operation: Operation,
    ) -> Result<Option<(Value, Option<Duration>)>> {
        let context = |e: Error| e.with_operation(operation).with_key(key);
        let name = layout::encode_key(key).map_err(context)?;
        self.get_name(&name).await.map_err(context)
    }

    async fn put(&self, put: layout::Put) -> Result<()> {
        match &*self.inner {
            Inner::Http(http) => http.put(put).await,
            #[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
            Inner::Binding(kv) => kv.put(put).await,
        }
    }

    async fn put_many(&self, puts: &[layout::Put]) -> Result<()> {
        match &*self.inner {
            Inner::Http(http) => http.put_many(puts).await,
            #[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
            Inner::Binding(kv) => kv.put_many(puts).await,
        }
    }

    async fn delete_names(&self, names: &[String]) -> Result<()> {
        match &*self.inner {
            Inner::Http(http) => http.delete_names(names).await,
            #[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
            Inner::Binding(kv) => kv.delete_names(names).await,
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>)> {
        match &*self.inner {
            Inner::Http(http) => http.list_page(prefix, cursor).await,
            #[cfg(any(target_arch = "wasm32", kvtower_worker_check))]
            Inner::Binding(kv) => kv.list_page(prefix, cursor).await,
        }
    }
}

struct Http {
    client: reqwest::Client,
    /// `{base}/accounts/{account}/storage/kv/namespaces/{namespace}/`
    namespace_url: Url,
    token: String,
}

impl Http {
    fn url(&self, path: &[&str]) -> Url {
        let mut url = self.namespace_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            // Percent-encodes each segment, '/' included: a key name is one
            // segment whatever it holds.
            segments.pop_if_empty().extend(path);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.client.request(method, url).bearer_auth(&self.token)
    }

    /// Sends a request built by `build`, again when a pooled connection
    /// turned out to be closed by the server (every request this store makes
    /// is idempotent, so a resend is safe).
    async fn send(
        &self,
        build: impl Fn() -> Result<reqwest::RequestBuilder>,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match build()?.send().await {
                Ok(response) => return Ok(response),
                Err(e) if attempt < 3 && !e.is_timeout() && e.is_request() => continue,
                Err(e) => return Err(http_error(e)),
            }
        }
    }

    /// Sends and decodes the API's JSON envelope; `Ok(None)` on 404.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        build: impl Fn() -> Result<reqwest::RequestBuilder>,
    ) -> Result<Option<(Option<T>, Option<ResultInfo>)>> {
        let response = self.send(build).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response.bytes().await.map_err(http_error)?;
        let envelope: Envelope<T> = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("Workers KV answered {status} with an unexpected body: {e}"),
            )
        })?;
        if !status.is_success() || !envelope.success {
            return Err(api_error(status, &envelope.errors));
        }
        Ok(Some((envelope.result, envelope.result_info)))
    }

    async fn metadata(&self, name: &str) -> Result<Option<Option<Metadata>>> {
        let found = self
            .call::<Metadata>(|| Ok(self.request(Method::GET, self.url(&["metadata", name]))))
            .await?;
        Ok(found.map(|(metadata, _)| metadata))
    }

    /// The raw value text, `None` when absent.
    async fn value_text(&self, name: &str) -> Result<Option<String>> {
        let response = self
            .send(|| Ok(self.request(Method::GET, self.url(&["values", name]))))
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = response.bytes().await.map_err(http_error)?;
            let errors = serde_json::from_slice::<Envelope<serde_json::Value>>(&body)
                .map(|e| e.errors)
                .unwrap_or_default();
            return Err(api_error(status, &errors));
        }
        response.text().await.map(Some).map_err(http_error)
    }

    pub(super) async fn get_name(&self, name: &str) -> Result<Option<(Value, Option<Duration>)>> {
        // The metadata first: an expired entry needs no value read. The
        // remaining lifetime is taken before the value read, so it is never
        // more than what is left when the value arrives.
        let Some(metadata) = self.metadata(name).await? else {
            return Ok(None);
        };
        let now = layout::now_ms();
        if !layout::is_live(metadata.as_ref(), now) {
            return Ok(None);
        }
        let remaining = layout::remaining(metadata.as_ref(), now);
        match self.value_text(name).await? {
            Some(text) => Ok(Some((layout::decode_value(&text)?, remaining))),
            None => Ok(None),
        }
    }

    pub(super) async fn put(&self, put: layout::Put) -> Result<()> {
        let mut url = self.url(&["values", &put.key]);
        if let Some(ttl) = put.expiration_ttl {
            url.query_pairs_mut()
                .append_pair("expiration_ttl", &ttl.to_string());
        }
        let metadata = serde_json::to_string(&put.metadata)?;
        self.call::<serde_json::Value>(|| {
            let form = reqwest::multipart::Form::new()
                .text("value", put.value.clone())
                .text("metadata", metadata.clone());
            Ok(self.request(Method::PUT, url.clone()).multipart(form))
        })
        .await?
        .ok_or_else(|| Error::new(ErrorKind::Config, "the KV namespace was not found"))?;
        Ok(())
    }

    pub(super) async fn delete_names(&self, names: &[String]) -> Result<()> {
        for chunk in names.chunks(PAGE) {
            self.call::<serde_json::Value>(|| {
                Ok(self
                    .request(Method::POST, self.url(&["bulk", "delete"]))
                    .json(chunk))
            })
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Config, "the KV namespace was not found"))?;
        }
        Ok(())
    }

    /// One page of live key names under `prefix`, and the next cursor.
    pub(super) async fn list_page(
        &self,
        prefix: &str,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let mut url = self.url(&["keys"]);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("prefix", prefix)
                .append_pair("limit", &PAGE.to_string());
            if let Some(cursor) = &cursor {
                query.append_pair("cursor", cursor);
            }
        }
        let (keys, info) = self
            .call::<Vec<ListedKey>>(|| Ok(self.request(Method::GET, url.clone())))
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Config, "the KV namespace was not found"))?;
        let now = layout::now_ms();
        let names = keys
            .unwrap_or_default()
            .into_iter()
            .filter(|k| layout::is_live(k.metadata.as_ref(), now))
            .map(|k| k.name)
            .collect();
        let next = info.and_then(|i| i.cursor).filter(|c| !c.is_empty());
        Ok((names, next))
    }

    pub(super) async fn put_many(&self, puts: &[layout::Put]) -> Result<()> {
        // One bulk write per page. Within a write a later duplicate wins, as
        // in a loop of `set`.
        for chunk in puts.chunks(PAGE) {
            let body: Vec<BulkPut<'_>> = chunk
                .iter()
                .map(|p| BulkPut {
                    key: &p.key,
                    value: &p.value,
                    expiration_ttl: p.expiration_ttl,
                    metadata: &p.metadata,
                })
                .collect();
            self.call::<serde_json::Value>(|| {
                Ok(self.request(Method::PUT, self.url(&["bulk"])).json(&body))
            })
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Config, "the KV namespace was not found"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl KvStore for WorkersKvStore {
    async fn get(&self, key: &KvKey) -> Result<Option<Value>> {
        Ok(self
            .read_one(key, Operation::Get)
            .await?
            .map(|(value, _)| value))
    }

    async fn get_with_ttl(&self, key: &KvKey) -> Result<Option<(Value, Option<Duration>)>> {
        self.read_one(key, Operation::GetWithTtl).await
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[KvKey],
    ) -> Result<Vec<Option<(Value, Option<Duration>)>>> {
        // Workers KV reads one key per request: a loop, like get_many.
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.push(self.read_one(key, Operation::GetManyWithTtl).await?);
        }
        Ok(found)
    }

    async fn set(&self, key: &KvKey, value: Value, options: SetOptions) -> Result<()> {
        let context = |e: Error| e.with_operation(Operation::Set).with_key(key);
        if options.is_expired() {
            let name = layout::encode_key(key).map_err(context)?;
            return self.delete_names(&[name]).await.map_err(context);
        }
        let value = crate::value::checked(value).map_err(context)?;
        let put = layout::put(key, &value, options.ttl, layout::now_ms()).map_err(context)?;
        self.put(put).await.map_err(context)
    }

    async fn delete(&self, key: &KvKey) -> Result<()> {
        let context = |e: Error| e.with_operation(Operation::Delete).with_key(key);
        let name = layout::encode_key(key).map_err(context)?;
        self.delete_names(&[name]).await.map_err(context)
    }

    async fn cas(
        &self,
        key: &KvKey,
        _expected: Option<&Value>,
        _new: Option<Value>,
        _options: SetOptions,
    ) -> Result<bool> {
        Err(
            Error::unsupported(Operation::Cas, "Workers KV has no atomic compare-and-swap")
                .with_key(key),
        )
    }

    fn list(&self, prefix: Option<KvKey>) -> BoxStream<'_, Result<KvEntry>> {
        let plan = match layout::list_plan(prefix.as_ref()) {
            Ok(plan) => plan,
            Err(e) => {
                return stream::once(async move { Err(e.with_operation(Operation::List)) }).boxed()
            }
        };
        let (exact, below) = plan;
        // The exact key first, then each page of names below it.
        let exact = stream::iter(exact.map(|name| Ok(vec![name])));
        let pages = stream::try_unfold(Some(None), move |cursor| {
            let below = below.clone();
            async move {
                let Some(cursor) = cursor else {
                    return Ok(None);
                };
                let (names, next) = self.list_page(&below, cursor).await?;
                Ok(Some((names, next.map(Some))))
            }
        });
        exact
            .chain(pages)
            .map(move |names: Result<Vec<String>>| async move {
                let names = names?;
                let mut entries = Vec::with_capacity(names.len());
                for name in names {
                    let Some(key) = layout::decode_key(&name) else {
                        continue;
                    };
                    // Deleted or expired since the listing: skipped.
                    match self.get_name(&name).await {
                        Ok(Some((value, _))) => entries.push(Ok(KvEntry { key, value })),
                        Ok(None) => {}
                        Err(e) => entries.push(Err(e.with_key(&key))),
                    }
                }
                Ok::<_, Error>(stream::iter(entries))
            })
            .buffered(1)
            .map(|page| match page {
                Ok(entries) => entries.left_stream(),
                Err(e) => stream::once(async move { Err(e) }).right_stream(),
            })
            .flatten()
            .map(|item| item.map_err(|e| e.with_operation(Operation::List)))
            .boxed()
    }

    async fn set_many(&self, entries: Vec<(KvKey, Value)>, options: SetOptions) -> Result<()> {
        let context = |e: Error| e.with_operation(Operation::Set);
        if options.is_expired() {
            let mut names = Vec::with_capacity(entries.len());
            for (key, _) in &entries {
                names.push(layout::encode_key(key).map_err(|e| context(e.with_key(key)))?);
            }
            return self.delete_names(&names).await.map_err(context);
        }
        let entries = crate::value::checked_entries(entries).map_err(context)?;
        let now = layout::now_ms();
        let mut puts = Vec::with_capacity(entries.len());
        for (key, value) in &entries {
            puts.push(
                layout::put(key, value, options.ttl, now).map_err(|e| context(e.with_key(key)))?,
            );
        }
        self.put_many(&puts).await.map_err(context)
    }

    async fn delete_many(&self, keys: &[KvKey]) -> Result<()> {
        let mut names = Vec::with_capacity(keys.len());
        for key in keys {
            names.push(
                layout::encode_key(key)
                    .map_err(|e| e.with_operation(Operation::Delete).with_key(key))?,
            );
        }
        self.delete_names(&names)
            .await
            .map_err(|e| e.with_operation(Operation::Delete))
    }

    fn capabilities(&self) -> Capabilities {
        // get_with_ttl reports the layout's `expires` (the metadata every read
        // fetches anyway), not Workers KV's own `expiration`, which is at
        // least 60 s and only listing returns.
        Capabilities::full().with_atomic_cas(false)
    }
}
