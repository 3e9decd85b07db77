//! Our extension: how far running work is, in status while it runs (`status.progress` of
//! SGBackup and SGShardedBackup, `status.restore.members[].progress` of SGShardedCluster).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How far a running backup is; SGShardedBackup sums its members'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupProgress {
    /// What the backup does now.
    pub phase: BackupStep,
    /// Bytes of the data directories read so far.
    pub bytes_done: u64,
    /// Bytes to read in all (known once copying begins).
    pub bytes_total: u64,
    /// Average bytes read per second since copying began.
    pub bytes_per_second: u64,
    /// When this was written (RFC 3339).
    pub updated: String,
}

/// `done` as a whole percentage of `total` (0 while the total is unknown).
pub fn percent(done: u64, total: u64) -> u64 {
    (done * 100).checked_div(total).unwrap_or(0).min(100)
}

/// Average bytes per second of `bytes` moved since `began` (0 in the first half second).
pub fn average_rate(bytes: u64, began: std::time::Instant) -> u64 {
    let seconds = began.elapsed().as_secs_f64();
    if seconds >= 0.5 {
        (bytes as f64 / seconds) as u64
    } else {
        0
    }
}

/// The step a running backup is at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupStep {
    /// Waiting for its turn (`parallelism`) or for its server.
    #[default]
    Starting,
    /// Copying the data directory to storage.
    Copying,
    /// Copied; waiting for the other members.
    Copied,
    /// Taking volume snapshots under the write barrier.
    Snapshot,
    /// Taking the cluster-wide restore point.
    RestorePoint,
    /// Waiting until the WAL of the restore point is archived.
    WaitingForWal,
}

impl std::fmt::Display for BackupStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupStep::Starting => "starting",
            BackupStep::Copying => "copying",
            BackupStep::Copied => "copied",
            BackupStep::Snapshot => "taking volume snapshots",
            BackupStep::RestorePoint => "taking the restore point",
            BackupStep::WaitingForWal => "waiting for WAL",
        })
    }
}

/// How far the restore of one member is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    /// What the restore does now.
    pub phase: RestoreStep,
    /// Bytes of the backup written so far.
    pub bytes_done: u64,
    /// Bytes of the backup to write.
    pub bytes_total: u64,
    /// Average bytes written per second since the restore began.
    pub bytes_per_second: u64,
    /// WAL position replayed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<String>,
    /// Commit time of the last transaction replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_time: Option<String>,
    /// Where replay stops, when the target is the backup's restore point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_lsn: Option<String>,
    /// When this was written (RFC 3339).
    pub updated: String,
}

/// The step a member's restore is at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestoreStep {
    /// Writing the backup's files.
    #[default]
    Copying,
    /// Replaying WAL up to the target.
    Replaying,
}

impl std::fmt::Display for RestoreStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestoreStep::Copying => "copying",
            RestoreStep::Replaying => "replaying WAL",
        })
    }
}
