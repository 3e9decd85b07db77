//! One sharded backup, start to finish: a base backup of every member (in parallel, each by
//! the node engine running as the server user), then the cluster-wide cut, then proof that
//! the WAL holding the cut is in every member's archive.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shardvault_api::progress::BackupStep;
use shardvault_pg::config::NodeConfig;
use shardvault_pg::engine::manifest::BackupSummary;
use shardvault_pg::node_events::{ProgressSink, WorkProgress};
use shardvault_pg::runtime::{ClusterId, ClusterRuntime, NodeWork};

use crate::archive::{ArchiveError, seal};
use crate::cut::{Cut, CutError, CutMember, CutMode, take_cut};

/// A member to back up.
#[derive(Debug, Clone)]
pub struct MemberJob {
    /// Member cluster name.
    pub name: String,
    /// Backup name in storage (the SGBackup's name).
    pub backup: String,
    /// Node config of the member primary (the cut and the archive proof run there); its one
    /// destination is where the backup goes.
    pub node_config: NodeConfig,
    /// Node config the engine backs up from: a streaming replica when one is healthy,
    /// else the primary.
    pub backup_from: NodeConfig,
}

/// Everything a sharded backup needs.
#[derive(Debug, Clone)]
pub struct ShardedBackupJob {
    /// Sharded backup name, also the restore point name (and the node work's job).
    pub name: String,
    /// The cluster backed up.
    pub cluster: ClusterId,
    /// Members, coordinator first.
    pub members: Vec<MemberJob>,
    /// Database whose user tables the barrier covers.
    pub database: String,
    /// How the cut is taken.
    pub cut_mode: CutMode,
    /// Member backups running at once.
    pub parallelism: usize,
    /// Whether members back up incremental, each over its newest backup in its destination
    /// (full when it has none that fits).
    pub incremental: bool,
    /// Longest wait for the restore point's WAL to reach the archive.
    pub archive_wait: Duration,
}

/// What a sharded backup produced.
#[derive(Debug, Clone)]
pub struct ShardedBackupOutcome {
    /// Every member's backup manifest, in member order.
    pub manifests: Vec<BackupSummary>,
    /// The cluster-wide restore point.
    pub cut: Cut,
}

/// Why a sharded backup failed; always names the member when one is to blame.
#[derive(Debug, thiserror::Error)]
pub enum ShardedBackupError {
    /// A member's base backup failed.
    #[error("member {member}: {message}")]
    Member { member: String, message: String },
    /// The cut could not be taken.
    #[error("restore point: {0}")]
    Cut(#[from] CutError),
    /// The restore point's WAL could not be shown archived.
    #[error("member {member}: {cause}")]
    Archive { member: String, cause: ArchiveError },
}

/// Reports progress of a sharded backup.
pub trait Progress: Send + Sync {
    /// Member `index` started its base backup.
    fn member_started(&self, index: usize);
    /// Member `index` copied `done` bytes of its data directory so far.
    fn member_copying(&self, index: usize, done: WorkProgress);
    /// Member `index` finished its base backup.
    fn member_done(&self, index: usize, manifest: &BackupSummary);
    /// A step of the whole began (the restore point, waiting for WAL).
    fn step(&self, step: BackupStep);
}

/// Runs the sharded backup, the member backups as node work of `runtime`; on any failure
/// nothing claims completion.
pub async fn run(
    job: &ShardedBackupJob,
    runtime: &dyn ClusterRuntime,
    progress: Arc<dyn Progress>,
) -> Result<ShardedBackupOutcome, ShardedBackupError> {
    let mut results: Vec<(usize, Result<BackupSummary, ShardedBackupError>)> =
        futures::stream::iter(job.members.clone().into_iter().enumerate())
            .map(|(i, m)| {
                let progress = progress.clone();
                async move {
                    progress.member_started(i);
                    let copying: ProgressSink = {
                        let progress = progress.clone();
                        Arc::new(move |done| progress.member_copying(i, done))
                    };
                    let r = member_backup(runtime, job, &m, copying).await;
                    if let Ok(summary) = &r {
                        progress.member_done(i, summary);
                    }
                    (i, r)
                }
            })
            .buffer_unordered(job.parallelism.max(1))
            .collect()
            .await;
    results.sort_by_key(|(i, _)| *i);
    let mut manifests = Vec::new();
    for (_, r) in results {
        manifests.push(r?);
    }

    progress.step(BackupStep::RestorePoint);
    let cut_members: Vec<CutMember> = job
        .members
        .iter()
        .map(|m| CutMember {
            name: m.name.clone(),
            conninfo: m.node_config.conninfo(&job.database),
        })
        .collect();
    let cut = take_cut(&cut_members, &job.name, &job.cut_mode).await?;

    progress.step(BackupStep::WaitingForWal);
    prove_archived(job, &cut).await?;
    Ok(ShardedBackupOutcome { manifests, cut })
}

/// Waits until every member's archive holds the WAL of its restore point in `cut`.
pub(crate) async fn prove_archived(
    job: &ShardedBackupJob,
    cut: &Cut,
) -> Result<(), ShardedBackupError> {
    futures::future::try_join_all(
        job.members
            .iter()
            .zip(&cut.members)
            .map(|(m, point)| async {
                seal(
                    &m.node_config,
                    false,
                    Some(&point.wal_file),
                    job.archive_wait,
                )
                .await
                .map_err(|e| ShardedBackupError::Archive {
                    member: m.name.clone(),
                    cause: e,
                })
            }),
    )
    .await?;
    Ok(())
}

/// Runs `shardvault node backup` for one member (as the server user, by the runtime).
async fn member_backup(
    runtime: &dyn ClusterRuntime,
    job: &ShardedBackupJob,
    m: &MemberJob,
    copying: ProgressSink,
) -> Result<BackupSummary, ShardedBackupError> {
    let fail = |message: String| ShardedBackupError::Member {
        member: m.name.clone(),
        message,
    };
    let work = NodeWork {
        cluster: job.cluster.clone(),
        job: job.name.clone(),
        member: m.name.clone(),
        config: m.backup_from.clone(),
        args: ["backup", "--name", m.backup.as_str(), "--json"]
            .into_iter()
            .chain(job.incremental.then_some("--incremental"))
            .map(OsString::from)
            .collect(),
    };
    let out = runtime
        .run_node(work, Some(copying))
        .await
        .map_err(|e| fail(e.to_string()))?;
    serde_json::from_slice(&out).map_err(|e| fail(format!("unreadable engine output: {e}")))
}
