//! SGObjectStorage: where backups are stored.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::SecretKeySelector;

/// `spec` of an SGObjectStorage.
// Clippy reads the repeated `printcolumn(name, type_, priority)` keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "stackgres.io",
    version = "v1beta1",
    kind = "SGObjectStorage",
    plural = "sgobjectstorages",
    shortname = "sgobjs",
    namespaced,
    derive = "PartialEq",
    doc = "Where backups are stored.",
    printcolumn(name = "TYPE", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "BUCKET", type_ = "string", json_path = ".spec.*.bucket"),
    printcolumn(name = "PATH", type_ = "string", json_path = ".spec.filesystem.path"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "ENCRYPTION",
        type_ = "string",
        json_path = ".spec.encryption.method",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectStorageSpec {
    #[serde(rename = "type")]
    pub type_: StorageType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_compatible: Option<S3Compatible>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<Gcs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_blob: Option<AzureBlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// The storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StorageType {
    S3,
    S3Compatible,
    Gcs,
    AzureBlob,
    Filesystem,
}

/// Amazon S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3 {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    pub aws_credentials: AwsCredentials,
}

/// An S3-compatible server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Compatible {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_path_style_addressing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    pub aws_credentials: AwsCredentials,
}

/// AWS-style credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentials {
    /// StackGres writes `useIAMRole`; `useIamRole` is read too.
    #[serde(
        rename = "useIAMRole",
        alias = "useIamRole",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub use_iam_role: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_selectors: Option<AwsSecretKeySelectors>,
}

/// Secrets holding AWS-style keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsSecretKeySelectors {
    pub access_key_id: SecretKeySelector,
    pub secret_access_key: SecretKeySelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<SecretKeySelector>,
}

/// Google Cloud Storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gcs {
    pub bucket: String,
    pub gcp_credentials: GcpCredentials,
    /// Our extension: base URL of a GCS-compatible server (an emulator); Google when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// GCP credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_credentials_from_metadata_service: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_selectors: Option<GcpSecretKeySelectors>,
}

/// Secret holding a GCP service account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpSecretKeySelectors {
    #[serde(rename = "serviceAccountJSON")]
    pub service_account_json: SecretKeySelector,
}

/// Azure Blob Storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureBlob {
    pub bucket: String,
    pub azure_credentials: AzureCredentials,
    /// Our extension: base URL of the blob service (an emulator such as azurite);
    /// `https://ACCOUNT.blob.core.windows.net` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Azure credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_selectors: Option<AzureSecretKeySelectors>,
}

/// Secrets holding Azure keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSecretKeySelectors {
    pub storage_account: SecretKeySelector,
    pub access_key: SecretKeySelector,
}

/// Our extension: objects as files under a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filesystem {
    pub path: String,
}

/// Client-side encryption of stored objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    pub method: EncryptionMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sodium: Option<Sodium>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openpgp: Option<OpenPgp>,
}

/// Encryption method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMethod {
    Sodium,
    Openpgp,
}

/// libsodium secret-stream encryption with a 32-byte key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sodium {
    pub key: SecretKeySelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_transform: Option<KeyTransform>,
}

/// How the sodium key is written in its Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyTransform {
    Base64,
    Hex,
    None,
}

/// OpenPGP encryption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenPgp {
    pub key: SecretKeySelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_passphrase: Option<SecretKeySelector>,
}

impl ObjectStorageSpec {
    /// Checks that the section for `type` is present and the others absent.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let sections = [
            (StorageType::S3, "s3", self.s3.is_some()),
            (
                StorageType::S3Compatible,
                "s3Compatible",
                self.s3_compatible.is_some(),
            ),
            (StorageType::Gcs, "gcs", self.gcs.is_some()),
            (
                StorageType::AzureBlob,
                "azureBlob",
                self.azure_blob.is_some(),
            ),
            (
                StorageType::Filesystem,
                "filesystem",
                self.filesystem.is_some(),
            ),
        ];
        for (ty, field, present) in sections {
            if ty == self.type_ && !present {
                errs.push((
                    format!("spec.{field}"),
                    format!("required when type is {field}"),
                ));
            }
            if ty != self.type_ && present {
                errs.push((
                    format!("spec.{field}"),
                    format!(
                        "not allowed when type is {}",
                        sections
                            .iter()
                            .find(|s| s.0 == self.type_)
                            .map(|s| s.1)
                            .unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(fs) = &self.filesystem
            && let Err(e) = crate::storage_path::check_directory(&fs.path)
        {
            errs.push(("spec.filesystem.path".into(), e));
        }
        if let Some(enc) = &self.encryption {
            match enc.method {
                EncryptionMethod::Sodium if enc.sodium.is_none() => errs.push((
                    "spec.encryption.sodium".into(),
                    "required when method is sodium".into(),
                )),
                EncryptionMethod::Openpgp if enc.openpgp.is_none() => errs.push((
                    "spec.encryption.openpgp".into(),
                    "required when method is openpgp".into(),
                )),
                _ => {}
            }
            match enc.method {
                EncryptionMethod::Sodium if enc.openpgp.is_some() => errs.push((
                    "spec.encryption.openpgp".into(),
                    "not allowed when method is sodium".into(),
                )),
                EncryptionMethod::Openpgp if enc.sodium.is_some() => errs.push((
                    "spec.encryption.sodium".into(),
                    "not allowed when method is openpgp".into(),
                )),
                _ => {}
            }
        }
        self.check_backend_options(&mut errs);
        errs
    }

    /// Checks the bucket, credentials and endpoint of the section in use: what shardvault
    /// cannot do is refused here, with what to write instead, rather than failing later.
    fn check_backend_options(&self, errs: &mut Vec<(String, String)>) {
        let mut bucket = |field: &str, bucket: &str, kind: BucketKind| {
            if let Err(e) = kind.split(bucket) {
                errs.push((format!("{field}.bucket"), e));
            }
        };
        if let Some(s3) = &self.s3 {
            bucket("spec.s3", &s3.bucket, BucketKind::S3);
        }
        if let Some(s3) = &self.s3_compatible {
            bucket("spec.s3Compatible", &s3.bucket, BucketKind::S3);
        }
        if let Some(gcs) = &self.gcs {
            bucket("spec.gcs", &gcs.bucket, BucketKind::Gcs);
        }
        if let Some(az) = &self.azure_blob {
            bucket("spec.azureBlob", &az.bucket, BucketKind::Azure);
        }
        if let Some(s3) = &self.s3 {
            check_aws_credentials("spec.s3", &s3.aws_credentials, errs);
            if s3
                .aws_credentials
                .secret_key_selectors
                .as_ref()
                .is_some_and(|s| s.ca_certificate.is_some())
            {
                errs.push((
                    "spec.s3.awsCredentials.secretKeySelectors.caCertificate".into(),
                    "AWS S3 endpoints have public certificates: use type s3Compatible with an \
                     endpoint for a server whose certificate a custom CA signed"
                        .into(),
                ));
            }
        }
        if let Some(s3) = &self.s3_compatible {
            check_aws_credentials("spec.s3Compatible", &s3.aws_credentials, errs);
            check_endpoint("spec.s3Compatible.endpoint", s3.endpoint.as_deref(), errs);
        }
        if let Some(gcs) = &self.gcs {
            let creds = &gcs.gcp_credentials;
            let metadata = creds.fetch_credentials_from_metadata_service == Some(true);
            let field = "spec.gcs.gcpCredentials";
            match (metadata, &creds.secret_key_selectors, &gcs.endpoint) {
                (true, Some(_), _) => errs.push((
                    format!("{field}.secretKeySelectors"),
                    "not allowed when fetchCredentialsFromMetadataService is true: keep one".into(),
                )),
                (false, None, None) => errs.push((
                    field.into(),
                    "set secretKeySelectors.serviceAccountJSON or \
                     fetchCredentialsFromMetadataService: true"
                        .into(),
                )),
                _ => {}
            }
            check_endpoint("spec.gcs.endpoint", gcs.endpoint.as_deref(), errs);
        }
        if let Some(az) = &self.azure_blob {
            if az.azure_credentials.secret_key_selectors.is_none() {
                errs.push((
                    "spec.azureBlob.azureCredentials.secretKeySelectors".into(),
                    "required: shardvault signs Azure requests with the storage account's \
                     access key (storageAccount and accessKey)"
                        .into(),
                ));
            }
            check_endpoint("spec.azureBlob.endpoint", az.endpoint.as_deref(), errs);
        }
    }
}

/// `useIAMRole` and `secretKeySelectors` exclude each other, and one of them is needed.
fn check_aws_credentials(section: &str, creds: &AwsCredentials, errs: &mut Vec<(String, String)>) {
    let field = format!("{section}.awsCredentials");
    match (
        creds.use_iam_role == Some(true),
        &creds.secret_key_selectors,
    ) {
        (true, Some(_)) => errs.push((
            format!("{field}.secretKeySelectors"),
            "not allowed when useIAMRole is true: keep one".into(),
        )),
        (false, None) => errs.push((
            field,
            "set secretKeySelectors (accessKeyId and secretAccessKey) or useIAMRole: true".into(),
        )),
        _ => {}
    }
}

fn check_endpoint(field: &str, endpoint: Option<&str>, errs: &mut Vec<(String, String)>) {
    if let Some(e) = endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        errs.push((
            field.into(),
            format!("{e:?}: write a URL starting with http:// or https://"),
        ));
    }
}

/// The storage types whose `bucket` may carry a scheme and a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    /// `s3` and `s3Compatible`: `s3://`, `http://` or `https://`.
    S3,
    /// `gcs`: `gs://`.
    Gcs,
    /// `azureBlob`: `azure://`.
    Azure,
}

impl BucketKind {
    fn schemes(self) -> &'static [&'static str] {
        match self {
            BucketKind::S3 => &["s3://", "https://", "http://"],
            BucketKind::Gcs => &["gs://"],
            BucketKind::Azure => &["azure://"],
        }
    }

    /// Splits a bucket as SGObjectStorage writes it (`name`, `name/path`, `SCHEME://name/path`)
    /// into the bucket name and the key prefix inside it (no leading or trailing slash).
    pub fn split(self, bucket: &str) -> Result<(String, String), String> {
        let schemes = self.schemes();
        let rest = match schemes.iter().find_map(|s| bucket.strip_prefix(s)) {
            Some(rest) => rest,
            None if bucket.contains("://") => {
                return Err(format!(
                    "{bucket:?}: the scheme is not one of {}; write NAME/PATH or {}NAME/PATH",
                    schemes.join(", "),
                    schemes[0]
                ));
            }
            None => bucket,
        };
        let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Err(format!(
                "{bucket:?} has no bucket name: write NAME or {}NAME/PATH",
                schemes[0]
            ));
        }
        let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let path = path.join("/");
        crate::storage_path::check_key_prefix(&path)?;
        Ok((name.to_string(), path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: &str) -> Vec<String> {
        let spec: ObjectStorageSpec = yaml_serde::from_str(spec).unwrap();
        spec.check()
            .into_iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect()
    }

    const KEYS: &str =
        "secretKeySelectors: {accessKeyId: {name: s, key: a}, secretAccessKey: {name: s, key: b}}";

    #[test]
    fn buckets_split_into_name_and_path_as_stackgres_writes_them() {
        let cases = [
            (BucketKind::S3, "b", ("b", "")),
            (BucketKind::S3, "s3://b/some/path/", ("b", "some/path")),
            (BucketKind::S3, "b/some//path", ("b", "some/path")),
            (BucketKind::S3, "https://b/p", ("b", "p")),
            (BucketKind::Gcs, "gs://b/p/q", ("b", "p/q")),
            (BucketKind::Gcs, "b/p", ("b", "p")),
            (BucketKind::Azure, "azure://c/p", ("c", "p")),
        ];
        for (kind, bucket, (name, path)) in cases {
            assert_eq!(
                kind.split(bucket).unwrap(),
                (name.to_string(), path.to_string()),
                "{bucket}"
            );
        }
        let err = BucketKind::S3.split("s3://b/../../etc").unwrap_err();
        assert!(err.contains("never leaves its root"), "{err}");
        let err = BucketKind::Gcs.split("s3://b/p").unwrap_err();
        assert!(err.contains("gs://NAME/PATH"), "{err}");
        let err = BucketKind::S3.split("s3:///p").unwrap_err();
        assert!(err.contains("no bucket name"), "{err}");
    }

    #[test]
    fn what_shardvault_cannot_do_is_refused_with_the_field_and_the_fix() {
        let cases: [(&str, &str); 9] = [
            (
                "type: gcs\ngcs: {bucket: 'azure://c', gcpCredentials: {fetchCredentialsFromMetadataService: true}}",
                "spec.gcs.bucket: \"azure://c\": the scheme is not one of gs://",
            ),
            (
                "type: gcs\ngcs: {bucket: b, gcpCredentials: {}}",
                "spec.gcs.gcpCredentials: set secretKeySelectors.serviceAccountJSON or fetchCredentialsFromMetadataService: true",
            ),
            (
                "type: gcs\ngcs: {bucket: b, gcpCredentials: {fetchCredentialsFromMetadataService: true, secretKeySelectors: {serviceAccountJSON: {name: s, key: j}}}}",
                "spec.gcs.gcpCredentials.secretKeySelectors: not allowed when fetchCredentialsFromMetadataService is true",
            ),
            (
                "type: gcs\ngcs: {bucket: b, endpoint: 'localhost:4443', gcpCredentials: {}}",
                "spec.gcs.endpoint: \"localhost:4443\": write a URL starting with http:// or https://",
            ),
            (
                "type: azureBlob\nazureBlob: {bucket: c, azureCredentials: {}}",
                "spec.azureBlob.azureCredentials.secretKeySelectors: required",
            ),
            (
                "type: s3\ns3: {bucket: b, awsCredentials: {}}",
                "spec.s3.awsCredentials: set secretKeySelectors (accessKeyId and secretAccessKey) or useIAMRole: true",
            ),
            (
                &format!(
                    "type: s3\ns3: {{bucket: b, awsCredentials: {{useIAMRole: true, {KEYS}}}}}"
                ),
                "spec.s3.awsCredentials.secretKeySelectors: not allowed when useIAMRole is true",
            ),
            (
                "type: s3\ns3: {bucket: b, awsCredentials: {secretKeySelectors: {accessKeyId: {name: s, key: a}, secretAccessKey: {name: s, key: b}, caCertificate: {name: s, key: c}}}}",
                "spec.s3.awsCredentials.secretKeySelectors.caCertificate: AWS S3 endpoints have public certificates: use type s3Compatible",
            ),
            (
                "type: filesystem\nfilesystem: {path: /b}\nencryption: {method: openpgp, openpgp: {key: {name: s, key: k}}, sodium: {key: {name: s, key: k}}}",
                "spec.encryption.sodium: not allowed when method is openpgp",
            ),
        ];
        for (spec, want) in &cases {
            let errs = errors(spec);
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{spec}\nwant {want}\ngot {errs:?}"
            );
        }
    }

    #[test]
    fn every_supported_form_is_accepted() {
        let specs: [&str; 7] = [
            "type: gcs\ngcs: {bucket: 'gs://b/p', gcpCredentials: {fetchCredentialsFromMetadataService: true}}",
            "type: gcs\ngcs: {bucket: b, gcpCredentials: {secretKeySelectors: {serviceAccountJSON: {name: s, key: j}}}}",
            "type: gcs\ngcs: {bucket: b, endpoint: 'http://127.0.0.1:4443', gcpCredentials: {}}",
            "type: azureBlob\nazureBlob: {bucket: 'azure://c/p', azureCredentials: {secretKeySelectors: {storageAccount: {name: s, key: a}, accessKey: {name: s, key: k}}}}",
            "type: s3\ns3: {bucket: 's3://b/p', region: eu-west-1, storageClass: STANDARD_IA, awsCredentials: {useIAMRole: true}}",
            &format!(
                "type: s3Compatible\ns3Compatible: {{bucket: b/p, endpoint: 'https://minio:9000', awsCredentials: {{{KEYS}}}}}"
            ),
            "type: filesystem\nfilesystem: {path: /b}\nencryption: {method: openpgp, openpgp: {key: {name: s, key: k}, keyPassphrase: {name: s, key: p}}}",
        ];
        for spec in specs {
            assert_eq!(errors(spec), Vec::<String>::new(), "{spec}");
        }
    }
}
