//! `shardvault operator`: only the controllers, as kube::Client of any Kubernetes API
//! server (the one `shardvault serve --controllers none` runs, a real cluster later).
//! `shardvault serve` starts the same controllers in-process with [`run_controllers`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use shardvault_apiserver::ApiServer;
use shardvault_control::context::{Context, Settings};
use shardvault_control::framework::{self, Ctx};
use shardvault_control::{registry, runner};
use shardvault_pg::runtime::LocalRuntime;
use shardvault_store::Store;
use tokio_util::sync::CancellationToken;

use super::{serve, state_dir};

/// Options of `shardvault operator`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The kubeconfig naming the API server (e.g. the `kubeconfig` of a daemon's state
    /// directory).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
    /// Where the local runtime keeps clusters and node work (default: $SHARDVAULT_HOME,
    /// else ~/.local/share/shardvault).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Runs the controllers in the foreground until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let shutdown = serve::shutdown_on_signals();
        let client = client_from(&args.kubeconfig).await?;
        let dir = state_dir::resolve(args.state_dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        run_controllers(client, Arc::new(local_runtime(&dir)?), shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A client of the API server `kubeconfig` names (its current context).
pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read the kubeconfig {}", kubeconfig.display()))?;
    client_of(config, &kubeconfig.display().to_string()).await
}

/// A client of the API server a kubeconfig (named `what` in errors) describes.
pub async fn client_of(config: Kubeconfig, what: &str) -> anyhow::Result<kube::Client> {
    // Two TLS backends are linked in (kube's and the storage clients'): say which one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {what}: cannot use it"))?;
    kube::Client::try_from(config).with_context(|| format!("kubeconfig {what}: no client"))
}

/// Starts every controller in the daemon's process: those on kube-runtime as kube::Client
/// of `server`, those still on the store-backed framework runner beside them.
pub async fn start_in_process(
    server: &ApiServer,
    store: &Arc<Store>,
    state_dir: &Path,
    runtime: Arc<LocalRuntime>,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let kubeconfig = server
        .kubeconfig()
        .context("the API server has no HTTPS listener for the controllers")?;
    let client = client_of(
        Kubeconfig::from_yaml(&kubeconfig).context("the daemon's own kubeconfig")?,
        "of the daemon",
    )
    .await?;
    let ctx = Ctx::new(store.clone(), state_dir.to_path_buf(), shutdown.clone());
    let framework = framework::run(
        ctx,
        shardvault_control::controllers(),
        framework::Settings::default(),
    );
    let shutdown = shutdown.clone();
    Ok(tokio::spawn(async move {
        let kube = run_controllers(client, runtime, shutdown);
        let (_, kube) = tokio::join!(framework, kube);
        if let Err(e) = kube {
            tracing::warn!("the controllers stopped: {e:#}");
        }
    }))
}

/// The runtime running clusters on this host under `state_dir`; call it before any node
/// work starts (it removes what an earlier run left).
pub fn local_runtime(state_dir: &Path) -> anyhow::Result<LocalRuntime> {
    let bin = std::env::current_exe().context("cannot find the shardvault binary")?;
    LocalRuntime::open(state_dir, bin).with_context(|| {
        format!(
            "cannot remove the work files of an earlier run under {}",
            state_dir.display()
        )
    })
}

/// Runs every controller against `client` until `shutdown` is cancelled (running
/// reconciles get a grace period, then are cancelled).
pub async fn run_controllers(
    client: kube::Client,
    runtime: Arc<LocalRuntime>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(
        client,
        runtime,
        shardvault_control::clock::from_env(),
        shutdown,
        Settings::default(),
    ));
    runner::run(registry::kube_controllers(&ctx), ctx).await;
    Ok(())
}
