//! The KV Connect client: `denokv_remote`'s `Remote` on a thread of its own.
//!
//! `denokv_remote`'s futures are not `Send` (its `Database` trait is
//! `async_trait(?Send)`), while a `KvStore`'s must be. So the `Remote` lives
//! on a dedicated thread running a single-threaded Tokio runtime, and the
//! store sends it requests over a channel; each request runs as its own
//! local task, so requests do not wait for one another.

use std::time::Duration;

use bytes::Bytes;
use deno_error::JsErrorBox;
use denokv_proto::{AtomicWrite, Database, ReadRange, ReadRangeOutput, SnapshotReadOptions};
use denokv_remote::{MetadataEndpoint, Remote, RemotePermissions, RemoteResponse, RemoteTransport};
use futures::Stream;
use http::{HeaderMap, StatusCode};
use tokio::sync::{mpsc, oneshot};
use url::Url;

use super::error::backend_error;
use crate::error::{Error, ErrorKind, Result};
use crate::operation::Operation;

enum Request {
    Read(
        Vec<ReadRange>,
        oneshot::Sender<Result<Vec<ReadRangeOutput>>>,
    ),
    Write(AtomicWrite, oneshot::Sender<Result<bool>>),
}

/// A handle on the thread that owns the `Remote`; the thread ends when the
/// last handle is dropped.
pub(super) struct RemoteHandle {
    requests: mpsc::UnboundedSender<Request>,
}

impl RemoteHandle {
    pub(super) fn spawn(url: Url, access_token: String) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| backend_error("connect", e).with_operation(Operation::Connect))?;
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| backend_error("connect", e).with_operation(Operation::Connect))?;
        let (requests, mut receiver) = mpsc::unbounded_channel::<Request>();
        std::thread::Builder::new()
            .name("kvtower-denokv-remote".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let remote = Remote::new(
                        Transport(client),
                        AllowAll,
                        MetadataEndpoint { url, access_token },
                    );
                    while let Some(request) = receiver.recv().await {
                        let remote = remote.clone();
                        tokio::task::spawn_local(async move {
                            match request {
                                Request::Read(ranges, reply) => {
                                    let result = remote
                                        .snapshot_read(
                                            ranges,
                                            SnapshotReadOptions {
                                                consistency: denokv_proto::Consistency::Strong,
                                            },
                                        )
                                        .await
                                        .map_err(|e| backend_error("read", e));
                                    let _ = reply.send(result);
                                }
                                Request::Write(write, reply) => {
                                    let result = remote
                                        .atomic_write(write)
                                        .await
                                        .map(|committed| committed.is_some())
                                        .map_err(|e| backend_error("write", e));
                                    let _ = reply.send(result);
                                }
                            }
                        });
                    }
                });
            })
            .map_err(|e| backend_error("connect", e).with_operation(Operation::Connect))?;
        Ok(Self { requests })
    }

    async fn call<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
        timeout: Duration,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(request(reply))
            .map_err(|_| Error::new(ErrorKind::Unavailable, "the KV Connect thread has stopped"))?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Unavailable,
                "the KV Connect thread dropped the request",
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no answer from the Deno KV server within {timeout:?}"),
            )),
        }
    }

    pub(super) async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        timeout: Duration,
    ) -> Result<Vec<ReadRangeOutput>> {
        self.call(|reply| Request::Read(ranges, reply), timeout)
            .await
    }

    pub(super) async fn atomic_write(&self, write: AtomicWrite, timeout: Duration) -> Result<bool> {
        self.call(|reply| Request::Write(write, reply), timeout)
            .await
    }
}

/// Every URL the metadata names is allowed (Deno's `--allow-net` check has no
/// counterpart here).
#[derive(Clone)]
struct AllowAll;

impl RemotePermissions for AllowAll {
    fn check_net_url(&self, _: &Url) -> std::result::Result<(), JsErrorBox> {
        Ok(())
    }
}

#[derive(Clone)]
struct Transport(reqwest::Client);

struct Response(Bytes);

impl RemoteTransport for Transport {
    type Response = Response;

    async fn post(
        &self,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> std::result::Result<(Url, StatusCode, Response), JsErrorBox> {
        let request = self.0.post(url).headers(headers).body(body);
        // Spawned because reqwest's futures are `Send` but not `Sync`, and
        // `RemoteTransport` wants both; a join handle is both.
        tokio::spawn(async move {
            let response = request
                .send()
                .await
                .map_err(|e| JsErrorBox::generic(e.to_string()))?;
            let url = response.url().clone();
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| JsErrorBox::generic(e.to_string()))?;
            Ok((url, status, Response(bytes)))
        })
        .await
        .map_err(|e| JsErrorBox::generic(e.to_string()))?
    }
}

impl RemoteResponse for Response {
    async fn bytes(self) -> std::result::Result<Bytes, JsErrorBox> {
        Ok(self.0)
    }

    async fn text(self) -> std::result::Result<String, JsErrorBox> {
        String::from_utf8(self.0.to_vec()).map_err(|e| JsErrorBox::generic(e.to_string()))
    }

    fn stream(self) -> impl Stream<Item = std::result::Result<Bytes, JsErrorBox>> + Send + Sync {
        futures::stream::iter([Ok(self.0)])
    }
}
