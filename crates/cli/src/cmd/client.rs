//! The CLI's connection to the daemon: a `kube::Client` of its Kubernetes API, over the state
//! directory's Unix socket, TCP with a bearer token, or a kubeconfig (HTTPS), used by the
//! kubectl-like verbs and by `shardvault demo`. Requests are built by kube-core; objects stay JSON as the server
//! sent them, so what `get -o yaml` prints is what the daemon stores.

mod error;
mod unix;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper::Uri;
use hyper_util::rt::TokioExecutor;
use kube::api::{DeleteParams, GetParams, ListParams, Patch, PatchParams, WatchParams};
use kube::client::Body;
use kube::core::Request;
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_store::ApplyOutcome;

pub use error::ApiError;
use error::{api_error, is_not_found};
use unix::UnixConnector;
pub use watch::WatchStream;

/// File name of the daemon's socket inside the state directory.
pub const SOCKET: &str = "shardvault.sock";

/// Header carrying the outcome of an apply (`created`, `configured`, `unchanged`).
pub use shardvault_apiserver::APPLY_OUTCOME_HEADER;

/// The field manager the CLI applies as.
const FIELD_MANAGER: &str = "shardvault";

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

/// A name percent-encoded as one path segment (so `a/b` reaches the daemon, which refuses
/// it with its field path, instead of naming another URL).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A client of one daemon's Kubernetes API.
#[derive(Clone)]
pub struct Client {
    kube: kube::Client,
}

impl Client {
    /// Connects to the daemon of `state_dir` over its Unix socket; says how to start it
    /// when it is not running.
    pub async fn connect(state_dir: &Path) -> anyhow::Result<Client> {
        let socket = state_dir.join(SOCKET);
        let client = Client::over(
            UnixConnector(Arc::new(socket.clone())),
            kube::Config::new(Uri::from_static("http://shardvault")),
        )?;
        if let Err(e) = client.ping().await {
            tracing::debug!("ping failed: {e:#}");
            let denied = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            });
            if denied {
                bail!(
                    "permission denied on {}: the API socket is only for the user running the daemon (root, usually)",
                    socket.display()
                );
            }
            bail!(
                "shardvault is not running in {}: start it with `shardvault up` (or `shardvault serve`)",
                state_dir.display()
            );
        }
        Ok(client)
    }

    /// A client of a daemon listening on TCP `addr` (`host:port`, plain HTTP) with a bearer
    /// token.
    pub fn tcp(addr: &str, token: Option<String>) -> anyhow::Result<Client> {
        let url = format!(
            "http://{}",
            addr.trim_start_matches("http://").trim_end_matches('/')
        );
        let mut config = kube::Config::new(
            url.parse()
                .with_context(|| format!("--server {addr:?} is not host:port"))?,
        );
        config.auth_info.token = token.map(Into::into);
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(true);
        Client::over(http, config)
    }

    /// A client of the Kubernetes API server a kubeconfig names (its current context): the
    /// daemon's HTTPS listener (`shardvault kubeconfig --path`), or any cluster.
    pub async fn from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
        Ok(Client {
            kube: super::operator::client_from(path).await?,
        })
    }

    /// A kube client sending through `connector` to `config`'s URL, with its credentials.
    fn over<C>(connector: C, config: kube::Config) -> anyhow::Result<Client>
    where
        C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    {
        use kube::client::ConfigExt;
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build::<_, Body>(connector);
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.auth_layer()?)
            .map_err(tower::BoxError::from)
            .service(http);
        Ok(Client {
            kube: kube::Client::new(service, shardvault_store::DEFAULT_NAMESPACE),
        })
    }

    /// Succeeds when the daemon answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let req = hyper::Request::get("/healthz").body(Vec::new())?;
        self.kube.request_text(req).await.map_err(api_error)?;
        Ok(())
    }

    /// Sends a request and reads the JSON object answered; error statuses become
    /// [`ApiError`].
    async fn call(&self, req: hyper::Request<Vec<u8>>) -> anyhow::Result<Value> {
        self.kube.request::<Value>(req).await.map_err(api_error)
    }

    /// `kubectl apply` of one manifest: a server-side apply whose outcome the daemon names.
    pub async fn apply(&self, doc: &Value) -> anyhow::Result<(Value, ApplyOutcome)> {
        let (kind, ns, name) = match identify(doc) {
            Ok(id) => id,
            Err(e) => match shardvault_api::validate(doc) {
                Err(v) => return Err(ApiError::from_validation(&v).into()),
                Ok(_) => return Err(e),
            },
        };
        let req = Request::new(collection_path(kind, Some(&ns))).patch(
            &segment(&name),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(doc),
        )?;
        let resp = self.kube.send(req.map(Body::from)).await?;
        let status = resp.status();
        let outcome = match resp
            .headers()
            .get(APPLY_OUTCOME_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            Some("created") => ApplyOutcome::Created,
            Some("unchanged") => ApplyOutcome::Unchanged,
            _ => ApplyOutcome::Configured,
        };
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(ApiError::from_body(status.as_u16(), &bytes).into());
        }
        let obj = serde_json::from_slice(&bytes)
            .context("the daemon answered an apply with something that is not JSON")?;
        Ok((obj, outcome))
    }

    /// Reads one object; `None` when it does not exist.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let req = Request::new(collection_path(kind, Some(namespace)))
            .get(&segment(name), &GetParams::default())?;
        found(self.call(req).await)
    }

    /// Lists objects of a kind in a namespace (all with `None`), optionally by label selector.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        Ok(self.list_with_version(kind, namespace, selector).await?.0)
    }

    /// The objects of a list and the list's resourceVersion.
    async fn list_with_version(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> anyhow::Result<(Vec<Value>, String)> {
        let mut params = ListParams::default();
        if let Some(sel) = selector.filter(|s| !s.is_empty()) {
            params = params.labels(sel);
        }
        let list = self
            .call(Request::new(collection_path(kind, namespace)).list(&params)?)
            .await?;
        let version = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("0")
            .to_string();
        Ok((items(list), version))
    }

    /// The current objects of a kind (as `ADDED`), then every change, as `kubectl get -w`
    /// sees them: a list, then watches from its resourceVersion, resumed when the daemon
    /// ends one.
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> anyhow::Result<WatchStream> {
        let (items, version) = self.list_with_version(kind, namespace, selector).await?;
        let params = match selector.filter(|s| !s.is_empty()) {
            Some(sel) => WatchParams::default().labels(sel),
            None => WatchParams::default(),
        };
        let request = Request::new(collection_path(kind, namespace));
        Ok(WatchStream::new(
            self.clone(),
            request,
            params,
            version,
            items,
        ))
    }

    /// Deletes an object; returns its last state, `None` if it did not exist.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let req = Request::new(collection_path(kind, Some(namespace)))
            .delete(&segment(name), &DeleteParams::default())?;
        found(self.call(req).await)
    }

    /// The Events about an object, oldest first (the daemon selects them by
    /// `involvedObject.uid`).
    pub async fn events(&self, obj: &Value) -> anyhow::Result<Vec<Value>> {
        let ns = shardvault_store::namespace_of(obj);
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
        let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
        let list = self
            .call(Request::new(collection_path(Kind::Event, Some(ns))).list(&params)?)
            .await?;
        Ok(items(list))
    }

    /// Polls an object until `done` holds for it (`None` = the object is gone), or fails
    /// after `timeout`.
    pub async fn wait_for(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        timeout: Duration,
        mut done: impl FnMut(Option<&Value>) -> bool,
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

/// The `items` of a list.
fn items(list: Value) -> Vec<Value> {
    match list {
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// An object answered, or `None` for 404.
fn found(answer: anyhow::Result<Value>) -> anyhow::Result<Option<Value>> {
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Kind, namespace (`default` when unset) and name of a manifest.
pub fn identify(doc: &Value) -> anyhow::Result<(Kind, String, String)> {
    let r = shardvault_store::ObjectRef::of(doc)?;
    Ok((r.kind, r.namespace, r.name))
}

/// How a verb finds the daemon: the state directory's socket, a TCP server with a token, or
/// a kubeconfig.
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
    /// Talk to the API server this kubeconfig names instead (`shardvault kubeconfig --path`
    /// gives the daemon's).
    #[arg(long, global = true, conflicts_with = "server")]
    pub kubeconfig: Option<PathBuf>,
}

impl ConnArgs {
    /// Connects as the flags say.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        if let Some(path) = &self.kubeconfig {
            let client = Client::from_kubeconfig(path).await?;
            client.ping().await.with_context(|| {
                format!(
                    "the API server of the kubeconfig {} does not answer",
                    path.display()
                )
            })?;
            return Ok(client);
        }
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
                let client = Client::tcp(addr, token)?;
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
