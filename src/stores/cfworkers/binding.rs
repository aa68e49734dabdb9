//! Inside a Rust Worker (wasm32): the namespace through the `worker` crate's
//! KV binding, with the same [`layout`](super::layout) as the HTTP client.
//!
//! The binding's futures are JavaScript promises, not `Send`; a Worker runs
//! on one thread, so they are wrapped in `worker::send::SendFuture` to meet
//! the `KvStore` trait's `Send` bound.

use std::time::Duration;

use worker::send::{SendFuture, SendWrapper};

use super::layout::{self, Metadata};
use crate::error::{Error, ErrorKind, Result};
use crate::store::Value;

/// Keys per page of a listing (the binding's maximum).
const PAGE: u64 = 1000;

pub(super) struct Binding(pub(super) SendWrapper<worker::KvStore>);

fn kv_error(e: worker::KvError) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!("Workers KV binding failed: {e}"),
    )
}

impl Binding {
    /// The value and its remaining lifetime (from the metadata read with it).
    pub(super) async fn get_name(&self, name: &str) -> Result<Option<(Value, Option<Duration>)>> {
        let kv = &self.0;
        let (text, metadata) =
            SendFuture::new(async move { kv.get(name).text_with_metadata::<Metadata>().await })
                .await
                .map_err(kv_error)?;
        let now = layout::now_ms();
        match text {
            Some(text) if layout::is_live(metadata.as_ref(), now) => Ok(Some((
                layout::decode_value(&text)?,
                layout::remaining(metadata.as_ref(), now),
            ))),
            _ => Ok(None),
        }
    }

    pub(super) async fn put(&self, put: layout::Put) -> Result<()> {
        let kv = &self.0;
        SendFuture::new(async move {
            let mut builder = kv.put(&put.key, put.value)?.metadata(&put.metadata)?;
            if let Some(ttl) = put.expiration_ttl {
                builder = builder.expiration_ttl(ttl);
            }
            builder.execute().await
        })
        .await
        .map_err(kv_error)
    }

    pub(super) async fn put_many(&self, puts: &[layout::Put]) -> Result<()> {
        for put in puts {
            self.put(put.clone()).await?;
        }
        Ok(())
    }

    pub(super) async fn delete_names(&self, names: &[String]) -> Result<()> {
        let kv = &self.0;
        for name in names {
            SendFuture::new(kv.delete(name)).await.map_err(kv_error)?;
        }
        Ok(())
    }

    pub(super) async fn list_page(
        &self,
        prefix: &str,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let kv = &self.0;
        let prefix = prefix.to_owned();
        let page = SendFuture::new(async move {
            let mut list = kv.list().prefix(prefix).limit(PAGE);
            if let Some(cursor) = cursor {
                list = list.cursor(cursor);
            }
            list.execute().await
        })
        .await
        .map_err(kv_error)?;
        let now = layout::now_ms();
        let names = page
            .keys
            .into_iter()
            .filter(|key| {
                let metadata = key
                    .metadata
                    .clone()
                    .and_then(|m| serde_json::from_value::<Metadata>(m).ok());
                layout::is_live(metadata.as_ref(), now)
            })
            .map(|key| key.name)
            .collect();
        let next = if page.list_complete {
            None
        } else {
            page.cursor
        };
        Ok((names, next))
    }
}
