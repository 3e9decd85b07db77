//! SGBackup: a backup of one member cluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::Timeout;

/// `spec` of an SGBackup.
// Clippy reads the repeated `printcolumn(name, type_, priority)` keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "stackgres.io",
    version = "v1",
    kind = "SGBackup",
    plural = "sgbackups",
    shortname = "sgbkp",
    namespaced,
    status = "BackupStatus",
    derive = "PartialEq",
    doc = "A backup of one member cluster.",
    printcolumn(name = "CLUSTER", type_ = "string", json_path = ".spec.sgCluster"),
    printcolumn(
        name = "STATUS",
        type_ = "string",
        json_path = ".status.process.status"
    ),
    printcolumn(
        name = "START",
        type_ = "string",
        json_path = ".status.process.timing.start"
    ),
    printcolumn(
        name = "COMPRESSED",
        type_ = "integer",
        format = "int64",
        json_path = ".status.backupInformation.size.compressed"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "UNCOMPRESSED",
        type_ = "integer",
        format = "int64",
        json_path = ".status.backupInformation.size.uncompressed",
        priority = 1
    ),
    printcolumn(
        name = "LSN START",
        type_ = "string",
        json_path = ".status.backupInformation.lsn.start",
        priority = 1
    ),
    printcolumn(
        name = "LSN END",
        type_ = "string",
        json_path = ".status.backupInformation.lsn.end",
        priority = 1
    ),
    printcolumn(
        name = "TIMELINE",
        type_ = "integer",
        json_path = ".status.backupInformation.timeline",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSpec {
    pub sg_cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_lifecycle: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation_timeout: Option<Timeout>,
}

/// `status.process` of a backup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub status: BackupPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default)]
    pub timing: Timing,
}

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
}

impl std::fmt::Display for BackupPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// `process.timing` (RFC 3339 times).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
}

/// Compressed and uncompressed sizes in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSize {
    pub compressed: u64,
    pub uncompressed: u64,
}

/// `status` of an SGBackup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_path: Option<String>,
    #[serde(default)]
    pub process: Process,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_information: Option<BackupInformation>,
    /// The storage spec and codec used, so restore does not depend on later edits.
    #[schemars(schema_with = "crate::schema::preserved_object")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_backup_config: Option<serde_json::Value>,
    /// Our extension: set when the backup's data is a volume snapshot (`useVolumeSnapshot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<VolumeSnapshotStatus>,
}

/// `status.volumeSnapshot` of an SGBackup: the snapshot holding its data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// The snapshot's name (deleted with the backup).
    pub name: String,
    /// The snapshot class (driver) that took it, e.g. `btrfs`.
    pub snapshot_class: String,
    /// Where it is kept.
    pub location: String,
    /// Always true: the snapshot is on the same disk as the cluster's data, so it does not
    /// survive the loss of that disk; object storage holds only its label and WAL.
    pub same_disk: bool,
}

/// `status.backupInformation` of an SGBackup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupInformation {
    pub hostname: String,
    pub system_identifier: String,
    pub postgres_version: String,
    pub pg_data: String,
    pub size: BackupSize,
    pub lsn: LsnRange,
    pub start_wal_file: String,
    pub timeline: u32,
    #[schemars(schema_with = "crate::schema::preserved_object")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_data: Option<serde_json::Value>,
    /// Our extension: SHA-256 of the stored manifest when the backup completed, compared by
    /// verify and restore so that a changed, well-formed manifest is still refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
}

/// Start and end LSN of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LsnRange {
    pub start: String,
    pub end: String,
}
