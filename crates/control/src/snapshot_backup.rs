//! A sharded backup of volume snapshots (`useVolumeSnapshot: true`): `pg_backup_start` on
//! every member primary, then, while the cut holds every member's writes (the ddp barrier;
//! for citus right before its own blocking restore point), a read-only snapshot of every
//! member's data directory and `pg_backup_stop`, then the restore points; then each member's
//! label and manifest go to storage and the restore point's WAL is shown archived. The
//! snapshots are one cut, and WAL replay takes each to the restore point or a later time.

use std::sync::Mutex;

use futures::future::try_join_all;
use shardvault_api::backup::VolumeSnapshotStatus;
use shardvault_api::progress::BackupStep;
use shardvault_pg::engine::manifest::SnapshotRef;
use shardvault_pg::engine::snapshot::{SnapshotBackup, StoppedSnapshot};
use shardvault_pg::runtime::{ClusterId, ClusterRuntime, VolumeSnapshot};

use crate::cut::{CutMember, take_cut_holding};
use crate::sharded_backup::{
    self, Progress, ShardedBackupError, ShardedBackupJob, ShardedBackupOutcome,
};

/// How the snapshots are taken.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// The cluster whose members are snapshotted.
    pub cluster: ClusterId,
    /// `volumeSnapshotClass` (the runtime's default when None).
    pub class: Option<String>,
    /// `fastVolumeSnapshot`: an immediate checkpoint at `pg_backup_start`, else a spread one.
    pub fast: bool,
}

/// What a snapshot backup produced: the outcome of any sharded backup, and the snapshots
/// (member order).
#[derive(Debug, Clone)]
pub struct SnapshotOutcome {
    /// Manifests and the cut.
    pub outcome: ShardedBackupOutcome,
    /// Every member's snapshot.
    pub snapshots: Vec<VolumeSnapshot>,
}

/// `status.volumeSnapshot` of an SGBackup whose data is `snapshot`.
pub fn snapshot_status(snapshot: &VolumeSnapshot) -> VolumeSnapshotStatus {
    VolumeSnapshotStatus {
        name: snapshot.name.clone(),
        snapshot_class: snapshot.class.clone(),
        location: snapshot.location.clone(),
        same_disk: true,
    }
}

fn member_err(member: &str) -> impl FnOnce(String) -> ShardedBackupError + '_ {
    move |message| ShardedBackupError::Member {
        member: member.to_string(),
        message,
    }
}

/// Runs the snapshot backup. The snapshots are named after the member backups, so what a
/// failed attempt left (snapshots and storage objects) is found and removed by the caller.
pub async fn run(
    job: &ShardedBackupJob,
    settings: &SnapshotSettings,
    runtime: &dyn ClusterRuntime,
    progress: &dyn Progress,
) -> Result<SnapshotOutcome, ShardedBackupError> {
    for i in 0..job.members.len() {
        progress.member_started(i);
    }
    let begun = try_join_all(job.members.iter().map(|m| async {
        SnapshotBackup::begin(
            &m.node_config,
            &m.node_config.destinations[0],
            &m.backup,
            settings.fast,
        )
        .await
        .map_err(|e| member_err(&m.name)(e.to_string()))
    }))
    .await?;

    progress.step(BackupStep::Snapshot);
    let cut_members: Vec<CutMember> = job
        .members
        .iter()
        .map(|m| CutMember {
            name: m.name.clone(),
            conninfo: m.node_config.conninfo(&job.database),
        })
        .collect();
    let taken: Mutex<Vec<VolumeSnapshot>> = Mutex::new(Vec::new());
    let pending = Mutex::new(Some(begun));
    let stopped: Mutex<Vec<StoppedSnapshot>> = Mutex::new(Vec::new());
    let hold = || -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async {
            let begun = pending
                .lock()
                .expect("not poisoned")
                .take()
                .ok_or("the snapshots were already taken")?;
            for m in &job.members {
                let s = runtime
                    .snapshot_member(
                        &settings.cluster,
                        &m.name,
                        settings.class.as_deref(),
                        &m.backup,
                    )
                    .map_err(|e| format!("member {}: snapshot: {e}", m.name))?;
                taken.lock().expect("not poisoned").push(s);
            }
            let ends = try_join_all(job.members.iter().zip(begun).map(|(m, b)| async move {
                b.stop()
                    .await
                    .map_err(|e| format!("member {}: {e}", m.name))
            }))
            .await?;
            *stopped.lock().expect("not poisoned") = ends;
            Ok(())
        })
    };
    let cut = take_cut_holding(&cut_members, &job.name, &job.cut_mode, Some(&hold)).await?;

    progress.step(BackupStep::WaitingForWal);
    let snapshots = taken.lock().expect("not poisoned").clone();
    let stopped = std::mem::take(&mut *stopped.lock().expect("not poisoned"));
    let manifests = try_join_all(job.members.iter().zip(stopped).zip(&snapshots).map(
        |((m, s), snap)| async move {
            let reference = SnapshotRef {
                class: snap.class.clone(),
                name: snap.name.clone(),
                location: snap.location.clone(),
            };
            s.store(reference, job.archive_wait)
                .await
                .map(|manifest| manifest.summary())
                .map_err(|e| member_err(&m.name)(e.to_string()))
        },
    ))
    .await?;
    for (i, summary) in manifests.iter().enumerate() {
        progress.member_done(i, summary);
    }
    sharded_backup::prove_archived(job, &cut).await?;
    Ok(SnapshotOutcome {
        outcome: ShardedBackupOutcome { manifests, cut },
        snapshots,
    })
}
