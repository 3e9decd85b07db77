//! SGShardedBackup: one consistent backup of a whole sharded cluster.

use serde::{Deserialize, Serialize};

use crate::backup::{BackupSize, Process};
use crate::quantity::Timeout;

/// Label on every SGBackup of a sharded backup.
pub const SHARDED_BACKUP_LABEL: &str = "stackgres.io/shardedbackup-name";

/// `spec` of an SGShardedBackup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharded_record_config: Option<serde_json::Value>,
}

/// `status.backupInformation` of a sharded backup (sums over members).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardedBackupInformation {
    pub postgres_version: String,
    pub size: BackupSize,
}

/// The cluster-wide restore point of a sharded backup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRestorePoint {
    pub name: String,
    pub lsn: String,
    pub wal_file: String,
    pub timeline: u32,
}
