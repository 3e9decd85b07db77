//! `kubectl get -w` as a stream: the objects of a list, then the events of watches from its
//! resourceVersion, a new watch resuming where the daemon ended the last one.

use std::pin::Pin;

use anyhow::bail;
use futures::StreamExt;
use kube::api::{WatchEvent, WatchParams};
use kube::core::Request;
use serde_json::Value;

use super::Client;
use super::error::{ApiError, api_error};

type Events = Pin<Box<dyn futures::Stream<Item = kube::Result<WatchEvent<Value>>> + Send>>;

/// The objects of a list, then the events of the watches after it.
pub struct WatchStream {
    client: Client,
    request: Request,
    params: WatchParams,
    /// The resourceVersion the next watch starts from.
    version: String,
    /// Listed objects not handed out yet, last first.
    pending: Vec<(String, Value)>,
    events: Option<Events>,
}

impl WatchStream {
    /// The listed `items` (handed out as `ADDED`), then watches of `request` from `version`.
    pub(super) fn new(
        client: Client,
        request: Request,
        params: WatchParams,
        version: String,
        items: Vec<Value>,
    ) -> WatchStream {
        WatchStream {
            client,
            request,
            params,
            version,
            pending: items
                .into_iter()
                .map(|o| ("ADDED".to_string(), o))
                .rev()
                .collect(),
            events: None,
        }
    }

    /// The next event as (`ADDED`|`MODIFIED`|`DELETED`, object); an error when the daemon
    /// ends the watch with one (a resourceVersion too old, say).
    pub async fn next(&mut self) -> anyhow::Result<Option<(String, Value)>> {
        if let Some(event) = self.pending.pop() {
            return Ok(Some(event));
        }
        loop {
            let events = match &mut self.events {
                Some(events) => events,
                None => {
                    let req = self.request.watch(&self.params, &self.version)?;
                    let stream = self
                        .client
                        .kube
                        .request_events::<Value>(req)
                        .await
                        .map_err(api_error)?;
                    self.events.insert(stream.boxed())
                }
            };
            let (kind, obj) = match events.next().await {
                // The daemon ended this watch (its timeout): the next one resumes.
                None => {
                    self.events = None;
                    continue;
                }
                Some(Err(e)) => return Err(api_error(e)),
                Some(Ok(WatchEvent::Error(status))) => {
                    bail!("the watch ended: {}", ApiError::from_status(&status))
                }
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    self.version = b.metadata.resource_version;
                    continue;
                }
                Some(Ok(WatchEvent::Added(o))) => ("ADDED", o),
                Some(Ok(WatchEvent::Modified(o))) => ("MODIFIED", o),
                Some(Ok(WatchEvent::Deleted(o))) => ("DELETED", o),
            };
            if let Some(v) = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                self.version = v.to_string();
            }
            return Ok(Some((kind.to_string(), obj)));
        }
    }
}
