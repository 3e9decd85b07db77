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

/// How far an object's work is, in a few words and numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// What it does now (`copying`, `waiting for WAL`, ...).
    pub phase: String,
    pub done: u64,
    pub total: u64,
    /// Bytes per second.
    pub rate: u64,
}

impl Summary {
    /// The restore of `members` summed: copying while any member copies, else replaying WAL;
    /// None when no member reports.
    pub fn of_restore(members: &[RestoreProgress]) -> Option<Summary> {
        if members.is_empty() {
            return None;
        }
        let copying = members.iter().any(|m| m.phase == RestoreStep::Copying);
        let phase = if copying {
            RestoreStep::Copying.to_string()
        } else {
            let at: Vec<String> = members
                .iter()
                .filter_map(|m| {
                    let lsn = m.replay_lsn.as_deref()?;
                    Some(match &m.target_lsn {
                        Some(t) => format!("{lsn} of {t}"),
                        None => lsn.to_string(),
                    })
                })
                .collect();
            format!("{} (at {})", RestoreStep::Replaying, at.join(", "))
        };
        Some(Summary {
            phase,
            done: members.iter().map(|m| m.bytes_done).sum(),
            total: members.iter().map(|m| m.bytes_total).sum(),
            rate: members.iter().map(|m| m.bytes_per_second).sum(),
        })
    }

    /// One cell or line: `copying 45% of 27.0 MiB, 3.1 MiB/s`.
    pub fn text(&self) -> String {
        if self.total == 0 {
            return self.phase.clone();
        }
        let mut text = format!(
            "{} {}% of {}",
            self.phase,
            percent(self.done, self.total),
            crate::quantity::human_bytes(self.total)
        );
        if self.rate > 0 && self.done < self.total {
            text.push_str(&format!(", {}/s", crate::quantity::human_bytes(self.rate)));
        }
        text
    }
}

impl From<&BackupProgress> for Summary {
    fn from(p: &BackupProgress) -> Summary {
        Summary {
            phase: p.phase.to_string(),
            done: p.bytes_done,
            total: p.bytes_total,
            rate: p.bytes_per_second,
        }
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
