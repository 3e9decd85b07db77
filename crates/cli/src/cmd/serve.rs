//! `shardvault serve`: the daemon. Owns the store, serves it with the Kubernetes API
//! (`shardvault_apiserver`), and runs the controllers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use shardvault_apiserver::{ApiServer, ServeOptions};
use shardvault_pg::runtime::{ClusterRuntime, LocalRuntime};
use shardvault_store::Store;
use tokio_util::sync::CancellationToken;

use super::client::{Client, SOCKET};
use super::{operator, state_dir};

/// File holding the daemon's process id.
pub const PID_FILE: &str = "shardvault.pid";

/// File (in the state directory) holding the kubeconfig of the running daemon.
pub const KUBECONFIG: &str = "kubeconfig";

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
    /// Serve the Kubernetes API over HTTPS here (port 0: any free port); the kubeconfig
    /// in the state directory names the address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub https_listen: SocketAddr,
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
    rt.block_on(async { serve(args, shutdown_on_signals()).await })?;
    Ok(ExitCode::SUCCESS)
}

/// A token cancelled at the first SIGTERM or SIGINT (call it inside the runtime).
pub fn shutdown_on_signals() -> CancellationToken {
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
    shutdown
}

/// Serves until `shutdown` is cancelled, then stops the controllers and removes the
/// socket, pid file and kubeconfig. Usable in-process (e.g. by `shardvault demo`).
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
    let http = match (args.listen, &args.token_file) {
        (Some(addr), Some(f)) => Some((addr, read_token(f)?)),
        _ => None,
    };
    // With the controllers here, admission also asks their runtime (volume snapshots).
    let local = match args.controllers {
        Controllers::All => Some(Arc::new(operator::local_runtime(&dir)?)),
        Controllers::None => None,
    };
    let admission: Arc<dyn shardvault_apiserver::Admission> = match &local {
        Some(rt) => Arc::new(shardvault_control::admission::with_runtime(rt.clone())),
        None => Arc::new(shardvault_control::admission::admit),
    };
    let options = ServeOptions {
        https: Some(args.https_listen),
        unix_socket: Some(socket.clone()),
        http,
        admission: Some(admission),
        ..ServeOptions::default()
    };
    // A kubeconfig left by a daemon that was killed names an old address: `up` waits for
    // the new one.
    let kubeconfig = dir.join(KUBECONFIG);
    let _ = std::fs::remove_file(&kubeconfig);
    let server = ApiServer::start(store.clone(), options, shutdown.clone()).await?;
    server
        .write_kubeconfig(&kubeconfig)
        .with_context(|| format!("cannot write the kubeconfig {}", kubeconfig.display()))?;
    let pid_file = dir.join(PID_FILE);
    std::fs::write(&pid_file, std::process::id().to_string())?;

    // The controllers run the clusters here; without them, metrics only observe them.
    let runtime: Arc<dyn ClusterRuntime> = match &local {
        Some(rt) => rt.clone(),
        None => Arc::new(LocalRuntime::observing(
            &dir,
            std::env::current_exe().context("cannot find the shardvault binary")?,
        )),
    };
    let client = operator::own_client(&server).await?;
    let controllers = local
        .is_some()
        .then(|| operator::start_in_process(client.clone(), runtime.clone(), &shutdown));
    let metrics = match args.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, client, runtime, &shutdown).await?),
        None => None,
    };
    let console = match args.console_listen {
        Some(addr) => Some(serve_console(addr, &store, &dir, server.token(), &shutdown).await?),
        None => None,
    };
    tracing::info!(
        "shardvault serving {} on {} (store version {}; kubeconfig {})",
        dir.display(),
        socket.display(),
        store.version(),
        kubeconfig.display()
    );
    let result = server.stopped().await.context("the HTTP server failed");
    for listener in [metrics, console].into_iter().flatten() {
        listener.abort();
    }
    if let Some(c) = controllers {
        let _ = c.await;
    }
    for f in [&socket, &pid_file, &kubeconfig] {
        let _ = std::fs::remove_file(f);
    }
    tracing::info!("shardvault stopped");
    result
}

/// Reads the bearer token of the plain HTTP listener.
fn read_token(f: &Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(f)
        .with_context(|| format!("cannot read the token file {}", f.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        bail!(
            "the token file {} is empty: put a long random token in it",
            f.display()
        );
    }
    Ok(t)
}

/// Serves Prometheus metrics at `http://addr/metrics` until shutdown: the resources as
/// `client` reads them, the members as `runtime` observes them.
async fn serve_metrics(
    addr: SocketAddr,
    client: kube::Client,
    runtime: Arc<dyn ClusterRuntime>,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen: cannot listen on {addr}"))?;
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (client, runtime) = (client.clone(), runtime.clone());
            async move {
                match shardvault_control::metrics::render(&client, &*runtime).await {
                    Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    );
    tracing::info!("metrics on http://{addr}/metrics");
    Ok(spawn_listener(tcp, app, "metrics", shutdown))
}

/// Serves the read-only web console at `http://addr/` to holders of the API's `token` until
/// shutdown, and writes its login address for `shardvault console`.
async fn serve_console(
    addr: SocketAddr,
    store: &Arc<Store>,
    dir: &Path,
    token: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--console-listen: cannot listen on {addr}"))?;
    let addr = tcp.local_addr()?;
    super::console::write_url(dir, addr, token)?;
    let app = shardvault_console::router(store.clone(), Arc::from(token));
    tracing::info!("web console on http://{addr}/ (open the address `shardvault console` prints)");
    Ok(spawn_listener(tcp, app, "console", shutdown))
}

/// Creates the state directory, ours with mode 0711 (the server user passes through to its
/// cluster data, nobody lists or changes it). The local runtime sweeps the work files of an
/// earlier run when it opens.
fn create_state_dir(dir: &Path) -> anyhow::Result<()> {
    for dir in [dir.to_path_buf(), dir.join("clusters")] {
        shardvault_pg::statefile::create_own_dir(&dir, 0o711)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    Ok(())
}

/// Serves `app` on `tcp` until shutdown; a failure of the `what` listener is logged.
fn spawn_listener(
    tcp: tokio::net::TcpListener,
    app: axum::Router,
    what: &'static str,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(tcp, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!("the {what} listener failed: {e}");
        }
    })
}
