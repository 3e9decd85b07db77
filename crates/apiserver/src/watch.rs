//! Watch: a stream of JSON lines (`{"type": ..., "object": ...}`) with Kubernetes
//! resourceVersion semantics.
//!
//! From the current state (`resourceVersion` unset or `0`) every object comes first as
//! ADDED; from a version, every change after it. A version older than the store's change
//! log gets an ERROR event with a 410 `Expired` Status (list again). With
//! `allowWatchBookmarks`, a BOOKMARK carries the version reached when changes passed that
//! the watch does not select. Every event's object carries the version of that change.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shardvault_api::Kind;
use shardvault_store::Store;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::params::{ReadParams, Start};
use crate::resources::{Api, blocking};
use crate::status::Failure;

/// Turns an event's object into what the client asked for (the object, or a Table row).
pub type Render = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// The state of one open watch.
struct Watch {
    store: Arc<Store>,
    rx: tokio::sync::watch::Receiver<u64>,
    /// The version every event up to has been sent (or skipped).
    last: u64,
    /// The version the last event or bookmark told the client.
    told: u64,
    kind: Kind,
    ns: Option<String>,
    params: ReadParams,
    render: Render,
    shutdown: CancellationToken,
    deadline: Option<Instant>,
    buf: VecDeque<Bytes>,
    ended: bool,
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A BOOKMARK event at `version`.
fn bookmark(kind: Kind, version: u64, initial_events_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": version.to_string()});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(&json!({"type": "BOOKMARK", "object": {
        "kind": kind.name(), "apiVersion": kind.api_version(), "metadata": meta,
    }}))
}

impl Watch {
    fn event(&mut self, ty: &str, mut object: Value, version: u64) {
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        self.told = version;
        let object = (self.render)(object);
        self.buf
            .push_back(line(&json!({"type": ty, "object": object})));
    }

    /// Reads the changes after `last` into the buffer.
    async fn poll(&mut self) {
        let seen = *self.rx.borrow_and_update();
        let (last, kind, ns) = (self.last, self.kind, self.ns.clone());
        match blocking(&self.store, move |s| {
            s.changes_since(last, Some(kind), ns.as_deref())
        })
        .await
        {
            Ok(changes) => {
                for c in changes {
                    self.last = c.version;
                    if self.params.selects(&c.object) {
                        let ty = serde_json::to_value(c.change_type).unwrap_or_default();
                        self.event(ty.as_str().unwrap_or("MODIFIED"), c.object, c.version);
                    }
                }
                self.last = self.last.max(seen);
                if self.params.bookmarks && self.buf.is_empty() && self.last > self.told {
                    self.told = self.last;
                    self.buf.push_back(bookmark(self.kind, self.last, false));
                }
            }
            Err(f) => {
                let gone = Failure {
                    message: format!("{} (resourceVersion {last})", f.message),
                    ..f
                };
                self.buf
                    .push_back(line(&json!({"type": "ERROR", "object": gone.to_status()})));
                self.ended = true;
            }
        }
    }

    /// Waits until the store moves on; false when the watch should end.
    async fn wait(&mut self) -> bool {
        let deadline = self.deadline;
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            r = self.rx.changed() => r.is_ok(),
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => false,
        }
    }
}

/// Answers a watch of `kind` in `ns` (every namespace with `None`).
pub async fn watch(
    api: &Api,
    kind: Kind,
    ns: Option<String>,
    params: ReadParams,
    render: Render,
) -> Response {
    let rx = api.store.subscribe();
    let mut w = Watch {
        store: api.store.clone(),
        rx,
        last: 0,
        told: 0,
        kind,
        ns: ns.clone(),
        deadline: params.timeout.map(|t| Instant::now() + t),
        params,
        render,
        shutdown: api.shutdown.clone(),
        buf: VecDeque::new(),
        ended: false,
    };
    match w.params.start {
        Start::After(v) => {
            w.last = v;
            w.told = v;
        }
        Start::Current => {
            let labels = w.params.labels.clone();
            match blocking(&api.store, move |s| s.list(kind, ns.as_deref(), &labels)).await {
                Ok((items, version)) => {
                    let fields = w.params.fields.clone();
                    for o in items.into_iter().filter(|o| fields.matches(o)) {
                        let v = shardvault_store::resource_version_of(&o).unwrap_or(version);
                        w.event("ADDED", o, v);
                    }
                    w.last = version;
                    if w.params.initial_events_end {
                        w.told = version;
                        w.buf.push_back(bookmark(kind, version, true));
                    }
                }
                Err(f) => return f.into_response(),
            }
        }
    }
    let stream = futures::stream::unfold(w, |mut w| async move {
        loop {
            if let Some(b) = w.buf.pop_front() {
                return Some((Ok::<_, Infallible>(b), w));
            }
            if w.ended {
                return None;
            }
            w.poll().await;
            if w.buf.is_empty() && !w.ended && !w.wait().await {
                return None;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| Failure::internal(e.to_string()).into_response())
}
