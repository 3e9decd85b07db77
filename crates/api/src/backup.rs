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
    /// Bytes the backup stored (an incremental: only what it added, its chain not counted).
    pub compressed: u64,
    /// Bytes of file data a restore writes.
    pub uncompressed: u64,
    /// Our extension: bytes of stored objects a restore reads, the chain's included (absent
    /// for backups from before incrementals: then `compressed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<u64>,
}

impl BackupSize {
    /// Bytes a restore reads (`restore`, else `compressed`).
    pub fn restore_bytes(&self) -> u64 {
        self.restore.unwrap_or(self.compressed)
    }

    /// The sum of `self` and `other`, as a sharded backup sums its members.
    pub fn plus(self, other: BackupSize) -> BackupSize {
        BackupSize {
            compressed: self.compressed + other.compressed,
            uncompressed: self.uncompressed + other.uncompressed,
            restore: Some(self.restore_bytes() + other.restore_bytes()),
        }
    }
}

/// Whether a backup holds every block or only those changed since its parent (our
/// extension: StackGres takes only full backups).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Every file whole.
    #[default]
    Full,
    /// Only the blocks changed since its parent; a restore also reads its chain.
    Incremental,
}

impl BackupType {
    /// The annotation or status spelling: `full` or `incremental`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
        }
    }
}

impl std::fmt::Display for BackupType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackupType {
    type Err = String;

    fn from_str(s: &str) -> Result<BackupType, String> {
        match s {
            "full" => Ok(BackupType::Full),
            "incremental" => Ok(BackupType::Incremental),
            other => Err(format!("{other:?}: must be full or incremental")),
        }
    }
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
    /// Our extension: how far the backup is, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::progress::BackupProgress>,
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
    /// Our extension: full or incremental (absent: full, taken before incrementals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<BackupType>,
    /// Our extension: the member backup an incremental stores the changes since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// Start and end LSN of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LsnRange {
    pub start: String,
    pub end: String,
}
