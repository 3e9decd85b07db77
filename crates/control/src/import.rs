//! Disaster recovery from storage alone: a sharded backup record found in storage becomes an
//! SGShardedBackup and its SGBackups again (status Completed), so a new installation can
//! restore from it like from any backup it took itself.

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

use crate::catalog::ShardedRecord;
use crate::resources::backup_config;

/// Annotation on imported backups: the storage they were found in. The backup controller
/// leaves such backups alone and never deletes their objects.
pub const IMPORTED_ANNOTATION: &str = "shardvault.io/imported-from";

/// The documents (without status) and their statuses for an imported sharded backup found
/// at cluster prefix `record_prefix`: first the SGShardedBackup, then one SGBackup per member
/// (the caller makes them owned by the SGShardedBackup once it exists).
pub fn documents(
    record: &ShardedRecord,
    record_prefix: &str,
    namespace: &str,
    storage_name: &str,
    storage_spec: &ObjectStorageSpec,
) -> Vec<(Value, Value)> {
    let entry = BackupConfiguration {
        sg_object_storage: storage_name.to_string(),
        compression: None,
        ..Default::default()
    };
    let annotations = json!({ IMPORTED_ANNOTATION: storage_name });
    let timing = Timing {
        start: Some(record.start.clone()),
        end: Some(record.end.clone()),
        stored: Some(record.end.clone()),
    };
    let status = ShardedBackupStatus {
        process: Process {
            status: BackupPhase::Completed,
            failure: None,
            timing: timing.clone(),
        },
        sg_backups: record.members.iter().map(|m| m.sg_backup.clone()).collect(),
        backup_information: Some(ShardedBackupInformation {
            postgres_version: record.postgres_version.clone(),
            size: record.size,
        }),
        restore_point: Some(record.restore_point.clone()),
        attempts: None,
        sharded_record_config: Some(backup_config(&entry, storage_spec, record_prefix)),
    };
    let mut out = vec![(
        json!({
            "apiVersion": Kind::SGShardedBackup.api_version(),
            "kind": "SGShardedBackup",
            "metadata": {"name": record.name, "namespace": namespace, "annotations": annotations},
            "spec": {"sgShardedCluster": record.cluster, "managedLifecycle": false},
        }),
        serde_json::to_value(status).expect("status serializes"),
    )];
    for m in &record.members {
        let mut config = backup_config(&entry, storage_spec, &m.prefix);
        config["compression"] = Value::Null;
        let status = BackupStatus {
            internal_name: Some(m.sg_backup.clone()),
            backup_path: Some(m.prefix.clone()),
            process: Process {
                status: BackupPhase::Completed,
                failure: None,
                timing: timing.clone(),
            },
            backup_information: Some(BackupInformation {
                postgres_version: record.postgres_version.clone(),
                size: m.size,
                lsn: LsnRange {
                    start: m.start_lsn.clone(),
                    end: m.end_lsn.clone(),
                },
                timeline: m.timeline,
                manifest_sha256: m.manifest_sha256.clone(),
                ..Default::default()
            }),
            sg_backup_config: Some(config),
        };
        out.push((
            json!({
                "apiVersion": Kind::SGBackup.api_version(),
                "kind": "SGBackup",
                "metadata": {
                    "name": m.sg_backup,
                    "namespace": namespace,
                    "annotations": annotations,
                    "labels": {SHARDED_BACKUP_LABEL: record.name, "stackgres.io/cluster-name": m.name},
                },
                "spec": {"sgCluster": m.name, "managedLifecycle": false},
            }),
            serde_json::to_value(status).expect("status serializes"),
        ));
    }
    out
}
