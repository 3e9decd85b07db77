//! SGObjectStorage: where backups are stored.

use serde::{Deserialize, Serialize};

use crate::meta::SecretKeySelector;

/// `spec` of an SGObjectStorage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StorageType {
    S3,
    S3Compatible,
    Gcs,
    AzureBlob,
    Filesystem,
}

/// Amazon S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_iam_role: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_selectors: Option<AwsSecretKeySelectors>,
}

/// Secrets holding AWS-style keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsSecretKeySelectors {
    pub access_key_id: SecretKeySelector,
    pub secret_access_key: SecretKeySelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<SecretKeySelector>,
}

/// Google Cloud Storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gcs {
    pub bucket: String,
    pub gcp_credentials: GcpCredentials,
}

/// GCP credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_credentials_from_metadata_service: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_selectors: Option<GcpSecretKeySelectors>,
}

/// Secret holding a GCP service account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpSecretKeySelectors {
    #[serde(rename = "serviceAccountJSON")]
    pub service_account_json: SecretKeySelector,
}

/// Azure Blob Storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureBlob {
    pub bucket: String,
    pub azure_credentials: AzureCredentials,
}

/// Azure credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_selectors: Option<AzureSecretKeySelectors>,
}

/// Secrets holding Azure keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSecretKeySelectors {
    pub storage_account: SecretKeySelector,
    pub access_key: SecretKeySelector,
}

/// Our extension: objects as files under a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filesystem {
    pub path: String,
}

/// Client-side encryption of stored objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    pub method: EncryptionMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sodium: Option<Sodium>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openpgp: Option<OpenPgp>,
}

/// Encryption method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMethod {
    Sodium,
    Openpgp,
}

/// libsodium secret-stream encryption with a 32-byte key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sodium {
    pub key: SecretKeySelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_transform: Option<KeyTransform>,
}

/// How the sodium key is written in its Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyTransform {
    Base64,
    Hex,
    None,
}

/// OpenPGP encryption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        }
        errs
    }
}
