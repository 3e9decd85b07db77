//! An in-process Kubernetes API server (`shardvault-apiserver` over a fresh store) and a
//! kube::Client of it, for tests that run controllers.

use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use shardvault_apiserver::{ApiServer, ServeOptions};
use shardvault_store::Store;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// A running API server with its store; stopped when dropped.
pub struct TestApi {
    /// The store the server serves (tests read Events and objects back from it).
    pub store: Arc<Store>,
    /// A client of the server.
    pub client: kube::Client,
    /// Cancelled on drop: stops the server.
    pub shutdown: CancellationToken,
    /// Holds the store file.
    pub dir: TempDir,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts an API server on 127.0.0.1 (a free port) over an empty store.
pub async fn start() -> TestApi {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(&dir.path().join("store.db")).expect("store opens"));
    let shutdown = CancellationToken::new();
    let server = ApiServer::start(store.clone(), ServeOptions::default(), shutdown.clone())
        .await
        .expect("API server starts");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = server.kubeconfig().expect("HTTPS listener");
    let config = Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    let client = kube::Client::try_from(config).expect("client");
    tokio::spawn(server.stopped());
    TestApi {
        store,
        client,
        shutdown,
        dir,
    }
}
