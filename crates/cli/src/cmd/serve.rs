//! `shardvault serve`: the daemon. Owns the store, serves it over HTTP with
//! Kubernetes-shaped paths, and runs the controllers.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shardvault_api::Kind;
use shardvault_control::framework::{self, Ctx, Settings};
use shardvault_store::{ApplyOutcome, Deletion, Selector, Store, StoreError};
use tokio_util::sync::CancellationToken;

use super::client::{APPLY_OUTCOME_HEADER, Client, SOCKET};
use super::state_dir;

/// File holding the daemon's process id.
pub const PID_FILE: &str = "shardvault.pid";

/// Which controllers the daemon runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Controllers {
    /// Every registered controller.
    All,
    /// None: the daemon only stores resources (for tests of the control plane).
    None,
}

/// Options of `shardvault serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// State directory (default: $SHARDVAULT_HOME, else ~/.local/share/shardvault).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Also listen on TCP at this address (requires --token-file).
    #[arg(long, requires = "token_file")]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token TCP clients must send.
    #[arg(long, requires = "listen")]
    pub token_file: Option<PathBuf>,
    /// Which controllers to run.
    #[arg(long, value_enum, default_value = "all")]
    pub controllers: Controllers,
    /// Serve Prometheus metrics at http://ADDR/metrics (no token; opt-in).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the read-only web console at http://ADDR/ (opt-in; `shardvault console` prints
    /// its address with the token).
    #[arg(long, value_name = "ADDR")]
    pub console_listen: Option<SocketAddr>,
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            on_signal.cancel();
        });
        serve(args, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone)]
struct AppState {
    store: Arc<Store>,
    token: Option<Arc<str>>,
    shutdown: CancellationToken,
}

/// Serves until `shutdown` is cancelled, then stops the controllers and removes the
/// socket. Usable in-process (e.g. by `shardvault demo`).
pub async fn serve(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Everything the daemon creates (store, pid file, work files) is private unless given
    // a mode on purpose.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let dir = state_dir::resolve(args.state_dir.clone());
    let socket = dir.join(SOCKET);
    // The kernel limits Unix socket paths to 107 bytes.
    if socket.as_os_str().len() > 107 {
        bail!(
            "the socket path {} is longer than Unix sockets allow (107 bytes): use a shorter --state-dir",
            socket.display()
        );
    }
    create_state_dir(&dir)?;
    if socket.exists() {
        if Client::connect(&dir).await.is_ok() {
            bail!(
                "shardvault is already running in {}: stop it with `shardvault down`",
                dir.display()
            );
        }
        std::fs::remove_file(&socket)
            .with_context(|| format!("cannot remove the stale socket {}", socket.display()))?;
    }
    let store = Arc::new(Store::open(&dir.join("store.db"))?);
    let token = match &args.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!(
                    "the token file {} is empty: put a long random token in it",
                    f.display()
                );
            }
            Some(Arc::<str>::from(t))
        }
        None => None,
    };
    let unix = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    set_mode(&socket, 0o600)?;
    let pid_file = dir.join(PID_FILE);
    std::fs::write(&pid_file, std::process::id().to_string())?;

    let reconcilers = match args.controllers {
        Controllers::All => shardvault_control::controllers(
            std::env::current_exe().context("cannot find the shardvault binary")?,
        ),
        Controllers::None => Vec::new(),
    };
    let ctx = Ctx::new(store.clone(), dir.clone(), shutdown.clone());
    let controllers = tokio::spawn(framework::run(ctx, reconcilers, Settings::default()));

    let state = AppState {
        store: store.clone(),
        token: None,
        shutdown: shutdown.clone(),
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(
        axum::serve(unix, router(state.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    if let Some(addr) = args.listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let tcp_state = AppState {
            token: token.clone(),
            ..state
        };
        servers.spawn(
            axum::serve(tcp, router(tcp_state))
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!("listening on {addr} (bearer token required)");
    }
    if let Some(addr) = args.metrics_listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen: cannot listen on {addr}"))?;
        let metrics_ctx = Ctx::new(store.clone(), dir.clone(), shutdown.clone());
        let app = Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let ctx = metrics_ctx.clone();
                async move {
                    match shardvault_control::metrics::render(&ctx).await {
                        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                            .into_response(),
                        Err(e) => store_error(e).into_response(),
                    }
                }
            }),
        );
        servers.spawn(
            axum::serve(tcp, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!("metrics on http://{addr}/metrics");
    }
    if let Some(addr) = args.console_listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--console-listen: cannot listen on {addr}"))?;
        let addr = tcp.local_addr()?;
        let console_token = match &token {
            Some(t) => t.clone(),
            None => Arc::<str>::from(super::console::new_token()),
        };
        super::console::write_url(&dir, addr, &console_token)?;
        servers.spawn(
            axum::serve(
                tcp,
                shardvault_console::router(store.clone(), console_token),
            )
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
        );
        tracing::info!(
            "web console on http://{addr}/ (open the address `shardvault console` prints)"
        );
    }
    tracing::info!(
        "shardvault serving {} on {} (store version {})",
        dir.display(),
        socket.display(),
        store.version()
    );
    let mut result = Ok(());
    let drain = async {
        while let Some(done) = servers.join_next().await {
            if let Ok(Err(e)) = done {
                result = Err(anyhow::Error::from(e).context("the HTTP server failed"));
            }
            shutdown.cancel();
        }
    };
    tokio::select! {
        () = drain => {}
        // Open watches keep a graceful shutdown waiting: they get a moment, then are cut.
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::info!("closing the connections still open"),
    }
    let _ = controllers.await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("shardvault stopped");
    result
}

/// How long open connections may take to close once shutdown began.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Creates the state directory, ours with mode 0711 (the server user passes through to its
/// cluster data, nobody lists or changes it), and sweeps the work files of an earlier run.
fn create_state_dir(dir: &Path) -> anyhow::Result<()> {
    for dir in [dir.to_path_buf(), dir.join("clusters")] {
        shardvault_pg::statefile::create_own_dir(&dir, 0o711)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    shardvault_control::backup_controller::sweep_work(dir).with_context(|| {
        format!(
            "cannot remove the work files of an earlier run under {}",
            dir.display()
        )
    })
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .fallback(handle)
        .with_state(state)
}

/// A failed request, answered as a Kubernetes `Status` object.
struct Failure {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        if let Some(d) = self.details {
            body["details"] = d;
        }
        (self.code, axum::Json(body)).into_response()
    }
}

fn status(
    code: StatusCode,
    reason: &'static str,
    message: &str,
    details: Option<Value>,
) -> Failure {
    Failure {
        code,
        reason,
        message: message.to_string(),
        details,
    }
}

fn store_error(e: StoreError) -> Failure {
    let code = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let details = match &e {
        StoreError::Invalid(v) => Some(json!({
            "name": v.name, "kind": v.kind,
            "causes": v.errors.iter().map(|f| json!({"field": f.path, "message": f.message})).collect::<Vec<_>>(),
        })),
        StoreError::NotFound { kind, name, .. }
        | StoreError::AlreadyExists { kind, name, .. }
        | StoreError::Conflict { kind, name, .. } => {
            Some(json!({"name": name, "kind": kind.plural()}))
        }
        _ => None,
    };
    status(code, e.reason(), &e.to_string(), details)
}

fn bad_request(message: impl Into<String>) -> Failure {
    status(StatusCode::BAD_REQUEST, "BadRequest", &message.into(), None)
}

/// The resource a request path names.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

/// Decodes the `%XX` escapes of a path segment (a name given with a `/` stays one segment).
fn decode_segment(seg: &str) -> Option<String> {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = seg.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_path(path: &str) -> Option<Target> {
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(decode_segment)
        .collect::<Option<_>>()?;
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, plural, name, sub) = match rest {
        [plural] => (None, *plural, None, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    if sub.is_some_and(|s| s != "status") {
        return None;
    }
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.plural() == plural && k.group() == group && k.version() == version)?;
    Some(Target {
        kind,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        status: sub.is_some(),
    })
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(e)),
        Err(e) => Err(status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &e.to_string(),
            None,
        )),
    }
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare without an early exit so timing does not reveal the token.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong bearer token: pass the daemon's token file with --token-file",
            None,
        )
        .into_response();
    }
    let Some(target) = parse_path(uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "the server could not find the requested resource {}",
                uri.path()
            ),
            None,
        )
        .into_response();
    };
    dispatch(&state, method, target, &query, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Reads a JSON body and checks it names the kind, namespace and name of the path.
fn object_body(body: &Bytes, t: &Target) -> Result<Value, Failure> {
    let mut doc: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the request body is not a JSON object: {e}")))?;
    if !doc.is_object() {
        return Err(bad_request("the request body must be a JSON object"));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    match doc.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(given) if given != ns => {
            return Err(bad_request(format!(
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
        return Err(bad_request(format!(
            "the name of the object does not match the request path ({name})"
        )));
    }
    if doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != t.kind.name())
    {
        return Err(bad_request(format!(
            "the object's kind does not match the request path ({})",
            t.kind
        )));
    }
    Ok(doc)
}

async fn dispatch(
    state: &AppState,
    method: Method,
    t: Target,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Response, Failure> {
    let store = &state.store;
    let kind = t.kind;
    let json_ok = |v: Value| (StatusCode::OK, axum::Json(v)).into_response();
    match (&method, t.name.clone()) {
        (&Method::GET, None) => {
            let selector = Selector::parse(query.get("labelSelector").map_or("", String::as_str))
                .map_err(|e| bad_request(e.to_string()))?;
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let from = match query.get("resourceVersion").filter(|v| !v.is_empty()) {
                    Some(v) => Some(v.parse::<u64>().map_err(|_| {
                        bad_request(format!("resourceVersion {v:?} is not a number"))
                    })?),
                    None => None,
                };
                return Ok(watch(state, kind, t.namespace, selector, from).await);
            }
            let ns = t.namespace.clone();
            let (items, version) =
                blocking(store, move |s| s.list(kind, ns.as_deref(), &selector)).await?;
            Ok(json_ok(json!({
                "apiVersion": kind.api_version(), "kind": format!("{}List", kind.name()),
                "metadata": {"resourceVersion": version.to_string()}, "items": items,
            })))
        }
        (&Method::POST, None) if t.namespace.is_some() && !t.status => {
            let doc = object_body(body, &t)?;
            let created = blocking(store, move |s| {
                shardvault_control::admission::admit(s, &doc)?;
                s.create(&doc)
            })
            .await?;
            Ok((StatusCode::CREATED, axum::Json(created)).into_response())
        }
        (&Method::GET, Some(name)) => {
            let ns = t.namespace.clone().unwrap_or_default();
            Ok(json_ok(
                blocking(store, move |s| s.get(kind, &ns, &name)).await?,
            ))
        }
        (&Method::PUT, Some(_)) => {
            let doc = object_body(body, &t)?;
            let status_only = t.status;
            let out = blocking(store, move |s| {
                if status_only {
                    s.update_status(&doc)
                } else {
                    s.update(&doc)
                }
            })
            .await?;
            Ok(json_ok(out))
        }
        (&Method::PATCH, Some(_)) if !t.status => {
            let doc = object_body(body, &t)?;
            let (obj, outcome) = blocking(store, move |s| {
                shardvault_control::admission::admit(s, &doc)?;
                s.apply(&doc)
            })
            .await?;
            let code = if outcome == ApplyOutcome::Created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                code,
                [(APPLY_OUTCOME_HEADER, outcome.to_string())],
                axum::Json(obj),
            )
                .into_response())
        }
        (&Method::DELETE, Some(name)) if !t.status => {
            let ns = t.namespace.clone().unwrap_or_default();
            let out = blocking(store, move |s| s.delete(kind, &ns, &name)).await?;
            let obj = match out {
                Deletion::Deleted(o) | Deletion::Pending(o) => o,
            };
            Ok(json_ok(obj))
        }
        _ => Err(status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not supported on this path"),
            None,
        )),
    }
}

/// Streams watch events as JSON lines: the current objects as ADDED when no version is
/// given, then every change after it, until the client goes or the daemon stops.
async fn watch(
    state: &AppState,
    kind: Kind,
    ns: Option<String>,
    selector: Selector,
    from: Option<u64>,
) -> Response {
    let mut buf = VecDeque::new();
    let from = match from {
        Some(v) => v,
        None => {
            let (ns2, sel) = (ns.clone(), selector.clone());
            match blocking(&state.store, move |s| s.list(kind, ns2.as_deref(), &sel)).await {
                Ok((items, version)) => {
                    buf.extend(
                        items
                            .into_iter()
                            .map(|o| line(&json!({"type": "ADDED", "object": o}))),
                    );
                    version
                }
                Err(r) => return r.into_response(),
            }
        }
    };
    struct W {
        store: Arc<Store>,
        rx: tokio::sync::watch::Receiver<u64>,
        last: u64,
        kind: Kind,
        ns: Option<String>,
        selector: Selector,
        shutdown: CancellationToken,
        buf: VecDeque<Bytes>,
        ended: bool,
    }
    let w = W {
        store: state.store.clone(),
        rx: state.store.subscribe(),
        last: from,
        kind,
        ns,
        selector,
        shutdown: state.shutdown.clone(),
        buf,
        ended: false,
    };
    let stream = futures::stream::unfold(w, |mut w| async move {
        loop {
            if let Some(b) = w.buf.pop_front() {
                return Some((Ok::<_, Infallible>(b), w));
            }
            if w.ended {
                return None;
            }
            let seen = *w.rx.borrow_and_update();
            let (last, kind, ns) = (w.last, w.kind, w.ns.clone());
            match blocking(&w.store, move |s| {
                s.changes_since(last, Some(kind), ns.as_deref())
            })
            .await
            {
                Ok(changes) => {
                    for c in changes {
                        w.last = c.version;
                        if w.selector.matches(&shardvault_store::labels_of(&c.object)) {
                            w.buf
                                .push_back(line(&serde_json::to_value(&c).unwrap_or_default()));
                        }
                    }
                    w.last = w.last.max(seen);
                }
                Err(_) => {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                        "reason": "Expired", "message": format!("resourceVersion {last} is too old: list again")});
                    w.buf
                        .push_back(line(&json!({"type": "ERROR", "object": status})));
                    w.ended = true;
                    continue;
                }
            }
            if w.buf.is_empty() {
                tokio::select! {
                    _ = w.shutdown.cancelled() => return None,
                    r = w.rx.changed() => if r.is_err() { return None },
                }
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
                None,
            )
            .into_response()
        })
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}
