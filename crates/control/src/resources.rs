//! Reading typed resources out of stored documents, and the lookups controllers share:
//! Secrets, storages and the destinations of a cluster's members.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shardvault_api::Kind;
use shardvault_api::objectstorage::ObjectStorageSpec;
use shardvault_api::secret::base64_decode;
use shardvault_api::shardedcluster::{BackupConfiguration, ShardedClusterSpec};
use shardvault_storage::{Destination, StorageConfig};

use crate::destination::{
    ResolveError, ResolvedStorage, SecretLookup, entry_codec, resolve_storage,
};
use crate::framework::{Ctx, ReconcileError};

/// `metadata.name` of a document.
pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace` of a document (`default` when unset).
pub fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

/// `metadata.uid` of a document.
pub fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The typed `spec` of a document.
pub fn spec_of<T: DeserializeOwned>(obj: &Value) -> Result<T, ReconcileError> {
    serde_json::from_value(obj.get("spec").cloned().unwrap_or(Value::Null)).map_err(|e| {
        ReconcileError::new(
            "InvalidSpec",
            format!(
                "{} {}: spec: {e}",
                obj["kind"].as_str().unwrap_or(""),
                name_of(obj)
            ),
        )
    })
}

/// The typed `status` of a document (its default when absent or unreadable).
pub fn status_of<T: DeserializeOwned + Default>(obj: &Value) -> T {
    obj.get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
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

    /// Reads every Secret of `namespace`.
    pub async fn load(ctx: &Ctx, namespace: &str) -> Result<Secrets, ReconcileError> {
        let mut map = BTreeMap::new();
        for s in ctx.list(Kind::Secret, Some(namespace), "").await? {
            map.insert(name_of(&s).to_string(), Secrets::decode_data(&s));
        }
        Ok(Secrets(map))
    }
}

impl SecretLookup for Secrets {
    fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        self.0.get(name)?.get(key).cloned()
    }
}

/// Reads and resolves SGObjectStorage `name` in `namespace`; `field` names the reference.
pub async fn storage(
    ctx: &Ctx,
    secrets: &Secrets,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<(ObjectStorageSpec, ResolvedStorage), ReconcileError> {
    let obj = ctx
        .get(Kind::SGObjectStorage, namespace, name)
        .await?
        .ok_or_else(|| {
            ReconcileError::new(
                "MissingReference",
                format!("{field}: SGObjectStorage {name:?} not found in namespace {namespace}: apply it first"),
            )
        })?;
    let spec: ObjectStorageSpec = spec_of(&obj)?;
    let resolved = resolve_storage(&spec, secrets).map_err(|e| {
        ReconcileError::new("InvalidReference", format!("SGObjectStorage {name}: {e}"))
    })?;
    prepare_for_server(&resolved.config, "")?;
    Ok((spec, resolved))
}

/// Makes sure a filesystem storage directory (and `prefix` under it) exists and that the
/// server user, which archives WAL into it, owns what we create there.
pub fn prepare_for_server(config: &StorageConfig, prefix: &str) -> Result<(), ReconcileError> {
    if let StorageConfig::Filesystem { path } = config {
        let dir = path.join(prefix.trim_matches('/'));
        shardvault_pg::user::create_dir_all_for_server(&dir).map_err(|e| {
            ReconcileError::new(
                "StorageError",
                format!(
                    "filesystem.path {}: {e}: create it, writable by the postgres user",
                    dir.display()
                ),
            )
        })?;
    }
    Ok(())
}

/// Resolves every backups[] entry of a cluster: its storage spec and resolved storage.
pub async fn cluster_storages(
    ctx: &Ctx,
    namespace: &str,
    spec: &ShardedClusterSpec,
) -> Result<Vec<(ObjectStorageSpec, ResolvedStorage)>, ReconcileError> {
    let secrets = Secrets::load(ctx, namespace).await?;
    let mut out = Vec::new();
    for (i, entry) in spec.backups().iter().enumerate() {
        let field = format!("spec.configurations.backups[{i}].sgObjectStorage");
        out.push(storage(ctx, &secrets, namespace, &entry.sg_object_storage, &field).await?);
    }
    Ok(out)
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
    #[error("SGBackup {backup}: {source}")]
    Reference {
        /// The SGBackup.
        backup: String,
        /// What is missing.
        #[source]
        source: ResolveError,
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

impl From<BackupLocationError> for ReconcileError {
    fn from(e: BackupLocationError) -> ReconcileError {
        ReconcileError::new(e.reason(), e)
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
            source,
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
