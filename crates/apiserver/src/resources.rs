//! The resource verbs: get, list, create, update, delete (and the hand-off to watch and
//! patch), over the store.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shardvault_store::{Deletion, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::params::{ReadParams, WriteParams};
use crate::path::Target;
use crate::status::Failure;

/// What every request handler needs: the store, the admission hook, the shutdown signal.
#[derive(Clone)]
pub struct Api {
    /// The objects.
    pub store: Arc<Store>,
    /// Checks run before writes.
    pub admission: Option<Arc<dyn Admission>>,
    /// Cancelled when the server stops (ends open watches).
    pub shutdown: CancellationToken,
}

impl Api {
    /// The store writes go to: the real one, or its dry-run view.
    pub fn store_for(&self, params: WriteParams) -> Arc<Store> {
        if params.dry_run {
            Arc::new(self.store.dry_run())
        } else {
            self.store.clone()
        }
    }

    /// Runs the admission hook, if any.
    pub fn admit(&self, store: &Store, doc: &Value) -> Result<(), StoreError> {
        match &self.admission {
            Some(a) => a.admit(store, doc),
            None => Ok(()),
        }
    }
}

/// Runs a store call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(Failure::internal(format!("the store call failed: {e}"))),
    }
}

/// A JSON answer with a status code.
pub fn json_response(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

/// Reads a JSON body and checks it names the kind, namespace and name of the path; the
/// namespace of the path is filled in when the object names none.
pub fn object_body(body: &Bytes, t: &Target) -> Result<Value, Failure> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::bad_request(format!("the request body is not JSON: {e}")))?;
    check_object(doc, t)
}

/// Checks a decoded object against the request path (see [`object_body`]).
pub fn check_object(mut doc: Value, t: &Target) -> Result<Value, Failure> {
    if !doc.is_object() {
        return Err(Failure::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    match doc.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(given) if given != ns => {
            return Err(Failure::bad_request(format!(
                "the namespace of the object ({given}) does not match the namespace of the request ({ns})"
            )));
        }
        Some(_) => {}
        None => {
            if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("namespace".into(), json!(ns));
            }
        }
    }
    if let Some(name) = &t.name
        && doc.pointer("/metadata/name").and_then(Value::as_str) != Some(name.as_str())
    {
        return Err(Failure::bad_request(format!(
            "the name of the object does not match the request path ({name})"
        )));
    }
    if doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != t.kind.name())
    {
        return Err(Failure::bad_request(format!(
            "the object's kind does not match the request path ({})",
            t.kind
        )));
    }
    Ok(doc)
}

/// Gives an object without a name one made of its `metadata.generateName` and five random
/// characters, as Kubernetes does.
fn generate_name(doc: &mut Value) {
    let named = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let Some(prefix) = doc
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .filter(|_| !named)
        .map(str::to_string)
    else {
        return;
    };
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    doc["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
}

/// Answers one request on a resource path.
pub async fn handle(
    api: &Api,
    method: Method,
    t: Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Failure> {
    let kind = t.kind;
    match (&method, t.name.clone()) {
        (&Method::GET, None) if !t.status => {
            let params = ReadParams::parse(query, kind)?;
            if params.watch {
                return Ok(
                    crate::watch::watch(api, kind, t.namespace, params, Arc::new(|o| o)).await,
                );
            }
            let ns = t.namespace.clone();
            let labels = params.labels.clone();
            let (items, version) =
                blocking(&api.store, move |s| s.list(kind, ns.as_deref(), &labels)).await?;
            let items: Vec<Value> = items
                .into_iter()
                .filter(|o| params.fields.matches(o))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "apiVersion": kind.api_version(), "kind": format!("{}List", kind.name()),
                    "metadata": {"resourceVersion": version.to_string()}, "items": items,
                }),
            ))
        }
        (&Method::POST, None) if t.namespace.is_some() && !t.status => {
            let params = WriteParams::parse(query)?;
            let mut doc = object_body(body, &t)?;
            generate_name(&mut doc);
            let (store, api2) = (api.store_for(params), api.clone());
            let created = blocking(&store, move |s| {
                api2.admit(s, &doc)?;
                s.create(&doc)
            })
            .await?;
            Ok(json_response(StatusCode::CREATED, created))
        }
        (&Method::GET, Some(name)) => {
            let ns = t.namespace.clone().unwrap_or_default();
            let obj = blocking(&api.store, move |s| s.get(kind, &ns, &name)).await?;
            Ok(json_response(StatusCode::OK, obj))
        }
        (&Method::PUT, Some(_)) => {
            let params = WriteParams::parse(query)?;
            let doc = object_body(body, &t)?;
            let status_only = t.status;
            let (store, api2) = (api.store_for(params), api.clone());
            let out = blocking(&store, move |s| {
                if status_only {
                    s.update_status(&doc)
                } else {
                    api2.admit(s, &doc)?;
                    s.update(&doc)
                }
            })
            .await?;
            Ok(json_response(StatusCode::OK, out))
        }
        (&Method::PATCH, Some(_)) => crate::patch::patch(api, &t, query, headers, body).await,
        (&Method::DELETE, Some(name)) if !t.status => {
            let options = DeleteOptions::parse(query, body)?;
            let ns = t.namespace.clone().unwrap_or_default();
            let store = api.store_for(options.write);
            let out = blocking(&store, move |s| {
                if options.orphan {
                    s.delete_orphaning(kind, &ns, &name)
                } else {
                    s.delete(kind, &ns, &name)
                }
            })
            .await?;
            Ok(match out {
                Deletion::Deleted(o) => json_response(StatusCode::OK, o),
                Deletion::Pending(o) => json_response(StatusCode::ACCEPTED, o),
            })
        }
        _ => Err(Failure::method_not_allowed(&method)),
    }
}

/// The options of a delete, from the query and a `DeleteOptions` body.
#[derive(Debug, Clone, Copy)]
struct DeleteOptions {
    write: WriteParams,
    /// `propagationPolicy: Orphan`: what the object owns stays, without the reference.
    orphan: bool,
}

impl DeleteOptions {
    fn parse(query: &HashMap<String, String>, body: &Bytes) -> Result<DeleteOptions, Failure> {
        let mut write = WriteParams::parse(query)?;
        let opts: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| {
                Failure::bad_request(format!("the DeleteOptions body is not JSON: {e}"))
            })?
        };
        if let Some(d) = opts.get("dryRun").and_then(Value::as_array) {
            if d.iter().any(|v| v != "All") {
                return Err(Failure::bad_request(
                    "dryRun: the only value supported is All",
                ));
            }
            write.dry_run |= !d.is_empty();
        }
        let policy = query
            .get("propagationPolicy")
            .map(String::as_str)
            .or_else(|| opts.get("propagationPolicy").and_then(Value::as_str))
            .or_else(|| {
                opts.get("orphanDependents")
                    .and_then(Value::as_bool)
                    .map(|o| if o { "Orphan" } else { "Background" })
            });
        let orphan = match policy {
            None | Some("Background" | "Foreground") => false,
            Some("Orphan") => true,
            Some(other) => {
                return Err(Failure::bad_request(format!(
                    "propagationPolicy {other:?} is not one of Orphan, Background, Foreground"
                )));
            }
        };
        Ok(DeleteOptions { write, orphan })
    }
}
