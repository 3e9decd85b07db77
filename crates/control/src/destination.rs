//! From resources to plain destinations: an SGObjectStorage, its Secrets and a backups[]
//! entry become the `Destination` of each member (storage, prefix, codec settings).

use shardvault_api::meta::SecretKeySelector;
use shardvault_api::objectstorage::{AwsCredentials, BucketKind, ObjectStorageSpec, StorageType};
use shardvault_api::objectstorage::{EncryptionMethod, KeyTransform as ApiKeyTransform};
use shardvault_api::shardedcluster::{BackupConfiguration, ShardedClusterSpec};
use shardvault_pg::engine::layout;
use shardvault_storage::{
    Compression, Destination, Encryption, GcsCredentials, KeyTransform, Performance, StorageConfig,
};

/// A resource reference that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ResolveError {
    /// Field path of the reference.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ResolveError {
    ResolveError {
        field: field.into(),
        message: message.into(),
    }
}

/// Looks up `key` of Secret `name` (decoded), in the object's namespace.
pub trait SecretLookup {
    /// The decoded value, or None when the Secret or key does not exist.
    fn secret_value(&self, name: &str, key: &str) -> Option<String>;
}

fn secret(
    lookup: &dyn SecretLookup,
    field: &str,
    sel: &SecretKeySelector,
) -> Result<String, ResolveError> {
    lookup.secret_value(&sel.name, &sel.key).ok_or_else(|| {
        err(
            field,
            format!(
                "Secret {:?} has no key {:?}: create the Secret (kind: Secret, stringData: {{{}: ...}}) before this object",
                sel.name, sel.key, sel.key
            ),
        )
    })
}

/// The bucket name and the path inside it of `field` (`s3://name/path`, `name/path`, ...).
fn bucket(field: &str, bucket: &str, kind: BucketKind) -> Result<(String, String), ResolveError> {
    kind.split(bucket)
        .map_err(|e| err(format!("{field}.bucket"), e))
}

/// The access key pair of `awsCredentials` in `field` (none with `useIamRole`).
fn aws_keys(
    lookup: &dyn SecretLookup,
    field: &str,
    creds: &AwsCredentials,
) -> Result<(Option<String>, Option<String>), ResolveError> {
    let Some(sel) = &creds.secret_key_selectors else {
        return Ok((None, None));
    };
    let field = format!("{field}.awsCredentials.secretKeySelectors");
    Ok((
        Some(secret(
            lookup,
            &format!("{field}.accessKeyId"),
            &sel.access_key_id,
        )?),
        Some(secret(
            lookup,
            &format!("{field}.secretAccessKey"),
            &sel.secret_access_key,
        )?),
    ))
}

/// Resolves an SGObjectStorage spec and its Secrets into a storage config.
pub fn storage_config(
    spec: &ObjectStorageSpec,
    lookup: &dyn SecretLookup,
) -> Result<StorageConfig, ResolveError> {
    let missing = |field: &str| {
        err(
            format!("spec.{field}"),
            format!("required when type is {field}"),
        )
    };
    match spec.type_ {
        StorageType::Filesystem => {
            let fs = spec
                .filesystem
                .as_ref()
                .ok_or_else(|| missing("filesystem"))?;
            Ok(StorageConfig::Filesystem {
                path: fs.path.clone().into(),
            })
        }
        StorageType::S3 => {
            let s3 = spec.s3.as_ref().ok_or_else(|| missing("s3"))?;
            let (name, path) = bucket("spec.s3", &s3.bucket, BucketKind::S3)?;
            let (access_key_id, secret_access_key) =
                aws_keys(lookup, "spec.s3", &s3.aws_credentials)?;
            Ok(StorageConfig::S3 {
                bucket: name,
                path,
                region: s3.region.clone(),
                endpoint: None,
                path_style: false,
                access_key_id,
                secret_access_key,
                storage_class: s3.storage_class.clone(),
                ca_certificate: None,
            })
        }
        StorageType::S3Compatible => {
            let s3 = spec
                .s3_compatible
                .as_ref()
                .ok_or_else(|| missing("s3Compatible"))?;
            let (name, path) = bucket("spec.s3Compatible", &s3.bucket, BucketKind::S3)?;
            let (access_key_id, secret_access_key) =
                aws_keys(lookup, "spec.s3Compatible", &s3.aws_credentials)?;
            let ca_certificate = s3
                .aws_credentials
                .secret_key_selectors
                .as_ref()
                .and_then(|sel| sel.ca_certificate.as_ref())
                .map(|ca| {
                    secret(
                        lookup,
                        "spec.s3Compatible.awsCredentials.secretKeySelectors.caCertificate",
                        ca,
                    )
                })
                .transpose()?;
            Ok(StorageConfig::S3 {
                bucket: name,
                path,
                region: s3.region.clone(),
                endpoint: s3.endpoint.clone(),
                path_style: s3.enable_path_style_addressing.unwrap_or(false),
                access_key_id,
                secret_access_key,
                storage_class: s3.storage_class.clone(),
                ca_certificate,
            })
        }
        StorageType::Gcs => {
            let gcs = spec.gcs.as_ref().ok_or_else(|| missing("gcs"))?;
            let (name, path) = bucket("spec.gcs", &gcs.bucket, BucketKind::Gcs)?;
            let creds = &gcs.gcp_credentials;
            let credentials = match &creds.secret_key_selectors {
                Some(sel) => GcsCredentials::ServiceAccount {
                    json: secret(
                        lookup,
                        "spec.gcs.gcpCredentials.secretKeySelectors.serviceAccountJSON",
                        &sel.service_account_json,
                    )?,
                },
                None if creds.fetch_credentials_from_metadata_service == Some(true) => {
                    GcsCredentials::MetadataService
                }
                None if gcs.endpoint.is_some() => GcsCredentials::Unsigned,
                None => {
                    return Err(err(
                        "spec.gcs.gcpCredentials",
                        "set secretKeySelectors.serviceAccountJSON or \
                         fetchCredentialsFromMetadataService: true",
                    ));
                }
            };
            Ok(StorageConfig::Gcs {
                bucket: name,
                path,
                endpoint: gcs.endpoint.clone(),
                credentials,
            })
        }
        StorageType::AzureBlob => {
            let az = spec
                .azure_blob
                .as_ref()
                .ok_or_else(|| missing("azureBlob"))?;
            let (container, path) = bucket("spec.azureBlob", &az.bucket, BucketKind::Azure)?;
            let field = "spec.azureBlob.azureCredentials.secretKeySelectors";
            let sel = az
                .azure_credentials
                .secret_key_selectors
                .as_ref()
                .ok_or_else(|| err(field, "required: storageAccount and accessKey"))?;
            Ok(StorageConfig::AzureBlob {
                container,
                path,
                account: secret(
                    lookup,
                    &format!("{field}.storageAccount"),
                    &sel.storage_account,
                )?,
                access_key: secret(lookup, &format!("{field}.accessKey"), &sel.access_key)?,
                endpoint: az.endpoint.clone(),
            })
        }
    }
}

/// A storage with its credentials and encryption resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedStorage {
    /// Backend and credentials.
    pub config: StorageConfig,
    /// Client-side encryption, if configured.
    pub encryption: Option<Encryption>,
}

/// Resolves an SGObjectStorage spec with its backend credentials and encryption key.
pub fn resolve_storage(
    spec: &ObjectStorageSpec,
    lookup: &dyn SecretLookup,
) -> Result<ResolvedStorage, ResolveError> {
    let config = storage_config(spec, lookup)?;
    let encryption = match &spec.encryption {
        None => None,
        Some(enc) => match (enc.method, &enc.sodium) {
            (EncryptionMethod::Openpgp, _) => {
                let pgp = enc.openpgp.as_ref().ok_or_else(|| {
                    err("spec.encryption.openpgp", "required when method is openpgp")
                })?;
                Some(Encryption::Openpgp {
                    key: secret(lookup, "spec.encryption.openpgp.key", &pgp.key)?,
                    key_passphrase: pgp
                        .key_passphrase
                        .as_ref()
                        .map(|p| secret(lookup, "spec.encryption.openpgp.keyPassphrase", p))
                        .transpose()?,
                })
            }
            (EncryptionMethod::Sodium, Some(sodium)) => Some(Encryption::Sodium {
                key: secret(lookup, "spec.encryption.sodium.key", &sodium.key)?,
                key_transform: match sodium.key_transform {
                    Some(ApiKeyTransform::Base64) => KeyTransform::Base64,
                    Some(ApiKeyTransform::Hex) => KeyTransform::Hex,
                    Some(ApiKeyTransform::None) | None => KeyTransform::None,
                },
            }),
            (EncryptionMethod::Sodium, None) => {
                return Err(err(
                    "spec.encryption.sodium",
                    "required when method is sodium",
                ));
            }
        },
    };
    Ok(ResolvedStorage { config, encryption })
}

/// Prefix of the cluster-level records (sharded backups, restore points) of a backups[]
/// entry.
pub fn cluster_prefix(entry: &BackupConfiguration, namespace: &str, cluster: &str) -> String {
    match (&entry.paths, &entry.path) {
        (Some(paths), _) if !paths.is_empty() => layout::records_prefix_of_paths(&paths[0]),
        (_, Some(p)) => p.trim_matches('/').to_string(),
        _ => layout::default_cluster_prefix(namespace, cluster),
    }
}

/// Prefix of member `index` (0 = coordinator) for a backups[] entry.
pub fn member_prefix(
    entry: &BackupConfiguration,
    namespace: &str,
    cluster: &str,
    index: usize,
    member: &str,
) -> String {
    match (&entry.paths, &entry.path) {
        (Some(paths), _) if index < paths.len() => paths[index].trim_matches('/').to_string(),
        (_, Some(p)) => layout::member_prefix(p, member),
        _ => layout::member_prefix(&layout::default_cluster_prefix(namespace, cluster), member),
    }
}

/// The destination of the cluster-level records of a backups[] entry in `storage`.
pub fn cluster_destination(
    entry: &BackupConfiguration,
    storage: &ResolvedStorage,
    namespace: &str,
    cluster: &str,
) -> Destination {
    let (compression, performance) = entry_codec(entry);
    Destination {
        storage: storage.config.clone(),
        prefix: cluster_prefix(entry, namespace, cluster),
        compression,
        performance,
        encryption: storage.encryption.clone(),
    }
}

/// Codec and limits of a backups[] entry.
pub fn entry_codec(entry: &BackupConfiguration) -> (Compression, Performance) {
    let compression = match entry.compression.as_deref() {
        Some("zstd") => Compression::Zstd,
        Some("lzma") => Compression::Lzma,
        Some("brotli") => Compression::Brotli,
        _ => Compression::Lz4,
    };
    let mut perf = Performance::default();
    if let Some(p) = &entry.performance {
        let pos = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
        perf.max_network_bandwidth = pos(p.max_network_bandwidth);
        perf.max_disk_bandwidth = pos(p.max_disk_bandwidth);
        if let Some(v) = pos(p.upload_disk_concurrency) {
            perf.upload_disk_concurrency = v as usize;
        }
        if let Some(v) = pos(p.upload_concurrency) {
            perf.upload_concurrency = v as usize;
        }
        if let Some(v) = pos(p.download_concurrency) {
            perf.download_concurrency = v as usize;
        }
    }
    (compression, perf)
}

/// The destinations of every member (outer: members in order; inner: backups[] entries).
pub fn member_destinations(
    cluster: &str,
    namespace: &str,
    spec: &ShardedClusterSpec,
    storages: &[ResolvedStorage],
) -> Vec<Vec<Destination>> {
    spec.member_names(cluster)
        .iter()
        .enumerate()
        .map(|(i, member)| {
            spec.backups()
                .iter()
                .zip(storages)
                .map(|(entry, storage)| {
                    let (compression, performance) = entry_codec(entry);
                    Destination {
                        storage: storage.config.clone(),
                        prefix: member_prefix(entry, namespace, cluster, i, member),
                        compression,
                        performance,
                        encryption: storage.encryption.clone(),
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(yaml: &str) -> BackupConfiguration {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn prefixes_follow_path_paths_and_the_default() {
        let default = entry("sgObjectStorage: s");
        assert_eq!(
            member_prefix(&default, "ns", "c", 1, "c-shard0"),
            "shardvault/ns/c/c-shard0"
        );
        assert_eq!(cluster_prefix(&default, "ns", "c"), "shardvault/ns/c");
        let path = entry("sgObjectStorage: s\npath: /archive/");
        assert_eq!(
            member_prefix(&path, "ns", "c", 0, "c-coord"),
            "archive/c-coord"
        );
        assert_eq!(cluster_prefix(&path, "ns", "c"), "archive");
        let paths = entry("sgObjectStorage: s\npaths: [/a, /b, /c]");
        assert_eq!(member_prefix(&paths, "ns", "c", 2, "c-shard1"), "c");
        assert_eq!(cluster_prefix(&paths, "ns", "c"), "a/cluster");
    }

    #[test]
    fn codec_settings_come_from_the_entry() {
        let e = entry(
            "sgObjectStorage: s\ncompression: zstd\nperformance: {uploadDiskConcurrency: 4, maxNetworkBandwidth: 1000}",
        );
        let (c, p) = entry_codec(&e);
        assert_eq!(c, Compression::Zstd);
        assert_eq!(p.upload_disk_concurrency, 4);
        assert_eq!(p.max_network_bandwidth, Some(1000));
    }

    struct NoSecrets;

    impl SecretLookup for NoSecrets {
        fn secret_value(&self, _: &str, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn a_missing_secret_names_the_selector_field() {
        let spec: ObjectStorageSpec = yaml_serde::from_str(
            "type: s3Compatible\ns3Compatible:\n  bucket: b\n  awsCredentials:\n    secretKeySelectors:\n      accessKeyId: {name: creds, key: ak}\n      secretAccessKey: {name: creds, key: sk}\n",
        )
        .unwrap();
        let e = storage_config(&spec, &NoSecrets).unwrap_err();
        assert_eq!(
            e.field,
            "spec.s3Compatible.awsCredentials.secretKeySelectors.accessKeyId"
        );
        assert!(e.message.contains("creds"), "{e}");
    }

    struct Keys;

    impl SecretLookup for Keys {
        fn secret_value(&self, name: &str, key: &str) -> Option<String> {
            (name == "keys").then(|| format!("value-of-{key}"))
        }
    }

    fn resolve(yaml: &str) -> ResolvedStorage {
        resolve_storage(&yaml_serde::from_str(yaml).unwrap(), &Keys).unwrap()
    }

    #[test]
    fn every_type_resolves_its_bucket_path_and_secrets() {
        let gcs = resolve(
            "type: gcs\ngcs:\n  bucket: gs://b/team/pg/\n  gcpCredentials:\n    secretKeySelectors:\n      serviceAccountJSON: {name: keys, key: sa}\n",
        );
        assert_eq!(
            gcs.config,
            StorageConfig::Gcs {
                bucket: "b".into(),
                path: "team/pg".into(),
                endpoint: None,
                credentials: GcsCredentials::ServiceAccount {
                    json: "value-of-sa".into()
                },
            }
        );
        let azure = resolve(
            "type: azureBlob\nazureBlob:\n  bucket: azure://c/p\n  endpoint: http://127.0.0.1:1/acct\n  azureCredentials:\n    secretKeySelectors:\n      storageAccount: {name: keys, key: account}\n      accessKey: {name: keys, key: key}\nencryption:\n  method: openpgp\n  openpgp:\n    key: {name: keys, key: pgp}\n",
        );
        assert_eq!(
            azure.config,
            StorageConfig::AzureBlob {
                container: "c".into(),
                path: "p".into(),
                account: "value-of-account".into(),
                access_key: "value-of-key".into(),
                endpoint: Some("http://127.0.0.1:1/acct".into()),
            }
        );
        assert_eq!(
            azure.encryption,
            Some(Encryption::Openpgp {
                key: "value-of-pgp".into(),
                key_passphrase: None
            })
        );
        let s3 = resolve(
            "type: s3Compatible\ns3Compatible:\n  bucket: s3://b/x\n  endpoint: https://minio:9000\n  awsCredentials:\n    secretKeySelectors:\n      accessKeyId: {name: keys, key: ak}\n      secretAccessKey: {name: keys, key: sk}\n      caCertificate: {name: keys, key: ca}\n",
        );
        let StorageConfig::S3 {
            bucket,
            path,
            ca_certificate,
            ..
        } = s3.config
        else {
            panic!("{:?}", s3.config)
        };
        assert_eq!((bucket.as_str(), path.as_str()), ("b", "x"));
        assert_eq!(ca_certificate.as_deref(), Some("value-of-ca"));
        let iam = resolve("type: s3\ns3:\n  bucket: b\n  awsCredentials: {useIamRole: true}\n");
        assert!(matches!(
            iam.config,
            StorageConfig::S3 {
                access_key_id: None,
                ..
            }
        ));
    }
}
