//! Scheduled cluster-wide restore points without a base backup: the consistent cut of the
//! sharded backup (write barrier for ddp, `citus_create_restore_point` for citus), its WAL
//! proven archived, and a record in every backups[] entry's storage, so that a timestamp
//! restore can stop every member at the newest consistent point before the time.
//!
//! Our extension, configured on the SGShardedCluster by the annotation
//! `shardvault.io/restore-point-schedule: "<5-field cron, UTC>"` (StackGres has no such field).
//! The schedule state and the last restore point are kept in the annotation
//! `shardvault.io/restore-point-state`. A run that falls while the cluster is not Ready is
//! skipped with an Event; missed runs follow the scheduler's rules (one catch-up within the
//! starting deadline).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use shardvault_api::shardedbackup::RestorePoint;
use shardvault_api::shardedcluster::{SGShardedCluster, ShardingType};
use shardvault_pg::runtime::{ClusterId, RuntimeError};
use shardvault_storage::{Destination, StorageError};

use crate::archive::{ArchiveError, seal};
use crate::context::Context;
use crate::cut::{CutError, CutMember, CutMode, take_cut};
use crate::destination::{cluster_destination, member_destinations};
use crate::events::{self, EventType};
use crate::lookup::{self, LookupError};
use crate::records::{RESTORE_POINT_FORMAT, Records, RestorePointRecord, newest_at_or_before};
use crate::runner::{self, ReconcileFailure, Running};
use crate::schedule::{
    Decision, EntrySchedule, STARTING_DEADLINE, decide, parse_cron, set_annotation, until,
};

/// Annotation holding the cron schedule of a cluster's restore points.
pub const SCHEDULE_ANNOTATION: &str = "shardvault.io/restore-point-schedule";

/// Annotation holding the restore point schedule's state and the last restore point.
pub const STATE_ANNOTATION: &str = "shardvault.io/restore-point-state";

/// How long the restore point's WAL may take to reach the archive.
const ARCHIVE_WAIT: Duration = Duration::from_secs(120);

/// The schedule state kept in [`STATE_ANNOTATION`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePointState {
    /// Schedule bookkeeping (entry is always 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<EntrySchedule>,
    /// The newest restore point taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore_point: Option<RestorePoint>,
}

/// The name of the restore point scheduled at `at`: `<cluster>-rp-YYYY-MM-DD-HH-MM-SS`.
pub fn restore_point_name(cluster: &str, at: Timestamp) -> String {
    format!("{cluster}-rp-{}", at.strftime("%Y-%m-%d-%H-%M-%S"))
}

/// Why the restore point of a consistent timestamp restore cannot be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ConsistentPointError {
    /// The time asked for is not an RFC 3339 time.
    #[error(
        "spec.initialData.restore.fromBackup.pointInTimeRecovery.restoreToTimestamp: {time:?}: {message}"
    )]
    Time {
        /// The time as written.
        time: String,
        /// Why it does not parse.
        message: String,
    },
    /// The restore point records cannot be read.
    #[error("reading restore point records: {0}")]
    Records(#[from] StorageError),
}

impl ReconcileFailure for ConsistentPointError {
    fn reason(&self) -> &str {
        match self {
            ConsistentPointError::Time { .. } => "RestoreRefused",
            ConsistentPointError::Records(_) => "StorageError",
        }
    }
}

/// The restore point a consistent timestamp restore stops at: the newest scheduled one at or
/// before `time` recorded beside the coordinator's backup (`coordinator`), if it is not older
/// than the backup's own restore point; otherwise the backup's restore point.
pub async fn consistent_point(
    coordinator: &Destination,
    time: &str,
    backup_point: &RestorePoint,
) -> Result<String, ConsistentPointError> {
    let t: Timestamp = time
        .parse()
        .map_err(|e: jiff::Error| ConsistentPointError::Time {
            time: time.to_string(),
            message: e.to_string(),
        })?;
    let records = Records::open(coordinator)?.restore_points().await?;
    let floor = backup_point.time.parse::<Timestamp>().ok();
    Ok(newest_at_or_before(&records, t)
        .filter(|r| r.time() >= floor)
        .map_or_else(
            || backup_point.name.clone(),
            |r| r.restore_point.name.clone(),
        ))
}

/// Why a scheduled restore point was not taken or its schedule not kept.
#[derive(Debug, thiserror::Error)]
pub enum RestorePointError {
    /// The API could not be read or written.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    /// The schedule annotation is not a 5-field cron expression.
    #[error("metadata.annotations[{SCHEDULE_ANNOTATION:?}]: {0}")]
    InvalidSchedule(String),
    /// The cluster does not run (yet), so it has no members to cut.
    #[error("SGShardedCluster {cluster}: {cause}")]
    NotRunning {
        /// The cluster.
        cluster: String,
        /// What the runtime says.
        cause: RuntimeError,
    },
    /// The cut could not be taken.
    #[error(transparent)]
    Cut(#[from] CutError),
    /// A member's restore point WAL did not reach the archive.
    #[error("{member}: {cause}")]
    Seal {
        /// The member.
        member: String,
        /// What failed.
        cause: ArchiveError,
    },
    /// The storage of a backups[] entry cannot be looked up.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The restore point record could not be written.
    #[error("cannot write the restore point record: {0}")]
    Record(#[from] StorageError),
}

impl ReconcileFailure for RestorePointError {
    fn reason(&self) -> &str {
        match self {
            RestorePointError::Api(_) => "ApiError",
            RestorePointError::InvalidSchedule(_) => "InvalidSchedule",
            RestorePointError::NotRunning { .. } => "ClusterNotRunning",
            RestorePointError::Cut(_) | RestorePointError::Seal { .. } => "RestorePointFailed",
            RestorePointError::Lookup(e) => e.reason(),
            RestorePointError::Record(_) => "StorageError",
        }
    }
}

/// The restore point scheduler, ready to run: takes the scheduled cluster-wide restore
/// points of every SGShardedCluster with a [`SCHEDULE_ANNOTATION`].
pub fn controller(ctx: Arc<Context>) -> Running {
    runner::running(
        "restore points",
        runner::controller::<SGShardedCluster>(&ctx),
        reconcile,
        ctx,
    )
}

fn is_ready(cluster: &SGShardedCluster) -> bool {
    cluster.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Takes restore point `name` on every member, proves its WAL archived, and records it.
async fn take(
    ctx: &Context,
    cluster: &SGShardedCluster,
    name: &str,
) -> Result<RestorePoint, RestorePointError> {
    let (ns, cname) = (
        cluster.namespace().unwrap_or_else(|| "default".into()),
        cluster.name_any(),
    );
    let spec = &cluster.spec;
    let endpoints = ctx
        .runtime
        .endpoints(&ClusterId::new(&ns, &cname))
        .map_err(|source| RestorePointError::NotRunning {
            cluster: cname.clone(),
            cause: source,
        })?;
    let members: Vec<CutMember> = endpoints
        .members
        .iter()
        .map(|m| CutMember {
            name: m.name.clone(),
            conninfo: m.node_config.conninfo(&endpoints.database),
        })
        .collect();
    let mode = match spec.sharding_type() {
        ShardingType::Citus => CutMode::Citus,
        ShardingType::Ddp => CutMode::default(),
    };
    let cut = take_cut(&members, name, &mode).await?;
    futures::future::try_join_all(
        endpoints
            .members
            .iter()
            .zip(&cut.members)
            .map(|(m, p)| async {
                seal(&m.node_config, false, Some(&p.wal_file), ARCHIVE_WAIT)
                    .await
                    .map_err(|source| RestorePointError::Seal {
                        member: p.name.clone(),
                        cause: source,
                    })
            }),
    )
    .await?;
    let record = RestorePointRecord {
        format: RESTORE_POINT_FORMAT,
        namespace: ns.clone(),
        cluster: cname.clone(),
        restore_point: RestorePoint::from(&cut),
    };
    let storages = lookup::cluster_storages(&ctx.client, &ns, spec).await?;
    let resolved: Vec<_> = storages.iter().map(|(_, r)| r.clone()).collect();
    let coordinator = member_destinations(&cname, &ns, spec, &resolved)
        .into_iter()
        .next()
        .unwrap_or_default();
    // Beside the sharded backup records (listing from storage alone), and beside the
    // coordinator's backups (where a restore, which knows only the SGBackups, looks).
    let mut dests = Vec::new();
    for ((entry, (_, storage)), coord) in spec.backups().iter().zip(&storages).zip(coordinator) {
        dests.push(cluster_destination(entry, storage, &ns, &cname));
        dests.push(coord);
    }
    for dest in dests {
        Records::open(&dest)?.write_restore_point(&record).await?;
    }
    Ok(record.restore_point)
}

/// Takes a cluster's restore point when one is due, and looks again when the next one is
/// due (or at the clock's poll, whichever comes first).
async fn reconcile(
    obj: Arc<SGShardedCluster>,
    ctx: Arc<Context>,
) -> Result<Action, RestorePointError> {
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let annotations = obj.annotations();
    let Some(expr) = annotations.get(SCHEDULE_ANNOTATION) else {
        return Ok(Action::await_change());
    };
    let cron = parse_cron(expr).map_err(RestorePointError::InvalidSchedule)?;
    let old: RestorePointState = annotations
        .get(STATE_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let now = ctx.clock.now();
    let busy = !is_ready(&obj);
    let (next, decision) = decide(
        &cron,
        expr,
        0,
        old.schedule.as_ref(),
        now,
        busy,
        STARTING_DEADLINE,
    );
    let mut state = RestorePointState {
        schedule: Some(next.clone()),
        last_restore_point: old.last_restore_point.clone(),
    };
    let said = match decision {
        Decision::Wait => None,
        Decision::Run(at) => {
            let name = restore_point_name(&obj.name_any(), at);
            match take(&ctx, &obj, &name).await {
                Ok(rp) => {
                    let message = format!(
                        "{name}: cluster-wide restore point on {} members (write pause {:.1} ms)",
                        rp.members.len(),
                        rp.write_pause_ms
                    );
                    state.last_restore_point = Some(rp);
                    Some((EventType::Normal, "RestorePointCreated".into(), message))
                }
                Err(e) => Some((
                    EventType::Warning,
                    e.reason().to_string(),
                    format!("{name}: {}", e.message()),
                )),
            }
        }
        Decision::Skip(at) => Some((
            EventType::Warning,
            "RestorePointSkipped".into(),
            format!("restore point of {at} skipped: the cluster is not Ready"),
        )),
        Decision::Missed { at, missed } => Some((
            EventType::Warning,
            "ScheduleMissed".into(),
            format!(
                "restore points ({expr}): {missed} run(s) missed, the latest at {at} is more than {} s late (starting deadline)",
                STARTING_DEADLINE.as_secs()
            ),
        )),
    };
    if let Some((kind, reason, message)) = said {
        events::record(&ctx.client, &*obj, kind, &reason, &message).await;
    }
    if state != old {
        let text = serde_json::to_string(&state).expect("state serializes");
        let ns = obj.namespace().unwrap_or_else(|| "default".into());
        set_annotation(&ctx.api(&ns), &obj.name_any(), STATE_ANNOTATION, &text).await?;
    }
    Ok(Action::requeue(
        until(next.next_schedule_time, now).min(ctx.clock.poll()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_points_are_named_for_their_time() {
        assert_eq!(
            restore_point_name("c", "2030-01-01T00:15:00Z".parse().unwrap()),
            "c-rp-2030-01-01-00-15-00"
        );
    }
}
