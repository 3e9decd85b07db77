//! What controllers and the CLI share about stored documents: names, owner references,
//! decoded Secrets, storage directories made ready for the server user, and where an
//! SGBackup was stored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use shardvault_api::objectstorage::ObjectStorageSpec;
use shardvault_api::secret::base64_decode;
use shardvault_api::shardedcluster::BackupConfiguration;
use shardvault_storage::{Destination, StorageConfig};

use crate::destination::{ResolveError, SecretLookup, entry_codec, resolve_storage};

/// `metadata.name` of a document.
pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.uid` of a document.
pub fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// An owner reference to `owner` (a controller reference that blocks owner deletion).
pub fn owner_reference(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The Secrets of one namespace, decoded.
pub struct Secrets(BTreeMap<String, BTreeMap<String, String>>);

impl Secrets {
    /// Secrets already decoded: name -> key -> value.
    pub fn from_map(map: BTreeMap<String, BTreeMap<String, String>>) -> Secrets {
        Secrets(map)
    }

    /// Decodes the `data` (base64) of a Secret document into key -> value.
    pub fn decode_data(secret: &Value) -> BTreeMap<String, String> {
        secret
            .get("data")
            .and_then(Value::as_object)
            .map(|d| {
                d.iter()
                    .filter_map(|(k, v)| {
                        let bytes = base64_decode(v.as_str()?)?;
                        Some((k.clone(), String::from_utf8(bytes).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl SecretLookup for Secrets {
    fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        self.0.get(name)?.get(key).cloned()
    }
}

/// A filesystem storage directory that cannot be made ready for the server user.
#[derive(Debug, thiserror::Error)]
#[error("filesystem.path {}: {cause}: create it, writable by the postgres user", dir.display())]
pub struct PrepareError {
    /// The directory.
    pub dir: PathBuf,
    /// Why it cannot be made.
    pub cause: std::io::Error,
}

/// Makes sure a filesystem storage directory (and `prefix` under it) exists and that the
/// server user, which archives WAL into it, owns what we create there.
pub fn prepare_for_server(config: &StorageConfig, prefix: &str) -> Result<(), PrepareError> {
    if let StorageConfig::Filesystem { path } = config {
        let dir = path.join(prefix.trim_matches('/'));
        shardvault_pg::user::create_dir_all_for_server(&dir)
            .map_err(|source| PrepareError { dir, cause: source })?;
    }
    Ok(())
}

/// What an SGBackup records of where it was stored (`status.sgBackupConfig`): the storage
/// spec as it was (Secret references, never values), the prefix and the codec.
pub fn backup_config(
    entry: &BackupConfiguration,
    storage_spec: &ObjectStorageSpec,
    prefix: &str,
) -> Value {
    let (compression, performance) = entry_codec(entry);
    json!({
        "sgObjectStorage": entry.sg_object_storage,
        "storage": storage_spec,
        "prefix": prefix,
        "compression": compression,
        "performance": performance,
    })
}

/// Why the storage an SGBackup was stored at cannot be located.
#[derive(Debug, thiserror::Error)]
pub enum BackupLocationError {
    /// `status.sgBackupConfig` lacks what locates the backup.
    #[error("SGBackup {backup}: status.sgBackupConfig {what}; the backup cannot be located")]
    Invalid {
        /// The SGBackup.
        backup: String,
        /// What is missing or wrong.
        what: String,
    },
    /// The storage's Secrets cannot be resolved today.
    #[error("SGBackup {backup}: {cause}")]
    Reference {
        /// The SGBackup.
        backup: String,
        /// What is missing.
        cause: ResolveError,
    },
}

impl BackupLocationError {
    /// The Event reason of this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            BackupLocationError::Invalid { .. } => "InvalidBackup",
            BackupLocationError::Reference { .. } => "InvalidReference",
        }
    }
}

/// The destination an SGBackup was stored at, with credentials resolved from today's Secrets.
pub fn backup_destination(
    config: &Value,
    secrets: &Secrets,
    backup: &str,
) -> Result<Destination, BackupLocationError> {
    let bad = |what: String| BackupLocationError::Invalid {
        backup: backup.to_string(),
        what,
    };
    let spec: ObjectStorageSpec = serde_json::from_value(config["storage"].clone())
        .map_err(|e| bad(format!("storage: {e}")))?;
    let resolved =
        resolve_storage(&spec, secrets).map_err(|source| BackupLocationError::Reference {
            backup: backup.to_string(),
            cause: source,
        })?;
    Ok(Destination {
        storage: resolved.config,
        prefix: config["prefix"]
            .as_str()
            .ok_or_else(|| bad("has no prefix".into()))?
            .to_string(),
        compression: serde_json::from_value(config["compression"].clone()).unwrap_or_default(),
        performance: serde_json::from_value(config["performance"].clone()).unwrap_or_default(),
        encryption: resolved.encryption,
    })
}
