//! Plain descriptions of where objects go and how they are encoded.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Codec, Compression, Encryption, OpenPgpKey, StorageError, Store};

/// A storage backend and its credentials, resolved from an SGObjectStorage and its Secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StorageConfig {
    /// Objects are files under a directory (our `filesystem` extension).
    #[serde(rename_all = "camelCase")]
    Filesystem {
        /// The directory holding every object (`filesystem.path`).
        path: PathBuf,
    },
    /// Amazon S3 or an S3-compatible server.
    #[serde(rename_all = "camelCase")]
    S3 {
        /// Bucket name, without scheme or path (`s3.bucket`).
        bucket: String,
        /// Key prefix inside the bucket from a bucket written with a path (`s3://b/path`).
        #[serde(default)]
        path: String,
        /// Region; `us-east-1` when absent.
        #[serde(default)]
        region: Option<String>,
        /// `http(s)://host[:port]` of an S3-compatible server; AWS when absent.
        #[serde(default)]
        endpoint: Option<String>,
        /// `enablePathStyleAddressing`: `endpoint/bucket/key` instead of `bucket.endpoint/key`.
        #[serde(default)]
        path_style: bool,
        /// Access key id; with no key pair, credentials come from the environment or IAM role.
        #[serde(default)]
        access_key_id: Option<String>,
        /// Secret access key (never printed).
        #[serde(default)]
        secret_access_key: Option<String>,
        /// Storage class of new objects (`storageClass`), e.g. `STANDARD_IA`.
        #[serde(default)]
        storage_class: Option<String>,
        /// PEM of the CA that signed the endpoint's TLS certificate (`caCertificate`).
        #[serde(default)]
        ca_certificate: Option<String>,
    },
    /// Google Cloud Storage.
    #[serde(rename_all = "camelCase")]
    Gcs {
        /// Bucket name, without scheme or path (`gcs.bucket`).
        bucket: String,
        /// Key prefix inside the bucket from a bucket written with a path (`gs://b/path`).
        #[serde(default)]
        path: String,
        /// Base URL of a GCS-compatible server (our `gcs.endpoint`); Google when absent.
        #[serde(default)]
        endpoint: Option<String>,
        /// How requests are authorized.
        credentials: GcsCredentials,
    },
    /// Azure Blob Storage.
    #[serde(rename_all = "camelCase")]
    AzureBlob {
        /// Container name, without scheme or path (`azureBlob.bucket`).
        container: String,
        /// Key prefix inside the container from a bucket written with a path (`azure://c/path`).
        #[serde(default)]
        path: String,
        /// Storage account name (`storageAccount`).
        account: String,
        /// Storage account access key, base64 (`accessKey`, never printed).
        access_key: String,
        /// Base URL of the blob service (our `azureBlob.endpoint`);
        /// `https://ACCOUNT.blob.core.windows.net` when absent.
        #[serde(default)]
        endpoint: Option<String>,
    },
}

/// How GCS requests are authorized (`gcs.gcpCredentials`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum GcsCredentials {
    /// A service account key, the JSON downloaded from the console (`serviceAccountJSON`).
    ServiceAccount {
        /// The JSON text (never printed).
        json: String,
    },
    /// The GCE/GKE metadata service (`fetchCredentialsFromMetadataService`).
    MetadataService,
    /// Unsigned requests, for a GCS emulator given as `gcs.endpoint`.
    Unsigned,
}

impl fmt::Debug for GcsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GcsCredentials::ServiceAccount { .. } => "ServiceAccount(<redacted>)",
            GcsCredentials::MetadataService => "MetadataService",
            GcsCredentials::Unsigned => "Unsigned",
        })
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        match self {
            StorageConfig::Filesystem { path } => {
                f.debug_struct("Filesystem").field("path", path).finish()
            }
            StorageConfig::S3 {
                bucket,
                path,
                region,
                endpoint,
                path_style,
                access_key_id,
                secret_access_key,
                storage_class,
                ca_certificate,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("path", path)
                .field("region", region)
                .field("endpoint", endpoint)
                .field("path_style", path_style)
                .field("access_key_id", &redact(access_key_id))
                .field("secret_access_key", &redact(secret_access_key))
                .field("storage_class", storage_class)
                .field("ca_certificate", &ca_certificate.is_some())
                .finish(),
            StorageConfig::Gcs {
                bucket,
                path,
                endpoint,
                credentials,
            } => f
                .debug_struct("Gcs")
                .field("bucket", bucket)
                .field("path", path)
                .field("endpoint", endpoint)
                .field("credentials", credentials)
                .finish(),
            StorageConfig::AzureBlob {
                container,
                path,
                account,
                endpoint,
                ..
            } => f
                .debug_struct("AzureBlob")
                .field("container", container)
                .field("path", path)
                .field("account", account)
                .field("access_key", &"<redacted>")
                .field("endpoint", endpoint)
                .finish(),
        }
    }
}

/// Throughput and concurrency limits for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Performance {
    /// Bytes per second leaving the process, shared by all uploads.
    #[serde(default)]
    pub max_network_bandwidth: Option<u64>,
    /// Bytes per second read from the data directory.
    #[serde(default)]
    pub max_disk_bandwidth: Option<u64>,
    /// Readers and compressors working at once.
    #[serde(default = "default_two")]
    pub upload_disk_concurrency: usize,
    /// Uploads in flight at once.
    #[serde(default = "default_two")]
    pub upload_concurrency: usize,
    /// Downloads in flight at once.
    #[serde(default = "default_two")]
    pub download_concurrency: usize,
}

fn default_two() -> usize {
    2
}

impl Default for Performance {
    fn default() -> Self {
        Performance {
            max_network_bandwidth: None,
            max_disk_bandwidth: None,
            upload_disk_concurrency: 2,
            upload_concurrency: 2,
            download_concurrency: 2,
        }
    }
}

/// One place a member's backups and WAL go: a storage, a prefix inside it, and the codec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// The backend and its credentials.
    pub storage: StorageConfig,
    /// Key prefix inside the storage, without leading or trailing slash.
    pub prefix: String,
    /// Compression of new objects.
    #[serde(default)]
    pub compression: Compression,
    /// Bandwidth and concurrency limits.
    #[serde(default)]
    pub performance: Performance,
    /// Client-side encryption of every object, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

impl Destination {
    /// Opens this destination's store, with its prefix and performance limits.
    pub fn store(&self) -> Result<Store, StorageError> {
        Ok(Store::open(&self.storage, &self.prefix)?.with_performance(&self.performance))
    }

    /// The codec new objects are written with (and encrypted ones are read with).
    pub fn codec(&self) -> Result<Codec, StorageError> {
        Codec::with_encryption(self.compression, self.encryption.as_ref())
    }
}

impl Codec {
    /// A codec with `compression` and the key of `encryption` (sodium or OpenPGP), if any.
    pub fn with_encryption(
        compression: Compression,
        encryption: Option<&Encryption>,
    ) -> Result<Codec, StorageError> {
        Ok(match encryption {
            None => Codec::new(compression, None),
            Some(Encryption::Openpgp {
                key,
                key_passphrase,
            }) => Codec::new(compression, None)
                .with_openpgp(OpenPgpKey::parse(key, key_passphrase.as_deref())?),
            Some(sodium) => Codec::new(compression, Some(sodium.key()?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyTransform;

    #[test]
    fn destinations_without_encryption_still_parse() {
        let d: Destination = serde_json::from_str(
            r#"{"storage":{"type":"filesystem","path":"/b"},"prefix":"x","compression":"zstd"}"#,
        )
        .unwrap();
        assert_eq!(d.encryption, None);
        assert_eq!(d.performance, Performance::default());
        let codec = d.codec().unwrap();
        assert_eq!((codec.compression, codec.key), (Compression::Zstd, None));
        assert!(!serde_json::to_string(&d).unwrap().contains("encryption"));
    }

    #[test]
    fn a_destination_gives_its_codec_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Destination {
            storage: StorageConfig::Filesystem {
                path: dir.path().into(),
            },
            prefix: "/ns/c/shard0/".into(),
            compression: Compression::Lz4,
            performance: Performance::default(),
            encryption: Some(Encryption::Sodium {
                key: "00".repeat(32),
                key_transform: KeyTransform::Hex,
            }),
        };
        assert!(d.codec().unwrap().key.is_some());
        assert!(d.store().unwrap().describe().ends_with("/ns/c/shard0"));
        let back: Destination = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        d.encryption = Some(Encryption::Sodium {
            key: "short".into(),
            key_transform: KeyTransform::None,
        });
        let err = d.codec().unwrap_err();
        assert!(matches!(err, StorageError::Config(_)), "{err}");
    }
}
