//! A client of the shardvault daemon over its Unix socket (or TCP with a bearer token),
//! used by the kubectl-like verbs and by `shardvault demo`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_store::ApplyOutcome;

/// File name of the daemon's socket inside the state directory.
pub const SOCKET: &str = "shardvault.sock";

/// Header carrying the outcome of an apply (`created`, `configured`, `unchanged`).
pub use shardvault_apiserver::APPLY_OUTCOME_HEADER;

/// `/api/v1` or `/apis/<group>/<version>` for a kind.
fn api_base(kind: Kind) -> String {
    match kind.group() {
        "" => format!("/api/{}", kind.version()),
        g => format!("/apis/{g}/{}", kind.version()),
    }
}

/// The collection URL path of a kind, in one namespace or (with `None`) all.
pub fn collection_path(kind: Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{}/namespaces/{ns}/{}", api_base(kind), kind.plural()),
        None => format!("{}/{}", api_base(kind), kind.plural()),
    }
}

/// The URL path of one object.
pub fn object_path(kind: Kind, namespace: &str, name: &str) -> String {
    format!(
        "{}/{}",
        collection_path(kind, Some(namespace)),
        encode_query(name)
    )
}

/// Percent-encodes a query parameter value or a path segment.
pub fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An error answered by the daemon, from its Kubernetes `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.message`.
    pub message: String,
    /// Field paths and messages of a validation failure.
    pub causes: Vec<(String, String)>,
}

impl ApiError {
    fn from_status(code: StatusCode, body: &[u8]) -> ApiError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let causes = v
            .pointer("/details/causes")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
                        (s("field"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        ApiError {
            code: code.as_u16(),
            message: v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
            causes,
        }
    }

    /// The error of a manifest refused before it was sent.
    pub fn from_validation(v: &shardvault_api::ValidationError) -> ApiError {
        ApiError {
            code: 422,
            message: v.to_string(),
            causes: v
                .errors
                .iter()
                .map(|e| (e.path.clone(), e.message.clone()))
                .collect(),
        }
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.causes.is_empty() {
            return f.write_str(&self.message);
        }
        let head = self
            .message
            .split_once(" is invalid")
            .map_or(self.message.as_str(), |(h, _)| h);
        write!(f, "{head} is invalid:")?;
        for (field, msg) in &self.causes {
            write!(f, "\n  * {field}: {msg}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

/// A connection target of the daemon; each call opens a short HTTP/1.1 exchange.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
}

async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await
}

impl Client {
    /// Connects to the daemon of `state_dir` over its Unix socket; says how to start it
    /// when it is not running.
    pub async fn connect(state_dir: &Path) -> anyhow::Result<Client> {
        let client = Client {
            endpoint: Endpoint::Unix(state_dir.join(SOCKET)),
            token: None,
        };
        if let Err(e) = client.ping().await {
            tracing::debug!("ping failed: {e:#}");
            let denied = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            });
            if denied {
                bail!(
                    "permission denied on {}: the API socket is only for the user running the daemon (root, usually)",
                    state_dir.join(SOCKET).display()
                );
            }
            bail!(
                "shardvault is not running in {}: start it with `shardvault up` (or `shardvault serve`)",
                state_dir.display()
            );
        }
        Ok(client)
    }

    /// A client of a daemon listening on TCP `addr` (`host:port`) with a bearer token.
    pub fn tcp(addr: &str, token: Option<String>) -> Client {
        let addr = addr
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Client {
            endpoint: Endpoint::Tcp(addr),
            token,
        }
    }

    /// Succeeds when the daemon answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.call(Method::GET, "/healthz", None).await.map(drop)
    }

    /// Sends one request and returns the raw response.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Response<Incoming>> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "shardvault")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(bytes))?;
        let resp = match &self.endpoint {
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .with_context(|| format!("cannot connect to {}", path.display()))?;
                exchange(TokioIo::new(s), req).await?
            }
            Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("cannot connect to {addr}"))?;
                exchange(TokioIo::new(s), req).await?
            }
        };
        Ok(resp)
    }

    /// Sends a request and reads a JSON answer; error statuses become [`ApiError`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let outcome = resp
            .headers()
            .get(APPLY_OUTCOME_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(ApiError::from_status(status, &bytes).into());
        }
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .context("the daemon answered with something that is not JSON")?
        };
        Ok((value, outcome))
    }

    /// `kubectl apply` of one manifest.
    pub async fn apply(&self, doc: &Value) -> anyhow::Result<(Value, ApplyOutcome)> {
        let (kind, ns, name) = match identify(doc) {
            Ok(id) => id,
            Err(e) => match shardvault_api::validate(doc) {
                Err(v) => return Err(ApiError::from_validation(&v).into()),
                Ok(_) => return Err(e),
            },
        };
        let (obj, outcome) = self
            .call(Method::PATCH, &object_path(kind, &ns, &name), Some(doc))
            .await?;
        let outcome = match outcome.as_deref() {
            Some("created") => ApplyOutcome::Created,
            Some("unchanged") => ApplyOutcome::Unchanged,
            _ => ApplyOutcome::Configured,
        };
        Ok((obj, outcome))
    }

    /// Reads one object; `None` when it does not exist.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        self.object(Method::GET, kind, namespace, name).await
    }

    /// Lists objects of a kind in a namespace (all with `None`), optionally by label selector.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut path = collection_path(kind, namespace);
        if let Some(sel) = selector.filter(|s| !s.is_empty()) {
            path = format!("{path}?labelSelector={}", encode_query(sel));
        }
        let (list, _) = self.call(Method::GET, &path, None).await?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Streams changes of a kind (the current objects first, as ADDED), as a watch.
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> anyhow::Result<WatchStream> {
        let mut path = format!("{}?watch=true", collection_path(kind, namespace));
        if let Some(sel) = selector.filter(|s| !s.is_empty()) {
            path = format!("{path}&labelSelector={}", encode_query(sel));
        }
        let resp = self.send(Method::GET, &path, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await?.to_bytes();
            return Err(ApiError::from_status(status, &bytes).into());
        }
        Ok(WatchStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    /// Deletes an object; returns its last state, `None` if it did not exist.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        self.object(Method::DELETE, kind, namespace, name).await
    }

    /// Sends `method` to one object's path; `None` when the object does not exist.
    async fn object(
        &self,
        method: Method,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        match self
            .call(method, &object_path(kind, namespace, name), None)
            .await
        {
            Ok((v, _)) => Ok(Some(v)),
            Err(e)
                if e.downcast_ref::<ApiError>()
                    .is_some_and(ApiError::is_not_found) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The Events about an object, oldest first.
    pub async fn events(&self, obj: &Value) -> anyhow::Result<Vec<Value>> {
        let ns = shardvault_store::namespace_of(obj);
        let uid = &obj["metadata"]["uid"];
        let events = self.list(Kind::Event, Some(ns), None).await?;
        Ok(events
            .into_iter()
            .filter(|e| e["involvedObject"]["uid"] == *uid)
            .collect())
    }

    /// Polls an object until `done` holds for it (`None` = the object is gone), or fails
    /// after `timeout`.
    pub async fn wait_for(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        timeout: Duration,
        done: impl Fn(Option<&Value>) -> bool,
    ) -> anyhow::Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let obj = self.get(kind, namespace, name).await?;
            if done(obj.as_ref()) {
                return Ok(obj);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {}/{name} in namespace {namespace}",
                    kind.qualified()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The events of a watch, one JSON line each.
pub struct WatchStream {
    body: Incoming,
    buf: Vec<u8>,
}

impl WatchStream {
    /// The next event as (`ADDED`|`MODIFIED`|`DELETED`|`ERROR`, object); `None` when the
    /// daemon ends the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<(String, Value)>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let v: Value =
                    serde_json::from_slice(&line).context("a watch event is not JSON")?;
                let kind = v["type"].as_str().unwrap_or("").to_string();
                return Ok(Some((kind, v["object"].clone())));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Kind, namespace (`default` when unset) and name of a manifest.
pub fn identify(doc: &Value) -> anyhow::Result<(Kind, String, String)> {
    let r = shardvault_store::ObjectRef::of(doc)?;
    Ok((r.kind, r.namespace, r.name))
}

/// How a verb finds the daemon: the state directory's socket, or a TCP server with a token.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// State directory (default: $SHARDVAULT_HOME, else ~/.local/share/shardvault).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Talk to a daemon on TCP (`host:port`, as given to `serve --listen`) instead.
    #[arg(long, global = true, requires = "token_file")]
    pub server: Option<String>,
    /// File with the bearer token for --server.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
}

impl ConnArgs {
    /// Connects as the flags say.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        match &self.server {
            Some(addr) => {
                let token = match &self.token_file {
                    Some(f) => Some(
                        std::fs::read_to_string(f)
                            .with_context(|| format!("cannot read the token file {}", f.display()))?
                            .trim()
                            .to_string(),
                    ),
                    None => None,
                };
                let client = Client::tcp(addr, token);
                client
                    .ping()
                    .await
                    .with_context(|| format!("shardvault does not answer at {addr}"))?;
                Ok(client)
            }
            None => Client::connect(&super::state_dir::resolve(self.state_dir.clone())).await,
        }
    }
}

/// A single-threaded runtime for one CLI verb.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
