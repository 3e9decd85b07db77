//! A prefixed view of one object storage, with whole-object get and put, retries of transient
//! failures, a concurrency limit per kind of request and an optional upload bandwidth limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::TimeoutLayer;
use opendal::{ErrorKind, Operator};
use tokio::sync::Semaphore;

use crate::fs::{FsError, FsRoot, STAGING_DIR};
use crate::retry::with_retries;
use crate::{Performance, StorageConfig, StorageError, Throttle, cloud};

/// Uploads, downloads and other requests in flight at once when no [`Performance`] is given.
const DEFAULT_CONCURRENCY: usize = 16;
/// Metadata requests (stat, list, delete) in flight at once.
const REQUEST_CONCURRENCY: usize = 32;
/// Bytes handed to the backend per throttle booking.
const THROTTLE_SLICE: usize = 64 * 1024;
/// Multipart part size of throttled S3 uploads.
const S3_PART: usize = 8 * 1024 * 1024;
/// Ranged requests in flight for one S3 download.
const S3_READ_STREAMS: usize = 4;
/// Bytes per ranged S3 download request.
const S3_READ_CHUNK: usize = 4 * 1024 * 1024;
/// S3 error codes that mean the request went to a region the bucket is not in.
const WRONG_REGION_CODES: [&str; 3] = [
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IncorrectEndpoint",
];
/// Single deletes in flight for one `delete_all` on GCS.
const GCS_DELETES: usize = 8;

/// Objects under one prefix of one storage.
#[derive(Clone, Debug)]
pub struct Store {
    io: Io,
    prefix: String,
    backend: Arc<Backend>,
    limits: Arc<Limits>,
}

/// How requests reach the storage.
#[derive(Clone, Debug)]
enum Io {
    /// Through OpenDAL (object stores).
    Dal(Operator),
    /// A filesystem confined to its root (see [`crate::fs`]).
    Fs(Arc<FsRoot>),
}

/// Which storage a store talks to, for messages and error mapping (never credentials).
#[derive(Debug)]
enum Backend {
    Filesystem {
        root: String,
    },
    S3 {
        bucket: String,
        endpoint: String,
        region: String,
    },
    Gcs {
        bucket: String,
        endpoint: String,
    },
    Azure {
        container: String,
        endpoint: String,
    },
}

impl Backend {
    fn location(&self) -> String {
        match self {
            Backend::Filesystem { root } => format!("filesystem {root}"),
            Backend::S3 { bucket, .. } => format!("s3 bucket {bucket}"),
            Backend::Gcs { bucket, .. } => format!("gcs bucket {bucket}"),
            Backend::Azure { container, .. } => format!("azureBlob container {container}"),
        }
    }

    /// The bucket and endpoint of an HTTP store.
    fn bucket(&self) -> Option<(&str, &str)> {
        match self {
            Backend::Filesystem { .. } => None,
            Backend::S3 {
                bucket, endpoint, ..
            }
            | Backend::Gcs { bucket, endpoint } => Some((bucket, endpoint)),
            Backend::Azure {
                container,
                endpoint,
            } => Some((container, endpoint)),
        }
    }

    /// The SGObjectStorage setting to check when the storage refuses the credentials.
    fn credentials_hint(&self) -> &'static str {
        match self {
            Backend::Filesystem { .. } => "the owner and mode of filesystem.path",
            Backend::S3 { .. } => "awsCredentials.secretKeySelectors",
            Backend::Gcs { .. } => "gcs.gcpCredentials",
            Backend::Azure { .. } => "azureBlob.azureCredentials.secretKeySelectors",
        }
    }
}

/// Error codes (S3, Azure) and messages (GCS) that mean the bucket itself is missing.
const BUCKET_MISSING: [&str; 3] = [
    "NoSuchBucket",
    "ContainerNotFound",
    "The specified bucket does not exist",
];

/// Tells whether `e` says the bucket (not just an object) does not exist.
fn bucket_missing(e: &opendal::Error) -> bool {
    BUCKET_MISSING
        .iter()
        .any(|code| e.to_string().contains(code))
}

/// The innermost cause of `e` when it is a TLS certificate that was not trusted.
fn untrusted_certificate(e: &opendal::Error) -> Option<String> {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    let mut found = None;
    while let Some(c) = cause {
        let text = c.to_string();
        if text.contains("certificate") || text.contains("UnknownIssuer") {
            found = Some(text);
        }
        cause = c.source();
    }
    found
}

/// Shared by a store and its children.
#[derive(Debug)]
struct Limits {
    uploads: Semaphore,
    downloads: Semaphore,
    requests: Semaphore,
    network: Option<Throttle>,
}

impl Limits {
    fn new(uploads: usize, downloads: usize, network: Option<Throttle>) -> Limits {
        Limits {
            uploads: Semaphore::new(uploads.max(1)),
            downloads: Semaphore::new(downloads.max(1)),
            requests: Semaphore::new(REQUEST_CONCURRENCY),
            network,
        }
    }
}

impl Store {
    /// Opens the storage described by `config`, rooted at `prefix`.
    pub fn open(config: &StorageConfig, prefix: &str) -> Result<Store, StorageError> {
        let (io, backend) = match config {
            StorageConfig::Filesystem { path } => {
                let root = path
                    .to_str()
                    .ok_or_else(|| StorageError::Config(format!("path {path:?} is not UTF-8")))?;
                let fs = FsRoot::new(path);
                if let Err(e) = fs.sweep_staging() {
                    tracing::warn!("filesystem {root}: could not sweep {STAGING_DIR}: {e}");
                }
                let backend = Backend::Filesystem {
                    root: root.to_string(),
                };
                (Io::Fs(Arc::new(fs)), backend)
            }
            StorageConfig::S3 { .. } => {
                let (op, backend) = open_s3(config)?;
                (Io::Dal(with_retries(op)), backend)
            }
            StorageConfig::Gcs { .. } => {
                let o = cloud::open_gcs(config)?;
                let backend = Backend::Gcs {
                    bucket: o.bucket,
                    endpoint: o.endpoint,
                };
                (Io::Dal(with_retries(with_timeouts(o.op))), backend)
            }
            StorageConfig::AzureBlob { .. } => {
                let o = cloud::open_azure(config)?;
                let backend = Backend::Azure {
                    container: o.bucket,
                    endpoint: o.endpoint,
                };
                (Io::Dal(with_retries(with_timeouts(o.op))), backend)
            }
        };
        // A bucket's path (`s3://bucket/some/path`) is the root every prefix is under.
        let root = match config {
            StorageConfig::Filesystem { .. } => "",
            StorageConfig::S3 { path, .. }
            | StorageConfig::Gcs { path, .. }
            | StorageConfig::AzureBlob { path, .. } => path,
        };
        let root = Store {
            io,
            prefix: clean(root),
            backend: Arc::new(backend),
            limits: Arc::new(Limits::new(DEFAULT_CONCURRENCY, DEFAULT_CONCURRENCY, None)),
        };
        Ok(root.child(prefix))
    }

    /// This store with `performance`'s upload/download concurrency and network bandwidth limits,
    /// shared by every child of the returned store.
    pub fn with_performance(&self, performance: &Performance) -> Store {
        let network = performance.max_network_bandwidth.map(Throttle::new);
        Store {
            limits: Arc::new(Limits::new(
                performance.upload_concurrency,
                performance.download_concurrency,
                network,
            )),
            ..self.clone()
        }
    }

    /// A view of the sub-prefix `sub` of this store.
    pub fn child(&self, sub: &str) -> Store {
        Store {
            prefix: self.full(sub),
            ..self.clone()
        }
    }

    fn full(&self, key: &str) -> String {
        let key = clean(key);
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key,
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{}", self.prefix, key),
        }
    }

    /// Turns a backend error on `key` into the error a user can act on.
    fn error(&self, op: &'static str, key: String, source: opendal::Error) -> StorageError {
        let backend = &*self.backend;
        if let Some((bucket, endpoint)) = backend.bucket() {
            // Listing an empty prefix of an existing bucket is no error on any HTTP store.
            let listing = matches!(op, "list" | "check");
            if bucket_missing(&source) || (listing && source.kind() == ErrorKind::NotFound) {
                return StorageError::BucketMissing {
                    bucket: bucket.to_string(),
                    endpoint: endpoint.to_string(),
                };
            }
            if let Some(cause) = untrusted_certificate(&source) {
                return StorageError::Config(format!(
                    "the TLS certificate of {endpoint} is not trusted ({cause}): set \
                     s3Compatible.awsCredentials.secretKeySelectors.caCertificate to the CA \
                     that signed it"
                ));
            }
        }
        match (source.kind(), backend) {
            (ErrorKind::NotFound, _) if op == "get" => StorageError::NotFound {
                key,
                location: backend.location(),
            },
            (ErrorKind::PermissionDenied, _) => StorageError::AccessDenied {
                location: backend.location(),
                hint: backend.credentials_hint(),
            },
            (_, Backend::S3 { bucket, region, .. })
                if WRONG_REGION_CODES
                    .iter()
                    .any(|code| source.message().contains(code)) =>
            {
                StorageError::Config(format!(
                    "s3 bucket {bucket} is not in region {region}: set the region of the \
                     SGObjectStorage to the bucket's"
                ))
            }
            _ => StorageError::Backend {
                op,
                key,
                cause: Box::new(source),
            },
        }
    }

    /// Turns a filesystem error on `key` into the error a user can act on.
    fn fs_error(&self, op: &'static str, key: String, source: FsError) -> StorageError {
        match source {
            FsError::BadKey(bad) => StorageError::Refused {
                key,
                reason: format!("{bad:?} has an empty, `.` or `..` component"),
            },
            FsError::Link(at) => StorageError::Refused {
                key,
                reason: format!(
                    "{at} in {} goes through a symbolic link or a non-directory; shardvault never \
                     follows links in a storage: remove it",
                    self.backend.location()
                ),
            },
            FsError::Io(e) if e.kind() == std::io::ErrorKind::NotFound && op == "get" => {
                StorageError::NotFound {
                    key,
                    location: self.backend.location(),
                }
            }
            FsError::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                StorageError::AccessDenied {
                    location: self.backend.location(),
                    hint: "the owner and mode of filesystem.path",
                }
            }
            FsError::Io(cause) => StorageError::Filesystem { op, key, cause },
        }
    }

    /// Runs `f` on the filesystem root off the async threads.
    async fn on_fs<T: Send + 'static>(
        fs: &Arc<FsRoot>,
        f: impl FnOnce(&FsRoot) -> Result<T, FsError> + Send + 'static,
    ) -> Result<T, FsError> {
        let fs = fs.clone();
        tokio::task::spawn_blocking(move || f(&fs))
            .await
            .unwrap_or_else(|e| Err(FsError::Io(std::io::Error::other(e))))
    }

    /// Checks that the storage is reachable, the bucket exists and the credentials are accepted.
    pub async fn check(&self) -> Result<(), StorageError> {
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        let dir = self.dir(&self.prefix);
        match &self.io {
            Io::Fs(fs) => Self::on_fs(fs, |fs| fs.check())
                .await
                .map_err(|e| self.fs_error("check", dir, e)),
            Io::Dal(op) => match op.list_with(&dir).limit(1).await {
                Ok(_) => Ok(()),
                Err(e) => Err(self.error("check", dir, e)),
            },
        }
    }

    /// Writes `data` as object `key`, replacing any existing object.
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StorageError> {
        let full = self.full(key);
        let _permit = self.limits.uploads.acquire().await.expect("never closed");
        let op = match &self.io {
            Io::Fs(fs) => {
                if let Some(throttle) = &self.limits.network {
                    for at in (0..data.len()).step_by(THROTTLE_SLICE) {
                        throttle
                            .acquire((data.len() - at).min(THROTTLE_SLICE) as u64)
                            .await;
                    }
                }
                let key = full.clone();
                return Self::on_fs(fs, move |fs| fs.write(&key, &data))
                    .await
                    .map_err(|e| self.fs_error("put", full, e));
            }
            Io::Dal(op) => op,
        };
        let result = match &self.limits.network {
            None => op.write(&full, data).await.map(|_| ()),
            Some(throttle) => self.put_throttled(op, &full, data.into(), throttle).await,
        };
        result.map_err(|e| self.error("put", full, e))
    }

    async fn put_throttled(
        &self,
        op: &Operator,
        full: &str,
        data: Bytes,
        throttle: &Throttle,
    ) -> opendal::Result<()> {
        if let Backend::Gcs { .. } = *self.backend {
            // GCS multipart goes through its XML API, which GCS emulators lack: the bytes
            // are paid for slice by slice, then sent as one upload.
            for at in (0..data.len()).step_by(THROTTLE_SLICE) {
                throttle
                    .acquire(THROTTLE_SLICE.min(data.len() - at) as u64)
                    .await;
            }
            return op.write(full, data).await.map(|_| ());
        }
        let mut writer = op.writer_with(full).chunk(S3_PART).await?;
        let mut at = 0;
        loop {
            let end = (at + THROTTLE_SLICE).min(data.len());
            throttle.acquire((end - at) as u64).await;
            if let Err(e) = writer.write(data.slice(at..end)).await {
                let _ = writer.abort().await;
                return Err(e);
            }
            at = end;
            if at == data.len() {
                break;
            }
        }
        writer.close().await.map(|_| ())
    }

    /// Reads object `key` whole.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let full = self.full(key);
        let _permit = self.limits.downloads.acquire().await.expect("never closed");
        let op = match &self.io {
            Io::Fs(fs) => {
                let key = full.clone();
                return Self::on_fs(fs, move |fs| fs.read(&key))
                    .await
                    .map_err(|e| self.fs_error("get", full, e));
            }
            Io::Dal(op) => op,
        };
        // Ranged reads in parallel: one HTTP stream is slower than the disk behind it.
        let read = op
            .read_with(&full)
            .concurrent(S3_READ_STREAMS)
            .chunk(S3_READ_CHUNK)
            .await;
        match read {
            Ok(buf) => Ok(buf.to_vec()),
            Err(e) => Err(self.error("get", full, e)),
        }
    }

    /// Tells whether object `key` exists (a directory-like prefix is not an object).
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let full = self.full(key);
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        let op = match &self.io {
            Io::Fs(fs) => {
                let key = full.clone();
                return Self::on_fs(fs, move |fs| fs.is_file(&key))
                    .await
                    .map_err(|e| self.fs_error("stat", full, e));
            }
            Io::Dal(op) => op,
        };
        match op.stat(&full).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("stat", full, e)),
        }
    }

    /// `path` as a directory path for listing ("" is the storage root).
    fn dir(&self, path: &str) -> String {
        if path.is_empty() {
            "/".to_string()
        } else {
            format!("{path}/")
        }
    }

    /// Lists keys under `dir` (recursively), relative to this store's prefix, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let paths: Vec<String> = match &self.io {
            Io::Fs(fs) => {
                let at = self.full(dir);
                let key = at.clone();
                match Self::on_fs(fs, move |fs| fs.list(&key)).await {
                    Ok(paths) => paths,
                    Err(e) if e.is_not_found() => return Ok(Vec::new()),
                    Err(e) => return Err(self.fs_error("list", at, e)),
                }
            }
            Io::Dal(op) => {
                let full = self.dir(&self.full(dir));
                let entries = match op.list_with(&full).recursive(true).await {
                    Ok(e) => e,
                    Err(e) => return Err(self.error("list", full, e)),
                };
                let tmp = format!("{STAGING_DIR}/");
                entries
                    .into_iter()
                    .filter(|e| !e.metadata().is_dir() && !e.path().starts_with(&tmp))
                    .map(|e| e.path().to_string())
                    .collect()
            }
        };
        let mut keys: Vec<String> = paths.into_iter().map(|p| p[strip..].to_string()).collect();
        keys.sort();
        Ok(keys)
    }

    /// Deletes object `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full(key);
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        match &self.io {
            Io::Fs(fs) => {
                let key = full.clone();
                Self::on_fs(fs, move |fs| fs.delete(&key))
                    .await
                    .map_err(|e| self.fs_error("delete", full, e))
            }
            Io::Dal(op) => op
                .delete(&full)
                .await
                .map_err(|e| self.error("delete", full, e)),
        }
    }

    /// Deletes every object under `dir`.
    pub async fn delete_all(&self, dir: &str) -> Result<(), StorageError> {
        let keys = self.list(dir).await?;
        if keys.is_empty() {
            return Ok(());
        }
        let full: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
        if let Backend::Gcs { .. } = *self.backend {
            // One request per object: GCS batch requests are not served by its emulators.
            for batch in keys.chunks(GCS_DELETES) {
                futures::future::try_join_all(batch.iter().map(|k| self.delete(k))).await?;
            }
            return Ok(());
        }
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        match &self.io {
            Io::Fs(fs) => Self::on_fs(fs, move |fs| full.iter().try_for_each(|k| fs.delete(k)))
                .await
                .map_err(|e| self.fs_error("delete", self.full(dir), e)),
            Io::Dal(op) => op
                .delete_iter(full)
                .await
                .map_err(|e| self.error("delete", self.full(dir), e)),
        }
    }

    /// Where this store points, for messages (never includes credentials).
    pub fn describe(&self) -> String {
        format!("{}/{}", self.backend.location(), self.prefix)
    }
}

/// Builds the S3 operator: explicit credentials never fall back to the environment or IMDS.
fn open_s3(config: &StorageConfig) -> Result<(Operator, Backend), StorageError> {
    let StorageConfig::S3 {
        bucket,
        region,
        endpoint,
        path_style,
        access_key_id,
        secret_access_key,
        storage_class,
        ca_certificate,
        ..
    } = config
    else {
        unreachable!("open_s3 is only called with an S3 config");
    };
    if bucket.is_empty() {
        return Err(StorageError::Config("s3 bucket is empty".into()));
    }
    // The HTTP client is installed once per process; idempotent.
    opendal::install_default();
    let region = region.as_deref().unwrap_or("us-east-1");
    let mut b = opendal::services::S3::default()
        .bucket(bucket)
        .region(region);
    let shown_endpoint = match endpoint {
        Some(e) => {
            let e = cloud::endpoint_url("s3Compatible endpoint", e)?;
            b = b.endpoint(&e);
            e
        }
        None => format!("https://s3.{region}.amazonaws.com"),
    };
    if !path_style {
        b = b.enable_virtual_host_style();
    }
    match (access_key_id, secret_access_key) {
        (Some(k), Some(s)) => {
            b = b
                .access_key_id(k)
                .secret_access_key(s)
                .disable_config_load()
                .disable_ec2_metadata();
        }
        (None, None) => {} // useIAMRole: environment, profile or instance metadata.
        _ => {
            return Err(StorageError::Config(format!(
                "s3 bucket {bucket}: awsCredentials.secretKeySelectors needs both accessKeyId \
                 and secretAccessKey"
            )));
        }
    }
    if let Some(c) = storage_class {
        b = b.default_storage_class(c);
    }
    let mut op =
        Operator::new(b).map_err(|e| StorageError::Config(format!("s3 bucket {bucket}: {e}")))?;
    if let Some(pem) = ca_certificate {
        op = cloud::trusting(
            op,
            "s3Compatible.awsCredentials.secretKeySelectors.caCertificate",
            pem,
        )?;
    }
    let op = with_timeouts(op);
    let backend = Backend::S3 {
        bucket: bucket.clone(),
        endpoint: shown_endpoint,
        region: region.to_string(),
    };
    Ok((op, backend))
}

/// `op` giving up on a request that hangs (HTTP stores only).
fn with_timeouts(op: Operator) -> Operator {
    op.layer(
        TimeoutLayer::new()
            .with_timeout(Duration::from_secs(60))
            .with_io_timeout(Duration::from_secs(120)),
    )
}

fn clean(p: &str) -> String {
    p.trim_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_store(dir: &tempfile::TempDir, prefix: &str) -> Store {
        let cfg = StorageConfig::Filesystem {
            path: dir.path().to_path_buf(),
        };
        Store::open(&cfg, prefix).unwrap()
    }

    #[tokio::test]
    async fn put_get_list_delete_on_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let store = fs_store(&dir, "/a/b/");
        store.put("x/1", b"one".to_vec()).await.unwrap();
        store.child("x").put("2", b"two".to_vec()).await.unwrap();
        assert_eq!(store.get("x/2").await.unwrap(), b"two");
        assert_eq!(store.list("x").await.unwrap(), vec!["x/1", "x/2"]);
        assert!(store.exists("x/1").await.unwrap());
        // (s3s-fs answers 500 to HEAD on such a prefix, so this is checked here only.)
        assert!(
            !store.exists("x").await.unwrap(),
            "a prefix is not an object"
        );
        store.delete_all("x").await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
        let err = store.get("x/1").await.unwrap_err();
        assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_link_planted_in_the_storage_is_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("root-owned");
        std::fs::write(&victim, b"keep").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = fs_store(&dir, "shardvault/ns/c1");
        store.put("b1/manifest.json", b"m".to_vec()).await.unwrap();
        // What the server user, which owns the storage, can plant there.
        let base = dir.path().join("shardvault/ns/c1");
        std::os::unix::fs::symlink(outside.path(), base.join("b1/parts")).unwrap();
        std::os::unix::fs::symlink(&victim, base.join("b1/label")).unwrap();

        assert_eq!(store.list("b1").await.unwrap(), ["b1/manifest.json"]);
        store.delete_all("b1").await.unwrap();
        store.delete("b1/label").await.unwrap();
        let err = store.get("b1/parts/root-owned").await.unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = store.put("b1/parts/new", b"x".to_vec()).await.unwrap_err();
        assert!(matches!(err, StorageError::Refused { .. }), "{err}");
        let err = store.delete("b1/parts/root-owned").await.unwrap_err();
        assert!(err.to_string().contains("never follows links"), "{err}");
        let err = store.get("../../etc/passwd").await.unwrap_err();
        assert!(matches!(err, StorageError::Refused { .. }), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn root_listing_hides_unfinished_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = fs_store(&dir, "");
        store.put("k", b"v".to_vec()).await.unwrap();
        std::fs::create_dir_all(dir.path().join(STAGING_DIR)).unwrap();
        std::fs::write(dir.path().join(STAGING_DIR).join("half"), b"x").unwrap();
        assert_eq!(store.list("").await.unwrap(), vec!["k"]);
    }

    #[tokio::test]
    async fn throttled_puts_write_whole_objects() {
        let dir = tempfile::tempdir().unwrap();
        let perf = Performance {
            max_network_bandwidth: Some(1 << 30),
            ..Performance::default()
        };
        let store = fs_store(&dir, "p").with_performance(&perf);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        store.put("big", data.clone()).await.unwrap();
        store.put("empty", Vec::new()).await.unwrap();
        assert_eq!(store.get("big").await.unwrap(), data);
        assert!(store.get("empty").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn performance_limits_are_per_store_and_shared_by_children() {
        let dir = tempfile::tempdir().unwrap();
        let base = fs_store(&dir, "p");
        let perf = Performance {
            upload_concurrency: 3,
            download_concurrency: 0,
            ..Performance::default()
        };
        let limited = base.with_performance(&perf);
        let child = limited.child("c");
        assert!(Arc::ptr_eq(&limited.limits, &child.limits));
        assert!(!Arc::ptr_eq(&limited.limits, &base.limits));
        assert_eq!(limited.limits.uploads.available_permits(), 3);
        assert_eq!(limited.limits.downloads.available_permits(), 1);
        let held = child.limits.uploads.acquire_many(3).await.unwrap();
        let put = limited.put("k", vec![1]);
        tokio::pin!(put);
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut put).await;
        assert!(waited.is_err(), "a put ran past the upload limit");
        drop(held);
        put.await.unwrap();
    }

    #[test]
    fn bad_s3_settings_are_config_errors() {
        let s3 = |endpoint: Option<&str>, ak: Option<&str>, sk: Option<&str>| StorageConfig::S3 {
            bucket: "b".into(),
            region: None,
            endpoint: endpoint.map(Into::into),
            path_style: true,
            access_key_id: ak.map(Into::into),
            secret_access_key: sk.map(Into::into),
            storage_class: None,
            ca_certificate: None,
            path: String::new(),
        };
        let err = Store::open(&s3(Some("minio:9000"), None, None), "").unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        let err = Store::open(&s3(None, Some("AK"), None), "").unwrap_err();
        assert!(err.to_string().contains("secretAccessKey"), "{err}");
        let store = Store::open(&s3(Some("http://127.0.0.1:9/"), Some("a"), Some("s")), "x");
        assert_eq!(store.unwrap().describe(), "s3 bucket b/x");
    }

    #[test]
    fn s3_error_codes_become_advice() {
        let cfg = StorageConfig::S3 {
            bucket: "b".into(),
            region: Some("eu-west-1".into()),
            endpoint: None,
            path_style: false,
            access_key_id: Some("a".into()),
            secret_access_key: Some("s".into()),
            storage_class: None,
            ca_certificate: None,
            path: String::new(),
        };
        let store = Store::open(&cfg, "").unwrap();
        let s3 = |kind, code: &str| {
            let e = opendal::Error::new(kind, format!("S3Error {{ code: \"{code}\" }}"));
            store.error("get", "k".into(), e).to_string()
        };
        let moved = s3(ErrorKind::Unexpected, "PermanentRedirect");
        assert!(moved.contains("not in region eu-west-1"), "{moved}");
        let missing = s3(ErrorKind::ConfigInvalid, "NoSuchBucket");
        assert_eq!(
            missing,
            "bucket b does not exist at endpoint https://s3.eu-west-1.amazonaws.com: create it \
             or fix the SGObjectStorage bucket"
        );
        let denied = s3(ErrorKind::PermissionDenied, "InvalidAccessKeyId");
        assert!(
            denied.contains("awsCredentials.secretKeySelectors"),
            "{denied}"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cfg = StorageConfig::S3 {
            bucket: "b".into(),
            region: None,
            endpoint: None,
            path_style: false,
            access_key_id: Some("AKIDSECRET".into()),
            secret_access_key: Some("VERYSECRET".into()),
            storage_class: None,
            ca_certificate: None,
            path: String::new(),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
