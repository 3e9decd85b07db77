//! Admission: checks that need other objects, made when a manifest is applied, so that a
//! restore that cannot work is refused by `apply` itself and nothing is stored. (The
//! controllers check again before they act: objects can change after admission.)

use std::sync::Arc;

use serde_json::Value;
use shardvault_api::shardedbackup::ShardedBackupStatus;
use shardvault_api::shardedcluster::ShardedClusterSpec;
use shardvault_api::{FieldError, Kind, ValidationError};
use shardvault_pg::runtime::snapshot::SnapshotError;
use shardvault_pg::runtime::{ClusterRuntime, RuntimeError};
use shardvault_store::{Store, StoreError};

use crate::restore_check::check_restore;

fn refuse(doc: &Value, error: FieldError) -> StoreError {
    StoreError::Invalid(ValidationError {
        kind: doc["kind"].as_str().unwrap_or("").to_string(),
        name: doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        errors: vec![error],
    })
}

/// Admits or refuses a document about to be created or applied.
pub fn admit(store: &Store, doc: &Value) -> Result<(), StoreError> {
    let ns = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    // A manifest invalid on its own is reported by validation, with every field at once.
    if shardvault_api::validate(doc).is_err() {
        return Ok(());
    }
    match doc["kind"].as_str() {
        Some(k) if k == Kind::SGShardedCluster.name() => admit_cluster(store, doc, ns, name),
        Some(k) if k == Kind::SGShardedBackup.name() => admit_backup(store, doc, ns, name),
        _ => Ok(()),
    }
}

/// A new SGShardedBackup must name a cluster that exists, as StackGres's webhook requires;
/// one imported from storage (annotated so) names a cluster that may be gone, and scheduled
/// ones are made by the scheduler for a cluster it just read.
fn admit_backup(store: &Store, doc: &Value, ns: &str, name: &str) -> Result<(), StoreError> {
    match store.get(Kind::SGShardedBackup, ns, name) {
        Ok(_) => return Ok(()),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let imported = doc
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::import::IMPORTED_ANNOTATION))
        .is_some();
    let Some(cluster) = doc
        .pointer("/spec/sgShardedCluster")
        .and_then(Value::as_str)
    else {
        return Ok(()); // reported by validation
    };
    if imported {
        return Ok(());
    }
    match store.get(Kind::SGShardedCluster, ns, cluster) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(refuse(
            doc,
            FieldError {
                path: "spec.sgShardedCluster".into(),
                message: format!(
                    "{cluster:?}: no SGShardedCluster of that name in namespace {ns}; apply the cluster first"
                ),
            },
        )),
        Err(e) => Err(e),
    }
}

/// [`admit`], plus the checks only the runtime that will run the clusters can make (volume
/// snapshots: the class, and a filesystem that can take them).
pub fn with_runtime(
    runtime: Arc<dyn ClusterRuntime>,
) -> impl Fn(&Store, &Value) -> Result<(), StoreError> + Send + Sync {
    move |store, doc| {
        admit(store, doc)?;
        if doc["kind"].as_str() != Some(Kind::SGShardedCluster.name()) {
            return Ok(());
        }
        match serde_json::from_value::<ShardedClusterSpec>(doc["spec"].clone()) {
            Ok(spec) => check_snapshots(runtime.as_ref(), &spec).map_err(|e| refuse(doc, e)),
            Err(_) => Ok(()), // reported by validation
        }
    }
}

/// Every backups[] entry that asks for volume snapshots (or names a class) must name a class
/// the runtime has, on a filesystem it can snapshot.
fn check_snapshots(
    runtime: &dyn ClusterRuntime,
    spec: &ShardedClusterSpec,
) -> Result<(), FieldError> {
    for (i, entry) in spec.backups().iter().enumerate() {
        let class = entry.volume_snapshot_class.as_deref();
        if entry.use_volume_snapshot != Some(true) && class.is_none() {
            continue;
        }
        if let Err(e) = runtime.check_volume_snapshots(class) {
            let field = match &e {
                RuntimeError::Snapshot(SnapshotError::UnknownClass(_)) => "volumeSnapshotClass",
                _ if entry.use_volume_snapshot == Some(true) => "useVolumeSnapshot",
                _ => "volumeSnapshotClass",
            };
            return Err(FieldError {
                path: format!("spec.configurations.backups[{i}].{field}"),
                message: e.to_string(),
            });
        }
    }
    Ok(())
}

fn admit_cluster(store: &Store, doc: &Value, ns: &str, name: &str) -> Result<(), StoreError> {
    match store.get(Kind::SGShardedCluster, ns, name) {
        Ok(_) => return Ok(()), // an update: initialData is immutable, checked by validation
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let Ok(spec) = serde_json::from_value::<ShardedClusterSpec>(doc["spec"].clone()) else {
        return Ok(());
    };
    let version = spec.postgres.as_ref().map_or("", |p| p.version.as_str());
    let major = version.split('.').next().unwrap_or("");
    if let Err(e) = shardvault_pg::runtime::find_pg_bin(major) {
        return Err(refuse(
            doc,
            FieldError {
                path: "spec.postgres.version".into(),
                message: format!("{version:?}: {e}"),
            },
        ));
    }
    let Some(restore) = spec.initial_data.as_ref().and_then(|d| d.restore.as_ref()) else {
        return Ok(());
    };
    let backup = match store.get(Kind::SGShardedBackup, ns, &restore.from_backup.name) {
        Ok(b) => Some(b),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let status: Option<ShardedBackupStatus> = backup
        .as_ref()
        .map(|b| serde_json::from_value(b["status"].clone()).unwrap_or_default());
    check_restore(
        &spec,
        &restore.from_backup,
        status.as_ref(),
        jiff::Timestamp::now(),
    )
    .map(drop)
    .map_err(|e| refuse(doc, e))
}
