//! SGShardedBackup: one consistent backup of a whole sharded cluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backup::{BackupSize, BackupType, Process};
use crate::quantity::Timeout;

/// Label on every SGBackup of a sharded backup.
pub const SHARDED_BACKUP_LABEL: &str = "stackgres.io/shardedbackup-name";

/// Our annotation asking a sharded backup to be `full` or `incremental` (incremental when
/// its members have a parent in the entry's storage, else full); without it the backup
/// follows its backups[] entry's `incremental` policy, and is full when the entry has none.
pub const BACKUP_TYPE_ANNOTATION: &str = "shardvault.io/backup-type";

/// `spec` of an SGShardedBackup.
// Clippy reads the repeated `printcolumn(name, type_, priority)` keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "stackgres.io",
    version = "v1",
    kind = "SGShardedBackup",
    plural = "sgshardedbackups",
    shortname = "sgsbk",
    namespaced,
    status = "ShardedBackupStatus",
    derive = "PartialEq",
    doc = "One consistent backup of a whole sharded cluster.",
    printcolumn(
        name = "CLUSTER",
        type_ = "string",
        json_path = ".spec.sgShardedCluster"
    ),
    printcolumn(
        name = "STATUS",
        type_ = "string",
        json_path = ".status.process.status"
    ),
    printcolumn(name = "STEP", type_ = "string", json_path = ".status.progress.phase"),
    printcolumn(
        name = "DONE",
        type_ = "integer",
        format = "int64",
        json_path = ".status.progress.bytesDone"
    ),
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        format = "int64",
        json_path = ".status.progress.bytesTotal",
        priority = 1
    ),
    printcolumn(
        name = "START",
        type_ = "string",
        json_path = ".status.process.timing.start"
    ),
    printcolumn(
        name = "END",
        type_ = "string",
        json_path = ".status.process.timing.end"
    ),
    printcolumn(
        name = "TYPE",
        type_ = "string",
        json_path = ".status.backupInformation.backupType"
    ),
    printcolumn(
        name = "COMPRESSED",
        type_ = "integer",
        format = "int64",
        json_path = ".status.backupInformation.size.compressed"
    ),
    printcolumn(
        name = "UNCOMPRESSED",
        type_ = "integer",
        format = "int64",
        json_path = ".status.backupInformation.size.uncompressed"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "MANAGED",
        type_ = "boolean",
        json_path = ".spec.managedLifecycle",
        priority = 1
    ),
    printcolumn(
        name = "MEMBERS",
        type_ = "string",
        json_path = ".status.sgBackups",
        priority = 1
    ),
    printcolumn(
        name = "POSTGRES",
        type_ = "string",
        json_path = ".status.backupInformation.postgresVersion",
        priority = 1
    ),
    printcolumn(
        name = "RESTORE POINT",
        type_ = "string",
        json_path = ".status.restorePoint.name",
        priority = 1
    ),
    printcolumn(
        name = "PARENT",
        type_ = "string",
        json_path = ".status.backupInformation.parent",
        priority = 1
    ),
    printcolumn(
        name = "RESTORE READS",
        type_ = "integer",
        format = "int64",
        json_path = ".status.backupInformation.size.restore",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardedBackupSpec {
    pub sg_sharded_cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_lifecycle: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation_timeout: Option<Timeout>,
}

/// Default `maxRetries` of a sharded backup.
pub const DEFAULT_MAX_RETRIES: i64 = 3;

/// `status` of an SGShardedBackup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardedBackupStatus {
    #[serde(default)]
    pub process: Process,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sg_backups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_information: Option<ShardedBackupInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_point: Option<RestorePoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    /// Our extension: where the backup's record (`sharded/<name>.json`) is stored, in the
    /// shape of an SGBackup's `status.sgBackupConfig` (its prefix is the cluster prefix), so
    /// verify and delete find it even after the cluster or its backups[] entry is gone.
    #[schemars(schema_with = "crate::schema::preserved_object")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharded_record_config: Option<serde_json::Value>,
    /// Our extension: the volume snapshots holding the members' data (member order) when the
    /// backup was taken with `useVolumeSnapshot`; on the same disk as the cluster's data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshots: Vec<String>,
    /// Our extension: how far the backup is, while it runs (sums over members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::progress::BackupProgress>,
}

/// `status.backupInformation` of a sharded backup (sums over members).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardedBackupInformation {
    pub postgres_version: String,
    pub size: BackupSize,
    /// Our extension: incremental when any member backup is, else full (absent: full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<BackupType>,
    /// Our extension: the sharded backup whose member backups the incremental ones are over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// The cluster-wide restore point of a sharded backup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestorePoint {
    pub name: String,
    /// When the barrier held (RFC 3339).
    pub time: String,
    /// Milliseconds writes were held back by the barrier.
    pub write_pause_ms: f64,
    /// Barrier attempts before it held.
    pub barrier_attempts: u32,
    pub members: Vec<MemberRestorePoint>,
}

/// One member's position at the restore point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberRestorePoint {
    pub name: String,
    pub lsn: String,
    pub wal_file: String,
    pub timeline: u32,
}
