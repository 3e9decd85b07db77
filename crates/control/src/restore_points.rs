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

use futures::future::BoxFuture;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::shardedbackup::RestorePoint;
use shardvault_api::shardedcluster::{ShardedClusterSpec, ShardingType};
use shardvault_pg::config::NodeConfig;
use shardvault_pg::runtime::cluster::ClusterObserved;
use shardvault_storage::Destination;
use shardvault_store::EventType;

use crate::archive::seal;
use crate::clock::Clock;
use crate::cut::{CutMember, CutMode, take_cut};
use crate::destination::{cluster_destination, member_destinations};
use crate::framework::{Action, Ctx, ReconcileError, Reconciler, is_deleting};
use crate::records::{RESTORE_POINT_FORMAT, Records, RestorePointRecord, newest_at_or_before};
use crate::resources::{cluster_storages, name_of, namespace_of, spec_of};
use crate::schedule::{
    Decision, EntrySchedule, STARTING_DEADLINE, annotation, decide, parse_cron, set_annotation,
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

/// The restore point a consistent timestamp restore stops at: the newest scheduled one at or
/// before `time` recorded beside the coordinator's backup (`coordinator`), if it is not older
/// than the backup's own restore point; otherwise the backup's restore point.
pub async fn consistent_point(
    coordinator: &Destination,
    time: &str,
    backup_point: &RestorePoint,
) -> Result<String, ReconcileError> {
    let t: Timestamp = time.parse().map_err(|e| {
        ReconcileError::new(
            "RestoreRefused",
            format!("spec.initialData.restore.fromBackup.pointInTimeRecovery.restoreToTimestamp: {time:?}: {e}"),
        )
    })?;
    let storage_err = |e: String| ReconcileError::new("StorageError", e);
    let records = Records::open(coordinator)
        .map_err(|e| storage_err(e.to_string()))?
        .restore_points()
        .await
        .map_err(|e| storage_err(format!("reading restore point records: {e}")))?;
    let floor = backup_point.time.parse::<Timestamp>().ok();
    Ok(newest_at_or_before(&records, t)
        .filter(|r| r.time() >= floor)
        .map_or_else(
            || backup_point.name.clone(),
            |r| r.restore_point.name.clone(),
        ))
}

/// Takes scheduled cluster-wide restore points.
#[derive(Debug)]
pub struct RestorePointScheduler {
    clock: Arc<dyn Clock>,
}

impl RestorePointScheduler {
    /// A scheduler on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> RestorePointScheduler {
        RestorePointScheduler { clock }
    }
}

impl Reconciler for RestorePointScheduler {
    fn kind(&self) -> Kind {
        Kind::SGShardedCluster
    }

    fn reconcile(
        &self,
        obj: Value,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Action, ReconcileError>> {
        let clock = self.clock.clone();
        Box::pin(async move { reconcile(obj, ctx, clock).await })
    }
}

fn is_ready(cluster: &Value) -> bool {
    cluster
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Takes restore point `name` on every member, proves its WAL archived, and records it.
async fn take(ctx: &Ctx, cluster: &Value, name: &str) -> Result<RestorePoint, ReconcileError> {
    let (ns, cname) = (namespace_of(cluster), name_of(cluster));
    let spec: ShardedClusterSpec = spec_of(cluster)?;
    let dir = ctx.state_dir.join("clusters").join(ns).join(cname);
    let not_running = |e: String| {
        ReconcileError::new(
            "ClusterNotRunning",
            format!("SGShardedCluster {cname}: {e}"),
        )
    };
    let observed = ClusterObserved::load(&dir).map_err(|e| not_running(e.to_string()))?;
    let mut configs = Vec::new();
    for m in &observed.members {
        configs.push(NodeConfig::load(&m.node_config).map_err(|e| not_running(e.to_string()))?);
    }
    let members: Vec<CutMember> = observed
        .members
        .iter()
        .zip(&configs)
        .map(|(m, cfg)| CutMember {
            name: m.name.clone(),
            conninfo: cfg.conninfo(&observed.database),
        })
        .collect();
    let mode = match spec.sharding_type() {
        ShardingType::Citus => CutMode::Citus,
        ShardingType::Ddp => CutMode::default(),
    };
    let cut = take_cut(&members, name, &mode)
        .await
        .map_err(|e| ReconcileError::new("RestorePointFailed", e))?;
    futures::future::try_join_all(configs.iter().zip(&cut.members).map(|(cfg, p)| async {
        seal(cfg, false, Some(&p.wal_file), ARCHIVE_WAIT)
            .await
            .map_err(|e| ReconcileError::new("RestorePointFailed", format!("{}: {e}", p.name)))
    }))
    .await?;
    let record = RestorePointRecord {
        format: RESTORE_POINT_FORMAT,
        namespace: ns.to_string(),
        cluster: cname.to_string(),
        restore_point: RestorePoint::from(&cut),
    };
    let storages = cluster_storages(ctx, ns, &spec).await?;
    let resolved: Vec<_> = storages.iter().map(|(_, r)| r.clone()).collect();
    let coordinator = member_destinations(cname, ns, &spec, &resolved)
        .into_iter()
        .next()
        .unwrap_or_default();
    // Beside the sharded backup records (listing from storage alone), and beside the
    // coordinator's backups (where a restore, which knows only the SGBackups, looks).
    let mut dests = Vec::new();
    for ((entry, (_, storage)), coord) in spec.backups().iter().zip(&storages).zip(coordinator) {
        dests.push(cluster_destination(entry, storage, ns, cname));
        dests.push(coord);
    }
    for dest in dests {
        let storage_err = |e: String| ReconcileError::new("StorageError", e);
        Records::open(&dest)
            .map_err(|e| storage_err(e.to_string()))?
            .write_restore_point(&record)
            .await
            .map_err(|e| storage_err(format!("cannot write the restore point record: {e}")))?;
    }
    Ok(record.restore_point)
}

async fn reconcile(obj: Value, ctx: Ctx, clock: Arc<dyn Clock>) -> Result<Action, ReconcileError> {
    if is_deleting(&obj) {
        return Ok(Action::AwaitChange);
    }
    let Some(expr) = annotation(&obj, SCHEDULE_ANNOTATION).map(str::to_string) else {
        return Ok(Action::AwaitChange);
    };
    let cron = parse_cron(&expr).map_err(|e| {
        ReconcileError::new(
            "InvalidSchedule",
            format!("metadata.annotations[{SCHEDULE_ANNOTATION:?}]: {e}"),
        )
    })?;
    let old: RestorePointState = annotation(&obj, STATE_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let now = clock.now();
    let busy = !is_ready(&obj);
    let (next, decision) = decide(
        &cron,
        &expr,
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
    match decision {
        Decision::Wait => {}
        Decision::Run(at) => {
            let name = restore_point_name(name_of(&obj), at);
            match take(&ctx, &obj, &name).await {
                Ok(rp) => {
                    ctx.event(
                        &obj,
                        EventType::Normal,
                        "RestorePointCreated",
                        &format!(
                            "{name}: cluster-wide restore point on {} members (write pause {:.1} ms)",
                            rp.members.len(),
                            rp.write_pause_ms
                        ),
                    )
                    .await;
                    state.last_restore_point = Some(rp);
                }
                Err(e) => {
                    ctx.event(
                        &obj,
                        EventType::Warning,
                        &e.reason,
                        &format!("{name}: {}", e.message),
                    )
                    .await;
                }
            }
        }
        Decision::Skip(at) => {
            ctx.event(
                &obj,
                EventType::Warning,
                "RestorePointSkipped",
                &format!("restore point of {at} skipped: the cluster is not Ready"),
            )
            .await;
        }
        Decision::Missed { at, missed } => {
            ctx.event(
                &obj,
                EventType::Warning,
                "ScheduleMissed",
                &format!(
                    "restore points ({expr}): {missed} run(s) missed, the latest at {at} is more than {} s late (starting deadline)",
                    STARTING_DEADLINE.as_secs()
                ),
            )
            .await;
        }
    }
    if state != old {
        let text = serde_json::to_string(&state).expect("state serializes");
        set_annotation(&ctx, &obj, STATE_ANNOTATION, &text).await?;
    }
    let until = Duration::try_from(next.next_schedule_time.duration_since(now)).unwrap_or_default();
    Ok(Action::Requeue(
        until.max(Duration::from_millis(100)).min(clock.poll()),
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
