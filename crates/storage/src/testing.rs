//! A real S3-protocol server (s3s-fs over a temporary directory) for tests of any crate,
//! run on its own thread so it outlives no test and blocks no test runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::StorageConfig;

pub mod emulators;
pub mod gpg;

/// A running S3-protocol server on 127.0.0.1 with one bucket; stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    /// The only access key the server accepts.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
    /// A path-style `s3Compatible` config for `bucket` with these credentials.
    pub config: StorageConfig,
    root: TempDir,
    faults: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts an S3 server on a free port of 127.0.0.1, with bucket `shardvault-test`.
pub async fn start_s3_server() -> S3Server {
    let root = tempfile::tempdir().expect("temporary directory for the S3 server");
    let bucket = "shardvault-test".to_string();
    std::fs::create_dir(root.path().join(&bucket)).expect("bucket directory");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let addr: SocketAddr = listener.local_addr().expect("bound address");
    let access_key = "shardvault-test-access".to_string();
    let secret_key = format!("shardvault-test-secret-{}", addr.port());

    let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs over the temporary directory");
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(
        access_key.clone(),
        secret_key.clone(),
    ));
    let service = builder.build();
    let faults = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("s3-server-{}", addr.port()))
        .spawn({
            let faults = faults.clone();
            move || serve(listener, service, faults, stopped)
        })
        .expect("spawn the S3 server thread");

    let endpoint = format!("http://{addr}");
    let config = StorageConfig::S3 {
        bucket: bucket.clone(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.clone()),
        path_style: true,
        access_key_id: Some(access_key.clone()),
        secret_access_key: Some(secret_key.clone()),
        storage_class: None,
        ca_certificate: None,
        path: String::new(),
    };
    S3Server {
        endpoint,
        bucket,
        access_key,
        secret_key,
        config,
        root,
        faults,
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl S3Server {
    /// A config for `bucket` of this server with the given credentials.
    pub fn config_for(&self, bucket: &str, access_key: &str, secret_key: &str) -> StorageConfig {
        StorageConfig::S3 {
            bucket: bucket.into(),
            region: Some("us-east-1".into()),
            endpoint: Some(self.endpoint.clone()),
            path_style: true,
            access_key_id: Some(access_key.into()),
            secret_access_key: Some(secret_key.into()),
            storage_class: None,
            ca_certificate: None,
            path: String::new(),
        }
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.path().join(name)).expect("bucket directory");
    }

    /// The directory holding object `key` of `bucket` as a plain file (to damage it in tests).
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// The directory holding every bucket.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Answers the next `n` requests with `503 SlowDown`, as an overloaded S3 does.
    pub fn fail_next_requests(&self, n: usize) {
        self.faults.store(n, Ordering::SeqCst);
    }

    /// How many injected failures are still to be served.
    pub fn pending_failures(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until told to stop.
fn serve(
    listener: std::net::TcpListener,
    service: S3Service,
    faults: Arc<AtomicUsize>,
    mut stopped: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("S3 server runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let socket = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => {
                        // Out of descriptors or similar: let connections close first.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let (http, service, faults) = (http.clone(), service.clone(), faults.clone());
            tokio::spawn(async move {
                let handler = service_fn(move |req: hyper::Request<Incoming>| {
                    let (service, faults) = (service.clone(), faults.clone());
                    async move {
                        let inject = faults
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if inject {
                            return Ok(slow_down());
                        }
                        hyper::service::Service::call(&service, req).await
                    }
                });
                let _ = http.serve_connection(TokioIo::new(socket), handler).await;
            });
        }
    });
}

/// The response of an overloaded S3, which clients retry.
fn slow_down() -> s3s::HttpResponse {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                <Error><Code>SlowDown</Code><Message>injected failure</Message></Error>";
    hyper::Response::builder()
        .status(503)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(body.to_string()))
        .expect("static response")
}
