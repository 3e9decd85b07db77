//! The worker of one sharded backup: runs it with `timeout` and `maxRetries`, removes what
//! a failed attempt stored, and on success writes the storage record, then Completed.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use shardvault_api::backup::{BackupPhase, BackupStatus, SGBackup};
use shardvault_api::shardedbackup::{
    RestorePoint, SGShardedBackup, ShardedBackupInformation, ShardedBackupStatus,
};
use shardvault_api::shardedcluster::ShardingType;
use shardvault_pg::engine::Repo;
use shardvault_pg::engine::prune::delete_backup;
use tokio::sync::mpsc;

use super::children::{member_status, plain_version, set_child};
use super::plan::{BackupPlan, member_suffix};
use super::progress::{ChannelProgress, Follower};
use super::{namespace_of, now, set_status};
use crate::context::Context;
use crate::events::{self, EventType};
use crate::incremental;
use crate::records::{MemberRecord, Records, SHARDED_FORMAT, ShardedRecord};
use crate::sharded_backup;
use crate::snapshot_backup;

/// How often and how long a worker tries.
pub(super) struct Retries {
    /// The number of the first attempt this worker makes (1 unless the backup was
    /// interrupted).
    pub first_attempt: i64,
    /// `spec.maxRetries`.
    pub max_retries: i64,
    /// `spec.timeout`, over all attempts.
    pub timeout: Option<Duration>,
}

/// Runs the sharded backup of `obj` until it completes, or fails more than `maxRetries`
/// times, or runs out of `timeout`; each failed attempt's objects are removed.
pub(super) async fn run_worker(
    ctx: Arc<Context>,
    obj: SGShardedBackup,
    plan: BackupPlan,
    retries: Retries,
) {
    let ns = namespace_of(&obj);
    let name = obj.name_any();
    let api: Api<SGShardedBackup> = ctx.api(&ns);
    let children: Api<SGBackup> = ctx.api(&ns);
    let started = tokio::time::Instant::now();
    let mut attempt = retries.first_attempt;
    if attempt > 1 {
        cleanup_attempt(&ctx, &plan).await;
    }
    loop {
        let (tx, rx) = mpsc::unbounded_channel();
        let follower = Follower {
            children: children.clone(),
            api: api.clone(),
            sharded: name.clone(),
            names: plan.job.members.iter().map(|m| m.backup.clone()).collect(),
            configs: plan.configs.clone(),
        };
        let updater = tokio::spawn(follower.follow(rx));
        let progress = Arc::new(ChannelProgress(tx));
        let run = async {
            match &plan.snapshot {
                Some(settings) => {
                    snapshot_backup::run(&plan.job, settings, ctx.runtime.as_ref(), &*progress)
                        .await
                        .map(|o| (o.outcome, o.snapshots))
                }
                None => sharded_backup::run(&plan.job, ctx.runtime.as_ref(), progress)
                    .await
                    .map(|o| (o, Vec::new())),
            }
        };
        let result = match retries.timeout {
            Some(t) => match tokio::time::timeout(t.saturating_sub(started.elapsed()), run).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("timed out after {} s (spec.timeout)", t.as_secs())),
            },
            None => run.await.map_err(|e| e.to_string()),
        };
        let _ = updater.await;
        let current = match api.get_opt(&name).await {
            Ok(Some(o)) if o.uid() == obj.uid() => o,
            _ => return, // deleted meanwhile
        };
        let mut status = current.status.clone().unwrap_or_default();
        status.progress = None;
        let message = match result {
            Ok((outcome, snapshots)) => {
                let done = Done {
                    outcome: &outcome,
                    snapshots: &snapshots,
                };
                if let Err(e) = complete(&ctx, &api, &current, &mut status, &plan, done).await {
                    status.process.status = BackupPhase::Failed;
                    status.process.failure = Some(e);
                    write_status(&api, &current, &status).await;
                }
                return;
            }
            Err(message) => message,
        };
        events::record(
            &ctx.client,
            &current,
            EventType::Warning,
            "BackupFailed",
            &format!("attempt {attempt}: {message}"),
        )
        .await;
        for m in &plan.job.members {
            let mut s = BackupStatus::default();
            s.process.status = BackupPhase::Failed;
            s.process.failure = Some(message.clone());
            set_child(&children, &m.backup, &s).await;
        }
        cleanup_attempt(&ctx, &plan).await;
        let out_of_time = retries.timeout.is_some_and(|t| started.elapsed() >= t);
        if attempt > retries.max_retries || out_of_time {
            status.process.status = BackupPhase::Failed;
            status.process.failure = Some(message);
            status.process.timing.end = Some(now());
            write_status(&api, &current, &status).await;
            return;
        }
        attempt += 1;
        status.attempts = Some(attempt);
        status.process.failure = Some(format!("retrying after: {message}"));
        write_status(&api, &current, &status).await;
        tokio::time::sleep(Duration::from_secs(2u64.pow(attempt.min(6) as u32))).await;
    }
}

/// Writes a worker's status; a failure is logged (the next reconcile sees the backup as
/// interrupted and starts it again).
async fn write_status(
    api: &Api<SGShardedBackup>,
    obj: &SGShardedBackup,
    new: &ShardedBackupStatus,
) {
    if let Err(e) = set_status(api, obj, new).await {
        tracing::warn!(
            "SGShardedBackup {}: cannot write its status: {e}",
            obj.name_any()
        );
    }
}

/// Removes what a failed attempt stored (and the volume snapshots it took, named after the
/// member backups), so nothing half-written looks like a backup.
async fn cleanup_attempt(ctx: &Context, plan: &BackupPlan) {
    for m in &plan.job.members {
        if plan.snapshot.is_some()
            && let Err(e) = ctx
                .runtime
                .delete_snapshot(&plan.job.cluster.namespace, &m.backup)
        {
            tracing::warn!(
                "{}: cannot remove the snapshot of failed backup {}: {e}",
                m.name,
                m.backup
            );
        }
        for dest in &m.node_config.destinations {
            if let Ok(repo) = Repo::open(dest)
                && let Err(e) = delete_backup(&repo, &m.backup).await
            {
                tracing::warn!("{}: cannot remove failed backup {}: {e}", m.name, m.backup);
            }
        }
    }
}

/// What a finished attempt produced: its outcome and its volume snapshots (none for a
/// regular backup).
struct Done<'a> {
    outcome: &'a sharded_backup::ShardedBackupOutcome,
    snapshots: &'a [shardvault_pg::runtime::VolumeSnapshot],
}

/// Writes the storage record of a finished backup, then its Completed status (in that
/// order: a backup claims completion only once its record is stored).
async fn complete(
    ctx: &Context,
    api: &Api<SGShardedBackup>,
    obj: &SGShardedBackup,
    status: &mut ShardedBackupStatus,
    plan: &BackupPlan,
    done: Done<'_>,
) -> Result<(), String> {
    let outcome = done.outcome;
    if !done.snapshots.is_empty() {
        // Each SGBackup says it is a snapshot, names it, and that it is on the same disk.
        let children: Api<SGBackup> = ctx.api(&namespace_of(obj));
        for (((m, summary), config), snapshot) in plan
            .job
            .members
            .iter()
            .zip(&outcome.manifests)
            .zip(&plan.configs)
            .zip(done.snapshots)
        {
            let child = BackupStatus {
                volume_snapshot: Some(snapshot_backup::snapshot_status(snapshot)),
                ..member_status(summary, config)
            };
            set_child(&children, &m.backup, &child).await;
        }
        status.volume_snapshots = done.snapshots.iter().map(|s| s.name.clone()).collect();
    }
    let suffixes: Vec<String> = (0..outcome.manifests.len()).map(member_suffix).collect();
    let (size, backup_type, parent) = incremental::sharded(&outcome.manifests, &suffixes);
    let restore_point = RestorePoint::from(&outcome.cut);
    let postgres_version = outcome
        .manifests
        .first()
        .map(|m| plain_version(&m.postgres_version))
        .unwrap_or_default();
    let start = status.process.timing.start.clone().unwrap_or_else(now);
    let end = now();
    let record = ShardedRecord {
        format: SHARDED_FORMAT,
        name: obj.name_any(),
        namespace: namespace_of(obj),
        cluster: plan.job.cluster.name.clone(),
        sharding_type: match plan.sharding {
            ShardingType::Citus => "citus".into(),
            ShardingType::Ddp => "ddp".into(),
        },
        database: plan.job.database.clone(),
        postgres_version: postgres_version.clone(),
        managed_lifecycle: plan.managed,
        members: plan
            .job
            .members
            .iter()
            .zip(&outcome.manifests)
            .zip(&plan.configs)
            .map(|((m, s), c)| MemberRecord {
                name: m.name.clone(),
                sg_backup: m.backup.clone(),
                prefix: c["prefix"].as_str().unwrap_or_default().to_string(),
                start_lsn: s.start_lsn.to_string(),
                end_lsn: s.end_lsn.to_string(),
                timeline: s.timeline,
                size: incremental::member_size(s),
                manifest_sha256: Some(s.manifest_sha256.clone()),
                backup_type: Some(incremental::member_type(s)),
                parent: s.parent.clone(),
            })
            .collect(),
        restore_point: restore_point.clone(),
        size,
        backup_type: Some(backup_type),
        parent: parent.clone(),
        start: start.clone(),
        end: end.clone(),
    };
    Records::open(&plan.catalog_dest)
        .map_err(|e| e.to_string())?
        .write_backup(&record)
        .await
        .map_err(|e| format!("cannot write the catalog record: {e}"))?;
    status.process.status = BackupPhase::Completed;
    status.process.failure = None;
    status.process.timing.end = Some(end);
    status.process.timing.stored = Some(now());
    let kind = match &parent {
        Some(p) => format!("incremental over {p}"),
        None => backup_type.to_string(),
    };
    status.backup_information = Some(ShardedBackupInformation {
        postgres_version,
        size,
        backup_type: Some(backup_type),
        parent,
    });
    status.restore_point = Some(restore_point);
    status.sharded_record_config = Some(plan.catalog_config.clone());
    set_status(api, obj, status)
        .await
        .map_err(|e| format!("cannot write the status: {e}"))?;
    events::record(
        &ctx.client,
        obj,
        EventType::Normal,
        "BackupCompleted",
        &format!(
            "{} members, {kind}, restore point {} (write pause {:.1} ms)",
            outcome.manifests.len(),
            outcome.cut.name,
            outcome.cut.write_pause_ms
        ),
    )
    .await;
    Ok(())
}
