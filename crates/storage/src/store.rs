//! A prefixed view of one object storage, with whole-object get and put, retries of transient
//! failures, a concurrency limit per kind of request and an optional upload bandwidth limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};
use tokio::sync::Semaphore;

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
/// Directory (under a filesystem root) where objects are written before being renamed.
const FS_TMP_DIR: &str = ".shardvault-tmp";

/// Objects under one prefix of one storage.
#[derive(Clone, Debug)]
pub struct Store {
    op: Operator,
    prefix: String,
    backend: Arc<Backend>,
    limits: Arc<Limits>,
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

/// Makes the temporary directory of a filesystem storage shared like `/tmp` (sticky and
/// writable by all) when the storage root exists, so that processes of different users
/// writing the same storage (a daemon as root, `wal-push` as the server's user) can each
/// stage their objects there, whoever created it first.
fn shared_tmp_dir(tmp: &std::path::Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Only its owner (or root) may change the mode; for anyone else this does nothing.
    if !tmp.parent().is_some_and(|root| root.is_dir()) {
        return;
    }
    if !tmp.exists() && std::fs::create_dir(tmp).is_err() {
        return;
    }
    if std::fs::metadata(tmp).is_ok_and(|m| m.mode() & 0o7777 != 0o1777) {
        let _ = std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o1777));
    }
}

impl Store {
    /// Opens the storage described by `config`, rooted at `prefix`.
    pub fn open(config: &StorageConfig, prefix: &str) -> Result<Store, StorageError> {
        let (op, backend) = match config {
            StorageConfig::Filesystem { path } => {
                let root = path
                    .to_str()
                    .ok_or_else(|| StorageError::Config(format!("path {path:?} is not UTF-8")))?;
                let tmp = path.join(FS_TMP_DIR);
                shared_tmp_dir(&tmp);
                let builder = opendal::services::Fs::default()
                    .root(root)
                    .atomic_write_dir(tmp.to_str().expect("UTF-8 root joined with ASCII"));
                let op = Operator::new(builder)
                    .map_err(|e| StorageError::Config(format!("filesystem.path {root}: {e}")))?;
                let backend = Backend::Filesystem {
                    root: root.to_string(),
                };
                (op, backend)
            }
            StorageConfig::S3 { .. } => open_s3(config)?,
            StorageConfig::Gcs { .. } => {
                let o = cloud::open_gcs(config)?;
                let backend = Backend::Gcs {
                    bucket: o.bucket,
                    endpoint: o.endpoint,
                };
                (with_timeouts(o.op), backend)
            }
            StorageConfig::AzureBlob { .. } => {
                let o = cloud::open_azure(config)?;
                let backend = Backend::Azure {
                    container: o.bucket,
                    endpoint: o.endpoint,
                };
                (with_timeouts(o.op), backend)
            }
        };
        let root = match config {
            StorageConfig::Filesystem { .. } => "",
            StorageConfig::S3 { path, .. }
            | StorageConfig::Gcs { path, .. }
            | StorageConfig::AzureBlob { path, .. } => path,
        };
        let op = op.layer(
            RetryLayer::new()
                .with_jitter()
                .with_max_times(4)
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5)),
        );
        let root = Store {
            op,
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
                source: Box::new(source),
            },
        }
    }

    /// Checks that the storage is reachable, the bucket exists and the credentials are accepted.
    pub async fn check(&self) -> Result<(), StorageError> {
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        let dir = self.dir(&self.prefix);
        match self.op.list_with(&dir).limit(1).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && self.backend.bucket().is_none() => Ok(()),
            Err(e) => Err(self.error("check", dir, e)),
        }
    }

    /// Writes `data` as object `key`, replacing any existing object.
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StorageError> {
        let full = self.full(key);
        let _permit = self.limits.uploads.acquire().await.expect("never closed");
        let result = match &self.limits.network {
            None => self.op.write(&full, data).await.map(|_| ()),
            Some(throttle) => self.put_throttled(&full, data.into(), throttle).await,
        };
        result.map_err(|e| self.error("put", full, e))
    }

    async fn put_throttled(
        &self,
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
            return self.op.write(full, data).await.map(|_| ());
        }
        let mut writer = self.op.writer_with(full).chunk(S3_PART).await?;
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
        let read = match *self.backend {
            // Ranged reads in parallel: one HTTP stream is slower than the disk behind it.
            Backend::S3 { .. } | Backend::Gcs { .. } | Backend::Azure { .. } => {
                self.op
                    .read_with(&full)
                    .concurrent(S3_READ_STREAMS)
                    .chunk(S3_READ_CHUNK)
                    .await
            }
            Backend::Filesystem { .. } => self.op.read(&full).await,
        };
        match read {
            Ok(buf) => Ok(buf.to_vec()),
            Err(e) => Err(self.error("get", full, e)),
        }
    }

    /// Tells whether object `key` exists (a directory-like prefix is not an object).
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let full = self.full(key);
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        match self.op.stat(&full).await {
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
        let full = self.dir(&self.full(dir));
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        let entries = match self.op.list_with(&full).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound && self.backend.bucket().is_none() => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.error("list", full, e)),
        };
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let tmp = format!("{FS_TMP_DIR}/");
        let mut keys: Vec<String> = entries
            .into_iter()
            .filter(|e| !e.metadata().is_dir() && !e.path().starts_with(&tmp))
            .map(|e| e.path()[strip..].to_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Deletes object `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full(key);
        let _permit = self.limits.requests.acquire().await.expect("never closed");
        self.op
            .delete(&full)
            .await
            .map_err(|e| self.error("delete", full, e))
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
        self.op
            .delete_iter(full)
            .await
            .map_err(|e| self.error("delete", self.full(dir), e))
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
    async fn root_listing_hides_unfinished_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = fs_store(&dir, "");
        store.put("k", b"v".to_vec()).await.unwrap();
        std::fs::create_dir_all(dir.path().join(FS_TMP_DIR)).unwrap();
        std::fs::write(dir.path().join(FS_TMP_DIR).join("half"), b"x").unwrap();
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
