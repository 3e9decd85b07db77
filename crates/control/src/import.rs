//! Disaster recovery from storage alone: a sharded backup record found in storage becomes an
//! SGShardedBackup and its SGBackups again, so a new installation can restore from it like
//! from any backup it took itself. The importer creates the objects with their spec and two
//! annotations that point at the record; the backup controller reads the record and writes
//! their status (Completed), as it does for the backups it takes.

use serde_json::{Value, json};
use shardvault_api::Kind;
use shardvault_api::backup::{
    BackupInformation, BackupPhase, BackupStatus, LsnRange, Process, Timing,
};
use shardvault_api::objectstorage::ObjectStorageSpec;
use shardvault_api::shardedbackup::{
    SHARDED_BACKUP_LABEL, ShardedBackupInformation, ShardedBackupStatus,
};
use shardvault_api::shardedcluster::BackupConfiguration;

use crate::records::ShardedRecord;
use crate::resources::backup_config;

/// Annotation on imported backups: the SGObjectStorage they were found in. The backup
/// controller never runs such backups and never deletes their objects.
pub const IMPORTED_ANNOTATION: &str = "shardvault.io/imported-from";

/// Annotation on an imported SGShardedBackup: the cluster prefix its record was found at,
/// in the storage of [`IMPORTED_ANNOTATION`].
pub const IMPORTED_PATH_ANNOTATION: &str = "shardvault.io/imported-path";

/// The documents, without status, of sharded backup `record` found at cluster prefix
/// `record_prefix` of SGObjectStorage `storage_name`: first the SGShardedBackup, then one
/// SGBackup per member (the caller makes them owned by the SGShardedBackup once it exists).
pub fn documents(
    record: &ShardedRecord,
    record_prefix: &str,
    namespace: &str,
    storage_name: &str,
) -> Vec<Value> {
    let mut out = vec![json!({
        "apiVersion": Kind::SGShardedBackup.api_version(),
        "kind": "SGShardedBackup",
        "metadata": {
            "name": record.name,
            "namespace": namespace,
            "annotations": {
                IMPORTED_ANNOTATION: storage_name,
                IMPORTED_PATH_ANNOTATION: record_prefix,
            },
        },
        "spec": {"sgShardedCluster": record.cluster, "managedLifecycle": false},
    })];
    for m in &record.members {
        out.push(json!({
            "apiVersion": Kind::SGBackup.api_version(),
            "kind": "SGBackup",
            "metadata": {
                "name": m.sg_backup,
                "namespace": namespace,
                "annotations": {IMPORTED_ANNOTATION: storage_name},
                "labels": {SHARDED_BACKUP_LABEL: record.name, "stackgres.io/cluster-name": m.name},
            },
            "spec": {"sgCluster": m.name, "managedLifecycle": false},
        }));
    }
    out
}

/// The statuses of an imported sharded backup, read from its record.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedStatus {
    /// The SGShardedBackup's status.
    pub backup: ShardedBackupStatus,
    /// Each member SGBackup's name and status, coordinator first.
    pub members: Vec<(String, BackupStatus)>,
}

/// The statuses of sharded backup `record` found at `record_prefix` of SGObjectStorage
/// `storage_name` (spec `storage_spec`): Completed, with where every part is stored.
pub fn statuses(
    record: &ShardedRecord,
    record_prefix: &str,
    storage_name: &str,
    storage_spec: &ObjectStorageSpec,
) -> ImportedStatus {
    let entry = BackupConfiguration {
        sg_object_storage: storage_name.to_string(),
        compression: None,
        ..Default::default()
    };
    let process = Process {
        status: BackupPhase::Completed,
        failure: None,
        timing: Timing {
            start: Some(record.start.clone()),
            end: Some(record.end.clone()),
            stored: Some(record.end.clone()),
        },
    };
    let backup = ShardedBackupStatus {
        process: process.clone(),
        sg_backups: record.members.iter().map(|m| m.sg_backup.clone()).collect(),
        backup_information: Some(ShardedBackupInformation {
            postgres_version: record.postgres_version.clone(),
            size: record.size,
            backup_type: record.backup_type,
            parent: record.parent.clone(),
        }),
        restore_point: Some(record.restore_point.clone()),
        attempts: None,
        sharded_record_config: Some(backup_config(&entry, storage_spec, record_prefix)),
        volume_snapshots: Vec::new(),
        progress: None,
    };
    let members = record
        .members
        .iter()
        .map(|m| {
            let mut config = backup_config(&entry, storage_spec, &m.prefix);
            config["compression"] = Value::Null;
            let status = BackupStatus {
                internal_name: Some(m.sg_backup.clone()),
                backup_path: Some(m.prefix.clone()),
                process: process.clone(),
                backup_information: Some(BackupInformation {
                    postgres_version: record.postgres_version.clone(),
                    size: m.size,
                    lsn: LsnRange {
                        start: m.start_lsn.clone(),
                        end: m.end_lsn.clone(),
                    },
                    timeline: m.timeline,
                    manifest_sha256: m.manifest_sha256.clone(),
                    backup_type: m.backup_type,
                    parent: m.parent.clone(),
                    ..Default::default()
                }),
                sg_backup_config: Some(config),
                progress: None,
                volume_snapshot: None,
            };
            (m.sg_backup.clone(), status)
        })
        .collect();
    ImportedStatus { backup, members }
}
