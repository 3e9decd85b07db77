//! Starting and stopping the server: listeners, routing, graceful shutdown.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shardvault_store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::resources::{self, Api};
use crate::schemas::Schemas;
use crate::status::Failure;
use crate::tls::{Identity, TlsListener};
use crate::{StartError, auth, discovery, kubeconfig, openapi, path};

/// How long open connections (watches) may take to close once shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Which listeners to open and what checks writes go through.
#[derive(Clone)]
pub struct ServeOptions {
    /// HTTPS with a fresh self-signed certificate and bearer token (port 0: any free one).
    pub https: Option<SocketAddr>,
    /// Unix socket (mode 0600, no token: only its owner can connect).
    pub unix_socket: Option<PathBuf>,
    /// Plain HTTP, with the bearer token clients must send.
    pub http: Option<(SocketAddr, String)>,
    /// Checks that need other objects, run before writes.
    pub admission: Option<Arc<dyn Admission>>,
    /// The CRDs: printer columns, categories, OpenAPI schemas.
    pub schemas: Schemas,
}

impl Default for ServeOptions {
    /// HTTPS on 127.0.0.1 at a free port, nothing else; the served CRDs.
    fn default() -> ServeOptions {
        ServeOptions {
            https: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            unix_socket: None,
            http: None,
            admission: None,
            schemas: Schemas::served(),
        }
    }
}

/// A running API server.
pub struct ApiServer {
    https: Option<(SocketAddr, String)>,
    token: String,
    servers: JoinSet<std::io::Result<()>>,
    shutdown: CancellationToken,
}

#[derive(Clone)]
struct AppState {
    api: Api,
    token: Option<Arc<str>>,
}

impl ApiServer {
    /// Opens the listeners of `options` and serves `store` until `shutdown` is cancelled.
    pub async fn start(
        store: Arc<Store>,
        options: ServeOptions,
        shutdown: CancellationToken,
    ) -> Result<ApiServer, StartError> {
        let api = Api {
            store,
            admission: options.admission.clone(),
            schemas: Arc::new(options.schemas.clone()),
            shutdown: shutdown.clone(),
        };
        let token = auth::new_token();
        let mut servers = JoinSet::new();
        let graceful = || shutdown.clone().cancelled_owned();
        let mut https = None;
        if let Some(addr) = options.https {
            let identity = Identity::generate()?;
            let listener = TlsListener::bind(addr, &identity).await?;
            let bound = axum::serve::Listener::local_addr(&listener).unwrap_or(addr);
            let state = AppState {
                api: api.clone(),
                token: Some(Arc::from(token.as_str())),
            };
            servers.spawn(
                axum::serve(listener, router(state))
                    .with_graceful_shutdown(graceful())
                    .into_future(),
            );
            tracing::info!("the Kubernetes API is served on https://{bound} (bearer token)");
            https = Some((bound, identity.ca_pem));
        }
        if let Some(socket) = &options.unix_socket {
            let unix =
                tokio::net::UnixListener::bind(socket).map_err(|source| StartError::Listen {
                    what: socket.display().to_string(),
                    cause: source,
                })?;
            owner_only(socket).map_err(|source| StartError::Listen {
                what: socket.display().to_string(),
                cause: source,
            })?;
            let state = AppState {
                api: api.clone(),
                token: None,
            };
            servers.spawn(
                axum::serve(unix, router(state))
                    .with_graceful_shutdown(graceful())
                    .into_future(),
            );
        }
        if let Some((addr, http_token)) = &options.http {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen {
                    what: addr.to_string(),
                    cause: source,
                })?;
            let state = AppState {
                api: api.clone(),
                token: Some(Arc::from(http_token.as_str())),
            };
            servers.spawn(
                axum::serve(tcp, router(state))
                    .with_graceful_shutdown(graceful())
                    .into_future(),
            );
            tracing::info!("the API is served on http://{addr} (bearer token)");
        }
        Ok(ApiServer {
            https,
            token,
            servers,
            shutdown,
        })
    }

    /// The address of the HTTPS listener.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|(a, _)| *a)
    }

    /// The bearer token of the HTTPS listener.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig for the HTTPS listener (YAML).
    pub fn kubeconfig(&self) -> Option<String> {
        let (addr, ca) = self.https.as_ref()?;
        Some(kubeconfig::render(*addr, ca, &self.token))
    }

    /// Writes [`ApiServer::kubeconfig`] to `path`, readable by its owner only (it holds
    /// the token).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = self.kubeconfig().ok_or_else(|| {
            std::io::Error::other("the API server has no HTTPS listener to write a kubeconfig for")
        })?;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Waits until every listener has stopped (after shutdown began; a listener that
    /// fails begins it). Connections still open after a short grace are cut.
    pub async fn stopped(mut self) -> std::io::Result<()> {
        let mut result = Ok(());
        let drain = async {
            while let Some(done) = self.servers.join_next().await {
                if let Ok(Err(e)) = done {
                    result = Err(e);
                }
                self.shutdown.cancel();
            }
        };
        let shutdown = self.shutdown.clone();
        tokio::select! {
            () = drain => {}
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => tracing::info!("closing the API connections still open"),
        }
        result
    }
}

fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn router(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !auth::authorized(state.token.as_ref(), &headers) {
        return Failure::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong bearer token: use the kubeconfig the daemon wrote (`shardvault kubeconfig`), or pass its token file with --token-file",
        )
        .into_response();
    }
    let p = uri.path();
    if p == "/healthz" || p == "/readyz" || p == "/livez" {
        return axum::Json(json!({"status": "ok"})).into_response();
    }
    if method == Method::GET {
        let doc = match p.strip_prefix("/openapi/v3") {
            Some("" | "/") => Some(openapi::index()),
            Some(key) => openapi::document(key.trim_start_matches('/'), &state.api.schemas),
            None => discovery::document(p, &state.api.schemas),
        };
        if let Some(doc) = doc {
            return axum::Json(doc).into_response();
        }
    }
    let Some(target) = path::parse(p) else {
        return Failure::no_such_path(p).into_response();
    };
    resources::handle(&state.api, method, target, &query, &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
